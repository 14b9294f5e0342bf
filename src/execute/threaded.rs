//! A big file's local I/O and hashing, on a thread of its own.
//!
//! SHA-256 costs about as much CPU as TLS does (0.6 s a GiB here, with the CPU's SHA
//! instructions), and the file's own read or write copies as much again. Inline, all of it
//! lands on the runtime thread that also encrypts and sends (or receives and decrypts), so a
//! big transfer moves at the speed of one core doing everything. Here a thread per big file
//! reads (or writes) the file and hashes each piece as it passes; the runtime thread only
//! copies pieces to and from the TLS stream. The pieces go over a bounded channel,
//! at most [`DEPTH`] of them in flight, and come back empty to be filled again.
//!
//! Small files stay inline ([`HashingReader`](super::HashingReader) on a tokio file): a thread
//! costs more than it saves under [`THREADED_FROM`].

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::PollSender;

use tokio::io::AsyncWriteExt;

use super::direct::DirectAppend;
use super::hashing::too_much;
use super::{Digests, HashingReader, HashingWriter};
use crate::listing::Mtime;
use crate::transport::mark_local;

/// Files at least this big get a thread of their own.
pub const THREADED_FROM: u64 = 8 << 20;
/// The pieces of a read: 256 KiB, what the transfer loop asks for at a time.
const READ_PIECE: usize = 256 << 10;
/// The pieces of a write through the page cache are smaller, so that what is in flight stays
/// in the CPU's caches: a 1 GiB pull from vsftpd cost 2.0-2.4 s of CPU with 32 KiB pieces,
/// 2.6-3.9 s with 256 KiB and 5-6 s with 1 MiB (the kernel's copy into the page cache then
/// reads from memory), and 16 KiB pieces cost more again in hand-overs (`ferry-bench big
/// --big-mib 1024`, interleaved runs).
const WRITE_PIECE: usize = 32 << 10;
/// Past the page cache ([`DirectAppend`]) there is no such copy, and bigger pieces save
/// hand-overs (each one a wake-up of the thread): the same pull took 2.2-3.1 s of wall time
/// and 1.6-2.0 s of CPU with 8 pieces of 256 KiB in flight, 2.8-3.4 s and 2.1-2.3 s with 64 of
/// 32 KiB, 3.1-3.8 s and 2.3-2.6 s with 8 of 32 KiB; 128 KiB, 512 KiB and 1 MiB pieces were no
/// better than 256 KiB.
const DIRECT_WRITE_PIECE: usize = 256 << 10;
/// Pieces in flight between the thread and the runtime.
const DEPTH: usize = 8;

/// Start the thread `name` on `file` and `digests`; its result comes through the receiver. The
/// file goes to the thread once it runs, so that `Err` can give both back when it cannot start.
fn spawn<T: Send + 'static>(
    name: &str,
    file: std::fs::File,
    digests: Digests,
    work: impl FnOnce(std::fs::File, Digests) -> T + Send + 'static,
) -> Result<oneshot::Receiver<T>, Box<(std::fs::File, Digests)>> {
    let (done_tx, done) = oneshot::channel();
    let (hand, handed) = std::sync::mpsc::sync_channel::<(std::fs::File, Digests)>(1);
    let started = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Ok((file, digests)) = handed.recv() {
                let _ = done_tx.send(work(file, digests));
            }
        });
    if started.is_err() {
        return Err(Box::new((file, digests)));
    }
    hand.send((file, digests))
        .map_err(|back| Box::new(back.0))?;
    Ok(done)
}

/// Bytes of a file, read ahead by a thread that hashes them as it reads.
pub struct ReadAhead {
    pieces: mpsc::Receiver<std::io::Result<Piece>>,
    /// The piece being handed out, and how much of it is.
    current: Option<(Piece, usize)>,
    /// Where emptied pieces go back to the thread.
    empty: std::sync::mpsc::SyncSender<Vec<u8>>,
    done: oneshot::Receiver<(Digests, std::fs::File)>,
}

struct Piece {
    bytes: Vec<u8>,
    len: usize,
}

