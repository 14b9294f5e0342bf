//! Watch-folder push: the watcher, and the reconcile scan that backs it up.
//!
//! notify (with notify-debouncer-full, its timeout set to the job's `settle`) reports files
//! created, modified and moved into the tree once they have been quiet for `settle`. Each such
//! file, if it is a regular file the job's filter takes (which, for watch jobs, also leaves out
//! `*.tmp`, `*.part`, `*.partial`, `.~*`, `~$*`, `*.swp`), is written to the outbox in the state
//! database first, then the job's runner is asked for a run.
//!
//! The watcher is not trusted alone: it misses files created right after their directory, and
//! its queue can overflow. [`reconcile`] walks the tree and queues every file that differs from
//! what state recorded at its last verified upload (and has been quiet for `settle`); the agent
//! runs it at start-up, after an overflow or a new directory, and every `rescan`.
//!
//! What it does not do: upload (the runner does, restricted to the outbox), or trust a path
//! from an event further than the job's opened root (links are never followed).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::RecursiveMode;
use tokio::sync::mpsc;

use super::timer::{Trigger, Triggers};
use crate::config::{Job, Limits};
use crate::listing::EntryKind;
use crate::local_fs::{Kind, LocalRoot};
use crate::path::RelPath;
use crate::state::Store;
use crate::transport::local::LocalDir;

/// What the watcher thread hands to the agent.
#[derive(Debug)]
enum Seen {
    Path(PathBuf),
    /// Events were lost (an overflow) or a directory appeared: scan the tree.
    Rescan,
}

/// A running watcher; dropping it stops it.
pub struct Watcher {
    _debouncer: notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start watching `job`'s local tree: queue what changes, ask `triggers` for runs.
pub fn start(
    job: Arc<Job>,
    limits: Limits,
    store: Arc<Mutex<Store>>,
    triggers: Triggers,
) -> Result<Watcher, String> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    let mut debouncer = notify_debouncer_full::new_debouncer(
        job.settle,
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
    .map_err(|e| {
        format!(
            "job `{}`: cannot watch {}: {e}",
            job.name,
            job.local.display()
        )
    })?;
    debouncer
        .watch(&job.local, RecursiveMode::Recursive)
        .map_err(|e| {
            format!(
                "job `{}`: cannot watch {}: {e}",
                job.name,
                job.local.display()
            )
        })?;
    let task = tokio::spawn(async move {
        let root = match LocalRoot::open(&job.local) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(job = %job.name, error = %e, "cannot open the watched directory");
                return;
            }
        };
        while let Some(seen) = rx.recv().await {
            let queued = match seen {
                Seen::Rescan => reconcile(&job, &root, &limits, &store)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::error!(job = %job.name, error = %e, "reconcile scan failed");
                        0
                    }),
                Seen::Path(path) => match queue_path(&job, &root, &store, &path) {
                    Ok(Queued::File) => 1,
                    Ok(Queued::Nothing) => 0,
                    Ok(Queued::Directory) => {
                        // Files created right after their directory may have no event.
                        reconcile(&job, &root, &limits, &store).await.unwrap_or(0)
                    }
                    Err(e) => {
                        tracing::error!(job = %job.name, error = %e, "cannot queue a changed file");
                        0
                    }
                },
            };
            if queued > 0 {
                triggers.fire(Trigger::Watch);
            }
        }
    });
    Ok(Watcher {
        _debouncer: debouncer,
        task,
    })
}

enum Queued {
    File,
    Directory,
    Nothing,
}

/// Queue one path an event named, if it is a file the job takes.
fn queue_path(
    job: &Job,
    root: &LocalRoot,
    store: &Mutex<Store>,
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
            enqueue(job, store, &rel)?;
            Ok(Queued::File)
        }
        // Gone again, a link, excluded: nothing to send.
        _ => Ok(Queued::Nothing),
    }
}

fn enqueue(job: &Job, store: &Mutex<Store>, rel: &RelPath) -> Result<(), String> {
    let store = store
        .lock()
        .map_err(|_| "state store poisoned".to_owned())?;
    store.enqueue(&job.name, rel).map_err(|e| e.to_string())?;
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
/// its last verified upload) and has been quiet for `settle`. Returns how many were queued.
pub async fn reconcile(
    job: &Job,
    root: &LocalRoot,
    limits: &Limits,
    store: &Mutex<Store>,
) -> Result<usize, String> {
    let mut side = LocalDir::on(root.clone());
    let listing = crate::scan::walk(&mut side, &job.filter, limits)
        .await
        .map_err(|e| e.to_string())?;
    let records = store
        .lock()
        .map_err(|_| "state store poisoned".to_owned())?
        .records(&job.name)
        .map_err(|e| e.to_string())?;
    let quiet_before = quiet_threshold(job.settle);
    let mut queued = 0;
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
        let quiet = entry.mtime.is_none_or(|m| m.nanos <= quiet_before);
        if !same && quiet {
            enqueue(job, store, path)?;
            queued += 1;
        }
    }
    if queued > 0 {
        tracing::info!(job = %job.name, queued, "reconcile scan queued files the watcher had not");
    }
    Ok(queued)
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
