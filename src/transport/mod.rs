//! The boundary to the network: one trait in ferry's own types.
//!
//! A [`Transport`] is one logged-in session rooted at a job's remote directory. It does one
//! thing at a time (FTP allows no more on one control connection); parallelism comes from
//! opening several sessions through a [`Connector`], bounded by the endpoint's budget.
//! Paths are always [`RelPath`]s relative to the root the session was opened with, so nothing
//! above the transport builds remote path strings.
//!
//! Errors are classified here, once, into [`ErrorKind`]: the executor retries `Transient`
//! errors, reports `Permanent` ones against the file, and stops the run on `Auth` and `Tls`.
//!
//! Implementations: [`ftps`] (the real thing, over suppaftp and rustls) and [`local`] (a plain
//! directory, which keeps the engine testable and proves the boundary). One conformance suite in
//! `tests/conformance.rs` runs against both.

pub mod ftps;
pub mod local;
pub mod pool;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::listing::RawEntry;
use crate::path::RelPath;

/// Whether retrying can help, and how far a failure reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Network trouble, a timeout, a 4xx reply: retrying may help.
    Transient,
    /// 421, too many connections: retrying later, on fewer connections, may help.
    Busy,
    /// A 5xx reply about this file, a local I/O error: retrying will not help.
    Permanent,
    /// A local file operation failed (disk full, permission denied, a link refused): reported
    /// against the file, not retried, never blamed on the server.
    Local,
    /// The local file changed, vanished or was replaced since the scan: it is not sent under
    /// the scanned facts this run (the next run picks it up). A warning, not a failure.
    Changed,
    /// The state database could not be written: the file's transfer stands, but ferry no
    /// longer knows it; reported, never ignored.
    State,
    /// Login refused: stops the run.
    Auth,
    /// TLS handshake or certificate failure: stops the run.
    Tls,
    /// The run was cancelled.
    Cancelled,
}

/// A failed transport operation, with what was attempted and what the server said.
#[derive(Debug, Clone, thiserror::Error)]
pub struct TransportError {
    pub kind: ErrorKind,
    /// What was being done, e.g. `STOR /incoming/a.csv.ferry-tmp`.
    pub op: String,
    pub message: String,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.op, self.message)
        }
    }
}

impl TransportError {
    /// An error as it will be shown and stored: control characters escaped, secrets
    /// redacted, and a long reply or line cut short ([`crate::text::clean`]), whatever the
    /// server sent.
    pub fn new(kind: ErrorKind, op: impl Into<String>, message: impl Into<String>) -> Self {
        TransportError {
            kind,
            op: crate::text::clean(&op.into(), 400),
            message: crate::text::clean(&message.into(), 1000),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Transient | ErrorKind::Busy)
    }

    /// Whether this error ends the whole run rather than one file.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Auth | ErrorKind::Tls | ErrorKind::Cancelled
        )
    }

    /// A local file operation's error; `e` already names the path.
    pub fn local(op: impl Into<String>, e: &std::io::Error) -> Self {
        TransportError::new(ErrorKind::Local, op, e.to_string())
    }

    /// Classify an I/O error met while transferring: the network's, unless the local side of
    /// the copy marked it ([`LocalIoError`]).
    pub fn from_io(op: impl Into<String>, e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        if let Some(local) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<LocalIoError>())
        {
            return TransportError::new(ErrorKind::Local, op, local.0.clone());
        }
        // A refused certificate (a client certificate refused after a TLS 1.3 handshake, say)
        // arrives as an I/O error wrapping a rustls error: it stops the run. Other TLS errors
        // mid-stream (a bad record from a cut connection) are transient.
        if ftps::tls::is_tls_refusal(e) {
            return TransportError::new(ErrorKind::Tls, op, e.to_string());
        }
        if e.get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return TransportError::new(ErrorKind::Transient, op, e.to_string());
        }
        let kind = match e.kind() {
            K::TimedOut
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::ConnectionRefused
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::Interrupted
            | K::WouldBlock
            | K::NotConnected => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        };
        TransportError::new(kind, op, e.to_string())
    }
}

pub type Result<T, E = TransportError> = std::result::Result<T, E>;

