//! The catalog's in-memory file table: what a search needs (path, size, modification time,
//! source) for every catalogued file, in path order, so a search over a million entries
//! is a walk over compact records in memory instead of a read and JSON decode of every
//! sled value.
//!
//! It is derived data twice over: built from the sled tree when the catalog opens, and
//! changed only by `Catalog`'s own write paths (every insert, removal and clear of the
//! `files` tree goes through [`Table`], under its write lock, so the table and the tree
//! never disagree about which paths exist).
//!
//! Layout: a scan is bound by memory, not by matching, so the bulk of the table is flat:
//! all paths in one byte arena, in order, and a sorted array of fixed-size records that
//! point into it (a scan reads both front to back, which the CPU prefetches). A `BTreeMap`
//! with a heap string per path was measured at about 250 ns a file over a million files
//! (a pointer to chase per file); the flat base took about 80 ns (docs/BENCHMARKS.md). Changes do not move the base:
//! a changed file's record is updated in place, a removed one is marked dead, and a new
//! path goes to a small sorted overlay; when the overlay (or the dead) outgrow an eighth
//! of the base, both are merged into a new base (one pass, under the write lock). Sources
//! (the uploader names, a handful of distinct values) are interned.

use std::collections::{BTreeMap, HashMap};
use std::iter::Peekable;
use std::ops::Bound;

/// What the table keeps of one file besides its path.
#[derive(Debug, Clone, Copy)]
struct Record {
    size: u64,
    /// Unix seconds (catalog times are whole seconds).
    modified: i64,
    /// Index into `Table::sources`, or [`NO_SOURCE`].
    source: u32,
}

const NO_SOURCE: u32 = u32::MAX;

/// A file of the flat base: its path is `arena[start..start + len]`.
#[derive(Debug, Clone, Copy)]
struct Flat {
    start: u64,
    len: u32,
    dead: bool,
    record: Record,
}

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
    /// Every base path, concatenated in order.
    arena: String,
    base: Vec<Flat>,
    dead: usize,
    /// Paths not in the base, in order.
    overlay: BTreeMap<Box<str>, Record>,
    sources: Vec<Box<str>>,
    source_ids: HashMap<Box<str>, u32>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.base.len() - self.dead + self.overlay.len()
    }

    fn path(&self, flat: &Flat) -> &str {
        let start = flat.start as usize;
        self.arena
            .get(start..start + flat.len as usize)
            .unwrap_or("")
    }

    /// The base index of `path`, or where it would go.
    fn find(&self, path: &str) -> Result<usize, usize> {
        self.base.binary_search_by(|flat| self.path(flat).cmp(path))
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
        if let Ok(at) = self.find(path) {
            let flat = &mut self.base[at];
            if flat.dead {
                flat.dead = false;
                self.dead -= 1;
            }
            flat.record = record;
            return;
        }
        if let Some(existing) = self.overlay.get_mut(path) {
            *existing = record;
        } else {
            self.overlay.insert(path.into(), record);
            self.compact_if_needed();
        }
    }

    pub fn remove(&mut self, path: &str) {
        if let Ok(at) = self.find(path) {
            let flat = &mut self.base[at];
            if !flat.dead {
                flat.dead = true;
                self.dead += 1;
                self.compact_if_needed();
            }
        } else {
            self.overlay.remove(path);
        }
    }

    pub fn clear(&mut self) {
        self.arena.clear();
        self.base.clear();
        self.dead = 0;
        self.overlay.clear();
    }

    /// Appends a file to the flat base directly: for building a table from paths that come
    /// in order (sled's key order), without going through the overlay. A path out of
    /// order goes through [`Table::insert`] instead, so the base stays sorted.
    pub fn push_sorted(&mut self, path: &str, size: u64, modified: i64, source: Option<&str>) {
        let in_order = self.base.last().is_none_or(|last| self.path(last) < path);
        if !in_order || !self.overlay.is_empty() || u32::try_from(path.len()).is_err() {
            self.insert(path, size, modified, source);
            return;
        }
        let source = match source {
            None => NO_SOURCE,
            Some(name) => self.intern(name),
        };
        self.base.push(Flat {
            start: self.arena.len() as u64,
            len: path.len() as u32,
            dead: false,
            record: Record {
                size,
                modified,
                source,
            },
        });
        self.arena.push_str(path);
    }

    fn compact_if_needed(&mut self) {
        let limit = (self.base.len() / 8).max(4096);
        if self.overlay.len() > limit || self.dead > limit {
            self.compact();
        }
    }

    /// Merges the overlay into a new flat base and drops the dead.
    pub fn compact(&mut self) {
        let overlay = std::mem::take(&mut self.overlay);
        let old_base = std::mem::take(&mut self.base);
        let old_arena = std::mem::take(&mut self.arena);
        let live = old_base.len() - self.dead + overlay.len();
        let mut arena =
            String::with_capacity(old_arena.len() + overlay.keys().map(|k| k.len()).sum::<usize>());
        let mut base = Vec::with_capacity(live);
        let mut push = |path: &str, record: Record| {
            base.push(Flat {
                start: arena.len() as u64,
                len: path.len() as u32,
                dead: false,
                record,
            });
            arena.push_str(path);
        };
        let old_path = |flat: &Flat| {
            let start = flat.start as usize;
            old_arena
                .get(start..start + flat.len as usize)
                .unwrap_or("")
        };
        let mut olds = old_base.iter().filter(|f| !f.dead).peekable();
        let mut news = overlay.iter().peekable();
        loop {
            let take_old = match (olds.peek(), news.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(old), Some((new, _))) => old_path(old) < &***new,
            };
            if take_old {
                if let Some(old) = olds.next() {
                    push(old_path(old), old.record);
                }
            } else if let Some((new, record)) = news.next() {
                push(new, *record);
            }
        }
        self.arena = arena;
        self.base = base;
        self.dead = 0;
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

    fn file<'a>(&'a self, path: &'a str, record: &Record) -> IndexedFile<'a> {
        IndexedFile {
            path,
            size: record.size,
            modified: record.modified,
            source: self.sources.get(record.source as usize).map(|s| &**s),
        }
    }

    /// The files whose path starts with `prefix`, in path order, from `from` on.
    pub fn range<'a>(
        &'a self,
        prefix: &'a str,
        from: Bound<&'a str>,
    ) -> impl Iterator<Item = IndexedFile<'a>> + 'a {
        let first = match from {
            Bound::Included(at) => self.base.partition_point(|f| self.path(f) < at),
            Bound::Excluded(at) => self.base.partition_point(|f| self.path(f) <= at),
            Bound::Unbounded => 0,
        };
        let base = self.base[first..]
            .iter()
            .filter(|flat| !flat.dead)
            .map(|flat| self.file(self.path(flat), &flat.record));
        let overlay = self
            .overlay
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(path, record)| self.file(path, record));
        Merge {
            base: base.peekable(),
            overlay: overlay.peekable(),
        }
        .take_while(move |file| file.path.starts_with(prefix))
    }

    /// An estimate of the heap the table holds: the arena, the flat records, and the
    /// overlay's boxed paths and B-tree entries (with about a third of slack).
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<Box<str>>() + std::mem::size_of::<Record>();
        let overlay: usize = self
            .overlay
            .keys()
            .map(|k| k.len().div_ceil(16) * 16 + entry * 4 / 3)
            .sum();
        self.arena.capacity() + self.base.capacity() * std::mem::size_of::<Flat>() + overlay
    }
}

