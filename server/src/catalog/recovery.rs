//! Keeping the catalog equal to what `reindex` would build, whatever fails: a server killed
//! between a change to the archive and its catalog step, or a catalog step that fails
//! (a full disk: sled 0.34 then refuses every later write until its database is reopened).
//!
//! The archive and the journal are the truth; `catch_up` compares the catalog with them
//! (sizes and times from a walk of the archive, senders from the journal, as `reindex`
//! derives them) and fixes what differs, without hashing the files that did not change.
//! It runs:
//! - at start, when the last server did not stop cleanly (a `clean_stop` mark in the
//!   catalog is removed while a server runs and written back at a clean stop);
//! - while running, after a catalog step failed: the catalog is *behind* (`/healthz` says
//!   so, with `/metrics` and an alert), and [`run_job`] reopens the database when sled's
//!   was the error and catches up as soon as the disk has room again.
//!
//! A rename is the one step whose journal line cannot be derived again: the agent does not
//! repeat a rename it finds done. So [`Catalog::rename`] notes an *intent* (flushed) before
//! the archive changes; catching up journals each intent whose source is gone and whose
//! target is there, so the file keeps who sent it.
//!
//! Writers hold the catalog's gate shared; catching up holds it alone, so it never sees a
//! rename between its archive step and its catalog step.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use logarchive_common::paths::ArchivePath;
use time::OffsetDateTime;

use super::{
    Catalog, CatalogEntry, CatalogError, JournalRecord, Store, to_datetime, whole_seconds,
};
use crate::archive::{ArchiveError, EntryKind};

/// The key of the `state` tree present while no server runs after a clean stop.
const CLEAN_STOP: &str = "clean_stop";

/// How often a catalog that is behind tries to catch up.
const RETRY: Duration = Duration::from_secs(2);

/// Free bytes the catalog's filesystem needs before reopening and catching up is tried:
/// on a full disk both would fail again at once.
const ROOM_NEEDED: u64 = 8 << 20;

/// What became of [`Catalog::rename`].
#[derive(Debug, thiserror::Error)]
pub enum RenameError {
    /// The archive refused: nothing changed.
    #[error(transparent)]
    Archive(ArchiveError),
    /// Renamed in the archive; the catalog follows when it catches up.
    #[error("renamed, but the catalog did not follow yet: {0}")]
    Catalog(CatalogError),
}

/// Whether the catalog is behind the archive, and why.
#[derive(Default)]
pub(super) struct Health {
    behind: std::sync::Mutex<Option<Behind>>,
    /// Counts failures, so that catching up clears only what it saw.
    failures: AtomicU64,
    wake: tokio::sync::Notify,
}