impl ReadAhead {
    /// Read `file` from where it stands to its end, hashing into `digests`. `Err` gives both
    /// back when no thread can be started.
    pub fn start(
        file: std::fs::File,
        digests: Digests,
    ) -> Result<ReadAhead, Box<(std::fs::File, Digests)>> {
        let (tx, pieces) = mpsc::channel(DEPTH);
        let (empty, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(DEPTH + 2);
        let done = spawn("ferry-read", file, digests, move |file, digests| {
            read_ahead(file, digests, &tx, &empty_rx)
        })?;
        Ok(ReadAhead {
            pieces,
            current: None,
            empty,
            done,
        })
    }

    /// Once everything was read (`poll_read` gave its end): the digests of the whole file, and
    /// the file. Called before the end, it stops the thread, and the digests cover what the
    /// thread had read, which is more than was handed out. `None` when the thread stopped at an
    /// error, which the read already reported.
    pub async fn finish(self) -> Option<(Digests, std::fs::File)> {
        let ReadAhead { pieces, done, .. } = self;
        // Closing the channel stops a thread that is still reading: it then ends at once.
        drop(pieces);
        done.await.ok()
    }
}

/// The thread: read pieces until the end or an error, hashing each before it is sent.
fn read_ahead(
    mut file: std::fs::File,
    mut digests: Digests,
    tx: &mpsc::Sender<std::io::Result<Piece>>,
    empty: &std::sync::mpsc::Receiver<Vec<u8>>,
) -> (Digests, std::fs::File) {
    loop {
        let mut bytes = empty.try_recv().unwrap_or_else(|_| vec![0; READ_PIECE]);
        match file.read(&mut bytes) {
            Ok(0) => break,
            Ok(len) => {
                digests.update(&bytes[..len]);
                if tx.blocking_send(Ok(Piece { bytes, len })).is_err() {
                    // The reader is gone: nothing more is wanted.
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                break;
            }
        }
    }
    (digests, file)
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if let Some((piece, at)) = &mut this.current {
                let n = (piece.len - *at).min(buf.remaining());
                buf.put_slice(&piece.bytes[*at..*at + n]);
                *at += n;
                if *at == piece.len
                    && let Some((piece, _)) = this.current.take()
                {
                    let _ = this.empty.try_send(piece.bytes);
                }
                return Poll::Ready(Ok(()));
            }
            match ready!(this.pieces.poll_recv(cx)) {
                Some(Ok(piece)) => this.current = Some((piece, 0)),
                Some(Err(e)) => return Poll::Ready(Err(mark_local(e))),
                // The end of the file.
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// The local file of an upload: read inline when small, ahead on a thread when big.
pub enum Source {
    /// A small file, read whole when opened.
    Memory {
        reader: HashingReader<std::io::Cursor<Vec<u8>>>,
        file: std::fs::File,
    },
    Inline(HashingReader<tokio::fs::File>),
    Ahead(ReadAhead),
}

/// Files smaller than this are read whole, at once, by the task that opened them (as it opened
/// them, one more call of the same kind): a tokio file would send each read, and the read
/// that finds the end, to a blocking thread and back, two trips of two thread wake-ups for a
/// file of a few KiB.
pub const READ_WHOLE_BELOW: u64 = 64 << 10;

impl Source {
    /// Read `file` (of `size` bytes) hashing into `digests`.
    pub fn open(file: std::fs::File, size: u64, digests: Digests) -> Source {
        let inline = |file, digests| {
            Source::Inline(HashingReader::with(
                tokio::fs::File::from_std(file),
                digests,
            ))
        };
        if size < READ_WHOLE_BELOW {
            // One byte more than the size, so that a file that grew since is seen to have:
            // what is sent is then longer than the size, and the upload is refused.
            let mut bytes = Vec::with_capacity(size as usize + 1);
            let read = (&file).take(size + 1).read_to_end(&mut bytes);
            return match read {
                Ok(_) => Source::Memory {
                    reader: HashingReader::with(std::io::Cursor::new(bytes), digests),
                    file,
                },
                // The tokio file reads again, and reports what fails then.
                Err(_) => inline(file, digests),
            };
        }
        if size < THREADED_FROM {
            return inline(file, digests);
        }
        match ReadAhead::start(file, digests) {
            Ok(ahead) => Source::Ahead(ahead),
            Err(back) => {
                let (file, digests) = *back;
                inline(file, digests)
            }
        }
    }

    /// After the read reached the end of the file: the digests of all of it, and the file.
    pub async fn finish(self) -> std::io::Result<(Digests, std::fs::File)> {
        match self {
            Source::Memory { reader, file } => Ok((reader.finish().0, file)),
            Source::Inline(reader) => {
                let (digests, file) = reader.finish();
                Ok((digests, file.into_std().await))
            }
            Source::Ahead(ahead) => ahead.finish().await.ok_or_else(|| {
                std::io::Error::other("the file's reading thread stopped before its end")
            }),
        }
    }
}

impl AsyncRead for Source {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Source::Memory { reader, .. } => Pin::new(reader).poll_read(cx, buf),
            Source::Inline(reader) => Pin::new(reader).poll_read(cx, buf),
            Source::Ahead(ahead) => Pin::new(ahead).poll_read(cx, buf),
        }
    }
}

/// What a download's thread is sent: bytes to hash and write, or the seal and fsync at the end.
enum Order {
    Write(Vec<u8>),
    Seal(Seal),
}

/// How a download's file is finished once its last byte is written: given its modification
/// time and mode (when set), then fsynced, so that a crash leaves either no file under its
/// name or the whole file with its time and mode (a time set after the fsync could be lost,
/// and the next run would take the file for a local change).
#[derive(Clone, Copy, Debug, Default)]
pub struct Seal {
    pub mtime: Option<Mtime>,
    pub mode: Option<u32>,
}

impl Seal {
    /// Set what is given on `file`, then fsync it.
    fn apply(self, file: &std::fs::File) -> std::io::Result<()> {
        if let Some(mode) = self.mode {
            rustix::fs::fchmod(file, rustix::fs::Mode::from_raw_mode(mode as _))?;
        }
        if let Some(m) = self.mtime {
            let nanos = m.nanos.rem_euclid(1_000_000_000) as u32;
            filetime::set_file_handle_times(
                file,
                None,
                Some(filetime::FileTime::from_unix_time(m.secs(), nanos)),
            )?;
        }
        file.sync_all()
    }
}

/// A download's file, written behind by a thread that hashes each piece before it writes it.
pub struct WriteBehind {
    orders: PollSender<Order>,
    /// The piece being filled, and how big a piece is.
    pending: Vec<u8>,
    piece: usize,
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
    done: Option<oneshot::Receiver<Written>>,
    /// Set once the thread's result is taken (after an error of its own).
    failed: Option<std::io::ErrorKind>,
}

type Written = std::io::Result<(std::fs::File, Digests)>;

impl WriteBehind {
    /// Append to `file` (open where writing goes on), hashing into `digests`. `Err` gives both
    /// back when no thread can be started.
    pub fn start(
        file: std::fs::File,
        digests: Digests,
    ) -> Result<WriteBehind, Box<(std::fs::File, Digests)>> {
        let (tx, orders) = mpsc::channel(DEPTH);
        let (empty_tx, empty) = std::sync::mpsc::sync_channel::<Vec<u8>>(DEPTH + 2);
        let direct = DirectAppend::takes_direct(&file);
        tracing::debug!(
            past_page_cache = direct,
            "a big download written on a thread of its own"
        );
        let piece = if direct {
            DIRECT_WRITE_PIECE
        } else {
            WRITE_PIECE
        };
        let done = spawn("ferry-write", file, digests, move |file, digests| {
            write_behind(DirectAppend::new(file), digests, orders, &empty_tx)
        })?;
        Ok(WriteBehind {
            orders: PollSender::new(tx),
            pending: Vec::with_capacity(piece),
            piece,
            empty,
            done: Some(done),
            failed: None,
        })
    }

    /// Wait for room for one order. An error is the thread's own (it stopped at a failed
    /// write), or that it is gone.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(kind) = self.failed {
            return Poll::Ready(Err(std::io::Error::new(kind, "an earlier write failed")));
        }
        if ready!(self.orders.poll_reserve(cx)).is_ok() {
            return Poll::Ready(Ok(()));
        }
        // The thread stopped: its result says why.
        let error = match self.done.as_mut().map(|d| Pin::new(d).poll(cx)) {
            Some(Poll::Pending) => return Poll::Pending,
            Some(Poll::Ready(Ok(Err(e)))) => e,
            _ => std::io::Error::other("the file's writing thread stopped"),
        };
        self.done = None;
        self.failed = Some(error.kind());
        Poll::Ready(Err(error))
    }

