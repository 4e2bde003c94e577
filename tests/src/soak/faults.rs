//! The faults of the soak: when they happen (a plan drawn from the seed, spread over the
//! run) and what each does — SIGKILL and restart of an agent or of the server (same
//! ports), the proxy cutting every connection, stalling or trickling, the server's disk
//! filled up and freed — and the listing checks that nothing temporary became visible.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::disk::SmallDisk;
use super::proxy::{NetMode, ProxyState};
use crate::{TestAgent, TestServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    KillAgent,
    KillServer,
    CutConnections,
    Stall,
    Trickle,
    ClearNetwork,
    FillDisk,
    FreeDisk,
}

/// Every fault of a run, by time from the start of the load.
pub struct FaultPlan {
    pub events: Vec<(Duration, Fault)>,
}

impl FaultPlan {
    pub fn new(duration: Duration, seed: u64) -> FaultPlan {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
        let total = duration.as_secs_f64();
        let (first, last) = (total * 0.08, total * 0.9);
        let span = last - first;
        let at = |s: f64| Duration::from_secs_f64(s);
        let mut events = Vec::new();
        // Agents: one SIGKILL every 8 s (short runs) to 20 s (30 minutes).
        let every = (total / 90.0).clamp(8.0, 20.0);
        let mut t = first;
        while t < last {
            events.push((at(t + rng.random_range(0.0..every / 2.0)), Fault::KillAgent));
            t += every;
        }
        // The network: a cut, a stall or a trickle in turn, one every 10 to 30 s.
        let every = (total / 60.0).clamp(10.0, 30.0);
        let length = (every / 2.0).min(15.0);
        let mut t = first;
        let mut turn = 0;
        while t + length < last {
            let start = t + rng.random_range(0.0..every - length);
            match turn % 3 {
                0 => events.push((at(start), Fault::CutConnections)),
                1 => {
                    events.push((at(start), Fault::Stall));
                    events.push((at(start + length), Fault::ClearNetwork));
                }
                _ => {
                    events.push((at(start), Fault::Trickle));
                    events.push((at(start + length), Fault::ClearNetwork));
                }
            }
            turn += 1;
            t += every;
        }
        // The server: one SIGKILL per 400 s (at least one); the disk: full once per 600 s
        // (at least once), for 15 to 60 s; never both at once.
        let kills = ((total / 400.0) as usize).max(1);
        let fills = ((total / 600.0) as usize).max(1);
        let full_for = (total / 8.0).clamp(15.0, 60.0);
        for k in 0..kills {
            events.push((
                at(first + span * (k as f64 + 0.7) / kills as f64),
                Fault::KillServer,
            ));
        }
        for k in 0..fills {
            let start = first + span * (k as f64 + 0.15) / fills as f64;
            events.push((at(start), Fault::FillDisk));
            events.push((at(start + full_for), Fault::FreeDisk));
        }
        events.sort_by_key(|(when, _)| *when);
        FaultPlan { events }
    }
}

/// What was done, for the report.
#[derive(Debug, Default, Clone)]
pub struct FaultCounts {
    pub agent_kills: u64,
    pub server_kills: u64,
    pub cuts: u64,
    pub stalls: u64,
    pub trickles: u64,
    pub disk_fills: u64,
    /// Bytes the filler took, over all fills.
    pub filled_bytes: u64,
    /// The longest time from freeing the disk to `/healthz` ok (the catalog caught up).
    pub slowest_recovery: Duration,
    /// When the disk was full: (filled, freed), since the start.
    pub full_windows: Vec<(Duration, Duration)>,
    full_since: Option<Duration>,
    /// Anything that went wrong while applying a fault.
    pub notes: Vec<String>,
}

pub struct Targets<'a> {
    pub server: &'a mut TestServer,
    pub agents: &'a mut [&'a mut TestAgent],
    pub proxy: &'a ProxyState,
    /// The server's own disk, when it could be mounted.
    pub disk: Option<&'a SmallDisk>,
}

