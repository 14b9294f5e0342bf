//! ferry: a scheduled FTPS sync agent.
//!
//! ```text
//! jobs.yaml ─► config (parse raw → validate → domain Job)
//!                  │
//!    trigger: CLI `ferry sync` (later: cron tick, watcher batch)
//!                  ▼
//!    job run ─► scan local  ┐
//!           └─► list remote ┴─► plan (pure) ─► execute (transfers, bounded, retried)
//!                                                  │        └─► verify each file
//!                                                  ▼
//!                                           state (SQLite): what is known in sync,
//!                                           run history
//! ```
//!
//! Modules, in data-flow order:
//! - [`config`]: the job file, from raw serde types to validated [`config::Job`]s.
//! - [`transport`]: the trait every backend implements, with FTPS and local-directory backends.
//! - [`path`], [`listing`]: safe relative paths and the listing type both sides share.
//! - [`local_fs`]: local file operations anchored at the job's opened root, refusing links.
//! - [`scan`]: walk the local tree and the remote tree into listings.
//! - [`plan`]: the pure planner, two listings and recorded state in, actions with reasons out.
//! - [`execute`]: run a plan: temp name, verify, rename; bounded and retried.
//! - [`state`]: the SQLite store of what is known in sync and of past runs.
//! - [`report`]: progress, summaries and JSON output.
//! - [`run`]: one job run end to end, shared by `sync`, `plan` and `demo`.
//! - [`text`]: what is shown of outside text: control characters escaped, secrets redacted.
//! - [`embedded`]: an in-process FTPS server on loopback for `ferry demo` and tests.

pub mod agent;
pub mod check;
pub mod config;
pub mod demo;
pub mod embedded;
pub mod execute;
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
