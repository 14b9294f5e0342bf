//! The pure planner: two listings and the recorded state in, a [`Plan`] of actions with reasons out.
//!
//! [`plan`] compares the local listing, the remote listing and what the state database recorded
//! at the last successful sync of each file, and decides, path by path, what a sync in the job's
//! direction must do. It does no I/O, has no clock and is not async: the same inputs always give
//! the same plan, which is what lets `ferry plan` show exactly what `ferry sync` would do and lets
//! property tests pin its invariants.
//!
//! What it does not do: it never touches a transport, never reads files or hashes, and never
//! writes state. The executor runs the actions in the order given; the state module stores a
//! [`SyncRecord`] for each verified transfer and drops the paths listed in [`Plan::forget`].
//! Guards that need a number from the job (such as a cap on deletes) belong to later stages.
//!
//! Equality is decided against the record, not against clocks: a remote time from LIST is the
//! server's wall clock at minute precision, and an upload's remote time is the upload time, so
//! comparing it with a local time would say "changed" forever. See [`reason`] for the phrases.

pub mod guard;
pub mod ready;
pub mod reason;
pub mod two_way;

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::config::{ConflictPolicy, Direction, Job, MaxDelete};
use crate::listing::{Entry, EntryKind, Listing, Mtime};
use crate::path::RelPath;

pub use reason::{Change, Reason, Side};

/// What was true of one file when ferry last synced it (stored in SQLite by the state module).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncRecord {
    pub local_size: u64,
    pub local_mtime: Option<Mtime>,
    /// Hex SHA-256 of the content; kept for verification, not used for decisions here.
    pub sha256: Option<String>,
    pub remote_size: u64,
    /// As the server LISTED it after the sync; `None` if unknown.
    pub remote_mtime: Option<Mtime>,
}

/// The last sync's record of every file of one job.
pub type Records = BTreeMap<RelPath, SyncRecord>;

/// The part of a job that decides what the planner may do.
#[derive(Debug, Clone)]
pub struct Policy {
    pub direction: Direction,
    /// Mirror deletions: remove what the destination has and the source does not.
    pub delete: bool,
    /// The most files one run may delete (guard.rs).
    pub max_delete: MaxDelete,
    /// Push: ferry writes `x.sha256` beside each `x`; those are ferry's, not files to mirror.
    pub checksum_sidecar: bool,
    /// Push with `publish: batch`: the marker (or manifest) ferry writes in the remote root,
    /// neither mirrored nor deleted.
    pub publish_marker: Option<String>,
    /// Two-way: how a file changed on both sides is settled.
    pub conflict: ConflictPolicy,
    /// Two-way: the time in conflict copies' names (`NAME.conflict-<stamp>.EXT`), given by the
    /// caller so that the planner has no clock.
    pub conflict_stamp: String,
}

impl Policy {
    pub fn from_job(job: &Job) -> Self {
        Policy {
            direction: job.direction,
            delete: job.delete,
            max_delete: job.max_delete,
            checksum_sidecar: job.checksum_sidecar && job.direction == Direction::Push,
            publish_marker: job
                .publish
                .as_ref()
                .filter(|_| job.direction == Direction::Push)
                .map(|p| p.marker.clone()),
            conflict: job.conflict,
            conflict_stamp: chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string(),
        }
    }
}

/// What one action does, on which side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    MakeRemoteDir,
    MakeLocalDir,
    Upload,
    Download,
    DeleteRemoteFile,
    DeleteLocalFile,
    RemoveRemoteDir,
    RemoveLocalDir,
    /// Two-way, `conflict: keep_both`: the losing copy is renamed (to [`Action::to`]).
    RenameLocalFile,
    RenameRemoteFile,
}