    /// Send `order` once there is room.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        order: impl Fn(&mut Self) -> Order,
    ) -> Poll<std::io::Result<()>> {
        ready!(self.poll_room(cx))?;
        let order = order(self);
        // Room was reserved just above, and only a closed channel refuses then: the thread's
        // error comes at the next order.
        let _ = self.orders.send_item(order);
        Poll::Ready(Ok(()))
    }

    /// Hand the piece being filled to the thread.
    fn poll_hand_over(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.pending.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.poll_send(cx, |this| {
            let next = this
                .empty
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(this.piece));
            Order::Write(std::mem::replace(&mut this.pending, next))
        })
    }

    /// Everything written (and sealed when `seal` says how): the file and the digests of all
    /// its bytes.
    pub async fn finish(mut self, seal: Option<Seal>) -> Written {
        std::future::poll_fn(|cx| self.poll_hand_over(cx)).await?;
        if let Some(seal) = seal {
            std::future::poll_fn(|cx| self.poll_send(cx, move |_| Order::Seal(seal))).await?;
        }
        self.orders.close();
        match self.done.take() {
            Some(done) => done.await.unwrap_or_else(|_| {
                Err(std::io::Error::other("the file's writing thread stopped"))
            }),
            None => Err(std::io::Error::other("an earlier write failed")),
        }
    }
}