/// Marks an I/O error as the local side's (a disk, not the network), so that a copy loop that
/// cannot tell its reader from its writer still reports it as [`ErrorKind::Local`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LocalIoError(pub String);

/// Wrap a local file's I/O error as [`LocalIoError`], keeping its kind.
pub fn mark_local(e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), LocalIoError(e.to_string()))
}

/// A checksum algorithm a server can compute for us, and ferry locally to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum HashAlgo {
    Sha256,
    Sha1,
    Md5,
    Crc32,
}

impl HashAlgo {
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "SHA-256",
            HashAlgo::Sha1 => "SHA-1",
            HashAlgo::Md5 => "MD5",
            HashAlgo::Crc32 => "CRC-32",
        }
    }

    /// Hex digits of a digest.
    pub fn hex_len(self) -> usize {
        match self {
            HashAlgo::Sha256 => 64,
            HashAlgo::Sha1 => 40,
            HashAlgo::Md5 => 32,
            HashAlgo::Crc32 => 8,
        }
    }
}

/// What a server (or directory) supports, as learned at login.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    pub mlsd: bool,
    pub mfmt: bool,
    pub size: bool,
    pub mdtm: bool,
    pub utf8: bool,
    pub rest: bool,
    pub epsv: bool,
    /// Hash commands the server offers (FEAT lines such as `HASH`, `XSHA256`, `XMD5`).
    pub hash_commands: Vec<String>,
    /// The hash ferry asks the server for and compares with its own digest of the same kind.
    pub hash_command: Option<ftps::parse::ServerHash>,
    /// Negotiated TLS version on the control connection, e.g. `TLSv1.3`; `None` in cleartext.
    pub tls_version: Option<String>,
    /// Negotiated cipher suite on the control connection, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub tls_cipher_suite: Option<String>,
    /// Whether the last data connection resumed the control connection's TLS session
    /// (`None` until a data connection was made, or in cleartext).
    pub data_session_resumed: Option<bool>,
    /// The first line of the server's greeting.
    pub banner: Option<String>,
}

/// One directory as a server or filesystem reported it.
#[derive(Debug, Clone, Default)]
pub struct DirListing {
    /// Parsed entries, names not yet validated.
    pub entries: Vec<RawEntry>,
    /// Lines or entries that could not be understood, each as a message naming it.
    pub unparsed: Vec<String>,
}

/// Called with the number of bytes moved since the previous call.
pub type Progress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// One session rooted at a job's remote (or local) directory.
#[async_trait]
pub trait Transport: Send {
    /// What this session supports.
    fn capabilities(&self) -> &Capabilities;

    /// The entries of one directory, names unchecked (the caller validates them).
    async fn list_dir(&mut self, dir: &RelPath) -> Result<DirListing>;

    /// Create one directory (its parent exists). Succeeds if it already exists as a directory.
    async fn make_dir(&mut self, dir: &RelPath) -> Result<()>;

    /// Store the whole of `src` at `path`, replacing any file there. Returns the bytes sent.
    async fn upload(
        &mut self,
        path: &RelPath,
        src: &mut (dyn AsyncRead + Unpin + Send),
        progress: Progress<'_>,
    ) -> Result<u64>;

    /// Write the whole file at `path` into `dst`. Returns the bytes received.
    async fn download(
        &mut self,
        path: &RelPath,
        dst: &mut (dyn AsyncWrite + Unpin + Send),
        progress: Progress<'_>,
    ) -> Result<u64>;

    /// Store `src` at `path` from byte `offset` on (REST then STOR), keeping the bytes before
    /// it: the rest of an interrupted upload. Returns the bytes sent.
    async fn upload_from(
        &mut self,
        path: &RelPath,
        offset: u64,
        src: &mut (dyn AsyncRead + Unpin + Send),
        progress: Progress<'_>,
    ) -> Result<u64> {
        if offset == 0 {
            return self.upload(path, src, progress).await;
        }
        Err(TransportError::new(
            ErrorKind::Permanent,
            format!("upload {path} from byte {offset}"),
            "this transport cannot resume",
        ))
    }

