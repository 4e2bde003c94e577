//! Edits of users.toml that keep the operator's comments and layout.
//!
//! The CLI (and later the web UI) change the file through [`UsersDocument`]: the edit is
//! made on the TOML document (toml_edit), checked by the very loader the server uses, and
//! only then written, atomically (temporary file, fsync, rename), with mode 0600 since the
//! file holds password hashes.

use std::io::Write;
use std::path::{Path, PathBuf};

use logarchive_common::config::ConfigError;
use logarchive_common::config::server::{UserName, UsersFile};
use logarchive_common::paths::ArchivePath;
use logarchive_common::perm::PermSet;
use logarchive_common::rate::Rate;
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, value};

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: `user` must be an array of tables ([[user]])", path.display())]
    Shape { path: PathBuf },
    #[error("user \"{0}\" already exists")]
    Exists(String),
    #[error("no user \"{0}\"")]
    Missing(String),
    #[error("the edit would make the file invalid: {0}")]
    Invalid(#[from] ConfigError),
}

/// The changes `user add` and `user set` can make; `None` leaves a key as it is.
#[derive(Debug, Default, Clone)]
pub struct UserChanges {
    pub password_hash: Option<String>,
    pub home: Option<ArchivePath>,
    pub perm: Option<PermSet>,
    pub max_upload_rate: Option<Rate>,
    pub max_download_rate: Option<Rate>,
    pub enabled: Option<bool>,
    pub admin: Option<bool>,
    /// Per-folder permission strings to set (folder, letters).
    pub set_dirs: Vec<(ArchivePath, PermSet)>,
    /// Per-folder overrides to remove.
    pub remove_dirs: Vec<ArchivePath>,
}

/// users.toml, open for editing.
pub struct UsersDocument {
    path: PathBuf,
    doc: DocumentMut,
}

impl UsersDocument {
    /// Opens the file; a missing file is an empty document.
    pub fn open(path: &Path) -> Result<UsersDocument, EditError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(EditError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let doc = text
            .parse::<DocumentMut>()
            .map_err(|err| EditError::Syntax {
                path: path.to_owned(),
                message: err.to_string(),
            })?;
        Ok(UsersDocument {
            path: path.to_owned(),
            doc,
        })
    }

    fn users_mut(&mut self) -> Result<&mut ArrayOfTables, EditError> {
        let path = self.path.clone();
        let item = self
            .doc
            .entry("user")
            .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
        item.as_array_of_tables_mut()
            .ok_or(EditError::Shape { path })
    }

    fn find_mut(&mut self, name: &str) -> Result<&mut Table, EditError> {
        self.users_mut()?
            .iter_mut()
            .find(|user| user.get("name").and_then(|n| n.as_str()) == Some(name))
            .ok_or_else(|| EditError::Missing(name.to_owned()))
    }

    pub fn add(&mut self, name: &UserName, changes: &UserChanges) -> Result<(), EditError> {
        if self.find_mut(name.as_str()).is_ok() {
            return Err(EditError::Exists(name.to_string()));
        }
        let mut table = Table::new();
        table.insert("name", value(name.as_str()));
        self.users_mut()?.push(table);
        let table = self.find_mut(name.as_str())?;
        apply(table, changes);
        Ok(())
    }