/// Two path-ordered iterators as one (no path is in both: the overlay holds only paths
/// that are not in the base).
struct Merge<'a, A: Iterator<Item = IndexedFile<'a>>, B: Iterator<Item = IndexedFile<'a>>> {
    base: Peekable<A>,
    overlay: Peekable<B>,
}

impl<'a, A, B> Iterator for Merge<'a, A, B>
where
    A: Iterator<Item = IndexedFile<'a>>,
    B: Iterator<Item = IndexedFile<'a>>,
{
    type Item = IndexedFile<'a>;

    fn next(&mut self) -> Option<IndexedFile<'a>> {
        match (self.base.peek(), self.overlay.peek()) {
            (Some(b), Some(o)) if o.path < b.path => self.overlay.next(),
            (Some(_), _) => self.base.next(),
            (None, _) => self.overlay.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(table: &Table, prefix: &str, from: Bound<&str>) -> Vec<String> {
        table
            .range(prefix, from)
            .map(|f| f.path.to_owned())
            .collect()
    }

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
        assert_eq!(
            paths(&table, "/", Bound::Excluded("/a/2")),
            ["/ab/3", "/b/4"]
        );
        table.remove("/ab/3");
        assert_eq!(table.len(), 3);
        assert!(table.heap_bytes() > 0);
        table.clear();
        assert_eq!(table.range("", Bound::Unbounded).count(), 0);
    }

    #[test]
    fn base_and_overlay_merge_in_order_across_compactions() {
        let mut table = Table::default();
        let mut expected = std::collections::BTreeMap::new();
        // Enough writes to compact several times; odd ones removed again later.
        for i in 0..20_000u64 {
            let path = format!("/d{}/f{:05}", i % 7, (i * 7919) % 20_000);
            table.insert(&path, i, 0, None);
            expected.insert(path, i);
        }
        for i in (1..20_000u64).step_by(2) {
            let path = format!("/d{}/f{:05}", i % 7, (i * 7919) % 20_000);
            table.remove(&path);
            expected.remove(&path);
        }
        // A removed base path comes back, and a new one joins the overlay.
        table.insert("/d1/f00007", 99, 0, None);
        expected.insert("/d1/f00007".to_owned(), 99);
        table.insert("/d0/new", 98, 0, None);
        expected.insert("/d0/new".to_owned(), 98);
        let all: Vec<(String, u64)> = table
            .range("", Bound::Unbounded)
            .map(|f| (f.path.to_owned(), f.size))
            .collect();
        let want: Vec<(String, u64)> = expected.into_iter().collect();
        assert_eq!(all, want);
        assert_eq!(table.len(), want.len());
        // Cursor paging over the merge: after a path, in a prefix.
        let after = paths(&table, "/d0/", Bound::Excluded("/d0/f19999"));
        assert_eq!(after, ["/d0/new"]);
        table.compact();
        let again: Vec<(String, u64)> = table
            .range("", Bound::Unbounded)
            .map(|f| (f.path.to_owned(), f.size))
            .collect();
        assert_eq!(again, want);
    }
}
