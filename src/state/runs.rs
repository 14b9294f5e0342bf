//! The history of runs: one row per run, started and finished, for `ferry status`.

use rusqlite::{OptionalExtension, params};

use super::{StateError, Store, now_secs};

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
    /// Why a failed run failed, as recorded (escaped and redacted).
    pub message: Option<String>,
}

impl Store {
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
        self.run_where(job, "")
    }

    /// The most recent run of a job that ended `ok`.
    pub fn last_success(&self, job: &str) -> Result<Option<RunRow>, StateError> {
        self.run_where(job, "AND outcome = 'ok'")
    }

    fn run_where(&self, job: &str, condition: &str) -> Result<Option<RunRow>, StateError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT id, job, trigger, started_at, finished_at, outcome, transferred, bytes,
                            skipped, failed, verified, deleted, message
                     FROM runs WHERE job = ?1 {condition} ORDER BY id DESC LIMIT 1"
                ),
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
                        message: r.get(12)?,
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