    /// Write the file at `path` from byte `offset` on into `dst` (REST then RETR): the rest of
    /// an interrupted download. Returns the bytes received.
    async fn download_from(
        &mut self,
        path: &RelPath,
        offset: u64,
        dst: &mut (dyn AsyncWrite + Unpin + Send),
        progress: Progress<'_>,
    ) -> Result<u64> {
        if offset == 0 {
            return self.download(path, dst, progress).await;
        }
        Err(TransportError::new(
            ErrorKind::Permanent,
            format!("download {path} from byte {offset}"),
            "this transport cannot resume",
        ))
    }

    /// Create the session's root directory and any missing parents (a push to a new place).
    async fn make_root(&mut self) -> Result<()>;

    /// Rename a file, replacing the target if the server allows it.
    async fn rename(&mut self, from: &RelPath, to: &RelPath) -> Result<()>;

    /// [`rename`](Self::rename) onto a file that may exist, saying how it went: some servers
    /// refuse to rename onto an existing name, and the old file is deleted first there.
    async fn replace(&mut self, from: &RelPath, to: &RelPath) -> Result<Replaced> {
        self.rename(from, to).await.map(|()| Replaced::Renamed)
    }

    async fn delete_file(&mut self, path: &RelPath) -> Result<()>;

    /// Move a file out of the root, to the same relative path below the absolute directory
    /// `dir` (made as needed), with a UTC time suffix when `stamp` is set. An existing file there
    /// is never replaced: the moved one gets a (further) suffix. Returns where it went.
    async fn move_out(&mut self, path: &RelPath, dir: &str, stamp: bool) -> Result<String> {
        let _ = stamp;
        let _ = dir;
        Err(TransportError::new(
            ErrorKind::Permanent,
            format!("move {path}"),
            "this transport cannot move files out of its root",
        ))
    }

    async fn remove_dir(&mut self, path: &RelPath) -> Result<()>;

    /// Root the session at another directory (a pooled session serves several jobs).
    fn set_root(&mut self, _root: &str) {}

    /// Check that the session still answers (NOOP).
    /// Whether this session can no longer open a data connection the server will take and
    /// must be replaced by a new login first (a TLS 1.3 control connection out of session
    /// tickets, see `ftps::tls::Tickets`).
    fn needs_new_session(&self) -> bool {
        false
    }

    async fn noop(&mut self) -> Result<()> {
        Ok(())
    }

    /// The size of a file as the server reports it, `None` when it cannot tell.
    async fn size(&mut self, path: &RelPath) -> Result<Option<u64>>;

    /// The file's modification time by MDTM (UTC, to the second), when the server has it.
    async fn modified(&mut self, path: &RelPath) -> Result<Option<crate::listing::Mtime>> {
        let _ = path;
        Ok(None)
    }

    /// The server's digest of the file (lowercase hex) in [`Capabilities::hash_command`]'s
    /// algorithm; `None` when the server offers no hash command.
    async fn server_hash(&mut self, path: &RelPath) -> Result<Option<(HashAlgo, String)>>;

    /// Set the file's modification time on the server (MFMT), when the server offers a way.
    /// `Ok(false)` when it offers none.
    async fn set_modified(&mut self, path: &RelPath, mtime: crate::listing::Mtime) -> Result<bool> {
        let _ = (path, mtime);
        Ok(false)
    }

    /// Close the session politely. Errors are ignored: the session is over either way.
    async fn quit(&mut self);
}

/// How [`Transport::replace`] put a file in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// One rename, onto the old file if there was one.
    Renamed,
    /// The server refused to rename onto the existing file: it was deleted first, then the
    /// rename went through (for a moment there was no file under the name).
    DeletedFirst,
}

/// Opens sessions to one endpoint, rooted at one directory.
#[async_trait]
pub trait Connector: Send + Sync {
    async fn connect(&self) -> Result<Box<dyn Transport>>;

    /// A short human description, e.g. `ftps://dropbox@ftp.acme.example:21/outgoing`.
    fn describe(&self) -> String;
}

