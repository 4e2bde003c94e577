//! `logarchive-agent check-config`: validates agent.toml and prints what `run` would do,
//! without connecting, opening the record or watching anything.
//!
//! It uses the loaders `run` uses (`LoadedAgentConfig::load`, `Watch::new` for the globs,
//! `remote::client_tls` for `ca_file`), so it cannot accept a config `run` refuses; on top
//! it checks the folders: each watched folder readable, the state dir writable or
//! creatable.

use std::path::Path;

use logarchive_common::config::agent::LoadedAgentConfig;
use logarchive_common::config::{FolderState, probe_folder, report_check};

use crate::scan::Watch;

pub fn run(config_file: &Path) -> anyhow::Result<()> {
    let config = LoadedAgentConfig::load(config_file)?;
    let mut problems: Vec<String> = Vec::new();
    let server = &config.config.server;
    println!("config:    {}", config.file.display());
    println!("agent id:  {}", config.agent_id);
    let tls = match (server.tls, &server.ca_file) {
        (false, _) => "plain FTP".to_owned(),
        (true, ca) => {
            if let Err(err) = crate::remote::client_tls(ca.as_deref()) {
                problems.push(err.to_string());
            }
            match ca {
                Some(ca) => format!("FTPS (AUTH TLS), CA {}", ca.display()),
                None => "FTPS (AUTH TLS), the system's CAs".to_owned(),
            }
        }
    };
    // The password is loaded (so a missing password_file is an error) but never shown.
    let password = match &server.password_file {
        Some(file) => format!("password from {}", file.display()),
        None => "password in agent.toml".to_owned(),
    };
    println!(
        "server:    {}:{} as {} ({tls}; {password})",
        server.host, server.port, server.user
    );
    let record = config.state_dir.join("record");
    let state = match probe_folder(&config.state_dir) {
        Ok(FolderState::Writable) => "state_dir writable",
        Ok(FolderState::Creatable) => "state_dir will be created",
        Err(err) => {
            problems.push(format!("state_dir {}: {err}", config.state_dir.display()));
            "state_dir not writable"
        }
    };
    println!("record:    {} ({state})", record.display());
    let upload = &config.config.upload;
    println!(
        "upload:    max_rate {} (0 = unlimited), {} sessions, settle {:?}, rescan every {:?}, report every {:?}, poll every {:?}, at most {} files per pass, a fresh process after a backlog of {} files (0 = never)",
        upload.max_rate,
        upload.parallel.0,
        upload.settle.0,
        upload.rescan_interval.0,
        upload.report_interval.0,
        upload.poll_interval.0,
        upload.files_per_pass.0,
        upload.fresh_start_after.0
    );
    for section in &config.watches {
        let globs = |list: &[logarchive_common::config::agent::Glob]| {
            list.iter()
                .map(|g| g.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Err(err) = Watch::new(section) {
            problems.push(format!("watch {}: {err:#}", section.dir.display()));
        }
        let state = match std::fs::read_dir(&section.dir) {
            Ok(_) => "readable".to_owned(),
            Err(err) => {
                problems.push(format!(
                    "watch {}: cannot read the folder: {err}",
                    section.dir.display()
                ));
                format!("unreadable: {err}")
            }
        };
        println!(
            "watch:     {} ({state}) -> {}{}\n           include [{}] exclude [{}]",
            section.dir.display(),
            section.remote,
            if section.poll {
                ", polled"
            } else {
                ", inotify"
            },
            globs(&section.include),
            globs(&section.exclude)
        );
    }
    Ok(report_check(&problems)?)
}