/// The thread: hash and write each piece in turn (full blocks past the page cache, see
/// [`DirectAppend`]), seal the file at the end when told; stop at the first error.
fn write_behind(
    mut out: DirectAppend,
    mut digests: Digests,
    mut orders: mpsc::Receiver<Order>,
    empty: &std::sync::mpsc::SyncSender<Vec<u8>>,
) -> Written {
    let mut seal = None;
    while let Some(order) = orders.blocking_recv() {
        match order {
            Order::Write(mut piece) => {
                digests.update(&piece);
                out.write(&piece)?;
                piece.clear();
                let _ = empty.try_send(piece);
            }
            Order::Seal(s) => seal = Some(s),
        }
    }
    // Every byte written first (the disk thread stopped): a write after the time would move it.
    let file = out.into_file()?;
    if let Some(seal) = seal {
        seal.apply(&file)?;
    }
    Ok((file, digests))
}

impl AsyncWrite for WriteBehind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() == this.piece {
            ready!(this.poll_hand_over(cx)).map_err(mark_local)?;
        }
        let n = (this.piece - this.pending.len()).min(buf.len());
        this.pending.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    /// Hands what is buffered to the thread; [`finish`](Self::finish) waits for the disk.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().poll_hand_over(cx).map_err(mark_local)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// The local file of a download: written inline when small, behind on a thread when big; never
/// more than `limit` bytes in all (what the listing gave).
pub enum Sink {
    Inline(HashingWriter<tokio::io::BufWriter<tokio::fs::File>>),
    Behind {
        writer: WriteBehind,
        written: u64,
        limit: u64,
    },
}

/// Size of the inline writes of a download: the TLS stream hands over a record (16 KiB) at a
/// time, and each write of a tokio file is a trip to a blocking thread. In 1 MiB pieces the
/// disk writes overlap the network reads instead of taking turns with them.
const INLINE_WRITES: usize = 1024 * 1024;

impl Sink {
    /// Write on into `file`, which holds `written` bytes already, hashed into `digests`.
    pub fn open(file: std::fs::File, written: u64, limit: u64, digests: Digests) -> Sink {
        // No bigger than the file: a small download does not take (and free) a MiB.
        let capacity = usize::try_from(limit.saturating_sub(written))
            .unwrap_or(INLINE_WRITES)
            .clamp(8 << 10, INLINE_WRITES);
        let inline = |file, digests| {
            let file =
                tokio::io::BufWriter::with_capacity(capacity, tokio::fs::File::from_std(file));
            Sink::Inline(HashingWriter::continuing(file, digests, written).with_limit(limit))
        };
        if limit.saturating_sub(written) < THREADED_FROM {
            return inline(file, digests);
        }
        match WriteBehind::start(file, digests) {
            Ok(writer) => Sink::Behind {
                writer,
                written,
                limit,
            },
            Err(back) => {
                let (file, digests) = *back;
                inline(file, digests)
            }
        }
    }

