//! The soak under faults, short: the same code as `soak --duration 30m` (see
//! `logarchive_tests::soak`), for 100 s with 6 agents, so a 2-core CI machine can hold it
//! beside the rest of the suite. Every fault kind happens at least once: agents and the
//! server killed with SIGKILL and restarted, the proxy cutting, stalling and trickling,
//! the server's disk filled and freed. The disk-full fault needs root (a loop device or
//! tmpfs); without root the rest runs and the test says that fault was left out.

use std::time::Duration;

use logarchive_tests::soak::{self, SoakConfig};

#[test]
fn soak_under_faults_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SoakConfig::new(Duration::from_secs(100), 6, 7, dir.path().to_owned());
    let outcome = soak::run(&config).expect("the soak runs");
    let report = outcome.markdown();
    eprintln!("{report}");
    let problems = outcome.problems();
    assert!(
        problems.is_empty(),
        "{report}\nserver log:\n{}",
        outcome.server_log_tail
    );
    // Every fault kind really happened, and load really flowed.
    let f = &outcome.counts;
    assert!(
        f.agent_kills > 0 && f.server_kills > 0 && f.disk_fills > 0,
        "{report}"
    );
    assert!(f.cuts > 0 && f.stalls > 0 && f.trickles > 0, "{report}");
    assert!(
        outcome.files_created > 100 && outcome.bytes_written > 1 << 20,
        "{report}"
    );
    assert!(outcome.feeds.iter().all(|f| f.stored > 0), "{report}");
}

/// What the soak found, pinned down: an append cut by a dead network (the agent killed
/// while its data connection hung), then a copytruncate before the agent came back. The
/// agent's recovery used to take a new fingerprint from the local file, which now held
/// other content, and appended that content's tail to the old copy: a file of the right
/// size with the wrong bytes. It must be sent whole instead, the old copy kept as a version.
#[test]
fn copytruncate_after_a_cut_append_is_sent_whole() {
    use logarchive_tests::soak::proxy::{self, NetMode, ProxyState};
    use logarchive_tests::{TestAgent, TestServer, free_port, sha256_file, wait_until};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    let base = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::prepare_in(base.path(), "passive_host = \"127.0.0.2\"", 6);
    server.add_user(
        "node",
        "password-1",
        &["--home", "/node", "--perm", "elrwafm"],
    );
    server.start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (control, data) = (
        Arc::new(ProxyState::default()),
        Arc::new(ProxyState::default()),
    );
    let proxy_port = free_port();
    runtime.block_on(async {
        let at = |ip: &str, port: u16| format!("{ip}:{port}").parse().expect("address");
        proxy::forward(
            at("127.0.0.1", proxy_port),
            at("127.0.0.1", server.ftp_port),
            control.clone(),
        )
        .await
        .expect("control proxy");
        for port in server.passive.0..=server.passive.1 {
            proxy::forward(at("127.0.0.2", port), at("127.0.0.1", port), data.clone())
                .await
                .expect("data proxy");
        }
    });
    let tree = base.path().join("logs");
    std::fs::create_dir_all(&tree).expect("log folder");
    let log = tree.join("svc.log");
    let first: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&log, &first).expect("write");
    let mut agent =
        TestAgent::start_to(proxy_port, "node", "password-1", &tree, "/", "parallel = 1");
    let remote = server.archive("/node/svc.log");
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::metadata(&remote)
            .is_ok_and(|m| m.len() == 10_000)),
        "first upload: {}",
        agent.stderr()
    );

    // The data connections hang; the agent starts an append and is killed in it.
    data.set_mode(NetMode::Stall);
    let opened = data.connections.load(Ordering::SeqCst);
    let growth = vec![b'+'; 5_000];
    let mut grown = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open");
    std::io::Write::write_all(&mut grown, &growth).expect("append");
    drop(grown);
    assert!(
        wait_until(Duration::from_secs(30), || data
            .connections
            .load(Ordering::SeqCst)
            > opened),
        "the agent never opened the append's data connection: {}",
        agent.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    agent.kill();

    // copytruncate, and new content longer than what the append was sending.
    std::fs::copy(&log, tree.join("svc.log.1")).expect("copy");
    let truncated = std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("open");
    truncated.set_len(0).expect("truncate");
    drop(truncated);
    let second: Vec<u8> = (0..20_000u32).map(|i| b'A' + (i % 26) as u8).collect();
    std::fs::write(&log, &second).expect("write");
    data.set_mode(NetMode::Clear);
    agent.restart();

    let settled = wait_until(Duration::from_secs(60), || {
        std::fs::metadata(&remote).is_ok_and(|m| m.len() == 20_000)
            && std::fs::metadata(server.archive("/node/svc.log.1")).is_ok_and(|m| m.len() == 15_000)
    });
    assert!(settled, "the agent did not catch up: {}", agent.stderr());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sha256_file(&remote),
        sha256_file(&log),
        "svc.log on the server is not the local svc.log: {}",
        agent.stderr()
    );
    // Every kept version is a prefix of the old content (no glued bytes).
    let old: Vec<u8> = [first, growth].concat();
    for entry in std::fs::read_dir(server.archive("/node"))
        .expect("list")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("svc.log.2") {
            let kept = std::fs::read(entry.path()).expect("read version");
            assert!(
                old.starts_with(&kept),
                "{name} is not a prefix of the old content"
            );
        }
    }
}
