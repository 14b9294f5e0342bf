//! The two-way planner (`direction: both`): the record of the last sync says which side changed
//! what since, and each change goes to the other side.
//!
//! Per file path, with `L`/`R` the local and remote entries and the record of the last sync:
//! - on both sides, recorded: unchanged on both is left alone; changed on one side goes to the
//!   other; changed on both is a conflict, settled by the job's `conflict` policy;
//! - on both sides, never recorded (a first run): a conflict too, since equal size says
//!   nothing about content. (The run compares the content of same-size pairs before planning
//!   and records those that are equal, so only files that really differ get here.)
//! - on one side only, never recorded: new, copied to the other side;
//! - on one side only, recorded: deleted on the other side since. Unchanged here, the delete is
//!   propagated when the job has `delete: true` (else the file is copied back); changed here,
//!   the change wins over the delete;
//! - recorded, on neither side: the record is forgotten.
//!
//! Directories present on one side only are made on the other, unless every file below them
//! is a propagated delete (then they are removed, children first). A first run, with no
//! records, never deletes anything. Deletes are withheld when either listing is incomplete or
//! either root is empty while the other side would lose files, and by `max_delete`.
//!
//! A conflict's loser under `keep_both` is renamed on its side to `NAME.conflict-<stamp>.EXT`
//! (before any transfer), then copied to the other side, while the winner takes the name on
//! both: both sides end with both versions. Under `newer`, `local` or `remote` the winner
//! overwrites the loser; the conflict is listed in [`Plan::resolved`] and logged as a warning.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Action, ActionKind, Plan, Policy, Reason, RecordCursor, Records, Resolved, Side, Skip,
    SyncRecord, Tree, action, close_tree, count_noun, find_change, guard, incomplete_listings,
};
use crate::config::ConflictPolicy;
use crate::listing::{Entry, EntryKind, Listing};
use crate::path::RelPath;

/// What one file path needs, before the lists are put in order.
#[derive(Default)]
struct Draft {
    make_dirs: Vec<Action>,
    renames: Vec<Action>,
    transfers: Vec<Action>,
    delete_files: Vec<Action>,
    remove_dirs: Vec<Action>,
    skipped: Vec<Skip>,
    conflicts: Vec<super::Conflict>,
    resolved: Vec<Resolved>,
    shields: BTreeSet<RelPath>,
    /// Directories on one side only, with the side that has them.
    lone_dirs: Vec<(RelPath, Side)>,
}

pub(super) fn plan(local: &Listing, remote: &Listing, records: &Records, policy: &Policy) -> Plan {
    let local_tree = close_tree(local);
    let remote_tree = close_tree(remote);
    let mut draft = Draft::default();
    let paths: BTreeSet<&RelPath> = local_tree
        .keys()
        .chain(remote_tree.keys())
        .map(|p| p.as_ref())
        .collect();
    let mut on_records = RecordCursor::new(records);
    for path in paths {
        let l = local_tree.get(path).copied();
        let r = remote_tree.get(path).copied();
        let record = on_records.at(path, l, r);
        if !draft.shields.is_empty() && path.ancestors().iter().any(|a| draft.shields.contains(a)) {
            continue;
        }
        draft.visit(path, l, r, record, policy, &local_tree, &remote_tree);
    }
    draft.settle_lone_dirs(&local_tree, &remote_tree, local, remote);

    // Guards on deletes: incomplete listings, an empty root, max_delete.
    let deletes = draft.delete_files.len() + draft.remove_dirs.len();
    let incomplete = incomplete_listings(local, remote, deletes);
    let empty_root = [(Side::Local, local), (Side::Remote, remote)]
        .into_iter()
        .find(|(_, l)| l.entries.keys().all(RelPath::is_root))
        .map(|(side, _)| side);
    let deletes_blocked = if deletes == 0 {
        None
    } else if incomplete.is_some() {
        incomplete
    } else if let Some(side) = empty_root {
        Some(format!(
            "the {side} root is empty: {} not planned (an empty side never empties the other)",
            count_noun(deletes, "delete")
        ))
    } else {
        let files_after = local.files().count().max(remote.files().count());
        guard::over_max_delete(
            draft.delete_files.len(),
            records.len(),
            files_after,
            policy.max_delete,
        )
    };
    let forget = on_records.finish();

    let mut actions = draft.make_dirs;
    actions.extend(draft.renames);
    actions.extend(draft.transfers);
    let mut deletes = draft.delete_files;
    deletes.extend(draft.remove_dirs.into_iter().rev());
    let withheld = if deletes_blocked.is_some() {
        deletes
    } else {
        actions.extend(deletes);
        Vec::new()
    };
    Plan {
        actions,
        skipped: draft.skipped,
        conflicts: draft.conflicts,
        deletes_blocked,
        withheld,
        forget,
        waiting: Vec::new(),
        resolved: draft.resolved,
    }
}

