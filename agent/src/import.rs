//! `logarchive-agent import`: takes over from the Python archiver's agent.
//!
//! From its `AgentConfig.txt` (`KEY:value` lines) it writes an agent.toml that mirrors the
//! same folder to the same place: the old agent sent `LOG_DIR/<rel>` to
//! `/<AGENT_ID>/<rel>` below the FTP root, and the old server rooted every user at the
//! archive root (as `import-users` does), so the watch is `dir = LOG_DIR`,
//! `remote = "/<AGENT_ID>"`, with `LOG_PF` matched case-insensitively like the old
//! `lower().endswith()`. The password goes to a `password_file` beside agent.toml
//! (mode 0600), never into agent.toml, the output or the log.
//!
//! From its upload record (`uploadRcd.json`, a list of local paths, often Windows paths
//! with `\`, drive letters in either case, and the same file twice) it marks the files the
//! old agent sent as confirmed in the agent's record — but only after `SIZE` on the server
//! (binary mode) equals the local size. A file whose server copy differs, or is missing,
//! is not marked and will be sent again (the agent keeps the old server copy as a version);
//! each is reported. A record path that differs from a file on disk only in letter case
//! counts as that file, as it did on Windows.
//!
//! The agent.toml is checked with the loader `run` uses, and the files are mapped to
//! server paths with the watch `run` builds from it, so both agree by construction.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use logarchive_common::config::legacy::{LegacyConfig, LegacyEntry};
use logarchive_common::paths::ArchivePath;

use crate::remote::Remote;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The old agent's config (AgentConfig.txt).
    #[arg(long, value_name = "AgentConfig.txt")]
    config: PathBuf,
    /// The old agent's upload record (default: RCD_JSON of the config, beside it).
    #[arg(long, value_name = "uploadRcd.json")]
    record: Option<PathBuf>,
    /// Where to write the new agent.toml (its password goes to <name>.pass beside it).
    #[arg(long, default_value = "agent.toml")]
    output: PathBuf,
    /// The log folder on this machine (default: LOG_DIR, relative to AgentConfig.txt).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// The log folder as the old agent's record names it, e.g. 'C:\agent\AgentLogFolder'
    /// (default: found in the record by LOG_DIR's name).
    #[arg(long)]
    old_log_dir: Option<String>,
    /// state_dir of the new agent (default /var/lib/logarchive-agent).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The watch's folder on the server, below the login's home (default "/<AGENT_ID>",
    /// right for a user whose home is "/", as on the old server; give "/" when the user's
    /// home is already "/<AGENT_ID>").
    #[arg(long)]
    remote: Option<String>,
    /// Connect with explicit FTPS (the old agent could not; the new server may require it).
    #[arg(long)]
    tls: bool,
    /// With --tls: the PEM file of the CA that signed the server's certificate.
    #[arg(long, requires = "tls")]
    ca_file: Option<PathBuf>,
    /// Overwrite an existing agent.toml and password file.
    #[arg(long)]
    force: bool,
}

/// The keys of the old AgentConfig.txt.
const AGENT_KEYS: &[&str] = &[
    "AGENT_ID",
    "AGENT_IP",
    "FTP_SER_IP",
    "FTP_SER_PORT",
    "USER_NAME",
    "USER_PWD",
    "RCD_JSON",
    "LOG_DIR",
    "LOG_PF",
    "UPLOAD_INV",
];

/// What the old config says, checked.
struct OldAgent {
    agent_id: String,
    host: String,
    port: u16,
    user: String,
    password: String,
    log_dir: LegacyEntry,
    suffix: String,
    upload_interval: Option<u64>,
    record: Option<PathBuf>,
}

