//! `on_success` / `on_failure`: a command run after a job run, without a shell.
//!
//! The command is an argv list, started directly (no shell, so nothing in a path is
//! interpreted). It gets the job name, the outcome, the run id and the path of a file listing
//! the transferred paths in environment variables (`FERRY_JOB`, `FERRY_OUTCOME`, `FERRY_RUN_ID`,
//! `FERRY_DIRECTION`, `FERRY_TRANSFERRED`, `FERRY_TRANSFERRED_COUNT`), and none of the
//! variables the job file names as `password_env`. Its exit code and output are logged; it is
//! killed after `hook_timeout`. A hook that fails does not change the run's outcome: it is
//! reported beside it.

use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;

use crate::config::Job;
use crate::path::RelPath;

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOutcome {
    /// `on_success` or `on_failure`.
    pub which: &'static str,
    /// `Ok` when it exited 0; else why not (its exit status, a timeout, a failure to start).
    pub result: Result<(), String>,
}

impl std::fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.result {
            Ok(()) => write!(f, "{} hook ok", self.which),
            Err(e) => write!(f, "{} hook failed: {e}", self.which),
        }
    }
}

/// What a hook is told about the run.
pub struct RunFacts<'a> {
    pub run_id: i64,
    /// `ok`, `partial` or `failed`.
    pub outcome: &'a str,
    pub transferred: &'a [RelPath],
    /// Environment variables that hold secrets (the job file's `password_env` names): removed
    /// from the hook's environment.
    pub secret_vars: &'a [String],
}

/// Run the job's hook for this outcome (`on_success` after `ok`, `on_failure` otherwise), if
/// it has one; `state_dir` holds the file of transferred paths while the hook runs.
pub async fn run_after(job: &Job, state_dir: &Path, facts: &RunFacts<'_>) -> Option<HookOutcome> {
    let (which, argv) = if facts.outcome == "ok" {
        ("on_success", job.hooks.on_success.as_ref()?)
    } else {
        ("on_failure", job.hooks.on_failure.as_ref()?)
    };
    let result = run(job, which, argv, state_dir, facts).await;
    match &result {
        Ok(()) => tracing::info!(job = %job.name, run_id = facts.run_id, hook = which, "hook ok"),
        Err(e) => {
            tracing::warn!(job = %job.name, run_id = facts.run_id, hook = which, error = %e, "hook failed")
        }
    }
    Some(HookOutcome { which, result })
}

async fn run(
    job: &Job,
    which: &str,
    argv: &[String],
    state_dir: &Path,
    facts: &RunFacts<'_>,
) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("no command".to_owned());
    };
    // The transferred paths, one per line, in a file only ferry's user can read (tempfile
    // creates it 0600), removed when the hook is done.
    let dir = state_dir.join("hooks");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut list = tempfile::Builder::new()
        .prefix(&format!("{}-{}-", job.name, facts.run_id))
        .suffix(".txt")
        .tempfile_in(&dir)
        .map_err(|e| format!("cannot create the list of transferred files: {e}"))?;
    for path in facts.transferred {
        writeln!(list, "{path}").map_err(|e| format!("cannot write the list: {e}"))?;
    }
    list.flush()
        .map_err(|e| format!("cannot write the list: {e}"))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("FERRY_JOB", &job.name)
        .env("FERRY_OUTCOME", facts.outcome)
        .env("FERRY_RUN_ID", facts.run_id.to_string())
        .env("FERRY_DIRECTION", job.direction.as_str())
        .env("FERRY_TRANSFERRED", list.path())
        .env(
            "FERRY_TRANSFERRED_COUNT",
            facts.transferred.len().to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in facts.secret_vars {
        command.env_remove(var);
    }
    tracing::info!(job = %job.name, run_id = facts.run_id, hook = which,
        command = %crate::text::clean(&argv.join(" "), 400), "running hook");
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", crate::text::clean(program, 200)))?;
    let timeout = job.hooks.timeout;
    // Dropping the unfinished wait kills the child (kill_on_drop).
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "did not finish within {} (killed)",
                humantime::format_duration(timeout)
            )
        })?
        .map_err(|e| format!("cannot wait for it: {e}"))?;
    for (stream, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim();
        if !text.is_empty() {
            tracing::info!(job = %job.name, run_id = facts.run_id, hook = which, stream,
                output = %crate::text::clean(text, 2000), "hook output");
        }
    }
    if output.status.success() {
        Ok(())
    } else {
        Err(match output.status.code() {
            Some(code) => format!("exited with code {code}"),
            None => format!("ended by {}", output.status),
        })
    }
}
