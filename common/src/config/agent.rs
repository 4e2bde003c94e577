//! The agent's config file (`agent.toml`), a contract with operators: every key is
//! documented in `config-templates/agent.toml`, unknown keys are refused, and each value is
//! checked as it is read so errors point at the file, line and value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Interval, load_toml, relative_to_file};
use crate::paths::ArchivePath;
use crate::rate::Rate;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Default: the host name.
    pub agent_id: Option<String>,
    /// Where the sled record lives (relative to the config file).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    pub server: ServerSection,
    #[serde(default)]
    pub upload: UploadSection,
    #[serde(default)]
    pub watch: Vec<Spanned<WatchSection>>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/logarchive-agent")
}

/// `[server]`: where and as whom to upload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Explicit FTPS (AUTH TLS).
    #[serde(default)]
    pub tls: bool,
    /// A PEM file with the CA that signed the server's certificate (private CAs).
    pub ca_file: Option<PathBuf>,
}

fn default_host() -> String {
    "127.0.0.1".to_owned()
}
fn default_port() -> u16 {
    2121
}

/// `[upload]`: how fast and how eagerly.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadSection {
    /// Shared by all sessions; "0" is unlimited.
    #[serde(default)]
    pub max_rate: Rate,
    /// FTP sessions in parallel.
    #[serde(default = "default_parallel")]
    pub parallel: Parallel,
    /// A file is sent once unchanged this long.
    #[serde(default = "default_settle")]
    pub settle: Interval,
    /// A full scan of every watch this often (besides inotify events).
    #[serde(default = "default_rescan")]
    pub rescan_interval: Interval,
    /// How often the agent's health report on the server is refreshed.
    #[serde(default = "default_report")]
    pub report_interval: Interval,
    /// How often a watch without inotify (`poll = true`, or out of inotify watches) is
    /// polled for changes.
    #[serde(default = "default_poll")]
    pub poll_interval: Interval,
    /// The most files one pass sends (oldest first); a larger backlog goes in several
    /// passes, with the status and health report refreshed between them.
    #[serde(default = "default_files_per_pass")]
    pub files_per_pass: FilesPerPass,
    /// After sending a backlog of at least this many files, the agent continues in a
    /// fresh process (the same process id, `execve`), which returns the memory that
    /// sending fragmented; 0: never.
    #[serde(default = "default_fresh_after")]
    pub fresh_start_after: FreshStartAfter,
}

impl Default for UploadSection {
    fn default() -> Self {
        UploadSection {
            max_rate: Rate::UNLIMITED,
            parallel: default_parallel(),
            settle: default_settle(),
            rescan_interval: default_rescan(),
            report_interval: default_report(),
            poll_interval: default_poll(),
            files_per_pass: default_files_per_pass(),
            fresh_start_after: default_fresh_after(),
        }
    }
}

fn default_parallel() -> Parallel {
    Parallel(2)
}
fn default_settle() -> Interval {
    Interval(Duration::from_secs(2))
}
fn default_poll() -> Interval {
    Interval(Duration::from_secs(5))
}
fn default_rescan() -> Interval {
    Interval(Duration::from_secs(60))
}
fn default_report() -> Interval {
    Interval(Duration::from_secs(60))
}

fn default_files_per_pass() -> FilesPerPass {
    FilesPerPass(10_000)
}

fn default_fresh_after() -> FreshStartAfter {
    FreshStartAfter(20_000)
}

/// Files of a backlog after which the agent starts afresh, 0 (never) to 100,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshStartAfter(pub u64);

impl<'de> Deserialize<'de> for FreshStartAfter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        count_in_range(deserializer, "fresh_start_after", 0..=100_000_000, "files")
            .map(|files| FreshStartAfter(files as u64))
    }
}

/// Files sent per pass, 1 to 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesPerPass(pub usize);

impl<'de> Deserialize<'de> for FilesPerPass {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        count_in_range(deserializer, "files_per_pass", 1..=1_000_000, "files").map(FilesPerPass)
    }
}

/// A number of parallel sessions, 1 to 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallel(pub usize);

impl<'de> Deserialize<'de> for Parallel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        count_in_range(deserializer, "parallel", 1..=64, "sessions").map(Parallel)
    }
}

/// A whole number of `what` for `key`, refused with the allowed range when outside it.
fn count_in_range<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    key: &str,
    range: std::ops::RangeInclusive<i64>,
    what: &str,
) -> Result<usize, D::Error> {
    let n = i64::deserialize(deserializer)?;
    if range.contains(&n) {
        Ok(n as usize)
    } else {
        Err(serde::de::Error::custom(format!(
            "{key} = {n}: use {} to {} {what}",
            range.start(),
            range.end()
        )))
    }
}

/// One `[[watch]]`: a local folder mirrored below `remote`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchSection {
    pub dir: PathBuf,
    #[serde(default = "everything")]
    pub include: Vec<Glob>,
    #[serde(default)]
    pub exclude: Vec<Glob>,
    /// The target folder, relative to the login's root.
    #[serde(default = "ArchivePath::root")]
    pub remote: ArchivePath,
    /// Poll for changes instead of inotify (network filesystems deliver no inotify
    /// events for changes made on other machines).
    #[serde(default)]
    pub poll: bool,
}

fn everything() -> Vec<Glob> {
    vec![Glob("**".to_owned())]
}

/// A glob pattern (globset syntax), checked when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(pub String);

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pattern = String::deserialize(deserializer)?;
        globset::Glob::new(&pattern).map_err(|err| {
            serde::de::Error::custom(format!("invalid glob \"{pattern}\": {err}"))
        })?;
        Ok(Glob(pattern))
    }
}

