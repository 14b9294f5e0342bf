//! The two loops every job of the agent has: a timer that fires at the job's cron times, and a
//! runner that turns triggers into runs, one at a time.
//!
//! - The timer asks [`next_fire`](super::schedule::next_fire) for the next instant,
//!   waits for it on tokio's clock (plus a random part of `jitter`), and triggers.
//! - The runner takes one trigger at a time. A trigger that comes while a run is going on
//!   becomes one follow-up run after it (triggers are coalesced: ten during a run still make
//!   one). A run that failed as a whole (server down, login refused) is tried again with the
//!   job's backoff before the next scheduled run, and the log says when.
//!
//! Both take their clock and their run as parameters, so tests drive them with paused time and
//! a fake run. What they do not do: start runs of different jobs in step (each job has its own
//! pair), or know what a run is (the agent passes it in).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::schedule;
use crate::config::RetryPolicy;

/// Where the agent reads the time of day from (tests use tokio's paused clock).
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that follows tokio's (paused, in tests) from a fixed start.
pub struct TokioClock {
    start_wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(start_wall: DateTime<Utc>) -> Self {
        TokioClock {
            start_wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.start;
        self.start_wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

/// Why a run was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    CatchUp,
    Watch,
    Rescan,
    Start,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch-up",
            Trigger::Watch => "watch",
            Trigger::Rescan => "rescan",
            Trigger::Start => "start",
        }
    }
}

/// Asks a job's runner for a run; cheap to clone. Triggers sent while one is already waiting
/// are merged into it.
#[derive(Clone)]
pub struct Triggers {
    tx: mpsc::Sender<Trigger>,
}

impl Triggers {
    /// A sender and the receiver its runner reads.
    pub fn channel() -> (Triggers, mpsc::Receiver<Trigger>) {
        let (tx, rx) = mpsc::channel(1);
        (Triggers { tx }, rx)
    }

    /// Ask for a run; merged with one already waiting.
    pub fn fire(&self, trigger: Trigger) {
        // Full means a run is already asked for: this one is coalesced into it.
        let _ = self.tx.try_send(trigger);
    }
}

/// How a run ended, as far as the runner is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// It ran (files may have failed: that is the run's report, not a reason to retry now).
    Done,
    /// It could not run at all (connect, login, TLS, the local root): try again with backoff.
    FailedWhole(String),
}

/// Fire `triggers` at every time `cron` gives, in `tz`, plus a random part of `jitter`, until
/// `stop`.
pub async fn schedule_loop(
    cron: Cron,
    tz: Option<Tz>,
    jitter: Option<Duration>,
    clock: Arc<dyn Clock>,
    triggers: Triggers,
    stop: CancellationToken,
) {
    loop {
        let now = clock.now();
        let Some(next) = schedule::next_fire(&cron, tz, now) else {
            return;
        };
        let mut wait = (next - now).to_std().unwrap_or_default();
        if let Some(jitter) = jitter {
            wait += jitter.mul_f64(rand::random_range(0.0..1.0));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => triggers.fire(Trigger::Schedule),
            _ = stop.cancelled() => return,
        }
    }
}