impl ActionKind {
    /// The same name JSON output uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::MakeRemoteDir => "make_remote_dir",
            ActionKind::MakeLocalDir => "make_local_dir",
            ActionKind::Upload => "upload",
            ActionKind::Download => "download",
            ActionKind::DeleteRemoteFile => "delete_remote_file",
            ActionKind::DeleteLocalFile => "delete_local_file",
            ActionKind::RemoveRemoteDir => "remove_remote_dir",
            ActionKind::RemoveLocalDir => "remove_local_dir",
            ActionKind::RenameLocalFile => "rename_local_file",
            ActionKind::RenameRemoteFile => "rename_remote_file",
        }
    }

    /// Whether the action moves file content (and so counts towards transferred bytes).
    pub fn is_transfer(self) -> bool {
        matches!(self, ActionKind::Upload | ActionKind::Download)
    }

    /// Whether the action renames a file (a two-way conflict copy).
    pub fn is_rename(self) -> bool {
        matches!(
            self,
            ActionKind::RenameLocalFile | ActionKind::RenameRemoteFile
        )
    }

    /// Whether the action removes something (the actions an incomplete listing blocks).
    pub fn is_delete(self) -> bool {
        matches!(
            self,
            ActionKind::DeleteRemoteFile
                | ActionKind::DeleteLocalFile
                | ActionKind::RemoveRemoteDir
                | ActionKind::RemoveLocalDir
        )
    }
}

/// One thing the executor must do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Action {
    pub kind: ActionKind,
    #[serde(serialize_with = "serialize_path")]
    pub path: RelPath,
    /// Bytes to transfer for a transfer; the size of the file being deleted for a delete; 0 for
    /// directories.
    pub size: u64,
    pub reason: Reason,
    /// A rename's new path.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_path"
    )]
    pub to: Option<RelPath>,
}

/// A two-way conflict (changed on both sides) and how it was settled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resolved {
    #[serde(serialize_with = "serialize_path")]
    pub path: RelPath,
    /// The side whose version keeps the name on both sides.
    pub winner: Side,
    pub policy: ConflictPolicy,
    /// `keep_both`: where the other version is kept, on both sides.
    #[serde(serialize_with = "serialize_opt_path")]
    pub copy: Option<RelPath>,
}

/// A path left as it is, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skip {
    #[serde(serialize_with = "serialize_path")]
    pub path: RelPath,
    pub reason: Reason,
}

/// A path the planner refuses to touch because the two sides disagree on what it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Conflict {
    #[serde(serialize_with = "serialize_path")]
    pub path: RelPath,
    pub message: String,
}

/// Everything a sync would do, in the order it must be done, and what it would leave alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    /// Make-dirs top-down (parents first), then transfers by path, then file deletes by path,
    /// then directory removals bottom-up (children first).
    pub actions: Vec<Action>,
    /// Files in sync and symlinks, with the reason they are left alone.
    pub skipped: Vec<Skip>,
    /// A file on one side where the other has a directory; never acted on, nor anything below.
    pub conflicts: Vec<Conflict>,
    /// Why the deletes the policy asked for were not planned (an incomplete listing, an empty
    /// source root). A run whose deletes were blocked does not end "ok".
    pub deletes_blocked: Option<String>,
    /// The deletes that `deletes_blocked` withheld, so that they can be listed.
    pub withheld: Vec<Action>,
    /// Recorded paths that are now a file on neither side: the state module drops them.
    #[serde(serialize_with = "serialize_paths")]
    pub forget: Vec<RelPath>,
    /// Pull downloads held back because the file may still be written (`ready: stable`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<ready::Waiting>,
    /// Two-way: files changed on both sides, and how each was settled (warnings of the run).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resolved: Vec<Resolved>,
}

impl Plan {
    /// No actions (skips, conflicts and forgotten records do not count).
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Bytes the uploads and downloads will move.
    pub fn transfer_bytes(&self) -> u64 {
        self.actions
            .iter()
            .filter(|a| a.kind.is_transfer())
            .map(|a| a.size)
            .sum()
    }

    pub fn count(&self, kind: ActionKind) -> usize {
        self.actions.iter().filter(|a| a.kind == kind).count()
    }
}

