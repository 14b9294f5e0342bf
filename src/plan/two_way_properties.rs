//! Property tests of the two-way planner: random sequences of edits on both sides, each round
//! followed by a sync through a model of the executor (and of the run's content comparison of
//! never-synced pairs), then the invariants:
//! - after a sync both sides hold the same files with the same content;
//! - no edit is lost silently: every version made since the last sync is, after it, on both
//!   sides (under its name or a conflict copy), or it lost a conflict that the plan reports as
//!   overwritten (`conflict: newer | local | remote`), or it was a file deleted on the other
//!   side since... never: a changed file wins over a delete;
//! - a second sync right after is a no-op;
//! - a first sync (no records) deletes nothing.
//!
//! Contents are numbers; a file's size is derived from its content so that different contents
//! can share a size (and the same-size comparison is exercised).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::config::ConflictPolicy;
use crate::listing::Precision;

const T0: i64 = 1_700_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct File {
    content: u32,
    mtime: i64,
}

fn size_of(content: u32) -> u64 {
    // Few sizes: different contents often share one.
    u64::from(content % 3)
}

/// One side: files by path, and directories (kept after their files go, as on a disk).
#[derive(Debug, Clone, Default)]
struct Tree {
    files: BTreeMap<RelPath, File>,
    dirs: BTreeSet<RelPath>,
}

impl Tree {
    fn put(&mut self, path: &RelPath, file: File) {
        self.dirs.extend(path.ancestors());
        self.files.insert(path.clone(), file);
    }

    fn listing(&self, precision: Precision) -> Listing {
        let mut listing = Listing::default();
        listing.entries.insert(RelPath::root(), Entry::dir());
        for d in &self.dirs {
            listing.entries.insert(d.clone(), Entry::dir());
        }
        for (p, f) in &self.files {
            listing.entries.insert(
                p.clone(),
                Entry::file(
                    size_of(f.content),
                    Some(Mtime::from_secs(f.mtime, precision)),
                ),
            );
        }
        listing
    }

    fn contents(&self) -> BTreeSet<u32> {
        self.files.values().map(|f| f.content).collect()
    }
}

#[derive(Debug, Clone)]
enum Edit {
    /// Write new content at a path (create or modify).
    Write {
        local: bool,
        path: RelPath,
    },
    Delete {
        local: bool,
        path: RelPath,
    },
}

fn rel_path() -> impl Strategy<Value = RelPath> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c.txt"]), 1..=2).prop_map(|parts| {
        RelPath::parse(&parts.join("/")).expect("names from the alphabet are valid")
    })
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<bool>(), rel_path()).prop_map(|(local, path)| Edit::Write { local, path }),
        1 => (any::<bool>(), rel_path()).prop_map(|(local, path)| Edit::Delete { local, path }),
    ]
}

fn conflict_policy() -> impl Strategy<Value = ConflictPolicy> {
    prop::sample::select(vec![
        ConflictPolicy::KeepBoth,
        ConflictPolicy::Newer,
        ConflictPolicy::Local,
        ConflictPolicy::Remote,
    ])
}

/// The world: both sides, the records, a clock and a content counter.
struct World {
    local: Tree,
    remote: Tree,
    records: Records,
    now: i64,
    next_content: u32,
    syncs: u32,
    /// Every content on either side after the last sync: what is not among them is an edit.
    known: BTreeSet<u32>,
}

impl World {
    fn new() -> Self {
        World {
            local: Tree::default(),
            remote: Tree::default(),
            records: Records::new(),
            now: T0,
            next_content: 1,
            syncs: 0,
            known: BTreeSet::new(),
        }
    }

    fn apply_edit(&mut self, edit: &Edit) {
        self.now += 61;
        match edit {
            Edit::Write { local, path } => {
                let content = self.next_content;
                self.next_content += 1;
                let file = File {
                    content,
                    mtime: self.now,
                };
                // A path under a file, or a file where a directory is, on either side: a type
                // conflict, which the planner leaves alone (tested elsewhere); not made here.
                let blocked = [&self.local, &self.remote].iter().any(|t| {
                    path.ancestors().iter().any(|a| t.files.contains_key(a))
                        || t.dirs.contains(path)
                });
                let side = if *local {
                    &mut self.local
                } else {
                    &mut self.remote
                };
                if !blocked {
                    side.put(path, file);
                }
            }
            Edit::Delete { local, path } => {
                let side = if *local {
                    &mut self.local
                } else {
                    &mut self.remote
                };
                side.files.remove(path);
            }
        }
    }

