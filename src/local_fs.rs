//! Local file operations anchored at an opened directory, never at a path string.
//!
//! A job's local root is opened once ([`LocalRoot::open`]). Every later create, open, rename,
//! unlink, rmdir and mkdir of the job works relative to that handle, one path component at a
//! time, each opened with `O_NOFOLLOW`: a symbolic link anywhere below the root is refused,
//! never followed. So another writer of the tree that swaps a directory for a link to
//! `/etc` in the middle of a run gets an error, not a write (or a delete) outside the root, and
//! a file swapped for a link to a secret is refused when it is opened. The root itself may be
//! reached through links: that is the operator's choice, made once in the job file.
//!
//! Work on one directory goes through a [`DirHandle`]: open the parent once, then create the
//! temporary file, write it, rename it onto its final name and fsync the directory, all on that
//! handle. Renaming the directory away meanwhile cannot redirect any of these steps.
//!
//! What it does not do: it knows nothing of plans, transports or state. It lives beside
//! `path` and `listing` rather than under `execute/` because the scan walks the local tree
//! through it too (via `transport::local`).
//!
//! Modes: temporary files are created owner-only (0600). [`DirHandle::final_mode`] then says
//! what a finished file is given before it is renamed: the mode of the file it replaces, or,
//! for a new file, what the process umask allows.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::listing::{FileId, Mtime, Precision};
use crate::path::RelPath;

/// Mode of ferry's temporary files, on both sides of a download: owner-only until finished.
pub const TEMP_MODE: u32 = 0o600;

/// A refusal: a link where a directory or file was expected, or a FIFO or device where a
/// regular file was. Carried inside an [`io::Error`]; see [`is_refused`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

fn refused(message: String) -> io::Error {
    io::Error::other(Refused(message))
}

/// Whether an error is a [`Refused`] link or special file (rather than, say, a full disk).
pub fn is_refused(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Refused>())
}

/// What a directory entry is, as `lstat` sees it (links are never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device: never transferred.
    Other,
}

/// The facts ferry uses about one local entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub id: FileId,
    pub size: u64,
    pub mtime: Option<Mtime>,
    /// Permission bits (`0o7777`).
    pub mode: u32,
}

impl Meta {
    /// Whether `other` is the same file with the same size and modification time.
    pub fn same_content_as(&self, other: &Meta) -> bool {
        self.id == other.id && self.size == other.size && self.mtime == other.mtime
    }
}

// The field types of `struct stat` differ between architectures; the casts are exact on each.
#[allow(clippy::unnecessary_cast)]
fn meta_of(st: &rfs::Stat) -> Meta {
    let kind = match FileType::from_raw_mode(st.st_mode as _) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    };
    let nanos = (st.st_mtime as i64)
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(st.st_mtime_nsec as i64));
    let changed_ns = (st.st_ctime as i64)
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_ctime_nsec as i64);
    Meta {
        kind,
        id: FileId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            changed_ns,
        },
        size: st.st_size.max(0) as u64,
        mtime: nanos.map(|n| Mtime::new(n, Precision::Nanosecond)),
        mode: (st.st_mode as u32) & 0o7777,
    }
}

/// The facts of an open file.
pub fn fstat(file: &impl AsFd) -> io::Result<Meta> {
    Ok(meta_of(&rfs::fstat(file)?))
}

/// The process umask, read once from `/proc/self/status` (reading it with `umask(2)` would
/// change it for a moment under other threads). 0o022 when it cannot be read.
pub fn umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    })
}

/// The mode a newly created file gets under the process umask.
pub fn new_file_mode() -> u32 {
    0o666 & !umask()
}

/// An opened root directory; every operation below it is anchored at this handle.
#[derive(Clone)]
pub struct LocalRoot {
    fd: Arc<OwnedFd>,
    path: PathBuf,
}

impl std::fmt::Debug for LocalRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalRoot({})", self.path.display())
    }
}