/// `report.csv` -> `report.conflict-20261201T101500Z.csv`; `README` ->
/// `README.conflict-20261201T101500Z`; a leading dot is not an extension.
pub fn conflict_name(path: &RelPath, stamp: &str) -> Option<RelPath> {
    let name = path.file_name();
    let split = name.rfind('.').filter(|&i| i > 0);
    let copy = match split {
        Some(i) => format!("{}.conflict-{stamp}{}", &name[..i], &name[i..]),
        None => format!("{name}.conflict-{stamp}"),
    };
    path.parent().join(&copy).ok()
}

fn transfer_to(side: Side) -> ActionKind {
    match side {
        Side::Remote => ActionKind::Upload,
        Side::Local => ActionKind::Download,
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Local => Side::Remote,
        Side::Remote => Side::Local,
    }
}

impl Draft {
    #[allow(clippy::too_many_arguments)]
    fn visit(
        &mut self,
        path: &RelPath,
        l: Option<&Entry>,
        r: Option<&Entry>,
        record: Option<&SyncRecord>,
        policy: &Policy,
        local_tree: &Tree<'_>,
        remote_tree: &Tree<'_>,
    ) {
        let kind = |e: Option<&Entry>| e.map(|e| e.kind);
        if kind(l) == Some(EntryKind::Symlink) || kind(r) == Some(EntryKind::Symlink) {
            self.skipped.push(Skip {
                path: path.clone(),
                reason: Reason::SymlinkNotFollowed,
            });
            self.shields.insert(path.clone());
            return;
        }
        match (l, r) {
            (Some(a), Some(b)) if a.kind != b.kind => {
                let describe = |e: &Entry| match e.kind {
                    EntryKind::Dir => "a directory",
                    _ => "a file",
                };
                self.conflicts.push(super::Conflict {
                    path: path.clone(),
                    message: format!(
                        "local is {}, remote is {}; left alone",
                        describe(a),
                        describe(b)
                    ),
                });
                self.shields.insert(path.clone());
            }
            (Some(a), Some(_)) if a.kind == EntryKind::Dir => {}
            (Some(a), None) if a.kind == EntryKind::Dir => {
                self.lone_dirs.push((path.clone(), Side::Local))
            }
            (None, Some(b)) if b.kind == EntryKind::Dir => {
                self.lone_dirs.push((path.clone(), Side::Remote))
            }
            (Some(a), Some(b)) => {
                self.both_files(path, a, b, record, policy, local_tree, remote_tree)
            }
            (Some(a), None) => self.one_file(path, Side::Local, a, record, policy),
            (None, Some(b)) => self.one_file(path, Side::Remote, b, record, policy),
            (None, None) => {}
        }
    }

