//! The agent's record (sled): for each local file, what the server has confirmed.
//!
//! Invariant: a byte counts as sent only after the server confirmed the file's size, and
//! the record is flushed before the agent relies on it. A record in a sending state tells a
//! restarted agent to ask the server how far the interrupted transfer got, so after kill -9
//! at any moment nothing confirmed is sent again and nothing is missed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

#[derive(Clone)]
pub struct Record {
    path: PathBuf,
    db: sled::Db,
    files: sled::Tree,
    /// Index: device and inode -> local path, so a renamed file is found without reading
    /// every record. Entries may be stale (the record at that path moved on): readers check.
    identities: sled::Tree,
    meta: sled::Tree,
}

fn identity_key(dev: u64, ino: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&dev.to_be_bytes());
    key[8..].copy_from_slice(&ino.to_be_bytes());
    key
}

impl Record {
    pub fn open(dir: &Path) -> Result<Record, RecordError> {
        let db_err = |source| RecordError::Db {
            path: dir.to_owned(),
            source,
        };
        // 8 MiB of cache: measured with 100,000 files recorded, 2 MiB brings an idle agent
        // from about 27 to 23 MiB but halves the sending rate (sled pages records in and
        // out on every write), so throughput wins (docs/BENCHMARKS.md).
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(8 * 1024 * 1024)
            .open()
            .map_err(db_err)?;
        let files = db.open_tree("files").map_err(db_err)?;
        let identities = db.open_tree("identities").map_err(db_err)?;
        let meta = db.open_tree("meta").map_err(db_err)?;
        let record = Record {
            path: dir.to_owned(),
            db,
            files,
            identities,
            meta,
        };
        // Records written before the index existed: build it once.
        if record.identities.is_empty() && !record.files.is_empty() {
            for file in record.all()? {
                record
                    .identities
                    .insert(identity_key(file.dev, file.ino), Self::key(&file.local))
                    .map_err(|e| record.db_err(e))?;
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

    fn key(local: &Path) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        local.as_os_str().as_bytes().to_vec()
    }

    pub fn get(&self, local: &Path) -> Result<Option<FileRecord>, RecordError> {
        match self
            .files
            .get(Self::key(local))
            .map_err(|e| self.db_err(e))?
        {
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| RecordError::Decode {
                        key: local.display().to_string(),
                        source,
                    })
            }
            None => Ok(None),
        }
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
        self.identities
            .insert(identity_key(record.dev, record.ino), key.as_slice())
            .map_err(|e| self.db_err(e))?;
        self.files.insert(key, value).map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Makes everything stored so far durable.
    pub fn flush(&self) -> Result<(), RecordError> {
        self.db.flush().map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// The record of the file last seen with this device and inode, if any.
    pub fn by_identity(&self, dev: u64, ino: u64) -> Result<Option<FileRecord>, RecordError> {
        let Some(local) = self
            .identities
            .get(identity_key(dev, ino))
            .map_err(|e| self.db_err(e))?
        else {
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
        self.files
            .remove(Self::key(old))
            .map_err(|e| self.db_err(e))?;
        self.put(record)
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
        self.meta.insert(key, value).map_err(|e| self.db_err(e))?;
        Ok(())
    }

    pub fn last(&self, key: &str) -> Result<Option<Event>, RecordError> {
        match self.meta.get(key).map_err(|e| self.db_err(e))? {
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
        let mut all = Vec::new();
        for item in self.files.iter() {
            let (key, value) = item.map_err(|e| self.db_err(e))?;
            let record = serde_json::from_slice(&value).map_err(|source| RecordError::Decode {
                key: String::from_utf8_lossy(&key).into_owned(),
                source,
            })?;
            all.push(record);
        }
        Ok(all)
    }
}
