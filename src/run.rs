//! One job run end to end: connect, list both sides, plan, execute, record.
//!
//! `ferry sync`, `ferry plan` and `ferry demo` all come through here, so the demo exercises
//! exactly the code a scheduled run uses. The remote listing and the local scan must both
//! succeed at their roots; auth, TLS and connection failures stop the run (exit code 3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{AfterUpload, Config, Direction, Job, Limits, Ready, TlsMode};
use crate::execute::{self, Context, Execution, Listings, Observer};
use crate::listing::Listing;
use crate::local_fs::LocalRoot;
use crate::plan::{self, Plan, Policy, Records};
use crate::scan;
use crate::state::{RunTotals, Seen, SharedStore, StateError};
use crate::transport::ftps::FtpsConnector;
use crate::transport::pool::{Pool, PoolSettings, Pools};
use crate::transport::{ErrorKind, TransportError};

/// Why a job could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job `{job}`: {message}")]
    Setup { job: String, message: String },
    #[error("job `{job}`: {error}")]
    Transport { job: String, error: TransportError },
    #[error("job `{job}`: {error}")]
    State { job: String, error: StateError },
}

impl JobError {
    /// The process exit code this error maps to (DESIGN.md: 2 config, 3 connect/auth/TLS).
    pub fn exit_code(&self) -> i32 {
        match self {
            JobError::Setup { .. } => 2,
            JobError::Transport { error, .. } if error.kind == ErrorKind::Cancelled => 1,
            // A refusal about a path (a missing remote root, no permission): not a connection
            // problem.
            JobError::Transport { error, .. }
                if matches!(
                    error.kind,
                    ErrorKind::Permanent | ErrorKind::Local | ErrorKind::State | ErrorKind::Changed
                ) =>
            {
                1
            }
            JobError::Transport { .. } => 3,
            JobError::State { .. } => 1,
        }
    }
}

/// The pool of the job's endpoint, from `pools` (made, with the endpoint's secret read and
/// its trust anchors loaded, the first time any job of the process asks for it).
pub fn pool_for(config: &Config, pools: &Pools, job: &Job) -> Result<Pool, JobError> {
    let setup = |message: String| JobError::Setup {
        job: job.name.clone(),
        message,
    };
    let endpoint = config
        .endpoints
        .get(&job.endpoint)
        .ok_or_else(|| setup(format!("unknown endpoint `{}`", job.endpoint)))?;
    pools.get_or_try_insert(&endpoint.name, || {
        let password = crate::config::read_password(endpoint).map_err(setup)?;
        if endpoint.tls == TlsMode::None {
            tracing::warn!(job = %job.name, endpoint = %endpoint.name,
                "endpoint uses cleartext FTP (tls: none): credentials and data are not encrypted");
        }
        let connector = FtpsConnector::new(endpoint.clone(), "/", password).map_err(|error| {
            JobError::Transport {
                job: job.name.clone(),
                error,
            }
        })?;
        Ok(Pool::new(
            &endpoint.name,
            Arc::new(connector),
            endpoint.max_connections,
            PoolSettings::default(),
        ))
    })
}

/// Both listings, the plan made from them, and the local root they were read through (the
/// executor works on that same open directory).
#[derive(Debug)]
pub struct Planned {
    pub local_root: LocalRoot,
    pub local: Arc<Listing>,
    pub remote: Arc<Listing>,
    pub plan: Plan,
}

/// Whether listing a push job's missing remote root may create it (`sync`), or must leave the
/// server as it is and plan against an empty root (`plan`, which changes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingRoot {
    Create,
    PlanAsEmpty,
}

/// Both listings and the local root they were read through, before a plan is made from them.
#[derive(Debug)]
pub struct Listed {
    pub local_root: LocalRoot,
    pub local: Listing,
    pub remote: Listing,
}

