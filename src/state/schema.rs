//! The tables of the state database, created when missing.

use rusqlite::Connection;

/// The schema this build writes and understands.
pub const SCHEMA_VERSION: i64 = 4;

/// Create every table and index that is missing, and record the schema version. An older
/// database gains the tables added since (2: `partials`, 3: `outbox`, 4: `sightings`); nothing else changes.
pub(super) fn create(conn: &Connection) -> rusqlite::Result<()> {
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
             -- Version 2: transfers in flight, so that a restarted ferry resumes them.
             CREATE TABLE IF NOT EXISTS partials (
                 job TEXT NOT NULL,
                 path TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 remote_size INTEGER,
                 remote_mtime_ns INTEGER,
                 remote_mtime_precision TEXT,
                 local_dev INTEGER,
                 local_ino INTEGER,
                 local_changed_ns INTEGER,
                 local_size INTEGER,
                 local_mtime_ns INTEGER,
                 started_at INTEGER NOT NULL,
                 PRIMARY KEY (job, path, kind)
             );
             -- Version 3: the watch-mode outbox, files detected and not yet verified remotely.
             CREATE TABLE IF NOT EXISTS outbox (
                 job TEXT NOT NULL,
                 path TEXT NOT NULL,
                 detected_at INTEGER NOT NULL,
                 PRIMARY KEY (job, path)
             );
             -- Version 4: remote files a pull job saw but has not taken yet (ready: stable).
             CREATE TABLE IF NOT EXISTS sightings (
                 job TEXT NOT NULL,
                 path TEXT NOT NULL,
                 size INTEGER NOT NULL,
                 mtime_ns INTEGER,
                 mtime_precision TEXT,
                 first_seen_ms INTEGER NOT NULL,
                 PRIMARY KEY (job, path)
             );
             INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', '4');
             PRAGMA user_version = 4;
             COMMIT;",
    )
}
