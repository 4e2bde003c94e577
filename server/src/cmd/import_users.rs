//! `logarchive-server import-users userRecord.json`: the Python archiver's users, moved
//! into users.toml.
//!
//! The old server kept `{"name": {"passwd": "...", "perm": "elradfmwM"}}` with plaintext
//! passwords, rooted every user at the archive root, took its transfer limits from
//! `ServerConfig.txt`, and always let anyone in as `anonymous` (read-only). The import:
//!
//! - hashes each password with the server's argon2id ([`hash_password`]) and never prints it;
//! - checks every permission string with the server's own parser (repeated letters, which
//!   pyftpdlib accepted, count once) and names the user and the letter it refuses;
//! - gives each user home `/`, the whole archive, as before;
//! - with `--server-config`, sets each user's limits from `MAX_DOWNLOAD_SPEED` and
//!   `MAX_UPLOAD_SPEED`, un-swapped: the old server passed MAX_DOWNLOAD_SPEED to pyftpdlib's
//!   `read_limit`, which throttles what the server *receives* (the clients' uploads);
//! - does not import anonymous access (logarchive has none) and says so;
//! - checks everything first and then writes users.toml once, atomically, through
//!   [`UsersDocument`]; an existing user is only replaced with `--replace` (password,
//!   letters, home and limits; its web admin right stays as it was).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use logarchive_common::config::legacy::LegacyConfig;
use logarchive_common::config::server::{LoadedServerConfig, UserName};
use logarchive_common::paths::ArchivePath;
use logarchive_common::perm::PermSet;
use logarchive_common::rate::Rate;

use crate::users::edit::{UserChanges, UsersDocument};
use crate::users::hash_password;

#[derive(Debug, Args)]
pub struct ImportUsers {
    /// The old server's user record (userRecord.json).
    record: PathBuf,
    /// The old server's ServerConfig.txt: its speed limits become each user's limits.
    #[arg(long, value_name = "ServerConfig.txt")]
    server_config: Option<PathBuf>,
    /// Replace users that already exist in users.toml (default: refuse).
    #[arg(long)]
    replace: bool,
    /// Print the imported users as TOML instead of writing users.toml.
    #[arg(long)]
    stdout: bool,
    /// Also let this imported user use the web admin pages (the old web UI had no logins).
    #[arg(long, value_name = "NAME")]
    admin: Option<String>,
    #[command(flatten)]
    config: crate::ConfigArg,
}

/// The keys ServerConfig.txt may have (the old template's).
const SERVER_KEYS: &[&str] = &[
    "TEST_MODE",
    "FTP_SER_PORT",
    "MAX_UPLOAD_SPEED",
    "MAX_DOWNLOAD_SPEED",
    "LOG_FOLDER_CP",
    "USER_RCD",
    "LOG_DIR",
    "LOG_PF",
    "FLASK_SER_PORT",
    "FLASK_DEBUG_MD",
    "FLASK_MULTI_TH",
];

/// One user as read from userRecord.json, checked.
struct OldUser {
    name: UserName,
    password: String,
    perm: PermSet,
}

/// Upload and download limits as logarchive names them.
#[derive(Debug, Clone, Copy, Default)]
struct Limits {
    upload: Option<Rate>,
    download: Option<Rate>,
}

fn read_users(path: &Path) -> anyhow::Result<Vec<OldUser>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|err| {
        anyhow::anyhow!(
            "{}:{}:{}: not valid JSON: {err}",
            path.display(),
            err.line(),
            err.column()
        )
    })?;
    let serde_json::Value::Object(users) = value else {
        bail!(
            "{}: expected an object {{\"name\": {{\"passwd\": ..., \"perm\": ...}}}}",
            path.display()
        );
    };
    let file = path.display();
    let mut out = Vec::new();
    for (name, entry) in users {
        if name == "anonymous" {
            bail!(
                "{file}: user \"anonymous\": logarchive has no anonymous access and does not import it; remove it from the file (or rename it to a real account)"
            );
        }
        let user: UserName = name
            .parse()
            .map_err(|err: String| anyhow::anyhow!("{file}: {err}"))?;
        let serde_json::Value::Object(fields) = entry else {
            bail!("{file}: user \"{name}\": expected {{\"passwd\": ..., \"perm\": ...}}");
        };
        for key in fields.keys() {
            match key.as_str() {
                "passwd" | "perm" => {}
                // A home as an OS path cannot be mapped safely; widening it to the whole
                // archive would give the user more than before.
                "dirpath" => bail!(
                    "{file}: user \"{name}\": \"dirpath\" (a folder of the old machine) is not imported; remove it, import, then set the home with `logarchive-server user set {name} --home /FOLDER`"
                ),
                other => bail!("{file}: user \"{name}\": unknown field \"{other}\""),
            }
        }
        let password = match fields.get("passwd") {
            Some(serde_json::Value::String(p)) if !p.is_empty() => p.clone(),
            _ => bail!("{file}: user \"{name}\": \"passwd\" is missing or empty"),
        };
        let perm = match fields.get("perm") {
            Some(serde_json::Value::String(p)) => p.clone(),
            _ => bail!("{file}: user \"{name}\": \"perm\" is missing or not a string"),
        };
        // pyftpdlib accepted a letter twice; it means the same as once.
        let mut letters = String::new();
        for letter in perm.chars() {
            if !letters.contains(letter) {
                letters.push(letter);
            }
        }
        let perm: PermSet = letters.parse().map_err(|err| {
            anyhow::anyhow!("{file}: user \"{name}\": {err}; nothing was imported")
        })?;
        out.push(OldUser {
            name: user,
            password,
            perm,
        });
    }
    if out.is_empty() {
        bail!("{file}: no users");
    }
    Ok(out)
}

