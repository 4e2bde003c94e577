//! Retention: per-folder policies from `[[retention]]` in server.toml (e.g. `/telemetry`
//! 35 days, `/syslog` 365 days), enforced by a background job at start and every hour, and
//! shown by `logarchive-server retention --dry-run`.
//!
//! Invariants: only files below a policy's folder are ever removed, and only when their
//! modification time is older than that policy's `max_age` (the most specific policy wins
//! when folders nest); folders left empty below a policy's folder are removed too, never
//! the policy's folder itself. Everything goes through the [`Archive`] trait and the
//! catalog follows each removal. Telemetry records in the catalog expire with the policy
//! that covers `/telemetry` ([`prune_telemetry`]), the F-TICKS index with the one that
//! covers `/syslog` ([`prune_fticks`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use logarchive_common::config::server::{LoadedServerConfig, RetentionPolicy};
use logarchive_common::paths::ArchivePath;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::archive::{Archive, ArchiveError, Entry};
use crate::catalog::Catalog;
use crate::shutdown::Shutdown;

/// How often the background job runs.
pub const JOB_INTERVAL: Duration = Duration::from_secs(3600);

/// A file a policy says must go.
#[derive(Debug, Clone)]
pub struct Expired {
    pub entry: Entry,
    pub policy: ArchivePath,
}

/// The policy that governs `path`: the deepest folder containing it.
fn policy_for<'a>(
    policies: &'a [RetentionPolicy],
    path: &ArchivePath,
) -> Option<&'a RetentionPolicy> {
    policies
        .iter()
        .filter(|policy| path.starts_with(&policy.path))
        .max_by_key(|policy| policy.path.components().count())
}

/// The files that are older than their policy allows at `now`.
pub async fn expired(
    archive: &dyn Archive,
    policies: &[RetentionPolicy],
    now: SystemTime,
) -> anyhow::Result<Vec<Expired>> {
    let mut found = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for policy in policies {
        let files = match archive.walk(&policy.path).await {
            Ok(files) => files,
            // Nothing there yet.
            Err(ArchiveError::NotFound(_)) => continue,
            Err(err) => return Err(err).context(format!("retention: cannot list {}", policy.path)),
        };
        for entry in files {
            if !seen.insert(entry.path.clone()) {
                continue;
            }
            let Some(governing) = policy_for(policies, &entry.path) else {
                continue;
            };
            let age = now.duration_since(entry.modified).unwrap_or_default();
            if age > governing.max_age.0 {
                found.push(Expired {
                    policy: governing.path.clone(),
                    entry,
                });
            }
        }
    }
    found.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
    Ok(found)
}

/// Removes the expired files (and folders they leave empty); returns how many files went.
pub async fn enforce(
    archive: &dyn Archive,
    catalog: &Catalog,
    policies: &[RetentionPolicy],
) -> anyhow::Result<usize> {
    let mut removed = 0;
    for item in expired(archive, policies, SystemTime::now()).await? {
        let path = &item.entry.path;
        match archive.remove_file(path).await {
            Ok(()) => {
                removed += 1;
                tracing::info!(%path, policy = %item.policy, "retention: removed");
                if let Err(err) = catalog.record_removal(path).await {
                    tracing::error!(%path, "retention: removed but still cataloged: {err}");
                }
            }
            // Gone meanwhile: fine.
            Err(ArchiveError::NotFound(_)) => continue,
            Err(err) => {
                tracing::error!(%path, "retention: cannot remove: {err}");
                continue;
            }
        }
        let mut dir = path.parent();
        while let Some(folder) = dir {
            if folder == item.policy || !folder.starts_with(&item.policy) {
                break;
            }
            if archive.remove_dir(&folder).await.is_err() {
                break;
            }
            dir = folder.parent();
        }
    }
    Ok(removed)
}

