//! Prometheus metrics of the agent, served by `metrics-exporter-prometheus`'s own HTTP
//! listener on the job file's `metrics:` address (off by default): how a fleet of edge agents
//! is watched.
//!
//! - `ferry_runs_total{job,outcome}`, `ferry_files_transferred_total{job}`,
//!   `ferry_bytes_transferred_total{job}`, `ferry_run_duration_seconds{job}` (histogram),
//!   `ferry_last_success_timestamp_seconds{job}`;
//! - `ferry_outbox_files{job}` (watch jobs) and `ferry_open_connections{endpoint}`, sampled.
//!
//! Without `metrics:` nothing is installed and every call here is a no-op (the `metrics`
//! facade drops what no recorder takes).

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Config;
use crate::state::SharedStore;
use crate::transport::pool::Pools;

/// Serve metrics on `addr`.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| e.to_string())
}

/// A run ended.
pub fn run_finished(job: &str, outcome: &str, took: Duration, files: u64, bytes: u64) {
    let job = job.to_owned();
    metrics::counter!("ferry_runs_total", "job" => job.clone(), "outcome" => outcome.to_owned())
        .increment(1);
    metrics::counter!("ferry_files_transferred_total", "job" => job.clone()).increment(files);
    metrics::counter!("ferry_bytes_transferred_total", "job" => job.clone()).increment(bytes);
    metrics::histogram!("ferry_run_duration_seconds", "job" => job.clone())
        .record(took.as_secs_f64());
    if outcome == "ok" {
        let now = chrono::Utc::now().timestamp() as f64;
        metrics::gauge!("ferry_last_success_timestamp_seconds", "job" => job).set(now);
    }
}

/// Sample the gauges that are states rather than events.
pub async fn sample(pools: &Pools, store: &SharedStore, config: &Config) {
    for (endpoint, pool) in pools.all() {
        metrics::gauge!("ferry_open_connections", "endpoint" => endpoint)
            .set(pool.open_connections() as f64);
    }
    let watched: Vec<String> = config
        .jobs
        .values()
        .filter(|j| j.watch)
        .map(|j| j.name.clone())
        .collect();
    let depths = store
        .call(move |s| {
            Ok(watched
                .into_iter()
                .filter_map(|job| s.pending(&job).ok().map(|p| (job, p.len())))
                .collect::<Vec<_>>())
        })
        .await;
    for (job, depth) in depths.unwrap_or_default() {
        metrics::gauge!("ferry_outbox_files", "job" => job).set(depth as f64);
    }
}
