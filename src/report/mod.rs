//! What ferry shows people: plans, progress bars, one-line summaries, JSON.
//!
//! Nothing here decides anything; it formats what the planner and the executor produced.

pub mod status;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::execute::{FileOutcome, Observer};
use crate::plan::{Action, ActionKind};
use crate::run::{Planned, RunReport};
use crate::transport::TransportError;

/// Bytes in a human unit (1024-based), e.g. `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn verb(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::MakeRemoteDir => "mkdir (remote)",
        ActionKind::MakeLocalDir => "mkdir (local)",
        ActionKind::Upload => "upload",
        ActionKind::Download => "download",
        ActionKind::DeleteRemoteFile => "delete (remote)",
        ActionKind::DeleteLocalFile => "delete (local)",
        ActionKind::RemoveRemoteDir => "rmdir (remote)",
        ActionKind::RemoveLocalDir => "rmdir (local)",
        ActionKind::RenameLocalFile => "rename (local)",
        ActionKind::RenameRemoteFile => "rename (remote)",
    }
}

/// Print a plan for people: one line per action with its reason, then what is left alone.
pub fn print_plan(job: &str, planned: &Planned, out: &mut dyn Write) -> std::io::Result<()> {
    let plan = &planned.plan;
    writeln!(
        out,
        "plan for job `{job}`: {} action(s), {} to transfer, {} file(s) already in sync",
        plan.actions.len(),
        human_bytes(plan.transfer_bytes()),
        plan.skipped.len()
    )?;
    for a in &plan.actions {
        let size = if a.kind.is_transfer() {
            format!(" ({})", human_bytes(a.size))
        } else {
            String::new()
        };
        let to =
            a.to.as_ref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default();
        writeln!(
            out,
            "  {:<16} {}{to}{size}: {}",
            verb(a.kind),
            a.path,
            a.reason
        )?;
    }
    for w in &plan.waiting {
        match &w.marker {
            Some(marker) => writeln!(
                out,
                "  waiting          {} ({}): taken once `{marker}` is in its directory",
                w.path,
                human_bytes(w.size),
            )?,
            None => writeln!(
                out,
                "  waiting          {} ({}): may still be written; taken once unchanged for {}s more",
                w.path,
                human_bytes(w.size),
                w.remaining.as_secs_f64().ceil()
            )?,
        }
    }
    for c in &plan.conflicts {
        writeln!(out, "  conflict         {}: {}", c.path, c.message)?;
    }
    for r in &plan.resolved {
        match &r.copy {
            Some(copy) => writeln!(
                out,
                "  conflict         {}: {} wins; the other version is kept as {copy}",
                r.path, r.winner
            )?,
            None => writeln!(
                out,
                "  conflict         {}: {} wins; the other version is overwritten",
                r.path, r.winner
            )?,
        }
    }
    if let Some(why) = &plan.deletes_blocked {
        writeln!(out, "  deletes blocked: {why}")?;
        for a in &plan.withheld {
            writeln!(out, "  {:<16} {}: withheld", verb(a.kind), a.path)?;
        }
    }
    for p in planned.local.problems.iter() {
        writeln!(out, "  local problem    {}: {}", p.path, p.message)?;
    }
    for p in planned.remote.problems.iter() {
        writeln!(out, "  remote problem   {}: {}", p.path, p.message)?;
    }
    Ok(())
}

/// The plan as JSON, for `ferry plan --json`.
pub fn plan_json(job: &str, planned: &Planned) -> serde_json::Value {
    serde_json::json!({
        "job": job,
        "plan": &planned.plan,
        "local_problems": &planned.local.problems,
        "remote_problems": &planned.remote.problems,
        "complete": planned.local.is_complete() && planned.remote.is_complete(),
    })
}

