//! The FTP service: libunftp, configured from `[ftp]`, with the [`guard::Guard`] as its
//! storage back-end and users from users.toml.
//!
//! - [`auth`]: password logins and the per-session user.
//! - [`guard`]: permission letters, path confinement, throttling, catalog recording.
//! - [`sessions`]: who is logged in, from where, and what each session transfers.
//! - [`site`]: SITE CHMOD and MFMT.
//! - [`throttle`]: per-user and total bandwidth limits shared by all sessions.

pub mod auth;
pub mod guard;
pub mod sessions;
pub mod site;
pub mod throttle;

use std::sync::Arc;

use anyhow::Context;
use libunftp::options::{
    FailedLoginsBlock, FailedLoginsPolicy, FtpsRequired, Shutdown as FtpShutdown,
};
use logarchive_common::config::server::LoadedServerConfig;

use crate::shutdown::Shutdown;
use auth::{AccountProvider, FtpUser, PasswordAuthenticator};
use guard::Guard;

/// Runs the FTP service until `shutdown`; returns when the listener has stopped.
pub async fn serve(
    config: &LoadedServerConfig,
    guard: Guard,
    sessions: sessions::Sessions,
    failed_logins: Arc<crate::alerts::logins::FailedLogins>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let ftp = &config.config.ftp;
    let provider = Arc::new(AccountProvider::new(guard.users.clone(), sessions));
    let authenticator = Arc::new(PasswordAuthenticator::new(
        guard.users.clone(),
        guard.archive.clone(),
        failed_logins,
    ));
    let grace = ftp.shutdown_grace.0;
    let factory = guard.clone();
    let mut builder = libunftp::ServerBuilder::with_user_detail_provider::<FtpUser>(
        Box::new(move || factory.clone()),
        provider,
    )
    .authenticator(authenticator)
    .greeting("logarchive FTP archive ready")
    .passive_ports(ftp.passive_ports.0.clone())
    .idle_session_timeout(ftp.idle_timeout.0.as_secs().max(1))
    .failed_logins_policy(FailedLoginsPolicy::new(
        ftp.max_failed_logins.max(1),
        ftp.failed_login_block.0,
        FailedLoginsBlock::UserAndIP,
    ))
    .site_command("CHMOD", site::Chmod)
    .site_command("MFMT", site::Mfmt)
    .site_command("SHA256", site::Sha256)
    .site_command("NOREPLACE", site::NoReplace)
    .shutdown_indicator(async move {
        shutdown.wait().await;
        FtpShutdown::new().grace_period(grace)
    });
    if let Some(host) = ftp.passive_host {
        builder = builder.passive_host(host);
    }
    if let Some(tls) = &ftp.tls {
        builder = builder.ftps(config.resolve(&tls.cert), config.resolve(&tls.key));
        if tls.required {
            builder = builder.ftps_required(FtpsRequired::All, FtpsRequired::All);
        }
    }
    let server = builder
        .build()
        .context("cannot configure the FTP service")?;
    server
        .listen(ftp.listen.to_string())
        .await
        .with_context(|| format!("FTP service on {} failed", ftp.listen))
}
