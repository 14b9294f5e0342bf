//! A transport over a plain local directory.
//!
//! It implements the same [`Transport`] contract as FTPS, so the engine and the conformance
//! suite run against it without a server, and it is what the scan uses to walk a job's local
//! tree. Every operation goes through [`crate::local_fs`], anchored at the opened root:
//! symbolic links are reported as links and never followed, at any depth (nothing outside the
//! root is ever read or written through one, and there are no loops).

use std::path::PathBuf;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::listing::{Entry, RawEntry};
use crate::local_fs::{Kind, LocalRoot, Meta};
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
    /// The directory as configured, for `make_root` (the one path resolved by name).
    configured: PathBuf,
    root: LocalRoot,
    capabilities: Capabilities,
}

impl LocalDir {
    /// Open a session on the directory at `root`.
    pub fn open(root: &std::path::Path) -> Result<Self> {
        let opened = LocalRoot::open(root).map_err(|e| io_err(String::new(), e))?;
        Ok(Self::on(opened))
    }

    /// A session on an already opened root (a job's local side: the same handle the executor
    /// uses, so the scan and the transfers see one directory).
    pub fn on(root: LocalRoot) -> Self {
        LocalDir {
            configured: root.path().to_path_buf(),
            root,
            capabilities: Capabilities {
                size: true,
                utf8: true,
                rest: true,
                ..Capabilities::default()
            },
        }
    }

    fn root(&self) -> Result<&LocalRoot> {
        Ok(&self.root)
    }
}

/// Describe one directory entry as the listing shows it; links are links.
fn describe(meta: &Meta) -> Entry {
    match meta.kind {
        Kind::Dir => Entry::dir(),
        Kind::File => Entry {
            id: Some(meta.id),
            ..Entry::file(meta.size, meta.mtime)
        },
        // Links, sockets, FIFOs, devices: never followed, never transferred.
        Kind::Symlink | Kind::Other => Entry::link(),
    }
}

