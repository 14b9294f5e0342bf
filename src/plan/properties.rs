//! Property tests: the planner's invariants over random trees, records and policies.
//!
//! Trees use names from a three-letter alphabet and a depth of at most three, so the two sides
//! share many paths and every rule (type conflicts, symlinks, records that match or not, both
//! directions, delete on and off, incomplete listings) is met in a few hundred cases.
//!
//! The model of each side also holds entries the job's filter leaves out (the walk does not list
//! them, but marks their directory), and the simulated executor fails as a real one would: a
//! directory that still holds anything cannot be removed, and chosen deletes fail outright.

use proptest::prelude::*;

use super::*;
use crate::config::MaxDelete;
use crate::listing::{ListingProblem, Precision};

const T0: i64 = 1_700_000_000;
/// What the simulated server lists as the modification time of every uploaded file.
const SERVER_TIME: i64 = T0 + 7_200;

fn rel_path() -> impl Strategy<Value = RelPath> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=3).prop_map(|parts| {
        RelPath::parse(&parts.join("/")).expect("names from the alphabet are valid")
    })
}

fn mtime() -> impl Strategy<Value = Option<Mtime>> {
    let precision = prop::sample::select(vec![Precision::Second, Precision::Minute]);
    prop::option::weighted(0.8, (0i64..5, precision))
        .prop_map(|t| t.map(|(k, precision)| Mtime::from_secs(T0 + k * 40, precision)))
}

fn symlink() -> Entry {
    Entry::link()
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        6 => (0u64..4, mtime()).prop_map(|(size, mtime)| Entry::file(size, mtime)),
        3 => Just(Entry::dir()),
        1 => Just(symlink()),
    ]
}

fn sync_record() -> impl Strategy<Value = SyncRecord> {
    (0u64..4, mtime(), 0u64..4, mtime()).prop_map(
        |(local_size, local_mtime, remote_size, remote_mtime)| SyncRecord {
            local_size,
            local_mtime,
            sha256: None,
            remote_size,
            remote_mtime,
        },
    )
}

/// What the last sync recorded for one path of a scenario.
#[derive(Debug, Clone)]
enum RecordSpec {
    Absent,
    Random(SyncRecord),
    /// A record that matches both sides, when the path is a file on both.
    Matching,
}

fn record_spec() -> impl Strategy<Value = RecordSpec> {
    prop_oneof![
        2 => Just(RecordSpec::Absent),
        1 => sync_record().prop_map(RecordSpec::Random),
        2 => Just(RecordSpec::Matching),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::sample::select(vec![Direction::Push, Direction::Pull]),
        any::<bool>(),
        prop::sample::select(vec![
            MaxDelete::Count(u64::MAX),
            MaxDelete::Percent(100),
            MaxDelete::Percent(50),
            MaxDelete::Count(1),
        ]),
    )
        .prop_map(|(direction, delete, max_delete)| Policy {
            direction,
            delete,
            max_delete,
            checksum_sidecar: false,
            publish_marker: None,
            conflict: crate::config::ConflictPolicy::KeepBoth,
            conflict_stamp: "20261201T000000Z".to_owned(),
        })
}

fn problem_count() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(0usize), 1 => 1usize..3]
}

/// Turn wished-for entries into a consistent tree: every ancestor is a directory, nothing sits
/// below a file or a link. Returned in creation order, which the shuffle property reorders.
fn build_tree(wishes: &[(RelPath, Entry)]) -> Vec<(RelPath, Entry)> {
    let mut tree: BTreeMap<RelPath, Entry> = BTreeMap::new();
    let mut order = Vec::new();
    for (path, entry) in wishes {
        let blocked = path
            .ancestors()
            .iter()
            .any(|a| tree.get(a).is_some_and(|e| e.kind != EntryKind::Dir));
        if blocked || tree.contains_key(path) {
            continue;
        }
        for ancestor in path.ancestors() {
            if !tree.contains_key(&ancestor) {
                tree.insert(ancestor.clone(), Entry::dir());
                order.push((ancestor, Entry::dir()));
            }
        }
        tree.insert(path.clone(), entry.clone());
        order.push((path.clone(), entry.clone()));
    }
    order
}

