//! The local side of a copy: a reader and a writer that hash every byte passing through
//! (SHA-256) and mark their own I/O errors as local ([`mark_local`]), so that a full disk is
//! never reported as the server's fault. The writer can also stop a download at the size the
//! listing gave: a server that sends more is cut off at once, not written to disk.

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::transport::{HashAlgo, mark_local};

/// The digests taken of one file while it streams: always SHA-256 (what state records), and
/// whichever others are needed to compare with the server's answer or a partner's checksum
/// file.
#[derive(Clone)]
pub struct Digests {
    sha256: Sha256,
    others: Vec<Other>,
}

#[derive(Clone)]
enum Other {
    Sha1(sha1::Sha1),
    Md5(md5::Md5),
    Crc32(crc32fast::Hasher),
}

impl Other {
    fn of(algo: HashAlgo) -> Option<Other> {
        match algo {
            HashAlgo::Sha256 => None,
            HashAlgo::Sha1 => Some(Other::Sha1(sha1::Sha1::new())),
            HashAlgo::Md5 => Some(Other::Md5(<md5::Md5 as md5::Digest>::new())),
            HashAlgo::Crc32 => Some(Other::Crc32(crc32fast::Hasher::new())),
        }
    }

    fn algo(&self) -> HashAlgo {
        match self {
            Other::Sha1(_) => HashAlgo::Sha1,
            Other::Md5(_) => HashAlgo::Md5,
            Other::Crc32(_) => HashAlgo::Crc32,
        }
    }
}

impl Digests {
    /// SHA-256, plus `also` when it is another algorithm.
    pub fn new(also: Option<HashAlgo>) -> Self {
        Self::of(also)
    }

    /// SHA-256 and each of `algos`.
    pub fn of(algos: impl IntoIterator<Item = HashAlgo>) -> Self {
        let mut others: Vec<Other> = Vec::new();
        for algo in algos {
            if !others.iter().any(|o| o.algo() == algo)
                && let Some(o) = Other::of(algo)
            {
                others.push(o);
            }
        }
        Digests {
            sha256: Sha256::new(),
            others,
        }
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        for other in &mut self.others {
            match other {
                Other::Sha1(h) => h.update(bytes),
                Other::Md5(h) => md5::Digest::update(h, bytes),
                Other::Crc32(h) => h.update(bytes),
            }
        }
    }

    /// The SHA-256 so far, lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256.clone().finalize())
    }

    /// The digest in `algo` so far (lowercase hex), when it is taken.
    pub fn hex(&self, algo: HashAlgo) -> Option<String> {
        if algo == HashAlgo::Sha256 {
            return Some(self.sha256_hex());
        }
        self.others
            .iter()
            .find(|o| o.algo() == algo)
            .map(|o| match o {
                Other::Sha1(h) => hex::encode(h.clone().finalize()),
                Other::Md5(h) => hex::encode(md5::Digest::finalize(h.clone())),
                Other::Crc32(h) => format!("{:08x}", h.clone().finalize()),
            })
    }
}

/// Reads a local file through, hashing every byte.
pub struct HashingReader<R> {
    inner: R,
    hasher: Digests,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with(inner, Digests::new(None))
    }

    /// Hashing into `digests` (SHA-256 and maybe the server's algorithm).
    pub fn with(inner: R, digests: Digests) -> Self {
        HashingReader {
            inner,
            hasher: digests,
        }
    }

    /// The digests of everything read, and the reader back.
    pub fn finish(self) -> (Digests, R) {
        (self.hasher, self.inner)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(Ok(())) => {
                this.hasher.update(&buf.filled()[before..]);
                std::task::Poll::Ready(Ok(()))
            }
            std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(mark_local(e))),
            pending => pending,
        }
    }
}

/// The error of a download that brings more than its listing gave. Not marked local: this is
/// the server's doing.
pub(super) fn too_much(limit: u64) -> std::io::Error {
    std::io::Error::other(format!(
        "the server sent more than the {limit} bytes its listing gave; stopped \
         (the file is changing, or the server misbehaves)"
    ))
}

