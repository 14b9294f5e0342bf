//! The agent (`ferry run`).
pub mod lock;
pub mod schedule;