    fn listings(&self) -> (Listing, Listing) {
        (
            self.local.listing(Precision::Second),
            self.remote.listing(Precision::Minute),
        )
    }

    fn policy(&self, conflict: ConflictPolicy, delete: bool) -> Policy {
        Policy {
            direction: Direction::Both,
            delete,
            max_delete: MaxDelete::Count(u64::MAX),
            checksum_sidecar: false,
            publish_marker: None,
            conflict,
            conflict_stamp: format!("s{}", self.syncs),
        }
    }

    /// What the run does before planning: never-synced pairs of one size and content get a
    /// record.
    fn adopt_identical(&mut self) {
        let (local, remote) = self.listings();
        for (p, l) in &self.local.files {
            if self.records.contains_key(p) {
                continue;
            }
            if let Some(r) = self.remote.files.get(p)
                && r.content == l.content
            {
                self.records.insert(
                    p.clone(),
                    record(
                        local.get(p).expect("listed"),
                        remote.get(p).expect("listed"),
                    ),
                );
            }
        }
    }

    fn plan(&self, conflict: ConflictPolicy, delete: bool) -> Plan {
        let (local, remote) = self.listings();
        plan(
            &local,
            &remote,
            &self.records,
            &self.policy(conflict, delete),
        )
    }

    /// Run a plan as the executor would.
    fn execute(&mut self, plan: &Plan) {
        self.now += 61;
        for a in &plan.actions {
            let p = &a.path;
            match a.kind {
                ActionKind::MakeLocalDir => {
                    self.local.dirs.insert(p.clone());
                }
                ActionKind::MakeRemoteDir => {
                    self.remote.dirs.insert(p.clone());
                }
                ActionKind::RenameLocalFile | ActionKind::RenameRemoteFile => {
                    let side = if a.kind == ActionKind::RenameLocalFile {
                        &mut self.local
                    } else {
                        &mut self.remote
                    };
                    let to = a.to.clone().expect("a rename names its target");
                    assert!(!side.files.contains_key(&to), "a rename onto {to}");
                    let file = side.files.remove(p).expect("a rename has its file");
                    side.put(&to, file);
                }
                ActionKind::Upload => {
                    let f = *self.local.files.get(p).expect("an upload has a local file");
                    // The server lists the upload time.
                    let uploaded = File {
                        content: f.content,
                        mtime: self.now,
                    };
                    self.remote.put(p, uploaded);
                    self.record(p);
                }
                ActionKind::Download => {
                    let f = *self
                        .remote
                        .files
                        .get(p)
                        .expect("a download has a remote file");
                    // The download gets the remote time, as listed (minutes).
                    let listed = File {
                        content: f.content,
                        mtime: f.mtime.div_euclid(60) * 60,
                    };
                    self.local.put(p, listed);
                    self.record(p);
                }
                ActionKind::DeleteLocalFile => {
                    assert!(
                        self.local.files.remove(p).is_some(),
                        "delete of nothing: {p}"
                    );
                }
                ActionKind::DeleteRemoteFile => {
                    assert!(
                        self.remote.files.remove(p).is_some(),
                        "delete of nothing: {p}"
                    );
                }
                ActionKind::RemoveLocalDir | ActionKind::RemoveRemoteDir => {
                    let side = if a.kind == ActionKind::RemoveLocalDir {
                        &mut self.local
                    } else {
                        &mut self.remote
                    };
                    let below = |q: &RelPath| q.ancestors().contains(p);
                    assert!(
                        !side.files.keys().any(below) && !side.dirs.iter().any(below),
                        "removal of a directory that is not empty: {p}"
                    );
                    side.dirs.remove(p);
                }
            }
        }
        for p in &plan.forget {
            self.records.remove(p);
        }
        self.syncs += 1;
    }