/// Telemetry records in the catalog expire with the files: when a policy covers
/// `/telemetry`, records received longer ago than its `max_age` are removed, and
/// `org.clearlinux/hello/world` test records after one day (as the reference backend).
pub fn prune_telemetry(catalog: &Catalog, policies: &[RetentionPolicy]) -> anyhow::Result<usize> {
    let Ok(probe) = ArchivePath::parse("/telemetry/records") else {
        return Ok(0);
    };
    let Some(policy) = policy_for(policies, &probe) else {
        return Ok(0);
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let max_age = i64::try_from(policy.max_age.0.as_secs()).unwrap_or(i64::MAX);
    let tree = catalog.tree("telemetry")?;
    let mut removed = 0;
    for item in tree.iter() {
        let (key, value) = item?;
        let Ok(record) = serde_json::from_slice::<crate::feeds::telemetry::Record>(&value) else {
            continue;
        };
        let allowed = if record.classification == "org.clearlinux/hello/world" {
            max_age.min(86_400)
        } else {
            max_age
        };
        if now.saturating_sub(record.reception_timestamp) > allowed {
            tree.remove(key)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The F-TICKS index expires with the policy covering `/syslog` (where its lines came
/// from): entries, good and malformed, received longer ago than its `max_age` are removed.
pub fn prune_fticks(catalog: &Catalog, policies: &[RetentionPolicy]) -> anyhow::Result<usize> {
    let Ok(probe) = ArchivePath::parse("/syslog/fticks") else {
        return Ok(0);
    };
    let Some(policy) = policy_for(policies, &probe) else {
        return Ok(0);
    };
    let oldest = time::Duration::try_from(policy.max_age.0)
        .ok()
        .and_then(|max_age| OffsetDateTime::now_utc().checked_sub(max_age));
    match oldest {
        Some(oldest) => crate::feeds::fticks::FticksIndex::open(catalog)?.prune(oldest),
        // Older than time can tell: nothing is that old.
        None => Ok(0),
    }
}

/// The background job: at start, then every [`JOB_INTERVAL`], until shutdown.
pub async fn run_job(
    archive: Arc<dyn Archive>,
    catalog: Catalog,
    policies: Vec<RetentionPolicy>,
    shutdown: Shutdown,
) {
    if policies.is_empty() {
        return;
    }
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(JOB_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        match enforce(archive.as_ref(), &catalog, &policies).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "retention: pass done"),
            Err(err) => tracing::error!("retention: {err:#}"),
        }
        match prune_telemetry(&catalog, &policies) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "retention: telemetry records expired"),
            Err(err) => tracing::error!("retention: telemetry records: {err:#}"),
        }
        match prune_fticks(&catalog, &policies) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "retention: F-TICKS entries expired"),
            Err(err) => tracing::error!("retention: F-TICKS index: {err:#}"),
        }
    }
}

