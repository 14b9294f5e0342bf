//! ferry: a scheduled FTPS sync agent.
//!
//! ```text
//! jobs.yaml ─► config (parse raw → validate → domain Job; problems of this machine per job)
//!                  │
//!    trigger: `ferry sync`, or the agent (`ferry run`): cron timer, watcher + outbox, catch-up
//!                  ▼
//!    run ─► scan local  ┐
//!       └─► list remote ┴─► plan (pure) ─► execute (transfers over the pool, bounded, retried)
//!                                              │        └─► verify each file
//!                                              ▼
//!                                       state (SQLite, off the async threads): what is known
//!                                       in sync, run history, partial transfers, the outbox
//! ```
//!
//! Modules, in data-flow order:
//! - [`config`]: the job file, from raw serde types to validated [`config::Job`]s.
//! - [`agent`]: `ferry run`: schedules, watch folders, the per-job lock, systemd, metrics.
//! - [`run`]: one job run end to end, shared by `sync`, `plan`, the agent and `demo`.
//! - [`transport`]: the trait every backend implements, FTPS and local directory, and the
//!   per-endpoint connection pool.
//! - [`path`], [`listing`]: safe relative paths and the listing type both sides share.
//! - [`local_fs`]: local file operations anchored at the job's opened root, refusing links.
//! - [`scan`]: walk the local tree and the remote tree into listings.
//! - [`plan`]: the pure planner, two listings and recorded state in, actions with reasons out.
//! - [`execute`]: run a plan: temp name, verify, rename; bounded and retried.
//! - [`state`]: the SQLite store of what is known in sync, of runs, partials and the outbox.
//! - [`report`]: progress, summaries, status and JSON output.
//! - [`check`]: `ferry check --connect`: what each server offers, each job's remote root.
//! - [`text`]: what is shown of outside text: control characters escaped, secrets redacted.
//! - [`embedded`]: an in-process FTPS server on loopback for `ferry demo` and tests.
//! - [`demo`]: `ferry demo`, the self-contained tour.

pub mod agent;
pub mod check;
pub mod config;
pub mod demo;
pub mod embedded;
pub mod execute;
pub mod hooks;
pub mod listing;
pub mod local_fs;
pub mod path;
pub mod plan;
pub mod report;
pub mod run;
pub mod scan;
pub mod state;
pub mod text;
pub mod transport;