/// A loaded agent config with paths resolved against the config file.
#[derive(Debug, Clone)]
pub struct LoadedAgentConfig {
    pub config: AgentConfig,
    pub file: PathBuf,
    pub agent_id: String,
    pub state_dir: PathBuf,
    pub password: String,
    /// The watches with their folders made absolute.
    pub watches: Vec<WatchSection>,
}

impl LoadedAgentConfig {
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let (mut config, text) = load_toml::<AgentConfig>(file)?;
        if let Some(ca_file) = &config.server.ca_file {
            config.server.ca_file = Some(relative_to_file(file, ca_file));
        }
        let at = |span: std::ops::Range<usize>, message: String| {
            ConfigError::at(file, &text, span, message)
        };
        let whole = |message: String| ConfigError::Whole {
            path: file.to_owned(),
            message,
        };
        let password = match (&config.server.password, &config.server.password_file) {
            (Some(password), None) => password.clone(),
            (None, Some(path)) => {
                let path = relative_to_file(file, path);
                std::fs::read_to_string(&path)
                    .map_err(|err| {
                        whole(format!(
                            "[server] password_file \"{}\": {err}",
                            path.display()
                        ))
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned()
            }
            (Some(_), Some(_)) => {
                return Err(whole(
                    "[server]: give password or password_file, not both".to_owned(),
                ));
            }
            (None, None) => {
                return Err(whole(
                    "[server]: password or password_file is required".to_owned(),
                ));
            }
        };
        if config.watch.is_empty() {
            return Err(whole("no [[watch]] section: nothing to mirror".to_owned()));
        }
        let mut watches: Vec<WatchSection> = Vec::new();
        for watch in &config.watch {
            let mut section = watch.get_ref().clone();
            section.dir = relative_to_file(file, &section.dir);
            // Two watches must never write the same remote path: their targets may not
            // be the same folder or one inside the other.
            if let Some(other) = watches.iter().find(|o| {
                o.remote.starts_with(&section.remote) || section.remote.starts_with(&o.remote)
            }) {
                return Err(at(
                    watch.span(),
                    format!(
                        "watch of \"{}\" (remote \"{}\") could write the same remote paths as the watch of \"{}\" (remote \"{}\"): give each watch its own remote folder",
                        section.dir.display(),
                        section.remote,
                        other.dir.display(),
                        other.remote
                    ),
                ));
            }
            watches.push(section);
        }
        let agent_id = match &config.agent_id {
            Some(id) => id.clone(),
            None => hostname(),
        };
        Ok(LoadedAgentConfig {
            state_dir: relative_to_file(file, &config.state_dir),
            agent_id,
            password,
            watches,
            file: file.to_owned(),
            config,
        })
    }
}

/// The machine's host name, from the kernel (no extra crate for one file read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "agent".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<LoadedAgentConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        LoadedAgentConfig::load(&path)
    }

    const SERVER: &str = "[server]\nuser = \"node01\"\npassword = \"pw\"\n";

    #[test]
    fn reads_a_full_config() {
        let loaded = load(&format!(
            "agent_id = \"n1\"\nstate_dir = \"state\"\n{SERVER}[upload]\nmax_rate = \"300KiB/s\"\nparallel = 4\nsettle = \"1s\"\n[[watch]]\ndir = \"logs\"\ninclude = [\"**/*.log\"]\nexclude = [\"**/*.tmp\"]\nremote = \"/app\"\n"
        ))
        .unwrap();
        assert_eq!(loaded.agent_id, "n1");
        assert!(loaded.state_dir.ends_with("state") && loaded.state_dir.is_absolute());
        assert_eq!(loaded.config.upload.parallel, Parallel(4));
        assert_eq!(loaded.watches[0].remote.as_str(), "/app");
        assert!(loaded.watches[0].dir.is_absolute());
    }

    #[test]
    fn errors_name_key_and_value() {
        let cases = [
            (
                format!("{SERVER}[upload]\nmax_rate = \"quick\"\n[[watch]]\ndir = \"a\"\n"),
                "\"quick\"",
            ),
            (
                format!("{SERVER}[upload]\nparallel = 0\n[[watch]]\ndir = \"a\"\n"),
                "parallel = 0",
            ),
            (
                format!("{SERVER}[upload]\nfiles_per_pass = 0\n[[watch]]\ndir = \"a\"\n"),
                "files_per_pass = 0: use 1 to 1000000 files",
            ),
            (
                format!("{SERVER}[[watch]]\ndir = \"a\"\ninclude = [\"[oops\"]\n"),
                "\"[oops\"",
            ),
            (
                format!("{SERVER}[[watch]]\ndir = \"a\"\nremote = \"/x/../y\"\n"),
                "'..'",
            ),
            (
                format!("{SERVER}[[watch]]\ndir = \"a\"\ncolour = 1\n"),
                "colour",
            ),
            (
                "[server]\nuser = \"u\"\n[[watch]]\ndir = \"a\"\n".to_owned(),
                "password",
            ),
            (SERVER.to_owned(), "[[watch]]"),
        ];
        for (text, needle) in cases {
            let err = load(&text).unwrap_err().to_string();
            assert!(err.contains("agent.toml"), "{err}");
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn overlapping_remotes_are_refused() {
        let err = load(&format!(
            "{SERVER}[[watch]]\ndir = \"a\"\nremote = \"/\"\n[[watch]]\ndir = \"b\"\nremote = \"/b\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("same remote paths"), "{err}");
        assert!(load(&format!(
            "{SERVER}[[watch]]\ndir = \"a\"\nremote = \"/a\"\n[[watch]]\ndir = \"b\"\nremote = \"/b\"\n"
        ))
        .is_ok());
    }
}