/// Where a hidden (filtered-out) entry sits under the directory it marks.
const HIDDEN_NAME: &str = "hidden.tmp";

/// The directories, among `wishes`, that can hold a hidden entry in `tree`: the root, or a
/// directory of the tree.
fn hidden_dirs(tree: &[(RelPath, Entry)], wishes: &[RelPath]) -> BTreeSet<RelPath> {
    let dirs: BTreeSet<&RelPath> = tree
        .iter()
        .filter(|(_, e)| e.kind == EntryKind::Dir)
        .map(|(p, _)| p)
        .collect();
    wishes
        .iter()
        .map(RelPath::parent)
        .filter(|d| d.is_root() || dirs.contains(d))
        .collect()
}

fn to_listing(
    entries: &[(RelPath, Entry)],
    problems: usize,
    holds_excluded: &BTreeSet<RelPath>,
) -> Listing {
    let mut listing = Listing::default();
    for (path, entry) in entries {
        listing.insert(path.clone(), entry.clone());
    }
    listing.holds_excluded = holds_excluded.clone();
    listing.problems = (0..problems)
        .map(|n| ListingProblem {
            path: format!("unreadable{n}"),
            message: "permission denied".to_owned(),
        })
        .collect();
    listing
}

fn matching_record(local: &Entry, remote: &Entry) -> SyncRecord {
    SyncRecord {
        local_size: local.size,
        local_mtime: local.mtime,
        sha256: None,
        remote_size: remote.size,
        remote_mtime: remote.mtime,
    }
}

/// Both sides of a job, the records and a policy, with entries in creation order.
#[derive(Debug, Clone)]
struct Scenario {
    local: Vec<(RelPath, Entry)>,
    remote: Vec<(RelPath, Entry)>,
    local_problems: usize,
    remote_problems: usize,
    /// Directories holding entries the filter leaves out, on each side.
    local_hidden: BTreeSet<RelPath>,
    remote_hidden: BTreeSet<RelPath>,
    records: Records,
    policy: Policy,
}

impl Scenario {
    fn local(&self) -> Listing {
        to_listing(&self.local, self.local_problems, &self.local_hidden)
    }

    fn remote(&self) -> Listing {
        to_listing(&self.remote, self.remote_problems, &self.remote_hidden)
    }

    fn plan(&self) -> Plan {
        plan(&self.local(), &self.remote(), &self.records, &self.policy)
    }
}

type PathSpec = (RelPath, Option<Entry>, Option<Entry>, RecordSpec);

fn scenario() -> impl Strategy<Value = Scenario> {
    let spec = (
        rel_path(),
        prop::option::of(entry()),
        prop::option::of(entry()),
        record_spec(),
    );
    let hidden = prop_oneof![1 => Just(Vec::new()), 1 => prop::collection::vec(rel_path(), 1..4)];
    (
        prop::collection::vec(spec, 0..14),
        problem_count(),
        problem_count(),
        policy(),
        (hidden.clone(), hidden),
    )
        .prop_map(
            |(specs, local_problems, remote_problems, policy, (local_hidden, remote_hidden))| {
                let mut s = build_scenario(&specs, local_problems, remote_problems, policy);
                s.local_hidden = hidden_dirs(&s.local, &local_hidden);
                s.remote_hidden = hidden_dirs(&s.remote, &remote_hidden);
                s
            },
        )
}

