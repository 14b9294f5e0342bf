//! Unit tests, one table per decision rule of the planner.

use super::*;
use crate::listing::{ListingProblem, Precision};

const T0: i64 = 1_700_000_000;

fn path(s: &str) -> RelPath {
    RelPath::parse(s).expect("test paths are valid")
}

fn at(secs: i64) -> Option<Mtime> {
    Some(Mtime::from_secs(secs, Precision::Second))
}

fn at_minute(secs: i64) -> Option<Mtime> {
    Some(Mtime::from_secs(secs, Precision::Minute))
}

fn file(size: u64, mtime: Option<Mtime>) -> Entry {
    Entry::file(size, mtime)
}

fn symlink() -> Entry {
    Entry::link()
}

fn listing(entries: &[(&str, Entry)]) -> Listing {
    let mut listing = Listing::default();
    for (p, e) in entries {
        listing.insert(path(p), e.clone());
    }
    listing
}

fn record(local: (u64, Option<Mtime>), remote: (u64, Option<Mtime>)) -> SyncRecord {
    SyncRecord {
        local_size: local.0,
        local_mtime: local.1,
        sha256: None,
        remote_size: remote.0,
        remote_mtime: remote.1,
    }
}

fn records(entries: &[(&str, SyncRecord)]) -> Records {
    entries.iter().map(|(p, r)| (path(p), r.clone())).collect()
}

fn policy(direction: Direction, delete: bool) -> Policy {
    Policy {
        direction,
        delete,
        // No cap here; guard.rs and the property tests cover max_delete.
        max_delete: MaxDelete::Count(u64::MAX),
        checksum_sidecar: false,
        publish_marker: None,
        conflict: crate::config::ConflictPolicy::KeepBoth,
        conflict_stamp: "20261201T000000Z".to_owned(),
    }
}

/// Actions as `(kind, path, size, reason)` tuples, easy to compare in a table.
fn summarize(plan: &Plan) -> Vec<(ActionKind, String, u64, String)> {
    plan.actions
        .iter()
        .map(|a| (a.kind, a.path.to_string(), a.size, a.reason.to_string()))
        .collect()
}

fn summarize_skips(plan: &Plan) -> Vec<(String, String)> {
    plan.skipped
        .iter()
        .map(|s| (s.path.to_string(), s.reason.to_string()))
        .collect()
}

fn act(kind: ActionKind, p: &str, size: u64, reason: &str) -> (ActionKind, String, u64, String) {
    (kind, p.to_owned(), size, reason.to_owned())
}

#[test]
fn missing_on_destination_is_made_or_transferred() {
    let tree = listing(&[
        ("a", Entry::dir()),
        ("a/empty", Entry::dir()),
        ("a/x.txt", file(5, at(T0))),
        ("b.txt", file(0, at(T0))),
    ]);
    let empty = Listing::default();
    use ActionKind::*;
    let cases = [
        (
            Direction::Push,
            vec![
                act(MakeRemoteDir, "a", 0, "missing on remote"),
                act(MakeRemoteDir, "a/empty", 0, "missing on remote"),
                act(Upload, "a/x.txt", 5, "missing on remote"),
                act(Upload, "b.txt", 0, "missing on remote"),
            ],
        ),
        (
            Direction::Pull,
            vec![
                act(MakeLocalDir, "a", 0, "missing on local"),
                act(MakeLocalDir, "a/empty", 0, "missing on local"),
                act(Download, "a/x.txt", 5, "missing on local"),
                act(Download, "b.txt", 0, "missing on local"),
            ],
        ),
    ];
    for (direction, expected) in cases {
        let (local, remote) = match direction {
            Direction::Push | Direction::Both => (&tree, &empty),
            Direction::Pull => (&empty, &tree),
        };
        let plan = plan(local, remote, &Records::new(), &policy(direction, false));
        assert_eq!(summarize(&plan), expected, "{direction:?}");
        assert_eq!(plan.transfer_bytes(), 5);
    }
}

#[test]
fn directories_on_both_sides_need_nothing() {
    let tree = listing(&[("a", Entry::dir()), ("a/b", Entry::dir())]);
    for direction in [Direction::Push, Direction::Pull] {
        let plan = plan(&tree, &tree, &Records::new(), &policy(direction, true));
        assert!(plan.is_empty(), "{direction:?}: {:?}", plan.actions);
        assert!(plan.skipped.is_empty());
    }
}