impl Plan {
    /// This plan narrowed to the transfers of `only` (a watch job's outbox) and the directories
    /// they need; no deletes. What else the plan found is left for a full run.
    pub fn restricted_to(&self, only: &BTreeSet<RelPath>) -> Plan {
        let needed: BTreeSet<RelPath> = only.iter().flat_map(|p| p.ancestors()).collect();
        let actions = self
            .actions
            .iter()
            .filter(|a| {
                (a.kind.is_transfer() && only.contains(&a.path))
                    || (matches!(a.kind, ActionKind::MakeRemoteDir | ActionKind::MakeLocalDir)
                        && needed.contains(&a.path))
            })
            .cloned()
            .collect();
        Plan {
            actions,
            skipped: self.skipped.clone(),
            conflicts: Vec::new(),
            deletes_blocked: None,
            withheld: Vec::new(),
            forget: Vec::new(),
            waiting: self.waiting.clone(),
            resolved: Vec::new(),
        }
    }
}

/// Compare both sides with the records and decide what a sync under `policy` must do.
pub fn plan(local: &Listing, remote: &Listing, records: &Records, policy: &Policy) -> Plan {
    let route = match policy.direction {
        Direction::Both => return two_way::plan(local, remote, records, policy),
        one_way => Route::of(one_way),
    };
    let local_tree = close_tree(local);
    let remote_tree = close_tree(remote);

    let mut draft = Draft::default();
    // Both trees in path order at once (a merge, not a set of every path: at 200,000 files
    // the planner's memory is the listings' own, not a third copy of them). The records are
    // walked in the same order beside them, not looked up path by path.
    let mut on_l = local_tree.iter().peekable();
    let mut on_r = remote_tree.iter().peekable();
    let mut on_records = RecordCursor::new(records);
    loop {
        let order = match (on_l.peek(), on_r.peek()) {
            (None, None) => break,
            (Some((l, _)), Some((r, _))) => l.cmp(r),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
        };
        let (path, on_local, on_remote): (&RelPath, _, _) = match order {
            Ordering::Less => match on_l.next() {
                Some((p, e)) => (p, Some(*e), None),
                None => break,
            },
            Ordering::Greater => match on_r.next() {
                Some((p, e)) => (p, None, Some(*e)),
                None => break,
            },
            Ordering::Equal => match (on_l.next(), on_r.next()) {
                (Some((p, l)), Some((_, r))) => (p, Some(*l), Some(*r)),
                _ => break,
            },
        };
        let record = on_records.at(path, on_local, on_remote);
        if draft.is_shielded(path) {
            continue;
        }
        if policy
            .publish_marker
            .as_deref()
            .is_some_and(|m| path.as_str() == m)
        {
            // The batch marker is ferry's, in the remote root.
            continue;
        }
        if policy.checksum_sidecar && sidecar_of_a_local_file(path, &local_tree) {
            // Written by ferry with its file: neither mirrored, nor deleted, nor compared.
            continue;
        }
        let (source, dest) = match route.source {
            Side::Local => (on_local, on_remote),
            Side::Remote => (on_remote, on_local),
        };
        let pair = Pair {
            path,
            local: on_local,
            remote: on_remote,
            source,
            dest,
        };
        let checksum_missing = policy.checksum_sidecar
            && on_local.is_some_and(|e| e.kind == EntryKind::File)
            && !sidecar_path(path).is_some_and(|p| remote_tree.contains_key(&p));
        draft.visit(&route, &pair, record, checksum_missing);
    }
    let forget = on_records.finish();

    let (source_listing, dest_listing) = match route.source {
        Side::Local => (local, remote),
        Side::Remote => (remote, local),
    };
    draft.pin_dirs_holding_excluded(dest_listing);
    let deletes_blocked = blocked_deletes_reason(
        local,
        remote,
        source_listing,
        route.source,
        policy,
        draft.delete_count(),
    )
    .or_else(|| {
        policy.delete.then(|| {
            guard::over_max_delete(
                draft.delete_files.len(),
                records.len(),
                dest_listing.files().count(),
                policy.max_delete,
            )
        })?
    });
    draft.into_plan(
        policy.delete && deletes_blocked.is_none(),
        deletes_blocked,
        forget,
    )
}

