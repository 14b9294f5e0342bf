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

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::listing::{Mtime, Precision};
use crate::path::RelPath;
use crate::plan::{Records, SyncRecord};

/// The schema this build writes and understands.
pub const SCHEMA_VERSION: i64 = 1;

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
}

/// How a run ended, as stored and shown by `ferry status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunTotals {
    pub transferred: u64,
    pub bytes: u64,
    pub skipped: u64,
    pub failed: u64,
    pub verified: u64,
    pub deleted: u64,
}

/// One row of run history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunRow {
    pub id: i64,
    pub job: String,
    pub trigger: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: Option<String>,
    pub totals: RunTotals,
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

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn split_mtime(m: Option<Mtime>) -> (Option<i64>, Option<&'static str>) {
    match m {
        Some(m) => (Some(m.nanos), Some(m.precision.as_str())),
        None => (None, None),
    }
}

fn join_mtime(nanos: Option<i64>, precision: Option<String>) -> Option<Mtime> {
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
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS synced (
                 job TEXT NOT NULL,
                 path TEXT NOT NULL,
                 local_size INTEGER NOT NULL,
                 local_mtime_ns INTEGER,
                 local_mtime_precision TEXT,
                 sha256 TEXT,
                 remote_size INTEGER NOT NULL,
                 remote_mtime_ns INTEGER,
                 remote_mtime_precision TEXT,
                 synced_at INTEGER NOT NULL,
                 PRIMARY KEY (job, path)
             );
             CREATE TABLE IF NOT EXISTS runs (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 job TEXT NOT NULL,
                 trigger TEXT NOT NULL,
                 started_at INTEGER NOT NULL,
                 finished_at INTEGER,
                 outcome TEXT,
                 transferred INTEGER NOT NULL DEFAULT 0,
                 bytes INTEGER NOT NULL DEFAULT 0,
                 skipped INTEGER NOT NULL DEFAULT 0,
                 failed INTEGER NOT NULL DEFAULT 0,
                 verified INTEGER NOT NULL DEFAULT 0,
                 deleted INTEGER NOT NULL DEFAULT 0,
                 message TEXT
             );
             CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, id);
             INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', '1');
             PRAGMA user_version = 1;
             COMMIT;",
        )
        .map_err(wrap)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn wrap(&self, source: rusqlite::Error) -> StateError {
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

    /// Every record of one job.
    pub fn records(&self, job: &str) -> Result<Records, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT path, local_size, local_mtime_ns, local_mtime_precision, sha256,
                        remote_size, remote_mtime_ns, remote_mtime_precision
                 FROM synced WHERE job = ?1",
            )
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![job], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    SyncRecord {
                        local_size: r.get::<_, i64>(1)? as u64,
                        local_mtime: join_mtime(r.get(2)?, r.get(3)?),
                        sha256: r.get(4)?,
                        remote_size: r.get::<_, i64>(5)? as u64,
                        remote_mtime: join_mtime(r.get(6)?, r.get(7)?),
                    },
                ))
            })
            .map_err(|e| self.wrap(e))?;
        let mut out = Records::new();
        for row in rows {
            let (path, record) = row.map_err(|e| self.wrap(e))?;
            // A path that no longer validates (it never should) is dropped, not trusted.
            if let Ok(path) = RelPath::parse(&path) {
                out.insert(path, record);
            }
        }
        Ok(out)
    }

    /// Record one verified file.
    pub fn put_record(
        &self,
        job: &str,
        path: &RelPath,
        record: &SyncRecord,
    ) -> Result<(), StateError> {
        let (lm, lp) = split_mtime(record.local_mtime);
        let (rm, rp) = split_mtime(record.remote_mtime);
        self.conn
            .execute(
                "INSERT OR REPLACE INTO synced (job, path, local_size, local_mtime_ns,
                     local_mtime_precision, sha256, remote_size, remote_mtime_ns,
                     remote_mtime_precision, synced_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    job,
                    path.as_str(),
                    record.local_size as i64,
                    lm,
                    lp,
                    record.sha256,
                    record.remote_size as i64,
                    rm,
                    rp,
                    now_secs()
                ],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(())
    }

    /// Update only the remote fingerprint of a record (after re-listing an uploaded file).
    pub fn set_remote_fingerprint(
        &self,
        job: &str,
        path: &RelPath,
        size: u64,
        mtime: Option<Mtime>,
    ) -> Result<(), StateError> {
        let (rm, rp) = split_mtime(mtime);
        self.conn
            .execute(
                "UPDATE synced SET remote_size = ?3, remote_mtime_ns = ?4, remote_mtime_precision = ?5
                 WHERE job = ?1 AND path = ?2",
                params![job, path.as_str(), size as i64, rm, rp],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(())
    }

    /// Drop records (files gone from both sides, or deleted by the run).
    pub fn forget(&self, job: &str, paths: &[RelPath]) -> Result<(), StateError> {
        for path in paths {
            self.conn
                .execute(
                    "DELETE FROM synced WHERE job = ?1 AND path = ?2",
                    params![job, path.as_str()],
                )
                .map_err(|e| self.wrap(e))?;
        }
        Ok(())
    }

    /// Start a run row; returns its id.
    pub fn start_run(&self, job: &str, trigger: &str) -> Result<i64, StateError> {
        self.conn
            .execute(
                "INSERT INTO runs (job, trigger, started_at) VALUES (?1, ?2, ?3)",
                params![job, trigger, now_secs()],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Close a run row with its outcome and totals.
    pub fn finish_run(
        &self,
        id: i64,
        outcome: &str,
        totals: &RunTotals,
        message: Option<&str>,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, outcome = ?3, transferred = ?4, bytes = ?5,
                     skipped = ?6, failed = ?7, verified = ?8, deleted = ?9, message = ?10
                 WHERE id = ?1",
                params![
                    id,
                    now_secs(),
                    outcome,
                    totals.transferred as i64,
                    totals.bytes as i64,
                    totals.skipped as i64,
                    totals.failed as i64,
                    totals.verified as i64,
                    totals.deleted as i64,
                    // A server's reply may be quoted here: stored escaped and redacted.
                    message.map(|m| crate::text::clean(m, 2000))
                ],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(())
    }

    /// The most recent run of a job.
    pub fn last_run(&self, job: &str) -> Result<Option<RunRow>, StateError> {
        self.conn
            .query_row(
                "SELECT id, job, trigger, started_at, finished_at, outcome, transferred, bytes,
                        skipped, failed, verified, deleted
                 FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT 1",
                params![job],
                |r| {
                    Ok(RunRow {
                        id: r.get(0)?,
                        job: r.get(1)?,
                        trigger: r.get(2)?,
                        started_at: r.get(3)?,
                        finished_at: r.get(4)?,
                        outcome: r.get(5)?,
                        totals: RunTotals {
                            transferred: r.get::<_, i64>(6)? as u64,
                            bytes: r.get::<_, i64>(7)? as u64,
                            skipped: r.get::<_, i64>(8)? as u64,
                            failed: r.get::<_, i64>(9)? as u64,
                            verified: r.get::<_, i64>(10)? as u64,
                            deleted: r.get::<_, i64>(11)? as u64,
                        },
                    })
                },
            )
            .optional()
            .map_err(|e| self.wrap(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> SyncRecord {
        SyncRecord {
            local_size: n,
            local_mtime: Some(Mtime::new(1_700_000_000_123_456_789, Precision::Nanosecond)),
            sha256: Some("ab".repeat(32)),
            remote_size: n,
            remote_mtime: Some(Mtime::from_secs(1_700_000_040, Precision::Minute)),
        }
    }

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = RelPath::parse("a/b c.txt").expect("path");
        {
            let store = Store::open(dir.path()).expect("open");
            store.put_record("job", &path, &record(5)).expect("put");
            store
                .put_record("other", &path, &record(9))
                .expect("put other");
        }
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        let recs = store.records("job").expect("records");
        assert_eq!(recs.get(&path), Some(&record(5)));
        store
            .forget("job", std::slice::from_ref(&path))
            .expect("forget");
        assert!(store.records("job").expect("records").is_empty());
        assert_eq!(store.records("other").expect("records").len(), 1);
    }

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

    #[test]
    fn runs_are_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let id = store.start_run("job", "cli").expect("start");
        let totals = RunTotals {
            transferred: 3,
            bytes: 42,
            ..RunTotals::default()
        };
        store.finish_run(id, "ok", &totals, None).expect("finish");
        let last = store.last_run("job").expect("last").expect("some");
        assert_eq!(last.outcome.as_deref(), Some("ok"));
        assert_eq!(last.totals, totals);
    }
}
