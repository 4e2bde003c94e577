//! Users: the live view of users.toml, password hashing, and safe edits of the file.
//!
//! The file is the source of truth. [`UserStore`] re-reads it whenever it changes (checked
//! every second and at each login), so edits by the CLI, by hand or by the web UI apply to
//! new commands and transfers without a restart. A file that fails to load is reported and
//! the last good set of users stays in force: a typo never locks everybody out or takes
//! the server down.

pub mod edit;
pub mod shared;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use logarchive_common::config::ConfigError;
use logarchive_common::config::server::UsersFile;
use logarchive_common::paths::ArchivePath;
use logarchive_common::perm::{Perm, PermSet};
use logarchive_common::rate::Rate;

/// One user as the server applies it.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub password_hash: String,
    pub home: ArchivePath,
    pub perm: PermSet,
    /// Per-folder overrides, most specific (deepest) first.
    pub dirs: Vec<(ArchivePath, PermSet)>,
    pub max_upload_rate: Option<Rate>,
    pub max_download_rate: Option<Rate>,
    pub enabled: bool,
    pub admin: bool,
}

impl Account {
    /// The permissions in force at `path`: those of the most specific folder override that
    /// contains it, else the user's own.
    pub fn perms_at(&self, path: &ArchivePath) -> PermSet {
        self.dirs
            .iter()
            .find(|(dir, _)| path.starts_with(dir))
            .map_or(self.perm, |(_, perms)| *perms)
    }

    pub fn may(&self, perm: Perm, path: &ArchivePath) -> bool {
        self.perms_at(path).contains(perm)
    }
}

/// A consistent set of users, as loaded from one version of the file.
#[derive(Debug, Default)]
pub struct Users {
    by_name: HashMap<String, Arc<Account>>,
}

impl Users {
    pub fn from_file(file: &UsersFile) -> Users {
        let by_name = file
            .user
            .iter()
            .map(|entry| {
                let mut dirs: Vec<(ArchivePath, PermSet)> = entry
                    .dirs()
                    .map(|(dir, perm)| (dir.clone(), *perm))
                    .collect();
                dirs.sort_by_key(|(dir, _)| std::cmp::Reverse(dir.components().count()));
                let account = Account {
                    name: entry.name.get_ref().to_string(),
                    password_hash: entry.password.as_str().to_owned(),
                    home: entry.home(),
                    perm: entry.perm,
                    dirs,
                    max_upload_rate: entry.max_upload_rate,
                    max_download_rate: entry.max_download_rate,
                    enabled: entry.enabled,
                    admin: entry.admin,
                };
                (account.name.clone(), Arc::new(account))
            })
            .collect();
        Users { by_name }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Account>> {
        self.by_name.get(name).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Every account, by name.
    pub fn all(&self) -> Vec<Arc<Account>> {
        let mut all: Vec<Arc<Account>> = self.by_name.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// What identifies one version of the file on disk.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The live users of a running server.
#[derive(Debug)]
pub struct UserStore {
    path: PathBuf,
    users: RwLock<Arc<Users>>,
    stamp: Mutex<Stamp>,
}

impl UserStore {
    /// Loads the file; at start-up an invalid file is an error (the server refuses to start).
    pub fn open(path: &Path) -> Result<UserStore, ConfigError> {
        let stamp_now = stamp(path);
        let (file, _) = UsersFile::load(path)?;
        Ok(UserStore {
            path: path.to_owned(),
            users: RwLock::new(Arc::new(Users::from_file(&file))),
            stamp: Mutex::new(stamp_now),
        })
    }

    pub fn current(&self) -> Arc<Users> {
        self.users
            .read()
            .map(|users| users.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Account>> {
        self.current().get(name)
    }

    /// Re-reads the file if it changed. Returns whether a new set of users is in force.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.path);
        {
            let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if *last == now {
                return false;
            }
            *last = now;
        }
        match UsersFile::load(&self.path) {
            Ok((file, _)) => {
                let users = Users::from_file(&file);
                tracing::info!(file = %self.path.display(), users = users.len(), "users reloaded");
                *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(users);
                true
            }
            Err(err) => {
                tracing::error!("users file not reloaded, the previous users stay in force: {err}");
                false
            }
        }
    }
}

/// Hashes a password with argon2id (default parameters) in PHC format.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    // The salt comes from the operating system's generator (argon2's `getrandom` feature).
    Ok(Argon2::default()
        .hash_password(password.as_bytes())?
        .to_string())
}

/// Checks a password against a stored hash; any malformed hash simply fails.
pub fn verify_password(hash: &str, password: &str) -> bool {
    argon2::password_hash::phc::PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_reject() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "wrong"));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn most_specific_folder_wins() {
        let home = ArchivePath::parse("/n").unwrap();
        let account = Account {
            name: "n".into(),
            password_hash: String::new(),
            home: home.clone(),
            perm: "elrw".parse().unwrap(),
            dirs: vec![
                (
                    ArchivePath::parse("/n/a/b").unwrap(),
                    "elrwd".parse().unwrap(),
                ),
                (ArchivePath::parse("/n/a").unwrap(), "el".parse().unwrap()),
            ],
            max_upload_rate: None,
            max_download_rate: None,
            enabled: true,
            admin: false,
        };
        let at = |p: &str| {
            account
                .perms_at(&ArchivePath::parse(p).unwrap())
                .to_string()
        };
        assert_eq!(at("/n/x"), "elrw");
        assert_eq!(at("/n/a/x"), "el");
        assert_eq!(at("/n/a/b/x"), "elrdw");
        assert_eq!(at("/n/ab"), "elrw");
    }
}
