//! Retrying one transfer: exponential backoff with jitter, a fresh session after any error.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::workers::transfer_once;
use super::{Context, FileOutcome, Listings, cancelled};
use crate::config::RetryPolicy;
use crate::plan::Action;
use crate::transport::{ErrorKind, Transport, TransportError};

/// The delay before retry number `attempt` (1-based): exponential from `initial`, capped at
/// `max`, with "equal jitter" (half fixed, half random) so parallel workers spread out.
pub fn backoff_delay(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .initial
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let capped = exp.min(policy.max);
    let half = capped / 2;
    let jitter = rand::random_range(0.0..=1.0f64);
    half + half.mul_f64(jitter)
}

pub(super) async fn transfer_with_retry(
    action: &Action,
    listings: Listings<'_>,
    ctx: &Context,
    session: &mut Option<Box<dyn Transport>>,
    stop: &CancellationToken,
) -> Result<FileOutcome, TransportError> {
    let mut attempt = 1;
    loop {
        let result = tokio::select! {
            r = transfer_once(action, listings, ctx, session) => r,
            _ = stop.cancelled() => Err(cancelled()),
        };
        match result {
            Ok(done) => return Ok(done),
            Err(e) => {
                // Whatever happened, the session may be mid-transfer (a download cut off at
                // its listed size, a reset): never reuse it. Only a file skipped before or after
                // a clean transfer leaves it usable. A cancelled download removed its own
                // temporary file when its future was dropped.
                if e.kind != ErrorKind::Changed {
                    *session = None;
                }
                if !e.is_retryable() || attempt >= ctx.retry.attempts {
                    return Err(e);
                }
                let delay = backoff_delay(&ctx.retry, attempt);
                tracing::warn!(path = %action.path, attempt, error = %e, ?delay, "transient error, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {},
                    _ = stop.cancelled() => return Err(cancelled()),
                }
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            attempts: 10,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for attempt in 1..10 {
            let d = backoff_delay(&policy, attempt);
            let full = (Duration::from_millis(100) * 2u32.pow(attempt - 1)).min(policy.max);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
    }
}