/// The per-user limits from the old ServerConfig.txt, un-swapped (see the module doc).
fn read_limits(path: &Path, notes: &mut Vec<String>) -> anyhow::Result<Limits> {
    let config = LegacyConfig::load(path)?;
    notes.extend(config.unknown_keys(SERVER_KEYS));
    let mut limits = Limits::default();
    let rate = |key: &str| -> anyhow::Result<Option<Rate>> {
        match config.get(key) {
            Some(entry) => {
                let bytes: u64 = config.parse_value(entry)?;
                Ok(Some(Rate::bytes_per_second(bytes)))
            }
            None => Ok(None),
        }
    };
    // pyftpdlib: read_limit (what the server receives) was given MAX_DOWNLOAD_SPEED.
    limits.upload = rate("MAX_DOWNLOAD_SPEED")?;
    limits.download = rate("MAX_UPLOAD_SPEED")?;
    if let Some(port) = config.get("FTP_SER_PORT") {
        let port: u16 = config.parse_value(port)?;
        notes.push(format!(
            "the old server listened for FTP on port {port}: set [ftp] listen = \"0.0.0.0:{port}\" in server.toml if agents keep that port"
        ));
    }
    if let Some(dir) = config.get("LOG_DIR") {
        notes.push(format!(
            "the old archive is in \"{}\": copy its contents into <data_dir>/archive/ and run `logarchive-server reindex`",
            dir.value
        ));
    }
    Ok(limits)
}

pub fn run(args: ImportUsers) -> anyhow::Result<()> {
    let users = read_users(&args.record)?;
    let mut notes = Vec::new();
    let limits = match &args.server_config {
        Some(path) => read_limits(path, &mut notes)?,
        None => Limits::default(),
    };
    if let Some(admin) = &args.admin
        && !users.iter().any(|u| u.name.as_str() == admin)
    {
        bail!("--admin {admin}: no such user in {}", args.record.display());
    }
    let users_file = LoadedServerConfig::load(args.config.config.as_deref())?.users_file;
    let mut doc = match args.stdout {
        true => UsersDocument::empty(&users_file),
        false => UsersDocument::open(&users_file)?,
    };
    let existing: Vec<&str> = users
        .iter()
        .map(|u| u.name.as_str())
        .filter(|name| doc.contains(name))
        .collect();
    if !existing.is_empty() && !args.replace {
        bail!(
            "{}: already has {}: nothing was imported (use --replace to overwrite them)",
            users_file.display(),
            existing
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for user in &users {
        let exists = doc.contains(user.name.as_str());
        let named_admin = args.admin.as_deref() == Some(user.name.as_str());
        let changes = UserChanges {
            password_hash: Some(hash_password(&user.password)?),
            // The old server rooted every user at the archive root.
            home: Some(ArchivePath::root()),
            perm: Some(user.perm),
            max_upload_rate: limits.upload,
            max_download_rate: limits.download,
            enabled: Some(true),
            // A replaced user keeps its web admin right unless --admin names it.
            admin: match (named_admin, exists) {
                (true, _) => Some(true),
                (false, true) => None,
                (false, false) => Some(false),
            },
            ..UserChanges::default()
        };
        if exists {
            doc.set(user.name.as_str(), &changes)?;
        } else {
            doc.add(&user.name, &changes)?;
        }
        if user.password.len() < 8 {
            notes.push(format!(
                "user \"{}\": the imported password is shorter than 8 characters; change it with `logarchive-server user passwd {}`",
                user.name, user.name
            ));
        }
    }
    notes.push(
        "the old server also let anyone log in as \"anonymous\" (read-only); logarchive has no anonymous access and none was imported (add a named read-only user if readers need one: `logarchive-server user add reader --perm elr --home /`)".to_owned(),
    );
    let (checked, text) = doc.render()?;
    if args.stdout {
        print!("{text}");
    } else {
        doc.save()?;
        for user in &users {
            println!(
                "imported user {} (home /, perm {}, upload {}, download {}{})",
                user.name,
                user.perm,
                limits
                    .upload
                    .map_or("default".to_owned(), |r| r.to_string()),
                limits
                    .download
                    .map_or("default".to_owned(), |r| r.to_string()),
                if args.admin.as_deref() == Some(user.name.as_str()) {
                    ", web admin"
                } else {
                    ""
                }
            );
        }
        println!("{} users written to {}", users.len(), users_file.display());
        if !checked.user.iter().any(|u| u.admin) {
            notes.push("no user may use the web admin pages: give one with --admin NAME or `logarchive-server user set NAME --admin`".to_owned());
        }
    }
    for note in notes {
        eprintln!("note: {note}");
    }
    Ok(())
}
