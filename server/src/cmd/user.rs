//! `logarchive-server user ...`: edits of users.toml from the command line.
//!
//! Passwords come from standard input (`--password-stdin`) or a prompt, never from the
//! command line, where other users of the machine could see them.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use logarchive_common::config::server::{LoadedServerConfig, UserName, UsersFile};
use logarchive_common::paths::ArchivePath;
use logarchive_common::perm::PermSet;
use logarchive_common::rate::Rate;
use rand::Rng;

use crate::users::edit::{UserChanges, UsersDocument};
use crate::users::hash_password;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user.
    Add(UserEdit),
    /// Change a user's settings.
    Set(UserEdit),
    /// Set a user's password.
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordSource,
        #[command(flatten)]
        config: crate::ConfigArg,
    },
    /// Remove a user (its archived files stay).
    Remove {
        name: String,
        #[command(flatten)]
        config: crate::ConfigArg,
    },
    /// List users.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: crate::ConfigArg,
    },
}

#[derive(Debug, Args)]
pub struct PasswordSource {
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct UserEdit {
    name: String,
    /// Permission letters (pyftpdlib): e l r a d f m w M T.
    #[arg(long)]
    perm: Option<String>,
    /// The user's root inside the archive (default /<name>).
    #[arg(long)]
    home: Option<String>,
    /// May use the web admin pages (`--admin` or `--admin false`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    admin: Option<bool>,
    /// Account enabled (`--enabled false` to lock it).
    #[arg(long)]
    enabled: Option<bool>,
    /// Upload limit, e.g. "1MiB/s"; "0" is unlimited.
    #[arg(long)]
    max_upload_rate: Option<String>,
    /// Download limit, e.g. "1MiB/s"; "0" is unlimited.
    #[arg(long)]
    max_download_rate: Option<String>,
    /// Per-folder permissions, FOLDER=LETTERS (repeatable), e.g. /node01/readonly=elr.
    #[arg(long = "dir", value_name = "FOLDER=LETTERS")]
    dirs: Vec<String>,
    /// Remove a per-folder override (repeatable).
    #[arg(long = "remove-dir", value_name = "FOLDER")]
    remove_dirs: Vec<String>,
    #[command(flatten)]
    password: PasswordSource,
    #[command(flatten)]
    config: crate::ConfigArg,
}

fn users_file(config: &crate::ConfigArg) -> anyhow::Result<std::path::PathBuf> {
    Ok(LoadedServerConfig::load(config.config.as_deref())?.users_file)
}

fn read_password(source: &PasswordSource) -> anyhow::Result<String> {
    let password = if source.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Again: ")?;
        if first != second {
            bail!("the passwords differ");
        }
        first
    } else {
        bail!(
            "no password: pass --password-stdin and write it to standard input, or run on a terminal"
        );
    };
    if password.len() < 8 {
        bail!("the password is too short (at least 8 characters)");
    }
    Ok(password)
}

impl UserEdit {
    fn changes(&self, with_password: bool) -> anyhow::Result<UserChanges> {
        let mut changes = UserChanges {
            perm: self
                .perm
                .as_deref()
                .map(|p| p.parse::<PermSet>())
                .transpose()
                .context("--perm")?,
            home: self
                .home
                .as_deref()
                .map(ArchivePath::parse)
                .transpose()
                .context("--home")?,
            max_upload_rate: self
                .max_upload_rate
                .as_deref()
                .map(|r| r.parse::<Rate>())
                .transpose()
                .context("--max-upload-rate")?,
            max_download_rate: self
                .max_download_rate
                .as_deref()
                .map(|r| r.parse::<Rate>())
                .transpose()
                .context("--max-download-rate")?,
            enabled: self.enabled,
            admin: self.admin,
            ..UserChanges::default()
        };
        for dir in &self.dirs {
            let (folder, letters) = dir
                .split_once('=')
                .with_context(|| format!("--dir \"{dir}\": write FOLDER=LETTERS"))?;
            let folder = ArchivePath::parse(folder).with_context(|| format!("--dir \"{dir}\""))?;
            let letters: PermSet = letters
                .parse()
                .with_context(|| format!("--dir \"{dir}\""))?;
            changes.set_dirs.push((folder, letters));
        }
        for dir in &self.remove_dirs {
            changes
                .remove_dirs
                .push(ArchivePath::parse(dir).with_context(|| format!("--remove-dir \"{dir}\""))?);
        }
        if with_password {
            changes.password_hash = Some(hash_password(&read_password(&self.password)?)?);
        }
        Ok(changes)
    }
}

