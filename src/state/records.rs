//! What is known in sync: one record per job and path, written after each verified transfer.

use rusqlite::params;

use super::{StateError, Store, join_mtime, now_secs, split_mtime};
use crate::listing::Mtime;
use crate::path::RelPath;
use crate::plan::{Records, SyncRecord};

impl Store {
    /// Every record of one job, as the planner needs them: without the SHA-256 (`sha256` is
    /// `None`; the planner decides by sizes and times, and at 200,000 files the digests alone
    /// would be 20 MB). [`Store::digest`] reads one.
    pub fn records(&self, job: &str) -> Result<Records, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT path, local_size, local_mtime_ns, local_mtime_precision,
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
                        sha256: None,
                        remote_size: r.get::<_, i64>(4)? as u64,
                        remote_mtime: join_mtime(r.get(5)?, r.get(6)?),
                    },
                ))
            })
            .map_err(|e| self.wrap(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (path, record) = row.map_err(|e| self.wrap(e))?;
            // A path that no longer validates (it never should) is dropped, not trusted.
            if let Ok(path) = RelPath::parse(&path) {
                out.push((path, record));
            }
        }
        // Built in one go: full nodes, half the memory of inserts in key order.
        out.shrink_to_fit();
        Ok(out.into_iter().collect())
    }

    /// The SHA-256 recorded for one file of a job, if any.
    pub fn digest(&self, job: &str, path: &RelPath) -> Result<Option<String>, StateError> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT sha256 FROM synced WHERE job = ?1 AND path = ?2",
                params![job, path.as_str()],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.wrap(e))
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
        // Once per transferred file: the statement is parsed once per connection, not each
        // time.
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO synced (job, path, local_size, local_mtime_ns,
                     local_mtime_precision, sha256, remote_size, remote_mtime_ns,
                     remote_mtime_precision, synced_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
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
                ])
            })
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
            .prepare_cached(
                "UPDATE synced SET remote_size = ?3, remote_mtime_ns = ?4, remote_mtime_precision = ?5
                 WHERE job = ?1 AND path = ?2",
            )
            .and_then(|mut statement| {
                statement.execute(params![job, path.as_str(), size as i64, rm, rp])
            })
            .map_err(|e| self.wrap(e))?;
        Ok(())
    }

    /// Drop records (files gone from both sides, or deleted by the run), in one transaction:
    /// all of them or, when a delete fails, none (the next run finds them to forget again).
    pub fn forget(&self, job: &str, paths: &[RelPath]) -> Result<(), StateError> {
        self.in_transaction(|store| {
            let mut statement = store
                .conn
                .prepare_cached("DELETE FROM synced WHERE job = ?1 AND path = ?2")
                .map_err(|e| store.wrap(e))?;
            for path in paths {
                statement
                    .execute(params![job, path.as_str()])
                    .map_err(|e| store.wrap(e))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::Precision;
    use crate::state::SCHEMA_VERSION;

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
        let without_digest = SyncRecord {
            sha256: None,
            ..record(5)
        };
        assert_eq!(recs.get(&path), Some(&without_digest));
        assert_eq!(
            store.digest("job", &path).expect("digest"),
            record(5).sha256,
            "the digest is kept, read on its own"
        );
        assert_eq!(
            store
                .digest("job", &RelPath::parse("nope").expect("path"))
                .expect("digest"),
            None
        );
        store
            .forget("job", std::slice::from_ref(&path))
            .expect("forget");
        assert!(store.records("job").expect("records").is_empty());
        assert_eq!(store.records("other").expect("records").len(), 1);
    }
}
