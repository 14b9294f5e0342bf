//! `ready: stable` for pull jobs: a remote file is downloaded only once it has shown the same
//! size and time for the job's `stable_for`, so a file a partner is still writing never lands
//! under its final name half-written. Downloads of files not stable yet are taken out of the
//! plan and listed as waiting; the run counts them as waiting, not failed, and a later run
//! takes them. When each file was first seen as it is comes from the state database
//! (`sightings`); the decisions here are pure.

use std::time::Duration;

use super::{Action, ActionKind, Plan};
use crate::listing::{EntryKind, Listing};
use crate::path::RelPath;

/// Whether a file seen now is ready, or how much longer it must stay as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stability {
    Stable,
    Waiting(Duration),
}

/// A file seen unchanged since `first_seen_ms` is stable at `now_ms` after `stable_for`
/// (both Unix milliseconds). A clock that went back does not make a file stable.
pub fn stability(first_seen_ms: i64, now_ms: i64, stable_for: Duration) -> Stability {
    let waited = Duration::from_millis(u64::try_from(now_ms - first_seen_ms).unwrap_or(0));
    if waited >= stable_for {
        Stability::Stable
    } else {
        Stability::Waiting(stable_for - waited)
    }
}

/// A download held back: the file may still be written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Waiting {
    #[serde(serialize_with = "super::serialize_path")]
    pub path: RelPath,
    pub size: u64,
    /// How much longer the file must stay as it is, at the time of the plan.
    #[serde(rename = "remaining_secs", serialize_with = "secs")]
    pub remaining: Duration,
    /// `ready: { marker: NAME }`: the marker its directory does not have yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 10.0).ceil() / 10.0)
}

/// The paths of the plan's downloads, in plan order: what [`hold`] expects a stability for.
pub fn downloads(plan: &Plan) -> impl Iterator<Item = &RelPath> {
    plan.actions
        .iter()
        .filter(|a| a.kind == ActionKind::Download)
        .map(|a| &a.path)
}

/// What becomes of one download of the plan.
enum Hold {
    Take,
    /// Not finished on the server: into `plan.waiting`, as long as this says, or for this.
    Wait(Duration, Option<String>),
    /// Out of the plan, handed back to the caller.
    Defer,
}

/// Decide for each download of `plan`, in plan order; the others stay as they are. Returns the
/// deferred downloads.
fn hold_downloads(plan: &mut Plan, mut decide: impl FnMut(&Action) -> Hold) -> Vec<Action> {
    let (mut waiting, mut deferred) = (Vec::new(), Vec::new());
    plan.actions.retain(|a| {
        if a.kind != ActionKind::Download {
            return true;
        }
        match decide(a) {
            Hold::Take => true,
            Hold::Wait(remaining, marker) => {
                waiting.push(Waiting {
                    path: a.path.clone(),
                    size: a.size,
                    remaining,
                    marker,
                });
                false
            }
            Hold::Defer => {
                deferred.push(a.clone());
                false
            }
        }
    });
    plan.waiting.extend(waiting);
    deferred
}

/// Whether `dir/name` is a file in `remote`.
fn listed_file(remote: &Listing, dir: &RelPath, name: &str) -> bool {
    dir.join(name)
        .ok()
        .and_then(|p| remote.get(&p))
        .is_some_and(|e| e.kind == EntryKind::File)
}

/// Take the downloads whose stability says wait out of `plan` (`stabilities` in the order of
/// [`downloads`]) into `plan.waiting`. Nothing else changes.
pub fn hold(plan: &mut Plan, stabilities: &[Stability]) {
    let mut next = stabilities.iter();
    hold_downloads(plan, |_| match next.next() {
        Some(Stability::Waiting(remaining)) => Hold::Wait(*remaining, None),
        Some(Stability::Stable) | None => Hold::Take,
    });
}

/// `ready: { marker: NAME }`: a directory's files are taken only once `NAME` is listed in it
/// (the others wait, into `plan.waiting`), and the markers themselves are taken out of the plan
/// and returned, to be downloaded once the rest of their directory is in place.
pub fn hold_for_marker(plan: &mut Plan, remote: &Listing, marker: &str) -> Vec<Action> {
    hold_downloads(plan, |a| {
        if a.path.file_name() == marker {
            Hold::Defer
        } else if listed_file(remote, &a.path.parent(), marker) {
            Hold::Take
        } else {
            Hold::Wait(Duration::ZERO, Some(marker.to_owned()))
        }
    })
}

/// `ready: sidecar`: a file is taken only once the partner has put its `x.sha256` or `x.md5`
/// beside it (the download is then checked against it); checksum files themselves are taken
/// as they come. The others wait, into `plan.waiting`.
pub fn hold_for_sidecar(plan: &mut Plan, remote: &Listing) {
    hold_downloads(plan, |a| {
        let name = a.path.file_name();
        let dir = a.path.parent();
        if crate::execute::sidecar::is_checksum_file(name)
            || listed_file(remote, &dir, &format!("{name}.sha256"))
            || listed_file(remote, &dir, &format!("{name}.md5"))
        {
            Hold::Take
        } else {
            Hold::Wait(
                Duration::ZERO,
                Some(format!("{name}.sha256` or `{name}.md5")),
            )
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, Reason, Side};

    fn action(kind: ActionKind, path: &str) -> Action {
        Action {
            kind,
            path: RelPath::parse(path).expect("path"),
            size: 7,
            reason: Reason::MissingOn(Side::Local),
            to: None,
        }
    }

    #[test]
    fn stability_is_the_time_seen_unchanged_against_stable_for() {
        let s = Duration::from_secs(30);
        assert_eq!(stability(0, 30_000, s), Stability::Stable);
        assert_eq!(stability(0, 40_000, s), Stability::Stable);
        assert_eq!(
            stability(0, 29_000, s),
            Stability::Waiting(Duration::from_secs(1))
        );
        assert_eq!(stability(10_000, 10_000, s), Stability::Waiting(s));
        assert_eq!(stability(50_000, 10_000, s), Stability::Waiting(s));
    }

    #[test]
    fn waiting_downloads_leave_the_plan_and_nothing_else_does() {
        let mut plan = Plan {
            actions: vec![
                action(ActionKind::MakeLocalDir, "d"),
                action(ActionKind::Download, "d/a.csv"),
                action(ActionKind::Download, "d/b.csv"),
                action(ActionKind::Download, "c.csv"),
                action(ActionKind::DeleteLocalFile, "old.csv"),
            ],
            ..Plan::default()
        };
        let wait = Stability::Waiting(Duration::from_secs(3));
        let order: Vec<String> = downloads(&plan).map(|p| p.as_str().to_owned()).collect();
        assert_eq!(order, ["d/a.csv", "d/b.csv", "c.csv"]);
        hold(&mut plan, &[wait, Stability::Stable, wait]);
        let left: Vec<&str> = plan.actions.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(left, ["d", "d/b.csv", "old.csv"]);
        let waiting: Vec<&str> = plan.waiting.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(waiting, ["d/a.csv", "c.csv"]);
    }
}