impl Listed {
    /// The plan from these listings and the job's records.
    pub fn plan(self, job: &Job, records: &Records) -> Planned {
        let plan = plan::plan(&self.local, &self.remote, records, &Policy::from_job(job));
        for p in self
            .local
            .problems
            .iter()
            .chain(self.remote.problems.iter())
        {
            tracing::error!(job = %job.name, path = %p.path, "{}", p.message);
        }
        Planned {
            local_root: self.local_root,
            local: Arc::new(self.local),
            remote: Arc::new(self.remote),
            plan,
        }
    }
}

/// List both sides and plan. Changes nothing, except creating a push job's missing remote
/// root when `missing_root` says so.
pub async fn plan_job(
    job: &Job,
    limits: &Limits,
    pool: &Pool,
    records: &Records,
    missing_root: MissingRoot,
) -> Result<Planned, JobError> {
    Ok(list_job(job, limits, pool, missing_root)
        .await?
        .plan(job, records))
}

/// List both sides (the local scan and the remote walk at once). Changes nothing, except
/// creating a push job's missing remote root when `missing_root` says so.
pub async fn list_job(
    job: &Job,
    limits: &Limits,
    pool: &Pool,
    missing_root: MissingRoot,
) -> Result<Listed, JobError> {
    let transport_err = |error| JobError::Transport {
        job: job.name.clone(),
        error,
    };
    let local_root = LocalRoot::open(&job.local)
        .map_err(|e| transport_err(TransportError::local("open the local root", &e)))?;
    // Both sides at once: a no-op run costs the longer of the two, not their sum.
    let started = Instant::now();
    let (local, mut remote) = tokio::join!(
        async {
            let local = scan::walk_local(&local_root, &job.filter, limits).await;
            tracing::debug!(job = %job.name, elapsed = ?started.elapsed(), "local tree read");
            local
        },
        async {
            let remote = scan::walk_pool(pool, &job.remote, &job.filter, limits, &job.retry).await;
            tracing::debug!(job = %job.name, elapsed = ?started.elapsed(), "remote tree listed");
            remote
        }
    );
    let local = local.map_err(transport_err)?;
    if job.direction != Direction::Pull
        && let Err(e) = &remote
        && e.kind == ErrorKind::Permanent
    {
        // A push to a directory that does not exist yet: create it, as a user would expect.
        remote = match missing_root {
            MissingRoot::Create => {
                tracing::info!(job = %job.name, remote = %job.remote, error = %e, "creating the remote root");
                let mut lease = pool.get(&job.remote).await.map_err(transport_err)?;
                match lease.session().make_root().await {
                    Ok(()) => {
                        lease.release();
                        scan::walk_pool(pool, &job.remote, &job.filter, limits, &job.retry).await
                    }
                    Err(_) => remote,
                }
            }
            MissingRoot::PlanAsEmpty => {
                tracing::info!(job = %job.name, remote = %job.remote, error = %e,
                    "the remote root cannot be listed; planning as if it were empty (a sync creates it)");
                Ok(Listing::default())
            }
        };
    }
    let remote = remote.map_err(transport_err)?;
    Ok(Listed {
        local_root,
        local,
        remote,
    })
}

