//! The results table: one row per scenario and tool, medians of the runs, and each baseline's
//! ratio to ferry (ferry's wall time divided by the baseline's: below 1 is ferry ahead).

use std::time::Duration;

use crate::child::Cost;

/// What a scenario moves, for the rate column.
#[derive(Debug, Clone, Copy)]
pub enum Work {
    Files(usize),
    Bytes(u64),
    /// A no-op: files looked at, none moved.
    Checked(usize),
}

#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub tool: String,
    pub costs: Vec<Cost>,
    pub work: Work,
    /// Whether this row is ferry's (the others get a ratio to the ferry row of their scenario).
    pub is_ferry: bool,
}

impl Row {
    pub fn wall(&self) -> Duration {
        median(self.costs.iter().map(|c| c.wall.as_secs_f64()).collect())
            .map(Duration::from_secs_f64)
            .unwrap_or_default()
    }

    fn cpu(&self) -> f64 {
        median(self.costs.iter().map(|c| c.cpu).collect()).unwrap_or_default()
    }

    pub fn rss_mib(&self) -> f64 {
        median(
            self.costs
                .iter()
                .map(|c| c.max_rss_kib as f64 / 1024.0)
                .collect(),
        )
        .unwrap_or_default()
    }

    fn rate(&self) -> String {
        let secs = self.wall().as_secs_f64().max(1e-6);
        match self.work {
            Work::Files(n) => format!("{:.0} files/s", n as f64 / secs),
            Work::Checked(n) => format!("{:.0} files/s checked", n as f64 / secs),
            Work::Bytes(b) => format!("{:.0} MiB/s", b as f64 / (1u64 << 20) as f64 / secs),
        }
    }
}

/// The median of some numbers (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The table, in Markdown, with notes below it.
pub fn render(rows: &[Row], runs: usize) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "| scenario | tool | wall (median of {runs}) | rate | CPU user+sys | peak RSS | ferry ÷ tool (wall) |\n"
    ));
    out.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for row in rows {
        let ratio = if row.is_ferry {
            String::new()
        } else {
            rows.iter()
                .find(|r| r.is_ferry && r.scenario == row.scenario)
                .map(|f| {
                    format!(
                        "{:.2}",
                        f.wall().as_secs_f64() / row.wall().as_secs_f64().max(1e-6)
                    )
                })
                .unwrap_or_default()
        };
        out.push_str(&format!(
            "| {} | {} | {:.2} s | {} | {:.2} s | {:.0} MiB | {} |\n",
            row.scenario,
            row.tool,
            row.wall().as_secs_f64(),
            row.rate(),
            row.cpu(),
            row.rss_mib(),
            ratio
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