fn read_old_config(path: &Path) -> anyhow::Result<(OldAgent, Vec<String>)> {
    let config = LegacyConfig::load(path)?;
    let notes = config.unknown_keys(AGENT_KEYS);
    let agent_id = config.require("AGENT_ID")?;
    let one_folder = ArchivePath::root()
        .join(&agent_id.value)
        .ok()
        .filter(|p| p.components().count() == 1);
    if one_folder.is_none() {
        return Err(config
            .bad_value(
                agent_id,
                format!("\"{}\" cannot name a folder on the server", agent_id.value),
            )
            .into());
    }
    let host = config.require("FTP_SER_IP")?;
    if host.value.is_empty() {
        return Err(config.bad_value(host, "empty").into());
    }
    let port: u16 = config.parse_value(config.require("FTP_SER_PORT")?)?;
    let user = config.require("USER_NAME")?;
    if user.value.is_empty() {
        return Err(config.bad_value(user, "empty").into());
    }
    let password = config.require("USER_PWD")?;
    if password.value.is_empty() {
        // Never echo a password, not even a wrong one.
        return Err(config.bad_value(password, "empty").into());
    }
    let log_dir = config.require("LOG_DIR")?.clone();
    if log_dir.value.is_empty() {
        return Err(config.bad_value(&log_dir, "empty").into());
    }
    let upload_interval = match config.get("UPLOAD_INV") {
        Some(entry) => {
            let seconds: u64 = config.parse_value(entry)?;
            if seconds == 0 {
                return Err(config.bad_value(entry, "must be at least 1 second").into());
            }
            Some(seconds)
        }
        None => None,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok((
        OldAgent {
            agent_id: agent_id.value.clone(),
            host: host.value.clone(),
            port,
            user: user.value.clone(),
            password: password.value.clone(),
            log_dir,
            suffix: config
                .get("LOG_PF")
                .map(|e| e.value.clone())
                .unwrap_or_default(),
            upload_interval,
            record: config.get("RCD_JSON").map(|e| dir.join(&e.value)),
        },
        notes,
    ))
}

/// A Windows path (`C:\...`, `\\server\share`) or one with backslashes.
fn is_windows_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    path.contains('\\') || (bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':')
}

/// A path as its parts, whichever separator it uses, without empty and `.` parts.
fn parts(path: &str) -> Vec<&str> {
    path.split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect()
}

/// The glob that matches what the old agent's `lower().endswith(LOG_PF)` matched.
fn suffix_glob(suffix: &str) -> String {
    if suffix.is_empty() {
        return "**".to_owned();
    }
    let mut glob = String::from("**/*");
    for c in suffix.chars() {
        let (lower, upper) = (c.to_ascii_lowercase(), c.to_ascii_uppercase());
        if lower != upper {
            glob.push_str(&format!("[{lower}{upper}]"));
        } else if "*?[]{}\\".contains(c) {
            // globset's escape on Unix.
            glob.push('\\');
            glob.push(c);
        } else {
            glob.push(c);
        }
    }
    glob
}

fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Writes `bytes` to a new file of mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// The old agent's folder as its record names it (lowercased parts, drive letter
/// dropped): `--old-log-dir`, else an absolute LOG_DIR, else the first entry's path up to
/// LOG_DIR (the old agent used `<its own folder>/LOG_DIR`).
fn record_prefix(
    log_dir: &str,
    old_log_dir: Option<&str>,
    first: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let lower = |path: &str| -> Vec<String> {
        parts(path)
            .iter()
            .skip_while(|p| p.ends_with(':'))
            .map(|p| p.to_lowercase())
            .collect()
    };
    if let Some(dir) = old_log_dir {
        return Ok(lower(dir));
    }
    if is_windows_path(log_dir) || log_dir.starts_with('/') {
        return Ok(lower(log_dir));
    }
    let Some(first) = first else {
        return Ok(Vec::new());
    };
    let name = lower(log_dir);
    let path = lower(first);
    match path.windows(name.len()).position(|w| w == name.as_slice()) {
        Some(at) => Ok(path[..at + name.len()].to_vec()),
        None => bail!(
            "cannot find LOG_DIR \"{log_dir}\" in the record's first path \"{first}\": give --old-log-dir"
        ),
    }
}

/// The parts of a record path below `prefix` (compared ignoring letter case and the drive
/// letter, so `c:\` and `C:\` are one folder), or `None` if it is not below it.
fn relative_parts<'a>(entry: &'a str, prefix: &[String]) -> Option<Vec<&'a str>> {
    let all: Vec<&str> = parts(entry)
        .into_iter()
        .skip_while(|p| p.ends_with(':'))
        .collect();
    let below = all.len().checked_sub(prefix.len()).filter(|n| *n > 0)?;
    let same = all
        .iter()
        .zip(prefix)
        .all(|(part, want)| part.to_lowercase() == *want);
    same.then(|| all[all.len() - below..].to_vec())
}

