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
//! A state record is written for each verified file only (a state write that fails is an
//! error of the run). Every operation on the server runs on a session of the endpoint's pool
//! and is retried after transient errors on another session, with exponential backoff and
//! jitter; auth and TLS errors stop the run. One file's failure is recorded and the run goes
//! on. Deletes run last and are skipped after any failure.
//!
//! The parts: `workers` runs transfers on up to `max_connections` sessions, `retry` retries
//! them, `upload` and `download` move one file each, `hashing` hashes while streaming.

mod direct;
mod download;
mod hashing;
mod publish;
mod retry;
pub(crate) mod sidecar;
mod threaded;
mod upload;
mod workers;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{AfterUpload, Direction, RetryPolicy, Verify};
use crate::listing::{Entry, Listing};
use crate::local_fs::{Kind, LocalRoot};
use crate::path::RelPath;
use crate::plan::{Action, ActionKind, Plan, Side, SyncRecord};
use crate::state::{PartialKind, SharedStore};
use crate::transport::pool::{Lease, Pool};
use crate::transport::{ErrorKind, HashAlgo, TransportError};

pub use hashing::{Digests, HashingReader, HashingWriter};
pub use retry::delays;
use retry::{Done, Op, retry_unit, with_retry};

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

/// The file a temporary file is being written for (`a/.x.ferry-tmp` -> `a/x`).
pub fn target_of_temp(tmp: &RelPath) -> Option<RelPath> {
    let name = tmp
        .file_name()
        .strip_prefix('.')?
        .strip_suffix(TEMP_SUFFIX)?;
    tmp.parent().join(name).ok()
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
    /// Bytes moved by the try that finished it (less than the file's size when it resumed).
    pub bytes: u64,
    /// How the file was checked once transferred.
    pub verification: Verification,
    pub sha256: Option<String>,
    /// `publish: batch`: verified under its temporary name, renamed with the rest of the batch.
    pub staged: Option<upload::Staged>,
    /// How an upload reached its final name.
    pub delivery: Delivery,
}

/// How an upload reached its final name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Through its temporary name and a rename (a download too).
    Renamed,
    /// The server refused to rename onto the old file: that was deleted first.
    DeletedFirst,
    /// Written straight to its final name (`upload: direct`, or a server refusing renames).
    Direct,
}

/// How a transferred file was checked, said plainly in the log and the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The server's digest (`command`, in `algo`) equals ferry's own of the same kind.
    ServerHash { command: String, algo: HashAlgo },
    /// The uploaded file was read back from the server and its SHA-256 compared.
    ReadBack,
    /// The partner's checksum file (`x.sha256`, `SHA256SUMS`, ...) holds ferry's digest.
    Sidecar { file: String, algo: HashAlgo },
    /// Only the byte count (and the server's SIZE, or the listing's size).
    SizeOnly,
}

impl Verification {
    /// Whether a digest was compared (not only a size).
    pub fn by_content(&self) -> bool {
        !matches!(self, Verification::SizeOnly)
    }
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verification::ServerHash { command, algo } => {
                write!(f, "server {command} ({})", algo.as_str())
            }
            Verification::ReadBack => f.write_str("read back (SHA-256)"),
            Verification::Sidecar { file, algo } => write!(f, "{file} ({})", algo.as_str()),
            Verification::SizeOnly => f.write_str("size only"),
        }
    }
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
    /// The files transferred and verified, in the order they finished.
    pub done: Vec<RelPath>,
    pub bytes: u64,
    /// Files checked after their transfer (every transferred file is), and how.
    pub verified: u64,
    pub verified_by: std::collections::BTreeMap<String, u64>,
    pub deleted: u64,
    pub dirs_made: u64,
    pub failures: Vec<Failure>,
    /// An error that stopped the run (auth, TLS, cancellation).
    pub fatal: Option<TransportError>,
    /// Why planned deletes did not run.
    pub deletes_skipped: Option<String>,
    /// Local files not sent because they changed, vanished or were replaced since the scan
    /// (warnings, not failures: the next run sends them).
    pub changed: Vec<Failure>,
    /// Uploads put in place by delete-then-rename (the server refuses to rename onto a file).
    pub deleted_first: u64,
    /// Uploads written straight to their final name.
    pub direct: u64,
}

