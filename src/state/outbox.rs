//! The watch-mode outbox: every file the watcher (or a reconcile scan) detects is written here
//! before anything else, and removed only once its upload is verified. A crash, SIGKILL or
//! server outage between the two loses nothing: the agent drains what is left when it starts,
//! and keeps trying with the job's backoff while the server is away.

use rusqlite::params;

use super::{StateError, Store, now_secs};
use crate::path::RelPath;

impl Store {
    /// Note that `path` of `job` changed and must be pushed (kept at its first detection time
    /// when already pending).
    pub fn enqueue(&self, job: &str, path: &RelPath) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO outbox (job, path, detected_at) VALUES (?1, ?2, ?3)",
                params![job, path.as_str(), now_secs()],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(())
    }

    /// The pending files of `job`, oldest first, with when each was detected (Unix seconds).
    pub fn pending(&self, job: &str) -> Result<Vec<(RelPath, i64)>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT path, detected_at FROM outbox WHERE job = ?1 ORDER BY detected_at, path",
            )
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![job], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| self.wrap(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (path, at) = row.map_err(|e| self.wrap(e))?;
            if let Ok(path) = RelPath::parse(&path) {
                out.push((path, at));
            }
        }
        Ok(out)
    }

    /// `path` is on the server and verified (or gone locally): it leaves the outbox.
    pub fn dequeue(&self, job: &str, path: &RelPath) -> Result<(), StateError> {
        self.conn
            .execute(
                "DELETE FROM outbox WHERE job = ?1 AND path = ?2",
                params![job, path.as_str()],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_wait_in_the_outbox_until_dequeued_and_keep_their_first_detection() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let a = RelPath::parse("in/a.csv").expect("path");
        let b = RelPath::parse("b.csv").expect("path");
        store.enqueue("w", &a).expect("a");
        let first = store.pending("w").expect("pending")[0].1;
        store.enqueue("w", &b).expect("b");
        store.enqueue("w", &a).expect("a again");
        let pending = store.pending("w").expect("pending");
        assert_eq!(pending.len(), 2);
        assert_eq!(
            pending.iter().find(|(p, _)| *p == a).map(|(_, t)| *t),
            Some(first)
        );
        assert!(store.pending("other").expect("other").is_empty());
        store.dequeue("w", &a).expect("done");
        assert_eq!(
            store
                .pending("w")
                .expect("pending")
                .into_iter()
                .map(|(p, _)| p)
                .collect::<Vec<_>>(),
            vec![b]
        );
    }
}
