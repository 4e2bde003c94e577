//! The agent's record (sled): for each local file, what the server has confirmed.
//!
//! Invariant: a byte counts as sent only after the server confirmed the file's size, and
//! the record is flushed before the agent relies on it. A record in a sending state tells a
//! restarted agent to ask the server how far the interrupted transfer got, so after kill -9
//! at any moment nothing confirmed is sent again and nothing is missed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::{Deserialize, Serialize};

use crate::confirmed_index::{ConfirmedIndex, ConfirmedState};

/// How many records read or written since the database was opened make `release_cache`
/// reopen it. Reopening a record of 100,000 files takes about 20 ms, so it may be often;
/// the cache holds a few MiB once some thousands of records went through it.
const REOPEN_AFTER: u64 = 1_000;

/// What the agent knows of one local file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub local: PathBuf,
    /// The path on the server, relative to the login's root (`/Logs/x.log`).
    pub remote: String,
    /// Identity: device and inode, plus a fingerprint of the first bytes, so a reused inode
    /// or a rewritten file is told apart from the same file grown.
    pub dev: u64,
    pub ino: u64,
    pub fingerprint: String,
    /// How many leading bytes the fingerprint covers.
    pub fingerprint_len: u64,
    /// Size and modification time when last looked at.
    pub size_seen: u64,
    pub mtime_seen: i128,
    /// Bytes the server has confirmed.
    pub confirmed: u64,
    pub state: SendState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SendState {
    /// The server holds `confirmed` bytes under `remote`.
    Confirmed,
    /// A whole-file upload of `size` bytes to the temporary name `temp`, to be renamed to
    /// `remote`.
    Sending { temp: String, size: u64 },
    /// An append of bytes `from..to` to `remote`.
    Appending { from: u64, to: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("agent record at {path}: {source}")]
    Db { path: PathBuf, source: sled::Error },
    #[error("agent record at {path} is closed (it could not be reopened)")]
    Closed { path: PathBuf },
    #[error("agent record entry for {key} is unreadable: {source}")]
    Decode {
        key: String,
        source: serde_json::Error,
    },
}

/// The last thing that went right or wrong, for `status` and health reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
    pub message: String,
}

/// The agent's record. Clones share the database and the index.
#[derive(Clone)]
pub struct Record {
    path: PathBuf,
    /// The open database; `None` only while `reopen` replaces it.
    trees: Arc<RwLock<Option<Trees>>>,
    /// What is confirmed, in memory, so a rescan need not read sled (confirmed_index.rs).
    index: Arc<Mutex<ConfirmedIndex>>,
    /// Records read from or written to sled since it was opened: a measure of how much of
    /// its cache is in use (see `reopen`).
    touched: Arc<AtomicU64>,
}

struct Trees {
    db: sled::Db,
    files: sled::Tree,
    /// Index: device and inode -> local path, so a renamed file is found without reading
    /// every record. Entries may be stale (the record at that path moved on): readers check.
    identities: sled::Tree,
    meta: sled::Tree,
}

