//! The state database: what ferry knows to be in sync, and the history of runs.
//!
//! One SQLite file (`ferry.db` in the state directory), WAL mode, schema version recorded in
//! `PRAGMA user_version` and in the `meta` table. For each job and path it keeps what both sides
//! looked like right after the last verified transfer: local size and mtime, the SHA-256 of the
//! content, and the remote entry *as the server listed it*. Comparing a new listing with that
//! record, rather than comparing clocks, is what lets ferry see changes on servers that list
//! minute-precision times in their own time zone.
//!
//! Records are written only for verified actions, one at a time, so an interrupted run loses
//! nothing it had finished.
//!
//! The parts: `schema` creates the tables, `records` holds what is known in sync, `runs`
//! the history of runs, `partials` the transfers in flight (for resuming them), `outbox` the
//! files a watch job has yet to push.

mod outbox;
mod partials;
mod records;
mod runs;
mod schema;
mod sightings;

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use crate::listing::{Mtime, Precision};

pub use partials::{PartialKind, PartialSource};
pub use runs::{RunRow, RunTotals};
pub use schema::SCHEMA_VERSION;
pub use sightings::Seen;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state database {path} has schema version {found}, newer than this ferry understands ({SCHEMA_VERSION})"
    )]
    TooNew { path: PathBuf, found: i64 },
    /// A call on the store panicked, so the store may be half-way through something.
    #[error("the state store is unusable: a call on it panicked")]
    Poisoned,
}

/// The store as a run's tasks and the agent's loops share it. Every [`call`](Self::call) runs on
/// tokio's blocking pool, never on an async worker thread: a commit waits for fsync, and a
/// database another process holds waits for its lock (up to the busy timeout), which would
/// otherwise stall every transfer scheduled on that thread.
#[derive(Clone)]
pub struct SharedStore(Arc<Mutex<Store>>);

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedStore")
    }
}

impl SharedStore {
    pub fn new(store: Store) -> Self {
        SharedStore(Arc::new(Mutex::new(store)))
    }

    /// Run `f` on the store, on the blocking pool.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StateError>
    where
        F: FnOnce(&Store) -> Result<R, StateError> + Send + 'static,
        R: Send + 'static,
    {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let store = inner.lock().map_err(|_| StateError::Poisoned)?;
            f(&store)
        })
        .await
        .map_err(|_| StateError::Poisoned)?
    }

    /// Run `f` on the store on this thread: for code that is not on an async worker (start-up,
    /// `ferry status`, tests).
    pub fn blocking<R>(
        &self,
        f: impl FnOnce(&Store) -> Result<R, StateError>,
    ) -> Result<R, StateError> {
        let store = self.0.lock().map_err(|_| StateError::Poisoned)?;
        f(&store)
    }
}

/// An open state database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Take group and other permissions off `path` when it has any (ours to change: we own it);
/// warn when that is not possible.
fn restrict_mode(path: &Path, mode: u32) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.permissions().mode() & 0o077 == 0 {
        return;
    }
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        tracing::warn!(path = %path.display(), error = %e,
            "state is readable by other users and its mode cannot be changed");
    }
}

pub(super) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(super) fn split_mtime(m: Option<Mtime>) -> (Option<i64>, Option<&'static str>) {
    match m {
        Some(m) => (Some(m.nanos), Some(m.precision.as_str())),
        None => (None, None),
    }
}

pub(super) fn join_mtime(nanos: Option<i64>, precision: Option<String>) -> Option<Mtime> {
    let precision = Precision::parse(precision.as_deref()?)?;
    Some(Mtime::new(nanos?, precision))
}

impl Store {
    /// Open (creating if needed) `ferry.db` in `dir`. The directory is made owner-only (0700)
    /// and the database 0600: run messages can quote a server's replies.
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        let create_err = |source| StateError::CreateDir {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(create_err)?;
        restrict_mode(dir, 0o700);
        Self::open_file(&dir.join("ferry.db"))
    }

    /// Open a database file directly (created 0600; SQLite gives its WAL files the same mode).
    pub fn open_file(path: &Path) -> Result<Store, StateError> {
        let wrap = |source| StateError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => restrict_mode(path, 0o600),
            Err(source) => {
                return Err(StateError::CreateDir {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        let conn = Connection::open(path).map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(wrap)?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(wrap)?;
        if found > SCHEMA_VERSION {
            return Err(StateError::TooNew {
                path: path.to_path_buf(),
                found,
            });
        }
        schema::create(&conn).map_err(wrap)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Run `f` as one transaction: its writes commit together (one commit to the WAL, not one
    /// per statement), or not at all when `f` or the commit fails.
    pub fn in_transaction<R>(
        &self,
        f: impl FnOnce(&Store) -> Result<R, StateError>,
    ) -> Result<R, StateError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.wrap(e))?;
        let out = f(self)?;
        tx.commit().map_err(|e| self.wrap(e))?;
        Ok(out)
    }

    pub(super) fn wrap(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version the file carries.
    pub fn schema_version(&self) -> Result<i64, StateError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.wrap(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_mode_is_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("pragma");
        assert_eq!(mode, "wal");
    }

    #[test]
    fn state_directory_and_database_are_owner_only() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("state");
        let store = Store::open(&dir).expect("open");
        store.start_run("j", "test").expect("write");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for name in ["ferry.db", "ferry.db-wal", "ferry.db-shm"] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        drop(store);
        // A state directory and database left open to others by an older ferry are tightened.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(dir.join("ferry.db"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        Store::open(&dir).expect("reopen");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("ferry.db")), 0o600);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ferry.db");
        {
            let conn = Connection::open(&file).expect("open");
            conn.pragma_update(None, "user_version", 99).expect("set");
        }
        let err = Store::open_file(&file).err().expect("must refuse");
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }
}
