//! An agent that let go of its record's cache (a pass drained after more than a thousand
//! records went through it, so the record was reopened, and rescans answer from the
//! in-memory index), or that went on in a fresh process after a large backlog, goes on
//! mirroring: growth by APPE, a rotation by rename, a new file, and nothing it had sent is
//! sent again.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use logarchive_tests::{TestAgent, TestServer, tree_hashes, wait_until};

const PW: &str = "agent-password";
const IDLER: &str = "idler";

/// `count` small files in six folders, and `app.log`; then lets them settle.
fn write_files(root: &Path, count: usize) {
    for i in 0..count {
        let dir = root.join(format!("d{}", i % 6));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}.log")), format!("line {i}\n")).unwrap();
    }
    std::fs::write(root.join("app.log"), b"app start\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
}

/// The server's copy of the idler's home (path -> sha256), its health report aside.
fn mirrored(server: &TestServer) -> BTreeMap<String, String> {
    let mut remote = tree_hashes(&server.archive(IDLER));
    remote.retain(|path, _| !path.starts_with(".logarchive-agent/"));
    remote
}

/// A server, a tree of `count` new files (see `write_files`) and an agent with `extra` in
/// `[upload]`, once the agent has mirrored the tree.
fn mirror_new_files(count: usize, extra: &str) -> (TestServer, tempfile::TempDir, TestAgent) {
    let server = TestServer::start_with("", &[(IDLER, PW, &["--perm", "elrwafm"])]);
    let tree = tempfile::tempdir().unwrap();
    write_files(tree.path(), count);
    let agent = TestAgent::start(&server, IDLER, PW, tree.path(), extra);
    let local = tree_hashes(tree.path());
    assert!(
        wait_until(Duration::from_secs(120), || mirrored(&server) == local),
        "first mirror incomplete; agent log:\n{}",
        agent.stderr()
    );
    (server, tree, agent)
}

#[test]
fn after_releasing_its_cache_the_agent_mirrors_every_change_once() {
    // At least one record write per new file: 1,100 files pass the reopening threshold
    // (1,000 records read or written).
    let (server, tree, agent) = mirror_new_files(1_100, "parallel = 4");
    let root = tree.path();
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
    assert_eq!(sent_before, 1_101, "{}", agent.stderr());

    mirror_changes_once(&server, &agent, root, sent_before);
}

/// Growth, a rotation by rename and a new file: all mirrored, and only the new file is
/// sent whole (`sent_before` whole uploads so far).
fn mirror_changes_once(server: &TestServer, agent: &TestAgent, root: &Path, sent_before: usize) {
    let uploads = |log: &str| log.matches(" uploaded ").count();
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
        wait_until(Duration::from_secs(60), || mirrored(server) == local),
        "changes not mirrored: {:#?}\nagent log:\n{}",
        mirrored(server),
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

#[test]
fn after_a_large_backlog_the_agent_goes_on_in_a_fresh_process_and_sends_nothing_twice() {
    let (server, tree, agent) = mirror_new_files(400, "parallel = 4\nfresh_start_after = 300");
    let root = tree.path();
    let pid = agent.pid().unwrap();
    // The same process (id, program), started afresh: it logs its start a second time.
    assert!(
        wait_until(Duration::from_secs(20), || agent
            .stderr()
            .matches("agent started")
            .count()
            == 2),
        "no fresh start; agent log:\n{}",
        agent.stderr()
    );
    assert!(agent.stderr().contains("continuing in a fresh process"));
    assert_eq!(agent.pid(), Some(pid));
    let program = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        program.ends_with("logarchive-agent"),
        "{}",
        program.display()
    );
    // The fresh process's first pass finds everything sent.
    std::thread::sleep(Duration::from_millis(2500));
    let sent_before = agent.stderr().matches(" uploaded ").count();
    assert_eq!(sent_before, 401, "{}", agent.stderr());
    mirror_changes_once(&server, &agent, root, sent_before);
}