    pub fn set(&mut self, name: &str, changes: &UserChanges) -> Result<(), EditError> {
        apply(self.find_mut(name)?, changes);
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<(), EditError> {
        let users = self.users_mut()?;
        let index = users
            .iter()
            .position(|user| user.get("name").and_then(|n| n.as_str()) == Some(name))
            .ok_or_else(|| EditError::Missing(name.to_owned()))?;
        users.remove(index);
        Ok(())
    }

    /// An empty document that will be saved to (or named as) `path`.
    pub fn empty(path: &Path) -> UsersDocument {
        UsersDocument {
            path: path.to_owned(),
            doc: DocumentMut::new(),
        }
    }

    /// Whether a user of this name is in the document.
    pub fn contains(&mut self, name: &str) -> bool {
        self.find_mut(name).is_ok()
    }

    /// The edited document as text, checked with the server's own loader.
    pub fn render(&self) -> Result<(UsersFile, String), EditError> {
        let text = self.doc.to_string();
        let checked = UsersFile::parse(&self.path, &text)?;
        Ok((checked, text))
    }

    /// Checks the edited document with the server's own loader and writes it atomically.
    pub fn save(&self) -> Result<UsersFile, EditError> {
        let (checked, text) = self.render()?;
        write_atomically(&self.path, text.as_bytes())?;
        Ok(checked)
    }
}

fn apply(table: &mut Table, changes: &UserChanges) {
    if let Some(hash) = &changes.password_hash {
        table.insert("password", value(hash.as_str()));
    }
    if let Some(home) = &changes.home {
        table.insert("home", value(home.as_str()));
    }
    if let Some(perm) = changes.perm {
        table.insert("perm", value(perm.to_string()));
    }
    if let Some(rate) = changes.max_upload_rate {
        table.insert("max_upload_rate", value(rate.to_string()));
    }
    if let Some(rate) = changes.max_download_rate {
        table.insert("max_download_rate", value(rate.to_string()));
    }
    if let Some(enabled) = changes.enabled {
        table.insert("enabled", value(enabled));
    }
    if let Some(admin) = changes.admin {
        table.insert("admin", value(admin));
    }
    if !changes.set_dirs.is_empty() || !changes.remove_dirs.is_empty() {
        let dirs = table
            .entry("dirs")
            .or_insert(Item::Table(Table::new()))
            .as_table_mut();
        if let Some(dirs) = dirs {
            for (dir, perm) in &changes.set_dirs {
                dirs.insert(dir.as_str(), value(perm.to_string()));
            }
            for dir in &changes.remove_dirs {
                dirs.remove(dir.as_str());
            }
        }
        if table
            .get("dirs")
            .and_then(Item::as_table)
            .is_some_and(Table::is_empty)
        {
            table.remove("dirs");
        }
    }
}

/// Writes `bytes` to `path` so that readers see the old or the new file, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), EditError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| EditError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(err)?;
    let name = path
        .file_name()
        .map_or("users.toml".into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    // An edit keeps the file's owner and mode, so that `sudo logarchive-server user ...`
    // does not leave a file the service user cannot read.
    let previous = std::fs::metadata(path).ok();
    let result = (|| {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        if let Some(previous) = &previous {
            std::os::unix::fs::fchown(&file, Some(previous.uid()), Some(previous.gid()))?;
            file.set_permissions(std::fs::Permissions::from_mode(previous.mode() & 0o777))?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

    #[test]
    fn edits_keep_comments_and_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(
            &path,
            format!("# our users\n[[user]]\nname = \"a\" # the first\npassword = \"{HASH}\"\n"),
        )
        .unwrap();
        let mut doc = UsersDocument::open(&path).unwrap();
        let changes = UserChanges {
            password_hash: Some(HASH.into()),
            perm: Some("elrw".parse().unwrap()),
            set_dirs: vec![(ArchivePath::parse("/b/ro").unwrap(), "el".parse().unwrap())],
            ..UserChanges::default()
        };
        doc.add(&"b".parse().unwrap(), &changes).unwrap();
        doc.set(
            "a",
            &UserChanges {
                admin: Some(true),
                ..UserChanges::default()
            },
        )
        .unwrap();
        let saved = doc.save().unwrap();
        assert_eq!(saved.user.len(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# our users") && text.contains("# the first"),
            "{text}"
        );
        assert!(saved.find("a").unwrap().admin);

        // An edit that breaks the file is refused and the file is left as it was.
        let mut doc = UsersDocument::open(&path).unwrap();
        doc.set(
            "a",
            &UserChanges {
                set_dirs: vec![(ArchivePath::parse("/elsewhere").unwrap(), PermSet::NONE)],
                ..UserChanges::default()
            },
        )
        .unwrap();
        assert!(matches!(doc.save(), Err(EditError::Invalid(_))));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert!(matches!(doc.remove("nobody"), Err(EditError::Missing(_))));
    }
}