/// How a directory below the root is opened: never through a link.
const OPEN_DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl LocalRoot {
    /// Open the directory at `path` (links in `path` itself are followed: it comes from the
    /// job file, not from a server or another writer).
    pub fn open(path: &Path) -> io::Result<LocalRoot> {
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| with_path(e.into(), path, "open directory"))?;
        Ok(LocalRoot {
            fd: Arc::new(fd),
            path: path.to_path_buf(),
        })
    }

    /// The root as configured, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where `rel` is, for messages only: never opened by this name.
    pub fn display(&self, rel: &RelPath) -> PathBuf {
        rel.to_local(&self.path)
    }

    /// Open the directory `rel`, refusing a link at every component.
    pub fn dir(&self, rel: &RelPath) -> io::Result<DirHandle> {
        let mut parts = rel.components();
        // The first component is opened on the root's own descriptor: no copy of it per call
        // (two system calls of every small file's download). A failure goes the long way, on
        // a copy, for [`DirHandle::open_dir`]'s explanation.
        let mut dir = match parts.next() {
            None => self.handle()?,
            Some(first) => match rfs::openat(&*self.fd, first, OPEN_DIR, Mode::empty()) {
                Ok(fd) => DirHandle {
                    fd,
                    path: self.path.join(first),
                },
                Err(_) => self.handle()?.open_dir(first)?,
            },
        };
        for part in parts {
            dir = dir.open_dir(part)?;
        }
        Ok(dir)
    }

    /// The root itself as a [`DirHandle`] (a copy of its descriptor).
    fn handle(&self) -> io::Result<DirHandle> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| with_path(e, &self.path, "open directory"))?;
        Ok(DirHandle {
            fd,
            path: self.path.clone(),
        })
    }

    /// The directory holding `rel`, opened, and `rel`'s last component.
    pub fn parent<'a>(&self, rel: &'a RelPath) -> io::Result<(DirHandle, &'a str)> {
        Ok((self.dir(&rel.parent())?, rel.file_name()))
    }

    /// Create the directories of `rel` that are missing (mode 0777 less the umask), refusing
    /// links on the way, and open it.
    pub fn make_dirs(&self, rel: &RelPath) -> io::Result<DirHandle> {
        let mut dir = self.dir(&RelPath::root())?;
        for part in rel.components() {
            dir.make_dir(part)?;
            dir = dir.open_dir(part)?;
        }
        Ok(dir)
    }

    /// The facts of `rel` (not following a final link); `None` when nothing is there.
    pub fn stat(&self, rel: &RelPath) -> io::Result<Option<Meta>> {
        if rel.is_root() {
            return Ok(Some(meta_of(&rfs::fstat(&*self.fd)?)));
        }
        let (dir, name) = self.parent(rel)?;
        dir.stat(name)
    }
}

/// One open directory below a [`LocalRoot`]; operations take a single name inside it.
#[derive(Debug)]
pub struct DirHandle {
    fd: OwnedFd,
    /// Where it is, for messages only.
    path: PathBuf,
}

impl AsFd for DirHandle {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl DirHandle {
    /// Where `name` is, for messages only.
    pub fn display(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Open the subdirectory `name`; a link is refused.
    pub fn open_dir(&self, name: &str) -> io::Result<DirHandle> {
        let path = self.path.join(name);
        match rfs::openat(&self.fd, name, OPEN_DIR, Mode::empty()) {
            Ok(fd) => Ok(DirHandle { fd, path }),
            Err(e) => Err(self.explain(e, name, "open directory")),
        }
    }

    /// Say what stood in the way of an `O_NOFOLLOW` open: ELOOP means a link (nothing else
    /// makes a no-follow open loop); ENOTDIR means a link or a file where a directory was
    /// wanted, or, when a directory stands there again by the time we look, one that another
    /// writer swapped in and out meanwhile.
    fn explain(&self, e: Errno, name: &str, op: &str) -> io::Error {
        let path = self.path.join(name);
        let link = || {
            refused(format!(
                "{}: is a symbolic link; ferry does not follow links inside the local root",
                path.display()
            ))
        };
        match e {
            Errno::LOOP => link(),
            Errno::NOTDIR => match self.stat(name) {
                Ok(Some(meta)) if meta.kind == Kind::Symlink => link(),
                Ok(None)
                | Ok(Some(Meta {
                    kind: Kind::Dir, ..
                })) => refused(format!(
                    "{}: was replaced while ferry opened it (a link or a file stood there); not followed",
                    path.display()
                )),
                _ => with_path(e.into(), &path, op),
            },
            _ => with_path(e.into(), &path, op),
        }
    }

    /// The facts of `name`, not following a link; `None` when nothing is there.
    pub fn stat(&self, name: &str) -> io::Result<Option<Meta>> {
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(meta_of(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(with_path(e.into(), &self.path.join(name), "stat")),
        }
    }

    /// Every entry of this directory with its facts (links not followed), unsorted. An entry
    /// that vanished between the read and its `lstat` is left out.
    pub fn entries(&self) -> io::Result<Vec<(OsString, Meta)>> {
        let read = |e: Errno| with_path(e.into(), &self.path, "read directory");
        let dir = rfs::Dir::read_from(&self.fd).map_err(read)?;
        let mut out = Vec::new();
        for item in dir {
            let item = item.map_err(read)?;
            let name = item.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = OsString::from_vec(name.to_vec());
            match rfs::statat(&self.fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => out.push((name, meta_of(&st))),
                Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(with_path(e.into(), &self.path.join(&name), "stat"));
                }
            }
        }
        Ok(out)
    }

    /// Open the regular file `name` for reading, with its facts from the open handle. A link,
    /// FIFO or device is refused (a FIFO cannot block the open: it is opened non-blocking).
    pub fn open_read(&self, name: &str) -> io::Result<(std::fs::File, Meta)> {
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.explain(e, name, "open"))?;
        let meta = meta_of(&rfs::fstat(&fd)?);
        if meta.kind != Kind::File {
            return Err(refused(format!(
                "{}: not a regular file",
                self.path.join(name).display()
            )));
        }
        // Regular files ignore O_NONBLOCK; clear it anyway so reads behave as usual.
        rfs::fcntl_setfl(&fd, OFlags::empty())?;
        Ok((std::fs::File::from(fd), meta))
    }

