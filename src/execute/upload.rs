//! One upload: open the file through the job's root, check it is the file the scan saw, hash
//! while reading, STOR to the temporary name, verify, rename; then `after_upload`.
//!
//! The file is opened with no link followed anywhere on its path, and the open handle's device,
//! inode, size and modification time must be the scan's: a file swapped for a link to a secret,
//! or replaced or rewritten since the scan, is not sent under the scanned facts. It is skipped
//! this run with a warning ([`ErrorKind::Changed`]), and so is a file that changes while it is
//! being read. The next run (or the watcher) picks it up.
//!
//! An upload is noted in state when it starts. After a lost connection the server's temporary
//! file stays, and the next try (or the next run) sends only the rest (REST, then STOR), as
//! long as the local file is still the one the upload started from; the whole file is still
//! hashed, and verified as the job says.

use tokio::io::AsyncReadExt;

use super::{
    Context, Delivery, Digests, FileOutcome, HashingWriter, RESUME_FROM, Verification,
    compare_server_hash, local_err, save_record, sidecar, temp_name, threaded,
};
use crate::config::{AfterUpload, Verify};
use crate::listing::{Entry, Listing};
use crate::local_fs::{self, DirHandle, LocalRoot, Meta};
use crate::path::RelPath;
use crate::plan::{Action, SyncRecord};
use crate::state::{PartialKind, PartialSource};
use crate::transport::{ErrorKind, Replaced, Transport, TransportError};

fn changed(op: &str, message: impl Into<String>) -> TransportError {
    TransportError::new(ErrorKind::Changed, op, message)
}

/// Whether the opened file is the one the scan listed, with the same size and time.
fn check_against_scan(op: &str, scanned: &Entry, opened: &Meta) -> Result<(), TransportError> {
    let same_inode = scanned
        .id
        .is_some_and(|id| id.dev == opened.id.dev && id.ino == opened.id.ino);
    if !same_inode {
        return Err(changed(
            op,
            "replaced by another file since the scan; not sent",
        ));
    }
    if scanned.id != Some(opened.id) || scanned.size != opened.size || scanned.mtime != opened.mtime
    {
        return Err(changed(
            op,
            format!(
                "changed since the scan ({} bytes then, {} now); not sent this run",
                scanned.size, opened.size
            ),
        ));
    }
    Ok(())
}