fn build_scenario(
    specs: &[PathSpec],
    local_problems: usize,
    remote_problems: usize,
    policy: Policy,
) -> Scenario {
    let wishes = |pick: fn(&PathSpec) -> &Option<Entry>| -> Vec<(RelPath, Entry)> {
        specs
            .iter()
            .filter_map(|s| pick(s).clone().map(|e| (s.0.clone(), e)))
            .collect()
    };
    let local = build_tree(&wishes(|s| &s.1));
    let remote = build_tree(&wishes(|s| &s.2));
    let local_map: BTreeMap<_, _> = local.iter().cloned().collect();
    let remote_map: BTreeMap<_, _> = remote.iter().cloned().collect();
    let mut records = Records::new();
    for (path, _, _, spec) in specs {
        let record = match spec {
            RecordSpec::Absent => None,
            RecordSpec::Random(record) => Some(record.clone()),
            RecordSpec::Matching => match (local_map.get(path), remote_map.get(path)) {
                (Some(l), Some(r)) if l.kind == EntryKind::File && r.kind == EntryKind::File => {
                    Some(matching_record(l, r))
                }
                _ => None,
            },
        };
        if let Some(record) = record {
            records.entry(path.clone()).or_insert(record);
        }
    }
    Scenario {
        local,
        remote,
        local_problems,
        remote_problems,
        local_hidden: BTreeSet::new(),
        remote_hidden: BTreeSet::new(),
        records,
        policy,
    }
}

/// One side as the disk holds it: what the walk lists, and the filtered-out entries it does
/// not (each as the directory it sits in).
struct Side<'a> {
    listing: &'a mut Listing,
    hidden: &'a BTreeSet<RelPath>,
}

impl Side<'_> {
    /// Whether anything (listed or hidden) is below `dir`.
    fn holds_anything_below(&self, dir: &RelPath) -> bool {
        let below = |p: &RelPath| p.ancestors().contains(dir) || p.parent() == *dir;
        self.listing.entries.keys().any(|p| p != dir && below(p))
            || self
                .hidden
                .iter()
                .any(|h| h == dir || below(&h.join(HIDDEN_NAME).expect("valid")))
    }

    /// Remove `path` as `unlink`/`rmdir` would: a directory only when empty; `fails` makes any
    /// removal of it fail. Returns whether it went.
    fn remove(&mut self, path: &RelPath, fails: &BTreeSet<RelPath>) -> bool {
        let is_dir = self
            .listing
            .get(path)
            .is_some_and(|e| e.kind == EntryKind::Dir);
        if fails.contains(path) || (is_dir && self.holds_anything_below(path)) {
            return false;
        }
        self.listing.entries.remove(path);
        true
    }
}

/// Simulate the executor: do what each action says to the listings and the records, as a real
/// run would see them listed afterwards. Deletes of paths in `fails` fail, and so does removing
/// a directory that is not empty on disk. Returns the actions that failed.
fn apply_failing(
    plan: &Plan,
    scenario: &Scenario,
    local: &mut Listing,
    remote: &mut Listing,
    records: &mut Records,
    fails: &BTreeSet<RelPath>,
) -> Vec<Action> {
    let server_time = Some(Mtime::from_secs(SERVER_TIME, Precision::Minute));
    let mut failed = Vec::new();
    for action in &plan.actions {
        let path = &action.path;
        match action.kind {
            ActionKind::MakeRemoteDir => remote.insert(path.clone(), Entry::dir()),
            ActionKind::MakeLocalDir => local.insert(path.clone(), Entry::dir()),
            ActionKind::Upload => {
                let source = local
                    .get(path)
                    .cloned()
                    .expect("an upload has a local file");
                remote.insert(path.clone(), Entry::file(source.size, server_time));
                records.insert(
                    path.clone(),
                    matching_record(&source, &Entry::file(source.size, server_time)),
                );
            }
            ActionKind::Download => {
                let source = remote
                    .get(path)
                    .cloned()
                    .expect("a download has a remote file");
                local.insert(path.clone(), Entry::file(source.size, source.mtime));
                records.insert(path.clone(), matching_record(&source, &source));
            }
            ActionKind::DeleteRemoteFile | ActionKind::RemoveRemoteDir => {
                let mut side = Side {
                    listing: remote,
                    hidden: &scenario.remote_hidden,
                };
                if !side.remove(path, fails) {
                    failed.push(action.clone());
                }
            }
            ActionKind::DeleteLocalFile | ActionKind::RemoveLocalDir => {
                let mut side = Side {
                    listing: local,
                    hidden: &scenario.local_hidden,
                };
                if !side.remove(path, fails) {
                    failed.push(action.clone());
                }
            }
            // Two-way only (not in these one-way scenarios).
            ActionKind::RenameLocalFile | ActionKind::RenameRemoteFile => {}
        }
    }
    // Records of what failed to go stay; the state module drops the rest.
    for path in &plan.forget {
        records.remove(path);
    }
    failed
}

