//! The end checks of the soak: the archive against every node's ledger (SHA-256 of every
//! file and every kept version), every feed message accounted for, no temporary name
//! visible (disk, FTP listings, web search), and the catalog against a fresh reindex.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::feeds::{Sent, marker};
use super::node::Ledger;

/// What one node's part of the archive holds, compared with its ledger.
#[derive(Debug, Default, Clone)]
pub struct NodeCheck {
    pub final_files: u64,
    pub final_bytes: u64,
    /// Local files whose content differs from the ledger (a writer bug).
    pub ledger_mismatches: Vec<String>,
    /// Final files absent or different in the archive.
    pub missing: Vec<String>,
    /// `<name>.<stamp>` copies the agent kept of content that was replaced, as its
    /// contract says (a truncation, or a rotation it could not follow).
    pub kept_versions: u64,
    pub kept_version_bytes: u64,
    /// Kept versions whose bytes are also the start of the archived file the content
    /// lives in now (a rotated copy): archived twice. The agent avoids this where it can
    /// (rotation by rename is followed, a copytruncate's copy takes the server's copy);
    /// what is left is counted, not failed.
    pub archived_twice: u64,
    pub archived_twice_bytes: u64,
    /// Kept versions of content that was never replaced locally, or a second version of
    /// the same content: bytes sent twice.
    pub duplicates: Vec<String>,
    /// Archive files that are neither a final file nor a kept version (temporary names
    /// among them).
    pub unexpected: Vec<String>,
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Splits `name.20261122T213501Z[.n]` into `name`; `None` for other names.
pub fn version_base(path: &str) -> Option<&str> {
    let (rest, last) = path.rsplit_once('.')?;
    let is_stamp = |s: &str| {
        s.len() == 16
            && s.as_bytes()[8] == b'T'
            && s.ends_with('Z')
            && s[..8].bytes().all(|b| b.is_ascii_digit())
            && s[9..15].bytes().all(|b| b.is_ascii_digit())
    };
    if is_stamp(last) {
        return Some(rest);
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        let (base, stamp) = rest.rsplit_once('.')?;
        if is_stamp(stamp) {
            return Some(base);
        }
    }
    None
}

/// Cheap: whether every final file is in the archive at its final size.
pub fn sizes_match(ledger: &Ledger, home: &Path) -> bool {
    ledger.final_files().iter().all(|(path, &id)| {
        std::fs::metadata(home.join(path)).is_ok_and(|m| m.len() == ledger.generations[id].len)
    })
}

/// Compares a node's local tree and its archive home with its ledger.
pub fn check_node(ledger: &Ledger, tree: &Path, home: &Path) -> NodeCheck {
    let mut check = NodeCheck::default();
    let local = crate::tree_files(tree);
    let finals = ledger.final_files();
    for (path, &id) in &finals {
        match local.get(path) {
            Some(bytes) if sha256(bytes) == ledger.digest(id) => {}
            _ => check.ledger_mismatches.push(path.clone()),
        }
    }
    for path in local.keys().filter(|p| !finals.contains_key(*p)) {
        check
            .ledger_mismatches
            .push(format!("{path} (not in the ledger)"));
    }
    let archive = crate::tree_files(home);
    for (path, &id) in &finals {
        let generation = &ledger.generations[id];
        match archive.get(path) {
            Some(bytes) if sha256(bytes) == ledger.digest(id) => {
                check.final_files += 1;
                check.final_bytes += generation.len;
            }
            Some(bytes) => check.missing.push(format!(
                "{path}: archive has {} bytes, ledger {} (sha256 differs)",
                bytes.len(),
                generation.len
            )),
            None => check.missing.push(format!("{path}: not in the archive")),
        }
    }
    let mut versions_of: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (path, bytes) in &archive {
        if finals.contains_key(path) || path.starts_with(".logarchive-agent/") {
            continue;
        }
        let Some(base) = version_base(path) else {
            check.unexpected.push(path.clone());
            continue;
        };
        if bytes.is_empty() {
            // A kept empty file: a prefix of every content, and no byte sent twice.
            check.kept_versions += 1;
            continue;
        }
        // Which content that `base` held is this a prefix of? Prefer content that was
        // replaced (expected) over the current content (a duplicate).
        let held = ledger.paths.get(base).cloned().unwrap_or_default();
        let current = finals.get(base).copied();
        let matching: Vec<usize> = held
            .iter()
            .copied()
            .filter(|&id| {
                let generation = &ledger.generations[id];
                bytes.len() as u64 <= generation.len
                    && local
                        .get(&generation.lives_at)
                        .is_some_and(|content| content.starts_with(bytes))
            })
            .collect();
        match matching.iter().find(|&&id| Some(id) != current) {
            Some(&id) => {
                versions_of.entry(id).or_default().push(path.clone());
                check.kept_versions += 1;
                check.kept_version_bytes += bytes.len() as u64;
                let lives_at = &ledger.generations[id].lives_at;
                if lives_at != base
                    && archive
                        .get(lives_at)
                        .is_some_and(|content| content.starts_with(bytes))
                {
                    check.archived_twice += 1;
                    check.archived_twice_bytes += bytes.len() as u64;
                }
            }
            None if !matching.is_empty() => check
                .duplicates
                .push(format!("{path}: a prefix of the current {base}")),
            None => check
                .unexpected
                .push(format!("{path}: not a prefix of anything {base} held")),
        }
    }
    for (id, paths) in versions_of {
        if paths.len() > 1 {
            check.duplicates.push(format!(
                "{}: {} versions of one content ({})",
                ledger.generations[id].lives_at,
                paths.len(),
                paths.join(", ")
            ));
        }
    }
    check
}

/// How one feed's messages ended up.
#[derive(Debug, Default, Clone)]
pub struct FeedCheck {
    pub feed: String,
    pub sent: u64,
    pub stored: u64,
    /// Stored more than once.
    pub duplicated: u64,
    /// Of those, messages the client had to send again (the answer was lost).
    pub duplicated_after_retry: u64,
    /// Not stored, sent while the server was down: from a SIGKILL to the end of the
    /// restart (known from the fault timeline).
    pub lost_while_down: u64,
    /// Not stored, sent while the server was up but at most [`BEFORE_KILL`] before a
    /// SIGKILL: the appender's unwritten interval, or bytes a socket took for a server
    /// about to die.
    pub lost_before_kill: u64,
    /// Not stored, sent while the server's disk was full and the server was killed before
    /// the disk was freed: accepted and held in memory (the appender retries a full disk
    /// every second), so the kill took it. Unacknowledged protocols only.
    pub lost_held_at_kill: u64,
    /// Not stored, sent while the server was up, not near a kill.
    pub lost: Vec<u64>,
    /// Sent again by the client (HTTP retries, RELP resends).
    pub retries: u64,
    /// Refusals the client reported (RELP `rsp 500`).
    pub refused: Vec<String>,
}

/// How long before a kill a lost unacknowledged message is put down to the kill: the
/// appender's flush interval (1 s) and some.
pub const BEFORE_KILL: std::time::Duration = std::time::Duration::from_secs(2);

/// Counts each of `sent`'s markers in every file below `root`; messages missing from the
/// archive are told apart by when they were sent against the server's `kills` (killed,
/// restarted) and `full` (disk filled, freed) windows.
pub fn check_feed(
    sent: &Sent,
    root: &Path,
    kills: &[(std::time::Duration, std::time::Duration)],
    full: &[(std::time::Duration, std::time::Duration)],
) -> FeedCheck {
    let prefix = format!("{}-", sent.feed);
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    for bytes in crate::tree_files(root).values() {
        let text = String::from_utf8_lossy(bytes);
        let mut rest: &str = &text;
        while let Some(at) = rest.find(&prefix) {
            let digits = &rest[at + prefix.len()..];
            let end = digits
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(digits.len());
            if end == 8
                && let Ok(n) = digits[..end].parse::<u64>()
            {
                *seen.entry(n).or_default() += 1;
            }
            rest = &digits[end..];
        }
    }
    let retried: BTreeSet<u64> = sent.retried.iter().copied().collect();
    let mut check = FeedCheck {
        feed: sent.feed.clone(),
        sent: sent.sent_at.len() as u64,
        retries: sent.retries,
        refused: sent.refused.clone(),
        ..FeedCheck::default()
    };
    for (n, at) in sent.sent_at.iter().enumerate() {
        let n = n as u64;
        match seen.get(&n).copied().unwrap_or(0) {
            0 if kills.iter().any(|(from, to)| at >= from && at <= to) => {
                check.lost_while_down += 1
            }
            0 if kills
                .iter()
                .any(|(from, _)| at < from && *from - *at <= BEFORE_KILL) =>
            {
                check.lost_before_kill += 1
            }
            0 if full.iter().any(|(filled, freed)| {
                at >= filled
                    && at <= freed
                    && kills.iter().any(|(kill, _)| kill >= at && kill <= freed)
            }) =>
            {
                check.lost_held_at_kill += 1
            }
            0 => check.lost.push(n),
            1 => check.stored += 1,
            _ => {
                check.stored += 1;
                check.duplicated += 1;
                if retried.contains(&n) {
                    check.duplicated_after_retry += 1;
                }
            }
        }
    }
    debug_assert!(marker(&sent.feed, 0).starts_with(&prefix));
    check
}

/// Differences between two `catalog --json` outputs (one line per entry), by path.
pub fn catalog_differences(before: &str, after: &str) -> Vec<String> {
    let by_path = |text: &str| -> BTreeMap<String, serde_json::Value> {
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|entry| (entry["path"].as_str().unwrap_or_default().to_owned(), entry))
            .collect()
    };
    let (before, after) = (by_path(before), by_path(after));
    let mut differences = Vec::new();
    for (path, entry) in &before {
        match after.get(path) {
            None => differences.push(format!("{path}: in the catalog, not in the reindex")),
            Some(other) if other != entry => {
                let fields: Vec<String> = entry
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(key, value)| other.get(key.as_str()) != Some(value))
                    .map(|(key, value)| format!("{key}: {value} vs {}", other[key.as_str()]))
                    .collect();
                differences.push(format!("{path}: {}", fields.join("; ")));
            }
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        differences.push(format!("{path}: in the reindex, not in the catalog"));
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_are_recognised() {
        assert_eq!(
            version_base("a/app.log.20261122T213501Z"),
            Some("a/app.log")
        );
        assert_eq!(version_base("app.log.20261122T213501Z.2"), Some("app.log"));
        assert_eq!(version_base("app.log.3"), None);
        assert_eq!(version_base("svc.log"), None);
    }
}
