//! One download, and local directories.
//!
//! The parent directory is opened once, through the job's [`LocalRoot`] (a link anywhere on the
//! way is refused), and every step happens on that handle: create `.NAME.ferry-tmp` owner-only,
//! RETR into it while hashing (never more bytes than the listing gave), check the length and the
//! server's hash when offered, fsync, set the remote modification time and the mode the file
//! should have, rename onto `NAME`, fsync the directory.
//!
//! A download is noted in state when it starts. When a connection is lost the temporary file
//! stays, and the next try (or, after a crash, the next run) goes on from its size with REST,
//! as long as the server still lists the file as it did; the whole file is hashed all the
//! same. Anything else that fails, or a cancelled transfer, removes the temporary file.

use tokio::io::AsyncReadExt;

use super::{
    Context, Digests, FileOutcome, HashingWriter, RESUME_FROM, Verification, compare_server_hash,
    local_err, save_record, sidecar, temp_name, threaded,
};
use crate::config::Verify;
use crate::listing::{Listing, Mtime};
use crate::local_fs::{self, DirHandle, Kind, TEMP_MODE};
use crate::path::RelPath;
use crate::plan::{Action, SyncRecord};
use crate::state::{PartialKind, PartialSource};
use crate::transport::{ErrorKind, HashAlgo, Transport, TransportError};

/// Create one local directory (its parent exists), refusing links on the way.
pub(super) fn make_local_dir(ctx: &Context, rel: &RelPath) -> Result<(), TransportError> {
    let op = format!("create directory {rel}");
    let (dir, name) = ctx.local.parent(rel).map_err(|e| local_err(&op, e))?;
    dir.make_dir(name).map_err(|e| local_err(&op, e))
}

/// Bytes between two writeback hints of a big download, and how far behind the bytes
/// received a hint stays (what is still in ferry's buffers is not in the file yet).
const WRITEBACK_STEP: u64 = 32 * 1024 * 1024;
const WRITEBACK_LAG: u64 = 8 * 1024 * 1024;

/// Starts the disk writes of a big download while it is still arriving. Without it the whole
/// file sits in the page cache until the fsync before the rename, which then waits for all of
/// it (about a second per GiB here). Every [`WRITEBACK_STEP`] received, the range written so
/// far gets `POSIX_FADV_DONTNEED`: Linux starts writing it out (without waiting) and drops it
/// from the cache once clean, so a big drop does not push everything else out of memory either.
/// Only a hint: a failure changes nothing but the speed. Where the download is written past
/// the page cache (`super::direct`), only its unaligned head and tail are in the cache.
struct Writeback {
    file: Option<std::sync::Arc<std::fs::File>>,
    received: std::sync::atomic::AtomicU64,
    hinted: std::sync::atomic::AtomicU64,
}

impl Writeback {
    /// For a download of `size` bytes from `offset`: one that will never reach a hint keeps
    /// no copy of the file's descriptor (two system calls of every small file).
    fn new(file: &std::fs::File, offset: u64, size: u64) -> Writeback {
        let hints = size.saturating_sub(offset) >= WRITEBACK_STEP + WRITEBACK_LAG;
        Writeback {
            file: hints
                .then(|| file.try_clone().ok().map(std::sync::Arc::new))
                .flatten(),
            received: offset.into(),
            hinted: offset.into(),
        }
    }

