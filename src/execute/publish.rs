//! `publish: batch` (push): every changed file of the run is uploaded and verified under its
//! temporary name first (`upload.rs` stops there). Then, only when all of them are, the previous
//! batch's marker is removed, every file is renamed into place and recorded (with its checksum
//! file and `after_upload`), and only then the marker, or the manifest of the batch, is written
//! in the remote root, through a temporary name like any upload. A consumer polling the remote
//! directory never sees a marker before every file of its batch is complete and verified, nor a
//! previous batch's marker beside a half-published new batch.
//!
//! When any file of the run failed or changed, nothing is published: the temporary files are
//! removed, and the next run sends the batch again.

use super::upload::{self, Staged};
use super::{Execution, Failure, FileOutcome, temp_name};
use crate::config::Publish;
use crate::path::RelPath;
use crate::plan::{Action, ActionKind};
use crate::transport::pool::Lease;
use crate::transport::{ErrorKind, TransportError};

use super::Context;

pub(super) async fn publish_batch(
    publish: &Publish,
    staged: Vec<(Action, FileOutcome, Staged)>,
    ctx: &Context,
    lease: &mut Option<Lease>,
    out: &mut Execution,
) {
    let fail_all = |out: &mut Execution, staged: &[(Action, FileOutcome, Staged)], why: &str| {
        for (action, _, _) in staged {
            out.failures.push(Failure {
                path: action.path.clone(),
                action: ActionKind::Upload,
                error: TransportError::new(
                    ErrorKind::Transient,
                    format!("publish {}", action.path),
                    format!("not published: {why}; the batch is sent again next run"),
                ),
            });
        }
    };
    let others = out.failures.len() + out.changed.len();
    if lease.is_none() {
        match ctx.pool.get(&ctx.remote_root).await {
            Ok(l) => *lease = Some(l),
            Err(e) => {
                fail_all(out, &staged, &e.to_string());
                return;
            }
        }
    }
    let Some(session) = lease.as_mut() else {
        return;
    };
    let t = session.session();
    if out.fatal.is_some() || others > 0 {
        for (_, _, s) in &staged {
            let _ = t.delete_file(&s.tmp).await;
        }
        let why = format!("{others} other file(s) of the run failed or changed");
        tracing::warn!(job = %ctx.job, files = staged.len(), "{why}: the batch is not published");
        fail_all(out, &staged, &why);
        return;
    }
    let marker = match RelPath::parse(&publish.marker) {
        Ok(m) => m,
        Err(e) => {
            fail_all(out, &staged, &format!("bad marker name: {e}"));
            return;
        }
    };
    // 1. The previous batch's marker goes first (a 5xx: there was none).
    match t.delete_file(&marker).await {
        Ok(()) => {
            tracing::info!(job = %ctx.job, marker = %marker, "previous batch's marker removed")
        }
        Err(e) if e.kind == ErrorKind::Permanent => {}
        Err(e) => {
            fail_all(
                out,
                &staged,
                &format!("the previous marker could not be removed: {e}"),
            );
            *lease = None;
            return;
        }
    }
    // 2. Every file of the batch into place.
    let mut manifest = String::new();
    let mut complete = true;
    let total = staged.len();
    for (action, done, s) in staged {
        let path = &action.path;
        let renamed = match upload::keep_old_remote(t, ctx, path).await {
            Ok(()) => t.rename(&s.tmp, path).await,
            Err(e) => Err(e),
        };
        if let Err(e) = renamed {
            let _ = t.delete_file(&s.tmp).await;
            out.failures.push(Failure {
                path: path.clone(),
                action: ActionKind::Upload,
                error: e,
            });
            complete = false;
            continue;
        }
        tracing::info!(job = %ctx.job, path = %path, bytes = s.record.remote_size,
            verified = %done.verification, "uploaded");
        if let Err(e) = upload::in_place(t, ctx, path, &s).await {
            out.failures.push(Failure {
                path: path.clone(),
                action: ActionKind::Upload,
                error: e,
            });
            complete = false;
            continue;
        }
        if let Some(sha) = &s.record.sha256 {
            manifest.push_str(&format!("{sha}  {path}\n"));
        }
        out.transferred += 1;
        out.done.push(path.clone());
        out.bytes += done.bytes;
        out.verified += 1;
        *out.verified_by
            .entry(done.verification.to_string())
            .or_default() += 1;
    }
    if !complete {
        tracing::warn!(job = %ctx.job, "the batch is not complete; its marker is not written");
        return;
    }
    // 3. The marker, last.
    let text = if publish.manifest {
        manifest
    } else {
        String::new()
    };
    let tmp = temp_name(&marker);
    let mut src = text.as_bytes();
    let written = match t.upload(&tmp, &mut src, &|_| {}).await {
        Ok(_) => t.rename(&tmp, &marker).await,
        Err(e) => Err(e),
    };
    match written {
        Ok(()) => {
            tracing::info!(job = %ctx.job, files = total, marker = %marker, "batch published")
        }
        Err(e) => {
            let _ = t.delete_file(&tmp).await;
            out.failures.push(Failure {
                path: marker,
                action: ActionKind::Upload,
                error: e,
            });
        }
    }
}
