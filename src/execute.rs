//! Run a [`Plan`]: directories first, then transfers with bounded parallelism and retries,
//! then deletes, only if nothing failed.
//!
//! Every transfer goes to a temporary name beside its target (`.NAME.ferry-tmp`), is checked,
//! then renamed, so nobody sees a partial file under its final name and an existing file is
//! untouched until its replacement is complete:
//! - upload: hash while reading, STOR to the temporary name, compare the byte count and the
//!   server's SIZE, and its SHA-256 where FEAT offers a hash command (or read it back when the
//!   job says `verify: readback`), then RNFR/RNTO onto the final name;
//! - download: RETR into a local temporary file while hashing, compare the byte count with the
//!   listing, fsync, set the remote modification time, rename, fsync the directory.
//!
//! A state record is written for each verified file only. Transient errors are retried with
//! exponential backoff and jitter on a fresh session; auth and TLS errors stop the run. One
//! file's failure is recorded and the run goes on. Deletes run last and are skipped after any
//! failure.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::config::{AfterUpload, Direction, RetryPolicy, Verify};
use crate::listing::{Listing, Mtime};
use crate::path::RelPath;
use crate::plan::{Action, ActionKind, Plan, SyncRecord};
use crate::state::Store;
use crate::transport::local::mtime_of;
use crate::transport::{Connector, ErrorKind, Transport, TransportError};

/// Suffix of ferry's temporary files; the scan ignores such names on both sides.
pub const TEMP_SUFFIX: &str = ".ferry-tmp";

/// The temporary name used while `path` is being written.
pub fn temp_name(path: &RelPath) -> RelPath {
    let tmp = format!(".{}{TEMP_SUFFIX}", path.file_name());
    // The file name was valid, so the derived name is too; fall back to the root's child.
    path.parent().join(&tmp).unwrap_or_else(|_| RelPath::root())
}

/// Whether a name is one of ferry's own temporary files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// What a run is told about progress.
pub trait Observer: Send + Sync {
    fn file_started(&self, _action: &Action) {}
    fn bytes_moved(&self, _n: u64) {}
    fn file_finished(&self, _action: &Action, _result: &Result<FileOutcome, TransportError>) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// What one finished action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutcome {
    pub bytes: u64,
    pub verified: bool,
    pub sha256: Option<String>,
}

/// One failed action.
#[derive(Debug, Clone)]
pub struct Failure {
    pub path: RelPath,
    pub action: ActionKind,
    pub error: TransportError,
}

/// Totals of one execution.
#[derive(Debug, Clone, Default)]
pub struct Execution {
    pub transferred: u64,
    pub bytes: u64,
    pub verified: u64,
    pub deleted: u64,
    pub dirs_made: u64,
    pub failures: Vec<Failure>,
    /// An error that stopped the run (auth, TLS, cancellation).
    pub fatal: Option<TransportError>,
    /// Why planned deletes did not run.
    pub deletes_skipped: Option<String>,
}

/// Everything an execution needs besides the plan.
pub struct Context {
    pub job: String,
    pub direction: Direction,
    pub local_root: PathBuf,
    pub verify: Verify,
    pub retry: RetryPolicy,
    /// What to do with a local file once it is uploaded and verified.
    pub after_upload: AfterUpload,
    pub max_connections: usize,
    pub connector: Arc<dyn Connector>,
    pub store: Arc<Mutex<Store>>,
    pub cancel: CancellationToken,
    pub observer: Arc<dyn Observer>,
}