struct Behind {
    since: OffsetDateTime,
    reason: String,
    /// sled failed: its database must be reopened before it takes writes again.
    reopen: bool,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Behind>> {
        self.behind
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `intents` key of a rename.
pub(super) fn intent_key(from: &ArchivePath, to: &ArchivePath) -> Vec<u8> {
    // Archive paths hold no NUL.
    [from.as_str().as_bytes(), b"\0", to.as_str().as_bytes()].concat()
}

fn parse_intent(key: &[u8]) -> Option<(ArchivePath, ArchivePath)> {
    let text = std::str::from_utf8(key).ok()?;
    let (from, to) = text.split_once('\0')?;
    Some((ArchivePath::parse(from).ok()?, ArchivePath::parse(to).ok()?))
}

impl Catalog {
    /// Notes a failed catalog step: the catalog is behind until it catches up.
    pub(super) fn noted<T>(&self, result: Result<T, CatalogError>) -> Result<T, CatalogError> {
        let reopen = match &result {
            Err(CatalogError::Db(_)) => true,
            Err(CatalogError::Journal(_)) => false,
            _ => return result,
        };
        if let Err(err) = &result {
            let health = &self.shared.health;
            health.failures.fetch_add(1, Ordering::SeqCst);
            let mut behind = health.lock();
            match behind.as_mut() {
                Some(behind) => behind.reopen |= reopen,
                None => {
                    tracing::error!(
                        "catalog: {err}; the catalog is behind the archive until it can catch up"
                    );
                    *behind = Some(Behind {
                        since: OffsetDateTime::now_utc(),
                        reason: err.to_string(),
                        reopen,
                    });
                }
            }
            health.wake.notify_one();
        }
        result
    }

    /// `Ok` while the catalog is up to date; else since when and why it is behind.
    pub fn health(&self) -> Result<(), String> {
        match self.shared.health.lock().as_ref() {
            None => Ok(()),
            Some(behind) => Err(format!(
                "catalog behind the archive since {}: {}",
                crate::web::format::rfc3339(behind.since),
                behind.reason
            )),
        }
    }

    /// Called by `run` before it serves: marks the catalog in use, and when the last
    /// server did not stop cleanly, catches it up first. Returns the entries fixed then.
    pub async fn begin_run(&self) -> Result<Option<usize>, CatalogError> {
        let clean = self.store()?.state.remove(CLEAN_STOP)?.is_some();
        self.flush().await?;
        if clean {
            return Ok(None);
        }
        let _alone = self.shared.gate.write().await;
        self.catch_up().await.map(Some)
    }

    /// Called by `run` after its last catalog step: a catalog that is up to date is marked
    /// as stopped cleanly (one that is behind is caught up at the next start).
    pub async fn end_run(&self) -> Result<(), CatalogError> {
        let _alone = self.shared.gate.write().await;
        if self.health().is_ok() {
            self.mark_clean().await?;
        }
        Ok(())
    }

    /// After `reindex`: the catalog is exactly what the archive says.
    pub(super) async fn mark_clean(&self) -> Result<(), CatalogError> {
        self.store()?.state.insert(CLEAN_STOP, &[])?;
        self.flush().await
    }

    /// Reopens the database if sled failed, then catches up; clears the health unless a
    /// new failure came meanwhile. Returns the entries fixed.
    pub async fn recover(&self) -> Result<usize, CatalogError> {
        let _alone = self.shared.gate.write().await;
        let failures = self.shared.health.failures.load(Ordering::SeqCst);
        let reopen = self
            .shared
            .health
            .lock()
            .as_ref()
            .is_some_and(|behind| behind.reopen);
        if reopen || self.store().is_err() {
            self.noted(self.reopen().await)?;
            if let Some(behind) = self.shared.health.lock().as_mut() {
                behind.reopen = false;
            }
        }
        let fixed = self.noted(self.catch_up().await)?;
        if self.shared.health.failures.load(Ordering::SeqCst) == failures {
            *self.shared.health.lock() = None;
        }
        Ok(fixed)
    }

    /// Closes the database and opens it again (sled clears its error only then), with a
    /// new search table from what it holds. Callers hold the gate alone.
    async fn reopen(&self) -> Result<(), CatalogError> {
        let old = self
            .shared
            .store
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(old) = old {
            // Readers do not take the gate: let the few in flight finish with the old one.
            for _ in 0..500 {
                if Arc::strong_count(&old) == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(old);
        }
        let mut attempts = 0;
        let (store, table) = loop {
            let dir = self.shared.dir.clone();
            let opened = tokio::task::spawn_blocking(move || {
                let store = Store::open(&dir)?;
                let table = store.table()?;
                Ok::<_, CatalogError>((store, table))
            })
            .await
            .map_err(|join| CatalogError::Db(sled::Error::Io(std::io::Error::other(join))))?;
            match opened {
                Ok(opened) => break opened,
                // sled's flusher lets go of the file lock a moment after the last handle.
                Err(_) if attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(err),
            }
        };
        let mut current = self.write_table();
        *current = table;
        *self
            .shared
            .store
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(store));
        drop(current);
        tracing::info!("catalog: database reopened");
        Ok(())
    }

    /// Journals the renames begun and done in the archive whose line is missing, and
    /// finishes those cut short between copy and delete; forgets the others. Callers hold
    /// the gate alone.
    pub(super) async fn resolve_intents(&self) -> Result<usize, CatalogError> {
        let store = self.store()?;
        let intents = store.intents.iter().keys().collect::<Result<Vec<_>, _>>()?;
        let mut journaled = 0;
        for key in &intents {
            if let Some((from, to)) = parse_intent(key)
                && self.finish_rename(&from, &to).await?
            {
                tracing::info!(%from, %to, "catalog: journaling a rename cut short by a stop");
                let rename = JournalRecord::Rename { from, to };
                self.journal(&rename, OffsetDateTime::now_utc()).await?;
                journaled += 1;
            }
            store.intents.remove(key)?;
        }
        if !intents.is_empty() {
            self.flush().await?;
        }
        Ok(journaled)
    }

    /// Whether a rename begun before a stop is done in the archive now. On S3 a rename is
    /// a copy, then a delete: a stop between them leaves the file under both names, and
    /// deleting the source then finishes it (the target holds the same bytes, so nothing
    /// is lost; left alone, the source would stay for ever, as the agent that asked for
    /// the rename finds its file in place).
    async fn finish_rename(
        &self,
        from: &ArchivePath,
        to: &ArchivePath,
    ) -> Result<bool, CatalogError> {
        let target = match self.archive.stat(to).await {
            Ok(target) => target,
            Err(ArchiveError::NotFound(_)) => return Ok(false),
            Err(err) => return Err(err.into()),
        };
        let source = match self.archive.stat(from).await {
            Ok(source) => source,
            Err(ArchiveError::NotFound(_)) => return Ok(true),
            Err(err) => return Err(err.into()),
        };
        let copies = source.kind == EntryKind::File
            && target.kind == EntryKind::File
            && source.size == target.size
            && self.hash_file(from).await?.0 == self.hash_file(to).await?.0;
        if copies {
            tracing::info!(%from, %to, "catalog: finishing a rename cut short between copy and delete");
            self.archive.remove_file(from).await?;
        }
        Ok(copies)
    }

    /// Makes the catalog what `reindex` would make of the archive and journal now, hashing
    /// only what changed (in the background). A file whose size and time are unchanged is
    /// taken as unchanged. Callers hold the gate alone. Returns the entries fixed.
    async fn catch_up(&self) -> Result<usize, CatalogError> {
        self.resolve_intents().await?;
        let files = self.archive.walk(&ArchivePath::root()).await?;
        let origins = self.replay_journal().await?;
        let mut present = HashSet::with_capacity(files.len());
        let (mut fixed, mut queued) = (0, false);
        for file in files {
            present.insert(file.path.as_str().to_owned());
            let modified = whole_seconds(to_datetime(file.modified));
            let (uploader, received) = super::origin(&origins, &file.path, modified);
            let known = match self.get(&file.path) {
                Ok(Some(known)) if known.size == file.size && known.modified == modified => {
                    Some(known)
                }
                _ => None,
            };
            let same_origin = known
                .as_ref()
                .is_some_and(|known| known.uploader == uploader && known.received == received);
            let sha256 = known.map(|known| known.sha256).unwrap_or_default();
            // Without a hash it is put again, and so queued again: its place in the
            // queue may be what a failed write lost.
            if same_origin && !sha256.is_empty() {
                continue;
            }
            queued |= sha256.is_empty();
            self.put(&CatalogEntry {
                path: file.path,
                size: file.size,
                modified,
                sha256,
                uploader,
                received,
            })?;
            fixed += 1;
        }
        let store = self.store()?;
        let gone = store
            .files
            .iter()
            .keys()
            .filter_map(|key| {
                let key = String::from_utf8_lossy(&key.ok()?).into_owned();
                (!present.contains(&key)).then_some(key)
            })
            .collect::<Vec<_>>();
        for key in gone {
            self.delete_key(&key)?;
            fixed += 1;
        }
        self.flush().await?;
        if queued {
            self.shared.hash_wanted.notify_one();
        }
        Ok(fixed)
    }

    /// Whether the catalog's filesystem has room to reopen and catch up.
    fn has_room(&self) -> bool {
        crate::alerts::disk::usage(&self.shared.dir)
            .map_or(true, |usage| usage.available >= ROOM_NEEDED)
    }
}

/// While the catalog is behind, tries every 2 s (when its disk has room) to reopen and
/// catch up; sleeps otherwise, until shutdown.
pub async fn run_job(catalog: Catalog, shutdown: crate::shutdown::Shutdown) {
    let mut stop = std::pin::pin!(shutdown.wait());
    loop {
        if catalog.health().is_ok() {
            tokio::select! {
                _ = catalog.shared.health.wake.notified() => continue,
                _ = &mut stop => return,
            }
        }
        if catalog.has_room() {
            match catalog.recover().await {
                Ok(fixed) if catalog.health().is_ok() => {
                    tracing::info!(fixed, "catalog: caught up with the archive");
                    continue;
                }
                // Another step failed meanwhile: once more after the pause.
                Ok(_) => {}
                Err(err) => tracing::warn!("catalog: cannot catch up yet (retried): {err}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::fs::FsArchive;

    fn catalog() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let archive = Arc::new(FsArchive::open(&dir.path().join("archive"), false).unwrap());
        let catalog = Catalog::open(&dir.path().join("catalog"), archive).unwrap();
        (dir, catalog)
    }

    fn path(p: &str) -> ArchivePath {
        ArchivePath::parse(p).unwrap()
    }

    /// Every entry, hashes filled in.
    async fn entries(catalog: &Catalog) -> Vec<CatalogEntry> {
        catalog.hash_pending().await.unwrap();
        catalog.under(&ArchivePath::root()).unwrap()
    }

    #[tokio::test]
    async fn a_rename_cut_by_a_kill_is_journaled_at_the_next_start_and_keeps_its_sender() {
        let (dir, catalog) = catalog();
        let root = dir.path().join("archive");
        std::fs::create_dir_all(root.join("n")).unwrap();
        std::fs::write(root.join("n/.a.part"), b"alpha\n").unwrap();
        let entry = catalog.archive.stat(&path("/n/.a.part")).await.unwrap();
        catalog.record_upload(&entry, None, "agent").await.unwrap();
        // Killed after the archive's rename, before the journal line.
        let (from, to) = (path("/n/.a.part"), path("/n/a.log"));
        catalog.note_intent(&intent_key(&from, &to)).await.unwrap();
        std::fs::rename(root.join("n/.a.part"), root.join("n/a.log")).unwrap();

        // The next start finds no clean stop, and catches up.
        assert!(catalog.begin_run().await.unwrap().is_some());
        let caught_up = entries(&catalog).await;
        assert_eq!(caught_up.len(), 1, "{caught_up:?}");
        assert_eq!(caught_up[0].path, to);
        assert_eq!(caught_up[0].uploader.as_deref(), Some("agent"));
        // Exactly what a reindex makes of it; and the next start after a clean stop
        // has nothing to do.
        catalog.reindex().await.unwrap();
        assert_eq!(entries(&catalog).await, caught_up);
        catalog.end_run().await.unwrap();
        assert_eq!(catalog.begin_run().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_rename_cut_between_copy_and_delete_is_finished_at_the_next_start() {
        let (dir, catalog) = catalog();
        let root = dir.path().join("archive");
        std::fs::create_dir_all(root.join("n")).unwrap();
        std::fs::write(root.join("n/.a.part"), b"alpha\n").unwrap();
        std::fs::write(root.join("n/.b.part"), b"beta\n").unwrap();
        std::fs::write(root.join("n/b.log"), b"older beta\n").unwrap();
        for name in [".a.part", ".b.part", "b.log"] {
            let entry = catalog
                .archive
                .stat(&path(&format!("/n/{name}")))
                .await
                .unwrap();
            catalog.record_upload(&entry, None, "agent").await.unwrap();
        }
        // As S3 renames: the copy made, then killed before the source's delete.
        let (from, to) = (path("/n/.a.part"), path("/n/a.log"));
        catalog.note_intent(&intent_key(&from, &to)).await.unwrap();
        std::fs::copy(root.join("n/.a.part"), root.join("n/a.log")).unwrap();
        // Killed before the copy: the target holds other bytes, so both stay.
        let (other, taken) = (path("/n/.b.part"), path("/n/b.log"));
        catalog
            .note_intent(&intent_key(&other, &taken))
            .await
            .unwrap();

        assert!(catalog.begin_run().await.unwrap().is_some());
        assert!(!root.join("n/.a.part").exists());
        assert_eq!(std::fs::read(root.join("n/a.log")).unwrap(), b"alpha\n");
        assert_eq!(std::fs::read(root.join("n/.b.part")).unwrap(), b"beta\n");
        assert_eq!(
            std::fs::read(root.join("n/b.log")).unwrap(),
            b"older beta\n"
        );
        let caught_up = entries(&catalog).await;
        let paths: Vec<_> = caught_up.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/n/.b.part", "/n/a.log", "/n/b.log"]);
        assert!(
            caught_up
                .iter()
                .all(|e| e.uploader.as_deref() == Some("agent"))
        );
        catalog.reindex().await.unwrap();
        assert_eq!(entries(&catalog).await, caught_up);
    }

    #[tokio::test]
    async fn a_catalog_behind_reopens_its_database_and_catches_up() {
        let (dir, catalog) = catalog();
        let root = dir.path().join("archive");
        std::fs::write(root.join("kept.log"), b"kept\n").unwrap();
        let entry = catalog.archive.stat(&path("/kept.log")).await.unwrap();
        catalog.record_upload(&entry, None, "u").await.unwrap();
        assert_eq!(catalog.hash_pending().await.unwrap(), 1);
        // A feed's tree, used and let go, as the feeds do.
        catalog
            .tree("telemetry")
            .unwrap()
            .insert(b"1", b"x")
            .unwrap();
        catalog.flush().await.unwrap();
        // A write failed (as sled's after ENOSPC); meanwhile a file arrived uncataloged.
        let failed: Result<(), _> = catalog.noted(Err(CatalogError::Db(sled::Error::Io(
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        ))));
        assert!(failed.is_err());
        assert!(catalog.health().is_err());
        std::fs::write(root.join("missed.log"), b"missed\n").unwrap();

        assert_eq!(catalog.recover().await.unwrap(), 1);
        assert!(catalog.health().is_ok());
        let names: Vec<String> = entries(&catalog)
            .await
            .into_iter()
            .map(|e| e.path.to_string())
            .collect();
        assert_eq!(names, ["/kept.log", "/missed.log"]);
        assert_eq!(catalog.tree("telemetry").unwrap().len(), 1);
        assert_eq!(catalog.table_stats().0, 2, "the search table was rebuilt");
    }
}
