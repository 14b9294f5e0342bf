//! Remote files a pull job saw and has not taken yet (`ready: stable`): a file is taken only
//! once it has shown the same size and time for the job's `stable_for`, so a file a partner is
//! still writing is never downloaded half-written. Each sighting is the first time the file was
//! seen as it is now; a change starts it again.

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::params;

use super::{StateError, Store, join_mtime, split_mtime};
use crate::listing::Mtime;
use crate::path::RelPath;
use crate::plan::ready::{Stability, stability};

/// A remote file as a listing showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub size: u64,
    pub mtime: Option<Mtime>,
}

impl Store {
    /// Look at the files of `job` a run would download, as listed at `now_ms`: those seen
    /// unchanged for `stable_for` are stable; the others wait, and when `record` is set their
    /// sighting starts now (new or changed files). Sightings of files that are no longer
    /// candidates (taken, or gone) are dropped when recording.
    pub fn observe(
        &self,
        job: &str,
        candidates: &[(RelPath, Seen)],
        now_ms: i64,
        stable_for: Duration,
        record: bool,
    ) -> Result<Vec<Stability>, StateError> {
        let known = self.sightings(job)?;
        let mut out = Vec::with_capacity(candidates.len());
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.wrap(e))?;
        for (path, seen) in candidates {
            let first = match known.get(path.as_str()) {
                Some((before, at)) if before == seen => *at,
                _ => {
                    if record {
                        let (m, p) = split_mtime(seen.mtime);
                        tx.execute(
                            "INSERT OR REPLACE INTO sightings
                                 (job, path, size, mtime_ns, mtime_precision, first_seen_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            params![job, path.as_str(), seen.size as i64, m, p, now_ms],
                        )
                        .map_err(|e| self.wrap(e))?;
                    }
                    now_ms
                }
            };
            out.push(stability(first, now_ms, stable_for));
        }
        if record {
            let wanted: std::collections::HashSet<&str> =
                candidates.iter().map(|(p, _)| p.as_str()).collect();
            for path in known.keys().filter(|k| !wanted.contains(k.as_str())) {
                tx.execute(
                    "DELETE FROM sightings WHERE job = ?1 AND path = ?2",
                    params![job, path],
                )
                .map_err(|e| self.wrap(e))?;
            }
        }
        tx.commit().map_err(|e| self.wrap(e))?;
        Ok(out)
    }

    fn sightings(&self, job: &str) -> Result<BTreeMap<String, (Seen, i64)>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT path, size, mtime_ns, mtime_precision, first_seen_ms
                 FROM sightings WHERE job = ?1",
            )
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![job], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Seen {
                        size: r.get::<_, i64>(1)? as u64,
                        mtime: join_mtime(r.get(2)?, r.get(3)?),
                    },
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(|e| self.wrap(e))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (path, seen, at) = row.map_err(|e| self.wrap(e))?;
            out.insert(path, (seen, at));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> RelPath {
        RelPath::parse(p).expect("path")
    }

    #[test]
    fn a_file_is_stable_once_unchanged_for_stable_for_and_a_change_starts_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let s = Duration::from_secs(3);
        let a = |size| (path("drop/a.csv"), Seen { size, mtime: None });
        let first = store
            .observe("j", &[a(10)], 1_000, s, true)
            .expect("observe");
        assert_eq!(first, vec![Stability::Waiting(s)]);
        // Grown: the clock starts again.
        let grown = store
            .observe("j", &[a(20)], 3_000, s, true)
            .expect("observe");
        assert_eq!(grown, vec![Stability::Waiting(s)]);
        let still = store
            .observe("j", &[a(20)], 5_000, s, true)
            .expect("observe");
        assert_eq!(still, vec![Stability::Waiting(Duration::from_secs(1))]);
        // Without recording (`ferry plan`), nothing is stored.
        let b = (
            path("b.csv"),
            Seen {
                size: 1,
                mtime: None,
            },
        );
        store
            .observe("j", &[a(20), b.clone()], 5_500, s, false)
            .expect("observe");
        let ready = store
            .observe("j", &[a(20), b], 6_000, s, true)
            .expect("observe");
        assert_eq!(ready, vec![Stability::Stable, Stability::Waiting(s)]);
        // Taken: no longer a candidate, its sighting goes.
        store.observe("j", &[], 7_000, s, true).expect("observe");
        assert_eq!(
            store
                .observe("j", &[a(20)], 8_000, s, false)
                .expect("observe"),
            vec![Stability::Waiting(s)]
        );
    }
}