/// Writes through to a local file (or a sink), hashing every byte written, refusing to write
/// more than `limit` bytes when one is set.
pub struct HashingWriter<W> {
    pub(super) inner: W,
    hasher: Digests,
    written: u64,
    limit: Option<u64>,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self::continuing(inner, Digests::new(None), 0)
    }

    /// Go on from a partial file: `hasher` has seen its first `written` bytes already.
    pub fn continuing(inner: W, hasher: Digests, written: u64) -> Self {
        HashingWriter {
            inner,
            hasher,
            written,
            limit: None,
        }
    }

    /// Refuse (with an error, writing nothing of it) any write that would pass `limit` bytes in
    /// all (counting what a partial file held before).
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    pub fn digests(&self) -> &Digests {
        &self.hasher
    }

    /// Bytes written so far (counting a partial file's earlier bytes).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The SHA-256 of everything written, lowercase hex.
    pub fn finish(self) -> String {
        self.hasher.sha256_hex()
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    /// The writer and the hash state so far.
    pub fn into_parts(self) -> (W, Digests) {
        (self.inner, self.hasher)
    }

    /// The hash state so far, to go on with elsewhere.
    pub fn into_digests(self) -> Digests {
        self.hasher
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for HashingWriter<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if let Some(limit) = this.limit
            && this.written.saturating_add(buf.len() as u64) > limit
        {
            return std::task::Poll::Ready(Err(too_much(limit)));
        }
        match std::pin::Pin::new(&mut this.inner).poll_write(cx, buf) {
            std::task::Poll::Ready(Ok(n)) => {
                this.hasher.update(&buf[..n]);
                this.written += n as u64;
                std::task::Poll::Ready(Ok(n))
            }
            std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(mark_local(e))),
            pending => pending,
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(mark_local)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner)
            .poll_shutdown(cx)
            .map_err(mark_local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn hashing_reader_and_writer_agree_with_sha256() {
        let data = b"hello ferry".to_vec();
        let mut r = HashingReader::new(&data[..]);
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).await.expect("read");
        let want = hex::encode(Sha256::digest(&data));
        assert_eq!(r.finish().0.sha256_hex(), want);
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).await.expect("write");
        assert_eq!(w.finish(), want);
    }

    #[test]
    fn other_digests_match_their_reference_values() {
        let data = b"hello ferry";
        let mut d = Digests::new(Some(HashAlgo::Md5));
        d.update(&data[..5]);
        d.update(&data[5..]);
        assert_eq!(
            d.hex(HashAlgo::Md5),
            Some(hex::encode(<md5::Md5 as md5::Digest>::digest(data)))
        );
        assert_eq!(
            d.hex(HashAlgo::Sha1),
            None,
            "only what was asked for is taken"
        );
        let mut d = Digests::new(Some(HashAlgo::Sha1));
        d.update(data);
        assert_eq!(
            d.hex(HashAlgo::Sha1),
            Some(hex::encode(sha1::Sha1::digest(data)))
        );
        let mut d = Digests::new(Some(HashAlgo::Crc32));
        d.update(b"123456789");
        assert_eq!(
            d.hex(HashAlgo::Crc32).as_deref(),
            Some("cbf43926"),
            "the CRC-32 check value"
        );
    }

    #[tokio::test]
    async fn a_limited_writer_refuses_the_first_byte_too_many() {
        let mut w = HashingWriter::new(Vec::new()).with_limit(10);
        w.write_all(b"0123456789").await.expect("up to the limit");
        let e = w.write_all(b"x").await.expect_err("one byte more");
        assert!(e.to_string().contains("more than the 10 bytes"), "{e}");
        assert_eq!(w.into_inner(), b"0123456789");
    }

    #[tokio::test]
    async fn local_errors_are_marked_local() {
        let e = crate::transport::TransportError::from_io(
            "write",
            &mark_local(std::io::Error::other("No space left on device")),
        );
        assert_eq!(e.kind, crate::transport::ErrorKind::Local);
    }
}