/// `logarchive-server retention [--dry-run]`.
pub fn command(config_file: Option<&Path>, dry_run: bool) -> anyhow::Result<()> {
    let config = LoadedServerConfig::load(config_file)?;
    let policies = config.config.retention.clone();
    if policies.is_empty() {
        println!("no [[retention]] policies: nothing is ever removed");
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        if dry_run {
            // The archive alone: works while the server runs (it holds the catalog).
            let archive = crate::archive::open(&config, false).await?;
            let expired = expired(archive.as_ref(), &policies, SystemTime::now()).await?;
            for item in &expired {
                let modified = OffsetDateTime::from(item.entry.modified)
                    .format(&Rfc3339)
                    .unwrap_or_default();
                println!(
                    "would remove {} ({} bytes, modified {modified}, policy {})",
                    item.entry.path, item.entry.size, item.policy
                );
            }
            println!("{} files would be removed (dry run)", expired.len());
        } else {
            let (archive, catalog) = crate::server::open_store(&config).await?;
            let removed = enforce(archive.as_ref(), &catalog, &policies).await?;
            let records = prune_telemetry(&catalog, &policies)?;
            let fticks = prune_fticks(&catalog, &policies)?;
            catalog.flush().await?;
            println!(
                "{removed} files removed, {records} telemetry records and {fticks} F-TICKS entries expired"
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::telemetry::Record;
    use logarchive_common::config::Interval;

    fn policy(path: &str, days: u64) -> RetentionPolicy {
        RetentionPolicy {
            path: ArchivePath::parse(path).unwrap(),
            max_age: Interval(Duration::from_secs(days * 86_400)),
        }
    }

    fn record(id: u64, classification: &str, age_secs: i64) -> Record {
        Record {
            id,
            machine_id: "m".into(),
            machine_type: "t".into(),
            arch: "x86_64".into(),
            build: "1".into(),
            kernel_version: "6.1.0".into(),
            ts_capture: String::new(),
            ts_reception: String::new(),
            severity: 1,
            classification: classification.into(),
            record_version: 4,
            payload: String::new(),
            board_name: String::new(),
            bios_version: String::new(),
            cpu_model: String::new(),
            event_id: String::new(),
            system_name: String::new(),
            external: false,
            creation_timestamp: 0,
            reception_timestamp: OffsetDateTime::now_utc().unix_timestamp() - age_secs,
        }
    }

    #[test]
    fn the_most_specific_policy_governs() {
        let policies = [policy("/a", 1), policy("/a/b", 100)];
        let at = |p: &str| {
            policy_for(&policies, &ArchivePath::parse(p).unwrap()).map(|p| p.path.to_string())
        };
        assert_eq!(at("/a/x").as_deref(), Some("/a"));
        assert_eq!(at("/a/b/x").as_deref(), Some("/a/b"));
        assert_eq!(at("/ab/x"), None);
    }

    #[tokio::test]
    async fn telemetry_records_expire_with_their_policy() {
        let dir = tempfile::tempdir().unwrap();
        let archive: Arc<dyn Archive> =
            Arc::new(crate::archive::fs::FsArchive::open(&dir.path().join("a"), false).unwrap());
        let catalog = Catalog::open(&dir.path().join("c"), archive).unwrap();
        let tree = catalog.tree("telemetry").unwrap();
        let day = 86_400;
        for item in [
            record(1, "a/b/c", 40 * day),
            record(2, "a/b/c", 2 * day),
            record(3, "org.clearlinux/hello/world", 2 * day),
            record(4, "org.clearlinux/hello/world", 60),
        ] {
            tree.insert(item.id.to_be_bytes(), serde_json::to_vec(&item).unwrap())
                .unwrap();
        }
        assert_eq!(
            prune_telemetry(&catalog, &[policy("/syslog", 1)]).unwrap(),
            0
        );
        assert_eq!(
            prune_telemetry(&catalog, &[policy("/telemetry", 35)]).unwrap(),
            2
        );
        let left: Vec<u64> = tree
            .iter()
            .keys()
            .map(|k| u64::from_be_bytes(k.unwrap().as_ref().try_into().unwrap()))
            .collect();
        assert_eq!(left, [2, 4]);
    }

    #[tokio::test]
    async fn fticks_entries_expire_with_the_syslog_policy() {
        use crate::feeds::fticks::{FticksIndex, Indexed, parse};
        let dir = tempfile::tempdir().unwrap();
        let archive: Arc<dyn Archive> =
            Arc::new(crate::archive::fs::FsArchive::open(&dir.path().join("a"), false).unwrap());
        let catalog = Catalog::open(&dir.path().join("c"), archive).unwrap();
        let index = FticksIndex::open(&catalog).unwrap();
        let line = "F-TICKS/eduroam/1.0#REALM=a.org#VISCOUNTRY=CZ#VISINST=1x#CSI=aabbccddeeff#PN=p#RESULT=OK";
        for (id, days) in [(1, 400), (2, 3)] {
            let item = Indexed {
                id,
                received: OffsetDateTime::now_utc() - time::Duration::days(days),
                host: "h".into(),
                record: parse(line).unwrap(),
            };
            index.insert(&item).unwrap();
        }
        assert_eq!(
            prune_fticks(&catalog, &[policy("/telemetry", 1)]).unwrap(),
            0
        );
        assert_eq!(
            prune_fticks(&catalog, &[policy("/syslog", 365)]).unwrap(),
            1
        );
        assert_eq!(catalog.tree("fticks").unwrap().len(), 1);
        assert_eq!(catalog.tree("fticks_by_realm").unwrap().len(), 1);
        assert_eq!(
            prune_fticks(&catalog, &[policy("/", 1_000_000_000)]).unwrap(),
            0
        );
    }
}
