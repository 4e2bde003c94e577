//! Archive paths: the one place where a path from outside is normalised and confined.
//!
//! Every path that reaches the archive — from an FTP command, a web URL, a syslog host name
//! or a logger's station id — becomes an [`ArchivePath`] first. An `ArchivePath` is absolute
//! (`/` or `/node01/Logs/x.log`), and each of its components is a plain name: never empty,
//! never `.` or `..`, without `/`, NUL or control characters, at most 255 bytes. So joining
//! one to a storage root can never leave that root.

use std::fmt;
use std::path::{Component, Path};

/// A normalised absolute path inside the archive.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArchivePath(String);

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path \"{0}\" is not absolute (it must start with '/')")]
    NotAbsolute(String),
    #[error("path \"{path}\" has a forbidden component \"{component}\" ({reason})")]
    BadComponent {
        path: String,
        component: String,
        reason: &'static str,
    },
    #[error("path \"{0}\" is not valid UTF-8")]
    NotUtf8(String),
}

/// Checks one name; `Err` holds the reason.
fn check_component(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("empty name")
    } else if name == "." || name == ".." {
        Err("'.' and '..' are not allowed")
    } else if name.len() > 255 {
        Err("longer than 255 bytes")
    } else if name.contains('/') {
        Err("contains '/'")
    } else if name.chars().any(char::is_control) {
        Err("contains a control character")
    } else {
        Ok(())
    }
}

/// Turns a name from outside (a syslog host name, a logger's station id) into one safe path
/// component: letters, digits, `.`, `_` and `-` are kept, anything else becomes `_`, leading
/// dots are dropped (no `..`, no hidden files) and the result is cut to `max` bytes.
/// `None` when nothing usable is left.
pub fn safe_component(raw: &str, max: usize) -> Option<String> {
    let mapped: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches('.');
    // Only ASCII is left, so any byte index is a char boundary.
    let cut = &trimmed[..trimmed.len().min(max.min(255))];
    (!cut.is_empty() && cut.chars().any(|c| c != '_')).then(|| cut.to_owned())
}

impl ArchivePath {
    pub fn root() -> ArchivePath {
        ArchivePath("/".to_owned())
    }

    /// Parses an absolute path strictly: repeated and trailing slashes are folded, but `.`,
    /// `..` and odd characters are refused rather than interpreted.
    pub fn parse(path: &str) -> Result<ArchivePath, PathError> {
        if !path.starts_with('/') {
            return Err(PathError::NotAbsolute(path.to_owned()));
        }
        let mut normal = ArchivePath::root();
        for component in path.split('/').filter(|c| !c.is_empty()) {
            check_component(component).map_err(|reason| PathError::BadComponent {
                path: path.to_owned(),
                component: component.to_owned(),
                reason,
            })?;
            normal.push_unchecked(component);
        }
        Ok(normal)
    }

    /// Resolves a path as a chrooted client sees it: `virtual_path` is relative to `root`
    /// (or absolute, meaning from `root`), `..` stops at `root`, and `.` is ignored — the way
    /// an FTP server treats `CWD ../../..` in a user's home.
    pub fn resolve_within(
        root: &ArchivePath,
        virtual_path: &Path,
    ) -> Result<ArchivePath, PathError> {
        let shown = || virtual_path.to_string_lossy().into_owned();
        let mut inside: Vec<&str> = Vec::new();
        for component in virtual_path.components() {
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::Prefix(_) => return Err(PathError::NotAbsolute(shown())),
                Component::ParentDir => {
                    inside.pop();
                }
                Component::Normal(name) => {
                    let name = name.to_str().ok_or_else(|| PathError::NotUtf8(shown()))?;
                    check_component(name).map_err(|reason| PathError::BadComponent {
                        path: shown(),
                        component: name.to_owned(),
                        reason,
                    })?;
                    inside.push(name);
                }
            }
        }
        let mut resolved = root.clone();
        for name in inside {
            resolved.push_unchecked(name);
        }
        Ok(resolved)
    }

    /// This path with one more component.
    pub fn join(&self, name: &str) -> Result<ArchivePath, PathError> {
        check_component(name).map_err(|reason| PathError::BadComponent {
            path: format!("{}/{}", self.0.trim_end_matches('/'), name),
            component: name.to_owned(),
            reason,
        })?;
        let mut joined = self.clone();
        joined.push_unchecked(name);
        Ok(joined)
    }

    fn push_unchecked(&mut self, name: &str) {
        if !self.is_root() {
            self.0.push('/');
        }
        self.0.push_str(name);
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The names from the root down, e.g. `["node01", "x.log"]`.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    pub fn parent(&self) -> Option<ArchivePath> {
        if self.is_root() {
            return None;
        }
        let cut = self.0.rfind('/').unwrap_or(0);
        Some(ArchivePath(if cut == 0 {
            "/".to_owned()
        } else {
            self.0[..cut].to_owned()
        }))
    }

    pub fn file_name(&self) -> Option<&str> {
        self.components().last()
    }

    /// True when `self` is `base` or lies below it (component-wise: `/ab` is not below `/a`).
    pub fn starts_with(&self, base: &ArchivePath) -> bool {
        base.is_root()
            || self.0 == base.0
            || (self.0.starts_with(&base.0) && self.0.as_bytes().get(base.0.len()) == Some(&b'/'))
    }

    /// The part of `self` below `base`, without a leading slash (`""` when equal).
    pub fn relative_to(&self, base: &ArchivePath) -> Option<&str> {
        if !self.starts_with(base) {
            return None;
        }
        Some(self.0[base.0.len()..].trim_start_matches('/'))
    }

    /// The same path moved from under `from` to under `to`.
    pub fn rebase(&self, from: &ArchivePath, to: &ArchivePath) -> Option<ArchivePath> {
        let rest = self.relative_to(from)?;
        let mut moved = to.clone();
        for name in rest.split('/').filter(|c| !c.is_empty()) {
            moved.push_unchecked(name);
        }
        Some(moved)
    }
}