/// The action kinds and side names of one direction.
struct Route {
    source: Side,
    dest: Side,
    make_dir: ActionKind,
    transfer: ActionKind,
    delete_file: ActionKind,
    remove_dir: ActionKind,
}

impl Route {
    /// The route of a one-way job (a two-way job has its own planner).
    fn of(direction: Direction) -> Self {
        match direction {
            Direction::Push | Direction::Both => Route {
                source: Side::Local,
                dest: Side::Remote,
                make_dir: ActionKind::MakeRemoteDir,
                transfer: ActionKind::Upload,
                delete_file: ActionKind::DeleteRemoteFile,
                remove_dir: ActionKind::RemoveRemoteDir,
            },
            Direction::Pull => Route {
                source: Side::Remote,
                dest: Side::Local,
                make_dir: ActionKind::MakeLocalDir,
                transfer: ActionKind::Download,
                delete_file: ActionKind::DeleteLocalFile,
                remove_dir: ActionKind::RemoveLocalDir,
            },
        }
    }
}

/// One path as both sides list it, also seen as source and destination.
struct Pair<'a> {
    path: &'a RelPath,
    local: Option<&'a Entry>,
    remote: Option<&'a Entry>,
    source: Option<&'a Entry>,
    dest: Option<&'a Entry>,
}

/// Stands in for a directory a listing implies (it lists something below it) but does not name.
const IMPLIED_DIR: Entry = Entry {
    kind: EntryKind::Dir,
    size: 0,
    mtime: None,
    id: None,
};

/// The listing's entries plus every ancestor directory it implies, so that a file whose parent
/// the walker did not report still gets its parent made, and a conflict on that parent is seen.
/// The listing's own paths are borrowed; only implied ancestors (rare) are made.
fn close_tree(listing: &Listing) -> Tree<'_> {
    // Collected from the sorted listing in one go: full nodes (see `scan::Walk`).
    let mut tree: Tree<'_> = listing
        .entries
        .iter()
        .filter(|(path, _)| !path.is_root())
        .map(|(path, entry)| (Cow::Borrowed(path), entry))
        .collect();
    // Siblings come together in path order: their ancestors are looked for once, not once
    // per file (at 50,000 files that was most of the planner's time).
    let mut last_parent: Option<&str> = None;
    for path in listing.entries.keys() {
        let Some((parent, _)) = path.as_str().rsplit_once('/') else {
            continue;
        };
        if last_parent == Some(parent) {
            continue;
        }
        last_parent = Some(parent);
        for ancestor in path.ancestors() {
            if !tree.contains_key(&ancestor) {
                tree.insert(Cow::Owned(ancestor), &IMPLIED_DIR);
            }
        }
    }
    tree
}

/// One side's entries by path, ancestors included (see [`close_tree`]).
type Tree<'a> = BTreeMap<Cow<'a, RelPath>, &'a Entry>;

/// The plan being built, in separate lists so each can be ordered on its own.
#[derive(Default)]
struct Draft {
    make_dirs: Vec<Action>,
    transfers: Vec<Action>,
    delete_files: Vec<Action>,
    remove_dirs: Vec<Action>,
    skipped: Vec<Skip>,
    conflicts: Vec<Conflict>,
    /// Paths whose subtree is left alone (a conflict or a symlink).
    shields: BTreeSet<RelPath>,
    /// Destination directories that keep something the plan does not delete, so cannot go.
    pinned: BTreeSet<RelPath>,
}

impl Draft {
    /// Whether an ancestor was a conflict or a symlink. Paths are visited in sorted order and an
    /// ancestor sorts before its descendants, so its shield is already in place.
    fn is_shielded(&self, path: &RelPath) -> bool {
        !self.shields.is_empty() && path.ancestors().iter().any(|a| self.shields.contains(a))
    }