#[test]
fn parents_implied_by_a_listing_are_made_first() {
    // A walker that reports only files still gets their parents made, parents first.
    let local = listing(&[("a/b/c.txt", file(3, at(T0)))]);
    let plan = plan(
        &local,
        &Listing::default(),
        &Records::new(),
        &policy(Direction::Push, false),
    );
    use ActionKind::*;
    assert_eq!(
        summarize(&plan),
        vec![
            act(MakeRemoteDir, "a", 0, "missing on remote"),
            act(MakeRemoteDir, "a/b", 0, "missing on remote"),
            act(Upload, "a/b/c.txt", 3, "missing on remote"),
        ]
    );
}

#[test]
fn parents_implied_by_siblings_and_deeper_files_are_each_made_once() {
    // Ancestors are looked for once per run of siblings: files that share a parent, then a
    // deeper one, then siblings again, then a parent met after a different one.
    let local = listing(&[
        ("a/b/1", file(1, at(T0))),
        ("a/b/2", file(1, at(T0))),
        ("a/b/c/3", file(1, at(T0))),
        ("a/b/4", file(1, at(T0))),
        ("a/d/5", file(1, at(T0))),
        ("e/6", file(1, at(T0))),
    ]);
    let plan = plan(
        &local,
        &Listing::default(),
        &Records::new(),
        &policy(Direction::Push, false),
    );
    use ActionKind::*;
    let made: Vec<String> = summarize(&plan)
        .into_iter()
        .filter(|a| a.0 == MakeRemoteDir)
        .map(|a| a.1)
        .collect();
    assert_eq!(made, ["a", "a/b", "a/b/c", "a/d", "e"]);
    assert_eq!(plan.count(Upload), 6);
}

/// One file `f` on both sides: (case name, local entry, remote entry, direction, the transfer
/// expected or `None` for a skip, the exact reason).
type FileCase = (
    &'static str,
    Entry,
    Entry,
    Direction,
    Option<ActionKind>,
    &'static str,
);

fn check_file_case(case: FileCase, recorded: &Records) {
    let (name, local, remote, direction, expected, reason) = case;
    let source_size = match direction {
        Direction::Push | Direction::Both => local.size,
        Direction::Pull => remote.size,
    };
    let plan = plan(
        &listing(&[("f", local)]),
        &listing(&[("f", remote)]),
        recorded,
        &policy(direction, false),
    );
    match expected {
        None => {
            assert!(plan.is_empty(), "{name}: {:?}", plan.actions);
            assert_eq!(
                summarize_skips(&plan),
                vec![("f".to_owned(), reason.to_owned())],
                "{name}"
            );
        }
        Some(kind) => {
            assert_eq!(
                summarize(&plan),
                vec![act(kind, "f", source_size, reason)],
                "{name}"
            );
            assert!(plan.skipped.is_empty(), "{name}");
        }
    }
}

#[test]
fn recorded_files_are_compared_with_their_record() {
    let rec = record((10, at(T0)), (10, at_minute(T0 + 120)));
    let cases: Vec<FileCase> = vec![
        (
            "both match the record",
            file(10, at(T0)),
            file(10, at_minute(T0 + 120)),
            Direction::Push,
            None,
            "unchanged since last sync",
        ),
        (
            "remote time within its minute",
            file(10, at(T0)),
            file(10, at_minute(T0 + 150)),
            Direction::Pull,
            None,
            "unchanged since last sync",
        ),
        (
            "no times on either side: size decides",
            file(10, None),
            file(10, None),
            Direction::Push,
            None,
            "unchanged since last sync",
        ),
        (
            "local grew",
            file(12, at(T0)),
            file(10, at_minute(T0 + 120)),
            Direction::Push,
            Some(ActionKind::Upload),
            "local changed since last sync (size 10 -> 12)",
        ),
        (
            "local touched, same size",
            file(10, at(T0 + 7)),
            file(10, at_minute(T0 + 120)),
            Direction::Push,
            Some(ActionKind::Upload),
            "local changed since last sync (modified 2023-11-14 22:13:20 -> 2023-11-14 22:13:27)",
        ),
        (
            "remote changed on a push: overwritten from local",
            file(10, at(T0)),
            file(10, at_minute(T0 + 600)),
            Direction::Push,
            Some(ActionKind::Upload),
            "remote changed since last sync (modified 2023-11-14 22:15 -> 2023-11-14 22:23)",
        ),
        (
            "remote shrank on a pull",
            file(10, at(T0)),
            file(4, at_minute(T0 + 120)),
            Direction::Pull,
            Some(ActionKind::Download),
            "remote changed since last sync (size 10 -> 4)",
        ),
        (
            "both changed, pull: remote wins",
            file(11, at(T0)),
            file(12, at_minute(T0 + 120)),
            Direction::Pull,
            Some(ActionKind::Download),
            "both changed since last sync (local size 10 -> 11, remote size 10 -> 12); remote wins",
        ),
        (
            "both changed, push: local wins",
            file(11, at(T0)),
            file(12, at_minute(T0 + 120)),
            Direction::Push,
            Some(ActionKind::Upload),
            "both changed since last sync (local size 10 -> 11, remote size 10 -> 12); local wins",
        ),
    ];
    let recorded = records(&[("f", rec)]);
    for case in cases {
        check_file_case(case, &recorded);
    }
}