/// The local file a record path names: each part matched exactly, else ignoring case.
fn find_case_insensitive(root: &Path, rel: &[&str]) -> Result<PathBuf, &'static str> {
    let mut here = root.to_owned();
    for part in rel {
        let exact = here.join(part);
        if std::fs::symlink_metadata(&exact).is_ok() {
            here = exact;
            continue;
        }
        let wanted = part.to_lowercase();
        let matches: Vec<PathBuf> = std::fs::read_dir(&here)
            .map_err(|_| "not on disk")?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().to_lowercase() == wanted)
            .map(|e| e.path())
            .collect();
        match matches.as_slice() {
            [one] => here = one.clone(),
            [] => return Err("not on disk"),
            _ => return Err("several files on disk differ from it only in letter case"),
        }
    }
    Ok(here)
}

/// What became of the old record's entries.
#[derive(Default)]
struct Outcome {
    marked: Vec<String>,
    already: usize,
    resend: Vec<String>,
    skipped: Vec<String>,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let (old, unknown) = read_old_config(&args.config)?;
    for note in unknown {
        eprintln!("note: {note}");
    }
    let config_dir = args.config.parent().unwrap_or(Path::new("."));
    let log_dir = match &args.log_dir {
        Some(dir) => dir.clone(),
        None if is_windows_path(&old.log_dir.value) => bail!(
            "{}:{}:LOG_DIR: \"{}\" is a Windows path: give the folder on this machine with --log-dir",
            args.config.display(),
            old.log_dir.line,
            old.log_dir.value
        ),
        None => config_dir.join(&old.log_dir.value),
    };
    let log_dir = std::fs::canonicalize(&log_dir)
        .with_context(|| format!("log folder {}", log_dir.display()))?;
    if !log_dir.is_dir() {
        bail!("log folder {} is not a folder", log_dir.display());
    }
    let record_path = args
        .record
        .clone()
        .or(old.record.clone())
        .context("no upload record: give --record uploadRcd.json")?;
    let entries: Vec<String> = {
        let text = std::fs::read_to_string(&record_path)
            .with_context(|| format!("{}: cannot read", record_path.display()))?;
        serde_json::from_str(&text).map_err(|err| {
            anyhow::anyhow!(
                "{}:{}:{}: expected a JSON list of paths: {err}",
                record_path.display(),
                err.line(),
                err.column()
            )
        })?
    };