impl Trees {
    fn open(dir: &Path) -> Result<Trees, sled::Error> {
        // 8 MiB of cache: sled divides it among 256 shards (32 KiB each), and smaller
        // caches made every write page records in and out (2 MiB halved the sending rate;
        // docs/BENCHMARKS.md). An idle agent does not keep it full: rescans ask the
        // ConfirmedIndex, and `release_cache` empties it.
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(8 * 1024 * 1024)
            .open()?;
        Ok(Trees {
            files: db.open_tree("files")?,
            identities: db.open_tree("identities")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }
}

fn identity_key(dev: u64, ino: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&dev.to_be_bytes());
    key[8..].copy_from_slice(&ino.to_be_bytes());
    key
}

fn confirmed_state(record: &FileRecord) -> Option<ConfirmedState<'_>> {
    (record.state == SendState::Confirmed).then_some(ConfirmedState {
        dev: record.dev,
        ino: record.ino,
        size: record.confirmed,
        mtime: record.mtime_seen,
        remote: &record.remote,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Record {
    pub fn open(dir: &Path) -> Result<Record, RecordError> {
        let trees = Trees::open(dir).map_err(|source| RecordError::Db {
            path: dir.to_owned(),
            source,
        })?;
        let record = Record {
            path: dir.to_owned(),
            trees: Arc::new(RwLock::new(Some(trees))),
            index: Arc::default(),
            touched: Arc::default(),
        };
        // Records written before the identity index existed: build it once.
        let unindexed = record.with(|t| Ok(t.identities.is_empty() && !t.files.is_empty()))?;
        if unindexed {
            for file in record.all()? {
                record.with(|t| {
                    t.identities
                        .insert(identity_key(file.dev, file.ino), Self::key(&file.local))
                })?;
            }
            record.flush()?;
        }
        Ok(record)
    }

    fn db_err(&self, source: sled::Error) -> RecordError {
        RecordError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `op` on the open database.
    fn with<T>(&self, op: impl FnOnce(&Trees) -> sled::Result<T>) -> Result<T, RecordError> {
        let trees = self
            .trees
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let trees = trees.as_ref().ok_or_else(|| RecordError::Closed {
            path: self.path.clone(),
        })?;
        op(trees).map_err(|e| self.db_err(e))
    }

    fn key(local: &Path) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        local.as_os_str().as_bytes().to_vec()
    }

    pub fn get(&self, local: &Path) -> Result<Option<FileRecord>, RecordError> {
        let Some(bytes) = self.with(|t| t.files.get(Self::key(local)))? else {
            return Ok(None);
        };
        self.touched.fetch_add(1, Ordering::Relaxed);
        let record: FileRecord =
            serde_json::from_slice(&bytes).map_err(|source| RecordError::Decode {
                key: local.display().to_string(),
                source,
            })?;
        // What sled holds is what the index describes: learn it, so the next rescan
        // need not read this record again.
        if let Some(state) = confirmed_state(&record) {
            lock(&self.index).confirmed(&record.local, &state);
        }
        Ok(Some(record))
    }

    /// True when the index knows `local` as confirmed in exactly `state`, without reading
    /// sled. False means "ask `get`", not "changed".
    pub fn known_unchanged(&self, local: &Path, state: &ConfirmedState) -> bool {
        lock(&self.index).matches(local, state)
    }

    /// Stores `record` and flushes it to disk before returning.
    pub fn put(&self, record: &FileRecord) -> Result<(), RecordError> {
        self.stage(record)?;
        self.flush()
    }

    /// Stores `record` without waiting for the disk: for states a crash may lose because
    /// the flushed state before them leads recovery to the same result (sled writes in
    /// order, so the next flush makes this one durable too).
    pub fn stage(&self, record: &FileRecord) -> Result<(), RecordError> {
        let value = serde_json::to_vec(record).map_err(|source| RecordError::Decode {
            key: record.local.display().to_string(),
            source,
        })?;
        let key = Self::key(&record.local);
        // The index never claims more than sled holds: forgotten before a write, learnt
        // after it.
        lock(&self.index).forget(&record.local);
        self.with(|t| {
            t.identities
                .insert(identity_key(record.dev, record.ino), key.as_slice())?;
            t.files.insert(key.as_slice(), value)
        })?;
        self.touched.fetch_add(1, Ordering::Relaxed);
        if let Some(state) = confirmed_state(record) {
            lock(&self.index).confirmed(&record.local, &state);
        }
        Ok(())
    }

    /// Makes everything stored so far durable.
    pub fn flush(&self) -> Result<(), RecordError> {
        self.with(|t| t.db.flush())?;
        Ok(())
    }

    /// The record of the file last seen with this device and inode, if any.
    pub fn by_identity(&self, dev: u64, ino: u64) -> Result<Option<FileRecord>, RecordError> {
        let Some(local) = self.with(|t| t.identities.get(identity_key(dev, ino)))? else {
            return Ok(None);
        };
        use std::os::unix::ffi::OsStrExt;
        let local = Path::new(std::ffi::OsStr::from_bytes(&local));
        Ok(self
            .get(local)?
            .filter(|record| record.dev == dev && record.ino == ino))
    }

    /// Moves a record to a new local path (a rotation by rename), flushed.
    pub fn rekey(&self, old: &Path, record: &FileRecord) -> Result<(), RecordError> {
        lock(&self.index).forget(old);
        self.with(|t| t.files.remove(Self::key(old)))?;
        self.put(record)
    }

    /// Closes and reopens the database when it has read or written more than
    /// `REOPEN_AFTER` records since it was opened, which empties sled's cache (sled has no
    /// other way to give it back), and compacts the index: for an agent about to idle
    /// after a first pass or a backlog. Everything is flushed first; the index stays
    /// true, as the records do not change. Returns whether it reopened.
    pub fn release_cache(&self) -> Result<bool, RecordError> {
        lock(&self.index).compact();
        if self.touched.load(Ordering::Relaxed) < REOPEN_AFTER {
            return Ok(false);
        }
        let mut trees = self
            .trees
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(open) = trees.take() {
            open.db.flush().map_err(|e| self.db_err(e))?;
            // sled locks the database per open file: the old one must be closed first.
            drop(open);
        }
        // sled's last background write may hold the file a moment longer.
        let mut attempt = 0;
        let reopened = loop {
            match Trees::open(&self.path) {
                Ok(reopened) => break reopened,
                Err(_) if attempt < 20 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(err) => return Err(self.db_err(err)),
            }
        };
        *trees = Some(reopened);
        self.touched.store(0, Ordering::Relaxed);
        collect_sled_garbage();
        Ok(true)
    }

    /// Notes the last success (`"last_success"`) or error (`"last_error"`). Not flushed:
    /// losing the latest note in a crash costs nothing.
    pub fn note(&self, key: &str, message: String) -> Result<(), RecordError> {
        let event = Event {
            at: time::OffsetDateTime::now_utc(),
            message,
        };
        let value = serde_json::to_vec(&event).map_err(|source| RecordError::Decode {
            key: key.to_owned(),
            source,
        })?;
        self.with(|t| t.meta.insert(key, value))?;
        Ok(())
    }

    pub fn last(&self, key: &str) -> Result<Option<Event>, RecordError> {
        match self.with(|t| t.meta.get(key))? {
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| RecordError::Decode {
                        key: key.to_owned(),
                        source,
                    })
            }
            None => Ok(None),
        }
    }

    /// Every record.
    pub fn all(&self) -> Result<Vec<FileRecord>, RecordError> {
        let items = self.with(|t| t.files.iter().collect::<sled::Result<Vec<_>>>())?;
        let mut all = Vec::new();
        for (key, value) in items {
            let record = serde_json::from_slice(&value).map_err(|source| RecordError::Decode {
                key: String::from_utf8_lossy(&key).into_owned(),
                source,
            })?;
            all.push(record);
        }
        Ok(all)
    }
}

/// sled frees its pages through crossbeam-epoch, which runs deferred frees only when a
/// thread pins an epoch, a few bags at a time. An idle agent does not touch sled (the
/// confirmed index answers its rescans), so without this the closed database's pages would
/// stay allocated for good. Each flush advances the epoch if it can and collects some bags.
fn collect_sled_garbage() {
    for _ in 0..GARBAGE_FLUSHES {
        crossbeam_epoch::pin().flush();
    }
}

/// Enough flushes to drain the garbage of a pass over 100,000 files (each collects up to
/// 8 bags of 64 deferred frees); a few milliseconds in all.
const GARBAGE_FLUSHES: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    fn confirmed(local: &Path, size: u64) -> FileRecord {
        FileRecord {
            local: local.to_owned(),
            remote: format!("/{}", local.display()),
            dev: 1,
            ino: size + 100,
            fingerprint: String::new(),
            fingerprint_len: 0,
            size_seen: size,
            mtime_seen: 7,
            confirmed: size,
            state: SendState::Confirmed,
        }
    }

