//! Agent benchmarks (issue 3), against one logarchive-server on loopback:
//!
//! 1. **Backlog**: `--small` files of 4 KiB plus `--big` files of 50 MiB, from agent start
//!    to all confirmed, side by side with `lftp -e "mirror -R --parallel=N"` into the same
//!    server (each into its own user's home), for each N in `--parallel`.
//! 2. **Latency**: `--latency-files` files written one by one, `--interval` apart, while
//!    the agent runs with `--settle`: time from a file's close to its final name on the
//!    server, p50 and p99.
//! 3. **Idle**: an agent with `--idle-files` files recorded (sent first, timed), then idle
//!    for `--idle-seconds` with the default 60 s rescan: resident memory and CPU share;
//!    then restarted on the same record and measured again after its first pass; then one
//!    file grows and one is added, and both must arrive.
//!
//! Build and run (release):
//!   cargo build --release --workspace && target/release/bench-agent [--dir /tmp]
//!       [--parallel 2,4] [--small 10000] [--big 20] [--latency-files 500]
//!       [--settle 1s] [--interval 100ms] [--idle-files 100000] [--idle-seconds 130]
//!       [--only backlog|latency|idle] [--storage FILE]
//! `BENCH_AGENT_LOG` sets the agents' log filter (default `warn`; e.g.
//! `warn,logarchive_agent=info,logarchive_agent::mirror=warn` shows passes and reopenings).
//! `--storage FILE` appends FILE (a `[storage]` section, e.g. S3 on the Garage cluster of
//! `scripts/garage.sh`) to the server's config.
//! lftp comes from Debian (`apt-get install lftp`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use logarchive_tests::process::usage;
use logarchive_tests::statistics::percentile;
use logarchive_tests::{TestServer, agent_bin, wait_until};

const PASSWORD: &str = "bench-password";

#[derive(clap::Parser)]
#[command(about = "The agent's backlog, latency and idle benchmarks, beside lftp")]
struct Args {
    /// Where the trees and the server's data go.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
    /// Sessions for the backlog, one round each (e.g. 2,4).
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    parallel: Vec<usize>,
    /// Backlog files of 4 KiB.
    #[arg(long, default_value_t = 10_000)]
    small: usize,
    /// Backlog files of 50 MiB.
    #[arg(long, default_value_t = 20)]
    big: usize,
    /// Files written one by one for the latency benchmark.
    #[arg(long, default_value_t = 500)]
    latency_files: usize,
    /// The agent's settle time in the latency benchmark ("500ms", "2s").
    #[arg(long = "settle", default_value = "1s", value_parser = millis)]
    settle_ms: u64,
    /// Time between two latency files.
    #[arg(long = "interval", default_value = "100ms", value_parser = millis)]
    interval_ms: u64,
    /// Files recorded before the idle measurement.
    #[arg(long, default_value_t = 100_000)]
    idle_files: usize,
    /// Length of each idle window.
    #[arg(long, default_value_t = 130)]
    idle_seconds: u64,
    /// Runs one benchmark only.
    #[arg(long, value_parser = ["backlog", "latency", "idle"])]
    only: Option<String>,
    /// A `[storage]` section appended to the server's config.
    #[arg(long)]
    storage: Option<PathBuf>,
}

fn millis(value: &str) -> Result<u64, String> {
    let parsed = if let Some(ms) = value.strip_suffix("ms") {
        ms.parse().ok()
    } else if let Some(s) = value.strip_suffix('s') {
        s.parse::<u64>().ok().map(|s| s * 1000)
    } else {
        None
    };
    parsed.ok_or_else(|| format!("{value}: write a duration like 500ms or 2s"))
}

