//! The listing type shared by the local scan and the remote listing.
//!
//! Both sides of a job end up as a [`Listing`]: a sorted map from [`RelPath`] to [`Entry`],
//! plus a flag saying whether the walk completed. The planner only ever sees listings.
//! Modification times carry their precision, because LIST gives minutes (or only days for
//! older files) in the server's local time, while a local file has nanoseconds.

use std::collections::{BTreeMap, BTreeSet};

use crate::path::RelPath;

/// What kind of thing a listing entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    /// A symbolic link that was not followed (a remote link, or a local one leaving the root).
    Symlink,
}

/// How precise a modification time is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Nanosecond,
    Second,
    Minute,
    Day,
}

impl Precision {
    /// Length of one unit in seconds (nanoseconds round down to 0 and compare exactly).
    pub fn seconds(self) -> i64 {
        match self {
            Precision::Nanosecond => 0,
            Precision::Second => 1,
            Precision::Minute => 60,
            Precision::Day => 86_400,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Nanosecond => "ns",
            Precision::Second => "s",
            Precision::Minute => "min",
            Precision::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ns" => Precision::Nanosecond,
            "s" => Precision::Second,
            "min" => Precision::Minute,
            "day" => Precision::Day,
            _ => return None,
        })
    }
}

/// A modification time as one side reports it.
///
/// `nanos` counts nanoseconds since the Unix epoch. For a LIST entry the time is the server's
/// wall clock read as if it were UTC: it is only ever compared with what the same server listed
/// before, never with a local clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Mtime {
    pub nanos: i64,
    pub precision: Precision,
}

impl Mtime {
    pub fn new(nanos: i64, precision: Precision) -> Self {
        Mtime { nanos, precision }
    }

    pub fn from_secs(secs: i64, precision: Precision) -> Self {
        Mtime {
            nanos: secs.saturating_mul(1_000_000_000),
            precision,
        }
    }

    pub fn secs(&self) -> i64 {
        self.nanos.div_euclid(1_000_000_000)
    }

    /// Whether two times name the same instant at the coarser of the two precisions.
    pub fn matches(&self, other: &Mtime) -> bool {
        let coarse = self.precision.max(other.precision);
        let unit = coarse.seconds();
        if unit == 0 {
            return self.nanos == other.nanos;
        }
        self.secs().div_euclid(unit) == other.secs().div_euclid(unit)
    }
}

/// Which local file an entry is, and in which state: device and inode, and the inode's change
/// time. An upload compares the file it opened with the scan's; the change time catches what
/// device and inode alone cannot: a file deleted and replaced by another that reuses the freed
/// inode number (common on ext4 and tmpfs), with its size and mtime copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    /// `st_ctime` in nanoseconds; no user can set it.
    pub changed_ns: i64,
}

/// One file, directory or link in a listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub kind: EntryKind,
    /// Size in bytes; 0 for directories.
    pub size: u64,
    pub mtime: Option<Mtime>,
    /// For a local entry, which file it is; `None` for a remote one.
    #[serde(skip)]
    pub id: Option<FileId>,
}

impl Entry {
    pub fn file(size: u64, mtime: Option<Mtime>) -> Self {
        Entry {
            kind: EntryKind::File,
            size,
            mtime,
            id: None,
        }
    }

    pub fn dir() -> Self {
        Entry {
            kind: EntryKind::Dir,
            size: 0,
            mtime: None,
            id: None,
        }
    }

    /// A symbolic link, or anything else that is neither a file nor a directory: never followed,
    /// never transferred.
    pub fn link() -> Self {
        Entry {
            kind: EntryKind::Symlink,
            size: 0,
            mtime: None,
            id: None,
        }
    }
}

/// One entry of a single directory as a server or a directory read reports it, before its name
/// has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub name: String,
    pub entry: Entry,
}

/// A problem met while walking one side: the walk went on, but the listing is incomplete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListingProblem {
    /// The directory or entry concerned (as the server or filesystem named it, escaped).
    pub path: String,
    pub message: String,
}

impl ListingProblem {
    /// A problem as it is shown and stored: escaped, redacted, and cut short.
    pub fn new(path: impl AsRef<str>, message: impl AsRef<str>) -> Self {
        ListingProblem {
            path: crate::text::clean(path.as_ref(), 300),
            message: crate::text::clean(message.as_ref(), 1000),
        }
    }
}

/// A whole side of a job: every entry under the root, sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub entries: BTreeMap<RelPath, Entry>,
    /// Problems met while walking (an unreadable directory, a hostile name). Any problem makes
    /// the listing incomplete, which blocks every delete.
    pub problems: Vec<ListingProblem>,
    /// Directories (the root included) that hold entries the job's filter leaves out: they are
    /// not empty, whatever the listing shows, so they are never planned for removal.
    pub holds_excluded: BTreeSet<RelPath>,
    /// ferry's own temporary files found on this side (`.NAME.ferry-tmp`), never synced: a
    /// resumable one is kept, a stale one is removed after the run's transfers.
    pub temp_files: Vec<RelPath>,
}

impl Listing {
    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn insert(&mut self, path: RelPath, entry: Entry) {
        self.entries.insert(path, entry);
    }

    pub fn get(&self, path: &RelPath) -> Option<&Entry> {
        self.entries.get(path)
    }

    pub fn files(&self) -> impl Iterator<Item = (&RelPath, &Entry)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.kind == EntryKind::File)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtime_matches_at_coarser_precision() {
        let a = Mtime::from_secs(1_700_000_030, Precision::Second);
        let b = Mtime::from_secs(1_700_000_000 - 1_700_000_000 % 60, Precision::Minute);
        assert!(a.matches(&b) == (a.secs() / 60 == b.secs() / 60));
        let c = Mtime::new(5, Precision::Nanosecond);
        assert!(c.matches(&Mtime::new(5, Precision::Nanosecond)));
        assert!(!c.matches(&Mtime::new(6, Precision::Nanosecond)));
        let day = Mtime::from_secs(86_400 * 3, Precision::Day);
        assert!(day.matches(&Mtime::from_secs(86_400 * 3 + 3_600, Precision::Minute)));
        assert!(!day.matches(&Mtime::from_secs(86_400 * 4, Precision::Minute)));
    }
}
