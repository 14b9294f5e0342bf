//! Why the planner decided what it did, as data that prints as a short human phrase.
//!
//! Every [`Action`](super::Action) and [`Skip`](super::Skip) carries a [`Reason`]. `ferry plan`
//! prints its `Display` form, and JSON output serializes it as that same string, so scripts and
//! people read one wording. Nothing here decides anything: the planner builds these values.

use std::fmt;

use chrono::DateTime;

use crate::listing::{Mtime, Precision};

/// One side of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Local,
    Remote,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Local => "local",
            Side::Remote => "remote",
        })
    }
}

/// How one side's file differs from what was recorded at the last sync. Size is checked first,
/// so a file whose size and time both changed is described by its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Size { from: u64, to: u64 },
    Modified { from: Mtime, to: Mtime },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Size { from, to } => write!(f, "size {from} -> {to}"),
            Change::Modified { from, to } => {
                write!(f, "modified {} -> {}", format_mtime(from), format_mtime(to))
            }
        }
    }
}

/// Why an action is taken or a file is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The source has it, the destination (named here) does not.
    MissingOn(Side),
    /// Both sides still match the record of the last sync.
    Unchanged,
    /// Never recorded, but a pull finds both sides already equal (size and time).
    SameSizeAndTime,
    /// One side (named here) no longer matches the record; the other still does.
    Changed { side: Side, change: Change },
    /// Neither side matches the record; the source (`winner`) overwrites the destination.
    BothChanged {
        local: Change,
        remote: Change,
        winner: Side,
    },
    /// Present on both sides with no record of a sync, so equality cannot be trusted.
    /// `sizes` holds (local, remote) when they differ.
    NotRecorded { sizes: Option<(u64, u64)> },
    /// Only the destination has it and the job mirrors deletions; names the source side.
    AbsentOn(Side),
    /// A symbolic link, on either side: ferry neither follows nor replaces it.
    SymlinkNotFollowed,
    /// Unchanged, but the checksum file ferry writes beside it (`checksum_sidecar`) is missing
    /// on the server: sent again, with its checksum file.
    ChecksumFileMissing,
    /// Two-way: synced before, deleted on the side named here since; the delete is propagated.
    DeletedOn(Side),
    /// Two-way with `delete: false`: deleted on the side named here; copied back there.
    Restored(Side),
    /// Two-way: changed on one side, deleted on the other since the last sync; the change wins.
    ChangedButDeleted { changed: Side, change: Change },
    /// Two-way: changed on both sides since the last sync (`recorded`), or on both sides and
    /// different with no record; `winner` keeps the name.
    Conflict {
        local: Option<Change>,
        remote: Option<Change>,
        recorded: bool,
        winner: Side,
    },
    /// Two-way, `keep_both`: the losing version (from the side named here), kept under a
    /// conflict name.
    ConflictCopy(Side),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::MissingOn(side) => write!(f, "missing on {side}"),
            Reason::Unchanged => f.write_str("unchanged since last sync"),
            Reason::SameSizeAndTime => f.write_str("same size and modification time"),
            Reason::Changed { side, change } => {
                write!(f, "{side} changed since last sync ({change})")
            }
            Reason::BothChanged {
                local,
                remote,
                winner,
            } => write!(
                f,
                "both changed since last sync (local {local}, remote {remote}); {winner} wins"
            ),
            Reason::NotRecorded { sizes: None } => f.write_str("not recorded as synced"),
            Reason::NotRecorded {
                sizes: Some((local, remote)),
            } => write!(
                f,
                "not recorded as synced; sizes differ (local {local}, remote {remote})"
            ),
            Reason::AbsentOn(side) => write!(f, "absent on {side} and delete is on"),
            Reason::SymlinkNotFollowed => f.write_str("symlink not followed"),
            Reason::ChecksumFileMissing => f.write_str("its checksum file is missing on remote"),
            Reason::DeletedOn(side) => write!(f, "deleted on {side} since last sync"),
            Reason::Restored(side) => write!(
                f,
                "deleted on {side} since last sync; copied back (delete is off)"
            ),
            Reason::ChangedButDeleted { changed, change } => {
                let gone = match changed {
                    Side::Local => Side::Remote,
                    Side::Remote => Side::Local,
                };
                write!(
                    f,
                    "{changed} changed since last sync ({change}) and deleted on {gone}; the change wins"
                )
            }
            Reason::Conflict {
                local,
                remote,
                recorded: true,
                winner,
            } => {
                let show = |c: &Option<Change>| c.map(|c| c.to_string()).unwrap_or_default();
                write!(
                    f,
                    "conflict: both changed since last sync (local {}, remote {}); {winner} wins",
                    show(local),
                    show(remote)
                )
            }
            Reason::Conflict { winner, .. } => write!(
                f,
                "conflict: on both sides and different, never synced; {winner} wins"
            ),
            Reason::ConflictCopy(side) => write!(f, "conflict copy of the {side} version"),
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A time as precise as its side reported it. No zone suffix: a LIST time is the server's wall
/// clock, so claiming UTC would be a lie.
fn format_mtime(mtime: &Mtime) -> String {
    let pattern = match mtime.precision {
        Precision::Day => "%Y-%m-%d",
        Precision::Minute => "%Y-%m-%d %H:%M",
        Precision::Second => "%Y-%m-%d %H:%M:%S",
        Precision::Nanosecond => "%Y-%m-%d %H:%M:%S%.9f",
    };
    DateTime::from_timestamp_nanos(mtime.nanos)
        .format(pattern)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_display_as_short_phrases() {
        let t0 = Mtime::from_secs(1_700_000_000, Precision::Minute);
        let t1 = Mtime::from_secs(1_700_000_300, Precision::Minute);
        let cases = [
            (Reason::MissingOn(Side::Remote), "missing on remote"),
            (Reason::MissingOn(Side::Local), "missing on local"),
            (Reason::Unchanged, "unchanged since last sync"),
            (Reason::SameSizeAndTime, "same size and modification time"),
            (
                Reason::Changed {
                    side: Side::Local,
                    change: Change::Size { from: 10, to: 12 },
                },
                "local changed since last sync (size 10 -> 12)",
            ),
            (
                Reason::Changed {
                    side: Side::Remote,
                    change: Change::Modified { from: t0, to: t1 },
                },
                "remote changed since last sync (modified 2023-11-14 22:13 -> 2023-11-14 22:18)",
            ),
            (
                Reason::BothChanged {
                    local: Change::Size { from: 1, to: 2 },
                    remote: Change::Size { from: 1, to: 3 },
                    winner: Side::Local,
                },
                "both changed since last sync (local size 1 -> 2, remote size 1 -> 3); local wins",
            ),
            (
                Reason::NotRecorded { sizes: None },
                "not recorded as synced",
            ),
            (
                Reason::NotRecorded {
                    sizes: Some((10, 12)),
                },
                "not recorded as synced; sizes differ (local 10, remote 12)",
            ),
            (
                Reason::AbsentOn(Side::Local),
                "absent on local and delete is on",
            ),
            (Reason::SymlinkNotFollowed, "symlink not followed"),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }

    #[test]
    fn mtimes_print_at_their_precision() {
        let secs = 1_700_000_007;
        let cases = [
            (Precision::Day, "2023-11-14"),
            (Precision::Minute, "2023-11-14 22:13"),
            (Precision::Second, "2023-11-14 22:13:27"),
            (Precision::Nanosecond, "2023-11-14 22:13:27.000000005"),
        ];
        for (precision, text) in cases {
            let mtime = Mtime::new(secs * 1_000_000_000 + 5, precision);
            assert_eq!(format_mtime(&mtime), text, "{precision:?}");
        }
    }

    #[test]
    fn reason_serializes_as_its_phrase() {
        let json = serde_json::to_string(&Reason::MissingOn(Side::Remote)).expect("serializes");
        assert_eq!(json, "\"missing on remote\"");
    }
}
