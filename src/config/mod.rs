//! The job file: raw serde types that mirror the YAML, then validation into domain types.
//!
//! ```text
//! jobs.yaml ─► raw::parse_document (node tree with line/column)
//!           ─► raw::deserialize_collecting (serde, one endpoint / job at a time, every error)
//!           ─► validate (defaults, paths, secrets' sources, cron, globs) ─► model::Config
//! ```
//!
//! Callers use [`load`] (or [`parse_str`] in tests), print [`ConfigError`] as it is (one line
//! per problem, ``file:line:column: job `x`: message``) and show [`Config::warnings`] and
//! [`Config::notes`]. A job that cannot run on this machine now (a missing local directory, an
//! unreadable password file) does not make the file invalid: [`Config::unavailable`] says why,
//! and each command skips or reports that job. Secrets are read only when connecting, by
//! [`read_password`]. Nothing here touches the network.

pub mod model;
mod raw;
mod validate;

pub use model::*;
pub use raw::Problem;
pub use validate::{
    ConfigError, check_private_file, load, parse_schedule, parse_str, read_password,
};