    fn visit(
        &mut self,
        route: &Route,
        pair: &Pair<'_>,
        record: Option<&SyncRecord>,
        checksum_missing: bool,
    ) {
        let kind = |e: Option<&Entry>| e.map(|e| e.kind);
        if kind(pair.local) == Some(EntryKind::Symlink)
            || kind(pair.remote) == Some(EntryKind::Symlink)
        {
            self.skip_symlink(pair);
            return;
        }
        match (pair.source, pair.dest) {
            (Some(source), Some(dest)) if source.kind != dest.kind => self.add_conflict(pair),
            (Some(source), None) if source.kind == EntryKind::Dir => {
                self.make_dirs.push(action(
                    route.make_dir,
                    pair.path,
                    0,
                    Reason::MissingOn(route.dest),
                ));
            }
            (Some(source), None) => self.transfers.push(action(
                route.transfer,
                pair.path,
                source.size,
                Reason::MissingOn(route.dest),
            )),
            (Some(source), Some(_)) if source.kind == EntryKind::File => {
                self.compare_files(route, pair, record, checksum_missing);
            }
            (None, Some(dest)) => self.add_delete(route, pair.path, dest),
            // Directories on both sides, or nothing on either: nothing to do here.
            _ => {}
        }
    }

    fn skip_symlink(&mut self, pair: &Pair<'_>) {
        self.skipped.push(Skip {
            path: pair.path.clone(),
            reason: Reason::SymlinkNotFollowed,
        });
        self.shields.insert(pair.path.clone());
        // A directory removal would fail on (or take with it) the link it still holds.
        if pair.dest.is_some() {
            self.pinned.extend(pair.path.ancestors());
        }
    }

    fn add_conflict(&mut self, pair: &Pair<'_>) {
        let describe = |e: Option<&Entry>| match e.map(|e| e.kind) {
            Some(EntryKind::Dir) => "a directory",
            _ => "a file",
        };
        self.conflicts.push(Conflict {
            path: pair.path.clone(),
            message: format!(
                "local is {}, remote is {}; left alone",
                describe(pair.local),
                describe(pair.remote)
            ),
        });
        self.shields.insert(pair.path.clone());
    }

    fn compare_files(
        &mut self,
        route: &Route,
        pair: &Pair<'_>,
        record: Option<&SyncRecord>,
        checksum_missing: bool,
    ) {
        let (Some(local), Some(remote), Some(source)) = (pair.local, pair.remote, pair.source)
        else {
            return;
        };
        let decision = match decide_file(local, remote, record, route.source) {
            Decision::Skip(_) if checksum_missing => {
                Decision::Transfer(Reason::ChecksumFileMissing)
            }
            other => other,
        };
        match decision {
            Decision::Skip(reason) => self.skipped.push(Skip {
                path: pair.path.clone(),
                reason,
            }),
            Decision::Transfer(reason) => {
                self.transfers
                    .push(action(route.transfer, pair.path, source.size, reason));
            }
        }
    }

    fn add_delete(&mut self, route: &Route, path: &RelPath, dest: &Entry) {
        let reason = Reason::AbsentOn(route.source);
        if dest.kind == EntryKind::Dir {
            self.remove_dirs
                .push(action(route.remove_dir, path, 0, reason));
        } else {
            self.delete_files
                .push(action(route.delete_file, path, dest.size, reason));
        }
    }

    /// A destination directory that holds entries the filter leaves out is not empty: never
    /// plan its removal (it would fail on every run), nor its ancestors'.
    fn pin_dirs_holding_excluded(&mut self, dest: &Listing) {
        for dir in &dest.holds_excluded {
            self.pinned.insert(dir.clone());
            self.pinned.extend(dir.ancestors());
        }
    }

    /// How many deletes the policy would ask for (pinned directories excluded).
    fn delete_count(&self) -> usize {
        self.delete_files.len()
            + self
                .remove_dirs
                .iter()
                .filter(|a| !self.pinned.contains(&a.path))
                .count()
    }

