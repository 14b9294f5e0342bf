//! `ferry status`: per job, the last run (start, end, trigger, outcome, files, bytes, the
//! reason of a failure as recorded), the last success, whether it runs now (its lock is held),
//! the next scheduled run, and for watch jobs the outbox (how many files wait, since when).
//!
//! It reads the state database and the lock files only: it works while the agent runs, and
//! when an endpoint is down. A job that cannot run on this machine now (its local directory
//! is missing, its password file cannot be read: [`Config::unavailable`]) is shown with why.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::state::{RunRow, StateError, Store};

/// What `ferry status` says of one job.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub job: String,
    pub last_run: Option<RunRow>,
    pub last_success: Option<RunRow>,
    /// Who holds the job's lock now, when it runs.
    pub running: Option<String>,
    pub next_run: Option<String>,
    /// Watch jobs: files waiting in the outbox.
    pub outbox: Option<u64>,
    /// Watch jobs: how long the oldest waiting file has waited, in seconds.
    pub oldest_pending_secs: Option<i64>,
    /// Why the job cannot run on this machine now, one line per finding (as `ferry check`
    /// prints them); empty when it can.
    pub unavailable: Vec<String>,
}

/// The status of every job of `config`, at `now`.
pub fn collect(
    config: &Config,
    store: &Store,
    now: DateTime<Utc>,
) -> Result<Vec<JobStatus>, StateError> {
    let mut out = Vec::new();
    for job in config.jobs.values() {
        let pending = if job.watch {
            Some(store.pending(&job.name)?)
        } else {
            None
        };
        let next_run = job
            .schedule
            .as_deref()
            .and_then(|s| crate::config::parse_schedule(s).ok())
            .and_then(|c| crate::agent::schedule::next_fire(&c, job.timezone, now))
            .map(|t| t.to_rfc3339());
        out.push(JobStatus {
            job: job.name.clone(),
            last_run: store.last_run(&job.name)?,
            last_success: store.last_success(&job.name)?,
            running: crate::agent::lock::holder(&config.state_dir, &job.name),
            next_run,
            outbox: pending.as_ref().map(|p| p.len() as u64),
            oldest_pending_secs: pending
                .as_ref()
                .and_then(|p| p.iter().map(|(_, at)| *at).min())
                .map(|at| now.timestamp() - at),
            unavailable: config
                .unavailable(&job.name)
                .map(<[String]>::to_vec)
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

fn when(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| secs.to_string())
}

/// Print the status for people, one block per job.
pub fn print(statuses: &[JobStatus], out: &mut dyn Write) -> std::io::Result<()> {
    for s in statuses {
        match &s.last_run {
            Some(run) => {
                writeln!(
                    out,
                    "{}: last run {} ({}): {}, {} transferred ({}), {} failed",
                    s.job,
                    when(run.started_at),
                    run.trigger,
                    run.outcome.as_deref().unwrap_or("running"),
                    run.totals.transferred,
                    super::human_bytes(run.totals.bytes),
                    run.totals.failed
                )?;
                if let Some(message) = &run.message {
                    writeln!(out, "  reason: {message}")?;
                }
                if let Some(end) = run.finished_at {
                    writeln!(out, "  finished {}", when(end))?;
                }
            }
            None => writeln!(out, "{}: never run", s.job)?,
        }
        if let Some(ok) = &s.last_success {
            writeln!(out, "  last success {}", when(ok.started_at))?;
        }
        for finding in &s.unavailable {
            writeln!(out, "  cannot run here: {finding}")?;
        }
        if let Some(holder) = &s.running {
            writeln!(out, "  running now: {holder}")?;
        }
        if let Some(next) = &s.next_run {
            writeln!(out, "  next run {next}")?;
        }
        if let Some(n) = s.outbox {
            match s.oldest_pending_secs {
                Some(age) => writeln!(out, "  outbox: {n} pending, the oldest for {age}s")?,
                None => writeln!(out, "  outbox: empty")?,
            }
        }
    }
    Ok(())
}