pub(super) async fn upload_file(
    t: &mut dyn Transport,
    action: &Action,
    local: &Listing,
    ctx: &Context,
) -> Result<FileOutcome, TransportError> {
    let path = &action.path;
    let op = format!("upload {path}");
    let scanned = local
        .get(path)
        .ok_or_else(|| TransportError::new(ErrorKind::Permanent, &op, "not in the local scan"))?;
    let open_failed = |e: std::io::Error| {
        if local_fs::is_refused(&e) || e.kind() == std::io::ErrorKind::NotFound {
            changed(&op, format!("{e}; not sent"))
        } else {
            local_err(&op, e)
        }
    };
    let (dir, name) = ctx.local.parent(path).map_err(open_failed)?;
    let (file, opened) = dir.open_read(name).map_err(open_failed)?;
    check_against_scan(&op, scanned, &opened)?;
    let also = t.capabilities().hash_command.as_ref().map(|h| h.algo);
    let mut reader = threaded::Source::open(file, opened.size, Digests::new(also));
    // `upload: direct`, or a server found refusing renames earlier in this run: straight to
    // the final name (the old copy, kept first when backup_dir says so, is overwritten).
    let direct = ctx.direct_upload
        || ctx
            .renames_refused
            .load(std::sync::atomic::Ordering::Relaxed);
    let tmp = if direct {
        path.clone()
    } else {
        temp_name(path)
    };
    if direct {
        keep_old_remote(t, ctx, path).await?;
    }
    let source = PartialSource::Local {
        id: opened.id,
        size: opened.size,
        mtime: opened.mtime,
    };
    let resumable = opened.size >= RESUME_FROM && !direct;
    let offset = if resumable {
        resume_offset(t, ctx, path, &tmp, &source, opened.size, &op).await?
    } else {
        0
    };
    if offset > 0 {
        // The server holds the first `offset` bytes of this very file: hash them locally
        // without sending them, then send the rest.
        let skipped = tokio::io::copy(&mut (&mut reader).take(offset), &mut tokio::io::sink())
            .await
            .map_err(|e| local_err(&op, e))?;
        if skipped != offset {
            return Err(changed(
                &op,
                "shorter than when its upload started; not sent",
            ));
        }
        tracing::info!(job = %ctx.job, path = %path, offset, "resuming the upload");
    }
    let progress = |n: u64| ctx.observer.bytes_moved(n);
    let sent = match t.upload_from(&tmp, offset, &mut reader, &progress).await {
        Ok(n) => offset + n,
        Err(e) => {
            if !e.is_retryable() {
                // Not to be resumed: the partial goes, on the server and in state.
                let _ = t.delete_file(&tmp).await;
                forget_partial(ctx, path, resumable).await;
            }
            return Err(e);
        }
    };
    let (digests, file) = reader.finish().await.map_err(|e| local_err(&op, e))?;
    let sha = digests.sha256_hex();
    // The file must not have changed while it was read.
    let after = local_fs::fstat(&file).map_err(|e| local_err(&op, e))?;
    if sent != opened.size || !after.same_content_as(&opened) {
        let _ = t.delete_file(&tmp).await;
        forget_partial(ctx, path, resumable).await;
        return Err(changed(
            &op,
            format!(
                "changed while it was being uploaded ({} bytes at the start, {sent} sent, {} now); \
                 not sent this run",
                opened.size, after.size
            ),
        ));
    }
    let verification = match verify_upload(t, &tmp, sent, &digests, ctx.verify).await {
        Ok(v) => v,
        Err(e) => {
            // A mismatch: never resume from that content.
            let _ = t.delete_file(&tmp).await;
            forget_partial(ctx, path, resumable).await;
            return Err(e);
        }
    };
    // The partner sees when the file was made, not when it was uploaded (MFMT, where the
    // server has it; set on the temporary name, so the final name never shows another time).
    if let Some(mtime) = opened.mtime {
        match t.set_modified(&tmp, mtime).await {
            Ok(true) => {}
            Ok(false) => {}
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => tracing::warn!(job = %ctx.job, path = %path, error = %e,
                "the server refused the file's modification time; it shows the upload time"),
        }
    }
    let staged = Staged {
        tmp,
        record: SyncRecord {
            local_size: opened.size,
            local_mtime: opened.mtime,
            sha256: Some(sha.clone()),
            remote_size: sent,
            // Filled in from a fresh listing after the transfers (see refresh_remote_fingerprints).
            remote_mtime: None,
        },
        opened,
    };
    if direct {
        tracing::info!(job = %ctx.job, path = %path, bytes = sent, sha256 = %sha,
            verified = %verification, "uploaded straight to its final name");
        in_place(t, ctx, path, &staged).await?;
        return Ok(FileOutcome {
            bytes: sent,
            verification,
            sha256: Some(sha),
            staged: None,
            delivery: Delivery::Direct,
        });
    }
    if ctx.publish.is_some() {
        // A batch: renamed into place with the rest of it, once all of it is verified.
        forget_partial(ctx, path, resumable).await;
        tracing::info!(job = %ctx.job, path = %path, bytes = sent, sha256 = %sha,
            verified = %verification, "uploaded under its temporary name, for the batch");
        return Ok(FileOutcome {
            bytes: sent - offset,
            verification,
            sha256: Some(sha),
            staged: Some(staged),
            delivery: Delivery::Renamed,
        });
    }
    if let Err(e) = keep_old_remote(t, ctx, path).await {
        let _ = t.delete_file(&staged.tmp).await;
        forget_partial(ctx, path, resumable).await;
        return Err(e);
    }
    let delivery = match t.replace(&staged.tmp, path).await {
        Ok(Replaced::Renamed) => Delivery::Renamed,
        Ok(Replaced::DeletedFirst) => Delivery::DeletedFirst,
        Err(e) => {
            let removed = t.delete_file(&staged.tmp).await;
            forget_partial(ctx, path, resumable).await;
            if e.kind != ErrorKind::Permanent {
                return Err(e);
            }
            // The server took the upload and refuses to rename it, even with the old file
            // deleted first: a write-only drop box. The rest of this run uploads straight to
            // final names, this file included (as a retry).
            ctx.renames_refused
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let left = match removed {
                Ok(()) => String::new(),
                Err(_) => format!("; its temporary file {} stays on the server", staged.tmp),
            };
            tracing::warn!(job = %ctx.job, path = %path, refusal = %e.message,
                "the server refuses to rename uploads: from now on this run uploads straight to \
                 final names (a reader may see a file while it is written); set `upload: direct` \
                 for this job to skip the temporary names{left}");
            return Err(TransportError::new(
                ErrorKind::Transient,
                &op,
                format!(
                    "the server refuses renames ({}); sending it again straight to its final name",
                    e.message
                ),
            ));
        }
    };
    forget_partial(ctx, path, resumable).await;
    tracing::info!(job = %ctx.job, path = %path, bytes = sent, resumed_from = offset,
        sha256 = %sha, verified = %verification, "uploaded");
    in_place(t, ctx, path, &staged).await?;
    Ok(FileOutcome {
        // What this try moved (the rest of a resumed upload).
        bytes: sent - offset,
        verification,
        sha256: Some(sha),
        staged: None,
        delivery,
    })
}