fn apply(
    plan: &Plan,
    scenario: &Scenario,
    local: &mut Listing,
    remote: &mut Listing,
    records: &mut Records,
) {
    let failed = apply_failing(plan, scenario, local, remote, records, &BTreeSet::new());
    assert!(
        failed.is_empty(),
        "a planned removal failed on disk: {failed:?}"
    );
}

fn has_delete(plan: &Plan) -> bool {
    plan.actions.iter().any(|a| a.kind.is_delete())
}

proptest! {
    #[test]
    fn shuffled_input_gives_the_same_plan(
        (scenario, local, remote) in scenario().prop_flat_map(|s| {
            let local = Just(s.local.clone()).prop_shuffle();
            let remote = Just(s.remote.clone()).prop_shuffle();
            (Just(s), local, remote)
        })
    ) {
        let shuffled = plan(
            &to_listing(&local, scenario.local_problems, &scenario.local_hidden),
            &to_listing(&remote, scenario.remote_problems, &scenario.remote_hidden),
            &scenario.records,
            &scenario.policy,
        );
        prop_assert_eq!(shuffled, scenario.plan());
    }

    #[test]
    fn identical_sides_with_matching_records_give_no_actions(
        wishes in prop::collection::vec((rel_path(), entry()), 0..14),
        policy in policy(),
    ) {
        let tree = build_tree(&wishes);
        let records: Records = tree
            .iter()
            .filter(|(_, e)| e.kind == EntryKind::File)
            .map(|(p, e)| (p.clone(), matching_record(e, e)))
            .collect();
        let listing = to_listing(&tree, 0, &BTreeSet::new());
        let plan = plan(&listing, &listing, &records, &policy);
        prop_assert!(plan.is_empty(), "{:?}", plan.actions);
        prop_assert!(plan.conflicts.is_empty());
        prop_assert!(plan.forget.is_empty());
        prop_assert_eq!(plan.deletes_blocked, None);
    }

    #[test]
    fn forget_is_every_record_with_a_file_on_neither_side(scenario in scenario()) {
        let (local, remote) = (scenario.local(), scenario.remote());
        let is_file = |l: &Listing, p: &RelPath| l.get(p).is_some_and(|e| e.kind == EntryKind::File);
        let expected: Vec<RelPath> = scenario
            .records
            .keys()
            .filter(|p| !is_file(&local, p) && !is_file(&remote, p))
            .cloned()
            .collect();
        prop_assert_eq!(scenario.plan().forget, expected.clone());
        // The two-way planner walks the records the same way.
        let both = Policy { direction: Direction::Both, ..scenario.policy.clone() };
        prop_assert_eq!(plan(&local, &remote, &scenario.records, &both).forget, expected);
    }

    #[test]
    fn planning_again_after_applying_gives_no_actions(scenario in scenario()) {
        let (mut local, mut remote, mut records) =
            (scenario.local(), scenario.remote(), scenario.records.clone());
        let first = plan(&local, &remote, &records, &scenario.policy);
        // Entries the filter hides are on disk too: a removal that would fail on them panics.
        apply(&first, &scenario, &mut local, &mut remote, &mut records);
        let second = plan(&local, &remote, &records, &scenario.policy);
        // Deletes a guard withheld may come due once the sync is recorded (a percentage of
        // more known files); nothing else may.
        let due: Vec<&Action> = second
            .actions
            .iter()
            .filter(|a| !first.withheld.iter().any(|w| w.kind == a.kind && w.path == a.path))
            .collect();
        prop_assert!(due.is_empty(), "first: {:?}\nsecond: {:?}", first.actions, second.actions);
    }

    #[test]
    fn a_directory_holding_excluded_entries_is_never_planned_for_removal(scenario in scenario()) {
        let plan = scenario.plan();
        let hidden = match scenario.policy.direction {
            Direction::Push | Direction::Both => &scenario.remote_hidden,
            Direction::Pull => &scenario.local_hidden,
        };
        for action in plan.actions.iter().filter(|a| a.kind.is_delete()) {
            prop_assert!(
                !hidden.iter().any(|h| *h == action.path || h.ancestors().contains(&action.path)),
                "{:?} would remove a directory holding excluded entries ({:?})",
                action,
                hidden
            );
        }
    }

    #[test]
    fn failed_removals_are_only_tried_again(
        (scenario, fails) in scenario().prop_flat_map(|s| {
            let paths: Vec<RelPath> = s.local.iter().chain(s.remote.iter()).map(|(p, _)| p.clone()).collect();
            let fails = if paths.is_empty() {
                Just(BTreeSet::new()).boxed()
            } else {
                prop::collection::btree_set(prop::sample::select(paths), 0..4).boxed()
            };
            (Just(s), fails)
        })
    ) {
        let (mut local, mut remote, mut records) =
            (scenario.local(), scenario.remote(), scenario.records.clone());
        let first = plan(&local, &remote, &records, &scenario.policy);
        let failed = apply_failing(&first, &scenario, &mut local, &mut remote, &mut records, &fails);
        let second = plan(&local, &remote, &records, &scenario.policy);
        // The next run tries exactly the removals that failed (and the parents they kept
        // from going), and nothing else: no transfer, no new delete.
        let again: BTreeSet<&RelPath> = second.actions.iter().map(|a| &a.path).collect();
        for action in &second.actions {
            prop_assert!(action.kind.is_delete(), "{:?} after failed removals {:?}", action, failed);
            prop_assert!(
                first
                    .actions
                    .iter()
                    .chain(first.withheld.iter())
                    .any(|a| a.kind == action.kind && a.path == action.path),
                "{:?} was not in the first plan", action
            );
        }
        // A failed removal is planned again, unless the max_delete guard now withholds it:
        // a percentage counts the files known from state, which the first run may have
        // pruned (records of files gone from both sides), so the same delete can be over the
        // cap the second time. The guard then says so; it never deletes more.
        let withheld: BTreeSet<&RelPath> = second.withheld.iter().map(|a| &a.path).collect();
        for f in &failed {
            prop_assert!(
                again.contains(&f.path) || withheld.contains(&f.path),
                "{:?} failed and is neither tried again nor withheld", f
            );
        }
        // Once nothing fails, the run after that is a no-op.
        apply(&second, &scenario, &mut local, &mut remote, &mut records);
        let third = plan(&local, &remote, &records, &scenario.policy);
        prop_assert!(third.is_empty(), "{:?}", third.actions);
    }

    #[test]
    fn no_delete_after_an_incomplete_listing(scenario in scenario()) {
        prop_assume!(scenario.local_problems + scenario.remote_problems > 0);
        let plan = scenario.plan();
        prop_assert!(!has_delete(&plan), "{:?}", plan.actions);
        prop_assert_eq!(plan.deletes_blocked.is_some(), scenario.policy.delete);
    }

    #[test]
    fn never_more_file_deletes_than_max_delete_allows(scenario in scenario()) {
        let plan = scenario.plan();
        let deletes = plan
            .actions
            .iter()
            .filter(|a| matches!(a.kind, ActionKind::DeleteLocalFile | ActionKind::DeleteRemoteFile))
            .count() as u64;
        let dest_files = match scenario.policy.direction {
            Direction::Push | Direction::Both => scenario.remote().files().count(),
            Direction::Pull => scenario.local().files().count(),
        };
        let cap = match scenario.policy.max_delete {
            MaxDelete::Count(n) => n,
            MaxDelete::Percent(p) => {
                let base = if scenario.records.is_empty() { dest_files } else { scenario.records.len() };
                base as u64 * u64::from(p) / 100
            }
        };
        prop_assert!(deletes <= cap, "{} file deletes over a cap of {}", deletes, cap);
        if !plan.withheld.is_empty() {
            prop_assert!(plan.deletes_blocked.is_some());
            prop_assert!(!has_delete(&plan), "withheld means none at all");
        }
    }

    #[test]
    fn no_delete_when_the_policy_says_no(mut scenario in scenario()) {
        scenario.policy.delete = false;
        let plan = scenario.plan();
        prop_assert!(!has_delete(&plan), "{:?}", plan.actions);
        prop_assert_eq!(plan.deletes_blocked, None);
    }

    #[test]
    fn every_action_names_an_entry_of_the_right_side(scenario in scenario()) {
        let (local, remote) = (scenario.local(), scenario.remote());
        let (source, dest) = match scenario.policy.direction {
            Direction::Push | Direction::Both => (&local, &remote),
            Direction::Pull => (&remote, &local),
        };
        let route = Route::of(scenario.policy.direction);
        for action in &scenario.plan().actions {
            let (listing, kind) = match action.kind {
                k if k == route.make_dir => (source, EntryKind::Dir),
                k if k == route.transfer => (source, EntryKind::File),
                k if k == route.delete_file => (dest, EntryKind::File),
                k if k == route.remove_dir => (dest, EntryKind::Dir),
                other => return Err(TestCaseError::fail(format!("{other:?} in a {:?} plan", scenario.policy.direction))),
            };
            prop_assert_eq!(listing.get(&action.path).map(|e| e.kind), Some(kind), "{:?}", action);
        }
    }

    #[test]
    fn nothing_at_or_below_a_conflict_or_a_link_is_acted_on(scenario in scenario()) {
        let plan = scenario.plan();
        let untouchable: Vec<&RelPath> = plan
            .conflicts
            .iter()
            .map(|c| &c.path)
            .chain(
                plan.skipped
                    .iter()
                    .filter(|s| s.reason == Reason::SymlinkNotFollowed)
                    .map(|s| &s.path),
            )
            .collect();
        for action in &plan.actions {
            let mut around = action.path.ancestors();
            around.push(action.path.clone());
            prop_assert!(
                !around.iter().any(|p| untouchable.contains(&p)),
                "{:?} touches one of {:?}",
                action,
                untouchable
            );
        }
    }

    #[test]
    fn actions_come_in_the_documented_order(scenario in scenario()) {
        let plan = scenario.plan();
        let stage = |kind: ActionKind| match kind {
            ActionKind::MakeRemoteDir | ActionKind::MakeLocalDir => 0,
            ActionKind::RenameLocalFile | ActionKind::RenameRemoteFile => 1,
            ActionKind::Upload | ActionKind::Download => 2,
            ActionKind::DeleteRemoteFile | ActionKind::DeleteLocalFile => 3,
            ActionKind::RemoveRemoteDir | ActionKind::RemoveLocalDir => 4,
        };
        for pair in plan.actions.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let in_order = match stage(a.kind).cmp(&stage(b.kind)) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                // Removals go bottom-up; everything else by path, which puts parents first.
                std::cmp::Ordering::Equal if stage(a.kind) == 4 => a.path > b.path,
                std::cmp::Ordering::Equal => a.path < b.path,
            };
            prop_assert!(in_order, "{:?} before {:?}", a, b);
        }
    }

    #[test]
    fn every_plan_serializes_to_json(scenario in scenario()) {
        let plan = scenario.plan();
        let json = serde_json::to_value(&plan).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            json["actions"].as_array().map(Vec::len),
            Some(plan.actions.len())
        );
    }
}