/// The one-line summary printed after every job run.
pub fn summary_line(report: &RunReport) -> String {
    let t = report.totals();
    let by: Vec<String> = report
        .execution
        .verified_by
        .iter()
        .map(|(how, n)| format!("{n} by {how}"))
        .collect();
    let by = if by.is_empty() {
        String::new()
    } else {
        format!(" ({})", by.join(", "))
    };
    let mut line = format!(
        "job `{}`: {} in {:.1}s: {} transferred ({}), {} skipped, {} failed, {} verified{by}, {} deleted",
        report.job,
        report.outcome(),
        report.duration.as_secs_f64(),
        t.transferred,
        human_bytes(t.bytes),
        t.skipped,
        t.failed,
        t.verified,
        t.deleted,
    );
    let waiting = report.planned.plan.waiting.len();
    if waiting > 0 {
        line.push_str(&format!(
            ", {waiting} waiting (not finished on the server yet)"
        ));
    }
    if report.execution.deleted_first > 0 {
        line.push_str(&format!(
            ", {} replaced by delete-then-rename (the server refuses to rename onto a file)",
            report.execution.deleted_first
        ));
    }
    if report.execution.direct > 0 {
        line.push_str(&format!(
            ", {} written straight to the final name (no temporary name)",
            report.execution.direct
        ));
    }
    let resolved = &report.planned.plan.resolved;
    if !resolved.is_empty() {
        let kept = resolved.iter().filter(|r| r.copy.is_some()).count();
        line.push_str(&format!(
            ", {} conflict(s) (changed on both sides): {kept} kept as copies, {} overwritten",
            resolved.len(),
            resolved.len() - kept
        ));
    }
    if let Some(e) = &report.execution.fatal {
        line.push_str(&format!("; stopped: {e}"));
    }
    if let Some(hook) = report.hook.as_ref().filter(|h| h.result.is_err()) {
        line.push_str(&format!("; {hook}"));
    }
    line
}

/// Print each failure of a run, naming the path and the server's reply.
pub fn print_failures(report: &RunReport, out: &mut dyn Write) -> std::io::Result<()> {
    for f in &report.execution.failures {
        writeln!(
            out,
            "job `{}`: {} {} failed: {}",
            report.job,
            verb(f.action),
            f.path,
            f.error
        )?;
    }
    for c in &report.planned.plan.conflicts {
        writeln!(
            out,
            "job `{}`: conflict at {}: {}",
            report.job, c.path, c.message
        )?;
    }
    for p in report
        .planned
        .local
        .problems
        .iter()
        .chain(report.planned.remote.problems.iter())
    {
        writeln!(out, "job `{}`: {}: {}", report.job, p.path, p.message)?;
    }
    if let Some(why) = &report.execution.deletes_skipped {
        writeln!(out, "job `{}`: {why}", report.job)?;
    }
    if let Some(why) = &report.planned.plan.deletes_blocked {
        writeln!(out, "job `{}`: deletes blocked: {why}", report.job)?;
        const SHOWN: usize = 20;
        let withheld = &report.planned.plan.withheld;
        for a in withheld.iter().take(SHOWN) {
            writeln!(
                out,
                "job `{}`:   would {} {}",
                report.job,
                verb(a.kind),
                a.path
            )?;
        }
        if withheld.len() > SHOWN {
            writeln!(
                out,
                "job `{}`:   ... and {} more (ferry plan {} lists them all)",
                report.job,
                withheld.len() - SHOWN,
                report.job
            )?;
        }
    }
    for c in &report.execution.changed {
        writeln!(
            out,
            "job `{}`: warning: {} {}: {}",
            report.job,
            verb(c.action),
            c.path,
            c.error
        )?;
    }
    Ok(())
}

/// A progress bar of files and bytes, drawn only on a terminal.
pub struct ProgressObserver {
    bar: ProgressBar,
    files_done: AtomicU64,
    files_total: AtomicU64,
}

impl ProgressObserver {
    /// A bar drawn on stderr when `visible` (a terminal), hidden otherwise.
    pub fn new(visible: bool) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        if visible {
            // Log lines are written with the bar out of the way, then it is drawn again.
            let b = bar.clone();
            crate::text::set_log_suspender(Some(Box::new(move |write: &mut dyn FnMut()| {
                b.suspend(write)
            })));
        }
        ProgressObserver {
            bar,
            files_done: AtomicU64::new(0),
            files_total: AtomicU64::new(0),
        }
    }

    /// Size the bar once the plan is known.
    pub fn set_plan(&self, plan: &crate::plan::Plan) {
        let files = plan.actions.iter().filter(|a| a.kind.is_transfer()).count() as u64;
        let bytes = plan.transfer_bytes();
        if files == 0 {
            // Nothing to move: no bar at all, the summary line says it.
            self.bar.set_draw_target(ProgressDrawTarget::hidden());
            return;
        }
        self.files_total.store(files, Ordering::Relaxed);
        self.bar.set_length(bytes);
        self.bar.set_message(format!("0/{files} files"));
    }

    pub fn finish(&self) {
        crate::text::set_log_suspender(None);
        self.bar.finish_and_clear();
    }
}

impl Observer for ProgressObserver {
    fn bytes_moved(&self, n: u64) {
        self.bar.inc(n);
    }

    fn file_finished(&self, _action: &Action, _result: &Result<FileOutcome, TransportError>) {
        let done = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.files_total.load(Ordering::Relaxed);
        self.bar.set_message(format!("{done}/{total} files"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_humanised() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
