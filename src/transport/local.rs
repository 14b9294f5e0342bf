//! A transport over a plain local directory.
//!
//! It implements the same [`Transport`] contract as FTPS, so the engine and the conformance
//! suite run against it without a server, and it is what the scan uses to walk a job's local
//! tree. Symbolic links are reported as links unless they point at a file inside the root:
//! nothing outside the root is ever read through a link, and directory links are not followed
//! (no loops).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::listing::{Entry, EntryKind, Mtime, Precision, RawEntry};
use crate::path::RelPath;
use crate::transport::{
    Capabilities, Connector, DirListing, ErrorKind, Progress, Result, Transport, TransportError,
    copy_with_progress,
};

/// Opens [`LocalDir`] sessions on one directory.
pub struct LocalConnector {
    root: PathBuf,
}

impl LocalConnector {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalConnector { root: root.into() }
    }
}

#[async_trait]
impl Connector for LocalConnector {
    async fn connect(&self) -> Result<Box<dyn Transport>> {
        Ok(Box::new(LocalDir::open(&self.root)?))
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

/// A session on a local directory.
pub struct LocalDir {
    root: PathBuf,
    canonical_root: PathBuf,
    capabilities: Capabilities,
}

impl LocalDir {
    pub fn open(root: &Path) -> Result<Self> {
        let canonical_root = std::fs::canonicalize(root).map_err(|e| {
            TransportError::new(
                ErrorKind::Permanent,
                format!("open {}", root.display()),
                e.to_string(),
            )
        })?;
        Ok(LocalDir {
            root: root.to_path_buf(),
            canonical_root,
            capabilities: Capabilities {
                size: true,
                utf8: true,
                ..Capabilities::default()
            },
        })
    }

    fn local(&self, path: &RelPath) -> PathBuf {
        path.to_local(&self.root)
    }

    /// Describe one directory entry, following a link only to a file inside the root.
    fn describe_entry(&self, path: &Path, meta: std::fs::Metadata) -> Entry {
        if meta.file_type().is_symlink() {
            let inside = std::fs::canonicalize(path)
                .map(|target| target.starts_with(&self.canonical_root))
                .unwrap_or(false);
            if inside
                && let Ok(target) = std::fs::metadata(path)
                && target.is_file()
            {
                return Entry::file(target.len(), mtime_of(&target));
            }
            return Entry {
                kind: EntryKind::Symlink,
                size: 0,
                mtime: None,
            };
        }
        if meta.is_dir() {
            Entry::dir()
        } else if meta.is_file() {
            Entry::file(meta.len(), mtime_of(&meta))
        } else {
            // Sockets, FIFOs, devices: never transferred.
            Entry {
                kind: EntryKind::Symlink,
                size: 0,
                mtime: None,
            }
        }
    }
}

/// A local file's modification time at full precision.
pub fn mtime_of(meta: &std::fs::Metadata) -> Option<Mtime> {
    let t = meta.modified().ok()?;
    let nanos = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).ok()?,
        Err(e) => -i64::try_from(e.duration().as_nanos()).ok()?,
    };
    Some(Mtime::new(nanos, Precision::Nanosecond))
}

fn io_err(op: String, e: std::io::Error) -> TransportError {
    let kind = match e.kind() {
        std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    };
    TransportError::new(kind, op, e.to_string())
}

#[async_trait]
impl Transport for LocalDir {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn list_dir(&mut self, dir: &RelPath) -> Result<DirListing> {
        let path = self.local(dir);
        let op = format!("read directory {}", path.display());
        let mut rd = tokio::fs::read_dir(&path)
            .await
            .map_err(|e| io_err(op.clone(), e))?;
        let mut listing = DirListing::default();
        while let Some(item) = rd.next_entry().await.map_err(|e| io_err(op.clone(), e))? {
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                listing.unparsed.push(format!(
                    "{}: name is not valid UTF-8",
                    item.path().display()
                ));
                continue;
            };
            let meta = match tokio::fs::symlink_metadata(item.path()).await {
                Ok(m) => m,
                Err(e) => {
                    listing
                        .unparsed
                        .push(format!("{}: {e}", item.path().display()));
                    continue;
                }
            };
            let entry = self.describe_entry(&item.path(), meta);
            listing.entries.push(RawEntry { name, entry });
        }
        Ok(listing)
    }

    async fn make_dir(&mut self, dir: &RelPath) -> Result<()> {
        let path = self.local(dir);
        match tokio::fs::create_dir(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
            Err(e) => Err(io_err(format!("create directory {}", path.display()), e)),
        }
    }

    async fn upload(
        &mut self,
        path: &RelPath,
        src: &mut (dyn AsyncRead + Unpin + Send),
        progress: Progress<'_>,
    ) -> Result<u64> {
        let target = self.local(path);
        let op = format!("write {}", target.display());
        let mut file = tokio::fs::File::create(&target)
            .await
            .map_err(|e| io_err(op.clone(), e))?;
        let sent = copy_with_progress(src, &mut file, None, &op, progress).await?;
        file.sync_all().await.map_err(|e| io_err(op.clone(), e))?;
        Ok(sent)
    }

    async fn download(
        &mut self,
        path: &RelPath,
        dst: &mut (dyn AsyncWrite + Unpin + Send),
        progress: Progress<'_>,
    ) -> Result<u64> {
        let source = self.local(path);
        let op = format!("read {}", source.display());
        let mut file = tokio::fs::File::open(&source)
            .await
            .map_err(|e| io_err(op.clone(), e))?;
        copy_with_progress(&mut file, dst, None, &op, progress).await
    }

    async fn make_root(&mut self) -> Result<()> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|e| io_err(format!("create directory {}", self.root.display()), e))
    }

    async fn rename(&mut self, from: &RelPath, to: &RelPath) -> Result<()> {
        let (f, t) = (self.local(from), self.local(to));
        tokio::fs::rename(&f, &t)
            .await
            .map_err(|e| io_err(format!("rename {} to {}", f.display(), t.display()), e))
    }

    async fn delete_file(&mut self, path: &RelPath) -> Result<()> {
        let p = self.local(path);
        tokio::fs::remove_file(&p)
            .await
            .map_err(|e| io_err(format!("delete {}", p.display()), e))
    }

    async fn remove_dir(&mut self, path: &RelPath) -> Result<()> {
        let p = self.local(path);
        tokio::fs::remove_dir(&p)
            .await
            .map_err(|e| io_err(format!("remove directory {}", p.display()), e))
    }

    async fn size(&mut self, path: &RelPath) -> Result<Option<u64>> {
        let p = self.local(path);
        let meta = tokio::fs::metadata(&p)
            .await
            .map_err(|e| io_err(format!("stat {}", p.display()), e))?;
        Ok(Some(meta.len()))
    }

    async fn sha256(&mut self, _path: &RelPath) -> Result<Option<String>> {
        Ok(None)
    }

    async fn quit(&mut self) {}
}
