//! The soak under faults (issue 6): agents, each its own process, id, user and log tree,
//! mirror files that their writers create, grow and rotate (by rename and by copytruncate)
//! through a faulty proxy (cuts, stalls, trickles), while syslog, OTT and telemetry
//! clients (syslog over UDP, TCP and RELP) send numbered messages; agents and the server are killed with SIGKILL and
//! restarted, and the server's own small disk is filled up and freed. At the end every
//! byte written must be in the archive exactly once (the kept versions the agent's
//! contract promises aside), every message accounted for, nothing temporary visible, the
//! catalog equal to a fresh reindex, and everything healthy.
//!
//! `run` is shared by the `soak` program (the long run for docs/BENCHMARKS.md) and the
//! short run in `tests/tests/soak.rs`.

pub mod disk;
pub mod faults;
pub mod feeds;
pub mod node;
pub mod proxy;
pub mod report;
pub mod verify;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::{TestAgent, TestServer, free_port};
use disk::SmallDisk;
use faults::{FaultCounts, FaultPlan};
use feeds::{FeedTargets, Sent};
use node::{Ledger, Node};
use proxy::{NetMode, ProxyState};
pub use report::SoakOutcome;

const PASSWORD: &str = "soak-password-1";

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct SoakConfig {
    /// How long the writers, feeds and faults run (catching up and checks come after).
    pub duration: Duration,
    pub agents: usize,
    pub seed: u64,
    /// Where everything goes (the server's small disk is mounted below it).
    pub dir: PathBuf,
    /// Multiplies the writers' rate (1.0: about 25 KiB/s and 4 operations/s per node).
    pub pace: f64,
    /// Keep the server's disk image (`<dir>/serverfs.img`) for a look afterwards.
    pub keep_disk: bool,
    /// Syslog messages per second over UDP and over TCP (each).
    pub syslog_rate: f64,
    /// OTT and telemetry posts per second (each).
    pub http_rate: f64,
}

impl SoakConfig {
    pub fn new(duration: Duration, agents: usize, seed: u64, dir: PathBuf) -> SoakConfig {
        SoakConfig {
            duration,
            agents,
            seed,
            dir,
            pace: 1.0,
            keep_disk: false,
            syslog_rate: 50.0,
            http_rate: 5.0,
        }
    }
}

/// One agent: its process, its log tree and its login.
struct AgentSlot {
    name: String,
    tree: PathBuf,
    agent: TestAgent,
}

/// Starts the server on its small disk, with users for every agent, the OTT logger and an
/// admin, the syslog, OTT and telemetry feeds, and the passive ports advertised on
/// 127.0.0.2 (where the proxy listens).
fn start_server(
    config: &SoakConfig,
    disk: Option<&SmallDisk>,
    syslog_port: u16,
    relp_port: u16,
) -> TestServer {
    let passive = (config.agents as u16) * 3 + 10;
    let mut server = TestServer::prepare_in(&config.dir, "passive_host = \"127.0.0.2\"", passive);
    if let Some(disk) = disk {
        server.set_data_dir(&disk.mount_point.join("data"));
    }
    let sections = format!(
        "[syslog]\nudp = \"127.0.0.1:{syslog_port}\"\ntcp = \"127.0.0.1:{syslog_port}\"\nrelp = \"127.0.0.1:{relp_port}\"\n[logger]\nenabled = true\n[telemetry]\nenabled = true\n"
    );
    let mut text = std::fs::read_to_string(&server.config).unwrap_or_default();
    text.push_str(&sections);
    std::fs::write(&server.config, text).expect("write server config");
    for i in 0..config.agents {
        let name = node_name(i);
        let home = format!("/nodes/{name}");
        server.add_user(&name, PASSWORD, &["--home", &home, "--perm", "elrwafm"]);
    }
    server.add_user("ott", PASSWORD, &["--home", "/logger", "--perm", "elrw"]);
    server.add_user("admin", PASSWORD, &["--admin", "--home", "/"]);
    server.start();
    server.wait_for_log("syslog relp listener up");
    server
}

fn node_name(i: usize) -> String {
    format!("soak-{:02}", i + 1)
}

fn agent_config(name: &str, proxy_port: u16, tree: &Path) -> String {
    format!(
        "agent_id = \"{name}\"\nstate_dir = \"state\"\n[server]\nhost = \"127.0.0.1\"\nport = {proxy_port}\nuser = \"{name}\"\npassword = \"{PASSWORD}\"\n[upload]\nparallel = 2\nsettle = \"1s\"\nrescan_interval = \"10s\"\nreport_interval = \"10s\"\n[[watch]]\ndir = \"{}\"\nremote = \"/\"\n",
        tree.display()
    )
}