#[test]
fn unrecorded_files_are_trusted_only_by_a_pull_with_equal_size_and_time() {
    let cases: Vec<FileCase> = vec![
        (
            "pull, same size, time in the same minute",
            file(10, at(T0 + 30)),
            file(10, at_minute(T0)),
            Direction::Pull,
            None,
            "same size and modification time",
        ),
        (
            "pull, same size, different minute",
            file(10, at(T0 + 90)),
            file(10, at_minute(T0)),
            Direction::Pull,
            Some(ActionKind::Download),
            "not recorded as synced",
        ),
        (
            "pull, same size, no remote time",
            file(10, at(T0)),
            file(10, None),
            Direction::Pull,
            Some(ActionKind::Download),
            "not recorded as synced",
        ),
        (
            "pull, sizes differ",
            file(9, at(T0)),
            file(10, at_minute(T0)),
            Direction::Pull,
            Some(ActionKind::Download),
            "not recorded as synced; sizes differ (local 9, remote 10)",
        ),
        (
            "push, same size and time: the remote time is no evidence",
            file(10, at(T0)),
            file(10, at(T0)),
            Direction::Push,
            Some(ActionKind::Upload),
            "not recorded as synced",
        ),
        (
            "push, sizes differ",
            file(10, at(T0)),
            file(0, at(T0)),
            Direction::Push,
            Some(ActionKind::Upload),
            "not recorded as synced; sizes differ (local 10, remote 0)",
        ),
    ];
    for case in cases {
        check_file_case(case, &Records::new());
    }
}

#[test]
fn symlinks_are_skipped_with_everything_below_them() {
    // (name, local, remote, direction)
    let cases = [
        (
            "local link, push",
            listing(&[("l", symlink())]),
            Listing::default(),
            Direction::Push,
        ),
        (
            "remote link over a local file, push with delete",
            listing(&[("l", file(1, at(T0)))]),
            listing(&[("l", symlink())]),
            Direction::Push,
        ),
        (
            "remote link, pull",
            Listing::default(),
            listing(&[("l", symlink())]),
            Direction::Pull,
        ),
        (
            "local link, pull with delete",
            listing(&[("l", symlink())]),
            Listing::default(),
            Direction::Pull,
        ),
        (
            "local link where remote has a tree, push with delete",
            listing(&[("l", symlink())]),
            listing(&[("l", Entry::dir()), ("l/x", file(1, at(T0)))]),
            Direction::Push,
        ),
    ];
    for (name, local, remote, direction) in cases {
        let plan = plan(&local, &remote, &Records::new(), &policy(direction, true));
        assert!(plan.is_empty(), "{name}: {:?}", plan.actions);
        assert_eq!(
            summarize_skips(&plan),
            vec![("l".to_owned(), "symlink not followed".to_owned())],
            "{name}"
        );
        assert!(plan.conflicts.is_empty(), "{name}");
    }
}

#[test]
fn a_kept_link_keeps_its_directory() {
    // The remote directory holds only a link; deleting the directory would fail or lose it.
    let remote = listing(&[
        ("d", Entry::dir()),
        ("d/link", symlink()),
        ("d/f", file(2, None)),
        ("kept", Entry::dir()),
    ]);
    let plan = plan(
        &listing(&[("kept", Entry::dir())]),
        &remote,
        &Records::new(),
        &policy(Direction::Push, true),
    );
    assert_eq!(
        summarize(&plan),
        vec![act(
            ActionKind::DeleteRemoteFile,
            "d/f",
            2,
            "absent on local and delete is on"
        )]
    );
}