/// Two-way: a file on both sides that no record covers, with the same size on both, may well
/// be one file (the sides were filled by another tool, or by a one-way job before). Its
/// content is compared, by the server's hash where it has a hash command, else by reading the
/// remote copy; equal ones get a record and are left alone, the others stay conflicts. A
/// comparison that fails leaves its file a conflict (with `keep_both`, nothing is lost).
async fn adopt_identical(
    job: &Job,
    planned: &mut Planned,
    pool: &Pool,
    store: &SharedStore,
    mut records: Records,
) -> Result<(), JobError> {
    let candidates: Vec<(
        crate::path::RelPath,
        crate::listing::Entry,
        crate::listing::Entry,
    )> = planned
        .local
        .files()
        .filter(|(p, _)| !records.contains_key(*p))
        .filter_map(|(p, l)| {
            let r = planned.remote.get(p)?;
            (r.kind == crate::listing::EntryKind::File && r.size == l.size)
                .then(|| (p.clone(), l.clone(), r.clone()))
        })
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    tracing::info!(job = %job.name, files = candidates.len(),
        "comparing the content of files on both sides that were never synced");
    let transport = |error| JobError::Transport {
        job: job.name.clone(),
        error,
    };
    let mut lease = pool.get(&job.remote).await.map_err(transport)?;
    let mut adopted = 0usize;
    for (path, local, remote) in candidates {
        match same_content(lease.session(), &planned.local_root, &path).await {
            Ok(Some(sha)) => {
                let record = plan::SyncRecord {
                    local_size: local.size,
                    local_mtime: local.mtime,
                    sha256: Some(sha),
                    remote_size: remote.size,
                    remote_mtime: remote.mtime,
                };
                let (name, p, r) = (job.name.clone(), path.clone(), record.clone());
                store
                    .call(move |s| s.put_record(&name, &p, &r))
                    .await
                    .map_err(|error| JobError::State {
                        job: job.name.clone(),
                        error,
                    })?;
                records.insert(path, record);
                adopted += 1;
            }
            Ok(None) => {}
            Err(e) if e.is_fatal() => return Err(transport(e)),
            Err(e) => {
                tracing::warn!(job = %job.name, path = %path, error = %e,
                    "cannot compare the two copies; treated as a conflict");
                // The session may be mid-transfer: a fresh one for the rest.
                drop(lease);
                lease = pool.get(&job.remote).await.map_err(transport)?;
            }
        }
    }
    lease.release();
    if adopted > 0 {
        tracing::info!(job = %job.name, files = adopted, "identical on both sides; recorded as in sync");
        planned.plan = plan::plan(
            &planned.local,
            &planned.remote,
            &records,
            &Policy::from_job(job),
        );
    }
    Ok(())
}

/// The local file's SHA-256 when the remote copy has the same content, `None` when not.
async fn same_content(
    t: &mut dyn crate::transport::Transport,
    local: &LocalRoot,
    path: &crate::path::RelPath,
) -> Result<Option<String>, TransportError> {
    use crate::execute::{Digests, HashingReader, HashingWriter};
    let op = format!("compare {path}");
    let server = match t.capabilities().hash_command.as_ref().map(|h| h.algo) {
        Some(_) => t.server_hash(path).await?,
        None => None,
    };
    let (dir, name) = local
        .parent(path)
        .map_err(|e| TransportError::local(&op, &e))?;
    let (file, _) = dir
        .open_read(name)
        .map_err(|e| TransportError::local(&op, &e))?;
    let algos: Vec<crate::transport::HashAlgo> = server.iter().map(|(a, _)| *a).collect();
    let mut reader = HashingReader::with(tokio::fs::File::from_std(file), Digests::of(algos));
    tokio::io::copy(&mut reader, &mut tokio::io::sink())
        .await
        .map_err(|e| TransportError::local(&op, &e))?;
    let (mine, _) = reader.finish();
    let sha = mine.sha256_hex();
    if let Some((algo, theirs)) = server
        && let Some(ours) = mine.hex(algo)
    {
        return Ok((ours == theirs).then_some(sha));
    }
    let mut sink = HashingWriter::new(tokio::io::sink());
    t.download(path, &mut sink, &|_| {}).await?;
    let theirs = sink.finish();
    Ok((theirs == sha).then_some(sha))
}

/// A second look within the run is worth it when every waiting file is due within this: a
/// nightly job that finds a file 10 s old waits 20 s more rather than a whole day.
const RECHECK_WITHIN: Duration = Duration::from_secs(120);
/// ... and the remote tree is at most this many entries (listing it again is cheap).
const RECHECK_ENTRIES: usize = 10_000;