    /// Create `name`, which must not exist (not even as a link), for writing, with `mode`.
    pub fn create_new(&self, name: &str, mode: u32) -> io::Result<std::fs::File> {
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode as _),
        )
        .map_err(|e| with_path(e.into(), &self.path.join(name), "create"))?;
        Ok(std::fs::File::from(fd))
    }

    /// Open `name` for writing, creating it (with `mode`) or truncating it; a link is refused.
    pub fn create_or_truncate(&self, name: &str, mode: u32) -> io::Result<std::fs::File> {
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode as _),
        )
        .map_err(|e| self.explain(e, name, "create"))?;
        Ok(std::fs::File::from(fd))
    }

    /// Open the existing regular file `name` for appending (the rest of a partial download); a
    /// link is refused.
    pub fn open_append(&self, name: &str) -> io::Result<std::fs::File> {
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.explain(e, name, "open"))?;
        if meta_of(&rfs::fstat(&fd)?).kind != Kind::File {
            return Err(refused(format!(
                "{}: not a regular file",
                self.path.join(name).display()
            )));
        }
        Ok(std::fs::File::from(fd))
    }

    /// Open `name` for writing without truncating it, creating it (with `mode`) when missing;
    /// a link is refused.
    pub fn open_write(&self, name: &str, mode: u32) -> io::Result<std::fs::File> {
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode as _),
        )
        .map_err(|e| self.explain(e, name, "open"))?;
        Ok(std::fs::File::from(fd))
    }

    /// The mode a finished temporary file is to have under `name`: the mode of the file it
    /// replaces (an updated 0600 file stays 0600), else what the umask allows.
    pub fn final_mode(&self, name: &str) -> io::Result<u32> {
        Ok(match self.stat(name)? {
            Some(old) if old.kind == Kind::File => old.mode & 0o777,
            _ => new_file_mode(),
        })
    }

    /// Rename `from` in this directory to `to` in `dest`, replacing a file there.
    pub fn rename(&self, from: &str, dest: &DirHandle, to: &str) -> io::Result<()> {
        rfs::renameat(&self.fd, from, &dest.fd, to).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "rename {} to {}: {}",
                    self.path.join(from).display(),
                    dest.path.join(to).display(),
                    io::Error::from(e)
                ),
            )
        })
    }

    /// Rename `from` to `to` in `dest` only if nothing is at `to` (`AlreadyExists` otherwise).
    pub fn rename_no_replace(&self, from: &str, dest: &DirHandle, to: &str) -> io::Result<()> {
        rfs::renameat_with(&self.fd, from, &dest.fd, to, rfs::RenameFlags::NOREPLACE)
            .map_err(io::Error::from)
    }

    /// Remove the file (or link) `name`, never what a link points at.
    pub fn remove_file(&self, name: &str) -> io::Result<()> {
        rfs::unlinkat(&self.fd, name, AtFlags::empty())
            .map_err(|e| with_path(e.into(), &self.path.join(name), "delete"))
    }

    /// Remove the empty directory `name` (a link there is refused).
    pub fn remove_dir(&self, name: &str) -> io::Result<()> {
        rfs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)
            .map_err(|e| self.explain(e, name, "remove directory"))
    }

    /// Create the directory `name` (0777 less the umask); an existing directory is success, a
    /// link or file there is not.
    pub fn make_dir(&self, name: &str) -> io::Result<()> {
        match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o777)) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => match self.stat(name)? {
                Some(m) if m.kind == Kind::Dir => Ok(()),
                Some(m) if m.kind == Kind::Symlink => Err(self.explain(Errno::LOOP, name, "")),
                _ => Err(with_path(
                    Errno::EXIST.into(),
                    &self.path.join(name),
                    "create directory",
                )),
            },
            Err(e) => Err(with_path(
                e.into(),
                &self.path.join(name),
                "create directory",
            )),
        }
    }

    /// Flush this directory's entries (after a rename) to disk.
    pub fn sync(&self) -> io::Result<()> {
        rfs::fsync(&self.fd).map_err(|e| with_path(e.into(), &self.path, "fsync directory"))
    }
}