/// Run `run` for each trigger, one at a time, retrying a whole failure with `retry`'s backoff,
/// until `stop` (a run in progress is finished first; its own cancellation is the caller's).
pub async fn runner_loop<F, Fut>(
    job: String,
    mut triggers: mpsc::Receiver<Trigger>,
    retry: RetryPolicy,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
    mut run: F,
) where
    F: FnMut(Trigger) -> Fut,
    Fut: Future<Output = Ran>,
{
    loop {
        let trigger = tokio::select! {
            t = triggers.recv() => match t {
                Some(t) => t,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        let mut waits = retry.delays();
        let mut current = trigger;
        loop {
            match run(current).await {
                Ran::Done => break,
                Ran::FailedWhole(why) => {
                    let Some(wait) = waits.next() else {
                        tracing::error!(job = %job, error = %why,
                            "the run failed and its retries are spent; waiting for the next trigger");
                        break;
                    };
                    let at = clock.now() + chrono::Duration::from_std(wait).unwrap_or_default();
                    tracing::warn!(job = %job, error = %why, next_attempt = %at.to_rfc3339(),
                        "the run failed as a whole; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return,
                    }
                    current = trigger;
                }
            }
            if stop.is_cancelled() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_schedule;
    use std::sync::Mutex;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    /// Records when each run started (in paused tokio time since the test began) and what
    /// triggered it.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<(u64, Trigger)>>>);

    impl Log {
        fn push(&self, start: tokio::time::Instant, t: Trigger) {
            let ms = (tokio::time::Instant::now() - start).as_millis() as u64;
            self.0.lock().expect("log").push((ms, t));
        }
        fn get(&self) -> Vec<(u64, Trigger)> {
            self.0.lock().expect("log").clone()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_six_field_schedule_fires_every_two_seconds() {
        let clock: Arc<dyn Clock> =
            Arc::new(TokioClock::starting_at(utc("2026-12-01T10:00:00.5Z")));
        let (triggers, rx) = Triggers::channel();
        let stop = CancellationToken::new();
        let log = Log::default();
        let start = tokio::time::Instant::now();
        let cron = parse_schedule("*/2 * * * * *").expect("cron");
        tokio::spawn(schedule_loop(
            cron,
            Some(Tz::UTC),
            None,
            clock.clone(),
            triggers,
            stop.clone(),
        ));
        let l = log.clone();
        let runner = tokio::spawn(runner_loop(
            "j".into(),
            rx,
            RetryPolicy::default(),
            clock,
            stop.clone(),
            move |t| {
                l.push(start, t);
                async { Ran::Done }
            },
        ));
        tokio::time::sleep(Duration::from_millis(10_100)).await;
        stop.cancel();
        runner.await.expect("runner");
        let at: Vec<u64> = log.get().iter().map(|(ms, _)| *ms).collect();
        // 10:00:02, :04, :06, :08, :10 from a start at 10:00:00.5.
        assert_eq!(at, vec![1500, 3500, 5500, 7500, 9500]);
    }

    #[tokio::test(start_paused = true)]
    async fn triggers_during_a_run_become_one_follow_up_run() {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(utc("2026-12-01T10:00:00Z")));
        let (triggers, rx) = Triggers::channel();
        let stop = CancellationToken::new();
        let log = Log::default();
        let start = tokio::time::Instant::now();
        let l = log.clone();
        let runner = tokio::spawn(runner_loop(
            "j".into(),
            rx,
            RetryPolicy::default(),
            clock,
            stop.clone(),
            move |t| {
                l.push(start, t);
                // Every run takes ten seconds.
                async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ran::Done
                }
            },
        ));
        triggers.fire(Trigger::Start);
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..10 {
            triggers.fire(Trigger::Watch);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        stop.cancel();
        runner.await.expect("runner");
        assert_eq!(
            log.get(),
            vec![(0, Trigger::Start), (10_000, Trigger::Watch)],
            "ten triggers during the first run make one run after it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_failed_as_a_whole_is_retried_with_backoff() {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(utc("2026-12-01T10:00:00Z")));
        let (triggers, rx) = Triggers::channel();
        let stop = CancellationToken::new();
        let log = Log::default();
        let start = tokio::time::Instant::now();
        let l = log.clone();
        let failures = Arc::new(Mutex::new(2));
        let retry = RetryPolicy {
            attempts: 5,
            initial: Duration::from_secs(4),
            max: Duration::from_secs(60),
        };
        let runner = tokio::spawn(runner_loop(
            "j".into(),
            rx,
            retry,
            clock,
            stop.clone(),
            move |t| {
                l.push(start, t);
                let failures = failures.clone();
                async move {
                    let mut left = failures.lock().expect("count");
                    if *left > 0 {
                        *left -= 1;
                        Ran::FailedWhole("connect refused".into())
                    } else {
                        Ran::Done
                    }
                }
            },
        ));
        triggers.fire(Trigger::Schedule);
        tokio::time::sleep(Duration::from_secs(120)).await;
        stop.cancel();
        runner.await.expect("runner");
        let runs = log.get();
        assert_eq!(runs.len(), 3, "two failures, then success: {runs:?}");
        // Full jitter: the first wait is within 4 s, the second within 8 s.
        assert!(runs[1].0 <= 4_000, "{runs:?}");
        assert!(runs[2].0 - runs[1].0 <= 8_000, "{runs:?}");
        assert!(runs.iter().all(|(_, t)| *t == Trigger::Schedule));
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_spreads_a_shared_schedule_within_its_bound() {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(utc("2026-12-01T10:00:00Z")));
        let stop = CancellationToken::new();
        let start = tokio::time::Instant::now();
        let mut logs = Vec::new();
        for _ in 0..20 {
            let (triggers, mut rx) = Triggers::channel();
            let cron = parse_schedule("@hourly").expect("cron");
            tokio::spawn(schedule_loop(
                cron,
                Some(Tz::UTC),
                Some(Duration::from_secs(30)),
                clock.clone(),
                triggers,
                stop.clone(),
            ));
            let log = Log::default();
            let l = log.clone();
            tokio::spawn(async move {
                while let Some(t) = rx.recv().await {
                    l.push(start, t);
                }
            });
            logs.push(log);
        }
        tokio::time::sleep(Duration::from_secs(3_640)).await;
        stop.cancel();
        let fired: Vec<u64> = logs.iter().map(|l| l.get()[0].0).collect();
        assert!(
            fired.iter().all(|ms| (3_600_000..3_630_000).contains(ms)),
            "{fired:?}"
        );
        let distinct: std::collections::BTreeSet<_> = fired.iter().collect();
        assert!(
            distinct.len() > 10,
            "jobs are spread, not in step: {fired:?}"
        );
    }
}
