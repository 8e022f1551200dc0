//! Paths inside one sandbox, checked once so that backends never see `..`, empty segments or
//! anything else that could name a place outside the sandbox root.

use crate::error::{StorageError, StorageResult};
use std::fmt;

/// A normalised path relative to a sandbox root: segments joined by `/`, no leading or trailing
/// slash, no empty, `.` or `..` segments, no NUL. The empty path is the sandbox root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RelPath(String);

impl RelPath {
    /// The sandbox root.
    pub fn root() -> Self {
        RelPath(String::new())
    }

    /// Parses a user path (`/a/b`, `a/b/`, `a//b` all give `a/b`). `.` segments are dropped;
    /// `..` segments, NUL and control characters are refused, never resolved: a user path must
    /// not be able to climb, even inside its own sandbox, so that no resolution bug can escape.
    pub fn parse(user_path: &str) -> StorageResult<Self> {
        let mut segments: Vec<&str> = Vec::new();
        for segment in user_path.split('/') {
            match segment {
                "" | "." => continue,
                ".." => {
                    return Err(StorageError::PermissionDenied(format!(
                        "path '{user_path}': '..' is not allowed; use a path inside your sandbox"
                    )))
                }
                s if s.chars().any(|c| c == '\0' || c.is_control()) => {
                    return Err(StorageError::PermissionDenied(format!(
                        "path '{user_path}': control characters are not allowed in names"
                    )))
                }
                s => segments.push(s),
            }
        }
        Ok(RelPath(segments.join("/")))
    }

    /// True for the sandbox root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as `a/b/c` (empty for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// The last segment (empty for the root).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The parent folder; the root is its own parent.
    pub fn parent(&self) -> RelPath {
        match self.0.rfind('/') {
            Some(i) => RelPath(self.0[..i].to_string()),
            None => RelPath::root(),
        }
    }

    /// This path with one more segment. `name` must be a single valid segment.
    pub fn join(&self, name: &str) -> StorageResult<RelPath> {
        let child = RelPath::parse(name)?;
        if child.0.contains('/') || child.is_root() {
            return Err(StorageError::PermissionDenied(format!(
                "'{name}' is not a single file or folder name"
            )));
        }
        Ok(if self.is_root() {
            child
        } else {
            RelPath(format!("{}/{}", self.0, child.0))
        })
    }

    /// True if `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_slashes_and_dots() {
        assert_eq!(RelPath::parse("/a//b/./c/").unwrap().as_str(), "a/b/c");
        assert!(RelPath::parse("/").unwrap().is_root());
        assert!(RelPath::parse("").unwrap().is_root());
    }

    #[test]
    fn refuses_parent_segments_and_control_characters() {
        for bad in ["..", "/a/../b", "a/..", "../../etc/passwd", "a\0b", "a\nb"] {
            assert!(
                matches!(RelPath::parse(bad), Err(StorageError::PermissionDenied(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn parent_name_join_and_prefix() {
        let p = RelPath::parse("a/b/c").unwrap();
        assert_eq!(p.name(), "c");
        assert_eq!(p.parent().as_str(), "a/b");
        assert_eq!(RelPath::root().join("x").unwrap().as_str(), "x");
        assert!(p.join("d/e").is_err());
        assert!(p.starts_with(&RelPath::parse("a/b").unwrap()));
        assert!(!RelPath::parse("a/bc")
            .unwrap()
            .starts_with(&RelPath::parse("a/b").unwrap()));
    }
}