fn with_path(e: io::Error, path: &Path, op: &str) -> io::Error {
    let message = if op.is_empty() {
        format!("{}: {e}", path.display())
    } else {
        format!("{op} {}: {e}", path.display())
    };
    io::Error::new(e.kind(), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).expect("path")
    }

    #[test]
    fn links_are_refused_at_every_component() {
        let root = tempfile::tempdir().expect("tmp");
        let outside = tempfile::tempdir().expect("tmp");
        std::fs::write(outside.path().join("secret"), b"secret").expect("write");
        std::fs::create_dir(root.path().join("real")).expect("mkdir");
        symlink(outside.path(), root.path().join("link")).expect("symlink");
        symlink(outside.path().join("secret"), root.path().join("real/file")).expect("symlink");
        let r = LocalRoot::open(root.path()).expect("open");

        let e = r.dir(&rel("link")).expect_err("a link is not a directory");
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert!(is_refused(&e));
        let e = r.parent(&rel("link/x")).expect_err("refused");
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        let file = rel("real/file");
        let (dir, name) = r.parent(&file).expect("parent");
        let e = dir.open_read(name).expect_err("a link is not opened");
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        let e = r.make_dirs(&rel("link/new")).expect_err("refused");
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert!(!outside.path().join("new").exists());
        let link = rel("link");
        let (dir, _) = r.parent(&link).expect("root");
        assert!(dir.remove_dir("link").is_err(), "rmdir of a link must fail");
        assert!(outside.path().join("secret").exists());
    }

    #[test]
    fn create_write_rename_and_modes() {
        let root = tempfile::tempdir().expect("tmp");
        let r = LocalRoot::open(root.path()).expect("open");
        let dir = r.make_dirs(&rel("a/b")).expect("mkdirs");
        let mut f = dir.create_new(".x.tmp", TEMP_MODE).expect("create");
        f.write_all(b"data").expect("write");
        let mode = fstat(&f).expect("fstat").mode;
        assert_eq!(mode & 0o077, 0, "temporary file is owner-only: {mode:o}");
        assert!(dir.create_new(".x.tmp", TEMP_MODE).is_err(), "exclusive");
        assert_eq!(
            dir.final_mode("x").expect("mode"),
            new_file_mode(),
            "a new file"
        );
        dir.rename(".x.tmp", &dir, "x").expect("rename");
        let mut s = String::new();
        dir.open_read("x")
            .expect("open")
            .0
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "data");

        // An updated 0600 file keeps 0600.
        std::fs::set_permissions(
            root.path().join("a/b/x"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        let _f = dir.create_new(".x.tmp", TEMP_MODE).expect("create");
        assert_eq!(dir.final_mode("x").expect("mode"), 0o600);

        // No-replace rename.
        let e = dir
            .rename_no_replace(".x.tmp", &dir, "x")
            .expect_err("exists");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let names: Vec<_> = dir
            .entries()
            .expect("entries")
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn umask_is_read_from_proc() {
        let m = umask();
        assert!(m <= 0o777);
        assert_eq!(new_file_mode() & m, 0);
    }
}