    fn into_plan(
        self,
        with_deletes: bool,
        deletes_blocked: Option<String>,
        forget: Vec<RelPath>,
    ) -> Plan {
        // Paths were visited in sorted order, so make-dirs are parents first, transfers and file
        // deletes are by path; reversing sorted order puts every child before its parent.
        let mut actions = self.make_dirs;
        actions.extend(self.transfers);
        let pinned = self.pinned;
        let mut deletes = self.delete_files;
        deletes.extend(
            self.remove_dirs
                .into_iter()
                .rev()
                .filter(|a| !pinned.contains(&a.path)),
        );
        let withheld = if with_deletes {
            actions.extend(deletes);
            Vec::new()
        } else if deletes_blocked.is_some() {
            deletes
        } else {
            Vec::new()
        };
        Plan {
            actions,
            // Most of a no-op's memory after the listings: no room left unused.
            skipped: {
                let mut skipped = self.skipped;
                skipped.shrink_to_fit();
                skipped
            },
            conflicts: self.conflicts,
            deletes_blocked,
            withheld,
            forget,
            waiting: Vec::new(),
            resolved: Vec::new(),
        }
    }
}

fn action(kind: ActionKind, path: &RelPath, size: u64, reason: Reason) -> Action {
    Action {
        kind,
        path: path.clone(),
        size,
        reason,
        to: None,
    }
}

/// Where ferry writes the checksum file of `path` (`x` -> `x.sha256`).
pub fn sidecar_path(path: &RelPath) -> Option<RelPath> {
    path.parent()
        .join(&format!("{}.sha256", path.file_name()))
        .ok()
}

/// Whether `path` is `x.sha256` for a file `x` on the local side.
fn sidecar_of_a_local_file(path: &RelPath, local: &Tree<'_>) -> bool {
    let Some(stem) = path.file_name().strip_suffix(".sha256") else {
        return false;
    };
    path.parent().join(stem).is_ok_and(|file| {
        local.get(&file).is_some_and(|e| e.kind == EntryKind::File) && !local.contains_key(path)
    })
}

/// The outcome for a file present on both sides.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Skip(Reason),
    Transfer(Reason),
}

/// The equality ladder for a file on both sides: against the record when there is one; without
/// one, only a pull may trust equal size and time (a push's remote time is the upload time).
fn decide_file(
    local: &Entry,
    remote: &Entry,
    record: Option<&SyncRecord>,
    source: Side,
) -> Decision {
    let Some(record) = record else {
        return decide_unrecorded(local, remote, source);
    };
    let local_change = find_change(local, record.local_size, record.local_mtime);
    let remote_change = find_change(remote, record.remote_size, record.remote_mtime);
    match (local_change, remote_change) {
        (None, None) => Decision::Skip(Reason::Unchanged),
        (Some(change), None) => Decision::Transfer(Reason::Changed {
            side: Side::Local,
            change,
        }),
        (None, Some(change)) => Decision::Transfer(Reason::Changed {
            side: Side::Remote,
            change,
        }),
        (Some(local), Some(remote)) => Decision::Transfer(Reason::BothChanged {
            local,
            remote,
            winner: source,
        }),
    }
}

fn decide_unrecorded(local: &Entry, remote: &Entry, source: Side) -> Decision {
    let sizes = (local.size != remote.size).then_some((local.size, remote.size));
    let same_time = match (local.mtime, remote.mtime) {
        (Some(l), Some(r)) => l.matches(&r),
        _ => false,
    };
    if source == Side::Remote && sizes.is_none() && same_time {
        Decision::Skip(Reason::SameSizeAndTime)
    } else {
        Decision::Transfer(Reason::NotRecorded { sizes })
    }
}

/// How an entry differs from what was recorded; a missing time on either side leaves size alone
/// to decide.
fn find_change(entry: &Entry, size: u64, mtime: Option<Mtime>) -> Option<Change> {
    if entry.size != size {
        return Some(Change::Size {
            from: size,
            to: entry.size,
        });
    }
    match (mtime, entry.mtime) {
        (Some(from), Some(to)) if !from.matches(&to) => Some(Change::Modified { from, to }),
        _ => None,
    }
}