/// Incompressible bytes, different for every `seed`.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// `small` files of 4 KiB in folders of 100, and `big` files of 50 MiB.
fn write_backlog(root: &Path, small: usize, big: usize) -> anyhow::Result<u64> {
    let mut total = 0;
    for i in 0..small {
        let dir = root.join(format!("small/d{:03}", i / 100));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("f{i:05}.log")), bytes(i as u64, 4096))?;
        total += 4096;
    }
    let chunk = bytes(7, 1 << 20);
    for i in 0..big {
        let dir = root.join("big");
        std::fs::create_dir_all(&dir)?;
        let mut file = std::fs::File::create(dir.join(format!("b{i:02}.log")))?;
        for n in 0..50u8 {
            use std::io::Write;
            // Each MiB differs, so no two files or blocks are alike.
            let mut block = chunk.clone();
            block[0] = n;
            block[1] = i as u8;
            file.write_all(&block)?;
        }
        total += 50 << 20;
    }
    Ok(total)
}

/// A logarchive-agent process with its own config and state.
struct Agent {
    child: Child,
    dir: tempfile::TempDir,
}

impl Agent {
    fn start(
        base: &Path,
        port: u16,
        user: &str,
        tree: &Path,
        parallel: usize,
        settle: &str,
    ) -> anyhow::Result<Agent> {
        let dir = tempfile::tempdir_in(base)?;
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "agent_id = \"{user}\"\nstate_dir = \"state\"\n[server]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"{user}\"\npassword = \"{PASSWORD}\"\n[upload]\nparallel = {parallel}\nsettle = \"{settle}\"\n[[watch]]\ndir = \"{}\"\nremote = \"/\"\n",
                tree.display()
            ),
        )?;
        let child = Agent::spawn(dir.path())?;
        Ok(Agent { child, dir })
    }

    fn spawn(dir: &Path) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))?;
        Command::new(agent_bin())
            .args(["run", "--config"])
            .arg(dir.join("agent.toml"))
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start logarchive-agent")
    }

    /// Stops the agent and starts it again on the same config and record.
    fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Agent::spawn(self.dir.path())?;
        Ok(())
    }

    /// The backlog in the agent's latest status file, once it has written one.
    fn backlog_files(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.dir.path().join("state/status.json")).ok()?;
        let status: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(
            status["watches"]
                .as_array()?
                .iter()
                .filter_map(|w| w["backlog_files"].as_u64())
                .sum(),
        )
    }

    /// When the agent last wrote its status file (once per pass).
    fn status_updated(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.path().join("state/status.json")).ok()?;
        let status: serde_json::Value = serde_json::from_str(&text).ok()?;
        status["updated"].as_str().map(str::to_owned)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Files and bytes below `root` (hidden names, such as the health report, aside).
fn tree_size(root: &Path) -> (usize, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (files, bytes)
}

/// Files and bytes in `user`'s home (hidden names aside): read from the archive folder, or,
/// when the archive is not on this disk (`--storage`), listed over FTP with lftp.
fn stored_size(args: &Args, server: &TestServer, user: &str) -> (usize, u64) {
    if args.storage.is_none() {
        return tree_size(&server.archive(user));
    }
    let script = format!(
        "open -u {user},{PASSWORD} ftp://{}; find -l /",
        server.addr()
    );
    let out = command_output("lftp", &["-c", &script]);
    let (mut files, mut bytes) = (0, 0);
    for line in out.lines().filter(|l| l.starts_with('-')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(size), Some(path)) = (fields.get(2), fields.last()) else {
            continue;
        };
        if path.split('/').any(|part| part.starts_with('.')) {
            continue;
        }
        files += 1;
        bytes += size.parse::<u64>().unwrap_or(0);
    }
    (files, bytes)
}

/// Removes `user`'s files after a round, when they are on this disk.
fn remove_stored(args: &Args, server: &TestServer, user: &str) -> std::io::Result<()> {
    if args.storage.is_none() {
        std::fs::remove_dir_all(server.archive(user))?;
        return Ok(());
    }
    // In a bucket they stay (the users have no 'd'); each round has users of its own.
    Ok(())
}

