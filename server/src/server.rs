//! `logarchive-server run`: opens the archive, catalog and users, starts the services, and
//! shuts them down gracefully.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use logarchive_common::config::server::{LoadedServerConfig, Storage};

use crate::archive::Archive;
use crate::catalog::Catalog;
use crate::ftp::guard::{Guard, Transfers};
use crate::ftp::throttle::Throttles;
use crate::users::UserStore;

/// The archive and catalog of a data dir, as every command that needs them opens them.
pub async fn open_store(
    config: &LoadedServerConfig,
) -> anyhow::Result<(Arc<dyn Archive>, Catalog)> {
    let archive = crate::archive::open(config, config.config.durable_writes).await?;
    let catalog_dir = config.data_dir.join("catalog");
    let catalog = Catalog::open(&catalog_dir, archive.clone()).with_context(|| {
        format!(
            "cannot open the catalog at {} (is another logarchive-server using this data dir?)",
            catalog_dir.display()
        )
    })?;
    Ok((archive, catalog))
}

pub fn run(config_file: Option<&Path>) -> anyhow::Result<()> {
    let config = LoadedServerConfig::load(config_file)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: LoadedServerConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
    let (archive, catalog) = open_store(&config).await?;
    // On a shared bucket, the files the feeds grow carry this server's name: no other
    // running server may have it (archive/s3.rs). This server is its machine, host and
    // data dir, whose catalog it holds locked now.
    let home = format!(
        "{}:{}:{}",
        std::fs::read_to_string("/etc/machine-id")
            .unwrap_or_default()
            .trim(),
        logarchive_common::config::agent::hostname(),
        std::path::absolute(&config.data_dir)
            .unwrap_or_else(|_| config.data_dir.clone())
            .display()
    );
    archive
        .claim_writer_name(&home)
        .await
        .context("cannot claim [storage] server_name")?;
    let name_holder = archive.clone();
    let discarded = archive
        .discard_partials()
        .await
        .context("cannot clean up partial uploads")?;
    if discarded > 0 {
        tracing::info!(discarded, "removed partial uploads of an earlier run");
    }
    // A server killed between an archive change and its catalog step left them apart.
    if let Some(fixed) = catalog
        .begin_run()
        .await
        .context("cannot catch the catalog up with the archive")?
        && fixed > 0
    {
        tracing::info!(
            fixed,
            "the last run did not stop cleanly: catalog caught up with the archive"
        );
    }
    if matches!(&config.storage, Storage::S3(_)) {
        crate::users::shared::adopt(archive.as_ref(), &config.users_file)
            .await
            .context("cannot share users.toml through the archive")?;
    }
    let first_admin = crate::cmd::user::bootstrap_admin(&config.users_file)?;
    let users = Arc::new(UserStore::open(&config.users_file)?);
    let ftp = &config.config.ftp;
    let alerts_config = &config.config.alerts;
    // FTP and web logins (forms and HTTP Basic) note their failures here, for the alerts.
    let failed_logins = Arc::new(crate::alerts::logins::FailedLogins::new(
        alerts_config.failed_logins_window.0,
    ));
    let feeds = crate::feeds::FeedContext::new(
        archive.clone(),
        catalog.clone(),
        Arc::new(crate::ftp::auth::PasswordAuthenticator::new(
            users.clone(),
            archive.clone(),
            failed_logins.clone(),
        )),
    )?;
    let transfers = Arc::new(Transfers::default());
    let (trigger, shutdown) = crate::shutdown::channel();
    // Background hashing yields to transfers, but not while the server stops: the last
    // hashes are taken then, and transfers cut by the stop may not have ended yet.
    let running = transfers.clone();
    let stopping = shutdown.clone();
    catalog.pause_hashing_while(Arc::new(move || {
        running.running() > 0 && !stopping.is_triggered()
    }));
    let hasher = tokio::spawn(crate::catalog::run_hasher(
        catalog.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(crate::catalog::recovery::run_job(
        catalog.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(crate::retention::run_job(
        archive.clone(),
        catalog.clone(),
        config.config.retention.clone(),
        shutdown.clone(),
    ));
    if let Storage::S3(s3) = &config.storage {
        tokio::spawn(crate::catalog::follow::run_job(
            catalog.clone(),
            s3.follow_interval,
            shutdown.clone(),
        ));
        tokio::spawn(crate::catalog::follow::run_compaction_job(
            archive.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(crate::archive::keep_writer_name(
            archive.clone(),
            home.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(crate::users::shared::run_job(
            archive.clone(),
            config.users_file.clone(),
            Duration::from_secs(1),
            shutdown.clone(),
        ));
    }
    let guard = Guard {
        archive,
        catalog: catalog.clone(),
        users: users.clone(),
        throttles: Arc::new(Throttles::new(
            ftp.max_upload_rate,
            ftp.max_download_rate,
            ftp.total_upload_rate,
            ftp.total_download_rate,
        )),
        transfers,
    };

    // users.toml is re-read when it changes, so edits apply without a restart.
    let watched = users.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let store = watched.clone();
            let _ = tokio::task::spawn_blocking(move || store.reload_if_changed()).await;
        }
    });

    print_banner(&config, first_admin.as_ref(), users.current().len());
    let transfers = guard.transfers.clone();
    let sessions = crate::ftp::sessions::Sessions::default();
    let web = crate::web::WebState::new(crate::web::WebParts {
        archive: guard.archive.clone(),
        catalog: catalog.clone(),
        users: users.clone(),
        users_file: config.users_file.clone(),
        ftp_sessions: sessions.clone(),
        logins: crate::web::auth::Logins::new(
            crate::ftp::auth::PasswordAuthenticator::new(
                users.clone(),
                guard.archive.clone(),
                failed_logins.clone(),
            ),
            ftp.max_failed_logins,
            ftp.failed_login_block.0,
            config.config.web.session_idle.0,
        ),
        config: config.config.web.clone(),
        metrics: Default::default(),
        feed_stats: feeds.stats.clone(),
        alerts: Arc::new(crate::alerts::Alerts::load(
            config.data_dir.join("alerts.json"),
        )),
        alerts_config: alerts_config.clone(),
    });
    let alerts_task = crate::alerts::start(
        crate::alerts::Evaluator {
            web: web.clone(),
            config: alerts_config.clone(),
            failed_logins: failed_logins.clone(),
            // Absolute, so the incident names the folder whatever the working directory.
            archive_root: std::path::absolute(config.data_dir.join("archive"))
                .unwrap_or_else(|_| config.data_dir.join("archive")),
            started: std::time::Instant::now(),
        },
        |path| config.resolve(path),
        shutdown.clone(),
    )?;
    let mut ftp_service = tokio::spawn({
        let config = config.clone();
        let shutdown = shutdown.clone();
        async move { crate::ftp::serve(&config, guard, sessions, failed_logins, shutdown).await }
    });
    // One HTTP listener for the web UI, its API and the HTTP feeds.
    let app = crate::web::base_routes(catalog.clone())
        .merge(crate::feeds::router(&config, &feeds, &web)?)
        .merge(crate::web::app(web));
    // The appender stops last, after every listener that feeds it (its own signal).
    let (flush_trigger, flush_stop) = crate::shutdown::channel();
    let appender = tokio::spawn(
        feeds
            .appender
            .clone()
            .run(crate::feeds::flush_interval(&config.config), flush_stop),
    );
    let mut feeds_service = tokio::spawn({
        let config = config.clone();
        let shutdown = shutdown.clone();
        async move { crate::feeds::serve(&config, feeds, shutdown).await }
    });
    let web_tls = config
        .config
        .web
        .tls()
        .map(|(cert, key)| (config.resolve(cert), config.resolve(key)));
    let mut web_service = tokio::spawn(crate::web::serve(
        config.config.web.listen,
        app,
        shutdown.clone(),
        web_tls,
    ));
    tokio::select! {
        signal = trigger.on_signal() => signal.context("cannot listen for signals")?,
        result = &mut web_service => {
            return match result {
                Ok(Ok(())) => Err(anyhow::anyhow!("the web listener stopped unexpectedly")),
                Ok(Err(err)) => Err(err),
                Err(join) => Err(anyhow::anyhow!("the web listener failed: {join}")),
            };
        }
        result = &mut feeds_service => {
            return match result {
                Ok(Ok(())) => Err(anyhow::anyhow!("the feeds stopped unexpectedly")),
                Ok(Err(err)) => Err(err),
                Err(join) => Err(anyhow::anyhow!("the feeds failed: {join}")),
            };
        }
        result = &mut ftp_service => {
            // The FTP service stopped on its own: that is an error (e.g. the port is taken).
            return match result {
                Ok(Ok(())) => Err(anyhow::anyhow!("the FTP service stopped unexpectedly")),
                Ok(Err(err)) => Err(err),
                Err(join) => Err(anyhow::anyhow!("the FTP service failed: {join}")),
            };
        }
    }
    // The listener stops accepting; sessions with a transfer running keep their control
    // connection until it ends (and the client has its reply), within the grace period.
    let grace = config.config.ftp.shutdown_grace.0;
    if tokio::time::timeout(grace + Duration::from_secs(1), &mut ftp_service)
        .await
        .is_err()
        || transfers.running() > 0
    {
        tracing::warn!(
            running = transfers.running(),
            "shutdown: transfers still running after {grace:?} are cut (uploads to new names are discarded at the next start; appends keep what arrived)"
        );
    }
    if tokio::time::timeout(grace + Duration::from_secs(1), &mut web_service)
        .await
        .is_err()
    {
        tracing::warn!("shutdown: HTTP requests still running after {grace:?} are cut");
    }
    // The feeds write what they buffered before the catalog's last flush.
    match feeds_service.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!("feeds: {err:#}"),
        Err(join) => tracing::error!("feeds failed: {join}"),
    }
    flush_trigger.trigger();
    let _ = appender.await;
    name_holder.release_writer_name().await;
    // The alert queues send what they hold (a few seconds at most).
    let _ = alerts_task.await;
    // Hash what the last uploads left, so a stopped server's catalog is complete.
    let _ = hasher.await;
    if let Err(err) = catalog.hash_pending().await {
        tracing::error!("catalog: hashing the last uploads (done at the next start): {err}");
    }
    catalog.flush().await.context("cannot flush the catalog")?;
    catalog
        .end_run()
        .await
        .context("cannot mark the catalog as stopped cleanly")?;
    tracing::info!("stopped");
    Ok(())
}

fn print_banner(config: &LoadedServerConfig, first_admin: Option<&(String, String)>, users: usize) {
    let ftp = &config.config.ftp;
    let host = if ftp.listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        ftp.listen.ip().to_string()
    };
    let tls = match &ftp.tls {
        Some(tls) if tls.required => " (FTPS required)",
        Some(_) => " (FTPS available)",
        None => "",
    };
    println!("logarchive-server {} is running", env!("CARGO_PKG_VERSION"));
    println!(
        "  FTP:       ftp://{host}:{}{tls}, passive ports {}-{}",
        ftp.listen.port(),
        ftp.passive_ports.0.start(),
        ftp.passive_ports.0.end()
    );
    let web = config.config.web.listen;
    let web_host = if web.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        web.ip().to_string()
    };
    let scheme = match config.config.web.tls() {
        Some(_) => "https",
        None => "http",
    };
    println!("  web:       {scheme}://{web_host}:{}/", web.port());
    crate::feeds::print_banner(&config.config);
    println!("  data dir:  {}", config.data_dir.display());
    println!("  users:     {} in {}", users, config.users_file.display());
    if let Some((name, password)) = first_admin {
        println!("  admin login (shown once, stored hashed): user {name}, password {password}");
    }
    println!("  stop with Ctrl-C or SIGTERM");
}