impl Execution {
    /// Add what a later execution of the same run did (the markers of `ready: { marker }`).
    pub fn absorb(&mut self, more: Execution) {
        self.transferred += more.transferred;
        self.done.extend(more.done);
        self.bytes += more.bytes;
        self.verified += more.verified;
        for (how, n) in more.verified_by {
            *self.verified_by.entry(how).or_default() += n;
        }
        self.deleted += more.deleted;
        self.dirs_made += more.dirs_made;
        self.failures.extend(more.failures);
        if self.fatal.is_none() {
            self.fatal = more.fatal;
        }
        self.changed.extend(more.changed);
        self.deleted_first += more.deleted_first;
        self.direct += more.direct;
    }
}

/// Everything an execution needs besides the plan.
pub struct Context {
    pub job: String,
    pub direction: Direction,
    /// The job's local root, opened once for the scan and every local operation of the run.
    pub local: LocalRoot,
    /// The `after_upload: move_to` directory, opened once per run.
    pub archive: Option<LocalRoot>,
    /// Pull with `backup_dir`: where replaced and deleted local copies go, opened once per run.
    pub backup: Option<LocalRoot>,
    /// Push with `backup_dir`: the server directory where replaced and deleted remote copies go.
    pub remote_backup: Option<String>,
    pub verify: Verify,
    pub retry: RetryPolicy,
    /// What to do with a local file once it is uploaded and verified.
    pub after_upload: AfterUpload,
    /// Write `x.sha256` beside each uploaded `x`.
    pub checksum_sidecar: bool,
    /// Pull: what to do with the remote file once its local copy is verified and in place.
    pub remote_after: crate::config::RemoteAfter,
    /// Local directories that received downloads, fsynced once each after the transfers.
    pub dirs_to_sync: std::sync::Mutex<std::collections::BTreeSet<RelPath>>,
    /// Push with `publish: batch`: uploads wait under their temporary names for the batch.
    pub publish: Option<crate::config::Publish>,
    /// `upload: direct`: straight to the final name, no temporary name.
    pub direct_upload: bool,
    /// Set when the server refused to rename an upload in this run: the rest go direct.
    pub renames_refused: std::sync::atomic::AtomicBool,
    /// The endpoint's sessions, shared with every other job on it.
    pub pool: Pool,
    /// The job's remote directory: every session of this run is rooted there.
    pub remote_root: String,
    pub store: SharedStore,
    pub cancel: CancellationToken,
    pub observer: Arc<dyn Observer>,
}

/// The two listings a plan was made from: the scan's facts for uploads (which file, what size
/// and time), the server's for downloads.
#[derive(Clone)]
pub struct Listings {
    pub local: Arc<Listing>,
    pub remote: Arc<Listing>,
}

