//! The bench's data: trees of small files and one big file, made from a seed, and the checks a
//! result must pass before its time counts.
//!
//! Content is pseudo-random (xorshift64*, seeded per file), so no two files are alike and TLS
//! or a filesystem gains nothing from repetition. Every file's SHA-256 is kept in a [`Tree`];
//! [`verify`] reads a destination back, demands exactly that set of files (no missing, no extra,
//! no temporary file left behind) and every hash. [`snapshot`] takes each file's inode, size and
//! modification time, so a no-op run can be shown to have changed nothing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::{BenchResult, io};

/// Files (relative path -> SHA-256) of a tree the bench made.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub files: BTreeMap<String, [u8; 32]>,
    pub bytes: u64,
}

/// A fast, seeded generator of incompressible bytes.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // Never zero (a zero state stays zero).
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The relative path of file `i` of a tree of `dirs` directories.
pub fn file_path(i: usize, dirs: usize) -> String {
    format!("d{:04}/f{i:06}.dat", i % dirs)
}

/// Write `files` files of `size` bytes spread over `dirs` directories under `root`, every one
/// with modification time `mtime`. The same arguments always give the same tree.
pub fn make_tree(
    root: &Path,
    files: usize,
    dirs: usize,
    size: usize,
    seed: u64,
    mtime: SystemTime,
) -> BenchResult<Tree> {
    let mut tree = Tree::default();
    for d in 0..dirs.min(files.max(1)) {
        io(
            "make a directory",
            std::fs::create_dir_all(root.join(format!("d{d:04}"))),
        )?;
    }
    let stamp = filetime::FileTime::from_system_time(mtime);
    let mut body = vec![0u8; size];
    for i in 0..files {
        XorShift::new(seed ^ (i as u64).wrapping_mul(0x1000_0001)).fill(&mut body);
        let rel = file_path(i, dirs);
        let path = root.join(&rel);
        io(&rel, std::fs::write(&path, &body))?;
        io(&rel, filetime::set_file_mtime(&path, stamp))?;
        tree.files.insert(rel, Sha256::digest(&body).into());
        tree.bytes += size as u64;
    }
    Ok(tree)
}

/// Write one file of `mib` MiB at `path`; its SHA-256.
pub fn make_big(path: &Path, mib: u64, seed: u64) -> BenchResult<[u8; 32]> {
    let mut out =
        std::io::BufWriter::with_capacity(1 << 20, io("big file", std::fs::File::create(path))?);
    let mut rng = XorShift::new(seed);
    let mut block = vec![0u8; 1 << 20];
    let mut sha = Sha256::new();
    for _ in 0..mib {
        rng.fill(&mut block);
        sha.update(&block);
        io("big file", out.write_all(&block))?;
    }
    let file = io("big file", out.into_inner().map_err(|e| e.into_error()))?;
    io("big file", file.sync_all())?;
    Ok(sha.finalize().into())
}

/// SHA-256 of one file, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> BenchResult<[u8; 32]> {
    let mut f = io(&path.display().to_string(), std::fs::File::open(path))?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = io(&path.display().to_string(), f.read(&mut buf))?;
        if n == 0 {
            return Ok(sha.finalize().into());
        }
        sha.update(&buf[..n]);
    }
}

/// Every regular file under `root`, as relative paths with `/`; directories are walked, other
/// kinds are an error.
pub fn list_files(root: &Path) -> BenchResult<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut pending = vec![(String::new(), root.to_path_buf())];
    while let Some((rel, dir)) = pending.pop() {
        for entry in io(&dir.display().to_string(), std::fs::read_dir(&dir))? {
            let entry = io(&dir.display().to_string(), entry)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = io(&child_rel, entry.file_type())?;
            if kind.is_dir() {
                pending.push((child_rel, entry.path()));
            } else if kind.is_file() {
                out.push((child_rel, entry.path()));
            } else {
                return Err(format!("{child_rel}: neither a file nor a directory"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Check that `root` holds exactly the files of `tree`, each with its SHA-256.
pub fn verify(root: &Path, tree: &Tree) -> BenchResult<()> {
    let found = list_files(root)?;
    let mut missing: Vec<&String> = Vec::new();
    let mut seen = 0usize;
    for (rel, path) in &found {
        let Some(want) = tree.files.get(rel) else {
            return Err(format!(
                "{}: unexpected file {rel} on the destination",
                root.display()
            ));
        };
        seen += 1;
        if &sha256_file(path)? != want {
            return Err(format!(
                "{}: {rel} has the wrong content (SHA-256)",
                root.display()
            ));
        }
    }
    if seen != tree.files.len() {
        let found: std::collections::BTreeSet<&String> = found.iter().map(|(r, _)| r).collect();
        missing.extend(tree.files.keys().filter(|k| !found.contains(k)).take(3));
        return Err(format!(
            "{}: {} of {} files missing, e.g. {missing:?}",
            root.display(),
            tree.files.len() - seen,
            tree.files.len()
        ));
    }
    Ok(())
}

/// Each file's (inode, size, mtime in ns): equal snapshots mean nothing was rewritten, replaced
/// or touched.
pub type Snapshot = BTreeMap<String, (u64, u64, i128)>;

pub fn snapshot(root: &Path) -> BenchResult<Snapshot> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Snapshot::new();
    for (rel, path) in list_files(root)? {
        let m = io(&rel, std::fs::symlink_metadata(&path))?;
        let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
        out.insert(rel, (m.ino(), m.size(), mtime));
    }
    Ok(out)
}

/// The first difference between two snapshots, if any.
pub fn first_change(before: &Snapshot, after: &Snapshot) -> Option<String> {
    for (rel, b) in before {
        match after.get(rel) {
            None => return Some(format!("{rel} disappeared")),
            Some(a) if a.0 != b.0 => return Some(format!("{rel} was replaced (new inode)")),
            Some(a) if a != b => return Some(format!("{rel} was rewritten or touched")),
            _ => {}
        }
    }
    after
        .keys()
        .find(|k| !before.contains_key(*k))
        .map(|k| format!("{k} appeared"))
}

/// Bytes free for an unprivileged writer on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> BenchResult<u64> {
    let s = rustix::fs::statvfs(path).map_err(|e| format!("statvfs {}: {e}", path.display()))?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_are_reproducible_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let a = make_tree(&dir.path().join("a"), 30, 4, 100, 7, now).unwrap();
        let b = make_tree(&dir.path().join("b"), 30, 4, 100, 7, now).unwrap();
        assert_eq!(a.files, b.files);
        verify(&dir.path().join("b"), &a).unwrap();
        let before = snapshot(&dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b").join(file_path(3, 4)), b"x").unwrap();
        assert!(verify(&dir.path().join("b"), &a).is_err());
        let after = snapshot(&dir.path().join("b")).unwrap();
        assert!(first_change(&before, &after).is_some());
    }
}
