//! Transfers on up to `max_connections` sessions: a queue of actions shared by that many
//! workers, each with its own session, polled together on the run's task.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::retry::transfer_with_retry;
use super::{Context, FileOutcome, Listings, cancelled, download, session_for, upload};
use crate::plan::{Action, ActionKind};
use crate::transport::{ErrorKind, Transport, TransportError};

pub(super) async fn run_transfers(
    transfers: Vec<Action>,
    listings: Listings<'_>,
    ctx: &Context,
) -> Vec<(Action, Result<FileOutcome, TransportError>)> {
    let workers = ctx.max_connections.clamp(1, transfers.len().max(1));
    let queue = Arc::new(Mutex::new(
        transfers
            .into_iter()
            .collect::<std::collections::VecDeque<_>>(),
    ));
    let stop = ctx.cancel.child_token();
    let results = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let queue = queue.clone();
        let results = results.clone();
        let stop = stop.clone();
        tasks.push(worker(queue, results, stop, listings, ctx));
    }
    join_all(tasks).await;
    let mut out = results
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    out.sort_by(|a: &(Action, _), b| a.0.path.cmp(&b.0.path));
    out
}

/// Run futures concurrently on this task (they borrow the context, so no spawn).
async fn join_all<F: std::future::Future<Output = ()>>(futs: Vec<F>) {
    let mut pending: Vec<_> = futs.into_iter().map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        for slot in pending.iter_mut() {
            if slot
                .as_mut()
                .is_some_and(|f| f.as_mut().poll(cx).is_ready())
            {
                *slot = None;
            }
        }
        if pending.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

type Shared<T> = Arc<Mutex<T>>;

async fn worker(
    queue: Shared<std::collections::VecDeque<Action>>,
    results: Shared<Vec<(Action, Result<FileOutcome, TransportError>)>>,
    stop: CancellationToken,
    listings: Listings<'_>,
    ctx: &Context,
) {
    let mut session: Option<Box<dyn Transport>> = None;
    loop {
        let next = queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some(action) = next else { break };
        let result = if stop.is_cancelled() {
            Err(cancelled())
        } else {
            ctx.observer.file_started(&action);
            let r = transfer_with_retry(&action, listings, ctx, &mut session, &stop).await;
            ctx.observer.file_finished(&action, &r);
            r
        };
        if let Err(e) = &result
            && e.is_fatal()
        {
            // Auth, TLS or cancellation: no other file can succeed either.
            stop.cancel();
        }
        if let Ok(mut r) = results.lock() {
            r.push((action, result));
        }
    }
    if let Some(t) = session.as_mut() {
        t.quit().await;
    }
}

pub(super) async fn transfer_once(
    action: &Action,
    listings: Listings<'_>,
    ctx: &Context,
    session: &mut Option<Box<dyn Transport>>,
) -> Result<FileOutcome, TransportError> {
    let t = session_for(session, ctx).await?;
    match action.kind {
        ActionKind::Upload => upload::upload_file(t.as_mut(), action, listings.local, ctx).await,
        ActionKind::Download => {
            download::download_file(t.as_mut(), action, listings.remote, ctx).await
        }
        other => Err(TransportError::new(
            ErrorKind::Permanent,
            other.as_str(),
            "not a transfer",
        )),
    }
}
