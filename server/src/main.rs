//! `logarchive-server`: the FTP archive service and its admin commands.
//!
//! ```text
//! logarchive-server run [--config server.toml]      serve (embedded defaults without --config)
//! logarchive-server user add|set|passwd|remove|list  edit users.toml
//! logarchive-server reindex                         rebuild the catalog from the archive
//! logarchive-server catalog [--json]                print the catalog
//! logarchive-server retention [--dry-run]           apply the [[retention]] policies now
//! logarchive-server check-config                    validate the config, start nothing
//! logarchive-server import-users userRecord.json    users of the Python archiver
//! ```

mod alerts;
mod archive;
mod catalog;
mod cmd;
mod feeds;
mod ftp;
mod retention;
mod server;
mod shutdown;
mod users;
mod web;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "logarchive-server",
    version,
    about = "The logarchive archive server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the config comes from; without `--config` the embedded defaults apply
/// (data in ./logarchive-data).
#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// Path to server.toml.
    #[arg(long, short, env = "LOGARCHIVE_SERVER_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server until SIGTERM or SIGINT.
    Run(ConfigArg),
    /// Manage FTP and web users (users.toml).
    #[command(subcommand)]
    User(cmd::user::UserCommand),
    /// Rebuild the catalog from the archive tree alone (the server must be stopped).
    Reindex(ConfigArg),
    /// Print the catalog (the server must be stopped).
    Catalog {
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Remove what the [[retention]] policies say is too old (the server must be stopped,
    /// except with --dry-run; the running server does this every hour by itself).
    Retention {
        #[command(flatten)]
        config: ConfigArg,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Merge the journal's record objects older than --older-than (S3: one object per
    /// batch of uploads) into one per day; safe while servers run (each does it hourly).
    CompactJournal {
        #[command(flatten)]
        config: ConfigArg,
        /// Only objects at least this old ("30s", "5m", "1h").
        #[arg(long, default_value = "1h")]
        older_than: logarchive_common::config::Interval,
    },
    /// Check server.toml, the users file, certificates and folders, and print what `run`
    /// would start (without starting anything or binding a port).
    CheckConfig(ConfigArg),
    /// Import the Python archiver's users (userRecord.json) into users.toml, passwords
    /// hashed.
    ImportUsers(cmd::import_users::ImportUsers),
}

fn main() -> std::process::ExitCode {
    logarchive_common::logging::init("info,libunftp=error,sled=warn");
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(config) => server::run(config.config.as_deref()),
        Command::User(command) => cmd::user::run(command),
        Command::Reindex(config) => cmd::catalog::reindex(config.config.as_deref()),
        Command::Catalog { config, json } => cmd::catalog::print(config.config.as_deref(), json),
        Command::Retention { config, dry_run } => {
            retention::command(config.config.as_deref(), dry_run)
        }
        Command::CompactJournal { config, older_than } => {
            cmd::catalog::compact_journal(config.config.as_deref(), older_than.0)
        }
        Command::CheckConfig(config) => cmd::check_config::run(config.config.as_deref()),
        Command::ImportUsers(args) => cmd::import_users::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("logarchive-server: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
