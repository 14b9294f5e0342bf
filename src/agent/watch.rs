//! Watch-folder push: the watcher, the settle check, and the reconcile scan that backs them up.
//!
//! notify (through notify-debouncer-full, which folds a burst of events on one path into one)
//! reports files created, modified and moved into the tree. Each such file, if it is a regular
//! file the job's filter takes (which, for watch jobs, also leaves out `*.tmp`, `*.part`,
//! `*.partial`, `.~*`, `~$*`, `*.swp`), is written to the outbox in the state database at once,
//! before anything else, and then waits in [`Settling`] until it is finished: the same file, size
//! and modification time at two looks, and untouched for `settle` (by its mtime, or, when that is
//! in the future, by our own clock). Only then is it *ready*, and the job's runner is asked for a
//! run, which sends the ready files of the outbox and nothing else.
//!
//! The watcher is not trusted alone: it misses files created right after their directory, and
//! its queue can overflow. [`reconcile`] walks the tree and hands every file that differs from
//! what state recorded at its last verified upload to the settle check too; it runs at start-up,
//! after an overflow or a new directory, and every `rescan`. At start-up, whatever the outbox
//! still holds from before (a crash, a stop, a server that was down) goes through the settle
//! check again, so nothing queued is ever dropped.
//!
//! What it does not do: upload (the runner does, restricted to the ready files), or trust a path
//! from an event further than the job's opened root (links are never followed).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::RecursiveMode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::timer::{Trigger, Triggers};
use crate::config::{Job, Limits};
use crate::listing::EntryKind;
use crate::local_fs::{Kind, LocalRoot, Meta};
use crate::path::RelPath;
use crate::state::SharedStore;
use crate::transport::local::LocalDir;

/// What the watcher thread hands to the agent.
#[derive(Debug)]
enum Seen {
    Path(PathBuf),
    /// Events were lost (an overflow) or could not be read: scan the tree.
    Rescan,
}

/// One look at a waiting file, and since when it has looked like that.
#[derive(Debug, Clone)]
struct Look {
    meta: Meta,
    since: Instant,
}

#[derive(Debug, Default)]
struct SettleState {
    /// Queued files not known to be finished yet; `None` before the first look.
    waiting: HashMap<RelPath, Option<Look>>,
    /// Queued files that are finished: what the next run sends.
    ready: BTreeSet<RelPath>,
}

/// The files of one watch job between the outbox and a run: waiting to settle, or ready.
#[derive(Debug, Default)]
pub struct Settling(Mutex<SettleState>);

impl Settling {
    fn state(&self) -> std::sync::MutexGuard<'_, SettleState> {
        // The state is two plain collections; a panic elsewhere cannot leave them torn.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A file was (re)queued: it waits to settle again, even when it was ready.
    pub fn wait(&self, path: RelPath) {
        let mut state = self.state();
        state.ready.remove(&path);
        state.waiting.insert(path, None);
    }

    /// The finished files the next run sends.
    pub fn ready(&self) -> BTreeSet<RelPath> {
        self.state().ready.clone()
    }

    /// A run settled these (verified on the server, or nothing to send).
    pub fn done<'a>(&self, paths: impl IntoIterator<Item = &'a RelPath>) {
        let mut state = self.state();
        for path in paths {
            state.ready.remove(path);
        }
    }

    /// How many files wait to settle.
    pub fn waiting(&self) -> usize {
        self.state().waiting.len()
    }

    /// Look at every waiting file; those finished become ready. Returns how many did.
    pub fn check(&self, root: &LocalRoot, settle: Duration) -> usize {
        let quiet_before = quiet_threshold(settle);
        let mut state = self.state();
        let mut finished = Vec::new();
        for (path, last) in state.waiting.iter_mut() {
            match root.stat(path) {
                Ok(Some(meta)) if meta.kind == Kind::File => {
                    let same = last
                        .as_ref()
                        .filter(|l| l.meta.same_content_as(&meta))
                        .map(|l| l.since);
                    match same {
                        Some(since)
                            if meta.mtime.is_none_or(|m| m.nanos <= quiet_before)
                                || since.elapsed() >= settle =>
                        {
                            finished.push(path.clone())
                        }
                        Some(_) => {}
                        None => {
                            *last = Some(Look {
                                meta,
                                since: Instant::now(),
                            })
                        }
                    }
                }
                // Gone, no longer a file, or refused (a link): the run finds nothing to send
                // and takes it out of the outbox.
                _ => finished.push(path.clone()),
            }
        }
        for path in &finished {
            state.waiting.remove(path);
            state.ready.insert(path.clone());
        }
        finished.len()
    }
}