/// Size of one read while copying a big file.
const CHUNK: usize = 256 * 1024;
/// Size of the first read of a copy: a small file never zeroes (or maps) a buffer of
/// [`CHUNK`]. In the profile of a pull of 5,000 files of 4 KiB, zeroing a new 256 KiB buffer
/// per file and faulting its pages in took ~2 % of ferry's CPU.
const FIRST_CHUNK: usize = 16 * 1024;

/// Copy everything from `src` to `dst`, reporting progress; the loop every transport uses for
/// file bodies. With a `timeout`, each read and each write must finish within it (a stalled
/// peer is an error, never a hang). Returns the bytes copied.
pub async fn copy_with_progress<R, W>(
    src: &mut R,
    dst: &mut W,
    timeout: Option<Duration>,
    op: &str,
    progress: Progress<'_>,
) -> Result<u64>
where
    R: AsyncRead + Unpin + Send + ?Sized,
    W: AsyncWrite + Unpin + Send + ?Sized,
{
    let mut buf = vec![0u8; FIRST_CHUNK];
    let mut moved = 0u64;
    loop {
        let n = bounded(timeout, op, src.read(&mut buf)).await?;
        if n == 0 {
            return Ok(moved);
        }
        bounded(timeout, op, dst.write_all(&buf[..n])).await?;
        moved += n as u64;
        progress(n as u64);
        // A read that filled the buffer: more is coming, read more at a time.
        if n == buf.len() && buf.len() < CHUNK {
            buf.resize((buf.len() * 2).min(CHUNK), 0);
        }
    }
}

async fn bounded<T>(
    timeout: Option<Duration>,
    op: &str,
    io: impl Future<Output = std::io::Result<T>>,
) -> Result<T> {
    let result = match timeout {
        Some(limit) => tokio::time::timeout(limit, io).await.map_err(|_| {
            TransportError::new(
                ErrorKind::Transient,
                op,
                format!(
                    "no answer within {} (timeout)",
                    humantime::format_duration(limit)
                ),
            )
        })?,
        None => io.await,
    };
    result.map_err(|e| TransportError::from_io(op, &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A reader that hands out at most `step` bytes per read, as a socket or a TLS stream does.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        reads: Vec<usize>,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self.step.min(buf.remaining()).min(self.data.len());
            let (head, rest) = self.data.split_at(n);
            buf.put_slice(head);
            self.data = rest;
            self.reads.push(buf.capacity());
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn copied(data: &[u8], step: usize) -> (Vec<u8>, u64, Vec<usize>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut src = Trickle {
            data,
            step,
            reads: Vec::new(),
        };
        let mut dst = Vec::new();
        let seen = std::sync::atomic::AtomicU64::new(0);
        let progress = |n: u64| {
            seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        let moved = rt
            .block_on(copy_with_progress(
                &mut src, &mut dst, None, "copy", &progress,
            ))
            .expect("copy");
        assert_eq!(
            moved,
            seen.into_inner(),
            "progress adds up to the bytes moved"
        );
        (dst, moved, src.reads)
    }

    #[test]
    fn a_small_copy_reads_into_a_small_buffer_and_a_big_one_grows_to_a_chunk() {
        let small = vec![7u8; 4096];
        let (out, moved, reads) = copied(&small, usize::MAX);
        assert_eq!((out, moved), (small, 4096));
        assert!(reads.iter().all(|&cap| cap == FIRST_CHUNK), "{reads:?}");

        let big: Vec<u8> = (0..3 * CHUNK).map(|i| (i % 251) as u8).collect();
        let (out, _, reads) = copied(&big, usize::MAX);
        assert_eq!(out, big);
        assert_eq!(reads.first(), Some(&FIRST_CHUNK));
        assert!(
            reads.contains(&CHUNK),
            "the buffer grows to CHUNK: {reads:?}"
        );
        assert!(reads.iter().all(|&cap| cap <= CHUNK), "{reads:?}");
    }

    proptest! {
        /// Whatever the sizes of the reads, every byte arrives once and in order.
        #[test]
        fn every_byte_is_copied_once_in_order(len in 0usize..(3 * CHUNK), step in 1usize..70_000) {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let (out, moved, _) = copied(&data, step);
            prop_assert_eq!(moved, len as u64);
            prop_assert_eq!(out, data);
        }
    }
}
