//! Config files: loading TOML with errors that point at the file, line and value.
//!
//! Every config file goes through [`parse_toml`], so every error reads the same way:
//! `server.toml:12:19: invalid rate "fast": ... in `max_upload_rate = "fast"``.
//! Values are checked while they are deserialized (rates, permission strings, paths parse
//! themselves), which lets the TOML parser attach the position of the offending value.

pub mod agent;
pub mod legacy;
pub mod server;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

/// A config file could not be read or is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}{}", path.display(), context(source_line))]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        source_line: String,
    },
    #[error("{}: {message}", path.display())]
    Whole { path: PathBuf, message: String },
}

fn context(line: &str) -> String {
    let line = line.trim();
    match line.split_once('=') {
        _ if line.is_empty() => String::new(),
        // A secret is never echoed, even a wrong one.
        Some((key, _)) if key.trim().contains("password") || key.trim().contains("secret") => {
            format!(" (in `{} = <hidden>`)", key.trim())
        }
        _ => format!(" (in `{line}`)"),
    }
}

impl ConfigError {
    /// An error about the value at `span` (byte offsets into `text`).
    pub fn at(path: &Path, text: &str, span: Range<usize>, message: impl fmt::Display) -> Self {
        let start = span.start.min(text.len());
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message: message.to_string(),
            source_line: text[line_start..line_end].to_owned(),
        }
    }
}

/// Parses `text` (the contents of `path`) as `T`.
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|err| match err.span() {
        Some(span) => ConfigError::at(path, text, span, err.message().trim_end()),
        None => ConfigError::Whole {
            path: path.to_owned(),
            message: err.message().trim_end().to_owned(),
        },
    })
}

/// Reads and parses `path` as `T`; also returns the text, for later checks that point into it.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<(T, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok((parse_toml(path, &text)?, text))
}

/// A duration written as in the config files: `"600s"`, `"5m"`, `"2h"`, `"250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Duration);

impl std::str::FromStr for Interval {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(text.trim())
            .map(Interval)
            .map_err(|err| {
                format!("invalid duration \"{text}\": {err} (write e.g. \"30s\", \"5m\")")
            })
    }
}

impl<'de> serde::Deserialize<'de> for Interval {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Interval {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(self.0))
    }
}

/// Makes a relative path from a config file relative to that file's folder.
pub fn relative_to_file(config_file: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    match config_file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
        _ => path.to_owned(),
    }
}

/// What `check-config` found for a folder a program will write in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderState {
    /// It exists and a file could be created in it.
    Writable,
    /// It does not exist, and its nearest existing parent is writable.
    Creatable,
}

/// Whether the program could write in `dir` (or create it). Tried, not guessed from mode
/// bits: a probe file is created in `dir` or its nearest existing parent and removed.
pub fn probe_folder(dir: &Path) -> Result<FolderState, String> {
    let mut existing = dir.to_owned();
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent.to_owned(),
            _ => {
                existing = PathBuf::from(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(format!("{} is not a folder", existing.display()));
    }
    let probe = existing.join(format!(".logarchive-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|err| format!("cannot write in {}: {err}", existing.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(if existing == dir {
        FolderState::Writable
    } else {
        FolderState::Creatable
    })
}

/// A `check-config` that found problems (they were printed).
#[derive(Debug, thiserror::Error)]
#[error("{0} problem(s) found")]
pub struct ChecksFailed(pub usize);

/// Ends a `check-config` of either program the same way: `OK` on stdout, or every problem
/// on stderr and an error.
pub fn report_check(problems: &[String]) -> Result<(), ChecksFailed> {
    if problems.is_empty() {
        println!("OK: the configuration is valid (nothing was started)");
        return Ok(());
    }
    for problem in problems {
        eprintln!("error: {problem}");
    }
    Err(ChecksFailed(problems.len()))
}