/// How often waiting files are looked at: an eighth of `settle`, within 50..250 ms (a look is
/// one `fstatat` per waiting file).
fn check_every(settle: Duration) -> Duration {
    (settle / 8).clamp(Duration::from_millis(50), Duration::from_millis(250))
}

/// A running watch job's watcher, settle check and rescans; dropping it stops them.
pub struct Watcher {
    _debouncer: Option<
        notify_debouncer_full::Debouncer<
            notify::RecommendedWatcher,
            notify_debouncer_full::RecommendedCache,
        >,
    >,
    task: tokio::task::JoinHandle<()>,
    settling: Arc<Settling>,
}

impl Watcher {
    /// The job's files between the outbox and a run.
    pub fn settling(&self) -> Arc<Settling> {
        self.settling.clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long notify-debouncer-full holds an event to fold a burst: the settle check does the
/// real waiting.
const DEBOUNCE: Duration = Duration::from_millis(100);

fn start_notify(
    job: &Job,
    tx: mpsc::UnboundedSender<Seen>,
) -> Result<
    notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
    String,
> {
    let mut debouncer = notify_debouncer_full::new_debouncer(
        DEBOUNCE.min(job.settle),
        None,
        move |result: notify_debouncer_full::DebounceEventResult| match result {
            Ok(events) => {
                for event in events {
                    if event.need_rescan() {
                        let _ = tx.send(Seen::Rescan);
                    }
                    use notify::EventKind as E;
                    if matches!(event.kind, E::Create(_) | E::Modify(_)) {
                        for path in &event.paths {
                            let _ = tx.send(Seen::Path(path.clone()));
                        }
                    }
                }
            }
            Err(_) => {
                let _ = tx.send(Seen::Rescan);
            }
        },
    )
    .map_err(|e| format!("cannot watch {}: {e}", job.local.display()))?;
    debouncer
        .watch(&job.local, RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", job.local.display()))?;
    Ok(debouncer)
}

/// Start watching `job`'s local tree: queue what changes, let it settle, ask `triggers` for a
/// run when files are ready; rescan at once and every `rescan`, until `stop`. When notify
/// cannot watch the tree (no inotify left, say), that is logged and the rescans go on alone.
pub fn start(
    job: Arc<Job>,
    limits: Limits,
    store: SharedStore,
    triggers: Triggers,
    stop: CancellationToken,
) -> Watcher {
    let (tx, rx) = mpsc::unbounded_channel::<Seen>();
    let debouncer = match start_notify(&job, tx) {
        Ok(d) => {
            tracing::info!(job = %job.name, local = %job.local.display(), settle = ?job.settle, "watching");
            Some(d)
        }
        Err(e) => {
            tracing::error!(job = %job.name, error = %e, rescan = ?job.rescan,
                "cannot watch; only the rescans find new files");
            None
        }
    };
    let settling = Arc::new(Settling::default());
    let task = tokio::spawn(watch_loop(
        job,
        limits,
        store,
        triggers,
        stop,
        settling.clone(),
        rx,
    ));
    Watcher {
        _debouncer: debouncer,
        task,
        settling,
    }
}

/// The watch job's loop; `rx` ends at once when notify could not start (its sender is gone).
async fn watch_loop(
    job: Arc<Job>,
    limits: Limits,
    store: SharedStore,
    triggers: Triggers,
    stop: CancellationToken,
    settling: Arc<Settling>,
    mut rx: mpsc::UnboundedReceiver<Seen>,
) {
    let mut events = true;
    let root = loop {
        match LocalRoot::open(&job.local) {
            Ok(r) => break r,
            Err(e) => {
                tracing::error!(job = %job.name, error = %e, rescan = ?job.rescan,
                    "cannot open the watched directory; trying again at the next rescan");
                tokio::select! {
                    _ = tokio::time::sleep(job.rescan) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    // What the outbox holds from before goes through the settle check again.
    let name = job.name.clone();
    match store.call(move |s| s.pending(&name)).await {
        Ok(pending) => {
            if !pending.is_empty() {
                tracing::info!(job = %job.name, files = pending.len(), "the outbox holds files from before");
            }
            for (path, _) in pending {
                settling.wait(path);
            }
        }
        Err(e) => tracing::error!(job = %job.name, error = %e, "cannot read the outbox"),
    }
    let mut check = tokio::time::interval(check_every(job.settle));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_rescan = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            seen = rx.recv(), if events => match seen {
                Some(Seen::Rescan) => next_rescan = tokio::time::Instant::now(),
                Some(Seen::Path(path)) => match queue_path(&job, &root, &store, &path).await {
                    Ok(Queued::File(rel)) => settling.wait(rel),
                    Ok(Queued::Nothing) => {}
                    // Files created right after their directory may have no event.
                    Ok(Queued::Directory) => next_rescan = tokio::time::Instant::now(),
                    Err(e) => {
                        tracing::error!(job = %job.name, error = %e, "cannot queue a changed file");
                    }
                },
                None => events = false,
            },
            _ = tokio::time::sleep_until(next_rescan) => {
                match reconcile(&job, &root, &limits, &store).await {
                    Ok(found) => {
                        for path in found {
                            settling.wait(path);
                        }
                    }
                    Err(e) => tracing::error!(job = %job.name, error = %e, "reconcile scan failed"),
                }
                next_rescan = tokio::time::Instant::now() + job.rescan;
            }
            _ = check.tick() => {
                if settling.check(&root, job.settle) > 0 {
                    triggers.fire(Trigger::Watch);
                }
            }
        }
    }
}

enum Queued {
    File(RelPath),
    Directory,
    Nothing,
}

/// Queue one path an event named, if it is a file the job takes.
async fn queue_path(
    job: &Job,
    root: &LocalRoot,
    store: &SharedStore,
    path: &Path,
) -> Result<Queued, String> {
    let Some(rel) = relative(&job.local, path) else {
        return Ok(Queued::Nothing);
    };
    if crate::execute::is_temp_name(rel.file_name()) {
        return Ok(Queued::Nothing);
    }
    match root.stat(&rel) {
        Ok(Some(meta)) if meta.kind == Kind::Dir => Ok(Queued::Directory),
        Ok(Some(meta)) if meta.kind == Kind::File && job.filter.allows_file(rel.as_str()) => {
            enqueue(job, store, &rel).await?;
            Ok(Queued::File(rel))
        }
        // Gone again, a link, excluded: nothing to send.
        _ => Ok(Queued::Nothing),
    }
}

async fn enqueue(job: &Job, store: &SharedStore, rel: &RelPath) -> Result<(), String> {
    let (name, path) = (job.name.clone(), rel.clone());
    store
        .call(move |s| s.enqueue(&name, &path))
        .await
        .map_err(|e| e.to_string())?;
    tracing::debug!(job = %job.name, path = %rel, "queued");
    Ok(())
}

/// `path` (absolute, from an event) as a path under the job's root, when it is one.
fn relative(root: &Path, path: &Path) -> Option<RelPath> {
    let rest = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rest.components().map(|c| c.as_os_str().to_str()).collect();
    RelPath::parse(&parts?.join("/"))
        .ok()
        .filter(|p| !p.is_root())
}

/// Walk the job's tree and queue every file that differs from its record (new, or changed since
/// its last verified upload). Returns the files queued, for the settle check.
pub async fn reconcile(
    job: &Job,
    root: &LocalRoot,
    limits: &Limits,
    store: &SharedStore,
) -> Result<Vec<RelPath>, String> {
    let mut side = LocalDir::on(root.clone());
    let listing = crate::scan::walk(&mut side, &job.filter, limits)
        .await
        .map_err(|e| e.to_string())?;
    let name = job.name.clone();
    let (records, pending) = store
        .call(move |s| {
            let pending: BTreeSet<RelPath> =
                s.pending(&name)?.into_iter().map(|(p, _)| p).collect();
            Ok((s.records(&name)?, pending))
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    for (path, entry) in listing.files() {
        if entry.kind != EntryKind::File {
            continue;
        }
        let same = records.get(path).is_some_and(|r| {
            r.local_size == entry.size
                && match (r.local_mtime, entry.mtime) {
                    (Some(a), Some(b)) => a.matches(&b),
                    _ => true,
                }
        });
        if !same {
            if !pending.contains(path) {
                enqueue(job, store, path).await?;
            }
            found.push(path.clone());
        }
    }
    let new = found.iter().filter(|p| !pending.contains(*p)).count();
    if new > 0 {
        tracing::info!(job = %job.name, queued = new, "reconcile scan queued files the watcher had not");
    }
    Ok(found)
}

/// Nanoseconds since the epoch before which a file has been quiet for `settle`.
fn quiet_threshold(settle: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    now - settle.as_nanos() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AfterUpload, Direction, Filter, MaxDelete, RetryPolicy, Verify};
    use crate::state::Store;

    fn watch_job(local: &Path, rescan: Duration) -> Job {
        Job {
            name: "send".to_owned(),
            endpoint: "e".to_owned(),
            direction: Direction::Push,
            local: local.to_path_buf(),
            remote: "/in".to_owned(),
            schedule: None,
            timezone: None,
            filter: Filter::all(),
            delete: false,
            max_delete: MaxDelete::default(),
            verify: Verify::Size,
            retry: RetryPolicy::default(),
            watch: true,
            settle: Duration::from_secs(2),
            after_upload: AfterUpload::Keep,
            checksum_sidecar: false,
            catch_up: false,
            jitter: None,
            rescan,
            ready: crate::config::Ready::Immediate,
            hooks: crate::config::Hooks::default(),
            remote_after: crate::config::RemoteAfter::Keep,
            publish: None,
            backup_dir: None,
            conflict: crate::config::ConflictPolicy::KeepBoth,
            direct_upload: false,
        }
    }

    /// Wait (for real: the store works on blocking threads) until the outbox holds `want`.
    async fn outbox_holds(store: &SharedStore, want: &[&str]) -> bool {
        for _ in 0..200 {
            let pending = store.call(|s| s.pending("send")).await.unwrap_or_default();
            let mut names: Vec<String> =
                pending.iter().map(|(p, _)| p.as_str().to_owned()).collect();
            names.sort();
            if names == want {
                return true;
            }
            let _ =
                tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(10))).await;
        }
        false
    }

    /// The watcher is not trusted alone: files it never reported are queued by the start-up
    /// scan, by the periodic rescan (and not before it is due), and at once after an overflow.
    #[tokio::test(start_paused = true)]
    async fn files_no_event_named_are_queued_at_start_every_rescan_and_after_an_overflow() {
        let dir = tempfile::tempdir().expect("test setup");
        let (local, state) = (dir.path().join("outbox"), dir.path().join("state"));
        std::fs::create_dir_all(&local).expect("test setup");
        std::fs::write(local.join("a.csv"), b"before the start").expect("test setup");
        let store = SharedStore::new(Store::open(&state).expect("test setup"));
        let rescan = Duration::from_secs(600);
        let (triggers, _runs) = Triggers::channel();
        let (events, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let settling = Arc::new(Settling::default());
        let task = tokio::spawn(watch_loop(
            Arc::new(watch_job(&local, rescan)),
            Limits::default(),
            store.clone(),
            triggers,
            stop.clone(),
            settling,
            rx,
        ));
        assert!(outbox_holds(&store, &["a.csv"]).await, "the start-up scan");
        // No event for b.csv: it waits for the periodic rescan.
        std::fs::write(local.join("b.csv"), b"missed").expect("test setup");
        tokio::time::sleep(rescan / 2).await;
        let pending = store.call(|s| s.pending("send")).await.unwrap_or_default();
        assert_eq!(pending.len(), 1, "no rescan before it is due: {pending:?}");
        tokio::time::sleep(rescan / 2 + Duration::from_secs(1)).await;
        assert!(
            outbox_holds(&store, &["a.csv", "b.csv"]).await,
            "the periodic rescan"
        );
        // Events were lost (an overflow): the tree is scanned at once, not at the next rescan.
        std::fs::write(local.join("c.csv"), b"lost").expect("test setup");
        let sent = tokio::time::Instant::now();
        let _ = events.send(Seen::Rescan);
        assert!(
            outbox_holds(&store, &["a.csv", "b.csv", "c.csv"]).await,
            "the rescan after an overflow"
        );
        assert!(
            sent.elapsed() < rescan / 2,
            "at once, not at the next periodic rescan: {:?}",
            sent.elapsed()
        );
        stop.cancel();
        let _ = task.await;
    }

    #[test]
    fn event_paths_become_paths_under_the_root() {
        let root = Path::new("/srv/outbox");
        assert_eq!(
            relative(root, Path::new("/srv/outbox/a/b.csv")).map(|p| p.as_str().to_owned()),
            Some("a/b.csv".to_owned())
        );
        assert_eq!(relative(root, Path::new("/srv/outbox")), None);
        assert_eq!(relative(root, Path::new("/etc/passwd")), None);
    }
}
