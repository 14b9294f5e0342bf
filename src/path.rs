//! Relative paths inside a job's root, and the rules that make a name safe.
//!
//! Every path that ferry plans with or sends to a transport is a [`RelPath`]: `/`-separated,
//! no empty, `.` or `..` component, no NUL, CR, LF or backslash. Names coming from a server are
//! untrusted and go through [`validate_name`] before they become part of a `RelPath`, so nothing
//! a server lists can escape the job's local root or smuggle a line break into a command.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a name or path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name {0:?} is a relative directory reference")]
    DotName(String),
    #[error("name {0:?} contains a path separator")]
    Separator(String),
    #[error("name {0:?} contains a control character (NUL, CR or LF)")]
    Control(String),
    #[error("path {0:?} is absolute")]
    Absolute(String),
}

/// Check that one path component is safe to use as a file name on both sides.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(NameError::DotName(name.to_owned()));
    }
    if name.contains(['\0', '\r', '\n']) {
        return Err(NameError::Control(name.to_owned()));
    }
    if name.contains(['/', '\\']) {
        return Err(NameError::Separator(name.to_owned()));
    }
    Ok(())
}

/// A validated path relative to a job's root. The empty path is the root itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RelPath(String);

impl RelPath {
    /// The root of the mapping.
    pub fn root() -> Self {
        RelPath(String::new())
    }

    /// Parse a `/`-separated relative path, validating every component.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Ok(Self::root());
        }
        if s.starts_with('/') {
            return Err(NameError::Absolute(s.to_owned()));
        }
        for part in s.split('/') {
            validate_name(part)?;
        }
        Ok(RelPath(s.to_owned()))
    }

    /// This path with one more validated component.
    pub fn join(&self, name: &str) -> Result<Self, NameError> {
        validate_name(name)?;
        if self.0.is_empty() {
            Ok(RelPath(name.to_owned()))
        } else {
            Ok(RelPath(format!("{}/{}", self.0, name)))
        }
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last component, or `""` for the root.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The containing directory; the root's parent is the root.
    pub fn parent(&self) -> RelPath {
        match self.0.rfind('/') {
            Some(i) => RelPath(self.0[..i].to_owned()),
            None => RelPath::root(),
        }
    }

    /// Components from the root down.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// Every ancestor directory, from the top down, excluding the root and self.
    pub fn ancestors(&self) -> Vec<RelPath> {
        let mut out = Vec::new();
        let mut acc = RelPath::root();
        let parts: Vec<&str> = self.components().collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            acc = RelPath(if acc.0.is_empty() {
                (*part).to_owned()
            } else {
                format!("{}/{}", acc.0, part)
            });
            out.push(acc.clone());
        }
        out
    }

    /// Depth in components (the root is 0).
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// The local path under `root`. Safe because every component was validated.
    pub fn to_local(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        for c in self.components() {
            p.push(c);
        }
        p
    }

    /// The remote path under a remote root such as `/incoming`.
    pub fn to_remote(&self, root: &str) -> String {
        let root = root.trim_end_matches('/');
        if self.0.is_empty() {
            if root.is_empty() {
                "/".to_owned()
            } else {
                root.to_owned()
            }
        } else {
            format!("{root}/{}", self.0)
        }
    }
}

/// For people: control characters escaped (a name from a server cannot drive the terminal).
/// `as_str` is the exact name, for the wire and the disk.
impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&crate::text::escape_controls(&self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b", "a\rb", "a\nb"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "a b", "Ünïcødé.txt", ".hidden", "..x", "x.."] {
            assert_eq!(validate_name(good), Ok(()), "{good:?} refused");
        }
    }

    #[test]
    fn parse_refuses_escapes() {
        assert!(RelPath::parse("/etc/passwd").is_err());
        assert!(RelPath::parse("a/../../b").is_err());
        assert!(RelPath::parse("a//b").is_err());
        assert_eq!(RelPath::parse("a/b c/d").map(|p| p.depth()), Ok(3));
    }

    #[test]
    fn parent_join_and_ancestors() {
        let p = RelPath::parse("a/b/c.txt").expect("valid");
        assert_eq!(p.parent().as_str(), "a/b");
        assert_eq!(p.file_name(), "c.txt");
        assert_eq!(
            p.ancestors().iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            vec!["a", "a/b"]
        );
        assert_eq!(RelPath::root().join("x").expect("valid").as_str(), "x");
        assert_eq!(p.to_remote("/in/"), "/in/a/b/c.txt");
        assert_eq!(RelPath::root().to_remote("/"), "/");
    }
}