    fn moved(&self, n: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let received = self.received.fetch_add(n, Relaxed) + n;
        let start = self.hinted.load(Relaxed);
        let Some(end) = received.checked_sub(WRITEBACK_LAG) else {
            return;
        };
        if end < start + WRITEBACK_STEP {
            return;
        }
        let (Some(file), Ok(runtime)) = (&self.file, tokio::runtime::Handle::try_current()) else {
            return;
        };
        self.hinted.store(end, Relaxed);
        let file = file.clone();
        runtime.spawn_blocking(move || {
            let _ = rustix::fs::fadvise(
                &*file,
                start,
                std::num::NonZeroU64::new(end - start),
                rustix::fs::Advice::DontNeed,
            );
        });
    }
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
    expect_local: Option<&Listing>,
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
    let source = PartialSource::Remote {
        size: entry.size,
        mtime: entry.mtime,
    };
    // A small file is not noted in state, and starts over after an interruption.
    let can_resume = t.capabilities().rest && entry.size >= RESUME_FROM;
    let checksum_file = sidecar::find(remote, path);
    let algos: Vec<HashAlgo> = t
        .capabilities()
        .hash_command
        .iter()
        .map(|h| h.algo)
        .chain(checksum_file.iter().map(|s| s.algo))
        .collect();
    let (file, hasher, offset) =
        match resumable(ctx, &dir, tmp_name, path, &source, can_resume, &algos).await? {
            Some(partial) => partial,
            None => {
                if can_resume {
                    note_partial(ctx, path, &source, &op).await?;
                }
                // A temporary file left by an earlier try that is not to be resumed goes
                // first. Created first and removed only when it is there: an unlink of a
                // missing name still locks the directory, against every other worker in it.
                let file = match dir.create_new(tmp_name, TEMP_MODE) {
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => dir
                        .remove_file(tmp_name)
                        .and_then(|()| dir.create_new(tmp_name, TEMP_MODE)),
                    other => other,
                }
                .map_err(|e| local_err(&op, e))?;
                (file, Digests::of(algos.iter().copied()), 0)
            }
        };
    if offset > 0 {
        tracing::info!(job = %ctx.job, path = %path, offset, "resuming the download");
    }
    let mut guard = TempFile {
        dir: &dir,
        name: tmp_name,
        armed: true,
    };
    let writeback = Writeback::new(&file, offset, entry.size);
    let writer = threaded::Sink::open(file, offset, entry.size, hasher);
    let progress = |n: u64| {
        ctx.observer.bytes_moved(n);
        writeback.moved(n);
    };
    let whole = Whole {
        dir: &dir,
        name,
        size: entry.size,
        mtime: entry.mtime,
    };
    let transferred = finish_download(t, path, offset, &whole, writer, &progress, ctx.verify).await;
    let transferred = match (transferred, &checksum_file) {
        (Ok(done), Some(file)) => check_against_checksum_file(t, file, name, &done.digests, &op)
            .await
            .map(|verification| Received {
                verification,
                ..done
            })
            .map_err(|e| (e, entry.size)),
        (other, _) => other,
    };
    let Received {
        received,
        sha,
        verification,
        file,
        ..
    } = match transferred {
        Ok(done) => done,
        Err((e, written)) => {
            // Only part of the file is there: a later try goes on from it. A whole file that
            // failed a check is useless: it goes.
            let partial = written < entry.size;
            if e.is_retryable() && can_resume && partial {
                // Kept, with its note in state: the next try (or the next run) goes on from it.
                guard.armed = false;
            } else if can_resume {
                forget_partial(ctx, path).await;
            }
            return Err(e);
        }
    };
    if let Some(local) = expect_local {
        // Two-way: the local side is a source too; what is there now must be what the scan
        // saw (or nothing, if it saw nothing), else a change made during the run would be lost.
        let now = dir.stat(name).map_err(|e| local_err(&op, e))?;
        let same = match (now, local.get(path)) {
            (None, None) => true,
            (Some(m), Some(e)) => {
                m.kind == crate::local_fs::Kind::File
                    && e.id == Some(m.id)
                    && m.size == e.size
                    && m.mtime == e.mtime
            }
            _ => false,
        };
        if !same {
            return Err(TransportError::new(
                ErrorKind::Changed,
                &op,
                "the local file changed since the scan; not replaced this run",
            ));
        }
    }
    if let Some(backup) = &ctx.backup
        && dir
            .stat(name)
            .map_err(|e| local_err(&op, e))?
            .is_some_and(|m| m.kind == crate::local_fs::Kind::File)
    {
        // The copy this download replaces is kept.
        super::upload::back_up(backup, &dir, name, path).map_err(|e| local_err(&op, e))?;
    }
    dir.rename(tmp_name, &dir, name)
        .map_err(|e| local_err(&op, e))?;
    guard.armed = false;
    if ctx.remote_after == crate::config::RemoteAfter::Keep {
        // The directory's fsync waits for the end of the transfers, once per directory: a
        // crash before it can lose the rename, and the next run downloads the file again (its
        // record finds no local file). Not so when the partner's copy goes next.
        if let Ok(mut dirs) = ctx.dirs_to_sync.lock() {
            dirs.insert(path.parent());
        }
    } else {
        dir.sync().map_err(|e| local_err(&op, e))?;
    }
    let after = local_fs::fstat(&file).map_err(|e| local_err(&op, e))?;
    let record = SyncRecord {
        local_size: after.size,
        local_mtime: after.mtime,
        sha256: Some(sha.clone()),
        remote_size: entry.size,
        remote_mtime: entry.mtime,
    };
    save_record(ctx, path, &record, &op).await?;
    if can_resume {
        forget_partial(ctx, path).await;
    }
    tracing::info!(job = %ctx.job, path = %path, bytes = offset + received, resumed_from = offset,
        sha256 = %sha, verified = %verification, "downloaded");
    apply_remote_after(t, ctx, path).await?;
    Ok(FileOutcome {
        bytes: received,
        verification,
        sha256: Some(sha),
        staged: None,
        delivery: super::Delivery::Renamed,
    })
}