/// Run a plan. `remote` is the listing the plan was made from (for the sizes and times of
/// downloads).
pub async fn execute(plan: &Plan, remote: &Listing, ctx: &Context) -> Execution {
    let mut out = Execution::default();
    let mut session: Option<Box<dyn Transport>> = None;

    // 1. Directories, parents first, on one session.
    for action in plan
        .actions
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::MakeRemoteDir | ActionKind::MakeLocalDir))
    {
        if ctx.cancel.is_cancelled() {
            out.fatal = Some(cancelled());
            return out;
        }
        let result = match action.kind {
            ActionKind::MakeLocalDir => make_local_dir(&ctx.local_root, &action.path).await,
            _ => match session_for(&mut session, ctx).await {
                Ok(t) => t.make_dir(&action.path).await,
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(()) => out.dirs_made += 1,
            Err(e) if e.is_fatal() => {
                out.fatal = Some(e);
                return out;
            }
            Err(e) => out.failures.push(Failure {
                path: action.path.clone(),
                action: action.kind,
                error: e,
            }),
        }
    }

    // 2. Transfers, on up to max_connections sessions.
    let transfers: Vec<Action> = plan
        .actions
        .iter()
        .filter(|a| a.kind.is_transfer())
        .cloned()
        .collect();
    if !transfers.is_empty() {
        if let Some(t) = session.as_mut() {
            t.quit().await;
        }
        session = None;
        let results = run_transfers(transfers, remote, ctx).await;
        for (action, result) in results {
            match result {
                Ok(done) => {
                    out.transferred += 1;
                    out.bytes += done.bytes;
                    out.verified += u64::from(done.verified);
                }
                Err(e) if e.is_fatal() => {
                    if out.fatal.is_none() {
                        out.fatal = Some(e);
                    }
                }
                Err(e) => out.failures.push(Failure {
                    path: action.path.clone(),
                    action: action.kind,
                    error: e,
                }),
            }
        }
        if ctx.direction == Direction::Push && out.fatal.is_none() {
            refresh_remote_fingerprints(plan, ctx, &mut session).await;
        }
    }

    // 3. Deletes, last, and only after a clean run.
    let deletes: Vec<&Action> = plan.actions.iter().filter(|a| a.kind.is_delete()).collect();
    if !deletes.is_empty() {
        let errors = out.failures.len() + usize::from(out.fatal.is_some()) + plan.conflicts.len();
        if errors > 0 {
            out.deletes_skipped = Some(format!(
                "{} planned deletion(s) skipped because of {errors} error(s) in this run",
                deletes.len(),
            ));
        } else {
            run_deletes(&deletes, ctx, &mut session, &mut out).await;
        }
    }
    if let Some(t) = session.as_mut() {
        t.quit().await;
    }
    out
}

fn cancelled() -> TransportError {
    TransportError::new(ErrorKind::Cancelled, "", "run cancelled")
}

async fn session_for<'a>(
    slot: &'a mut Option<Box<dyn Transport>>,
    ctx: &Context,
) -> Result<&'a mut Box<dyn Transport>, TransportError> {
    if slot.is_none() {
        *slot = Some(ctx.connector.connect().await?);
    }
    slot.as_mut()
        .ok_or_else(|| TransportError::new(ErrorKind::Permanent, "connect", "no session"))
}

async fn run_transfers(
    transfers: Vec<Action>,
    remote: &Listing,
    ctx: &Context,
) -> Vec<(Action, Result<FileOutcome, TransportError>)> {
    let workers = ctx.max_connections.clamp(1, transfers.len().max(1));
    let queue = Arc::new(Mutex::new(
        transfers
            .into_iter()
            .collect::<std::collections::VecDeque<_>>(),
    ));
    let stop = ctx.cancel.child_token();
    let results = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let queue = queue.clone();
        let results = results.clone();
        let stop = stop.clone();
        tasks.push(worker(queue, results, stop, remote, ctx));
    }
    join_all(tasks).await;
    let mut out = results
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    out.sort_by(|a: &(Action, _), b| a.0.path.cmp(&b.0.path));
    out
}

