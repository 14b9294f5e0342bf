//! Partners' checksum files: `x.sha256` or `x.md5` beside `x`, or a directory's `SHA256SUMS`
//! or `MD5SUMS` (the GNU coreutils format, `HEX  NAME` or `HEX *NAME` per line).
//!
//! On a pull, a file a checksum file covers is checked against it before it takes its final
//! name: a mismatch is retried (the file is fetched again), then reported, and the final name
//! keeps its previous content. On a push with `checksum_sidecar: true`, `x.sha256` is written
//! beside `x` once `x` is in place, so the partner can check it the same way.
//!
//! What it does not do: trust a checksum file further than its digest; it is fetched with a
//! size bound and parsed leniently (a line it does not understand is ignored).

use crate::listing::{EntryKind, Listing};
use crate::path::RelPath;
use crate::transport::HashAlgo;

/// The most a checksum file may hold that ferry reads (a SUMS file of many thousand lines).
pub(super) const MAX_SIDECAR: u64 = 4 * 1024 * 1024;

/// A checksum file that covers one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sidecar {
    pub file: RelPath,
    pub algo: HashAlgo,
    /// A directory's SUMS file (many names) rather than one file's.
    pub per_dir: bool,
}

/// Whether `name` is itself a checksum file (never checked against another).
pub(crate) fn is_checksum_file(name: &str) -> bool {
    name.ends_with(".sha256") || name.ends_with(".md5") || name == "SHA256SUMS" || name == "MD5SUMS"
}

/// The checksum file covering `path` in `listing`, if any: `x.sha256`, `x.md5`, then the
/// directory's `SHA256SUMS`, `MD5SUMS`.
pub(super) fn find(listing: &Listing, path: &RelPath) -> Option<Sidecar> {
    let name = path.file_name();
    if is_checksum_file(name) {
        return None;
    }
    let dir = path.parent();
    let candidates = [
        (format!("{name}.sha256"), HashAlgo::Sha256, false),
        (format!("{name}.md5"), HashAlgo::Md5, false),
        ("SHA256SUMS".to_owned(), HashAlgo::Sha256, true),
        ("MD5SUMS".to_owned(), HashAlgo::Md5, true),
    ];
    candidates.into_iter().find_map(|(file, algo, per_dir)| {
        let file = dir.join(&file).ok()?;
        let is_file = listing
            .get(&file)
            .is_some_and(|e| e.kind == EntryKind::File);
        is_file.then_some(Sidecar {
            file,
            algo,
            per_dir,
        })
    })
}

/// The digest a checksum file gives for `name`: a one-file sidecar holds `HEX` or `HEX  NAME`
/// (its first digest counts); a SUMS file holds `HEX  NAME` or `HEX *NAME` lines.
pub(super) fn digest_for(text: &str, name: &str, algo: HashAlgo, per_dir: bool) -> Option<String> {
    let is_digest = |w: &str| w.len() == algo.hex_len() && w.bytes().all(|b| b.is_ascii_hexdigit());
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let Some((hex, rest)) = line.split_once(char::is_whitespace).or(Some((line, ""))) else {
            continue;
        };
        if !is_digest(hex) {
            continue;
        }
        let listed = rest.trim_start();
        let listed = listed.strip_prefix('*').unwrap_or(listed);
        if !per_dir || listed == name {
            return Some(hex.to_ascii_lowercase());
        }
    }
    None
}

/// What `x.sha256` holds for a pushed file: coreutils' format.
pub(super) fn sidecar_text(sha256: &str, name: &str) -> String {
    format!("{sha256}  {name}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::Entry;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).expect("path")
    }

    #[test]
    fn the_covering_checksum_file_is_found_in_order() {
        let mut listing = Listing::default();
        for f in [
            "d/a.csv",
            "d/a.csv.md5",
            "d/b.csv",
            "d/SHA256SUMS",
            "e/c.csv",
        ] {
            listing.insert(p(f), Entry::file(1, None));
        }
        listing.insert(p("e/MD5SUMS"), Entry::dir());
        let found = |f: &str| find(&listing, &p(f)).map(|s| (s.file.as_str().to_owned(), s.algo));
        assert_eq!(
            found("d/a.csv"),
            Some(("d/a.csv.md5".into(), HashAlgo::Md5))
        );
        assert_eq!(
            found("d/b.csv"),
            Some(("d/SHA256SUMS".into(), HashAlgo::Sha256))
        );
        assert_eq!(
            found("e/c.csv"),
            None,
            "a directory named MD5SUMS is not a checksum file"
        );
        assert_eq!(found("d/a.csv.md5"), None, "checksum files are not checked");
    }

    #[test]
    fn digests_are_read_from_both_formats() {
        let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let sha = HashAlgo::Sha256;
        assert_eq!(
            digest_for(&format!("{h}\n"), "x", sha, false).as_deref(),
            Some(h)
        );
        assert_eq!(
            digest_for(&format!("{}  x\n", h.to_uppercase()), "x", sha, false).as_deref(),
            Some(h)
        );
        let sums = format!("{}  other\n{h} *x\nnot a line\n", "0".repeat(64));
        assert_eq!(digest_for(&sums, "x", sha, true).as_deref(), Some(h));
        assert_eq!(digest_for(&sums, "missing", sha, true), None);
        assert_eq!(digest_for("abc  x", "x", sha, false), None);
        assert_eq!(
            digest_for(
                "d41d8cd98f00b204e9800998ecf8427e  x",
                "x",
                HashAlgo::Md5,
                false
            )
            .as_deref(),
            Some("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(sidecar_text(h, "x"), format!("{h}  x\n"));
    }
}