/// Whether `user` can log in to the server yet (lftp, one try).
fn can_log_in(server: &TestServer, user: &str) -> bool {
    let script = format!(
        "set net:max-retries 1; set cmd:fail-exit yes; open -u {user},{PASSWORD} ftp://{}; cls /",
        server.addr()
    );
    Command::new("lftp")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn backlog(args: &Args, server: &mut TestServer, base: &Path) -> anyhow::Result<()> {
    let tree = base.join("backlog-tree");
    let total = write_backlog(&tree, args.small, args.big)?;
    let files = args.small + args.big;
    // Old enough to count as settled when the agent starts.
    std::thread::sleep(Duration::from_millis(1100));
    println!(
        "## Backlog: {} files of 4 KiB + {} of 50 MiB ({:.0} MiB), durable server\n",
        args.small,
        args.big,
        total as f64 / (1 << 20) as f64
    );
    println!(
        "| parallel | logarchive-agent (s) | lftp mirror -R (s) | agent / lftp | lftp with ftp:use-allo (s) | agent / that |"
    );
    println!("|---|---|---|---|---|---|");
    for (round, &parallel) in args.parallel.iter().enumerate() {
        let agent_user = format!("agent{round}");
        let lftp_user = format!("lftp{round}");
        server.add_user(&agent_user, PASSWORD, &["--perm", "elrwafm"]);
        server.add_user(&lftp_user, PASSWORD, &["--perm", "elrwafm"]);
        // The server reloads users.toml on its own: both clients start once it has.
        for user in [&agent_user, &lftp_user] {
            if !wait_until(Duration::from_secs(10), || can_log_in(server, user)) {
                bail!("{user} cannot log in");
            }
        }
        // Sync the page cache so neither starts with the other's dirty pages.
        let _ = Command::new("sync").status();

        let started = Instant::now();
        let agent = Agent::start(base, server.ftp_port, &agent_user, &tree, parallel, "1s")?;
        let done = wait_until(Duration::from_secs(3600), || {
            agent.backlog_files() == Some(0)
        });
        let agent_secs = started.elapsed().as_secs_f64();
        drop(agent);
        let stored = stored_size(args, server, &agent_user);
        if !done || stored != (files, total) {
            bail!("agent did not send everything: {stored:?} of ({files}, {total})");
        }
        remove_stored(args, server, &agent_user)?;

        // lftp as it comes (the goal's peer), then with `ftp:use-allo`, which announces each
        // file's size as the agent does: the server then skips the wait at the end of data
        // that tells a finished upload from a killed client's (see ARCHITECTURE.md).
        let lftp_secs = lftp_mirror(
            args,
            server,
            &lftp_user,
            &tree,
            parallel,
            "",
            (files, total),
        )?;
        let allo_secs = lftp_mirror(
            args,
            server,
            &lftp_user,
            &tree,
            parallel,
            "set ftp:use-allo yes; ",
            (files, total),
        )?;
        println!(
            "| {parallel} | {agent_secs:.1} | {lftp_secs:.1} | {:.2}x | {allo_secs:.1} | {:.2}x |",
            agent_secs / lftp_secs,
            agent_secs / allo_secs
        );
    }
    std::fs::remove_dir_all(&tree)?;
    println!();
    Ok(())
}

/// Times `lftp mirror -R` of `tree` into `user`'s home (emptied after the check), with
/// `settings` before it.
fn lftp_mirror(
    args: &Args,
    server: &TestServer,
    user: &str,
    tree: &Path,
    parallel: usize,
    settings: &str,
    expected: (usize, u64),
) -> anyhow::Result<f64> {
    let _ = Command::new("sync").status();
    let started = Instant::now();
    let script = format!(
        "set net:max-retries 2; set cmd:fail-exit yes; {settings}open -u {user},{PASSWORD} ftp://127.0.0.1:{}; mirror -R --parallel={parallel} {} /; quit",
        server.ftp_port,
        tree.display()
    );
    let out = Command::new("lftp").args(["-c", &script]).output()?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("lftp failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stored = stored_size(args, server, user);
    if stored != expected {
        bail!("lftp ({settings}) did not send everything: {stored:?}");
    }
    remove_stored(args, server, user)?;
    Ok(secs)
}

fn latency(args: &Args, server: &mut TestServer, base: &Path) -> anyhow::Result<()> {
    let tree = base.join("latency-tree");
    std::fs::create_dir_all(&tree)?;
    server.add_user("latency", PASSWORD, &["--perm", "elrwafm"]);
    let settle = format!("{}ms", args.settle_ms);
    let agent = Agent::start(base, server.ftp_port, "latency", &tree, 2, &settle)?;
    wait_until(Duration::from_secs(30), || agent.backlog_files().is_some());
    let stored = server.archive("latency");
    let mut closed: HashMap<String, Instant> = HashMap::new();
    let mut arrived: HashMap<String, Duration> = HashMap::new();
    let next_write = |i: usize| Duration::from_millis(args.interval_ms * i as u64);
    let started = Instant::now();
    let mut written = 0;
    while arrived.len() < args.latency_files {
        if written < args.latency_files && started.elapsed() >= next_write(written) {
            let name = format!("file{written:04}.log");
            std::fs::write(tree.join(&name), bytes(written as u64, 2048))?;
            closed.insert(name, Instant::now());
            written += 1;
        }
        for (name, at) in &closed {
            if !arrived.contains_key(name)
                && std::fs::metadata(stored.join(name)).is_ok_and(|m| m.len() == 2048)
            {
                arrived.insert(name.clone(), at.elapsed());
            }
        }
        if started.elapsed() > next_write(args.latency_files) + Duration::from_secs(120) {
            bail!(
                "only {} of {} files arrived: {}",
                arrived.len(),
                args.latency_files,
                agent.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut ms: Vec<f64> = arrived.values().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "## Latency: {} files of 2 KiB, one every {} ms, settle {} ms (goal p50 <= settle + 250 ms)\n",
        args.latency_files, args.interval_ms, args.settle_ms
    );
    println!("| p50 | p99 | max | p50 - settle |");
    println!("|---|---|---|---|");
    println!(
        "| {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |\n",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or_default(),
        percentile(&ms, 0.5) - args.settle_ms as f64
    );
    drop(agent);
    std::fs::remove_dir_all(&tree)?;
    Ok(())
}

fn idle(args: &Args, server: &mut TestServer, base: &Path) -> anyhow::Result<()> {
    let tree = base.join("idle-tree");
    for i in 0..args.idle_files {
        let dir = tree.join(format!("d{:04}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        std::fs::write(dir.join(format!("f{i:06}.log")), format!("line {i}\n"))?;
    }
    std::thread::sleep(Duration::from_millis(1100));
    server.add_user("idle", PASSWORD, &["--perm", "elrwafm"]);
    let started = Instant::now();
    let agent = Agent::start(base, server.ftp_port, "idle", &tree, 8, "1s")?;
    let sent = wait_until(Duration::from_secs(7200), || {
        agent.backlog_files() == Some(0)
    });
    let send_secs = started.elapsed().as_secs_f64();
    if !sent {
        bail!("the idle tree was not sent: {}", agent.stderr());
    }
    let peak_sending = usage(agent.pid())?.peak_rss_kib;
    // Let the first pass's buffers settle, then measure a quiet window with rescans.
    std::thread::sleep(Duration::from_secs(5));
    let cpu_before = usage(agent.pid())?.cpu;
    let window_started = Instant::now();
    let mut rss_max = 0;
    while window_started.elapsed() < Duration::from_secs(args.idle_seconds) {
        let rss = usage(agent.pid())?.rss_kib;
        rss_max = rss_max.max(rss);
        std::thread::sleep(Duration::from_millis(500));
    }
    let end = usage(agent.pid())?;
    let rss_end = end.rss_kib;
    let cpu_seconds = (end.cpu - cpu_before).as_secs_f64();
    let window = window_started.elapsed().as_secs_f64();
    println!(
        "## Idle: {} files recorded (sent in {send_secs:.0} s, {:.0} files/s, 8 sessions, durable server)\n",
        args.idle_files,
        args.idle_files as f64 / send_secs
    );
    println!(
        "| window | rescans in window | RSS at end | max RSS in window | peak RSS while sending | CPU in window | goal |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {window:.0} s, after sending | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} % of a core | <= 25 MB (23.8 MiB), < 1 % |",
        (window / 60.0).floor(),
        rss_end as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        peak_sending as f64 / 1024.0,
        cpu_seconds / window * 100.0
    );
    // The same record, freshly started: the steady state without the first backlog's
    // history.
    // Its first pass reads every record once (and is not idle): the window starts after it.
    let mut restarted = agent;
    let before = restarted.status_updated();
    restarted.restart()?;
    if !wait_until(Duration::from_secs(600), || {
        restarted.status_updated() != before
    }) {
        bail!(
            "the restarted agent did not finish a pass: {}",
            restarted.stderr()
        );
    }
    std::thread::sleep(Duration::from_secs(5));
    let cpu_before = usage(restarted.pid())?.cpu;
    let window_started = Instant::now();
    let mut rss_max = 0;
    while window_started.elapsed() < Duration::from_secs(args.idle_seconds) {
        let rss = usage(restarted.pid())?.rss_kib;
        rss_max = rss_max.max(rss);
        std::thread::sleep(Duration::from_millis(500));
    }
    let end = usage(restarted.pid())?;
    let rss_end = end.rss_kib;
    let window = window_started.elapsed().as_secs_f64();
    println!(
        "| {window:.0} s, restarted agent | {} | {:.1} MiB | {:.1} MiB | - | {:.2} % of a core | <= 25 MB (23.8 MiB), < 1 % |\n",
        (window / 60.0).floor(),
        rss_end as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        (end.cpu - cpu_before).as_secs_f64() / window * 100.0
    );
    if args.storage.is_none() {
        idle_agent_still_mirrors(server, &tree, &restarted)?;
    }
    drop(restarted);
    std::fs::remove_dir_all(&tree)?;
    Ok(())
}

/// After the idle windows (and the record's reopening), one file grows and one is new: both
/// must arrive.
fn idle_agent_still_mirrors(server: &TestServer, tree: &Path, agent: &Agent) -> anyhow::Result<()> {
    let grown = tree.join("d0000/f000000.log");
    let mut file = std::fs::OpenOptions::new().append(true).open(&grown)?;
    std::io::Write::write_all(&mut file, b"appended while idle\n")?;
    drop(file);
    let added = tree.join("d0999/added-while-idle.log");
    std::fs::write(&added, b"new while idle\n")?;
    let home = server.archive("idle");
    let arrived = |local: &Path, remote: &str| {
        std::fs::metadata(local).ok().map(|m| m.len())
            == std::fs::metadata(home.join(remote)).ok().map(|m| m.len())
    };
    let started = Instant::now();
    if !wait_until(Duration::from_secs(60), || {
        arrived(&grown, "d0000/f000000.log") && arrived(&added, "d0999/added-while-idle.log")
    }) {
        bail!("the idle agent did not send a change: {}", agent.stderr());
    }
    println!(
        "After the windows, one file appended and one added arrived in {:.1} s (settle 1 s).\n",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let base = tempfile::tempdir_in(&args.dir)?;
    let mut server = TestServer::prepare_in(base.path(), "", 100);
    let mut storage = "fs".to_owned();
    if let Some(file) = &args.storage {
        let section = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let mut config = std::fs::read_to_string(&server.config)?;
        config.push_str(&section);
        std::fs::write(&server.config, config)?;
        storage = format!("[storage] from {}", file.display());
    }
    server.start();
    let when = time_now();
    println!(
        "# bench-agent, {when}, data in {}, storage {storage} (logarchive-server and agent: release build)\n",
        args.dir.display()
    );
    let wanted = |name: &str| args.only.as_deref().is_none_or(|only| only == name);
    if wanted("backlog") {
        backlog(&args, &mut server, base.path())?;
    }
    if wanted("latency") {
        latency(&args, &mut server, base.path())?;
    }
    if wanted("idle") {
        idle(&args, &mut server, base.path())?;
    }
    Ok(())
}

fn time_now() -> String {
    command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
        .trim()
        .to_owned()
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}