#[test]
fn type_conflicts_are_reported_and_left_alone() {
    let dir_tree = [
        ("p", Entry::dir()),
        ("p/inner.txt", file(4, at(T0))),
        ("p/sub", Entry::dir()),
    ];
    let as_file = [("p", file(9, at(T0)))];
    let cases = [
        (
            Direction::Push,
            listing(&dir_tree),
            listing(&as_file),
            "local is a directory, remote is a file; left alone",
        ),
        (
            Direction::Push,
            listing(&as_file),
            listing(&dir_tree),
            "local is a file, remote is a directory; left alone",
        ),
        (
            Direction::Pull,
            listing(&dir_tree),
            listing(&as_file),
            "local is a directory, remote is a file; left alone",
        ),
        (
            Direction::Pull,
            listing(&as_file),
            listing(&dir_tree),
            "local is a file, remote is a directory; left alone",
        ),
    ];
    for (direction, local, remote, message) in cases {
        let plan = plan(&local, &remote, &Records::new(), &policy(direction, true));
        assert!(
            plan.is_empty(),
            "{direction:?} {message}: {:?}",
            plan.actions
        );
        assert_eq!(
            plan.conflicts,
            vec![Conflict {
                path: path("p"),
                message: message.to_owned()
            }]
        );
    }
}

#[test]
fn destination_only_entries_are_deleted_children_first_only_when_asked() {
    let source = listing(&[("keep.txt", file(1, at(T0)))]);
    let dest = listing(&[
        ("keep.txt", file(1, at(T0))),
        ("old", Entry::dir()),
        ("old/deeper", Entry::dir()),
        ("old/deeper/z.txt", file(7, at(T0))),
        ("old/a.txt", file(3, at(T0))),
        ("stale.txt", file(2, at(T0))),
    ]);
    let recorded = records(&[("keep.txt", record((1, at(T0)), (1, at(T0))))]);
    use ActionKind::*;
    let reason_push = "absent on local and delete is on";
    let reason_pull = "absent on remote and delete is on";
    let cases = [
        (
            Direction::Push,
            vec![
                act(DeleteRemoteFile, "old/a.txt", 3, reason_push),
                act(DeleteRemoteFile, "old/deeper/z.txt", 7, reason_push),
                act(DeleteRemoteFile, "stale.txt", 2, reason_push),
                act(RemoveRemoteDir, "old/deeper", 0, reason_push),
                act(RemoveRemoteDir, "old", 0, reason_push),
            ],
        ),
        (
            Direction::Pull,
            vec![
                act(DeleteLocalFile, "old/a.txt", 3, reason_pull),
                act(DeleteLocalFile, "old/deeper/z.txt", 7, reason_pull),
                act(DeleteLocalFile, "stale.txt", 2, reason_pull),
                act(RemoveLocalDir, "old/deeper", 0, reason_pull),
                act(RemoveLocalDir, "old", 0, reason_pull),
            ],
        ),
    ];
    for (direction, expected) in cases {
        let (local, remote) = match direction {
            Direction::Push | Direction::Both => (&source, &dest),
            Direction::Pull => (&dest, &source),
        };
        let with = plan(local, remote, &recorded, &policy(direction, true));
        assert_eq!(summarize(&with), expected, "{direction:?}");
        assert_eq!(with.deletes_blocked, None);
        assert_eq!(with.transfer_bytes(), 0);

        let without = plan(local, remote, &recorded, &policy(direction, false));
        assert!(without.is_empty(), "{direction:?}: {:?}", without.actions);
        assert_eq!(without.deletes_blocked, None);
    }
}