    // The new config, written beside --output; checked by the loader `run` uses.
    let output = absolute(&args.output)?;
    let stem = output
        .file_stem()
        .map_or("agent".into(), |s| s.to_string_lossy().into_owned());
    let password_file = output.with_file_name(format!("{stem}.pass"));
    for path in [&output, &password_file] {
        if path.exists() && !args.force {
            bail!(
                "{} exists: nothing was written (use --force to replace it)",
                path.display()
            );
        }
    }
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let state_dir = args.state_dir.as_deref().map(absolute).transpose()?;
    let remote = match &args.remote {
        Some(remote) => ArchivePath::parse(remote)
            .with_context(|| format!("--remote \"{remote}\""))?
            .as_str()
            .to_owned(),
        None => format!("/{}", old.agent_id),
    };
    let mut text = format!(
        "# Written by `logarchive-agent import` from {config}.\n\
         # The old agent sent LOG_DIR/<path> to /<AGENT_ID>/<path> on the server; the watch\n\
         # below does the same, so this agent continues where the old one stopped.\n\
         # Every key is documented in config-templates/agent.toml.\n\
         agent_id = {id}\n",
        config = absolute(&args.config)?.display(),
        id = quoted(&old.agent_id),
    );
    if let Some(dir) = &state_dir {
        text.push_str(&format!("state_dir = {}\n", quoted(&dir.to_string_lossy())));
    }
    text.push_str(&format!(
        "\n[server]\nhost = {}\nport = {}\nuser = {}\n# USER_PWD, in a file of mode 0600.\npassword_file = {}\n",
        quoted(&old.host),
        old.port,
        quoted(&old.user),
        quoted(&format!("{stem}.pass")),
    ));
    if args.tls {
        text.push_str("tls = true\n");
    }
    if let Some(ca) = &args.ca_file {
        text.push_str(&format!(
            "ca_file = {}\n",
            quoted(&absolute(ca)?.to_string_lossy())
        ));
    }
    if let Some(seconds) = old.upload_interval {
        text.push_str(&format!(
            "\n[upload]\n# UPLOAD_INV; changes are also picked up at once by inotify.\nrescan_interval = \"{seconds}s\"\n"
        ));
    }
    text.push_str(&format!(
        "\n[[watch]]\ndir = {}\n# LOG_PF {}, matched ignoring case as the old agent did.\ninclude = [{}]\nremote = {}\n",
        quoted(&log_dir.to_string_lossy()),
        quoted(&old.suffix),
        quoted(&suffix_glob(&old.suffix)),
        quoted(&remote),
    ));
    // Both files are made in a private folder beside the output and moved into place only
    // when the import succeeded: a failed run leaves an earlier agent.toml and its
    // password file as they were.
    let parent = output.parent().unwrap_or(Path::new("/"));
    let staging = parent.join(format!(".{stem}.import-{}", std::process::id()));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .with_context(|| format!("cannot create {}", staging.display()))?;
    }
    let file_name = output
        .file_name()
        .map_or("agent.toml".into(), |n| n.to_os_string());
    let (staged, staged_password) = (
        staging.join(&file_name),
        staging.join(format!("{stem}.pass")),
    );
    let result = write_private(&staged_password, format!("{}\n", old.password).as_bytes())
        .and_then(|()| {
            std::fs::write(&staged, &text)
                .with_context(|| format!("cannot write {}", staged.display()))
        })
        .and_then(|()| mark_uploaded(&staged, &log_dir, &old, &args, &entries))
        .and_then(|outcome| {
            std::fs::rename(&staged_password, &password_file)
                .with_context(|| format!("cannot write {}", password_file.display()))?;
            std::fs::rename(&staged, &output)
                .with_context(|| format!("cannot write {}", output.display()))?;
            Ok(outcome)
        });
    let _ = std::fs::remove_dir_all(&staging);
    let outcome =
        result.map_err(|err| err.context(format!("{} was not written", output.display())))?;

    println!(
        "wrote {} (password in {}, mode 0600)",
        output.display(),
        password_file.display()
    );
    println!(
        "{} paths in {}: {} marked as sent (the server has the same size), {} already marked",
        entries.len(),
        record_path.display(),
        outcome.marked.len(),
        outcome.already
    );
    for line in &outcome.resend {
        println!("will be sent again: {line}");
    }
    for line in &outcome.skipped {
        println!("skipped: {line}");
    }
    eprintln!(
        "note: files in the log folder that the old record does not list are sent by the agent as new files"
    );
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{}", path.display()))
}

