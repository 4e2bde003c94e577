//! What a soak found: the load it held, the faults it survived, what (if anything) was
//! lost, and the markdown summary printed with `--report`.

use std::fmt::Write;
use std::time::Duration;

use super::SoakConfig;
use super::faults::FaultCounts;
use super::node::Ledger;
use super::verify::{FeedCheck, NodeCheck};

#[derive(Debug, Default)]
pub struct SoakOutcome {
    pub config: SoakConfig,
    pub disk_kind: &'static str,
    /// Why the server's disk could not be mounted (no disk-full fault then).
    pub disk_unavailable: Option<String>,
    pub load_time: Duration,
    pub catch_up: Duration,
    pub caught_up: bool,
    pub counts: FaultCounts,
    pub proxy_connections: u64,
    pub proxy_cut_connections: u64,
    pub files_created: u64,
    pub bytes_written: u64,
    pub rotations_by_rename: u64,
    pub copytruncates: u64,
    pub nodes: Vec<(String, NodeCheck)>,
    pub feeds: Vec<FeedCheck>,
    pub visibility_problems: Vec<String>,
    pub server_healthy: bool,
    pub unhealthy_agents: Vec<String>,
    pub server_stopped_cleanly: bool,
    pub catalog_entries: u64,
    /// Times the server logged a failed catalog step (its catalog fell behind).
    pub catalog_fell_behind: u64,
    /// Times it caught the catalog up: after such a failure, or at a start after a kill.
    pub catalog_caught_up: u64,
    /// Differences between the catalog and a fresh reindex.
    pub catalog_differences: Vec<String>,
    pub server_log_tail: String,
}

/// Why an agent's `status --json` is not healthy, if it is not: a backlog, or a last
/// error newer than its last success.
pub fn agent_problem(status: &serde_json::Value) -> Option<String> {
    let backlog: u64 = status["watches"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| w["backlog_files"].as_u64().unwrap_or(0))
        .sum();
    if backlog > 0 {
        return Some(format!("{backlog} files in its backlog"));
    }
    let at = |key: &str| {
        status[key]["at"].as_str().and_then(|text| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
        })
    };
    match (at("last_success"), at("last_error")) {
        (None, _) => Some("no success reported".into()),
        (Some(success), Some(error)) if error > success => Some(format!(
            "last error ({error}: {}) is newer than its last success ({success})",
            status["last_error"]["message"]
        )),
        _ => None,
    }
}

impl SoakOutcome {
    pub fn ledgers_summary(&mut self, ledgers: &[Ledger]) {
        for ledger in ledgers {
            self.files_created += ledger.files_created;
            self.bytes_written += ledger.bytes_written;
            self.rotations_by_rename += ledger.rotations_by_rename;
            self.copytruncates += ledger.copytruncates;
        }
    }