/// Run futures concurrently on this task (they borrow the context, so no spawn).
async fn join_all<F: std::future::Future<Output = ()>>(futs: Vec<F>) {
    let mut pending: Vec<_> = futs.into_iter().map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        for slot in pending.iter_mut() {
            if slot
                .as_mut()
                .is_some_and(|f| f.as_mut().poll(cx).is_ready())
            {
                *slot = None;
            }
        }
        if pending.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

type Shared<T> = Arc<Mutex<T>>;

async fn worker(
    queue: Shared<std::collections::VecDeque<Action>>,
    results: Shared<Vec<(Action, Result<FileOutcome, TransportError>)>>,
    stop: CancellationToken,
    remote: &Listing,
    ctx: &Context,
) {
    let mut session: Option<Box<dyn Transport>> = None;
    loop {
        let next = queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some(action) = next else { break };
        let result = if stop.is_cancelled() {
            Err(cancelled())
        } else {
            ctx.observer.file_started(&action);
            let r = transfer_with_retry(&action, remote, ctx, &mut session, &stop).await;
            ctx.observer.file_finished(&action, &r);
            r
        };
        if let Err(e) = &result
            && e.is_fatal()
        {
            // Auth, TLS or cancellation: no other file can succeed either.
            stop.cancel();
        }
        if let Ok(mut r) = results.lock() {
            r.push((action, result));
        }
    }
    if let Some(t) = session.as_mut() {
        t.quit().await;
    }
}

/// The delay before retry number `attempt` (1-based): exponential from `initial`, capped at
/// `max`, with "equal jitter" (half fixed, half random) so parallel workers spread out.
pub fn backoff_delay(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .initial
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let capped = exp.min(policy.max);
    let half = capped / 2;
    let jitter = rand::random_range(0.0..=1.0f64);
    half + half.mul_f64(jitter)
}

async fn transfer_with_retry(
    action: &Action,
    remote: &Listing,
    ctx: &Context,
    session: &mut Option<Box<dyn Transport>>,
    stop: &CancellationToken,
) -> Result<FileOutcome, TransportError> {
    let mut attempt = 1;
    loop {
        let result = tokio::select! {
            r = transfer_once(action, remote, ctx, session) => r,
            _ = stop.cancelled() => Err(cancelled()),
        };
        match result {
            Ok(done) => return Ok(done),
            Err(e) => {
                // Whatever happened, the session may be mid-transfer: never reuse it.
                if e.kind != ErrorKind::Permanent {
                    *session = None;
                }
                if e.kind == ErrorKind::Cancelled && action.kind == ActionKind::Download {
                    let tmp = temp_name(&action.path).to_local(&ctx.local_root);
                    let _ = tokio::fs::remove_file(tmp).await;
                }
                if !e.is_retryable() || attempt >= ctx.retry.attempts {
                    return Err(e);
                }
                let delay = backoff_delay(&ctx.retry, attempt);
                tracing::warn!(path = %action.path, attempt, error = %e, ?delay, "transient error, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {},
                    _ = stop.cancelled() => return Err(cancelled()),
                }
                attempt += 1;
            }
        }
    }
}

async fn transfer_once(
    action: &Action,
    remote: &Listing,
    ctx: &Context,
    session: &mut Option<Box<dyn Transport>>,
) -> Result<FileOutcome, TransportError> {
    let t = session_for(session, ctx).await?;
    match action.kind {
        ActionKind::Upload => upload_file(t.as_mut(), action, ctx).await,
        ActionKind::Download => download_file(t.as_mut(), action, remote, ctx).await,
        other => Err(TransportError::new(
            ErrorKind::Permanent,
            other.as_str(),
            "not a transfer",
        )),
    }
}

fn local_err(op: String, e: std::io::Error) -> TransportError {
    TransportError::new(ErrorKind::Permanent, op, e.to_string())
}

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

async fn make_local_dir(root: &Path, rel: &RelPath) -> Result<(), TransportError> {
    check_no_symlink_ancestors(root, rel).await?;
    let p = rel.to_local(root);
    match tokio::fs::create_dir(&p).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => Ok(()),
        Err(e) => Err(local_err(format!("create directory {}", p.display()), e)),
    }
}

