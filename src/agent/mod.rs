//! The agent, `ferry run`: every job with a `schedule` runs at its cron times, every watch job
//! pushes its finished files as they come, until SIGTERM.
//!
//! ```text
//!  timer (cron, jitter) ──┐
//!  watcher + reconcile ───┼─► triggers ─► runner (one run at a time, per-job lock, backoff)
//!  catch-up, start ───────┘                 └─► run::run_job_with (the same run as `ferry sync`)
//! ```
//!
//! Each job has its own timer, runner and (for watch jobs) watcher; jobs run concurrently,
//! within their endpoint's connection budget (one pool per endpoint, shared by all jobs and
//! kept between runs). A run takes the job's lock ([`lock`]), which a `ferry sync` of the same
//! job takes too, so the two never run side by side.
//!
//! Service behaviour, field by field of [`run()`]:
//! - `shutdown` (the first SIGTERM or SIGINT): timers and watchers stop, no run starts; runs in
//!   progress get `shutdown_grace` to finish, then are cancelled (their temporary files go,
//!   local and remote); then [`run()`] returns. A second signal is the binary's business (it
//!   exits at once).
//! - `reloads` (SIGHUP): the job file is read again. An invalid file is reported and the old
//!   jobs keep running; removed jobs stop after their current run; new and changed jobs are
//!   started with the new file.
//! - systemd ([`notify`]): READY=1 once the jobs are scheduled, STATUS= as runs come and go,
//!   WATCHDOG=1 when the unit sets `WatchdogSec`, STOPPING=1 at shutdown.

pub mod lock;
pub mod metrics;
pub mod notify;
pub mod schedule;
pub mod timer;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::timer::{Clock, Ran, Trigger, Triggers};
use crate::config::{Config, Direction, Job};
use crate::execute::Silent;
use crate::path::RelPath;
use crate::run::{self, JobError, RunOptions};
use crate::state::{SharedStore, StateError, Store};
use crate::transport::pool::Pools;

/// How often STATUS= and the sampled metrics (outbox depth, open connections) are refreshed.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("metrics on {addr}: {message}")]
    Metrics { addr: String, message: String },
}

/// What every job's loops share.
struct Shared {
    store: SharedStore,
    pools: Pools,
    /// Cancelled after the shutdown grace: aborts the runs still going.
    runs_cancel: CancellationToken,
    clock: Arc<dyn Clock>,
    running: AtomicUsize,
}

/// The loops of one job.
struct JobTask {
    /// Stops its timer, watcher and runner (a run in progress is finished first).
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The job and its endpoint as configured, to tell a changed job on reload.
    fingerprint: String,
    _watcher: Option<watch::Watcher>,
}