    /// Bytes taken so far (counting what the file held before); on disk once [`finish`]ed.
    pub fn written(&self) -> u64 {
        match self {
            Sink::Inline(writer) => writer.written(),
            Sink::Behind { written, .. } => *written,
        }
    }

    /// Everything written (then given its time and mode and fsynced, when `seal` says how): the
    /// file, and the digests of all its bytes.
    pub async fn finish(self, seal: Option<Seal>) -> std::io::Result<(std::fs::File, Digests)> {
        match self {
            Sink::Inline(writer) => {
                let (buffered, digests) = writer.into_parts();
                // What is still buffered (all of a small file) is written, sealed and fsynced
                // in one trip to a blocking thread.
                let rest = buffered.buffer().to_vec();
                let mut file = buffered.into_inner();
                // Waits for a write of the tokio file still under way, and gives its error.
                file.flush().await?;
                let file = file.into_std().await;
                let file = tokio::task::spawn_blocking(move || {
                    std::io::Write::write_all(&mut &file, &rest)?;
                    if let Some(seal) = seal {
                        seal.apply(&file)?;
                    }
                    Ok::<_, std::io::Error>(file)
                })
                .await
                .map_err(std::io::Error::other)??;
                Ok((file, digests))
            }
            Sink::Behind { writer, .. } => writer.finish(seal).await.map_err(mark_local),
        }
    }
}

impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Sink::Inline(writer) => Pin::new(writer).poll_write(cx, buf),
            Sink::Behind {
                writer,
                written,
                limit,
            } => {
                if written.saturating_add(buf.len() as u64) > *limit {
                    return Poll::Ready(Err(too_much(*limit)));
                }
                let n = ready!(Pin::new(writer).poll_write(cx, buf))?;
                *written += n as u64;
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sink::Inline(writer) => Pin::new(writer).poll_flush(cx),
            Sink::Behind { writer, .. } => Pin::new(writer).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sink::Inline(writer) => Pin::new(writer).poll_shutdown(cx),
            Sink::Behind { writer, .. } => Pin::new(writer).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncReadExt;

    fn patterned(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn reads_and_hashes_the_whole_file_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        // Pieces, a partial last piece, and more than DEPTH pieces in all.
        let data = patterned(READ_PIECE * (DEPTH + 3) + 12_345);
        std::fs::write(dir.path().join("f"), &data).expect("write");
        let file = std::fs::File::open(dir.path().join("f")).expect("open");
        let Ok(mut ahead) = ReadAhead::start(file, Digests::new(None)) else {
            panic!("no thread");
        };
        let mut got = Vec::new();
        // Small reads: a piece is handed out across many calls.
        let mut buf = vec![0u8; 10_000];
        loop {
            let n = ahead.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == data, "the bytes read are the file's, in order");
        let (digests, _file) = ahead.finish().await.expect("finished");
        assert_eq!(digests.sha256_hex(), hex::encode(Sha256::digest(&data)));
    }

    #[tokio::test]
    async fn goes_on_from_where_the_file_stands_and_the_digests_so_far() {
        use std::io::Seek;
        let dir = tempfile::tempdir().expect("dir");
        let data = patterned(3 * READ_PIECE + 5);
        std::fs::write(dir.path().join("f"), &data).expect("write");
        let mut file = std::fs::File::open(dir.path().join("f")).expect("open");
        let mut digests = Digests::new(None);
        digests.update(&data[..1000]);
        file.seek(std::io::SeekFrom::Start(1000)).expect("seek");
        let Ok(mut ahead) = ReadAhead::start(file, digests) else {
            panic!("no thread");
        };
        let mut rest = Vec::new();
        ahead.read_to_end(&mut rest).await.expect("read");
        assert!(rest == data[1000..], "the rest of the file");
        let (digests, _) = ahead.finish().await.expect("finished");
        assert_eq!(digests.sha256_hex(), hex::encode(Sha256::digest(&data)));
    }

    #[tokio::test]
    async fn a_reader_dropped_early_stops_the_thread() {
        let dir = tempfile::tempdir().expect("dir");
        let data = patterned(READ_PIECE * (DEPTH * 4));
        std::fs::write(dir.path().join("f"), &data).expect("write");
        let file = std::fs::File::open(dir.path().join("f")).expect("open");
        let Ok(mut ahead) = ReadAhead::start(file, Digests::new(None)) else {
            panic!("no thread");
        };
        let mut buf = vec![0u8; 1000];
        ahead.read_exact(&mut buf).await.expect("read");
        // The thread is blocked on a full channel; finish closes it, and the thread ends.
        let finished = tokio::time::timeout(std::time::Duration::from_secs(10), ahead.finish())
            .await
            .expect("the thread ended");
        assert!(finished.is_some(), "it hands back the file");
    }

    #[tokio::test]
    async fn a_small_file_is_read_whole_when_opened_and_hashed_as_it_is_sent() {
        let dir = tempfile::tempdir().expect("dir");
        let data = patterned(READ_WHOLE_BELOW as usize - 1);
        std::fs::write(dir.path().join("f"), &data).expect("write");
        let file = std::fs::File::open(dir.path().join("f")).expect("open");
        let mut source = Source::open(file, data.len() as u64, Digests::new(None));
        assert!(matches!(source, Source::Memory { .. }), "read whole");
        // Emptied now: the bytes were read when it was opened.
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("f"))
            .and_then(|f| f.set_len(0))
            .expect("truncate");
        let mut got = Vec::new();
        source.read_to_end(&mut got).await.expect("read");
        assert!(got == data, "the bytes read are the file's, in order");
        let (digests, file) = source.finish().await.expect("finished");
        assert_eq!(digests.sha256_hex(), hex::encode(Sha256::digest(&data)));
        assert_eq!(file.metadata().expect("stat").len(), 0, "the same file");
    }

    #[tokio::test]
    async fn a_small_file_that_grew_after_its_stat_reads_one_byte_more_than_its_size() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("f"), patterned(5_000)).expect("write");
        let file = std::fs::File::open(dir.path().join("f")).expect("open");
        // The size a stat gave before 1,000 bytes more were written.
        let mut source = Source::open(file, 4_000, Digests::new(None));
        let mut got = Vec::new();
        source.read_to_end(&mut got).await.expect("read");
        assert_eq!(
            got.len(),
            4_001,
            "more than the size: the upload sees the change"
        );
    }

    #[tokio::test]
    async fn a_small_download_is_written_synced_and_hashed_and_goes_on_from_a_partial_file() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        let data = patterned(40_000);
        std::fs::write(&path, &data[..1_000]).expect("partial");
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        let mut digests = Digests::new(None);
        digests.update(&data[..1_000]);
        let mut sink = Sink::open(file, 1_000, data.len() as u64, digests);
        assert!(matches!(sink, Sink::Inline(_)), "small: inline");
        for chunk in data[1_000..].chunks(3_001) {
            sink.write_all(chunk).await.expect("write");
        }
        assert_eq!(sink.written(), data.len() as u64);
        let (file, digests) = sink.finish(Some(Seal::default())).await.expect("finish");
        assert_eq!(file.metadata().expect("stat").len(), data.len() as u64);
        assert!(
            std::fs::read(&path).expect("read") == data,
            "the whole file, in order"
        );
        assert_eq!(digests.sha256_hex(), hex::encode(Sha256::digest(&data)));
    }

    /// The remote's time and the final mode are set by the sink, after the last byte and
    /// before the fsync, for a small file and a big one: a crash after the rename finds them on
    /// disk with the bytes. (Set before the last write, the time would be the write's.)
    #[tokio::test]
    async fn a_sealed_download_has_its_time_and_mode_when_finished() {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().expect("dir");
        let mtime = Mtime::new(
            1_500_000_000_250_000_000,
            crate::listing::Precision::Nanosecond,
        );
        let seal = Seal {
            mtime: Some(mtime),
            mode: Some(0o640),
        };
        for (name, size) in [("small", 10_000), ("big", THREADED_FROM as usize + 4_097)] {
            let path = dir.path().join(name);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .expect("create");
            let mut sink = Sink::open(file, 0, size as u64, Digests::new(None));
            sink.write_all(&patterned(size)).await.expect("write");
            let (file, _) = sink.finish(Some(seal)).await.expect("finish");
            let meta = file.metadata().expect("stat");
            assert_eq!(meta.len(), size as u64, "{name}: every byte");
            let time = filetime::FileTime::from_last_modification_time(&meta);
            assert_eq!(
                (time.unix_seconds(), time.nanoseconds()),
                (1_500_000_000, 250_000_000),
                "{name}: the remote's time, set after the last write"
            );
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o640,
                "{name}: the final mode"
            );
        }
    }

    #[tokio::test]
    async fn a_small_download_to_a_full_disk_fails_at_the_end() {
        use tokio::io::AsyncWriteExt;
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let mut sink = Sink::open(full, 0, 4_096, Digests::new(None));
        sink.write_all(&patterned(4_096)).await.expect("buffered");
        let Err(e) = sink.finish(Some(Seal::default())).await else {
            panic!("a write to a full disk succeeded");
        };
        assert_eq!(e.raw_os_error(), Some(28), "ENOSPC: {e}");
    }

    fn big_sink(path: &std::path::Path, limit: u64) -> Sink {
        let file = std::fs::File::create(path).expect("create");
        let sink = Sink::open(file, 0, limit, Digests::new(None));
        assert!(
            matches!(sink, Sink::Behind { .. }),
            "a big file is written behind"
        );
        sink
    }

    #[tokio::test]
    async fn a_big_download_is_written_and_hashed_in_order() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().expect("dir");
        let data = patterned(THREADED_FROM as usize + READ_PIECE * 3 + 777);
        let path = dir.path().join("f");
        let mut sink = big_sink(&path, data.len() as u64);
        // Odd write sizes: pieces are filled across writes.
        for chunk in data.chunks(16_411) {
            sink.write_all(chunk).await.expect("write");
        }
        assert_eq!(sink.written(), data.len() as u64);
        let (_file, digests) = sink.finish(Some(Seal::default())).await.expect("finish");
        assert!(
            std::fs::read(&path).expect("read") == data,
            "the file is the bytes, in order"
        );
        assert_eq!(digests.sha256_hex(), hex::encode(Sha256::digest(&data)));
    }

    #[tokio::test]
    async fn a_big_download_refuses_the_first_byte_past_the_listing() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().expect("dir");
        let limit = THREADED_FROM + 10;
        let mut sink = big_sink(&dir.path().join("f"), limit);
        sink.write_all(&patterned(limit as usize))
            .await
            .expect("up to the limit");
        let e = sink.write_all(b"x").await.expect_err("one byte more");
        assert!(e.to_string().contains("more than the"), "{e}");
        assert_eq!(sink.written(), limit);
        let (file, _) = sink.finish(None).await.expect("finish");
        assert_eq!(
            file.metadata().expect("stat").len(),
            limit,
            "nothing past it written"
        );
    }

    #[tokio::test]
    async fn a_failed_disk_write_is_reported_as_local() {
        use tokio::io::AsyncWriteExt;
        // Every write to /dev/full fails with ENOSPC, as on a full disk.
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let mut sink = Sink::open(full, 0, THREADED_FROM * 4, Digests::new(None));
        let data = patterned(THREADED_FROM as usize * 2);
        let mut failure = None;
        for chunk in data.chunks(READ_PIECE) {
            if let Err(e) = sink.write_all(chunk).await {
                failure = Some(e);
                break;
            }
        }
        let e = match failure {
            Some(e) => e,
            None => match sink.finish(Some(Seal::default())).await {
                Ok(_) => panic!("the disk is full, yet the file was written"),
                Err(e) => e,
            },
        };
        assert!(
            e.to_string().contains("No space left on device"),
            "ENOSPC passed on: {e}"
        );
        let e = crate::transport::TransportError::from_io("write", &e);
        assert_eq!(e.kind, crate::transport::ErrorKind::Local);
    }
}