    /// A file on `side` only.
    fn one_file(
        &mut self,
        path: &RelPath,
        side: Side,
        entry: &Entry,
        record: Option<&SyncRecord>,
        policy: &Policy,
    ) {
        let to = other(side);
        let Some(record) = record else {
            self.transfers.push(action(
                transfer_to(to),
                path,
                entry.size,
                Reason::MissingOn(to),
            ));
            return;
        };
        let (size, mtime) = match side {
            Side::Local => (record.local_size, record.local_mtime),
            Side::Remote => (record.remote_size, record.remote_mtime),
        };
        match find_change(entry, size, mtime) {
            Some(change) => self.transfers.push(action(
                transfer_to(to),
                path,
                entry.size,
                Reason::ChangedButDeleted {
                    changed: side,
                    change,
                },
            )),
            None if policy.delete => {
                let kind = match side {
                    Side::Local => ActionKind::DeleteLocalFile,
                    Side::Remote => ActionKind::DeleteRemoteFile,
                };
                self.delete_files
                    .push(action(kind, path, entry.size, Reason::DeletedOn(to)));
            }
            None => self.transfers.push(action(
                transfer_to(to),
                path,
                entry.size,
                Reason::Restored(to),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn both_files(
        &mut self,
        path: &RelPath,
        l: &Entry,
        r: &Entry,
        record: Option<&SyncRecord>,
        policy: &Policy,
        local_tree: &Tree<'_>,
        remote_tree: &Tree<'_>,
    ) {
        let (lc, rc) = match record {
            Some(rec) => {
                let lc = find_change(l, rec.local_size, rec.local_mtime);
                let rc = find_change(r, rec.remote_size, rec.remote_mtime);
                match (lc, rc) {
                    (None, None) => {
                        self.skipped.push(Skip {
                            path: path.clone(),
                            reason: Reason::Unchanged,
                        });
                        return;
                    }
                    (Some(change), None) => {
                        self.transfers.push(action(
                            ActionKind::Upload,
                            path,
                            l.size,
                            Reason::Changed {
                                side: Side::Local,
                                change,
                            },
                        ));
                        return;
                    }
                    (None, Some(change)) => {
                        self.transfers.push(action(
                            ActionKind::Download,
                            path,
                            r.size,
                            Reason::Changed {
                                side: Side::Remote,
                                change,
                            },
                        ));
                        return;
                    }
                    (lc, rc) => (lc, rc),
                }
            }
            None => (None, None),
        };
        let newer = match (l.mtime, r.mtime) {
            (Some(a), Some(b)) if !a.matches(&b) => Some(if a.nanos > b.nanos {
                Side::Local
            } else {
                Side::Remote
            }),
            _ => None,
        };
        let (winner, keep_both) = match policy.conflict {
            ConflictPolicy::Local => (Side::Local, false),
            ConflictPolicy::Remote => (Side::Remote, false),
            ConflictPolicy::Newer => match newer {
                Some(side) => (side, false),
                None => (Side::Local, true),
            },
            ConflictPolicy::KeepBoth => (newer.unwrap_or(Side::Local), true),
        };
        let loser = other(winner);
        let (win, lose) = match winner {
            Side::Local => (l, r),
            Side::Remote => (r, l),
        };
        let recorded = record.is_some();
        let reason = Reason::Conflict {
            local: lc,
            remote: rc,
            recorded,
            winner,
        };
        let copy = if keep_both {
            let taken = |p: &RelPath| {
                local_tree.contains_key(p)
                    || remote_tree.contains_key(p)
                    || self.renames.iter().any(|a| a.to.as_ref() == Some(p))
            };
            match conflict_name(path, &policy.conflict_stamp).filter(|p| !taken(p)) {
                Some(copy) => Some(copy),
                None => {
                    // No free name for the copy: leave both as they are, reported.
                    self.conflicts.push(super::Conflict {
                        path: path.clone(),
                        message: "changed on both sides, and no free name for a conflict copy; left alone".to_owned(),
                    });
                    return;
                }
            }
        } else {
            None
        };
        if let Some(copy) = &copy {
            let rename = match loser {
                Side::Local => ActionKind::RenameLocalFile,
                Side::Remote => ActionKind::RenameRemoteFile,
            };
            self.renames.push(Action {
                kind: rename,
                path: path.clone(),
                size: lose.size,
                reason: Reason::ConflictCopy(loser),
                to: Some(copy.clone()),
            });
            self.transfers.push(action(
                transfer_to(winner),
                copy,
                lose.size,
                Reason::ConflictCopy(loser),
            ));
        }
        self.transfers
            .push(action(transfer_to(loser), path, win.size, reason));
        self.resolved.push(Resolved {
            path: path.clone(),
            winner,
            policy: policy.conflict,
            copy,
        });
    }

    /// A directory on one side only is made on the other, unless every file below it is a
    /// propagated delete (then it goes too, once they are gone).
    fn settle_lone_dirs(
        &mut self,
        local: &Tree<'_>,
        remote: &Tree<'_>,
        local_listing: &Listing,
        remote_listing: &Listing,
    ) {
        // Directories that hold what the filter leaves out cannot be removed.
        let pinned = |listing: &Listing| -> BTreeSet<RelPath> {
            listing
                .holds_excluded
                .iter()
                .flat_map(|d| {
                    let mut all = d.ancestors();
                    all.push(d.clone());
                    all
                })
                .collect()
        };
        let (pinned_local, pinned_remote) = (pinned(local_listing), pinned(remote_listing));
        let deleted: BTreeMap<&RelPath, Side> = self
            .delete_files
            .iter()
            .map(|a| {
                let side = match a.kind {
                    ActionKind::DeleteLocalFile => Side::Local,
                    _ => Side::Remote,
                };
                (&a.path, side)
            })
            .collect();
        let mut made = Vec::new();
        let mut removed = Vec::new();
        for (dir, side) in std::mem::take(&mut self.lone_dirs) {
            if self.shields.iter().any(|s| dir.ancestors().contains(s)) {
                continue;
            }
            let (tree, pinned) = match side {
                Side::Local => (local, &pinned_local),
                Side::Remote => (remote, &pinned_remote),
            };
            let below: Vec<(&RelPath, &Entry)> = tree
                .range::<RelPath, _>(&dir..)
                .map(|(p, e)| (p.as_ref(), *e))
                .skip(1)
                .take_while(|(p, _)| p.ancestors().contains(&dir))
                .collect();
            let files: Vec<&RelPath> = below
                .iter()
                .filter(|(_, e)| e.kind != EntryKind::Dir)
                .map(|(p, _)| *p)
                .collect();
            let all_deleted = !files.is_empty()
                && files.iter().all(|p| deleted.get(p) == Some(&side))
                && !pinned.contains(&dir);
            if all_deleted {
                let kind = match side {
                    Side::Local => ActionKind::RemoveLocalDir,
                    Side::Remote => ActionKind::RemoveRemoteDir,
                };
                removed.push(action(kind, &dir, 0, Reason::DeletedOn(other(side))));
            } else {
                let kind = match side {
                    Side::Local => ActionKind::MakeRemoteDir,
                    Side::Remote => ActionKind::MakeLocalDir,
                };
                made.push(action(kind, &dir, 0, Reason::MissingOn(other(side))));
            }
        }
        // A directory whose files all go, but that holds a directory being made on the other
        // side, stays: it is made there too (its parent first).
        let needed: BTreeSet<RelPath> = made.iter().flat_map(|a| a.path.ancestors()).collect();
        let (keep, gone): (Vec<Action>, Vec<Action>) =
            removed.into_iter().partition(|a| needed.contains(&a.path));
        for a in keep {
            let kind = match a.kind {
                ActionKind::RemoveLocalDir => ActionKind::MakeRemoteDir,
                _ => ActionKind::MakeLocalDir,
            };
            made.push(action(
                kind,
                &a.path,
                0,
                Reason::MissingOn(other(side_of(a.kind))),
            ));
        }
        made.sort_by(|a, b| a.path.cmp(&b.path));
        self.make_dirs = made;
        self.remove_dirs = gone;
        self.remove_dirs.sort_by(|a, b| a.path.cmp(&b.path));
    }
}

/// The side a directory removal happens on.
fn side_of(kind: ActionKind) -> Side {
    match kind {
        ActionKind::RemoveLocalDir => Side::Local,
        _ => Side::Remote,
    }
}
