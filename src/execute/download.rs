//! One download, and local directories.
//!
//! The parent directory is opened once, through the job's [`LocalRoot`] (a link anywhere on the
//! way is refused), and every step happens on that handle: create `.NAME.ferry-tmp` owner-only,
//! RETR into it while hashing (never more bytes than the listing gave), check the length and the
//! server's hash when offered, fsync, set the remote modification time and the mode the file
//! should have, rename onto `NAME`, fsync the directory. The temporary file is removed when
//! anything fails or the transfer is dropped (cancelled).

use tokio::io::AsyncWriteExt;

use super::{Context, FileOutcome, HashingWriter, local_err, save_record, temp_name};
use crate::config::Verify;
use crate::listing::{Listing, Mtime};
use crate::local_fs::{self, DirHandle, TEMP_MODE};
use crate::path::RelPath;
use crate::plan::{Action, SyncRecord};
use crate::transport::{ErrorKind, Transport, TransportError};

/// Create one local directory (its parent exists), refusing links on the way.
pub(super) fn make_local_dir(ctx: &Context, rel: &RelPath) -> Result<(), TransportError> {
    let op = format!("create directory {rel}");
    let (dir, name) = ctx.local.parent(rel).map_err(|e| local_err(&op, e))?;
    dir.make_dir(name).map_err(|e| local_err(&op, e))
}

/// Removes a temporary file when dropped, unless disarmed: a failed or cancelled download
/// leaves nothing behind.
struct TempFile<'a> {
    dir: &'a DirHandle,
    name: &'a str,
    armed: bool,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.dir.remove_file(self.name);
        }
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
    let (dir, name) = ctx.local.parent(path).map_err(|e| local_err(&op, e))?;
    let tmp = temp_name(path);
    let tmp_name = tmp.file_name();
    match dir.remove_file(tmp_name) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(local_err(&op, e)),
        _ => {}
    }
    let file = dir
        .create_new(tmp_name, TEMP_MODE)
        .map_err(|e| local_err(&op, e))?;
    let mut guard = TempFile {
        dir: &dir,
        name: tmp_name,
        armed: true,
    };
    let mut writer = HashingWriter::new(tokio::fs::File::from_std(file)).with_limit(entry.size);
    let progress = |n: u64| ctx.observer.bytes_moved(n);
    let (received, sha, verified) =
        finish_download(t, path, entry.size, &mut writer, &progress, ctx.verify).await?;
    let file = writer.into_inner().into_std().await;
    if let Some(m) = entry.mtime {
        set_mtime(&file, m).map_err(|e| local_err(&op, e))?;
    }
    dir.finish_mode(&file, name)
        .map_err(|e| local_err(&op, e))?;
    dir.rename(tmp_name, &dir, name)
        .map_err(|e| local_err(&op, e))?;
    guard.armed = false;
    dir.sync().map_err(|e| local_err(&op, e))?;
    let after = local_fs::fstat(&file).map_err(|e| local_err(&op, e))?;
    let record = SyncRecord {
        local_size: after.size,
        local_mtime: after.mtime,
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
    listed_size: u64,
    writer: &mut HashingWriter<tokio::fs::File>,
    progress: &(dyn Fn(u64) + Send + Sync),
    verify: Verify,
) -> Result<(u64, String, bool), TransportError> {
    let op = format!("download {path}");
    let received = t.download(path, writer, progress).await?;
    writer.flush().await.map_err(|e| local_err(&op, e))?;
    writer
        .inner
        .sync_all()
        .await
        .map_err(|e| local_err(&format!("fsync {path}"), e))?;
    let sha = writer.digest_hex();
    if received != listed_size {
        return Err(TransportError::new(
            ErrorKind::Transient,
            op,
            format!(
                "received {received} bytes but the listing said {listed_size}; the file may still be changing"
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

fn set_mtime(file: &std::fs::File, m: Mtime) -> std::io::Result<()> {
    let secs = m.secs();
    let nanos = m.nanos.rem_euclid(1_000_000_000) as u32;
    filetime::set_file_handle_times(
        file,
        None,
        Some(filetime::FileTime::from_unix_time(secs, nanos)),
    )
}