/// How long to wait before a second look at the waiting files, when one is worth it.
fn recheck_wait(planned: &Planned) -> Option<Duration> {
    let longest = planned
        .plan
        .waiting
        .iter()
        .filter(|w| w.marker.is_none())
        .map(|w| w.remaining)
        .max()?;
    (longest <= RECHECK_WITHIN && planned.remote.entries.len() <= RECHECK_ENTRIES)
        .then(|| longest + Duration::from_millis(200))
}

/// A pull job's `ready`: take the downloads of files not finished on the server yet out of the
/// plan (into `plan.waiting`); with `ready: { marker }` the markers too, returned to be taken
/// after the rest. With `record` (a sync, not `ferry plan`), what `stable` saw is stored.
pub async fn hold_not_ready(
    job: &Job,
    planned: &mut Planned,
    store: &SharedStore,
    record: bool,
) -> Result<Vec<crate::plan::Action>, StateError> {
    if job.direction != Direction::Pull {
        return Ok(Vec::new());
    }
    match &job.ready {
        Ready::Immediate => {}
        Ready::Stable(stable_for) => {
            hold_unstable(job, planned, *stable_for, store, record).await?;
        }
        Ready::Marker(name) => {
            return Ok(crate::plan::ready::hold_for_marker(
                &mut planned.plan,
                &planned.remote,
                name,
            ));
        }
        Ready::Sidecar => {
            crate::plan::ready::hold_for_sidecar(&mut planned.plan, &planned.remote);
        }
    }
    Ok(Vec::new())
}

/// `ready: stable`: take the plan's downloads of files not seen unchanged for `stable_for` out
/// of the plan into `plan.waiting`. With `record` (a sync, not `ferry plan`), what was seen is
/// stored, so that the next look can tell.
async fn hold_unstable(
    job: &Job,
    planned: &mut Planned,
    stable_for: Duration,
    store: &SharedStore,
    record: bool,
) -> Result<(), StateError> {
    let candidates: Vec<(crate::path::RelPath, Seen)> =
        crate::plan::ready::downloads(&planned.plan)
            .map(|p| {
                let listed = planned.remote.get(p);
                let seen = Seen {
                    size: listed.map_or(0, |e| e.size),
                    mtime: listed.and_then(|e| e.mtime),
                };
                (p.clone(), seen)
            })
            .collect();
    let name = job.name.clone();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let stabilities = store
        .call(move |s| s.observe(&name, &candidates, now_ms, stable_for, record))
        .await?;
    crate::plan::ready::hold(&mut planned.plan, &stabilities);
    Ok(())
}

/// The outcome of one run.
#[derive(Debug)]
pub struct RunReport {
    pub job: String,
    /// The run's row in the state database (`ferry status`), and the `run_id` of its log lines.
    pub run_id: i64,
    pub direction: Direction,
    pub planned: Planned,
    pub execution: Execution,
    pub duration: Duration,
    /// The job's `on_success` / `on_failure` hook, when it has one for this outcome.
    pub hook: Option<crate::hooks::HookOutcome>,
}

impl RunReport {
    pub fn failed(&self) -> u64 {
        (self.execution.failures.len()
            + self.planned.plan.conflicts.len()
            + self.planned.local.problems.len()
            + self.planned.remote.problems.len()) as u64
    }

    /// Files left alone: in sync, links, or changed since the scan (sent next run).
    pub fn skipped(&self) -> u64 {
        (self.planned.plan.skipped.len() + self.execution.changed.len()) as u64
    }

    /// Whether something kept the run from doing all it should: a failed file, a problem, or
    /// deletes withheld by a guard.
    fn fell_short(&self) -> bool {
        self.failed() > 0 || self.planned.plan.deletes_blocked.is_some()
    }

