//! `logarchive-server check-config`: validates server.toml and what it points to, and
//! prints what `run` would start, without starting anything or binding a port.
//!
//! It loads the config with the loader `run` uses (`LoadedServerConfig::load`), the users
//! file with the loader of `UserStore`, and the TLS files with the functions the
//! listeners use, so it cannot accept what `run` would refuse. On top it checks what
//! only shows up later at run time: folders that cannot be created or written, and two
//! listeners on one TCP port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use logarchive_common::config::server::{LoadedServerConfig, UsersFile};
use logarchive_common::config::{FolderState, probe_folder, report_check};

/// Runs the checks; prints the summary and every problem. Err when any check failed.
pub fn run(config_file: Option<&Path>) -> anyhow::Result<()> {
    let config = LoadedServerConfig::load(config_file)?;
    let mut problems: Vec<String> = Vec::new();
    let c = &config.config;
    match &config.file {
        Some(file) => println!("config:    {}", file.display()),
        None => println!("config:    embedded defaults (no --config)"),
    }

    let ftp = &c.ftp;
    let ftps = match &ftp.tls {
        None => "FTPS off".to_owned(),
        Some(tls) => {
            let (cert, key) = (config.resolve(&tls.cert), config.resolve(&tls.key));
            if let Err(err) = crate::web::tls::server_config(&cert, &key, "[ftp.tls]") {
                problems.push(format!("{err:#}"));
            }
            format!(
                "FTPS {}, cert {}",
                if tls.required {
                    "required"
                } else {
                    "available"
                },
                cert.display()
            )
        }
    };
    println!(
        "FTP:       {} ({ftps}), passive ports {}-{}{}",
        ftp.listen,
        ftp.passive_ports.0.start(),
        ftp.passive_ports.0.end(),
        ftp.passive_host
            .map_or(String::new(), |h| format!(", announced as {h}"))
    );
    println!(
        "           per-user limits up {} down {}, totals up {} down {} (0 = unlimited)",
        ftp.max_upload_rate, ftp.max_download_rate, ftp.total_upload_rate, ftp.total_download_rate
    );

    let web = &c.web;
    let https = match web.tls() {
        None => "HTTP".to_owned(),
        Some((cert, key)) => {
            let (cert, key) = (config.resolve(cert), config.resolve(key));
            if let Err(err) = crate::web::tls::server_config(&cert, &key, "[web]") {
                problems.push(format!("{err:#}"));
            }
            format!("HTTPS, cert {}", cert.display())
        }
    };
    println!("web:       {} ({https})", web.listen);

    match &c.syslog {
        None => println!("syslog:    off"),
        Some(syslog) => {
            let listeners: Vec<String> = syslog
                .listeners()
                .into_iter()
                .map(|(kind, addr)| format!("{kind} {addr}"))
                .collect();
            if (syslog.tls.is_some() || syslog.relp_tls.is_some())
                && let Err(err) = crate::feeds::syslog::tls_acceptor(&config, syslog)
            {
                problems.push(format!("{err:#}"));
            }
            if listeners.is_empty() {
                println!(
                    "syslog:    [syslog] has none of udp, tcp, tls, relp, relp_tls: no listener"
                );
            } else {
                println!("syslog:    {} -> /syslog", listeners.join(", "));
            }
        }
    }
    let on = |enabled: bool| if enabled { "on" } else { "off" };
    println!(
        "loggers:   {} (OTT netDL, POST /ott on the web listener)",
        on(c.logger.enabled)
    );
    println!(
        "telemetry: {} (POST /v2/collector, /v3/collector on the web listener)",
        on(c.telemetry.enabled)
    );

    if let logarchive_common::config::server::Storage::S3(s3) = &config.storage {
        // The name is in the files the feeds grow: worth seeing before the first start.
        println!(
            "storage:   S3 bucket {} at {}, prefix \"{}\", server_name {}",
            s3.bucket, s3.endpoint, s3.prefix, s3.server_name
        );
    }
    let archive = config.data_dir.join("archive");
    let state = match probe_folder(&archive) {
        Ok(FolderState::Writable) => "exists, writable",
        Ok(FolderState::Creatable) => "will be created",
        Err(err) => {
            problems.push(format!("archive {}: {err}", archive.display()));
            "not writable"
        }
    };
    println!("archive:   {} ({state})", archive.display());
    println!("catalog:   {}", config.data_dir.join("catalog").display());
    if c.retention.is_empty() {
        println!("retention: none (nothing is ever deleted)");
    }
    for policy in &c.retention {
        println!(
            "retention: {} older than {}",
            policy.path,
            days_or_duration(policy.max_age.0)
        );
    }

    match UsersFile::load(&config.users_file) {
        Ok(_) if !config.users_file.exists() => {
            if let Some(parent) = parent_dir(&config.users_file)
                && let Err(err) = probe_folder(&parent)
            {
                problems.push(format!("users file {}: {err}", config.users_file.display()));
            }
            println!(
                "users:     {} does not exist yet: `run` creates it with an admin login",
                config.users_file.display()
            );
        }
        Ok((users, _)) => {
            let admins = users.user.iter().filter(|u| u.admin).count();
            let enabled = users.user.iter().filter(|u| u.enabled).count();
            println!(
                "users:     {} in {} ({enabled} enabled, {admins} web admins)",
                users.user.len(),
                config.users_file.display()
            );
        }
        Err(err) => problems.push(err.to_string()),
    }

    problems.extend(port_clashes(&config));
    Ok(report_check(&problems)?)
}

/// `365d` rather than humantime's months: retention ages are written in days.
fn days_or_duration(age: std::time::Duration) -> String {
    match age.as_secs() {
        secs if secs > 0 && secs % 86_400 == 0 => format!("{}d", secs / 86_400),
        _ => humantime::format_duration(age).to_string(),
    }
}

fn parent_dir(path: &Path) -> Option<PathBuf> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => Some(dir.to_owned()),
        _ => Some(Path::new(".").to_owned()),
    }
}

/// Two TCP listeners of the config on one port (the passive range counts too).
fn port_clashes(config: &LoadedServerConfig) -> Vec<String> {
    let c = &config.config;
    let mut tcp: Vec<(&str, SocketAddr)> = vec![("[ftp] listen", c.ftp.listen)];
    tcp.push(("[web] listen", c.web.listen));
    if let Some(syslog) = &c.syslog {
        for (kind, addr) in syslog.listeners() {
            match kind {
                "tcp" => tcp.push(("[syslog] tcp", addr)),
                "tls" => tcp.push(("[syslog] tls", addr)),
                "relp" => tcp.push(("[syslog] relp", addr)),
                "relp_tls" => tcp.push(("[syslog] relp_tls", addr)),
                _ => {}
            }
        }
    }
    let mut clashes = Vec::new();
    for (i, (name, addr)) in tcp.iter().enumerate() {
        for (other, other_addr) in &tcp[i + 1..] {
            let same_ip = addr.ip() == other_addr.ip()
                || addr.ip().is_unspecified()
                || other_addr.ip().is_unspecified();
            if addr.port() == other_addr.port() && same_ip {
                clashes.push(format!("{name} and {other} both use port {}", addr.port()));
            }
        }
        if c.ftp.passive_ports.0.contains(&addr.port()) {
            clashes.push(format!(
                "{name} port {} is inside [ftp] passive_ports {}-{}",
                addr.port(),
                c.ftp.passive_ports.0.start(),
                c.ftp.passive_ports.0.end()
            ));
        }
    }
    clashes
}
