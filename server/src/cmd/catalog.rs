//! `logarchive-server reindex`, `catalog` and `compact-journal`.

use std::path::Path;

use anyhow::Context;
use logarchive_common::config::server::LoadedServerConfig;
use logarchive_common::paths::ArchivePath;

use crate::server::open_store;

pub fn reindex(config_file: Option<&Path>) -> anyhow::Result<()> {
    let config = LoadedServerConfig::load(config_file)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let files = runtime.block_on(async {
        let (_, catalog) = open_store(&config).await?;
        catalog.reindex().await.context("reindex failed")
    })?;
    println!("reindexed {files} files");
    Ok(())
}

/// Merges old journal objects (S3); works beside running servers, as it opens no catalog.
pub fn compact_journal(
    config_file: Option<&Path>,
    older_than: std::time::Duration,
) -> anyhow::Result<()> {
    let config = LoadedServerConfig::load(config_file)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let removed = runtime.block_on(async {
        let archive = crate::archive::open(&config, config.config.durable_writes).await?;
        archive
            .compact_records(older_than)
            .await
            .context("compacting the journal failed")
    })?;
    println!("journal: {removed} record objects fewer");
    Ok(())
}

pub fn print(config_file: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let config = LoadedServerConfig::load(config_file)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (_, catalog) = runtime.block_on(open_store(&config))?;
    for entry in catalog.under(&ArchivePath::root())? {
        if json {
            println!("{}", serde_json::to_string(&entry)?);
        } else {
            println!(
                "{}  {:>12}  {}  {}",
                entry.sha256,
                entry.size,
                entry.uploader.as_deref().unwrap_or("-"),
                entry.path
            );
        }
    }
    Ok(())
}