    pub fn totals(&self) -> RunTotals {
        RunTotals {
            transferred: self.execution.transferred,
            bytes: self.execution.bytes,
            skipped: self.skipped(),
            failed: self.failed(),
            verified: self.execution.verified,
            deleted: self.execution.deleted,
        }
    }

    /// `ok`, `partial` (some files failed) or `failed` (the run was stopped).
    pub fn outcome(&self) -> &'static str {
        if self.execution.fatal.is_some() {
            "failed"
        } else if self.fell_short() {
            "partial"
        } else {
            "ok"
        }
    }

    /// Exit code: 0 all done, 1 some files failed, 3 stopped by auth/TLS/connection.
    pub fn exit_code(&self) -> i32 {
        match &self.execution.fatal {
            Some(e) if e.kind == ErrorKind::Cancelled => 1,
            Some(_) => 3,
            None if self.fell_short() => 1,
            None => 0,
        }
    }
}

/// How one run is asked for.
pub struct RunOptions<'a> {
    /// What started it, as recorded and logged: `cli`, `schedule`, `watch`, `catch-up`, ...
    pub trigger: &'a str,
    pub cancel: CancellationToken,
    pub observer: Arc<dyn Observer>,
    /// Called with the plan before anything is done.
    pub on_plan: &'a (dyn Fn(&Planned) + Send + Sync),
    /// Transfer only these files (a watch job's outbox); everything else waits for a full run.
    pub only: Option<std::collections::BTreeSet<crate::path::RelPath>>,
}

/// Run a job once: list, plan, execute, record the run.
#[allow(clippy::too_many_arguments)]
pub async fn run_job(
    config: &Config,
    job: &Job,
    pools: &Pools,
    store: SharedStore,
    trigger: &str,
    cancel: CancellationToken,
    observer: Arc<dyn Observer>,
    on_plan: &(dyn Fn(&Planned) + Send + Sync),
) -> Result<RunReport, JobError> {
    let opts = RunOptions {
        trigger,
        cancel,
        observer,
        on_plan,
        only: None,
    };
    run_job_with(config, job, pools, store, opts).await
}