/// Run a plan made from `listings`.
pub async fn execute(plan: &Plan, listings: Listings, ctx: Arc<Context>) -> Execution {
    let mut out = Execution::default();
    let mut lease: Option<Lease> = None;
    let stop = ctx.cancel.clone();

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
            ActionKind::MakeLocalDir => download::make_local_dir(&ctx, &action.path),
            _ => retry_unit(&ctx, &mut lease, &stop, Op::MakeDir(&action.path)).await,
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

    // 1b. Two-way conflict copies: the losing version is renamed on its side before anything
    //     is transferred, so that nothing overwrites it. A rename that fails holds back both
    //     transfers of its conflict (the winner would otherwise replace the loser).
    let mut listings = listings;
    let mut held_back = std::collections::BTreeSet::new();
    if plan.actions.iter().any(|a| a.kind.is_rename()) {
        let mut local = (*listings.local).clone();
        let mut remote = (*listings.remote).clone();
        for action in plan.actions.iter().filter(|a| a.kind.is_rename()) {
            let Some(to) = &action.to else { continue };
            if ctx.cancel.is_cancelled() {
                out.fatal = Some(cancelled());
                return out;
            }
            let result = match action.kind {
                ActionKind::RenameLocalFile => rename_local(&ctx, &action.path, to).map(|entry| {
                    local.entries.remove(&action.path);
                    local.entries.insert(to.clone(), entry);
                }),
                _ => retry_unit(&ctx, &mut lease, &stop, Op::Rename(&action.path, to))
                    .await
                    .map(|()| {
                        if let Some(entry) = remote.entries.remove(&action.path) {
                            remote.entries.insert(to.clone(), entry);
                        }
                    }),
            };
            match result {
                Ok(()) => {
                    tracing::warn!(job = %ctx.job, path = %action.path, copy = %to,
                        side = if action.kind == ActionKind::RenameLocalFile { "local" } else { "remote" },
                        "conflict: changed on both sides; this side's version is kept as a copy");
                }
                Err(e) if e.is_fatal() => {
                    out.fatal = Some(e);
                    return out;
                }
                Err(e) => {
                    held_back.insert(action.path.clone());
                    held_back.insert(to.clone());
                    out.failures.push(Failure {
                        path: action.path.clone(),
                        action: action.kind,
                        error: e,
                    });
                }
            }
        }
        listings = Listings {
            local: Arc::new(local),
            remote: Arc::new(remote),
        };
    }

    // 2. Transfers, on up to max_connections sessions (the directory session goes back first,
    //    so that a budget of one still serves the workers).
    let transfers: Vec<Action> = plan
        .actions
        .iter()
        .filter(|a| a.kind.is_transfer() && !held_back.contains(&a.path))
        .cloned()
        .collect();
    let (listings_dest_local, listings_dest_remote) =
        (listings.local.clone(), listings.remote.clone());
    if !transfers.is_empty() {
        if let Some(l) = lease.take() {
            l.release();
        }
        let results = workers::run_transfers(transfers, listings, ctx.clone()).await;
        sync_download_dirs(&ctx);
        let mut staged = Vec::new();
        for (action, result) in results {
            match result {
                Ok(mut done) if done.staged.is_some() => {
                    if let Some(s) = done.staged.take() {
                        staged.push((action, done, s));
                    }
                }
                Ok(done) => {
                    match done.delivery {
                        Delivery::DeletedFirst => out.deleted_first += 1,
                        Delivery::Direct => out.direct += 1,
                        Delivery::Renamed => {}
                    }
                    out.transferred += 1;
                    out.done.push(action.path.clone());
                    out.bytes += done.bytes;
                    out.verified += 1;
                    *out.verified_by
                        .entry(done.verification.to_string())
                        .or_default() += 1;
                }
                Err(e) if e.is_fatal() => {
                    // The error that stopped the run, not the cancellations it caused.
                    let first = out
                        .fatal
                        .as_ref()
                        .is_none_or(|f| f.kind == ErrorKind::Cancelled);
                    if first {
                        out.fatal = Some(e);
                    }
                }
                Err(e) if e.kind == ErrorKind::Changed => {
                    tracing::warn!(job = %ctx.job, path = %action.path, error = %e, "skipped");
                    out.changed.push(Failure {
                        path: action.path.clone(),
                        action: action.kind,
                        error: e,
                    });
                }
                Err(e) => out.failures.push(Failure {
                    path: action.path.clone(),
                    action: action.kind,
                    error: e,
                }),
            }
        }
        if let Some(publish) = &ctx.publish
            && !staged.is_empty()
        {
            publish::publish_batch(publish, staged, &ctx, &mut lease, &mut out).await;
        }
        if ctx.direction != Direction::Pull && out.fatal.is_none() {
            refresh_remote_fingerprints(plan, &ctx, &mut lease, &mut out).await;
        }
    }

    // Temporary files of earlier runs that nothing will resume go (a cancelled run keeps
    // nothing to resume either: its partials were abandoned).
    if out.fatal.is_none() {
        if ctx.direction != Direction::Pull {
            remove_stale_temps(
                &listings_dest_remote,
                Side::Remote,
                &ctx,
                &mut lease,
                &mut out,
            )
            .await;
        }
        if ctx.direction != Direction::Push {
            remove_stale_temps(
                &listings_dest_local,
                Side::Local,
                &ctx,
                &mut lease,
                &mut out,
            )
            .await;
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
            run_deletes(&deletes, &ctx, &mut lease, &mut out).await;
        }
    }
    if let Some(l) = lease {
        l.release();
    }
    out
}

fn cancelled() -> TransportError {
    TransportError::new(ErrorKind::Cancelled, "", "run cancelled")
}

/// Ask the server for its digest of `path` and compare it with ferry's own of the same kind.
/// `None` when the server computes none; a mismatch is transient (the next try transfers
/// again).
async fn compare_server_hash(
    t: &mut dyn crate::transport::Transport,
    path: &RelPath,
    ours: &Digests,
    op: &str,
) -> Result<Option<Verification>, TransportError> {
    let Some(command) = t
        .capabilities()
        .hash_command
        .as_ref()
        .map(|h| h.command.clone())
    else {
        return Ok(None);
    };
    let Some((algo, theirs)) = t.server_hash(path).await? else {
        return Ok(None);
    };
    let Some(mine) = ours.hex(algo) else {
        return Ok(None);
    };
    if theirs != mine {
        return Err(TransportError::new(
            ErrorKind::Transient,
            op,
            format!(
                "the server's {} ({command}) is {theirs}, ferry's is {mine}",
                algo.as_str()
            ),
        ));
    }
    Ok(Some(Verification::ServerHash { command, algo }))
}

