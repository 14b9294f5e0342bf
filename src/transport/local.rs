//! A transport over a plain local directory.