/// [`run_job`], with every option.
pub async fn run_job_with(
    config: &Config,
    job: &Job,
    pools: &Pools,
    store: SharedStore,
    opts: RunOptions<'_>,
) -> Result<RunReport, JobError> {
    let RunOptions {
        trigger,
        cancel,
        observer,
        on_plan,
        only,
    } = opts;
    let started = Instant::now();
    let pool = pool_for(config, pools, job)?;
    let state_err = |error| JobError::State {
        job: job.name.clone(),
        error,
    };
    let (name, trig) = (job.name.clone(), trigger.to_owned());
    let run_id = store
        .call(move |s| s.start_run(&name, &trig))
        .await
        .map_err(state_err)?;
    tracing::debug!(job = %job.name, run_id, elapsed = ?started.elapsed(), "run started");
    let span = tracing::info_span!("job_run", job = %job.name, run_id, trigger);
    let limits = config
        .endpoints
        .get(&job.endpoint)
        .map(|e| e.limits)
        .unwrap_or_default();
    let listed = async {
        let archive = match &job.after_upload {
            AfterUpload::MoveTo(dir) => {
                Some(LocalRoot::open(dir).map_err(|e| JobError::Transport {
                    job: job.name.clone(),
                    error: TransportError::local("open the after_upload.move_to directory", &e),
                })?)
            }
            _ => None,
        };
        let backup = match &job.backup_dir {
            Some(dir) if job.direction == Direction::Pull => {
                Some(LocalRoot::open(dir).map_err(|e| JobError::Transport {
                    job: job.name.clone(),
                    error: TransportError::local("open the backup_dir directory", &e),
                })?)
            }
            _ => None,
        };
        let listed = list_job(job, &limits, &pool, MissingRoot::Create).await?;
        Ok::<_, JobError>((listed, archive, backup))
    }
    .instrument(span.clone());
    // The records are read while the trees are listed, not before (at 50,000 files, their
    // SELECT alone takes 60-130 ms here, a tenth of a no-op run).
    let name = job.name.clone();
    let records = async {
        let records = store.call(move |s| s.records(&name)).await;
        tracing::debug!(job = %job.name, elapsed = ?started.elapsed(), "records read");
        records
    };
    let (listed, records) = tokio::join!(listed, records);
    let records = records.map_err(state_err)?;
    let planned =
        listed.map(|(listed, archive, backup)| (listed.plan(job, &records), archive, backup));
    tracing::debug!(job = %job.name, elapsed = ?started.elapsed(), "planned");
    let planned = match planned {
        Ok((mut planned, archive, backup)) if job.direction == Direction::Both => {
            match adopt_identical(job, &mut planned, &pool, &store, records.clone())
                .instrument(span.clone())
                .await
            {
                Ok(()) => Ok((planned, archive, backup)),
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    let (planned, archive, backup) = match planned {
        Ok(p) => p,
        Err(e) => {
            let message = e.to_string();
            let recorded = store
                .call(move |s| {
                    s.finish_run(run_id, "failed", &RunTotals::default(), Some(&message))
                })
                .await;
            if let Err(state) = recorded {
                tracing::error!(job = %job.name, error = %state, "cannot record the failed run");
            }
            let facts = crate::hooks::RunFacts {
                run_id,
                outcome: "failed",
                transferred: &[],
                secret_vars: &secret_vars(config),
            };
            crate::hooks::run_after(job, &config.state_dir, &facts)
                .instrument(span.clone())
                .await;
            return Err(e);
        }
    };
    let mut planned = planned;
    let mut markers = hold_not_ready(job, &mut planned, &store, true)
        .await
        .map_err(state_err)?;
    // Files that will be stable soon: look once more in this run rather than leave them to
    // the next (when the tree is small enough to list again cheaply).
    if let Some(wait) = recheck_wait(&planned) {
        tracing::info!(job = %job.name, files = planned.plan.waiting.len(), wait = ?wait,
            "files not stable yet; looking again");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => {}
        }
        if !cancel.is_cancelled() {
            match plan_job(job, &limits, &pool, &records, MissingRoot::Create)
                .instrument(span.clone())
                .await
            {
                Ok(mut again) => {
                    markers = hold_not_ready(job, &mut again, &store, true)
                        .await
                        .map_err(state_err)?;
                    planned = again;
                }
                Err(e) => tracing::warn!(job = %job.name, error = %e,
                    "the second look failed; the waiting files wait for the next run"),
            }
        }
    }
    for w in &planned.plan.waiting {
        match &w.marker {
            Some(marker) => tracing::info!(job = %job.name, path = %w.path, waits_for = %marker,
                "waiting: not finished on the server yet"),
            None => tracing::info!(job = %job.name, path = %w.path, size = w.size,
                remaining = ?w.remaining, "waiting: may still be written"),
        }
    }
    if let Some(only) = &only {
        planned.plan = planned.plan.restricted_to(only);
    }
    for r in &planned.plan.resolved {
        match &r.copy {
            Some(copy) => tracing::warn!(job = %job.name, path = %r.path, winner = %r.winner,
                copy = %copy, "conflict: changed on both sides; both versions kept"),
            None => tracing::warn!(job = %job.name, path = %r.path, winner = %r.winner,
                policy = ?r.policy, "conflict: changed on both sides; the other version is overwritten"),
        }
    }
    on_plan(&planned);
    let ctx = Context {
        job: job.name.clone(),
        direction: job.direction,
        local: planned.local_root.clone(),
        archive,
        backup,
        remote_backup: job
            .backup_dir
            .as_ref()
            .filter(|_| job.direction == Direction::Push)
            .map(|d| d.to_string_lossy().into_owned()),
        verify: job.verify,
        retry: job.retry,
        after_upload: job.after_upload.clone(),
        remote_after: job.remote_after.clone(),
        publish: job
            .publish
            .clone()
            .filter(|_| job.direction == Direction::Push),
        checksum_sidecar: job.checksum_sidecar && job.direction == Direction::Push,
        direct_upload: job.direct_upload && job.direction == Direction::Push,
        renames_refused: std::sync::atomic::AtomicBool::new(false),
        dirs_to_sync: Default::default(),
        pool,
        remote_root: job.remote.clone(),
        store: store.clone(),
        cancel,
        observer,
    };
    let listings = Listings {
        local: planned.local.clone(),
        remote: planned.remote.clone(),
    };
    let ctx = Arc::new(ctx);
    let mut execution = execute::execute(&planned.plan, listings.clone(), ctx.clone())
        .instrument(span.clone())
        .await;
    if !markers.is_empty() && execution.fatal.is_none() {
        // A marker only once every file of its directory is in place: none failed, none waits.
        let unfinished: std::collections::BTreeSet<crate::path::RelPath> = execution
            .failures
            .iter()
            .map(|f| f.path.parent())
            .chain(planned.plan.waiting.iter().map(|w| w.path.parent()))
            .collect();
        let (ready, held): (Vec<_>, Vec<_>) = markers
            .into_iter()
            .partition(|m| !unfinished.contains(&m.path.parent()));
        for m in &held {
            tracing::warn!(job = %job.name, path = %m.path,
                "marker not taken: files of its directory failed or wait");
        }
        let last = Plan {
            actions: ready,
            ..Plan::default()
        };
        let more = execute::execute(&last, listings, ctx.clone())
            .instrument(span.clone())
            .await;
        execution.absorb(more);
        planned.plan.actions.extend(last.actions);
    }
    if !planned.plan.forget.is_empty() {
        let (name, forget) = (job.name.clone(), planned.plan.forget.clone());
        let forgotten = store.call(move |s| s.forget(&name, &forget)).await;
        if let Err(e) = forgotten {
            execution.failures.push(crate::execute::Failure {
                path: crate::path::RelPath::root(),
                action: crate::plan::ActionKind::DeleteLocalFile,
                error: TransportError::new(
                    ErrorKind::State,
                    "forget vanished paths",
                    e.to_string(),
                ),
            });
        }
    }
    let mut report = RunReport {
        job: job.name.clone(),
        run_id,
        direction: job.direction,
        planned,
        execution,
        duration: started.elapsed(),
        hook: None,
    };
    let message = report.execution.fatal.as_ref().map(|e| e.to_string());
    let (outcome, totals) = (report.outcome(), report.totals());
    store
        .call(move |s| s.finish_run(run_id, outcome, &totals, message.as_deref()))
        .await
        .map_err(state_err)?;
    // The run's summary as one event with fields, for log pipelines (the CLI also prints it).
    let t = report.totals();
    span.in_scope(|| {
        tracing::info!(job = %job.name, run_id, trigger, outcome = report.outcome(),
            transferred = t.transferred, verified = t.verified, bytes = t.bytes,
            skipped = t.skipped, failed = t.failed, deleted = t.deleted,
            waiting = report.planned.plan.waiting.len(), duration_ms = report.duration.as_millis() as u64, "run finished");
    });
    let facts = crate::hooks::RunFacts {
        run_id,
        outcome: report.outcome(),
        transferred: &report.execution.done,
        secret_vars: &secret_vars(config),
    };
    report.hook = crate::hooks::run_after(job, &config.state_dir, &facts)
        .instrument(span)
        .await;
    Ok(report)
}

/// The environment variables the job file names as passwords: never handed to a hook.
fn secret_vars(config: &Config) -> Vec<String> {
    config
        .endpoints
        .values()
        .filter_map(|e| match &e.password {
            crate::config::PasswordSource::Env(name) => Some(name.clone()),
            _ => None,
        })
        .collect()
}