/// Make the renames of this run's downloads durable: one fsync per directory that got files.
fn sync_download_dirs(ctx: &Context) {
    let dirs = ctx
        .dirs_to_sync
        .lock()
        .map(|mut d| std::mem::take(&mut *d))
        .unwrap_or_default();
    for rel in dirs {
        if let Err(e) = ctx.local.dir(&rel).and_then(|d| d.sync()) {
            tracing::error!(job = %ctx.job, path = %rel, error = %e,
                "cannot fsync a directory that received files; a crash now could lose them (the next run fetches them again)");
        }
    }
}

/// Two-way, `keep_both`: rename the losing local copy `path` to `to` (never over anything), and
/// describe it as the upload of the copy will find it (a rename changes the inode's ctime).
fn rename_local(ctx: &Context, path: &RelPath, to: &RelPath) -> Result<Entry, TransportError> {
    let op = format!("rename {path} to {to}");
    let (dir, name) = ctx.local.parent(path).map_err(|e| local_err(&op, e))?;
    dir.rename_no_replace(name, &dir, to.file_name())
        .map_err(|e| local_err(&op, e))?;
    dir.sync().map_err(|e| local_err(&op, e))?;
    match dir.stat(to.file_name()).map_err(|e| local_err(&op, e))? {
        Some(meta) if meta.kind == Kind::File => Ok(Entry {
            id: Some(meta.id),
            ..Entry::file(meta.size, meta.mtime)
        }),
        _ => Err(TransportError::new(
            ErrorKind::Local,
            op,
            "the renamed copy is not a regular file",
        )),
    }
}

/// A local file operation's failure; the I/O error already names the path.
fn local_err(op: &str, e: std::io::Error) -> TransportError {
    TransportError::local(op, &e)
}

/// Delete a local file the plan found deleted on the source, or remove a directory; the parent
/// is opened through the root (no link followed), and only a regular file is deleted.
fn delete_local(ctx: &Context, action: &Action) -> Result<(), TransportError> {
    let op = format!("{} {}", action.kind.as_str(), action.path);
    let (dir, name) = ctx
        .local
        .parent(&action.path)
        .map_err(|e| local_err(&op, e))?;
    if action.kind == ActionKind::RemoveLocalDir {
        return dir.remove_dir(name).map_err(|e| local_err(&op, e));
    }
    match dir.stat(name).map_err(|e| local_err(&op, e))? {
        Some(meta) if meta.kind == Kind::File => match &ctx.backup {
            Some(backup) => {
                upload::back_up(backup, &dir, name, &action.path).map_err(|e| local_err(&op, e))
            }
            None => dir.remove_file(name).map_err(|e| local_err(&op, e)),
        },
        Some(_) => Err(TransportError::new(
            ErrorKind::Local,
            op,
            format!(
                "{}: no longer a regular file; not deleted",
                dir.display(name).display()
            ),
        )),
        None => Ok(()),
    }
}

/// Transfers of files smaller than this are not noted in state and, after an interruption,
/// start over: noting one costs two database writes (a third of a small upload's work on
/// loopback), and resuming it would save less than one round trip. A temporary file such a
/// transfer leaves is stale, removed after the next run's transfers.
pub(crate) const RESUME_FROM: u64 = 1024 * 1024;

/// Remove the destination's temporary files that no partial transfer in state will resume:
/// left by a crash before the transfer was noted, by an older ferry, or given up since.
async fn remove_stale_temps(
    dest: &Listing,
    side: Side,
    ctx: &Context,
    lease: &mut Option<Lease>,
    out: &mut Execution,
) {
    if dest.temp_files.is_empty() {
        return;
    }
    let kind = match side {
        Side::Remote => PartialKind::Upload,
        Side::Local => PartialKind::Download,
    };
    let stop = ctx.cancel.clone();
    for tmp in &dest.temp_files {
        let Some(target) = target_of_temp(tmp) else {
            continue;
        };
        let (job, path) = (ctx.job.clone(), target.clone());
        let noted = ctx.store.call(move |s| s.partial(&job, &path, kind)).await;
        match noted {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => {
                out.failures.push(Failure {
                    path: target,
                    action: ActionKind::DeleteLocalFile,
                    error: state_err("look up partial transfers", e),
                });
                return;
            }
        }
        let removed = match side {
            Side::Local => ctx
                .local
                .parent(tmp)
                .and_then(|(dir, name)| match dir.stat(name)? {
                    Some(m) if m.kind == Kind::File => dir.remove_file(name),
                    _ => Ok(()),
                })
                .map_err(|e| local_err("remove a stale temporary file", e)),
            Side::Remote => retry_unit(ctx, lease, &stop, Op::DeleteFile(tmp)).await,
        };
        match removed {
            Ok(()) => tracing::info!(job = %ctx.job, path = %tmp, "removed a stale temporary file"),
            Err(e) => tracing::warn!(job = %ctx.job, path = %tmp, error = %e,
                "cannot remove a stale temporary file"),
        }
    }
}