pub fn run(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add(edit) => {
            let name: UserName = edit.name.parse().map_err(anyhow::Error::msg)?;
            let path = users_file(&edit.config)?;
            let changes = edit.changes(true)?;
            let mut doc = UsersDocument::open(&path)?;
            doc.add(&name, &changes)?;
            doc.save()?;
            println!("added user {name} to {}", path.display());
        }
        UserCommand::Set(edit) => {
            let path = users_file(&edit.config)?;
            let changes = edit.changes(edit.password.password_stdin)?;
            let mut doc = UsersDocument::open(&path)?;
            doc.set(&edit.name, &changes)?;
            doc.save()?;
            println!("updated user {} in {}", edit.name, path.display());
        }
        UserCommand::Passwd {
            name,
            password,
            config,
        } => {
            let path = users_file(&config)?;
            let mut doc = UsersDocument::open(&path)?;
            let changes = UserChanges {
                password_hash: Some(hash_password(&read_password(&password)?)?),
                ..UserChanges::default()
            };
            doc.set(&name, &changes)?;
            doc.save()?;
            println!("password of {name} changed");
        }
        UserCommand::Remove { name, config } => {
            let path = users_file(&config)?;
            let mut doc = UsersDocument::open(&path)?;
            doc.remove(&name)?;
            doc.save()?;
            println!("removed user {name} (archived files stay)");
        }
        UserCommand::List { json, config } => {
            let path = users_file(&config)?;
            let (users, _) = UsersFile::load(&path)?;
            for user in &users.user {
                let dirs: Vec<String> = user.dirs().map(|(d, p)| format!("{d}={p}")).collect();
                let rate = |r: Option<Rate>| r.map_or("default".to_owned(), |r| r.to_string());
                if json {
                    let value = serde_json::json!({
                        "name": user.name.get_ref().as_str(),
                        "home": user.home().as_str(),
                        "perm": user.perm.to_string(),
                        "enabled": user.enabled,
                        "admin": user.admin,
                        "max_upload_rate": rate(user.max_upload_rate),
                        "max_download_rate": rate(user.max_download_rate),
                        "dirs": dirs,
                    });
                    println!("{value}");
                } else {
                    println!(
                        "{:<16} home={} perm={} enabled={} admin={} up={} down={} {}",
                        user.name.get_ref(),
                        user.home(),
                        user.perm,
                        user.enabled,
                        user.admin,
                        rate(user.max_upload_rate),
                        rate(user.max_download_rate),
                        dirs.join(" ")
                    );
                }
            }
        }
    }
    Ok(())
}

/// On a fresh install (no users file yet), creates an `admin` user with a generated
/// password and returns the login, to be shown once.
pub fn bootstrap_admin(path: &Path) -> anyhow::Result<Option<(String, String)>> {
    if path.exists() {
        return Ok(None);
    }
    let password: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    let name: UserName = "admin".parse().map_err(anyhow::Error::msg)?;
    let mut doc = UsersDocument::open(path)?;
    doc.add(
        &name,
        &UserChanges {
            password_hash: Some(hash_password(&password)?),
            home: Some(ArchivePath::root()),
            perm: Some(PermSet::all()),
            admin: Some(true),
            ..UserChanges::default()
        },
    )?;
    doc.save()?;
    Ok(Some(("admin".to_owned(), password)))
}