/// `remote_after_download`, once the local copy is verified, in place and recorded: delete the
/// partner's copy, or move it to the archive directory. A refusal fails the file (the local
/// copy stays); it is not retried, since a second download would change nothing.
async fn apply_remote_after(
    t: &mut dyn Transport,
    ctx: &Context,
    path: &RelPath,
) -> Result<(), TransportError> {
    let done = match &ctx.remote_after {
        crate::config::RemoteAfter::Keep => return Ok(()),
        crate::config::RemoteAfter::Delete => {
            t.delete_file(path).await.map(|()| "deleted".to_owned())
        }
        crate::config::RemoteAfter::MoveTo(dir) => t
            .move_out(path, dir, false)
            .await
            .map(|to| format!("moved to {to}")),
    };
    match done {
        Ok(what) => {
            tracing::info!(job = %ctx.job, path = %path, "remote copy {what}");
            Ok(())
        }
        Err(e) => Err(TransportError::new(
            ErrorKind::Permanent,
            format!("remote_after_download {path}"),
            format!("{e}; the local copy is in place, the server's stays"),
        )),
    }
}

/// The partial download to go on from, when there is one that is still this transfer: the
/// state notes a download of the file as the server lists it now, and the temporary file holds
/// part of it. Its bytes are hashed again (the final SHA-256 covers the whole file).
async fn resumable(
    ctx: &Context,
    dir: &DirHandle,
    tmp_name: &str,
    path: &RelPath,
    source: &PartialSource,
    can_resume: bool,
    algos: &[HashAlgo],
) -> Result<Option<(std::fs::File, Digests, u64)>, TransportError> {
    let PartialSource::Remote {
        size: listed_size, ..
    } = source
    else {
        return Ok(None);
    };
    let listed_size = *listed_size;
    if !can_resume {
        return Ok(None);
    }
    let op = format!("resume {path}");
    let (job, p) = (ctx.job.clone(), path.clone());
    let noted = ctx
        .store
        .call(move |s| s.partial(&job, &p, PartialKind::Download))
        .await
        .map_err(|e| TransportError::new(ErrorKind::State, &op, e.to_string()))?;
    if noted.as_ref() != Some(source) {
        return Ok(None);
    }
    let Some(meta) = dir.stat(tmp_name).map_err(|e| local_err(&op, e))? else {
        return Ok(None);
    };
    if meta.kind != Kind::File || meta.size == 0 || meta.size >= listed_size {
        return Ok(None);
    }
    let (partial, _) = dir.open_read(tmp_name).map_err(|e| local_err(&op, e))?;
    let mut partial = tokio::fs::File::from_std(partial);
    let mut hasher =
        HashingWriter::continuing(tokio::io::sink(), Digests::of(algos.iter().copied()), 0);
    let seen = tokio::io::copy(&mut (&mut partial).take(meta.size), &mut hasher)
        .await
        .map_err(|e| local_err(&op, e))?;
    if seen != meta.size {
        return Ok(None);
    }
    let file = dir.open_append(tmp_name).map_err(|e| local_err(&op, e))?;
    Ok(Some((file, hasher.into_digests(), seen)))
}

/// Note in state that a download of `path` starts, so that a restarted ferry can resume it.
async fn note_partial(
    ctx: &Context,
    path: &RelPath,
    source: &PartialSource,
    op: &str,
) -> Result<(), TransportError> {
    let (job, p, source) = (ctx.job.clone(), path.clone(), source.clone());
    ctx.store
        .call(move |s| s.put_partial(&job, &p, &source))
        .await
        .map_err(|e| TransportError::new(ErrorKind::State, op, e.to_string()))
}

/// The download of `path` is done or given up: its note goes (a failure to remove it only
/// means a later run finds no temporary file to resume, and starts over).
async fn forget_partial(ctx: &Context, path: &RelPath) {
    let (job, p) = (ctx.job.clone(), path.clone());
    let removed = ctx
        .store
        .call(move |s| s.remove_partial(&job, &p, PartialKind::Download))
        .await;
    if let Err(e) = removed {
        tracing::warn!(job = %ctx.job, path = %path, error = %e, "cannot clear the partial download's note");
    }
}