impl fmt::Display for ArchivePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ArchivePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'de> serde::Deserialize<'de> for ArchivePath {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ArchivePath::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for ArchivePath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_folds_slashes_and_refuses_tricks() {
        assert_eq!(ArchivePath::parse("//a///b/").unwrap().as_str(), "/a/b");
        assert_eq!(ArchivePath::parse("/").unwrap().as_str(), "/");
        for bad in ["a/b", "/a/../b", "/a/./b", "/..", "/a\0b", "/a\nb", ""] {
            assert!(ArchivePath::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("/{}", "x".repeat(256));
        assert!(ArchivePath::parse(&long).is_err());
    }

    #[test]
    fn resolve_within_never_leaves_the_root() {
        let home = ArchivePath::parse("/node01").unwrap();
        let cases = [
            ("/", "/node01"),
            ("../../etc/passwd", "/node01/etc/passwd"),
            ("/a/../../..", "/node01"),
            ("a/./b/../c", "/node01/a/c"),
            ("/Logs/x.log", "/node01/Logs/x.log"),
        ];
        for (input, expected) in cases {
            let resolved = ArchivePath::resolve_within(&home, Path::new(input)).unwrap();
            assert_eq!(resolved.as_str(), expected, "{input}");
            assert!(resolved.starts_with(&home));
        }
        assert!(ArchivePath::resolve_within(&home, Path::new("a\u{7}b")).is_err());
    }

    #[test]
    fn safe_component_confines_names() {
        assert_eq!(
            safe_component("web-01.example.org", 64).as_deref(),
            Some("web-01.example.org")
        );
        assert_eq!(safe_component("../../etc", 64).as_deref(), Some("_.._etc"));
        assert_eq!(safe_component("..", 64), None);
        assert_eq!(safe_component("a/b\0c", 64).as_deref(), Some("a_b_c"));
        assert_eq!(safe_component("fe80::1", 64).as_deref(), Some("fe80__1"));
        assert_eq!(safe_component("///", 64), None);
        assert_eq!(safe_component("abcdef", 3).as_deref(), Some("abc"));
        for raw in ["..", "a/../b", "\u{0}x", "h\u{e9}te"] {
            if let Some(name) = safe_component(raw, 64) {
                assert!(ArchivePath::root().join(&name).is_ok(), "{raw:?}");
            }
        }
    }

    #[test]
    fn prefixes_are_component_wise() {
        let a = ArchivePath::parse("/a").unwrap();
        let ab = ArchivePath::parse("/ab").unwrap();
        let a_b = ArchivePath::parse("/a/b").unwrap();
        assert!(a_b.starts_with(&a));
        assert!(!ab.starts_with(&a));
        assert!(a.starts_with(&ArchivePath::root()));
        assert_eq!(a_b.relative_to(&a), Some("b"));
        assert_eq!(a_b.parent(), Some(a.clone()));
        assert_eq!(a.parent(), Some(ArchivePath::root()));
        let moved = a_b.rebase(&a, &ab).unwrap();
        assert_eq!(moved.as_str(), "/ab/b");
    }
}
