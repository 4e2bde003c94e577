//! Retention: per-folder policies from `[[retention]]` in server.toml (e.g. `/telemetry`
//! 35 days, `/syslog` 365 days), enforced by a background job at start and every hour, and
//! shown by `logarchive-server retention --dry-run`.
//!
//! Invariants: only files below a policy's folder are ever removed, and only when their
//! modification time is older than that policy's `max_age` (the most specific policy wins
//! when folders nest); folders left empty below a policy's folder are removed too, never
//! the policy's folder itself. Everything goes through the [`Archive`] trait and the
//! catalog follows each removal.

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
            let root = config.data_dir.join("archive");
            let archive = crate::archive::fs::FsArchive::open(&root, false)
                .with_context(|| format!("cannot open the archive at {}", root.display()))?;
            let expired = expired(&archive, &policies, SystemTime::now()).await?;
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
            let (archive, catalog) = crate::server::open_store(&config)?;
            let removed = enforce(archive.as_ref(), &catalog, &policies).await?;
            catalog.flush().await?;
            println!("{removed} files removed");
        }
        Ok(())
    })
}
