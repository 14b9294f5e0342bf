//! Retrying one operation on the pool: a transient error drops the session, waits, and tries
//! again on another one (reconnecting when the pool has none), up to `retry.attempts` tries.
//!
//! The waits come from `backon`'s exponential schedule (from `initial`, doubling, capped at
//! `max`), each with full jitter (a uniform draw between zero and the scheduled wait), so that
//! workers cut off together by one lost connection do not come back in step
//! ([`RetryPolicy::delays`]). Only errors that
//! a later try can cure are retried (transient replies and lost connections, 421); a refused
//! file, a local error or a changed file is not, and an authentication or TLS failure stops
//! the run. Cancellation ends any wait or operation at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Context, FileOutcome, cancelled, download, upload};
use crate::config::RetryPolicy;
use crate::listing::Listing;
use crate::path::RelPath;
use crate::plan::Action;
use crate::transport::pool::Lease;
use crate::transport::{DirListing, ErrorKind, Transport, TransportError};

/// The waits between tries of `policy` (see [`RetryPolicy::delays`]).
pub fn delays(policy: &RetryPolicy) -> impl Iterator<Item = Duration> + use<> {
    policy.delays()
}

/// One operation on the server, retried as a whole.
pub(super) enum Op<'a> {
    Upload {
        action: &'a Action,
        local: &'a Listing,
    },
    Download {
        action: &'a Action,
        remote: &'a Listing,
        /// Two-way: the local listing; the download replaces only what it lists (or nothing).
        local: Option<&'a Listing>,
    },
    MakeDir(&'a RelPath),
    DeleteFile(&'a RelPath),
    RemoveDir(&'a RelPath),
    List(&'a RelPath),
    /// Two-way conflict copy: rename a remote file.
    Rename(&'a RelPath, &'a RelPath),
}

/// What an [`Op`] gives back.
pub(super) enum Done {
    File(FileOutcome),
    Nothing,
    Listing(DirListing),
}

impl Op<'_> {
    fn what(&self) -> &'static str {
        match self {
            Op::Upload { .. } => "upload",
            Op::Download { .. } => "download",
            Op::MakeDir(_) => "make_remote_dir",
            Op::DeleteFile(_) => "delete_remote_file",
            Op::RemoveDir(_) => "remove_remote_dir",
            Op::List(_) => "list",
            Op::Rename(..) => "rename_remote_file",
        }
    }

    fn path(&self) -> &RelPath {
        match self {
            Op::Upload { action, .. } | Op::Download { action, .. } => &action.path,
            Op::MakeDir(p) | Op::DeleteFile(p) | Op::RemoveDir(p) | Op::List(p) => p,
            Op::Rename(p, _) => p,
        }
    }

    async fn run(&self, t: &mut dyn Transport, ctx: &Context) -> Result<Done, TransportError> {
        Ok(match self {
            Op::Upload { action, local } => {
                Done::File(upload::upload_file(t, action, local, ctx).await?)
            }
            Op::Download {
                action,
                remote,
                local,
            } => Done::File(download::download_file(t, action, remote, *local, ctx).await?),
            Op::MakeDir(p) => t.make_dir(p).await.map(|()| Done::Nothing)?,
            Op::DeleteFile(p) => match &ctx.remote_backup {
                Some(dir) => t.move_out(p, dir, true).await.map(|_| Done::Nothing)?,
                None => t.delete_file(p).await.map(|()| Done::Nothing)?,
            },
            Op::RemoveDir(p) => t.remove_dir(p).await.map(|()| Done::Nothing)?,
            Op::List(p) => Done::Listing(t.list_dir(p).await?),
            Op::Rename(from, to) => t.rename(from, to).await.map(|()| Done::Nothing)?,
        })
    }
}

/// Run `op` on a session from the job's pool until it succeeds or fails for good. The session
/// is kept in `slot` for the next operation; after any error but [`ErrorKind::Changed`] it is
/// dropped (it may be mid-transfer), so the next try logs in afresh or takes another idle one.
pub(super) async fn with_retry(
    ctx: &Context,
    slot: &mut Option<Lease>,
    stop: &CancellationToken,
    op: Op<'_>,
) -> Result<Done, TransportError> {
    let mut waits = delays(&ctx.retry);
    let mut attempt = 1u32;
    loop {
        let result = tokio::select! {
            r = attempt_once(ctx, slot, &op) => r,
            _ = stop.cancelled() => Err(cancelled()),
        };
        let e = match result {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if e.kind != ErrorKind::Changed {
            *slot = None;
        }
        if !e.is_retryable() {
            return Err(e);
        }
        let Some(wait) = waits.next() else {
            return Err(e);
        };
        tracing::warn!(job = %ctx.job, path = %op.path(), action = op.what(), attempt,
            error = %e, next_attempt_in = ?wait,
            "transient error; trying again on another connection");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {},
            _ = stop.cancelled() => return Err(cancelled()),
        }
        attempt += 1;
    }
}

/// [`with_retry`] for an operation that gives nothing back.
pub(super) async fn retry_unit(
    ctx: &Context,
    slot: &mut Option<Lease>,
    stop: &CancellationToken,
    op: Op<'_>,
) -> Result<(), TransportError> {
    with_retry(ctx, slot, stop, op).await.map(|_| ())
}

async fn attempt_once(
    ctx: &Context,
    slot: &mut Option<Lease>,
    op: &Op<'_>,
) -> Result<Done, TransportError> {
    // A session that cannot open another data connection makes way for a new login.
    if let Some(lease) = slot.as_mut()
        && lease.session().needs_new_session()
        && let Some(lease) = slot.take()
    {
        lease.retire();
    }
    if slot.is_none() {
        *slot = Some(ctx.pool.get(&ctx.remote_root).await?);
    }
    match slot.as_mut() {
        Some(lease) => op.run(lease.session(), ctx).await,
        None => Err(TransportError::new(
            ErrorKind::Transient,
            "connect",
            "no session",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_jittered_and_bounded_in_number() {
        let policy = RetryPolicy {
            attempts: 10,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let waits: Vec<Duration> = delays(&policy).collect();
        assert_eq!(waits.len(), 9, "attempts includes the first try");
        for (i, w) in waits.iter().enumerate() {
            let cap = (Duration::from_millis(100) * 2u32.pow(i as u32)).min(policy.max);
            assert!(*w <= cap, "wait {i}: {w:?} over {cap:?}");
        }
        // Full jitter: over many draws the waits spread below the cap, not just above half.
        let spread: Vec<Duration> = (0..200).flat_map(|_| delays(&policy).last()).collect();
        assert!(spread.iter().any(|w| *w < Duration::from_millis(500)));
        assert!(spread.iter().any(|w| *w > Duration::from_millis(500)));
        let once = RetryPolicy {
            attempts: 1,
            ..policy
        };
        assert_eq!(delays(&once).count(), 0, "attempts: 1 means no retry");
    }
}
