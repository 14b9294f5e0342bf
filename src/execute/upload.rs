//! One upload: hash while reading, STOR to the temporary name, verify, rename; then
//! `after_upload`.

use std::path::{Path, PathBuf};

use super::{
    Context, FileOutcome, HashingReader, HashingWriter, local_err, save_record, temp_name,
};
use crate::config::{AfterUpload, Verify};
use crate::path::RelPath;
use crate::plan::{Action, SyncRecord};
use crate::transport::local::mtime_of;
use crate::transport::{ErrorKind, Transport, TransportError};

pub(super) async fn upload_file(
    t: &mut dyn Transport,
    action: &Action,
    ctx: &Context,
) -> Result<FileOutcome, TransportError> {
    let path = &action.path;
    let local = path.to_local(&ctx.local_root);
    let op = format!("upload {path}");
    let file = tokio::fs::File::open(&local)
        .await
        .map_err(|e| local_err(format!("open {}", local.display()), e))?;
    let before = file
        .metadata()
        .await
        .map_err(|e| local_err(format!("stat {}", local.display()), e))?;
    let mut reader = HashingReader::new(file);
    let tmp = temp_name(path);
    let progress = |n: u64| ctx.observer.bytes_moved(n);
    let sent = match t.upload(&tmp, &mut reader, &progress).await {
        Ok(n) => n,
        Err(e) => {
            if e.kind == ErrorKind::Permanent {
                let _ = t.delete_file(&tmp).await;
            }
            return Err(e);
        }
    };
    let sha = reader.finish();
    let result = verify_upload(t, &tmp, sent, &before, &local, &sha, ctx.verify).await;
    let verified = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = t.delete_file(&tmp).await;
            return Err(e);
        }
    };
    if let Err(e) = t.rename(&tmp, path).await {
        let _ = t.delete_file(&tmp).await;
        return Err(e);
    }
    let record = SyncRecord {
        local_size: before.len(),
        local_mtime: mtime_of(&before),
        sha256: Some(sha.clone()),
        remote_size: sent,
        // Filled in from a fresh listing after the transfers (see refresh_remote_fingerprints).
        remote_mtime: None,
    };
    save_record(ctx, path, &record, &op)?;
    tracing::info!(job = %ctx.job, path = %path, bytes = sent, sha256 = %sha, verified, "uploaded");
    apply_after_upload(&ctx.after_upload, &local, path).await?;
    Ok(FileOutcome {
        bytes: sent,
        verified,
        sha256: Some(sha),
    })
}

/// Delete or archive a local file that is now safely on the server. A failure here is
/// reported against the file; the upload itself stands (and is recorded).
async fn apply_after_upload(
    after: &AfterUpload,
    local: &Path,
    path: &RelPath,
) -> Result<(), TransportError> {
    let op = format!("after_upload {path}");
    match after {
        AfterUpload::Keep => Ok(()),
        AfterUpload::Delete => tokio::fs::remove_file(local)
            .await
            .map_err(|e| local_err(format!("{op}: delete {}", local.display()), e)),
        AfterUpload::MoveTo(dir) => {
            let target = free_name(&path.to_local(dir)).await;
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| local_err(format!("{op}: create {}", parent.display()), e))?;
            }
            match tokio::fs::rename(local, &target).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                    // Another filesystem: copy, flush, then remove the original.
                    tokio::fs::copy(local, &target)
                        .await
                        .map_err(|e| local_err(format!("{op}: copy to {}", target.display()), e))?;
                    if let Ok(f) = tokio::fs::File::open(&target).await {
                        let _ = f.sync_all().await;
                    }
                    tokio::fs::remove_file(local)
                        .await
                        .map_err(|e| local_err(format!("{op}: delete {}", local.display()), e))
                }
                Err(e) => Err(local_err(format!("{op}: move to {}", target.display()), e)),
            }
        }
    }
}

/// `path` itself if nothing is there, else `path.1`, `path.2`, ...: archiving never overwrites.
async fn free_name(path: &Path) -> PathBuf {
    if tokio::fs::symlink_metadata(path).await.is_err() {
        return path.to_path_buf();
    }
    let mut n = 1u32;
    loop {
        let mut candidate = path.as_os_str().to_owned();
        candidate.push(format!(".{n}"));
        let candidate = PathBuf::from(candidate);
        if tokio::fs::symlink_metadata(&candidate).await.is_err() {
            return candidate;
        }
        n += 1;
    }
}

/// Check an uploaded temporary file. Returns whether a check beyond the byte count passed.
async fn verify_upload(
    t: &mut dyn Transport,
    tmp: &RelPath,
    sent: u64,
    before: &std::fs::Metadata,
    local: &Path,
    sha: &str,
    verify: Verify,
) -> Result<bool, TransportError> {
    let op = format!("verify {tmp}");
    // The local file must not have changed while it was read.
    let after = tokio::fs::metadata(local)
        .await
        .map_err(|e| local_err(format!("stat {}", local.display()), e))?;
    if sent != before.len() || after.len() != before.len() || mtime_of(&after) != mtime_of(before) {
        return Err(TransportError::new(
            ErrorKind::Transient,
            op,
            format!(
                "local file changed while uploading ({} bytes before, {} sent, {} now)",
                before.len(),
                sent,
                after.len()
            ),
        ));
    }
    let mut verified = false;
    if let Some(size) = t.size(tmp).await? {
        if size != sent {
            return Err(TransportError::new(
                ErrorKind::Transient,
                op,
                format!("server reports {size} bytes, {sent} were sent"),
            ));
        }
        verified = true;
    }
    if let Some(remote_sha) = t.sha256(tmp).await? {
        if remote_sha != sha {
            return Err(TransportError::new(
                ErrorKind::Transient,
                op,
                format!("server SHA-256 {remote_sha} differs from local {sha}"),
            ));
        }
        verified = true;
    } else if verify != Verify::Size {
        // No server-side hash: read the file back and hash it ourselves.
        let mut sink = HashingWriter::new(tokio::io::sink());
        let got = t.download(tmp, &mut sink, &|_| {}).await?;
        let back = sink.finish();
        if got != sent || back != sha {
            return Err(TransportError::new(
                ErrorKind::Transient,
                op,
                format!("read back {got} bytes with SHA-256 {back}; sent {sent} with {sha}"),
            ));
        }
        verified = true;
    }
    Ok(verified)
}
