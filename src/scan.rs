//! Walk one side of a job into a [`Listing`].
//!
//! The same walk serves both sides: it asks a [`Transport`] for one directory at a time, so the
//! local tree (through [`crate::transport::local::LocalDir`]) and the remote tree (through FTPS)
//! are read by one piece of code. Every name is validated here: an entry named `..`, `.`, an
//! absolute path, or holding `/`, `\`, NUL, CR or LF is skipped and recorded as a problem, which
//! makes the listing incomplete and so blocks deletes.
//!
//! A failure to read the root, or an authentication or TLS failure, ends the walk with an error;
//! any other directory that cannot be read is recorded as a problem and the walk goes on. A tree
//! deeper than the endpoint's `max_depth` (a server that lists `a` inside every `a`) is not
//! walked below that depth, and that too is a problem naming the directory.
//!
//! Entries the job's filter leaves out, and ferry's own temporary files, are not listed, but
//! the directory holding them is marked ([`Listing::holds_excluded`]) so that it is never
//! planned for removal as if it were empty.

use std::collections::VecDeque;

use crate::config::{Filter, Limits, RetryPolicy};
use crate::listing::{Entry, EntryKind, Listing, ListingProblem};
use crate::path::RelPath;
use crate::transport::pool::Pool;
use crate::transport::{DirListing, ErrorKind, Transport, TransportError};

/// The state of one walk: what was found, and the directories still to list.
struct Walk<'a> {
    listing: Listing,
    /// The entries found, gathered unsorted and made into the listing's map at the end: a
    /// map built at once from sorted entries has full nodes, one filled an insert at a time
    /// in path order has half-empty ones (twice the memory at 200,000 files).
    found: Vec<(RelPath, Entry)>,
    pending: VecDeque<RelPath>,
    filter: &'a Filter,
    limits: &'a Limits,
}

impl<'a> Walk<'a> {
    fn new(filter: &'a Filter, limits: &'a Limits) -> Self {
        Walk {
            listing: Listing::default(),
            found: Vec::new(),
            pending: VecDeque::from([RelPath::root()]),
            filter,
            limits,
        }
    }

    /// The next directory to list, skipping (and reporting) those past the depth limit.
    fn next_dir(&mut self) -> Option<RelPath> {
        while let Some(dir) = self.pending.pop_front() {
            if dir.depth() <= self.limits.max_depth {
                return Some(dir);
            }
            self.listing.problems.push(ListingProblem::new(
                dir.to_string(),
                format!(
                    "{dir}: more than {} directory levels deep (limits.max_depth); not walked further",
                    self.limits.max_depth
                ),
            ));
        }
        None
    }

    /// Take in one directory's listing (or its failure).
    fn absorb(
        &mut self,
        dir: &RelPath,
        found: Result<DirListing, TransportError>,
    ) -> Result<(), TransportError> {
        let listing = &mut self.listing;
        let found = match found {
            Ok(found) => found,
            Err(e) if dir.is_root() || e.is_fatal() => return Err(e),
            Err(e) => {
                listing
                    .problems
                    .push(ListingProblem::new(dir.to_string(), e.to_string()));
                return Ok(());
            }
        };
        for message in found.unparsed {
            listing
                .problems
                .push(ListingProblem::new(dir.to_string(), message));
        }
        let mut entries = found.entries;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for raw in entries {
            if crate::execute::is_temp_name(&raw.name) {
                // ferry's own partial files (from a run that was killed): never synced.
                listing.holds_excluded.insert(dir.clone());
                if raw.entry.kind == EntryKind::File
                    && let Ok(p) = dir.join(&raw.name)
                {
                    listing.temp_files.push(p);
                }
                continue;
            }
            let path = match dir.join(&raw.name) {
                Ok(p) => p,
                Err(e) => {
                    listing.problems.push(ListingProblem::new(
                        format!("{}/{:?}", dir, raw.name),
                        format!("refused entry {:?} listed in {dir}: {e}", raw.name),
                    ));
                    continue;
                }
            };
            match raw.entry.kind {
                EntryKind::Dir if self.filter.allows_dir(path.as_str()) => {
                    self.found.push((path.clone(), raw.entry));
                    self.pending.push_back(path);
                }
                EntryKind::File | EntryKind::Symlink if self.filter.allows_file(path.as_str()) => {
                    self.found.push((path, raw.entry));
                }
                _ => {
                    listing.holds_excluded.insert(dir.clone());
                }
            }
        }
        Ok(())
    }