/// Does `fault`; a server kill adds its window (from the kill to the end of the restart)
/// to `crash_windows`.
pub fn apply(
    fault: Fault,
    targets: &mut Targets<'_>,
    counts: &mut FaultCounts,
    rng: &mut StdRng,
    start: Instant,
    crash_windows: &mut Vec<(Duration, Duration)>,
) {
    match fault {
        Fault::KillAgent => {
            let i = rng.random_range(0..targets.agents.len());
            targets.agents[i].kill();
            std::thread::sleep(Duration::from_millis(rng.random_range(0..2000)));
            targets.agents[i].restart();
            counts.agent_kills += 1;
        }
        Fault::KillServer => {
            let from = start.elapsed();
            targets.server.kill();
            std::thread::sleep(Duration::from_millis(rng.random_range(500..3000)));
            targets.server.start();
            crash_windows.push((from, start.elapsed()));
            counts.server_kills += 1;
        }
        Fault::CutConnections => {
            targets.proxy.cut_all();
            counts.cuts += 1;
        }
        Fault::Stall => {
            targets.proxy.set_mode(NetMode::Stall);
            counts.stalls += 1;
        }
        Fault::Trickle => {
            targets.proxy.set_mode(NetMode::Trickle);
            counts.trickles += 1;
        }
        Fault::ClearNetwork => targets.proxy.set_mode(NetMode::Clear),
        Fault::FillDisk => match targets.disk.map(|disk| disk.fill(64 * 1024)) {
            Some(Ok(bytes)) => {
                counts.disk_fills += 1;
                counts.filled_bytes += bytes;
                counts.full_since = Some(start.elapsed());
            }
            Some(Err(err)) => counts.notes.push(format!("cannot fill the disk: {err:#}")),
            None => {}
        },
        Fault::FreeDisk => {
            let Some(disk) = targets.disk else {
                return;
            };
            if let Err(err) = disk.free() {
                counts.notes.push(format!("cannot free the disk: {err:#}"));
            }
            if let Some(from) = counts.full_since.take() {
                counts.full_windows.push((from, start.elapsed()));
            }
            // A catalog write that failed on the full disk makes /healthz answer 503 until
            // the catalog has caught up, a few seconds after the space is back.
            let freed = Instant::now();
            if crate::wait_until(Duration::from_secs(60), || targets.server.healthy()) {
                counts.slowest_recovery = counts.slowest_recovery.max(freed.elapsed());
            } else {
                counts.notes.push(
                    "the server did not answer /healthz ok within 60 s of its disk being freed"
                        .into(),
                );
            }
        }
    }
}

/// Files and folders below `root` on disk: folder (relative, "" for the root) -> names.
fn disk_listing(root: &std::path::Path) -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(rel) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&rel)) else {
            continue;
        };
        let mut names = BTreeSet::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() {
                pending.push(if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                });
            }
            names.insert(name);
        }
        out.push((rel, names));
    }
    out
}

/// Lists every folder of the archive (but the reserved one) over FTP as the admin and
/// compares with the disk, and searches the web UI for temporary names.
pub async fn visible_problems(server: &TestServer, password: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut ftp = match crate::ftp_login(&server.addr(), "admin", password).await {
        Ok(ftp) => ftp,
        Err(err) => return vec![format!("admin FTP login: {err}")],
    };
    let root = server.archive("/");
    for (rel, mut names) in disk_listing(&root) {
        if rel.starts_with(".logarchive") {
            continue;
        }
        if rel.is_empty() {
            names.remove(".logarchive");
        }
        let folder = format!("/{rel}");
        match ftp.nlst(Some(&folder)).await {
            Ok(listed) => {
                let listed: BTreeSet<String> = listed
                    .iter()
                    .map(|n| n.rsplit('/').next().unwrap_or(n).to_owned())
                    .collect();
                for name in &listed {
                    if name == ".logarchive" || name.ends_with(".logarchive-part") {
                        problems.push(format!("FTP lists {folder}/{name}"));
                    }
                }
                if listed != names {
                    problems.push(format!(
                        "FTP listing of {folder} differs from the disk: {:?} vs {:?}",
                        listed.symmetric_difference(&names).collect::<Vec<_>>(),
                        names.len()
                    ));
                }
            }
            Err(err) => problems.push(format!("NLST {folder}: {err}")),
        }
    }
    let _ = ftp.quit().await;
    let client = reqwest::Client::new();
    for query in ["logarchive-part", "partial"] {
        let url = format!(
            "http://127.0.0.1:{}/api/search?q={query}&limit=1000",
            server.web_port
        );
        match client
            .get(&url)
            .basic_auth("admin", Some(password))
            .send()
            .await
        {
            Ok(answer) if answer.status().is_success() => {
                let text = answer.text().await.unwrap_or_default();
                let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let mut paths = Vec::new();
                collect_paths(&value, &mut paths);
                for path in paths {
                    if path.ends_with(".logarchive-part") || path.starts_with("/.logarchive/") {
                        problems.push(format!("web search shows {path}"));
                    }
                }
            }
            Ok(answer) => problems.push(format!("web search {query}: {}", answer.status())),
            Err(err) => problems.push(format!("web search {query}: {err}")),
        }
    }
    problems
}

/// Every `"path"` string in a JSON answer (listings, searches).
pub fn collect_paths(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match value.as_str() {
                    Some(text) if key == "path" => out.push(text.to_owned()),
                    _ => collect_paths(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_paths(v, out)),
        _ => {}
    }
}