/// A local error as a transport error; the message already names the path.
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
        let root = self.root()?.clone();
        let dir = dir.clone();
        let entries = tokio::task::spawn_blocking(move || root.dir(&dir)?.entries())
            .await
            .map_err(|e| {
                TransportError::new(ErrorKind::Permanent, "read directory", e.to_string())
            })?
            .map_err(|e| io_err(String::new(), e))?;
        let mut listing = DirListing::default();
        for (name, meta) in entries {
            match name.into_string() {
                Ok(name) => listing.entries.push(RawEntry {
                    name,
                    entry: describe(&meta),
                }),
                Err(name) => listing
                    .unparsed
                    .push(format!("{:?}: name is not valid UTF-8", name)),
            }
        }
        Ok(listing)
    }

    async fn make_dir(&mut self, dir: &RelPath) -> Result<()> {
        let (parent, name) = self
            .root()?
            .parent(dir)
            .map_err(|e| io_err(String::new(), e))?;
        parent.make_dir(name).map_err(|e| io_err(String::new(), e))
    }

    async fn upload(
        &mut self,
        path: &RelPath,
        src: &mut (dyn AsyncRead + Unpin + Send),
        progress: Progress<'_>,
    ) -> Result<u64> {
        let root = self.root()?;
        let op = format!("write {}", root.display(path).display());
        let (parent, name) = root.parent(path).map_err(|e| io_err(op.clone(), e))?;
        let file = parent
            .create_or_truncate(name, crate::local_fs::new_file_mode())
            .map_err(|e| io_err(op.clone(), e))?;
        let mut file = tokio::fs::File::from_std(file);
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
        let root = self.root()?;
        let op = format!("read {}", root.display(path).display());
        let (parent, name) = root.parent(path).map_err(|e| io_err(op.clone(), e))?;
        let (file, _) = parent.open_read(name).map_err(|e| io_err(op.clone(), e))?;
        let mut file = tokio::fs::File::from_std(file);
        copy_with_progress(&mut file, dst, None, &op, progress).await
    }

    async fn upload_from(
        &mut self,
        path: &RelPath,
        offset: u64,
        src: &mut (dyn AsyncRead + Unpin + Send),
        progress: Progress<'_>,
    ) -> Result<u64> {
        use tokio::io::AsyncSeekExt;
        let root = self.root()?;
        let op = format!("write {} from byte {offset}", root.display(path).display());
        let (parent, name) = root.parent(path).map_err(|e| io_err(op.clone(), e))?;
        let file = parent
            .open_write(name, crate::local_fs::new_file_mode())
            .map_err(|e| io_err(op.clone(), e))?;
        let mut file = tokio::fs::File::from_std(file);
        file.set_len(offset)
            .await
            .map_err(|e| io_err(op.clone(), e))?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| io_err(op.clone(), e))?;
        let sent = copy_with_progress(src, &mut file, None, &op, progress).await?;
        file.sync_all().await.map_err(|e| io_err(op.clone(), e))?;
        Ok(sent)
    }

    async fn download_from(
        &mut self,
        path: &RelPath,
        offset: u64,
        dst: &mut (dyn AsyncWrite + Unpin + Send),
        progress: Progress<'_>,
    ) -> Result<u64> {
        use tokio::io::AsyncSeekExt;
        let root = self.root()?;
        let op = format!("read {} from byte {offset}", root.display(path).display());
        let (parent, name) = root.parent(path).map_err(|e| io_err(op.clone(), e))?;
        let (file, _) = parent.open_read(name).map_err(|e| io_err(op.clone(), e))?;
        let mut file = tokio::fs::File::from_std(file);
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| io_err(op.clone(), e))?;
        copy_with_progress(&mut file, dst, None, &op, progress).await
    }

    async fn make_root(&mut self) -> Result<()> {
        tokio::fs::create_dir_all(&self.configured)
            .await
            .map_err(|e| io_err(format!("create directory {}", self.configured.display()), e))?;
        let opened = LocalRoot::open(&self.configured).map_err(|e| io_err(String::new(), e))?;
        self.root = opened;
        Ok(())
    }

    async fn rename(&mut self, from: &RelPath, to: &RelPath) -> Result<()> {
        let root = self.root()?;
        let (from_dir, from_name) = root.parent(from).map_err(|e| io_err(String::new(), e))?;
        let (to_dir, to_name) = root.parent(to).map_err(|e| io_err(String::new(), e))?;
        from_dir
            .rename(from_name, &to_dir, to_name)
            .map_err(|e| io_err(String::new(), e))
    }

    async fn delete_file(&mut self, path: &RelPath) -> Result<()> {
        let (parent, name) = self
            .root()?
            .parent(path)
            .map_err(|e| io_err(String::new(), e))?;
        parent
            .remove_file(name)
            .map_err(|e| io_err(String::new(), e))
    }

    async fn remove_dir(&mut self, path: &RelPath) -> Result<()> {
        let (parent, name) = self
            .root()?
            .parent(path)
            .map_err(|e| io_err(String::new(), e))?;
        parent
            .remove_dir(name)
            .map_err(|e| io_err(String::new(), e))
    }

    async fn size(&mut self, path: &RelPath) -> Result<Option<u64>> {
        let root = self.root()?;
        match root.stat(path).map_err(|e| io_err(String::new(), e))? {
            Some(meta) if meta.kind == Kind::File => Ok(Some(meta.size)),
            _ => Err(TransportError::new(
                ErrorKind::Permanent,
                format!("stat {}", root.display(path).display()),
                "no such file",
            )),
        }
    }

    async fn server_hash(
        &mut self,
        _path: &RelPath,
    ) -> Result<Option<(crate::transport::HashAlgo, String)>> {
        Ok(None)
    }

    async fn quit(&mut self) {}
}
