//! Transfers in flight: written when a transfer starts, removed when it is verified or given
//! up, so that a ferry restarted after a crash, SIGKILL or power loss resumes a partial file
//! instead of starting over, and only when the partial is still the same transfer: a download
//! resumes only while the server lists the file as it did when the partial was started, an
//! upload only while the local file is the one it was started from (device, inode, change
//! time, size, modification time).

use rusqlite::{OptionalExtension, params};

use super::{StateError, Store, join_mtime, now_secs, split_mtime};
use crate::listing::{FileId, Mtime, Precision};
use crate::path::RelPath;

/// Which way a partial file was going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartialKind {
    Download,
    Upload,
}

impl PartialKind {
    fn as_str(self) -> &'static str {
        match self {
            PartialKind::Download => "download",
            PartialKind::Upload => "upload",
        }
    }
}

/// What a partial transfer was started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartialSource {
    /// A download of the file the server listed with this size and time.
    Remote { size: u64, mtime: Option<Mtime> },
    /// An upload of this local file, with this size and time.
    Local {
        id: FileId,
        size: u64,
        mtime: Option<Mtime>,
    },
}

impl PartialSource {
    fn kind(&self) -> PartialKind {
        match self {
            PartialSource::Remote { .. } => PartialKind::Download,
            PartialSource::Local { .. } => PartialKind::Upload,
        }
    }
}

impl Store {
    /// Note that a transfer of `path` started from `source` (replacing an older note).
    pub fn put_partial(
        &self,
        job: &str,
        path: &RelPath,
        source: &PartialSource,
    ) -> Result<(), StateError> {
        let kind = source.kind().as_str();
        let (rs, rm, rp, ld, li, lc, ls, lm) = match source {
            PartialSource::Remote { size, mtime } => {
                let (m, p) = split_mtime(*mtime);
                (Some(*size as i64), m, p, None, None, None, None, None)
            }
            PartialSource::Local { id, size, mtime } => (
                None,
                None,
                None,
                Some(id.dev as i64),
                Some(id.ino as i64),
                Some(id.changed_ns),
                Some(*size as i64),
                mtime.map(|m| m.nanos),
            ),
        };
        self.conn
            .execute(
                "INSERT OR REPLACE INTO partials (job, path, kind, remote_size, remote_mtime_ns,
                     remote_mtime_precision, local_dev, local_ino, local_changed_ns, local_size,
                     local_mtime_ns, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    job,
                    path.as_str(),
                    kind,
                    rs,
                    rm,
                    rp,
                    ld,
                    li,
                    lc,
                    ls,
                    lm,
                    now_secs()
                ],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(())
    }

    /// What the partial transfer of `path` in that direction was started from, if one is noted.
    pub fn partial(
        &self,
        job: &str,
        path: &RelPath,
        kind: PartialKind,
    ) -> Result<Option<PartialSource>, StateError> {
        self.conn
            .query_row(
                "SELECT remote_size, remote_mtime_ns, remote_mtime_precision, local_dev, local_ino,
                        local_changed_ns, local_size, local_mtime_ns
                 FROM partials WHERE job = ?1 AND path = ?2 AND kind = ?3",
                params![job, path.as_str(), kind.as_str()],
                |r| {
                    Ok(match kind {
                        PartialKind::Download => PartialSource::Remote {
                            size: r.get::<_, Option<i64>>(0)?.unwrap_or(0) as u64,
                            mtime: join_mtime(r.get(1)?, r.get(2)?),
                        },
                        PartialKind::Upload => PartialSource::Local {
                            id: FileId {
                                dev: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u64,
                                ino: r.get::<_, Option<i64>>(4)?.unwrap_or(0) as u64,
                                changed_ns: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
                            },
                            size: r.get::<_, Option<i64>>(6)?.unwrap_or(0) as u64,
                            mtime: r
                                .get::<_, Option<i64>>(7)?
                                .map(|n| Mtime::new(n, Precision::Nanosecond)),
                        },
                    })
                },
            )
            .optional()
            .map_err(|e| self.wrap(e))
    }

    /// Forget the partial transfer of `path` in that direction (done, or given up).
    pub fn remove_partial(
        &self,
        job: &str,
        path: &RelPath,
        kind: PartialKind,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "DELETE FROM partials WHERE job = ?1 AND path = ?2 AND kind = ?3",
                params![job, path.as_str(), kind.as_str()],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(())
    }

    /// Every partial transfer noted for a job.
    pub fn partial_paths(&self, job: &str) -> Result<Vec<(RelPath, PartialKind)>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, kind FROM partials WHERE job = ?1 ORDER BY path")
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![job], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.wrap(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (path, kind) = row.map_err(|e| self.wrap(e))?;
            let kind = match kind.as_str() {
                "upload" => PartialKind::Upload,
                _ => PartialKind::Download,
            };
            if let Ok(path) = RelPath::parse(&path) {
                out.push((path, kind));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partials_round_trip_by_direction_and_are_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let path = RelPath::parse("a/big.bin").expect("path");
        let remote = PartialSource::Remote {
            size: 100,
            mtime: Some(Mtime::from_secs(1_700_000_000, Precision::Minute)),
        };
        let local = PartialSource::Local {
            id: FileId {
                dev: 1,
                ino: 2,
                changed_ns: 3,
            },
            size: 4,
            mtime: Some(Mtime::new(5, Precision::Nanosecond)),
        };
        store.put_partial("j", &path, &remote).expect("put");
        store.put_partial("j", &path, &local).expect("put");
        assert_eq!(
            store
                .partial("j", &path, PartialKind::Download)
                .expect("get"),
            Some(remote)
        );
        assert_eq!(
            store.partial("j", &path, PartialKind::Upload).expect("get"),
            Some(local)
        );
        assert_eq!(store.partial_paths("j").expect("list").len(), 2);
        store
            .remove_partial("j", &path, PartialKind::Download)
            .expect("remove");
        assert_eq!(
            store
                .partial("j", &path, PartialKind::Download)
                .expect("get"),
            None
        );
        assert_eq!(
            store
                .partial("other", &path, PartialKind::Upload)
                .expect("get"),
            None
        );
    }

    #[test]
    fn a_version_1_database_gains_the_partials_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("ferry.db");
        {
            let conn = rusqlite::Connection::open(&db).expect("open");
            conn.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 PRAGMA user_version = 1;",
            )
            .expect("v1");
        }
        let store = Store::open(dir.path()).expect("migrate");
        assert_eq!(
            store.schema_version().expect("version"),
            crate::state::SCHEMA_VERSION
        );
        let path = RelPath::parse("x").expect("path");
        store
            .put_partial(
                "j",
                &path,
                &PartialSource::Remote {
                    size: 1,
                    mtime: None,
                },
            )
            .expect("the new table works");
    }
}
