//! An in-memory index of the files the record holds as confirmed: for each local path, a
//! digest of what the server confirmed (device, inode, size, modification time, remote
//! path). A rescan asks it first, so an idle pass over 100,000 unchanged files costs one
//! `stat` each and no read of sled, and sled's cache holds only what writes need.
//!
//! 16 bytes a file: a path hash and a state digest (64-bit, keyed per process), the bulk
//! in one sorted vector. A digest only ever says "unchanged" when it is equal: a changed
//! file, a collision of path hashes or a path never seen all fall back to the record.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What the server confirmed of one file, in the terms a `stat` gives.
#[derive(Debug, Clone, Copy)]
pub struct ConfirmedState<'a> {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i128,
    pub remote: &'a str,
}

/// The digest of a path whose record is not (or no longer) confirmed; no state hashes to it.
const UNKNOWN: u64 = 0;

/// New paths are kept in a small map until there are this many, then sorted into the
/// vector: a backlog of 100,000 files costs 25 sorts of a mostly sorted vector.
const MERGE_AT: usize = 4096;

#[derive(Default)]
pub struct ConfirmedIndex {
    /// Random keys: the hashes cannot be predicted (or collided) by whoever names files.
    hasher: RandomState,
    /// (path hash, state digest), sorted by path hash.
    sorted: Vec<(u64, u64)>,
    /// Paths not in `sorted` yet.
    recent: HashMap<u64, u64>,
    /// Entries in `sorted` marked `UNKNOWN`, removed by `compact`.
    forgotten: usize,
}

impl ConfirmedIndex {
    fn path_hash(&self, local: &Path) -> u64 {
        self.hasher.hash_one(local.as_os_str().as_bytes())
    }

    fn digest(&self, state: &ConfirmedState) -> u64 {
        let fields = (state.dev, state.ino, state.size, state.mtime, state.remote);
        self.hasher.hash_one(fields) | 1 // never UNKNOWN
    }

    fn position(&self, key: u64) -> Result<usize, usize> {
        self.sorted.binary_search_by_key(&key, |entry| entry.0)
    }

    /// True when `local` is known confirmed in exactly `state`.
    pub fn matches(&self, local: &Path, state: &ConfirmedState) -> bool {
        let key = self.path_hash(local);
        let known = match self.recent.get(&key) {
            Some(digest) => *digest,
            None => match self.position(key) {
                Ok(at) => self.sorted[at].1,
                Err(_) => return false,
            },
        };
        known == self.digest(state)
    }

    /// `local` is now confirmed in `state`.
    pub fn confirmed(&mut self, local: &Path, state: &ConfirmedState) {
        let key = self.path_hash(local);
        let digest = self.digest(state);
        match self.position(key) {
            Ok(at) => {
                if self.sorted[at].1 == UNKNOWN {
                    self.forgotten -= 1;
                }
                self.sorted[at].1 = digest;
            }
            Err(_) => {
                self.recent.insert(key, digest);
                if self.recent.len() >= MERGE_AT {
                    self.merge();
                }
            }
        }
    }

    /// `local` is no longer known confirmed (a transfer is under way, or it moved).
    pub fn forget(&mut self, local: &Path) {
        let key = self.path_hash(local);
        if self.recent.remove(&key).is_some() {
            return;
        }
        if let Ok(at) = self.position(key)
            && self.sorted[at].1 != UNKNOWN
        {
            self.sorted[at].1 = UNKNOWN;
            self.forgotten += 1;
        }
    }

    fn merge(&mut self) {
        self.sorted.extend(self.recent.drain());
        self.sorted.sort_unstable_by_key(|entry| entry.0);
        self.recent = HashMap::new();
    }

    /// Sorts everything in, drops forgotten entries and spare capacity: for an agent about
    /// to idle.
    pub fn compact(&mut self) {
        self.merge();
        if self.forgotten > 0 {
            self.sorted.retain(|entry| entry.1 != UNKNOWN);
            self.forgotten = 0;
        }
        self.sorted.shrink_to_fit();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sorted.len() - self.forgotten + self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(size: u64, remote: &str) -> ConfirmedState<'_> {
        ConfirmedState {
            dev: 1,
            ino: 2,
            size,
            mtime: 3,
            remote,
        }
    }

    #[test]
    fn matches_only_the_confirmed_state() {
        let mut index = ConfirmedIndex::default();
        let a = Path::new("/logs/a.log");
        assert!(!index.matches(a, &state(10, "/a.log")));
        index.confirmed(a, &state(10, "/a.log"));
        assert!(index.matches(a, &state(10, "/a.log")));
        assert!(!index.matches(a, &state(11, "/a.log")), "grown");
        assert!(!index.matches(a, &state(10, "/b.log")), "other remote path");
        assert!(!index.matches(Path::new("/logs/b.log"), &state(10, "/a.log")));
        let moved = ConfirmedState {
            ino: 9,
            ..state(10, "/a.log")
        };
        assert!(!index.matches(a, &moved), "other inode");
        index.forget(a);
        assert!(!index.matches(a, &state(10, "/a.log")));
    }

    #[test]
    fn survives_merges_updates_and_compaction() {
        let mut index = ConfirmedIndex::default();
        let paths: Vec<_> = (0..10_000)
            .map(|i| std::path::PathBuf::from(format!("/logs/d{}/f{i}.log", i % 7)))
            .collect();
        for (i, path) in paths.iter().enumerate() {
            index.confirmed(path, &state(i as u64, "/x"));
        }
        assert!(index.recent.len() < MERGE_AT && !index.sorted.is_empty());
        // Updates of merged and of recent entries, and forgetting both kinds.
        for (i, path) in paths.iter().enumerate().step_by(3) {
            index.confirmed(path, &state(i as u64 + 1, "/x"));
        }
        for path in paths.iter().skip(1).step_by(5) {
            index.forget(path);
        }
        let check = |index: &ConfirmedIndex| {
            for (i, path) in paths.iter().enumerate() {
                let size = if i % 3 == 0 { i as u64 + 1 } else { i as u64 };
                let expected = i % 5 != 1;
                assert_eq!(index.matches(path, &state(size, "/x")), expected, "{i}");
                if i % 3 == 0 {
                    assert!(
                        !index.matches(path, &state(i as u64, "/x")),
                        "old state {i}"
                    );
                }
            }
        };
        check(&index);
        index.compact();
        assert!(index.recent.is_empty());
        assert_eq!(index.len(), 8_000);
        assert_eq!(index.sorted.len(), 8_000);
        check(&index);
        // A forgotten path confirmed again.
        index.confirmed(&paths[1], &state(1, "/x"));
        assert!(index.matches(&paths[1], &state(1, "/x")));
    }
}
