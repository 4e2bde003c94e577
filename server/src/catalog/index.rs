//! The catalog's in-memory file table: what a search needs (path, size, modification time,
//! source) for every catalogued file, in path order, so a search over a million entries
//! is a walk over compact records in memory instead of a read and JSON decode of every
//! sled value.
//!
//! It is derived data twice over: built from the sled tree when the catalog opens, and
//! changed only by `Catalog`'s own write paths (every insert, removal and clear of the
//! `files` tree goes through [`Table`], under its write lock, so the table and the tree
//! never disagree about which paths exist). Sources (the uploader names, a handful of
//! distinct values) are interned, so a record is a boxed path plus 24 bytes.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

/// What the table keeps of one file.
#[derive(Debug, Clone, Copy)]
struct Record {
    size: u64,
    /// Unix seconds (catalog times are whole seconds).
    modified: i64,
    /// Index into `Table::sources`, or [`NO_SOURCE`].
    source: u32,
}

const NO_SOURCE: u32 = u32::MAX;

/// One file as a search filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct IndexedFile<'a> {
    pub path: &'a str,
    pub size: u64,
    /// Modification time, Unix seconds.
    pub modified: i64,
    pub source: Option<&'a str>,
}

/// The table itself; [`super::Catalog`] keeps it behind a lock.
#[derive(Debug, Default)]
pub struct Table {
    files: BTreeMap<Box<str>, Record>,
    sources: Vec<Box<str>>,
    source_ids: HashMap<Box<str>, u32>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn insert(&mut self, path: &str, size: u64, modified: i64, source: Option<&str>) {
        let source = match source {
            None => NO_SOURCE,
            Some(name) => self.intern(name),
        };
        let record = Record {
            size,
            modified,
            source,
        };
        // Overwriting keeps the existing boxed key: no allocation for a refreshed file.
        if let Some(existing) = self.files.get_mut(path) {
            *existing = record;
        } else {
            self.files.insert(path.into(), record);
        }
    }

    pub fn remove(&mut self, path: &str) {
        self.files.remove(path);
    }

    pub fn clear(&mut self) {
        self.files.clear();
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.source_ids.get(name) {
            return *id;
        }
        // Past u32::MAX - 1 distinct sources (never, in practice) the rest share "none".
        let Ok(id) = u32::try_from(self.sources.len()) else {
            return NO_SOURCE;
        };
        if id == NO_SOURCE {
            return NO_SOURCE;
        }
        self.sources.push(name.into());
        self.source_ids.insert(name.into(), id);
        id
    }

    /// The files whose path starts with `prefix`, in path order, from `from` on.
    pub fn range<'a>(
        &'a self,
        prefix: &'a str,
        from: Bound<&'a str>,
    ) -> impl Iterator<Item = IndexedFile<'a>> + 'a {
        self.files
            .range::<str, _>((from, Bound::Unbounded))
            .take_while(move |(path, _)| path.starts_with(prefix))
            .map(|(path, record)| IndexedFile {
                path,
                size: record.size,
                modified: record.modified,
                source: self.sources.get(record.source as usize).map(|s| &**s),
            })
    }

    /// An estimate of the heap the table holds: boxed paths (rounded up to the allocator's
    /// 16-byte steps) and B-tree nodes (key, value, and about a third of slack).
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<Box<str>>() + std::mem::size_of::<Record>();
        let paths: usize = self.files.keys().map(|k| k.len().div_ceil(16) * 16).sum();
        paths + self.files.len() * entry * 4 / 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stay_in_the_prefix_and_sources_are_shared() {
        let mut table = Table::default();
        table.insert("/a/1", 1, 10, Some("u"));
        table.insert("/a/2", 2, 20, Some("u"));
        table.insert("/ab/3", 3, 30, None);
        table.insert("/b/4", 4, 40, Some("v"));
        table.insert("/a/1", 5, 50, Some("v"));
        assert_eq!(table.sources.len(), 2);
        let under_a: Vec<_> = table
            .range("/a/", Bound::Included("/a/"))
            .map(|f| (f.path, f.size, f.source))
            .collect();
        assert_eq!(under_a, [("/a/1", 5, Some("v")), ("/a/2", 2, Some("u"))]);
        let after: Vec<_> = table
            .range("/", Bound::Excluded("/a/2"))
            .map(|f| f.path)
            .collect();
        assert_eq!(after, ["/ab/3", "/b/4"]);
        table.remove("/ab/3");
        assert_eq!(table.len(), 3);
        assert!(table.heap_bytes() > 0);
        table.clear();
        assert_eq!(table.range("", Bound::Unbounded).count(), 0);
    }
}