    fn record(&mut self, p: &RelPath) {
        let (local, remote) = self.listings();
        self.records.insert(
            p.clone(),
            record(
                local.get(p).expect("listed"),
                remote.get(p).expect("listed"),
            ),
        );
    }
}

fn record(l: &Entry, r: &Entry) -> SyncRecord {
    SyncRecord {
        local_size: l.size,
        local_mtime: l.mtime,
        sha256: None,
        remote_size: r.size,
        remote_mtime: r.mtime,
    }
}

/// Sync once, checking the invariants; returns the plan.
fn sync_and_check(
    world: &mut World,
    conflict: ConflictPolicy,
    delete: bool,
) -> Result<Plan, TestCaseError> {
    let first = world.records.is_empty();
    // The versions made since the last sync.
    let synced = world.known.clone();
    let edited: BTreeMap<u32, (bool, RelPath)> = world
        .local
        .files
        .iter()
        .map(|(p, f)| (f.content, (true, p.clone())))
        .chain(
            world
                .remote
                .files
                .iter()
                .map(|(p, f)| (f.content, (false, p.clone()))),
        )
        .filter(|(c, _)| !synced.contains(c))
        .collect();

    world.adopt_identical();
    let plan = world.plan(conflict, delete);
    let a_side_was_empty = world.local.files.is_empty() || world.remote.files.is_empty();
    prop_assert!(
        plan.conflicts.is_empty(),
        "type conflicts: {:?}",
        plan.conflicts
    );
    if first {
        prop_assert!(
            !plan.actions.iter().any(|a| a.kind.is_delete()),
            "a first sync deletes: {:#?}",
            plan.actions
        );
    }
    world.execute(&plan);

    world.known = world.local.contents();
    world.known.extend(world.remote.contents());

    // Same files, same content; but for the deletes a guard withheld (an empty side, which
    // must never empty the other).
    let withheld: BTreeSet<&RelPath> = plan.withheld.iter().map(|a| &a.path).collect();
    let on = |t: &Tree| -> BTreeMap<RelPath, u32> {
        t.files
            .iter()
            .filter(|(p, _)| !withheld.contains(p))
            .map(|(p, f)| (p.clone(), f.content))
            .collect()
    };
    prop_assert_eq!(
        on(&world.local),
        on(&world.remote),
        "sides differ after {:#?}",
        plan
    );
    if plan.deletes_blocked.is_some() {
        prop_assert!(
            a_side_was_empty,
            "deletes blocked with both sides holding files: {:#?}",
            plan
        );
    }

    // Nothing lost silently.
    let overwritten: BTreeSet<&RelPath> = plan
        .resolved
        .iter()
        .filter(|r| r.copy.is_none())
        .map(|r| &r.path)
        .collect();
    let now = world.local.contents();
    for (content, (local, path)) in &edited {
        let reported = overwritten.contains(path);
        prop_assert!(
            now.contains(content) || reported,
            "the {} edit of {path} (content {content}) is gone without a word: {:#?}",
            if *local { "local" } else { "remote" },
            plan
        );
    }
    if conflict == ConflictPolicy::KeepBoth {
        prop_assert!(
            plan.resolved.iter().all(|r| r.copy.is_some()),
            "keep_both overwrote: {:?}",
            plan.resolved
        );
    }

    // And a second look finds nothing to do (but the deletes a guard withheld, once the side
    // that was empty holds files again).
    let again = world.plan(conflict, delete);
    let was_withheld = |a: &Action| {
        plan.withheld
            .iter()
            .any(|w| w.kind == a.kind && w.path == a.path)
    };
    prop_assert!(
        again.actions.iter().all(was_withheld),
        "a second sync would do {:#?}\nafter {:#?}",
        again.actions,
        plan
    );
    Ok(plan)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn edits_on_both_sides_end_the_same_on_both_with_nothing_lost_silently(
        before in prop::collection::vec(edit(), 0..8),
        rounds in prop::collection::vec(prop::collection::vec(edit(), 0..6), 1..5),
        conflict in conflict_policy(),
        delete in any::<bool>(),
    ) {
        let mut world = World::new();
        // A first sync of whatever both sides hold, unrelated: no records yet.
        for e in &before {
            world.apply_edit(e);
        }
        sync_and_check(&mut world, conflict, delete)?;
        for round in &rounds {
            for e in round {
                world.apply_edit(e);
            }
            sync_and_check(&mut world, conflict, delete)?;
        }
    }

    #[test]
    fn a_delete_on_one_side_is_propagated_only_with_delete_on(
        files in prop::sample::subsequence(vec!["a", "b", "c.txt", "d/e", "d/f"], 2..=5)
            .prop_map(|v| v.into_iter().map(|p| RelPath::parse(p).expect("path")).collect::<Vec<_>>()),
        gone_local in any::<bool>(),
        delete in any::<bool>(),
    ) {
        let mut world = World::new();
        for p in &files {
            world.apply_edit(&Edit::Write { local: true, path: p.clone() });
        }
        sync_and_check(&mut world, ConflictPolicy::KeepBoth, delete)?;
        let victim = world.local.files.keys().next().cloned().expect("a file");
        world.apply_edit(&Edit::Delete { local: gone_local, path: victim.clone() });
        sync_and_check(&mut world, ConflictPolicy::KeepBoth, delete)?;
        prop_assert_eq!(
            world.local.files.contains_key(&victim),
            !delete,
            "delete: {}", delete
        );
    }
}