/// A state write that failed: an error of the run, reported against `path`.
fn state_err(op: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::new(ErrorKind::State, op, e.to_string())
}

async fn save_record(
    ctx: &Context,
    path: &RelPath,
    record: &SyncRecord,
    op: &str,
) -> Result<(), TransportError> {
    let (job, path, record) = (ctx.job.clone(), path.clone(), record.clone());
    ctx.store
        .call(move |s| s.put_record(&job, &path, &record))
        .await
        .map_err(|e| state_err(op, e))
}

/// After uploads, list each directory that received files once and record how the server
/// now lists them, so the next run compares like with like. A directory that cannot be
/// listed leaves its records without a remote time (the next run compares by size there).
async fn refresh_remote_fingerprints(
    plan: &Plan,
    ctx: &Context,
    lease: &mut Option<Lease>,
    out: &mut Execution,
) {
    let mut dirs: std::collections::BTreeMap<RelPath, Vec<&RelPath>> = Default::default();
    for a in plan.actions.iter().filter(|a| a.kind == ActionKind::Upload) {
        dirs.entry(a.path.parent()).or_default().push(&a.path);
    }
    let stop = ctx.cancel.clone();
    for (dir, paths) in dirs {
        let listing = with_retry(ctx, lease, &stop, Op::List(&dir)).await;
        let listing = match listing {
            Ok(Done::Listing(l)) => l,
            Ok(_) => continue,
            Err(e) if e.is_fatal() => return,
            Err(e) => {
                tracing::warn!(job = %ctx.job, path = %dir, error = %e,
                    "cannot list uploaded files back; the next run compares them by size");
                continue;
            }
        };
        let op = format!("record {dir}");
        let fingerprints: Vec<_> = listing
            .entries
            .into_iter()
            .filter_map(|raw| {
                let p = dir.join(&raw.name).ok()?;
                paths
                    .contains(&&p)
                    .then_some((p, raw.entry.size, raw.entry.mtime))
            })
            .collect();
        let job = ctx.job.clone();
        let failed = ctx
            .store
            .call(move |store| {
                // One commit for the directory, not one per file.
                store.in_transaction(|store| {
                    Ok(fingerprints
                        .into_iter()
                        .filter_map(|(p, size, mtime)| {
                            store
                                .set_remote_fingerprint(&job, &p, size, mtime)
                                .err()
                                .map(|e| (p, e.to_string()))
                        })
                        .collect::<Vec<_>>())
                })
            })
            .await;
        match failed {
            Ok(failed) => {
                for (p, e) in failed {
                    out.failures.push(Failure {
                        path: p,
                        action: ActionKind::Upload,
                        error: state_err(&op, e),
                    });
                }
            }
            Err(e) => {
                out.failures.push(Failure {
                    path: dir.clone(),
                    action: ActionKind::Upload,
                    error: state_err(&op, e),
                });
                return;
            }
        }
    }
}

async fn run_deletes(
    deletes: &[&Action],
    ctx: &Context,
    lease: &mut Option<Lease>,
    out: &mut Execution,
) {
    let mut forgotten = Vec::new();
    let stop = ctx.cancel.clone();
    for action in deletes {
        if ctx.cancel.is_cancelled() {
            out.fatal = Some(cancelled());
            break;
        }
        let result = match action.kind {
            ActionKind::DeleteLocalFile | ActionKind::RemoveLocalDir => delete_local(ctx, action),
            ActionKind::DeleteRemoteFile => {
                retry_unit(ctx, lease, &stop, Op::DeleteFile(&action.path)).await
            }
            ActionKind::RemoveRemoteDir => {
                retry_unit(ctx, lease, &stop, Op::RemoveDir(&action.path)).await
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
    let job = ctx.job.clone();
    let forget = ctx
        .store
        .call(move |store| store.forget(&job, &forgotten))
        .await
        .map_err(|e| state_err("forget deleted paths", e));
    if let Err(e) = forget {
        out.failures.push(Failure {
            path: RelPath::root(),
            action: ActionKind::DeleteLocalFile,
            error: e,
        });
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
}