    fn state(record: &FileRecord) -> ConfirmedState<'_> {
        confirmed_state(record).expect("a confirmed record")
    }

    #[test]
    fn the_index_follows_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let record = Record::open(&dir.path().join("record")).unwrap();
        let a = confirmed(Path::new("a.log"), 10);
        assert!(!record.known_unchanged(&a.local, &state(&a)));
        record.put(&a).unwrap();
        assert!(record.known_unchanged(&a.local, &state(&a)));
        // A transfer under way: not unchanged, whatever the file looks like.
        let sending = FileRecord {
            state: SendState::Sending {
                temp: "/.a.log.logarchive-part".into(),
                size: 10,
            },
            ..a.clone()
        };
        record.stage(&sending).unwrap();
        assert!(!record.known_unchanged(&a.local, &state(&a)));
        let grown = confirmed(Path::new("a.log"), 20);
        record.stage(&grown).unwrap();
        assert!(record.known_unchanged(&a.local, &state(&grown)));
        assert!(!record.known_unchanged(&a.local, &state(&a)));
        // A rename moves the record: the old path is no longer known.
        let moved = FileRecord {
            local: "a.log.1".into(),
            ..grown.clone()
        };
        record.rekey(&grown.local, &moved).unwrap();
        assert!(!record.known_unchanged(&grown.local, &state(&grown)));
        assert!(record.known_unchanged(&moved.local, &state(&moved)));
    }

    #[test]
    fn a_reopened_record_keeps_everything_and_reading_relearns_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record");
        let files: Vec<FileRecord> = (0..REOPEN_AFTER + 10)
            .map(|i| confirmed(Path::new(&format!("d/f{i}.log")), i))
            .collect();
        {
            let record = Record::open(&path).unwrap();
            for file in &files {
                record.stage(file).unwrap();
            }
            record.note("last_success", "all of them".into()).unwrap();
            assert!(record.release_cache().unwrap(), "enough writes to reopen");
            assert!(!record.release_cache().unwrap(), "nothing touched since");
            // Still usable after the reopen, index and database alike.
            for file in &files {
                assert!(record.known_unchanged(&file.local, &state(file)));
                assert_eq!(record.get(&file.local).unwrap().as_ref(), Some(file));
            }
            assert_eq!(
                record.by_identity(1, 105).unwrap().map(|r| r.local),
                Some(PathBuf::from("d/f5.log"))
            );
            let changed = confirmed(Path::new("d/f5.log"), 6_000);
            record.put(&changed).unwrap();
            assert!(record.known_unchanged(&changed.local, &state(&changed)));
        }
        // A new process knows nothing until it reads the records.
        let record = Record::open(&path).unwrap();
        assert!(!record.known_unchanged(&files[0].local, &state(&files[0])));
        assert_eq!(
            record.get(&files[0].local).unwrap().as_ref(),
            Some(&files[0])
        );
        assert!(record.known_unchanged(&files[0].local, &state(&files[0])));
        assert_eq!(
            record.last("last_success").unwrap().map(|e| e.message),
            Some("all of them".into())
        );
        assert_eq!(
            record
                .get(Path::new("d/f5.log"))
                .unwrap()
                .unwrap()
                .confirmed,
            6_000
        );
    }
}