#[test]
fn conflict_copies_are_named_before_the_extension() {
    let p = |s: &str| RelPath::parse(s).expect("path");
    let stamp = "20261201T101500Z";
    let cases = [
        ("report.csv", "report.conflict-20261201T101500Z.csv"),
        (
            "a/b/data.tar.gz",
            "a/b/data.tar.conflict-20261201T101500Z.gz",
        ),
        ("README", "README.conflict-20261201T101500Z"),
        (".profile", ".profile.conflict-20261201T101500Z"),
    ];
    for (path, copy) in cases {
        assert_eq!(
            two_way::conflict_name(&p(path), stamp),
            Some(p(copy)),
            "{path}"
        );
    }
}

#[test]
fn a_file_changed_on_both_sides_is_kept_twice_under_keep_both() {
    let mut world = World::new();
    let path = RelPath::parse("a/c.txt").expect("path");
    world.apply_edit(&Edit::Write {
        local: true,
        path: path.clone(),
    });
    sync_and_check(&mut world, ConflictPolicy::KeepBoth, true).expect("first sync");
    world.apply_edit(&Edit::Write {
        local: true,
        path: path.clone(),
    });
    world.apply_edit(&Edit::Write {
        local: false,
        path: path.clone(),
    });
    let plan = sync_and_check(&mut world, ConflictPolicy::KeepBoth, true).expect("second sync");
    let summary: Vec<(ActionKind, String)> = plan
        .actions
        .iter()
        .map(|a| (a.kind, a.path.to_string()))
        .collect();
    // The remote edit is newer: it keeps the name; the local one becomes the copy.
    assert_eq!(
        summary,
        vec![
            (ActionKind::RenameLocalFile, "a/c.txt".to_owned()),
            (ActionKind::Upload, "a/c.conflict-s1.txt".to_owned()),
            (ActionKind::Download, "a/c.txt".to_owned()),
        ]
    );
    assert_eq!(world.local.files.len(), 2);
}

#[test]
fn a_first_sync_of_different_files_under_one_name_keeps_both() {
    let mut world = World::new();
    let path = RelPath::parse("b").expect("path");
    world.apply_edit(&Edit::Write {
        local: true,
        path: path.clone(),
    });
    world.apply_edit(&Edit::Write {
        local: false,
        path: path.clone(),
    });
    let plan = sync_and_check(&mut world, ConflictPolicy::Local, true).expect("sync");
    // `local` wins, the remote version is overwritten, and the plan says so.
    assert_eq!(plan.resolved.len(), 1);
    assert_eq!(plan.resolved[0].winner, Side::Local);
    assert!(
        plan.actions
            .iter()
            .all(|a| a.kind == ActionKind::Upload && !a.kind.is_delete())
    );
}