/// `backup_dir` (push): before an upload replaces a file on the server, move the old copy to
/// the backup directory with a UTC time suffix. Nothing to keep when there is no old copy.
pub(super) async fn keep_old_remote(
    t: &mut dyn Transport,
    ctx: &Context,
    path: &RelPath,
) -> Result<(), TransportError> {
    let Some(dir) = &ctx.remote_backup else {
        return Ok(());
    };
    // SIZE tells whether there is an old copy; without SIZE, try and take a 5xx as "none".
    if t.capabilities().size && !matches!(t.size(path).await, Ok(Some(_))) {
        return Ok(());
    }
    match t.move_out(path, dir, true).await {
        Ok(to) => {
            tracing::info!(job = %ctx.job, path = %path, kept = %to, "old copy kept");
            Ok(())
        }
        Err(e) if e.kind == ErrorKind::Permanent && !t.capabilities().size => Ok(()),
        Err(e) => Err(e),
    }
}

/// An upload verified under its temporary name, not yet renamed into place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub tmp: RelPath,
    pub record: SyncRecord,
    /// The local file as it was opened (for `after_upload`).
    pub opened: Meta,
}

/// Once a file is under its final name on the server: record it, write its checksum file
/// when asked, and apply `after_upload`.
pub(super) async fn in_place(
    t: &mut dyn Transport,
    ctx: &Context,
    path: &RelPath,
    staged: &Staged,
) -> Result<(), TransportError> {
    let op = format!("upload {path}");
    save_record(ctx, path, &staged.record, &op).await?;
    if ctx.checksum_sidecar
        && let Some(sha) = &staged.record.sha256
    {
        write_checksum_file(t, path, sha).await.map_err(|e| {
            // Not retried: the file itself is in place and recorded; the next run sees the
            // checksum file missing and sends both again.
            TransportError::new(
                ErrorKind::Permanent,
                &op,
                format!("in place, but its checksum file could not be written: {e}"),
            )
        })?;
    }
    if matches!(ctx.after_upload, AfterUpload::Keep) {
        // Nothing to do locally: no need to open the file's directory again.
        return Ok(());
    }
    let (dir, name) = ctx.local.parent(path).map_err(|e| local_err(&op, e))?;
    apply_after_upload(ctx, &dir, name, &staged.opened, path)
}

/// Write `x.sha256` beside the uploaded `x`, through a temporary name like any upload.
async fn write_checksum_file(
    t: &mut dyn Transport,
    path: &RelPath,
    sha: &str,
) -> Result<(), TransportError> {
    let Some(file) = crate::plan::sidecar_path(path) else {
        return Ok(());
    };
    let text = sidecar::sidecar_text(sha, path.file_name());
    let tmp = temp_name(&file);
    let mut src = text.as_bytes();
    t.upload(&tmp, &mut src, &|_| {}).await?;
    t.rename(&tmp, &file).await
}

/// Where an upload of `source` goes on from: the size of the server's temporary file when the
/// state notes an upload of this very local file (same device, inode, change time, size and
/// modification time) and the server can resume (REST STREAM); else 0, noting the new start.
async fn resume_offset(
    t: &mut dyn Transport,
    ctx: &Context,
    path: &RelPath,
    tmp: &RelPath,
    source: &PartialSource,
    size: u64,
    op: &str,
) -> Result<u64, TransportError> {
    let state = |e: String| TransportError::new(ErrorKind::State, op, e);
    let (job, p) = (ctx.job.clone(), path.clone());
    let noted = ctx
        .store
        .call(move |s| s.partial(&job, &p, PartialKind::Upload))
        .await
        .map_err(|e| state(e.to_string()))?;
    if t.capabilities().rest && noted.as_ref() == Some(source) {
        match t.size(tmp).await {
            Ok(Some(have)) if have > 0 && have <= size => return Ok(have),
            // Nothing there, or not ours to trust: start over.
            Ok(_) | Err(_) => {}
        }
    }
    let (job, p, source) = (ctx.job.clone(), path.clone(), source.clone());
    ctx.store
        .call(move |s| s.put_partial(&job, &p, &source))
        .await
        .map_err(|e| state(e.to_string()))?;
    Ok(0)
}

/// The upload of `path` is done or given up: its note goes (a small file has none).
async fn forget_partial(ctx: &Context, path: &RelPath, noted: bool) {
    if !noted {
        return;
    }
    let (job, p) = (ctx.job.clone(), path.clone());
    let removed = ctx
        .store
        .call(move |s| s.remove_partial(&job, &p, PartialKind::Upload))
        .await;
    if let Err(e) = removed {
        tracing::warn!(job = %ctx.job, path = %path, error = %e, "cannot clear the partial upload's note");
    }
}