/// Run the agent with `config` (read from `config_path`, which SIGHUP reads again) until
/// `shutdown` is cancelled. `clock` gives the time of day (the system's, or a test's).
pub async fn run(
    config: Config,
    config_path: PathBuf,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    mut reloads: mpsc::Receiver<()>,
) -> Result<(), AgentError> {
    let store = SharedStore::new(Store::open(&config.state_dir)?);
    if let Some(addr) = config.agent.metrics {
        metrics::install(addr).map_err(|message| AgentError::Metrics {
            addr: addr.to_string(),
            message,
        })?;
        tracing::info!(%addr, "serving Prometheus metrics");
    }
    let shared = Arc::new(Shared {
        store,
        pools: Pools::new(),
        runs_cancel: CancellationToken::new(),
        clock,
        running: AtomicUsize::new(0),
    });
    let mut config = Arc::new(config);
    let mut jobs: BTreeMap<String, JobTask> = BTreeMap::new();
    start_jobs(&shared, &config, &mut jobs);
    notify::ready(&summary(&config, &jobs, &shared));
    tracing::info!(jobs = jobs.len(), "agent started");

    let watchdog = notify::watchdog_interval();
    // Status, watchdog and the sampled gauges every few seconds (sooner if the watchdog asks).
    let every = watchdog.map_or(SAMPLE_EVERY, |w| w.min(SAMPLE_EVERY));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            reload = reloads.recv() => {
                if reload.is_none() {
                    // The binary dropped its side: no more reloads, keep running.
                    reloads = mpsc::channel(1).1;
                    continue;
                }
                match crate::config::load(&config_path) {
                    Ok(new) => {
                        for w in &new.warnings {
                            tracing::warn!("{w}");
                        }
                        let new = Arc::new(new);
                        reload_jobs(&shared, &config, &new, &mut jobs);
                        config = new;
                        tracing::info!(jobs = jobs.len(), "job file reloaded");
                    }
                    Err(e) => {
                        tracing::error!(path = %config_path.display(), "the job file did not load; the running jobs go on unchanged:\n{e}");
                    }
                }
            }
            _ = tick.tick() => {
                if watchdog.is_some() {
                    notify::watchdog();
                }
                notify::status(&summary(&config, &jobs, &shared));
                metrics::sample(&shared.pools, &shared.store, &config).await;
            }
        }
    }

    notify::stopping();
    tracing::info!(grace = ?config.agent.shutdown_grace, "stopping: no new runs; runs in progress may finish");
    let mut tasks = Vec::new();
    for (_, task) in std::mem::take(&mut jobs) {
        task.stop.cancel();
        tasks.extend(task.tasks);
    }
    let all = async {
        for t in tasks.iter_mut() {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(config.agent.shutdown_grace, all)
        .await
        .is_err()
    {
        tracing::warn!("runs still going after the grace period: cancelling them");
        shared.runs_cancel.cancel();
        let rest = async {
            for t in tasks.iter_mut() {
                let _ = t.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(20), rest).await;
    }
    shared.pools.close_all().await;
    tracing::info!("agent stopped");
    Ok(())
}

/// The one-line status: how many jobs, how many running.
fn summary(config: &Config, jobs: &BTreeMap<String, JobTask>, shared: &Shared) -> String {
    format!(
        "{} of {} jobs scheduled or watched, {} running",
        jobs.len(),
        config.jobs.len(),
        shared.running.load(Ordering::Relaxed)
    )
}

fn fingerprint(config: &Config, job: &Job) -> String {
    format!("{job:?} {:?}", config.endpoints.get(&job.endpoint))
}

/// Start the jobs of `config` that are not running yet. A job that cannot run on this machine
/// now (see [`Config::unavailable`]) is logged with why and not started, or stopped after its
/// current run if it was running; the next reload that finds it fixed starts it.
fn start_jobs(shared: &Arc<Shared>, config: &Arc<Config>, jobs: &mut BTreeMap<String, JobTask>) {
    for job in config.jobs.values() {
        if let Some(findings) = config.unavailable(&job.name) {
            // One line, findings in a field: one log record, in human and JSON logs alike.
            let problems = findings.join("; ");
            match jobs.remove(&job.name) {
                Some(task) => {
                    task.stop.cancel();
                    tracing::error!(job = %job.name, %problems,
                        "the job cannot run here now: it stops after its current run (fix it, then reload)");
                }
                None => tracing::error!(job = %job.name, %problems,
                    "the job cannot run here, so it is not started (fix it, then reload)"),
            }
            continue;
        }
        if jobs.contains_key(&job.name) {
            continue;
        }
        match start_job(shared, config, job) {
            Some(task) => {
                jobs.insert(job.name.clone(), task);
            }
            None => {
                tracing::info!(job = %job.name, "no schedule and no watch: it runs only with `ferry sync`");
            }
        }
    }
}

fn reload_jobs(
    shared: &Arc<Shared>,
    old: &Arc<Config>,
    new: &Arc<Config>,
    jobs: &mut BTreeMap<String, JobTask>,
) {
    // Endpoints that changed get new pools; the old ones serve their runs to the end.
    for (name, endpoint) in &old.endpoints {
        if new.endpoints.get(name).map(|e| format!("{e:?}")) != Some(format!("{endpoint:?}")) {
            shared.pools.remove(name);
        }
    }
    let names: Vec<String> = jobs.keys().cloned().collect();
    for name in names {
        let keep = new.jobs.get(&name).is_some_and(|job| {
            jobs.get(&name)
                .is_some_and(|t| t.fingerprint == fingerprint(new, job))
        });
        if !keep && let Some(task) = jobs.remove(&name) {
            tracing::info!(job = %name, "removed or changed: it stops after its current run");
            task.stop.cancel();
        }
    }
    start_jobs(shared, new, jobs);
}

/// Start a job's loops; `None` when it has neither a schedule nor a watch.
fn start_job(shared: &Arc<Shared>, config: &Arc<Config>, job: &Job) -> Option<JobTask> {
    let watch = job.watch && job.direction == Direction::Push;
    let cron = job
        .schedule
        .as_deref()
        .and_then(|s| crate::config::parse_schedule(s).ok());
    if cron.is_none() && !watch {
        return None;
    }
    let job = Arc::new(job.clone());
    let stop = CancellationToken::new();
    let (triggers, rx) = Triggers::channel();
    let mut tasks = Vec::new();
    let limits = config
        .endpoints
        .get(&job.endpoint)
        .map(|e| e.limits)
        .unwrap_or_default();

    if let Some(cron) = cron {
        if job.catch_up {
            // At start-up or reload: a single indexed read, on this thread.
            let last = shared
                .store
                .blocking(|s| s.last_run(&job.name))
                .ok()
                .flatten()
                .and_then(|r| DateTime::<Utc>::from_timestamp(r.started_at, 0));
            if schedule::missed(&cron, job.timezone, last, shared.clock.now()) {
                tracing::info!(job = %job.name, "a scheduled run was missed while the agent was down: running it now");
                triggers.fire(Trigger::CatchUp);
            }
        }
        if let Some(next) = schedule::next_fire(&cron, job.timezone, shared.clock.now()) {
            tracing::info!(job = %job.name, next_run = %next.to_rfc3339(), "scheduled");
        }
        tasks.push(tokio::spawn(timer::schedule_loop(
            cron,
            job.timezone,
            job.jitter,
            shared.clock.clone(),
            triggers.clone(),
            stop.clone(),
        )));
    }

    let watcher = watch.then(|| {
        watch::start(
            job.clone(),
            limits,
            shared.store.clone(),
            triggers.clone(),
            stop.clone(),
        )
    });
    let settling = watcher.as_ref().map(|w| w.settling());

    let (shared3, config3, job3) = (shared.clone(), config.clone(), job.clone());
    let settling3 = settling.clone();
    tasks.push(tokio::spawn(timer::runner_loop(
        job.name.clone(),
        rx,
        job.retry,
        shared.clock.clone(),
        stop.clone(),
        move |trigger| {
            let (shared, config, job) = (shared3.clone(), config3.clone(), job3.clone());
            let settling = settling3.clone();
            async move { run_once(&shared, &config, &job, settling.as_deref(), trigger).await }
        },
    )));
    Some(JobTask {
        stop,
        tasks,
        fingerprint: fingerprint(config, &job),
        _watcher: watcher,
    })
}

/// One run of `job`, as the runner asks for it.
async fn run_once(
    shared: &Shared,
    config: &Config,
    job: &Job,
    settling: Option<&watch::Settling>,
    trigger: Trigger,
) -> Ran {
    let _lock = match lock::lock(
        &config.state_dir,
        &job.name,
        "ferry run",
        Duration::from_secs(1),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => return Ran::FailedWhole(e.to_string()),
    };
    // A watch job pushes the finished files of its outbox, nothing else.
    let only: Option<BTreeSet<RelPath>> = if let Some(settling) = settling {
        let ready = settling.ready();
        let name = job.name.clone();
        let pending = shared
            .store
            .call(move |s| s.pending(&name))
            .await
            .map_err(|e| e.to_string());
        match pending {
            Ok(p) => {
                let only: BTreeSet<RelPath> = p
                    .into_iter()
                    .map(|(path, _)| path)
                    .filter(|path| ready.contains(path))
                    .collect();
                if only.is_empty() {
                    // Taken out of the outbox by another run (a `ferry sync`) meanwhile.
                    settling.done(&ready);
                    return Ran::Done;
                }
                Some(only)
            }
            Err(e) => return Ran::FailedWhole(e),
        }
    } else {
        None
    };
    shared.running.fetch_add(1, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let result = run::run_job_with(
        config,
        job,
        &shared.pools,
        shared.store.clone(),
        RunOptions {
            trigger: trigger.as_str(),
            cancel: shared.runs_cancel.child_token(),
            observer: Arc::new(Silent),
            on_plan: &|_| {},
            only: only.clone(),
        },
    )
    .await;
    shared.running.fetch_sub(1, Ordering::Relaxed);
    let elapsed = started.elapsed();
    match result {
        Ok(report) => {
            let t = report.totals();
            for f in report.execution.failures.iter() {
                tracing::warn!(job = %job.name, run_id = report.run_id, path = %f.path,
                    action = f.action.as_str(), error = %f.error, "failed");
            }
            metrics::run_finished(&job.name, report.outcome(), elapsed, t.transferred, t.bytes);
            if let (Some(only), Some(settling)) = (&only, settling) {
                dequeue_done(shared, job, only, settling, &report).await;
            }
            metrics::sample(&shared.pools, &shared.store, config).await;
            match &report.execution.fatal {
                Some(e) if e.kind != crate::transport::ErrorKind::Cancelled => {
                    Ran::FailedWhole(e.to_string())
                }
                // A watch job's failed files stay in the outbox and are tried again with the
                // job's backoff, not left for the next change.
                _ if only.is_some() && !report.execution.failures.is_empty() => {
                    Ran::FailedWhole(format!(
                        "{} files could not be sent",
                        report.execution.failures.len()
                    ))
                }
                _ => Ran::Done,
            }
        }
        Err(e) => {
            tracing::error!(job = %job.name, trigger = trigger.as_str(), error = %e, "the run could not start");
            metrics::run_finished(&job.name, "failed", elapsed, 0, 0);
            match e {
                // A job that cannot be set up (its secret, its endpoint) waits for a reload.
                JobError::Setup { .. } => Ran::Done,
                other => Ran::FailedWhole(other.to_string()),
            }
        }
    }
}

/// Take out of the outbox what the run settled: verified on the server, or nothing to send
/// (unchanged since its last upload, or gone). Failed and changed files stay for the next run.
async fn dequeue_done(
    shared: &Shared,
    job: &Job,
    only: &BTreeSet<RelPath>,
    settling: &watch::Settling,
    report: &run::RunReport,
) {
    let kept: BTreeSet<&RelPath> = report
        .execution
        .failures
        .iter()
        .chain(report.execution.changed.iter())
        .map(|f| &f.path)
        .collect();
    let settled: Vec<RelPath> = only.iter().filter(|p| !kept.contains(p)).cloned().collect();
    let name = job.name.clone();
    let dequeued = shared
        .store
        .call(move |store| {
            let mut done = Vec::new();
            for path in settled {
                match store.dequeue(&name, &path) {
                    Ok(()) => done.push(path),
                    Err(e) => {
                        tracing::error!(job = %name, path = %path, error = %e, "cannot take a file out of the outbox")
                    }
                }
            }
            Ok(done)
        })
        .await;
    match dequeued {
        Ok(done) => settling.done(&done),
        Err(e) => {
            tracing::error!(job = %job.name, error = %e, "cannot take files out of the outbox")
        }
    }
    // A file that changed while it was sent waits to settle again.
    for f in &report.execution.changed {
        settling.wait(f.path.clone());
    }
}