#[test]
fn an_incomplete_listing_blocks_every_delete() {
    let problem = |n: usize| ListingProblem {
        path: format!("dir{n}"),
        message: "permission denied".to_owned(),
    };
    let with_problems = |mut listing: Listing, n: usize| {
        listing.problems = (0..n).map(problem).collect();
        listing
    };
    let local = listing(&[("new.txt", file(1, at(T0)))]);
    let remote = listing(&[("gone", Entry::dir()), ("gone/x", file(3, at(T0)))]);
    let cases = [
        (
            1,
            0,
            "local listing incomplete (1 problem): 2 deletes not planned",
        ),
        (
            0,
            2,
            "remote listing incomplete (2 problems): 2 deletes not planned",
        ),
        (
            3,
            1,
            "local listing incomplete (3 problems) and remote listing incomplete (1 problem): \
             2 deletes not planned",
        ),
    ];
    for (local_problems, remote_problems, message) in cases {
        let local = with_problems(local.clone(), local_problems);
        let remote = with_problems(remote.clone(), remote_problems);
        let blocked = plan(
            &local,
            &remote,
            &Records::new(),
            &policy(Direction::Push, true),
        );
        assert_eq!(
            summarize(&blocked),
            vec![act(ActionKind::Upload, "new.txt", 1, "missing on remote")],
            "{message}"
        );
        assert_eq!(blocked.deletes_blocked.as_deref(), Some(message));

        // Without delete there is nothing to block, so nothing to explain.
        let quiet = plan(
            &local,
            &remote,
            &Records::new(),
            &policy(Direction::Push, false),
        );
        assert_eq!(quiet.deletes_blocked, None, "{message}");
    }
}

#[test]
fn forget_lists_recorded_paths_that_are_a_file_on_neither_side() {
    let local = listing(&[
        ("both", file(1, None)),
        ("here", file(1, None)),
        ("d", Entry::dir()),
    ]);
    let remote = listing(&[("both", file(1, None)), ("there", file(1, None))]);
    let any = record((1, None), (1, None));
    let recorded = records(&[
        ("both", any.clone()),
        ("here", any.clone()),
        ("there", any.clone()),
        ("gone", any.clone()),
        ("d", any.clone()),
    ]);
    for direction in [Direction::Push, Direction::Pull] {
        let plan = plan(&local, &remote, &recorded, &policy(direction, false));
        assert_eq!(plan.forget, vec![path("d"), path("gone")], "{direction:?}");
    }
}

#[test]
fn counts_and_bytes_sum_the_actions() {
    let local = listing(&[
        ("d", Entry::dir()),
        ("d/a", file(100, at(T0))),
        ("b", file(23, at(T0))),
    ]);
    let remote = listing(&[("old", file(1000, at(T0)))]);
    let plan = plan(
        &local,
        &remote,
        &Records::new(),
        &policy(Direction::Push, true),
    );
    assert_eq!(plan.count(ActionKind::Upload), 2);
    assert_eq!(plan.count(ActionKind::MakeRemoteDir), 1);
    assert_eq!(plan.count(ActionKind::DeleteRemoteFile), 1);
    assert_eq!(plan.count(ActionKind::Download), 0);
    assert_eq!(plan.transfer_bytes(), 123);
    assert!(!plan.is_empty());
    assert!(Plan::default().is_empty());
}

#[test]
fn plan_serializes_to_json_with_paths_as_strings() {
    let local = listing(&[("d", Entry::dir()), ("d/a b.txt", file(5, None))]);
    let remote = listing(&[("l", symlink())]);
    let recorded = records(&[("gone", record((1, None), (1, None)))]);
    let plan = plan(&local, &remote, &recorded, &policy(Direction::Push, true));
    let json = serde_json::to_value(&plan).expect("a plan serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "actions": [
                {"kind": "make_remote_dir", "path": "d", "size": 0, "reason": "missing on remote"},
                {"kind": "upload", "path": "d/a b.txt", "size": 5, "reason": "missing on remote"},
            ],
            "skipped": [{"path": "l", "reason": "symlink not followed"}],
            "conflicts": [],
            "deletes_blocked": null,
            "withheld": [],
            "forget": ["gone"],
        })
    );
}

#[test]
fn action_kind_names_match_their_json() {
    use ActionKind::*;
    for kind in [
        MakeRemoteDir,
        MakeLocalDir,
        Upload,
        Download,
        DeleteRemoteFile,
        DeleteLocalFile,
        RemoveRemoteDir,
        RemoveLocalDir,
    ] {
        let json = serde_json::to_string(&kind).expect("serializes");
        assert_eq!(json, format!("\"{}\"", kind.as_str()));
        assert_eq!(kind.is_transfer(), matches!(kind, Upload | Download));
        assert_eq!(
            kind.is_delete(),
            !kind.is_transfer() && !matches!(kind, MakeRemoteDir | MakeLocalDir)
        );
    }
}
