//! An agent that let go of its record's cache (a pass drained after more than a thousand
//! records went through it, so the record was reopened, and rescans answer from the
//! in-memory index) goes on mirroring: growth by APPE, a rotation by rename, a new file,
//! and nothing it had sent is sent again.

use std::io::Write;
use std::time::Duration;

use logarchive_tests::{TestAgent, TestServer, tree_hashes, wait_until};

const PW: &str = "agent-password";

#[test]
fn after_releasing_its_cache_the_agent_mirrors_every_change_once() {
    let server = TestServer::start_with("", &[("idler", PW, &["--perm", "elrwafm"])]);
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    // Two record writes per new file: 600 files pass the reopening threshold (1,000).
    for i in 0..600 {
        let dir = root.join(format!("d{}", i % 6));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}.log")), format!("line {i}\n")).unwrap();
    }
    std::fs::write(root.join("app.log"), b"app start\n").unwrap();
    std::thread::sleep(Duration::from_millis(300)); // let the files settle
    let agent = TestAgent::start(&server, "idler", PW, root, "parallel = 4");
    let mirrored = || {
        let mut remote = tree_hashes(&server.archive("idler"));
        remote.retain(|path, _| !path.starts_with(".logarchive-agent/"));
        remote
    };
    let local = tree_hashes(root);
    assert!(
        wait_until(Duration::from_secs(120), || mirrored() == local),
        "first mirror incomplete; agent log:\n{}",
        agent.stderr()
    );
    assert!(
        wait_until(Duration::from_secs(20), || agent
            .stderr()
            .contains("record reopened to release its cache")),
        "the record was not reopened; agent log:\n{}",
        agent.stderr()
    );
    // Rescans after the reopening find everything unchanged: nothing is sent.
    std::thread::sleep(Duration::from_millis(2500));
    let uploads = |log: &str| log.matches(" uploaded ").count();
    let sent_before = uploads(&agent.stderr());
    assert_eq!(sent_before, 601, "{}", agent.stderr());

    // Growth, a rotation by rename and a new file.
    let mut app = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("app.log"))
        .unwrap();
    app.write_all(b"more app lines\n").unwrap();
    drop(app);
    std::fs::rename(root.join("d0/f0.log"), root.join("d0/f0.log.1")).unwrap();
    std::fs::write(root.join("d5/new.log"), b"new after the reopening\n").unwrap();
    let local = tree_hashes(root);
    assert!(
        wait_until(Duration::from_secs(60), || mirrored() == local),
        "changes not mirrored: {:#?}\nagent log:\n{}",
        mirrored(),
        agent.stderr()
    );
    let log = agent.stderr();
    assert!(
        log.contains("appended"),
        "growth not sent with APPE:\n{log}"
    );
    assert!(wait_until(Duration::from_secs(10), || server
        .stderr()
        .contains(" renamed ")));
    // One whole upload more (the new file): the grown and the renamed ones were not sent
    // again.
    assert_eq!(uploads(&log), sent_before + 1, "{log}");
}
