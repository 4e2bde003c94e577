//! The Python log archiver's `KEY:value` config files (`AgentConfig.txt`,
//! `ServerConfig.txt`), read by the migration commands.
//!
//! Read the way the old program read them (its `ConfigLoader`): a line whose first
//! character is `#`, a space, a tab or a line break is a comment; every other line is split
//! at its first `:` (so `C:\logs` survives as a value). Unlike the old loader, a line
//! without `:` and a key given twice are errors, and each entry keeps its line number, so
//! the importers can name `file:line:key` for a bad value or an unknown key.

use std::path::{Path, PathBuf};

/// One `KEY:value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyEntry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A whole legacy config file.
#[derive(Debug, Clone)]
pub struct LegacyConfig {
    pub path: PathBuf,
    pub entries: Vec<LegacyEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: not a `KEY:value` line", path.display())]
    NotKeyValue { path: PathBuf, line: usize },
    #[error("{}:{line}:{key}: given twice (first on line {first})", path.display())]
    Repeated {
        path: PathBuf,
        line: usize,
        key: String,
        first: usize,
    },
    #[error("{}: {key} is missing", path.display())]
    Missing { path: PathBuf, key: String },
    #[error("{}:{line}:{key}: {message}", path.display())]
    BadValue {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

impl LegacyConfig {
    pub fn load(path: &Path) -> Result<LegacyConfig, LegacyError> {
        let text = std::fs::read_to_string(path).map_err(|source| LegacyError::Read {
            path: path.to_owned(),
            source,
        })?;
        LegacyConfig::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<LegacyConfig, LegacyError> {
        let mut entries: Vec<LegacyEntry> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            // The old loader skipped lines starting with these, before trimming.
            if raw.is_empty() || raw.starts_with(['#', ' ', '\t', '\r']) {
                continue;
            }
            let Some((key, value)) = raw.trim().split_once(':') else {
                return Err(LegacyError::NotKeyValue {
                    path: path.to_owned(),
                    line,
                });
            };
            let key = key.trim().to_owned();
            if let Some(first) = entries.iter().find(|e| e.key == key) {
                return Err(LegacyError::Repeated {
                    path: path.to_owned(),
                    line,
                    key,
                    first: first.line,
                });
            }
            entries.push(LegacyEntry {
                key,
                value: value.trim().to_owned(),
                line,
            });
        }
        Ok(LegacyConfig {
            path: path.to_owned(),
            entries,
        })
    }

    pub fn get(&self, key: &str) -> Option<&LegacyEntry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// The entry for `key`, or an error saying it is missing.
    pub fn require(&self, key: &str) -> Result<&LegacyEntry, LegacyError> {
        self.get(key).ok_or_else(|| LegacyError::Missing {
            path: self.path.clone(),
            key: key.to_owned(),
        })
    }

    /// An error about the value of `entry`.
    pub fn bad_value(&self, entry: &LegacyEntry, message: impl std::fmt::Display) -> LegacyError {
        LegacyError::BadValue {
            path: self.path.clone(),
            line: entry.line,
            key: entry.key.clone(),
            message: message.to_string(),
        }
    }

    /// `entry`'s value parsed as `T`, or an error naming the file, line and key.
    pub fn parse_value<T: std::str::FromStr>(&self, entry: &LegacyEntry) -> Result<T, LegacyError>
    where
        T::Err: std::fmt::Display,
    {
        entry
            .value
            .parse()
            .map_err(|err| self.bad_value(entry, format!("\"{}\": {err}", entry.value)))
    }

    /// `file:line: unknown key KEY` for every key not in `known`.
    pub fn unknown_keys(&self, known: &[&str]) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| !known.contains(&e.key.as_str()))
            .map(|e| {
                format!(
                    "{}:{}: unknown key {} (ignored)",
                    self.path.display(),
                    e.line,
                    e.key
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_the_old_loader_and_names_lines() {
        let text =
            "# comment\n\nAGENT_ID:node1\n  indented:ignored\nLOG_DIR:C:\\logs\\app\nEMPTY:\n";
        let config = LegacyConfig::parse(Path::new("A.txt"), text).unwrap();
        assert_eq!(config.get("AGENT_ID").unwrap().line, 3);
        assert_eq!(config.get("LOG_DIR").unwrap().value, "C:\\logs\\app");
        assert_eq!(config.get("EMPTY").unwrap().value, "");
        assert!(config.get("indented").is_none());
        let err = LegacyConfig::parse(Path::new("A.txt"), "A:1\nnonsense\n").unwrap_err();
        assert_eq!(err.to_string(), "A.txt:2: not a `KEY:value` line");
        let err = LegacyConfig::parse(Path::new("A.txt"), "A:1\nA:2\n").unwrap_err();
        assert!(err.to_string().starts_with("A.txt:2:A:"), "{err}");
        let config = LegacyConfig::parse(Path::new("A.txt"), "PORT:eighty\n").unwrap();
        let err = config
            .parse_value::<u16>(config.get("PORT").unwrap())
            .unwrap_err();
        assert!(
            err.to_string().starts_with("A.txt:1:PORT: \"eighty\""),
            "{err}"
        );
        assert_eq!(
            config.unknown_keys(&["X"]),
            vec!["A.txt:1: unknown key PORT (ignored)"]
        );
    }
}