/// What a download is to become: the file `name` in `dir`, of `size` bytes, with the remote's
/// modification time (when listed).
struct Whole<'a> {
    dir: &'a DirHandle,
    name: &'a str,
    size: u64,
    mtime: Option<Mtime>,
}

/// A download received whole, written, given its time and mode, and fsynced.
struct Received {
    /// Bytes received by this try (after `offset`).
    received: u64,
    sha: String,
    verification: Verification,
    file: std::fs::File,
    digests: Digests,
}

/// Stream the file, seal it (its time and mode when it is whole, then the fsync), check its
/// length (and the server's hash when offered). An error comes with the bytes the file had
/// taken (what a later try may go on from); everything taken is on disk by then, so that no
/// write of this try lands after the next try's start.
async fn finish_download(
    t: &mut dyn Transport,
    path: &RelPath,
    offset: u64,
    whole: &Whole<'_>,
    mut writer: threaded::Sink,
    progress: &(dyn Fn(u64) + Send + Sync),
    verify: Verify,
) -> Result<Received, (TransportError, u64)> {
    let op = format!("download {path}");
    let listed_size = whole.size;
    let streamed = t.download_from(path, offset, &mut writer, progress).await;
    let written = writer.written();
    // A part stays owner-only with the time of its writing; only the whole file gets the
    // remote's time and its final mode, before the fsync (a crash after the rename then finds
    // both on disk).
    let complete = streamed.is_ok() && written == listed_size;
    let mode = complete
        .then(|| whole.dir.final_mode(whole.name))
        .transpose();
    let seal = match (&streamed, &mode) {
        (Ok(_), Ok(mode)) => Some(threaded::Seal {
            mtime: whole.mtime.filter(|_| complete),
            mode: *mode,
        }),
        _ => None,
    };
    let finished = writer.finish(seal).await;
    let received = streamed.map_err(|e| (e, written))?;
    mode.map_err(|e| (local_err(&op, e), written))?;
    let (file, digests) = finished.map_err(|e| (local_err(&op, e), written))?;
    let sha = digests.sha256_hex();
    if offset + received != listed_size {
        return Err((
            TransportError::new(
                ErrorKind::Transient,
                op,
                format!(
                    "received {} bytes but the listing said {listed_size}; the file may still be changing",
                    offset + received
                ),
            ),
            written,
        ));
    }
    // The byte count matching the listing is the size check; the server's digest, when it
    // computes one, is compared whatever `verify` says (it costs one command).
    let compared = compare_server_hash(t, path, &digests, &op).await;
    let verification = match compared.map_err(|e| (e, written))? {
        Some(v) => v,
        None => {
            if verify != Verify::Size {
                tracing::debug!(path = %path, "the server offers no hash command; verified by size");
            }
            Verification::SizeOnly
        }
    };
    Ok(Received {
        received,
        sha,
        verification,
        file,
        digests,
    })
}

/// Fetch the partner's checksum file that covers `name` and compare its digest with ferry's.
/// A mismatch is transient (the next try fetches the file again); a checksum file that does
/// not list the file is an error of the file (the partner's drop is inconsistent).
async fn check_against_checksum_file(
    t: &mut dyn Transport,
    file: &sidecar::Sidecar,
    name: &str,
    ours: &Digests,
    op: &str,
) -> Result<Verification, TransportError> {
    let mut text = HashingWriter::new(Vec::new()).with_limit(sidecar::MAX_SIDECAR);
    t.download(&file.file, &mut text, &|_| {}).await?;
    let text = String::from_utf8_lossy(&text.into_inner()).into_owned();
    let shown = file.file.file_name().to_owned();
    let Some(theirs) = sidecar::digest_for(&text, name, file.algo, file.per_dir) else {
        return Err(TransportError::new(
            ErrorKind::Permanent,
            op,
            format!("{shown} holds no {} digest for {name}", file.algo.as_str()),
        ));
    };
    let mine = ours.hex(file.algo).unwrap_or_default();
    if theirs != mine {
        return Err(TransportError::new(
            ErrorKind::Transient,
            op,
            format!(
                "{shown} gives {} {theirs}, the file received has {mine}",
                file.algo.as_str()
            ),
        ));
    }
    Ok(Verification::Sidecar {
        file: shown,
        algo: file.algo,
    })
}