    /// Everything that makes the soak fail; empty when it passed.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.caught_up {
            problems.push(format!(
                "the agents did not catch up within {:?}",
                self.catch_up
            ));
        }
        for (name, check) in &self.nodes {
            for (what, list) in [
                (
                    "local file differs from the ledger",
                    &check.ledger_mismatches,
                ),
                ("missing or different in the archive", &check.missing),
                ("sent twice", &check.duplicates),
                ("unexpected in the archive", &check.unexpected),
            ] {
                for item in list.iter().take(10) {
                    problems.push(format!("{name}: {what}: {item}"));
                }
                if list.len() > 10 {
                    problems.push(format!("{name}: {what}: {} more", list.len() - 10));
                }
            }
        }
        for feed in &self.feeds {
            use super::feeds::{RELP_HOST, TCP_HOST, UDP_HOST};
            // UDP has no acknowledgement and may drop under load (counted); plain TCP loses
            // only what a kill caught (unacknowledged by design); RELP and HTTP, whose
            // clients resend until acknowledged, must lose nothing at all.
            let lost = match feed.feed.as_str() {
                UDP_HOST => 0,
                TCP_HOST => feed.lost.len() as u64,
                _ => {
                    feed.lost.len() as u64
                        + feed.lost_while_down
                        + feed.lost_before_kill
                        + feed.lost_held_at_kill
                }
            };
            if lost > 0 {
                problems.push(format!(
                    "{}: {lost} messages lost (while up, not near a kill: first {:?})",
                    feed.feed,
                    &feed.lost[..feed.lost.len().min(10)]
                ));
            }
            if feed.feed == RELP_HOST {
                for refusal in feed.refused.iter().take(10) {
                    problems.push(format!("{}: refused: {refusal}", feed.feed));
                }
            }
            if feed.duplicated > feed.duplicated_after_retry {
                problems.push(format!(
                    "{}: {} messages stored twice without a retry",
                    feed.feed,
                    feed.duplicated - feed.duplicated_after_retry
                ));
            }
        }
        if self.feeds.iter().any(|f| f.sent == 0) {
            problems.push("a feed client sent nothing".into());
        }
        problems.extend(self.visibility_problems.iter().cloned());
        problems.extend(self.counts.notes.iter().cloned());
        if !self.server_healthy {
            problems.push("the server did not answer /healthz".into());
        }
        problems.extend(self.unhealthy_agents.iter().cloned());
        if !self.server_stopped_cleanly {
            problems.push("the server did not stop cleanly on SIGTERM".into());
        }
        for difference in self.catalog_differences.iter().take(20) {
            problems.push(format!("catalog vs reindex: {difference}"));
        }
        problems
    }

    /// The markdown summary (`soak --report`).
    pub fn markdown(&self) -> String {
        let secs = self.load_time.as_secs_f64().max(1.0);
        let mut out = String::new();
        let c = &self.config;
        let messages: u64 = self.feeds.iter().map(|f| f.sent).sum();
        let _ = writeln!(
            out,
            "### Soak: {} agents, {:.0} s of load, seed {}\n",
            c.agents, secs, c.seed
        );
        let _ = writeln!(out, "| Load held | Total | Per second |\n|---|---:|---:|");
        let _ = writeln!(
            out,
            "| files created (new, rotated, copied) | {} | {:.1} |",
            self.files_created,
            self.files_created as f64 / secs
        );
        let _ = writeln!(
            out,
            "| bytes written by the nodes | {} | {:.0} KiB/s |",
            self.bytes_written,
            self.bytes_written as f64 / secs / 1024.0
        );
        let _ = writeln!(
            out,
            "| rotations by rename / copytruncate | {} / {} | |",
            self.rotations_by_rename, self.copytruncates
        );
        for feed in &self.feeds {
            let _ = writeln!(
                out,
                "| {} messages | {} | {:.1} |",
                feed.feed,
                feed.sent,
                feed.sent as f64 / secs
            );
        }
        let _ = writeln!(
            out,
            "| all feed messages | {messages} | {:.1} |\n",
            messages as f64 / secs
        );
        let f = &self.counts;
        let _ = writeln!(out, "| Faults survived | Count |\n|---|---:|");
        let _ = writeln!(
            out,
            "| agents killed (SIGKILL) and restarted | {} |",
            f.agent_kills
        );
        let _ = writeln!(
            out,
            "| server killed (SIGKILL) and restarted | {} |",
            f.server_kills
        );
        let _ = writeln!(
            out,
            "| proxy: all connections cut / stalls / trickles | {} / {} / {} |",
            f.cuts, f.stalls, f.trickles
        );
        let _ = writeln!(
            out,
            "| proxied connections (of which cut) | {} ({}) |",
            self.proxy_connections, self.proxy_cut_connections
        );
        let _ = writeln!(
            out,
            "| server disk ({}) filled up and freed | {} ({} MiB of filler in all; /healthz ok again at most {:.1} s after freeing) |\n",
            self.disk_kind,
            f.disk_fills,
            f.filled_bytes / (1 << 20),
            f.slowest_recovery.as_secs_f64()
        );
        if let Some(why) = &self.disk_unavailable {
            let _ = writeln!(out, "The disk-full fault did not run: {why}\n");
        }
        let finals: u64 = self.nodes.iter().map(|(_, n)| n.final_files).sum();
        let final_bytes: u64 = self.nodes.iter().map(|(_, n)| n.final_bytes).sum();
        let kept: u64 = self.nodes.iter().map(|(_, n)| n.kept_versions).sum();
        let kept_bytes: u64 = self.nodes.iter().map(|(_, n)| n.kept_version_bytes).sum();
        let twice: u64 = self.nodes.iter().map(|(_, n)| n.archived_twice).sum();
        let twice_bytes: u64 = self.nodes.iter().map(|(_, n)| n.archived_twice_bytes).sum();
        let _ = writeln!(out, "| At the end | |\n|---|---|");
        let _ = writeln!(
            out,
            "| agents caught up after the load | {} in {:.0} s |",
            if self.caught_up { "yes" } else { "NO" },
            self.catch_up.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "| files byte-identical in the archive (SHA-256) | {finals} ({final_bytes} bytes) |"
        );
        let _ = writeln!(
            out,
            "| kept versions (`<name>.<stamp>`, prior remote copies of replaced content) | {kept} ({kept_bytes} bytes) |"
        );
        let _ = writeln!(
            out,
            "| of which also archived in the rotated file (bytes archived twice) | {twice} ({twice_bytes} bytes) |"
        );
        for feed in &self.feeds {
            let _ = writeln!(
                out,
                "| {}: sent / stored / lost while the server was down / lost in the {} s before a kill / lost at a kill while the disk was full (held) / lost while up / stored twice (of which resent) / retries | {} / {} / {} / {} / {} / {} / {} ({}) / {} |",
                feed.feed,
                super::verify::BEFORE_KILL.as_secs(),
                feed.sent,
                feed.stored,
                feed.lost_while_down,
                feed.lost_before_kill,
                feed.lost_held_at_kill,
                feed.lost.len(),
                feed.duplicated,
                feed.duplicated_after_retry,
                feed.retries
            );
        }
        let _ = writeln!(
            out,
            "| catalog entries / differences from a fresh reindex | {} / {} |",
            self.catalog_entries,
            self.catalog_differences.len()
        );
        let _ = writeln!(
            out,
            "| catalog fell behind (a failed catalog step) / caught up (after one, or at a start after a kill) | {} / {} |",
            self.catalog_fell_behind, self.catalog_caught_up
        );
        let _ = writeln!(
            out,
            "| server /healthz, agents healthy | {} , {} of {} |",
            if self.server_healthy { "ok" } else { "NOT OK" },
            self.nodes.len() - self.unhealthy_agents.len().min(self.nodes.len()),
            self.nodes.len()
        );
        let problems = self.problems();
        if problems.is_empty() {
            let _ = writeln!(out, "\nNo problems found.");
        } else {
            let _ = writeln!(out, "\nProblems:\n");
            for problem in problems {
                let _ = writeln!(out, "- {problem}");
            }
        }
        out
    }
}