async fn upload_file(
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

async fn download_file(
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

fn save_record(
    ctx: &Context,
    path: &RelPath,
    record: &SyncRecord,
    op: &str,
) -> Result<(), TransportError> {
    let store = ctx
        .store
        .lock()
        .map_err(|_| TransportError::new(ErrorKind::Permanent, op, "state store poisoned"))?;
    store
        .put_record(&ctx.job, path, record)
        .map_err(|e| TransportError::new(ErrorKind::Permanent, op, e.to_string()))
}

/// After uploads, list each directory that received files once and record how the server
/// now lists them, so the next run compares like with like.
async fn refresh_remote_fingerprints(
    plan: &Plan,
    ctx: &Context,
    session: &mut Option<Box<dyn Transport>>,
) {
    let mut dirs: std::collections::BTreeMap<RelPath, Vec<&RelPath>> = Default::default();
    for a in plan.actions.iter().filter(|a| a.kind == ActionKind::Upload) {
        dirs.entry(a.path.parent()).or_default().push(&a.path);
    }
    for (dir, paths) in dirs {
        let Ok(t) = session_for(session, ctx).await else {
            return;
        };
        let Ok(listing) = t.list_dir(&dir).await else {
            continue;
        };
        let Ok(store) = ctx.store.lock() else { return };
        for raw in listing.entries {
            let Ok(p) = dir.join(&raw.name) else { continue };
            if paths.contains(&&p) {
                let _ = store.set_remote_fingerprint(&ctx.job, &p, raw.entry.size, raw.entry.mtime);
            }
        }
    }
}

async fn run_deletes(
    deletes: &[&Action],
    ctx: &Context,
    session: &mut Option<Box<dyn Transport>>,
    out: &mut Execution,
) {
    let mut forgotten = Vec::new();
    for action in deletes {
        if ctx.cancel.is_cancelled() {
            out.fatal = Some(cancelled());
            break;
        }
        let result = match action.kind {
            ActionKind::DeleteLocalFile => {
                let p = action.path.to_local(&ctx.local_root);
                tokio::fs::remove_file(&p)
                    .await
                    .map_err(|e| local_err(format!("delete {}", p.display()), e))
            }
            ActionKind::RemoveLocalDir => {
                let p = action.path.to_local(&ctx.local_root);
                tokio::fs::remove_dir(&p)
                    .await
                    .map_err(|e| local_err(format!("remove directory {}", p.display()), e))
            }
            ActionKind::DeleteRemoteFile | ActionKind::RemoveRemoteDir => {
                match session_for(session, ctx).await {
                    Ok(t) if action.kind == ActionKind::DeleteRemoteFile => {
                        t.delete_file(&action.path).await
                    }
                    Ok(t) => t.remove_dir(&action.path).await,
                    Err(e) => Err(e),
                }
            }
            _ => continue,
        };
        match result {
            Ok(()) => {
                out.deleted += 1;
                forgotten.push(action.path.clone());
                tracing::info!(job = %ctx.job, path = %action.path, action = action.kind.as_str(), "deleted");
            }
            Err(e) => {
                let fatal = e.is_fatal();
                out.failures.push(Failure {
                    path: action.path.clone(),
                    action: action.kind,
                    error: e,
                });
                if fatal {
                    break;
                }
            }
        }
    }
    if let Ok(store) = ctx.store.lock() {
        let _ = store.forget(&ctx.job, &forgotten);
    }
}

/// Reads through to an inner reader, hashing every byte.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The SHA-256 of everything read, lowercase hex.
    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &poll {
            this.hasher.update(&buf.filled()[before..]);
        }
        poll
    }
}

/// Writes through to an inner writer, hashing every byte written.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }

    pub fn digest_hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for HashingWriter<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let poll = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &poll {
            this.hasher.update(&buf[..*n]);
        }
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_sit_beside_the_target_and_are_recognised() {
        let p = RelPath::parse("a/b/report 1.csv").expect("path");
        let t = temp_name(&p);
        assert_eq!(t.as_str(), "a/b/.report 1.csv.ferry-tmp");
        assert!(is_temp_name(t.file_name()));
        assert!(!is_temp_name("report.csv"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            attempts: 10,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for attempt in 1..10 {
            let d = backoff_delay(&policy, attempt);
            let full = (Duration::from_millis(100) * 2u32.pow(attempt - 1)).min(policy.max);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
    }

    #[tokio::test]
    async fn hashing_reader_and_writer_agree_with_sha256() {
        use tokio::io::AsyncReadExt;
        let data = b"hello ferry".to_vec();
        let mut r = HashingReader::new(&data[..]);
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).await.expect("read");
        let want = hex::encode(Sha256::digest(&data));
        assert_eq!(r.finish(), want);
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).await.expect("write");
        assert_eq!(w.finish(), want);
    }
}
