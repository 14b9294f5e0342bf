//! The job file: raw serde types that mirror the YAML, then validation into domain types.

pub mod model;

pub use model::*;
