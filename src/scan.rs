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

use crate::config::{Filter, Limits};
use crate::listing::{EntryKind, Listing, ListingProblem};
use crate::path::RelPath;
use crate::transport::{Transport, TransportError};

/// Walk the whole tree under the transport's root, applying the job's filter.
pub async fn walk(
    t: &mut dyn Transport,
    filter: &Filter,
    limits: &Limits,
) -> Result<Listing, TransportError> {
    let mut listing = Listing::default();
    let mut queue = VecDeque::from([RelPath::root()]);
    while let Some(dir) = queue.pop_front() {
        if dir.depth() > limits.max_depth {
            listing.problems.push(ListingProblem::new(
                dir.to_string(),
                format!(
                    "{dir}: more than {} directory levels deep (limits.max_depth); not walked further",
                    limits.max_depth
                ),
            ));
            continue;
        }
        let found = match t.list_dir(&dir).await {
            Ok(found) => found,
            Err(e) if dir.is_root() || e.is_fatal() => return Err(e),
            Err(e) => {
                listing
                    .problems
                    .push(ListingProblem::new(dir.to_string(), e.to_string()));
                continue;
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
                EntryKind::Dir if filter.allows_dir(path.as_str()) => {
                    listing.insert(path.clone(), raw.entry);
                    queue.push_back(path);
                }
                EntryKind::File | EntryKind::Symlink if filter.allows_file(path.as_str()) => {
                    listing.insert(path, raw.entry);
                }
                _ => {
                    listing.holds_excluded.insert(dir.clone());
                }
            }
        }
    }
    Ok(listing)
}
