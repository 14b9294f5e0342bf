//! One download: RETR into a local temporary file while hashing, check the length, fsync, set
//! the remote modification time, rename, fsync the directory. Also local directories.

use std::path::Path;

use tokio::io::AsyncWriteExt;

use super::{Context, FileOutcome, HashingWriter, local_err, save_record, temp_name};
use crate::config::Verify;
use crate::listing::{Listing, Mtime};
use crate::path::RelPath;
use crate::plan::{Action, SyncRecord};
use crate::transport::local::mtime_of;
use crate::transport::{ErrorKind, Transport, TransportError};

/// Refuse to write through a symbolic link anywhere between the local root and `rel`.
async fn check_no_symlink_ancestors(root: &Path, rel: &RelPath) -> Result<(), TransportError> {
    for dir in rel.ancestors() {
        let p = dir.to_local(root);
        if let Ok(meta) = tokio::fs::symlink_metadata(&p).await
            && meta.file_type().is_symlink()
        {
            return Err(TransportError::new(
                ErrorKind::Permanent,
                format!("write {rel}"),
                format!(
                    "{} is a symbolic link; ferry does not write through links",
                    p.display()
                ),
            ));
        }
    }
    Ok(())
}

pub(super) async fn make_local_dir(root: &Path, rel: &RelPath) -> Result<(), TransportError> {
    check_no_symlink_ancestors(root, rel).await?;
    let p = rel.to_local(root);
    match tokio::fs::create_dir(&p).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => Ok(()),
        Err(e) => Err(local_err(format!("create directory {}", p.display()), e)),
    }
}

pub(super) async fn download_file(
    t: &mut dyn Transport,
    action: &Action,
    remote: &Listing,
    ctx: &Context,
) -> Result<FileOutcome, TransportError> {
    let path = &action.path;
    let op = format!("download {path}");
    let entry = remote.get(path).cloned().ok_or_else(|| {
        TransportError::new(ErrorKind::Permanent, &op, "not in the remote listing")
    })?;
    check_no_symlink_ancestors(&ctx.local_root, path).await?;
    let target = path.to_local(&ctx.local_root);
    let tmp = temp_name(path).to_local(&ctx.local_root);
    let _ = tokio::fs::remove_file(&tmp).await;
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .await
        .map_err(|e| local_err(format!("create {}", tmp.display()), e))?;
    let mut writer = HashingWriter::new(file);
    let progress = |n: u64| ctx.observer.bytes_moved(n);
    let result = finish_download(t, path, &entry, &mut writer, &progress, ctx.verify).await;
    let (received, sha, verified) = match result {
        Ok(ok) => ok,
        Err(e) => {
            drop(writer);
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    let file = writer.into_inner();
    drop(file);
    if let Some(m) = entry.mtime {
        set_mtime(&tmp, m)?;
    }
    if let Err(e) = tokio::fs::rename(&tmp, &target).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(local_err(
            format!("rename {} to {}", tmp.display(), target.display()),
            e,
        ));
    }
    sync_dir(target.parent()).await;
    let after = tokio::fs::metadata(&target)
        .await
        .map_err(|e| local_err(format!("stat {}", target.display()), e))?;
    let record = SyncRecord {
        local_size: after.len(),
        local_mtime: mtime_of(&after),
        sha256: Some(sha.clone()),
        remote_size: entry.size,
        remote_mtime: entry.mtime,
    };
    save_record(ctx, path, &record, &op)?;
    tracing::info!(job = %ctx.job, path = %path, bytes = received, sha256 = %sha, verified, "downloaded");
    Ok(FileOutcome {
        bytes: received,
        verified,
        sha256: Some(sha),
    })
}

/// Stream the file, check its length (and the server's hash when offered), fsync.
async fn finish_download(
    t: &mut dyn Transport,
    path: &RelPath,
    entry: &crate::listing::Entry,
    writer: &mut HashingWriter<tokio::fs::File>,
    progress: &(dyn Fn(u64) + Send + Sync),
    verify: Verify,
) -> Result<(u64, String, bool), TransportError> {
    let op = format!("download {path}");
    let received = t.download(path, writer, progress).await?;
    writer.flush().await.map_err(|e| local_err(op.clone(), e))?;
    writer
        .inner
        .sync_all()
        .await
        .map_err(|e| local_err(format!("fsync {path}"), e))?;
    let sha = writer.digest_hex();
    if received != entry.size {
        return Err(TransportError::new(
            ErrorKind::Transient,
            op,
            format!(
                "received {received} bytes but the listing said {}; the file may still be changing",
                entry.size
            ),
        ));
    }
    // The byte count matching the listing is the size check.
    let mut verified = true;
    if verify != Verify::Size || t.capabilities().sha256_command.is_some() {
        if let Some(remote_sha) = t.sha256(path).await? {
            if remote_sha != sha {
                return Err(TransportError::new(
                    ErrorKind::Transient,
                    op,
                    format!("server SHA-256 {remote_sha} differs from received {sha}"),
                ));
            }
        } else if verify == Verify::Hash {
            tracing::debug!(path = %path, "server offers no hash command; verified by size");
        }
        verified = true;
    }
    Ok((received, sha, verified))
}

fn set_mtime(path: &Path, m: Mtime) -> Result<(), TransportError> {
    let secs = m.secs();
    let nanos = m.nanos.rem_euclid(1_000_000_000) as u32;
    filetime::set_file_mtime(path, filetime::FileTime::from_unix_time(secs, nanos))
        .map_err(|e| local_err(format!("set modification time of {}", path.display()), e))
}

async fn sync_dir(dir: Option<&Path>) {
    if let Some(dir) = dir
        && let Ok(f) = tokio::fs::File::open(dir).await
    {
        let _ = f.sync_all().await;
    }
}