/// Delete or archive a local file that is now safely on the server, if it is still the file
/// that was uploaded (a producer may have written a new version meanwhile: that one stays). A
/// failure here is reported against the file; the upload itself stands (and is recorded).
fn apply_after_upload(
    ctx: &Context,
    dir: &DirHandle,
    name: &str,
    uploaded: &Meta,
    path: &RelPath,
) -> Result<(), TransportError> {
    let op = format!("after_upload {path}");
    let archive = match &ctx.after_upload {
        AfterUpload::Keep => return Ok(()),
        AfterUpload::Delete => None,
        AfterUpload::MoveTo(_) => Some(ctx.archive.as_ref().ok_or_else(|| {
            TransportError::new(ErrorKind::Local, &op, "the move_to directory is not open")
        })?),
    };
    let now = dir.stat(name).map_err(|e| local_err(&op, e))?;
    if !now.is_some_and(|m| m.same_content_as(uploaded)) {
        tracing::warn!(job = %ctx.job, path = %path,
            "changed after its upload; left in place (the next run sends the new version)");
        return Ok(());
    }
    match archive {
        None => dir.remove_file(name).map_err(|e| local_err(&op, e)),
        Some(archive) => {
            move_to_archive(archive, dir, name, path, name).map_err(|e| local_err(&op, e))
        }
    }
}

/// Move `name` to the same relative place under the archive, as `NAME`, else `NAME.1`,
/// `NAME.2`, ...: archiving never overwrites. Across filesystems: copy, fsync, then remove.
/// Move `dir/name` (the file at `path`) into `archive` at the same relative place, as `as_name`
/// (or `as_name.1`, `.2`, ... when taken): never over an archived copy.
pub(super) fn move_to_archive(
    archive: &LocalRoot,
    dir: &DirHandle,
    name: &str,
    path: &RelPath,
    as_name: &str,
) -> std::io::Result<()> {
    let dest = archive.make_dirs(&path.parent())?;
    for n in 0u32..10_000 {
        let candidate = if n == 0 {
            as_name.to_owned()
        } else {
            format!("{as_name}.{n}")
        };
        match dir.rename_no_replace(name, &dest, &candidate) {
            Ok(()) => return dest.sync(),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                match copy_across(dir, name, &dest, &candidate) {
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    other => return other,
                }
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!(
                        "move {} to {}: {e}",
                        dir.display(name).display(),
                        dest.display(&candidate).display()
                    ),
                ));
            }
        }
    }
    Err(std::io::Error::other(format!(
        "{}: 10000 archived copies already; not moved",
        dest.display(as_name).display()
    )))
}

/// `backup_dir` (pull): keep the local copy a download or a delete is about to replace or
/// remove, moved into the backup directory at its relative place with a UTC time suffix.
pub(super) fn back_up(
    backup: &LocalRoot,
    dir: &DirHandle,
    name: &str,
    path: &RelPath,
) -> std::io::Result<()> {
    let stamped = format!("{name}.{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    move_to_archive(backup, dir, name, path, &stamped)
}

fn copy_across(dir: &DirHandle, name: &str, dest: &DirHandle, to: &str) -> std::io::Result<()> {
    let (mut src, meta) = dir.open_read(name)?;
    let mut out = dest.create_new(to, meta.mode & 0o777)?;
    std::io::copy(&mut src, &mut out)?;
    out.sync_all()?;
    dest.sync()?;
    dir.remove_file(name)
}

/// Check an uploaded temporary file: the server's SIZE, then its digest when it computes one
/// (whatever `verify` says), else a read-back when the job asks for more than size.
async fn verify_upload(
    t: &mut dyn Transport,
    tmp: &RelPath,
    sent: u64,
    digests: &Digests,
    verify: Verify,
) -> Result<Verification, TransportError> {
    let op = format!("verify {tmp}");
    if let Some(size) = t.size(tmp).await?
        && size != sent
    {
        return Err(TransportError::new(
            ErrorKind::Transient,
            op,
            format!("server reports {size} bytes, {sent} were sent"),
        ));
    }
    if let Some(v) = compare_server_hash(t, tmp, digests, &op).await? {
        return Ok(v);
    }
    if verify == Verify::Size {
        return Ok(Verification::SizeOnly);
    }
    // No server-side hash: read the file back and hash it ourselves.
    let sha = digests.sha256_hex();
    let mut sink = HashingWriter::new(tokio::io::sink()).with_limit(sent);
    let got = t.download(tmp, &mut sink, &|_| {}).await?;
    let back = sink.finish();
    if got != sent || back != sha {
        return Err(TransportError::new(
            ErrorKind::Transient,
            op,
            format!("read back {got} bytes with SHA-256 {back}; sent {sent} with {sha}"),
        ));
    }
    Ok(Verification::ReadBack)
}