    /// The listing, with problems in a stable order whatever order directories came back in.
    fn finish(mut self) -> Listing {
        // Sorted, then built in one go (a repeated path keeps its last entry, as an insert
        // would).
        let mut found = std::mem::take(&mut self.found);
        found.shrink_to_fit();
        self.listing.entries = found.into_iter().collect();
        self.listing
            .problems
            .sort_by(|a, b| (&a.path, &a.message).cmp(&(&b.path, &b.message)));
        self.listing
    }
}

/// Walk the whole tree under the transport's root, one directory at a time, applying the
/// job's filter.
pub async fn walk(
    t: &mut dyn Transport,
    filter: &Filter,
    limits: &Limits,
) -> Result<Listing, TransportError> {
    let mut walk = Walk::new(filter, limits);
    while let Some(dir) = walk.next_dir() {
        let found = t.list_dir(&dir).await;
        walk.absorb(&dir, found)?;
    }
    Ok(walk.finish())
}

/// How many local directories are read at once: the reads are blocking calls on tokio's
/// blocking threads, and a few in flight keep the disk and the cores busy while the remote
/// listing runs beside them.
const LOCAL_WIDTH: usize = 4;

/// Walk the local tree of `root`, four directories at a time; the same listing as
/// [`walk`] over a [`LocalDir`](crate::transport::local::LocalDir) (stat only, nothing read).
pub async fn walk_local(
    root: &crate::local_fs::LocalRoot,
    filter: &Filter,
    limits: &Limits,
) -> Result<Listing, TransportError> {
    let mut walk = Walk::new(filter, limits);
    let mut reading = tokio::task::JoinSet::new();
    loop {
        while reading.len() < LOCAL_WIDTH {
            let Some(dir) = walk.next_dir() else { break };
            let mut side = crate::transport::local::LocalDir::on(root.clone());
            reading.spawn(async move {
                let found = side.list_dir(&dir).await;
                (dir, found)
            });
        }
        let Some(done) = reading.join_next().await else {
            return Ok(walk.finish());
        };
        let (dir, found) = done.map_err(|e| {
            TransportError::new(
                ErrorKind::Permanent,
                "read directory",
                format!("scanning task failed: {e}"),
            )
        })?;
        walk.absorb(&dir, found)?;
    }
}

/// Walk the remote tree under `root` with up to the pool's budget of directories listed at
/// once, each on a pooled session (kept between directories, so a walk logs in at most once
/// per connection it uses). A transient failure listing a directory is retried on a new
/// session, as `retry` says, before it counts as a problem.
pub async fn walk_pool(
    pool: &Pool,
    root: &str,
    filter: &Filter,
    limits: &Limits,
    retry: &RetryPolicy,
) -> Result<Listing, TransportError> {
    let mut walk = Walk::new(filter, limits);
    let mut listing = tokio::task::JoinSet::new();
    let width = pool.capacity();
    loop {
        while listing.len() < width {
            let Some(dir) = walk.next_dir() else { break };
            let (pool, root, retry) = (pool.clone(), root.to_owned(), *retry);
            listing.spawn(tracing::Instrument::instrument(
                async move {
                    let found = list_on_pool(&pool, &root, &dir, &retry).await;
                    (dir, found)
                },
                tracing::Span::current(),
            ));
        }
        let Some(done) = listing.join_next().await else {
            return Ok(walk.finish());
        };
        let (dir, found) = done.map_err(|e| {
            TransportError::new(
                ErrorKind::Permanent,
                "list",
                format!("listing task failed: {e}"),
            )
        })?;
        // An error here (the root, or auth/TLS) ends the walk; the other tasks are aborted
        // when `listing` is dropped.
        walk.absorb(&dir, found)?;
    }
}

async fn list_on_pool(
    pool: &Pool,
    root: &str,
    dir: &RelPath,
    retry: &RetryPolicy,
) -> Result<DirListing, TransportError> {
    let mut waits = retry.delays();
    loop {
        let found = match pool.get(root).await {
            Ok(mut lease) => match lease.session().list_dir(dir).await {
                Ok(found) => {
                    lease.release();
                    return Ok(found);
                }
                // The session may be mid-listing: it is dropped with the lease, never reused.
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let e = match found {
            Err(e) if e.is_retryable() => e,
            other => return other,
        };
        let Some(wait) = waits.next() else {
            return Err(e);
        };
        tracing::warn!(path = %dir, error = %e, next_attempt_in = ?wait, "listing failed; trying again");
        tokio::time::sleep(wait).await;
    }
}