/// Marks each recorded file whose server copy has the local size as confirmed.
fn mark_uploaded(
    config: &Path,
    log_dir: &Path,
    old: &OldAgent,
    args: &ImportArgs,
    entries: &[String],
) -> anyhow::Result<Outcome> {
    let agent = crate::Agent::open(config)?;
    let watch = agent
        .watches
        .first()
        .context("the generated config has no watch")?;
    // The folder as the old record names it.
    let prefix = record_prefix(
        &old.log_dir.value,
        args.old_log_dir.as_deref(),
        entries.first().map(String::as_str),
    )?;
    let mut outcome = Outcome::default();
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    for entry in entries {
        let Some(rel) = relative_parts(entry, &prefix) else {
            outcome.skipped.push(format!("{entry}: outside LOG_DIR"));
            continue;
        };
        let local = match find_case_insensitive(log_dir, &rel) {
            Ok(local) => local,
            Err(why) => {
                outcome.skipped.push(format!("{entry}: {why}"));
                continue;
            }
        };
        if !seen.insert(local.clone()) {
            continue; // the same file recorded twice (e.g. `c:\` and `C:\`)
        }
        let meta = std::fs::symlink_metadata(&local)?;
        match watch.local_file(local.clone(), &meta) {
            Some(file) => files.push(file),
            None => outcome.skipped.push(format!(
                "{entry}: not a regular file matching LOG_PF \"{}\"",
                old.suffix
            )),
        }
    }
    if files.is_empty() {
        return Ok(outcome);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let record = &agent.mirror.record;
    let checked = runtime.block_on(async {
        let mut remote = Remote::connect(&agent.login()).await.with_context(|| {
            format!(
                "cannot check the files on the server {}:{}",
                old.host, old.port
            )
        })?;
        for file in &files {
            if let Some(known) = record.get(&file.local)?
                && crate::mirror::is_unchanged(&known, file)
            {
                outcome.already += 1;
                continue;
            }
            match remote.size(&file.remote).await? {
                Some(size) if size == file.size => {
                    record.stage(&crate::mirror::confirmed_record(file)?)?;
                    outcome.marked.push(file.remote.clone());
                }
                Some(size) => outcome.resend.push(format!(
                    "{} (the server's {} has {size} bytes, the local file {})",
                    file.local.display(),
                    file.remote,
                    file.size
                )),
                None => outcome.resend.push(format!(
                    "{} (the server has no {})",
                    file.local.display(),
                    file.remote
                )),
            }
        }
        anyhow::Ok(())
    });
    // What was checked stays marked even if the connection broke half-way.
    record.flush()?;
    checked?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_match_ignoring_case_like_the_old_agent() {
        let glob = globset::Glob::new(&suffix_glob(".txt"))
            .unwrap()
            .compile_matcher();
        assert!(glob.is_match("a/b/LOG.TXT") && glob.is_match("x.Txt") && glob.is_match("x.txt"));
        assert!(!glob.is_match("x.txt.gz"));
        assert_eq!(suffix_glob(""), "**");
        let glob = globset::Glob::new(&suffix_glob("[1].log"))
            .unwrap()
            .compile_matcher();
        assert!(glob.is_match("app[1].LOG"));
    }

    #[test]
    fn record_paths_are_mapped_below_the_old_folder() {
        // A Windows agent with a relative LOG_DIR: the folder is found by its name.
        let first = "c:\\Works\\logArchiver\\AgentLogFolder\\a.txt";
        let prefix = record_prefix("AgentLogFolder", None, Some(first)).unwrap();
        assert_eq!(prefix, vec!["works", "logarchiver", "agentlogfolder"]);
        let rel = |entry: &'static str| relative_parts(entry, &prefix);
        assert_eq!(
            rel("C:\\works\\LOGARCHIVER\\AgentLogFolder\\Logs\\x.txt"),
            Some(vec!["Logs", "x.txt"])
        );
        assert_eq!(rel("c:\\Works\\other\\x.txt"), None);
        assert_eq!(rel("c:\\Works\\logArchiver\\AgentLogFolder"), None);
        // A Linux agent with an absolute LOG_DIR, and --old-log-dir.
        let prefix = record_prefix("/var/log/app", None, None).unwrap();
        assert_eq!(
            relative_parts("/var/log/app/2024/x.log", &prefix),
            Some(vec!["2024", "x.log"])
        );
        let prefix = record_prefix("logs", Some("D:\\agent\\logs"), Some("z")).unwrap();
        assert_eq!(
            relative_parts("d:\\Agent\\Logs\\x.log", &prefix),
            Some(vec!["x.log"])
        );
        let err = record_prefix("logs", None, Some("c:\\elsewhere\\x.log")).unwrap_err();
        assert!(err.to_string().contains("--old-log-dir"), "{err}");
    }

    #[test]
    fn windows_paths_are_split_and_recognised() {
        assert!(is_windows_path("c:\\agent\\Logs") && is_windows_path("D:/x"));
        assert!(!is_windows_path("AgentLogFolder") && !is_windows_path("/var/log"));
        assert_eq!(parts("c:\\a\\.\\b/c"), vec!["c:", "a", "b", "c"]);
    }
}
