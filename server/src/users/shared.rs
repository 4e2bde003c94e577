//! users.toml shared by the servers of one bucket (`[storage] kind = "s3"`): the file stays
//! where `users_file` says (the CLI, the admin pages and [`super::UserStore`] use it as
//! always), and this job keeps it in step with the object `.logarchive/shared/users.toml`.
//!
//! Every `interval`: a local change (CLI, admin page, hand edit) since the last agreed
//! content is uploaded; otherwise a different object (another server's change) is checked
//! by the users loader and written over the local file atomically, and the `UserStore`
//! reloads it within a second. At start the object wins when it exists (a new server
//! takes the cluster's users), else the local file is uploaded. Two changes on two servers
//! within one interval: the last upload wins.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use logarchive_common::config::server::UsersFile;
use sha2::{Digest, Sha256};

use crate::archive::Archive;
use crate::shutdown::Shutdown;

const OBJECT: &str = "users.toml";

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Takes the shared users.toml when there is one (before the `UserStore` opens it), else
/// publishes the local one.
pub async fn adopt(archive: &dyn Archive, path: &PathBuf) -> anyhow::Result<()> {
    match archive.read_shared(OBJECT).await? {
        Some(remote) => {
            UsersFile::parse(path, &String::from_utf8_lossy(&remote))?;
            if std::fs::read(path).ok().as_deref() != Some(&remote[..]) {
                super::edit::write_atomically(path, &remote)?;
                tracing::info!("users.toml taken from the shared archive");
            }
        }
        None => {
            if let Ok(local) = std::fs::read(path) {
                archive.write_shared(OBJECT, local).await?;
                tracing::info!("users.toml published to the shared archive");
            }
        }
    }
    Ok(())
}

/// Keeps the local users.toml and the shared one in step until shutdown.
pub async fn run_job(
    archive: Arc<dyn Archive>,
    path: PathBuf,
    interval: Duration,
    shutdown: Shutdown,
) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Nothing agreed yet: the first pass publishes the local file (the one `adopt` took,
    // or the one `bootstrap_admin` just wrote when the bucket had none).
    let mut agreed = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        if let Err(err) = sync(archive.as_ref(), &path, &mut agreed).await {
            tracing::warn!("users.toml: cannot sync with the shared archive: {err:#}");
        }
    }
}

async fn sync(
    archive: &dyn Archive,
    path: &PathBuf,
    agreed: &mut Option<[u8; 32]>,
) -> anyhow::Result<()> {
    let local = std::fs::read(path).ok();
    let local_digest = local.as_deref().map(digest);
    if local_digest != *agreed
        && let Some(local) = local
    {
        archive.write_shared(OBJECT, local).await?;
        *agreed = local_digest;
        return Ok(());
    }
    let Some(remote) = archive.read_shared(OBJECT).await? else {
        return Ok(());
    };
    let remote_digest = digest(&remote);
    if Some(remote_digest) == *agreed {
        return Ok(());
    }
    // Another server's change; refused (and kept refused) if it does not load.
    if let Err(err) = UsersFile::parse(path, &String::from_utf8_lossy(&remote)) {
        *agreed = Some(remote_digest);
        anyhow::bail!("the shared users.toml is invalid, not applied: {err}");
    }
    super::edit::write_atomically(path, &remote)?;
    *agreed = Some(remote_digest);
    tracing::info!("users.toml updated from the shared archive");
    Ok(())
}
