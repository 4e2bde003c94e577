//! Finding the files to mirror: a walk of each watched folder, filtered by its include and
//! exclude globs (matched against the path relative to the folder).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use logarchive_common::config::agent::WatchSection;

use crate::confirmed_index::ConfirmedState;

/// A watched folder, ready to match paths.
#[derive(Debug, Clone)]
pub struct Watch {
    pub dir: PathBuf,
    /// Target folder on the server, relative to the login's root.
    pub remote: String,
    /// Poll for changes instead of inotify.
    pub poll: bool,
    include: GlobSet,
    exclude: GlobSet,
}

/// A file found on disk that belongs to a watch.
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub local: PathBuf,
    pub remote: String,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i128,
    /// Which watch of the config found it (its index).
    pub watch: usize,
    /// Bytes the server does not have yet (set when compared with the record).
    pub pending: u64,
    /// The identity (device, inode) the record holds for this path when it is another
    /// file's: this one took the place of a file rotated away by rename, so it waits until
    /// that rename has been followed (set when compared with the record).
    pub replaces: Option<(u64, u64)>,
}

fn glob_set(patterns: &[logarchive_common::config::agent::Glob]) -> anyhow::Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(Glob::new(&pattern.0)?);
    }
    Ok(builder.build()?)
}

/// Modification time in nanoseconds since the epoch.
pub fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
}

impl LocalFile {
    /// The file at `path` as a scan would find it, mirrored to `/f` (for unit tests).
    #[cfg(test)]
    pub fn on_disk(path: &Path) -> LocalFile {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).expect("test file");
        LocalFile {
            local: path.to_owned(),
            remote: "/f".into(),
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: 0,
            watch: 0,
            pending: 0,
            replaces: None,
        }
    }

    /// The file as the record's index would know it, had the server confirmed it as is.
    pub fn as_confirmed(&self) -> ConfirmedState<'_> {
        ConfirmedState {
            dev: self.dev,
            ino: self.ino,
            size: self.size,
            mtime: self.mtime,
            remote: &self.remote,
        }
    }
}

impl Watch {
    pub fn new(section: &WatchSection) -> anyhow::Result<Watch> {
        Ok(Watch {
            dir: section.dir.clone(),
            remote: section.remote.as_str().to_owned(),
            poll: section.poll,
            include: glob_set(&section.include)?,
            exclude: glob_set(&section.exclude)?,
        })
    }

    /// The remote path of `local` if this watch mirrors it.
    pub fn remote_path(&self, local: &Path) -> Option<String> {
        let rel = local.strip_prefix(&self.dir).ok()?;
        let rel = rel.to_str()?;
        if rel.is_empty() || !self.include.is_match(rel) || self.exclude.is_match(rel) {
            return None;
        }
        let base = self.remote.trim_end_matches('/');
        Some(format!("{base}/{rel}"))
    }

    /// `path` as this watch would find it: a regular file (not a link) its globs match.
    pub fn local_file(&self, path: PathBuf, meta: &std::fs::Metadata) -> Option<LocalFile> {
        if !meta.is_file() {
            return None;
        }
        let remote = self.remote_path(&path)?;
        Some(LocalFile {
            local: path,
            remote,
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: mtime_ns(meta),
            watch: 0,
            pending: meta.len(),
            replaces: None,
        })
    }

    /// Calls `found` for every matching regular file below the folder (links are not
    /// followed), one at a time, so a walk of 100,000 files holds only the folders still
    /// to visit.
    pub fn walk(&self, mut found: impl FnMut(LocalFile)) {
        let mut pending = vec![self.dir.clone()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                tracing::warn!(dir = %dir.display(), "cannot read folder");
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    pending.push(path);
                } else if let Some(file) = self.local_file(path, &meta) {
                    found(file);
                }
            }
        }
    }
}
