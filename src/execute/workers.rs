//! Transfers on up to `max_connections` sessions: a queue of actions shared by that many
//! workers, each a task of its own (so hashing and TLS of one file never starve another's
//! replies), each holding at most one session of the endpoint's pool at a time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::retry::{Done, Op, with_retry};
use super::{Context, FileOutcome, Listings, cancelled, temp_name};
use crate::plan::{Action, ActionKind};
use crate::state::PartialKind;
use crate::transport::pool::Lease;
use crate::transport::{ErrorKind, TransportError};

type Outcome = (Action, Result<FileOutcome, TransportError>);

pub(super) async fn run_transfers(
    transfers: Vec<Action>,
    listings: Listings,
    ctx: Arc<Context>,
) -> Vec<Outcome> {
    let workers = ctx.pool.capacity().clamp(1, transfers.len().max(1));
    let queue = Arc::new(Mutex::new(VecDeque::from(transfers)));
    let stop = ctx.cancel.child_token();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        // The run's span (job, run id) goes with each worker, so its lines carry them too.
        tasks.spawn(tracing::Instrument::instrument(
            worker(queue.clone(), stop.clone(), listings.clone(), ctx.clone()),
            tracing::Span::current(),
        ));
    }
    let mut out = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(done) => out.extend(done),
            Err(e) => tracing::error!(job = %ctx.job, error = %e, "a transfer worker failed"),
        }
    }
    // A worker that died leaves its files unreported: report them as failed, never lost.
    if let Ok(mut left) = queue.lock() {
        out.extend(left.drain(..).map(|a| (a, Err(cancelled()))));
    }
    out.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    out
}

async fn worker(
    queue: Arc<Mutex<VecDeque<Action>>>,
    stop: CancellationToken,
    listings: Listings,
    ctx: Arc<Context>,
) -> Vec<Outcome> {
    let mut lease: Option<Lease> = None;
    let mut done = Vec::new();
    loop {
        let next = queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some(action) = next else { break };
        let result = if stop.is_cancelled() {
            Err(cancelled())
        } else {
            ctx.observer.file_started(&action);
            let r = transfer(&action, &listings, &ctx, &mut lease, &stop).await;
            if matches!(&r, Err(e) if e.kind == ErrorKind::Cancelled) {
                abandon(&action, &ctx).await;
            }
            ctx.observer.file_finished(&action, &r);
            r
        };
        if let Err(e) = &result
            && e.is_fatal()
        {
            // Auth, TLS or cancellation: no other file can succeed either.
            stop.cancel();
        }
        done.push((action, result));
    }
    if let Some(lease) = lease {
        lease.release();
    }
    done
}

async fn transfer(
    action: &Action,
    listings: &Listings,
    ctx: &Context,
    lease: &mut Option<Lease>,
    stop: &CancellationToken,
) -> Result<FileOutcome, TransportError> {
    let op = match action.kind {
        ActionKind::Upload => Op::Upload {
            action,
            local: &listings.local,
        },
        ActionKind::Download => Op::Download {
            action,
            remote: &listings.remote,
            local: (ctx.direction == crate::config::Direction::Both).then_some(&*listings.local),
        },
        other => {
            return Err(TransportError::new(
                ErrorKind::Permanent,
                other.as_str(),
                "not a transfer",
            ));
        }
    };
    match with_retry(ctx, lease, stop, op).await? {
        Done::File(outcome) => Ok(outcome),
        _ => Err(TransportError::new(
            ErrorKind::Permanent,
            action.kind.as_str(),
            "a transfer gave no outcome",
        )),
    }
}

/// A cancelled transfer will not be resumed: its note in state goes, and so does an upload's
/// temporary file on the server (a download's local one went when its transfer was dropped).
/// Best effort, on a session of its own, within a few seconds.
async fn abandon(action: &Action, ctx: &Context) {
    let kind = match action.kind {
        ActionKind::Upload => PartialKind::Upload,
        _ => PartialKind::Download,
    };
    let (job, path) = (ctx.job.clone(), action.path.clone());
    if let Err(e) = ctx
        .store
        .call(move |s| s.remove_partial(&job, &path, kind))
        .await
    {
        tracing::warn!(job = %ctx.job, path = %action.path, error = %e, "cannot clear a partial transfer's note");
    }
    if action.kind != ActionKind::Upload {
        return;
    }
    let tmp = temp_name(&action.path);
    // A few tries: the session that was cut may take the server a moment to let go of, and a
    // fresh login can fail in that moment.
    let cleanup = async {
        let mut last = None;
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt)))
                    .await;
            }
            let tried = async {
                let mut lease = ctx.pool.get(&ctx.remote_root).await?;
                lease.session().delete_file(&tmp).await?;
                lease.release();
                Ok::<_, TransportError>(())
            };
            match tried.await {
                Ok(()) => return Ok(()),
                // Nothing there to remove: done.
                Err(e) if e.kind == ErrorKind::Permanent => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(cancelled))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), cleanup).await {
        Ok(Ok(())) => {
            tracing::info!(job = %ctx.job, path = %tmp, "removed the cancelled upload's temporary file")
        }
        Ok(Err(e)) => {
            tracing::debug!(job = %ctx.job, path = %tmp, error = %e, "no temporary file removed")
        }
        Err(_) => {
            tracing::warn!(job = %ctx.job, path = %tmp, "the server did not answer; its temporary file stays (the next run removes it)")
        }
    }
}