/// Why deletes are withheld, when the policy asks for them but a listing is incomplete (a
/// missing directory in the source listing would otherwise read as "deleted on the source"), or
/// the source root is empty (an unmounted disk, a server answering an empty listing: an empty
/// source never empties the other side).
fn blocked_deletes_reason(
    local: &Listing,
    remote: &Listing,
    source: &Listing,
    source_side: Side,
    policy: &Policy,
    withheld: usize,
) -> Option<String> {
    if !policy.delete {
        return None;
    }
    if withheld > 0 && source.entries.keys().all(RelPath::is_root) {
        return Some(format!(
            "the {source_side} root is empty: {} not planned (an empty source never empties the other side)",
            count_noun(withheld, "delete")
        ));
    }
    incomplete_listings(local, remote, withheld)
}

/// Why `deletes` planned deletes are withheld when a side's listing is incomplete (both
/// planners' first guard), or `None` when both listings are complete.
pub(super) fn incomplete_listings(
    local: &Listing,
    remote: &Listing,
    deletes: usize,
) -> Option<String> {
    let sides: Vec<String> = [(Side::Local, local), (Side::Remote, remote)]
        .into_iter()
        .filter(|(_, listing)| !listing.is_complete())
        .map(|(side, listing)| {
            format!(
                "{side} listing incomplete ({})",
                count_noun(listing.problems.len(), "problem")
            )
        })
        .collect();
    (!sides.is_empty()).then(|| {
        format!(
            "{}: {} not planned",
            sides.join(" and "),
            count_noun(deletes, "delete")
        )
    })
}

fn count_noun(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The records walked in path order beside a planner's walk of both trees: each path's record,
/// and the records to forget: those whose path is a file on neither side (nothing is left for
/// the record to describe).
pub(super) struct RecordCursor<'a> {
    records: std::iter::Peekable<std::collections::btree_map::Iter<'a, RelPath, SyncRecord>>,
    forget: Vec<RelPath>,
}

impl<'a> RecordCursor<'a> {
    pub(super) fn new(records: &'a Records) -> Self {
        RecordCursor {
            records: records.iter().peekable(),
            forget: Vec::new(),
        }
    }

    /// The record of `path`, which must come after every path asked for before; the records
    /// passed over on the way name paths neither side lists, so are forgotten.
    pub(super) fn at(
        &mut self,
        path: &RelPath,
        local: Option<&Entry>,
        remote: Option<&Entry>,
    ) -> Option<&'a SyncRecord> {
        while let Some((p, _)) = self.records.next_if(|(p, _)| *p < path) {
            self.forget.push(p.clone());
        }
        let (p, record) = self.records.next_if(|(p, _)| *p == path)?;
        let is_file = |e: Option<&Entry>| e.is_some_and(|e| e.kind == EntryKind::File);
        if !is_file(local) && !is_file(remote) {
            self.forget.push(p.clone());
        }
        Some(record)
    }

    /// The records to forget, with those after the last path asked for.
    pub(super) fn finish(mut self) -> Vec<RelPath> {
        self.forget.extend(self.records.map(|(p, _)| p.clone()));
        self.forget
    }
}

/// Paths in JSON as people see them: control characters escaped, like everywhere else shown.
fn serialize_path<S: serde::Serializer>(path: &RelPath, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::text::escape_controls(path.as_str()))
}

fn serialize_opt_path<S: serde::Serializer>(
    path: &Option<RelPath>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => serialize_path(p, serializer),
        None => serializer.serialize_none(),
    }
}

fn serialize_paths<S: serde::Serializer>(
    paths: &[RelPath],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(
        paths
            .iter()
            .map(|p| crate::text::escape_controls(p.as_str())),
    )
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;

#[cfg(test)]
mod two_way_properties;