/// Runs the soak and its checks.
pub fn run(config: &SoakConfig) -> anyhow::Result<SoakOutcome> {
    std::fs::create_dir_all(&config.dir)?;
    let start = Instant::now();
    // Room for everything the writers make (about 25 KiB/s per node at pace 1), twice.
    let expected_mib =
        (config.duration.as_secs_f64() * config.pace * 60.0 / 1024.0 * config.agents as f64) as u64;
    // Without root there is no filesystem of our own: the run goes on without the
    // disk-full fault, and the report says why.
    let (disk, disk_unavailable) = match SmallDisk::mount(&config.dir, (expected_mib * 2).max(512))
    {
        Ok(mut disk) => {
            disk.keep_image = config.keep_disk;
            (Some(disk), None)
        }
        Err(err) => (None, Some(format!("{err:#}"))),
    };
    let (syslog_port, relp_port) = (free_port(), free_port());
    let mut server = start_server(config, disk.as_ref(), syslog_port, relp_port);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let proxy_state = Arc::new(ProxyState::default());
    let proxy_port = free_port();
    runtime
        .block_on(async {
            let to = |ip: &str, port: u16| -> SocketAddr {
                format!("{ip}:{port}").parse().expect("socket address")
            };
            proxy::forward(
                to("127.0.0.1", proxy_port),
                to("127.0.0.1", server.ftp_port),
                proxy_state.clone(),
            )
            .await?;
            for port in server.passive.0..=server.passive.1 {
                proxy::forward(
                    to("127.0.0.2", port),
                    to("127.0.0.1", port),
                    proxy_state.clone(),
                )
                .await?;
            }
            anyhow::Ok(())
        })
        .context("start the proxy")?;

    let nodes_dir = config.dir.join("nodes");
    let agents_dir = config.dir.join("agents");
    std::fs::create_dir_all(&agents_dir)?;
    let mut slots = Vec::new();
    let stop_writers = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for i in 0..config.agents {
        let name = node_name(i);
        let tree = nodes_dir.join(&name);
        let node = Node::new(&name, &tree, config.seed.wrapping_add(i as u64))?;
        let agent = TestAgent::start_in(&agents_dir, &agent_config(&name, proxy_port, &tree));
        let (stop, pace) = (stop_writers.clone(), config.pace);
        writers.push(std::thread::spawn(move || node.run(stop, pace)));
        slots.push(AgentSlot { name, tree, agent });
    }

    let stop_feeds = Arc::new(AtomicBool::new(false));
    let targets = Arc::new(FeedTargets {
        syslog_port,
        web_port: server.web_port,
        ott_user: "ott".into(),
        ott_password: PASSWORD.into(),
    });
    let feed_tasks = vec![
        runtime.spawn(feeds::udp_sender(
            syslog_port,
            config.syslog_rate,
            start,
            stop_feeds.clone(),
        )),
        runtime.spawn(feeds::tcp_sender(
            syslog_port,
            config.syslog_rate,
            start,
            stop_feeds.clone(),
        )),
        runtime.spawn(feeds::relp_sender(
            relp_port,
            config.syslog_rate,
            start,
            stop_feeds.clone(),
        )),
        runtime.spawn(feeds::ott_poster(
            targets.clone(),
            config.http_rate,
            start,
            stop_feeds.clone(),
        )),
        runtime.spawn(feeds::telemetry_poster(
            targets.clone(),
            config.http_rate,
            start,
            stop_feeds.clone(),
        )),
    ];

    // The faults, on this thread, until the duration is over.
    let plan = FaultPlan::new(config.duration, config.seed);
    let mut counts = FaultCounts::default();
    let mut crash_windows = Vec::new();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(config.seed ^ 0x5eed);
    let load_start = Instant::now();
    for (at, fault) in plan.events {
        if let Some(wait) = at.checked_sub(load_start.elapsed()) {
            std::thread::sleep(wait);
        }
        let mut agents: Vec<&mut TestAgent> = slots.iter_mut().map(|s| &mut s.agent).collect();
        faults::apply(
            fault,
            &mut faults::Targets {
                server: &mut server,
                agents: &mut agents,
                proxy: &proxy_state,
                disk: disk.as_ref(),
            },
            &mut counts,
            &mut rng,
            start,
            &mut crash_windows,
        );
    }
    if let Some(wait) = config.duration.checked_sub(load_start.elapsed()) {
        std::thread::sleep(wait);
    }
    let load_time = load_start.elapsed();

    // Stop the load, clear the faults, and let the agents catch up.
    stop_writers.store(true, Ordering::SeqCst);
    stop_feeds.store(true, Ordering::SeqCst);
    let mut ledgers: Vec<Ledger> = Vec::new();
    for writer in writers {
        let ledger = writer
            .join()
            .map_err(|_| anyhow::anyhow!("a writer panicked"))?
            .context("a writer failed")?;
        ledgers.push(ledger);
    }
    let mut sent: Vec<Sent> = Vec::new();
    for task in feed_tasks {
        sent.push(runtime.block_on(task)?);
    }
    proxy_state.set_mode(NetMode::Clear);
    if let Some(disk) = &disk {
        disk.free()?;
    }
    for slot in &mut slots {
        if !slot.agent.is_running() {
            slot.agent.restart();
        }
    }
    let catch_up_start = Instant::now();
    let homes: Vec<PathBuf> = slots
        .iter()
        .map(|s| server.archive(&format!("/nodes/{}", s.name)))
        .collect();
    let caught_up = crate::wait_until(Duration::from_secs(900), || {
        std::thread::sleep(Duration::from_secs(2));
        ledgers
            .iter()
            .zip(&homes)
            .all(|(ledger, home)| verify::sizes_match(ledger, home))
    });
    let catch_up = catch_up_start.elapsed();
    // The feeds' appender writes every second.
    std::thread::sleep(Duration::from_secs(3));

    let mut outcome = SoakOutcome {
        config: config.clone(),
        disk_kind: disk.as_ref().map_or("none", |d| d.kind),
        disk_unavailable,
        load_time,
        catch_up,
        caught_up,
        counts,
        proxy_connections: proxy_state.connections.load(Ordering::Relaxed),
        proxy_cut_connections: proxy_state.cut_connections.load(Ordering::Relaxed),
        ..SoakOutcome::default()
    };
    for ((slot, ledger), home) in slots.iter().zip(&ledgers).zip(&homes) {
        outcome.nodes.push((
            slot.name.clone(),
            verify::check_node(ledger, &slot.tree, home),
        ));
    }
    outcome.ledgers_summary(&ledgers);
    let archive = server.archive("/");
    for feed in &sent {
        let root = match feed.feed.as_str() {
            feeds::UDP_HOST | feeds::TCP_HOST | feeds::RELP_HOST => {
                archive.join("syslog").join(&feed.feed)
            }
            "ott" => archive.join("logger"),
            _ => archive.join("telemetry"),
        };
        outcome.feeds.push(verify::check_feed(
            feed,
            &root,
            &crash_windows,
            &outcome.counts.full_windows,
        ));
    }

    // Nothing temporary visible: FTP listings (as admin) and the web search. An agent's
    // health report may be on its way to its temporary name: look twice.
    outcome.visibility_problems = runtime.block_on(faults::visible_problems(&server, PASSWORD));
    if !outcome.visibility_problems.is_empty() {
        std::thread::sleep(Duration::from_secs(3));
        outcome.visibility_problems = runtime.block_on(faults::visible_problems(&server, PASSWORD));
    }

    // Healthy: the server answers /healthz, every agent reports no backlog and no error
    // newer than its last success.
    outcome.server_healthy = server.healthy();
    for slot in &slots {
        match slot.agent.status_json() {
            Ok(status) => {
                if let Some(problem) = report::agent_problem(&status) {
                    outcome
                        .unhealthy_agents
                        .push(format!("{}: {problem}", slot.name));
                }
            }
            Err(err) => outcome
                .unhealthy_agents
                .push(format!("{}: {err:#}", slot.name)),
        }
    }
    for slot in &mut slots {
        slot.agent.kill();
        // The logs outlive the temporary folders, for a look afterwards.
        let _ = std::fs::write(
            config.dir.join(format!("agent-{}.log", slot.name)),
            slot.agent.stderr(),
        );
    }

    // The catalog against a fresh reindex (both need the server stopped).
    outcome.server_stopped_cleanly = server.stop();
    let catalog = server.cli(&["catalog", "--json"], "");
    let reindex = server.cli(&["reindex"], "");
    let reindexed = server.cli(&["catalog", "--json"], "");
    if !catalog.status.success() || !reindex.status.success() || !reindexed.status.success() {
        outcome.catalog_differences.push(format!(
            "catalog/reindex failed: {} {} {}",
            String::from_utf8_lossy(&catalog.stderr),
            String::from_utf8_lossy(&reindex.stderr),
            String::from_utf8_lossy(&reindexed.stderr)
        ));
    }
    outcome.catalog_entries = String::from_utf8_lossy(&catalog.stdout).lines().count() as u64;
    // Every difference is a defect: the server catches its catalog up after a kill and
    // after a failed catalog write (`catalog::recovery`).
    outcome
        .catalog_differences
        .extend(verify::catalog_differences(
            &String::from_utf8_lossy(&catalog.stdout),
            &String::from_utf8_lossy(&reindexed.stdout),
        ));
    let log = server.stderr();
    outcome.catalog_fell_behind = log.matches("the catalog is behind the archive").count() as u64;
    outcome.catalog_caught_up = (log.matches("catalog: caught up with the archive").count()
        + log.matches("catalog caught up with the archive").count())
        as u64;
    outcome.server_log_tail = tail(&server.stderr(), 30);
    let _ = std::fs::write(config.dir.join("server.log"), server.stderr());
    drop(server);
    drop(runtime);
    drop(disk);
    Ok(outcome)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
