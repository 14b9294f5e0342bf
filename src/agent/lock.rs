//! One run of a job at a time, across processes: the agent and any `ferry sync` of the same
//! job take the same lock, a `flock` on `<state_dir>/locks/<job>.lock`.
//!
//! The holder writes who it is into the file (process id, command, since when), so that the
//! one refused can name it. The kernel releases the lock when the holder's file closes, also
//! when it is killed: a crash never leaves a job locked.
//!
//! What it does not do: queue. The agent turns a trigger that comes during a run into one
//! follow-up run itself; a `ferry sync` refuses, or waits with `--wait`.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FlockOperation, flock};

/// Why a job's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("job `{job}` is running in {holder}; not run now")]
    Held { job: String, holder: String },
    #[error("job `{job}`: cannot open its lock file {path}: {source}")]
    Io {
        job: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct JobLock {
    _file: File,
}

fn lock_path(state_dir: &Path, job: &str) -> PathBuf {
    state_dir.join("locks").join(format!("{job}.lock"))
}

fn open(state_dir: &Path, job: &str) -> Result<(File, PathBuf), LockError> {
    let path = lock_path(state_dir, job);
    let io = |source| LockError::Io {
        job: job.to_owned(),
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    Ok((file, path))
}

/// Take the lock of `job` now, or say who holds it. `who` describes this process
/// (`ferry run`, `ferry sync`).
pub fn try_lock(state_dir: &Path, job: &str, who: &str) -> Result<JobLock, LockError> {
    let (mut file, path) = open(state_dir, job)?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(LockError::Held {
            job: job.to_owned(),
            holder: if holder.is_empty() {
                "another process".to_owned()
            } else {
                holder.to_owned()
            },
        });
    }
    let note = format!(
        "process {} ({who}, since {})",
        std::process::id(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    );
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(note.as_bytes()))
        .and_then(|()| file.flush());
    if let Err(source) = written {
        return Err(LockError::Io {
            job: job.to_owned(),
            path,
            source,
        });
    }
    Ok(JobLock { _file: file })
}

/// Take the lock of `job`, waiting while another process holds it (checking every `poll`).
pub async fn lock(
    state_dir: &Path,
    job: &str,
    who: &str,
    poll: Duration,
) -> Result<JobLock, LockError> {
    let mut told = false;
    loop {
        match try_lock(state_dir, job, who) {
            Err(LockError::Held { holder, .. }) => {
                if !told {
                    tracing::info!(job, %holder, "waiting for the job's current run to end");
                    told = true;
                }
                tokio::time::sleep(poll).await;
            }
            other => return other,
        }
    }
}

/// Whether some process holds the lock of `job` right now (for `ferry status`).
pub fn holder(state_dir: &Path, job: &str) -> Option<String> {
    let path = lock_path(state_dir, job);
    let mut file = std::fs::File::open(&path).ok()?;
    if flock(&file, FlockOperation::NonBlockingLockShared).is_ok() {
        return None;
    }
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_refused_one_names_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let held = try_lock(dir.path(), "nightly", "ferry run").expect("first");
        let err = try_lock(dir.path(), "nightly", "ferry sync").expect_err("held");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "job `nightly` is running in process {} (ferry run, since ",
                std::process::id()
            )),
            "{text}"
        );
        assert!(holder(dir.path(), "nightly").is_some());
        // Other jobs are independent.
        try_lock(dir.path(), "other", "ferry sync").expect("another job");
        drop(held);
        assert!(holder(dir.path(), "nightly").is_none());
        try_lock(dir.path(), "nightly", "ferry sync").expect("free again");
    }

    #[tokio::test]
    async fn waiting_ends_when_the_holder_lets_go() {
        let dir = tempfile::tempdir().expect("tmp");
        let held = try_lock(dir.path(), "j", "ferry run").expect("first");
        let path = dir.path().to_path_buf();
        let waiter = tokio::spawn(async move {
            lock(&path, "j", "ferry sync", Duration::from_millis(10))
                .await
                .map(|_| ())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(held);
        waiter.await.expect("join").expect("got it");
    }
}
