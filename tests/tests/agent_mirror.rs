//! The agent mirrors a tree into the server: layout and bytes identical, growth by APPE,
//! rotation by copytruncate and by rename with nothing lost, no temporary names visible,
//! and a restart after kill -9 sends nothing twice.

use std::io::Write;
use std::time::Duration;

use logarchive_tests::process::usage;
use logarchive_tests::{TestAgent, TestServer, on_s3, tree_hashes, wait_until, write_tls_files};

const PW: &str = "agent-password";

fn write(path: &std::path::Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn append(path: &std::path::Path, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

/// Waits until the server's copy of the user's home satisfies `check` (path -> sha256).
fn wait_for_mirror(
    server: &TestServer,
    agent: &TestAgent,
    user: &str,
    check: impl Fn(&Tree) -> bool,
) -> Tree {
    wait_for_tree(|| server.archived_hashes(user), agent, check)
}

/// Waits until the server's copy of the user's home equals `local`.
fn wait_for_copy(server: &TestServer, agent: &TestAgent, user: &str, local: &Tree) -> Tree {
    wait_for_same_tree(|| server.archived_hashes(user), agent, local)
}

type Tree = std::collections::BTreeMap<String, String>;

/// Waits until the files `stored` gives (path -> sha256; the agent's own health report
/// folder aside) satisfy `check`.
fn wait_for_tree(
    stored: impl Fn() -> Tree,
    agent: &TestAgent,
    check: impl Fn(&Tree) -> bool,
) -> Tree {
    await_tree(stored, agent, check, |remote| format!("{remote:#?}"))
}

/// Waits until the files `stored` gives equal `expected`; a failure names the files
/// missing, extra and different rather than the whole tree.
fn wait_for_same_tree(stored: impl Fn() -> Tree, agent: &TestAgent, expected: &Tree) -> Tree {
    await_tree(
        stored,
        agent,
        |remote| remote == expected,
        |remote| {
            let missing: Vec<_> = expected
                .keys()
                .filter(|k| !remote.contains_key(*k))
                .collect();
            let extra: Vec<_> = remote
                .keys()
                .filter(|k| !expected.contains_key(*k))
                .collect();
            let different: Vec<_> = expected
                .iter()
                .filter(|(k, hash)| remote.get(*k).is_some_and(|h| h != *hash))
                .map(|(k, _)| k)
                .collect();
            format!(
                "{} of {} files equal; missing {missing:?}; extra {extra:?}; different {different:?}",
                expected.len() - missing.len() - different.len(),
                expected.len()
            )
        },
    )
}

fn await_tree(
    stored: impl Fn() -> Tree,
    agent: &TestAgent,
    check: impl Fn(&Tree) -> bool,
    report: impl Fn(&Tree) -> String,
) -> Tree {
    let mirrored = || {
        let mut remote = stored();
        remote.retain(|path, _| !path.starts_with(".logarchive-agent/"));
        remote
    };
    // Each file costs a dozen S3 requests on the debug-built cluster: more time there.
    let patience = Duration::from_secs(if on_s3() { 240 } else { 60 });
    let done = wait_until(patience, || check(&mirrored()));
    let remote = mirrored();
    assert!(
        done,
        "mirror incomplete: {}\nagent log:\n{}",
        report(&remote),
        agent.stderr()
    );
    remote
}

/// The nested sample tree both mirror tests start from.
fn write_sample_tree(root: &std::path::Path) {
    write(
        &root.join("Logs/PWS/20240723/PWS_UI_1.txt"),
        b"first line\n",
    );
    write(
        &root.join("Logs/PWS/20240723/binary.bin"),
        &(0..=255u8).cycle().take(300_000).collect::<Vec<u8>>(),
    );
}

#[test]
fn mirrors_a_tree_with_growth_and_rotations() {
    let server = TestServer::start_with("", &[("node01", PW, &["--perm", "elrwafm"])]);
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    write_sample_tree(root);
    write(&root.join("app.log"), b"app start\n");
    write(&root.join("copy.log"), b"truncate me\n");
    write(&root.join("copied.log"), b"copytruncate me\n");
    write(&root.join("copied2.log"), b"copytruncate me too\n");
    let mut agent = TestAgent::start(&server, "node01", PW, root, "");

    // 1. The nested tree arrives byte-identical with the same layout.
    let local = tree_hashes(root);
    wait_for_copy(&server, &agent, "node01", &local);

    // 2. Growth is appended (the server logs APPE uploads as mode=Append).
    append(&root.join("app.log"), b"more app lines\n");
    let local = tree_hashes(root);
    wait_for_copy(&server, &agent, "node01", &local);
    // An append is written in place, so its bytes can be seen a moment before the server
    // logs the finished transfer.
    assert!(
        wait_until(Duration::from_secs(10), || server
            .stderr()
            .contains("mode=Append")),
        "growth was not sent with APPE"
    );

    // 3. Truncation (a rewrite in place): the old content is kept as a version, the new
    //    content arrives.
    let old_copy = std::fs::read(root.join("copy.log")).unwrap();
    std::fs::write(root.join("copy.log"), b"after truncation\n").unwrap();
    let local = tree_hashes(root);
    let remote = wait_for_mirror(&server, &agent, "node01", |remote| {
        remote.get("copy.log") == local.get("copy.log")
            && remote.keys().any(|k| k.starts_with("copy.log.2"))
    });
    let version = remote.keys().find(|k| k.starts_with("copy.log.2")).unwrap();
    assert_eq!(
        server.archived(&format!("node01/{version}")).unwrap(),
        old_copy
    );

    // 3b. copytruncate, the copy seen first (copied.log) and the truncated file seen first
    //     (copied2.log, its copy written last): the server's copy is renamed to the copy's
    //     name, nothing is kept as a version and nothing is sent twice.
    let old_copied = std::fs::read(root.join("copied.log")).unwrap();
    std::fs::copy(root.join("copied.log"), root.join("copied.log.1")).unwrap();
    std::fs::write(root.join("copied.log"), b"after copytruncate\n").unwrap();
    let old_copied2 = std::fs::read(root.join("copied2.log")).unwrap();
    std::fs::write(root.join("copied2.log"), b"").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(root.join("copied2.log-20261123"), &old_copied2).unwrap();
    let local = tree_hashes(root);
    let remote = wait_for_mirror(&server, &agent, "node01", |remote| {
        [
            "copied.log",
            "copied.log.1",
            "copied2.log",
            "copied2.log-20261123",
        ]
        .iter()
        .all(|name| remote.get(*name) == local.get(*name))
    });
    assert_eq!(server.archived("node01/copied.log.1").unwrap(), old_copied);
    assert!(
        !remote
            .keys()
            .any(|k| k.starts_with("copied.log.2") || k.starts_with("copied2.log.2")),
        "a copytruncate kept a version: {:?}\n{}",
        remote.keys().collect::<Vec<_>>(),
        agent.stderr()
    );
    let log = server.stderr();
    for (from, to) in [
        ("copied.log", "copied.log.1"),
        ("copied2.log", "copied2.log-20261123"),
    ] {
        assert!(
            log.contains(&format!("from=/node01/{from} to=/node01/{to}")),
            "{from} was not renamed to {to} on the server:\n{}",
            agent.stderr()
        );
    }

    // 4. Rotation by rename: app.log -> app.log.1 is renamed on the server, a new app.log
    //    arrives; nothing is lost.
    let rotated = std::fs::read(root.join("app.log")).unwrap();
    std::fs::rename(root.join("app.log"), root.join("app.log.1")).unwrap();
    write(&root.join("app.log"), b"new app log\n");
    let remote = wait_for_mirror(&server, &agent, "node01", |remote| {
        remote.get("app.log.1").is_some()
            && remote.get("app.log") == tree_hashes(root).get("app.log")
    });
    assert_eq!(server.archived("node01/app.log.1").unwrap(), rotated);
    assert!(
        wait_until(Duration::from_secs(10), || server
            .stderr()
            .contains(" renamed ")),
        "the rotation was not a server-side rename"
    );
    assert!(
        !remote.keys().any(|k| k.contains("logarchive-part")),
        "a temporary name is visible"
    );

    // The health report: in a hidden folder of the home, without config or password.
    let health = "node01/.logarchive-agent/status.json";
    assert!(
        wait_until(Duration::from_secs(20), || server
            .archived(health)
            .is_some()),
        "{}",
        agent.stderr()
    );
    let report: serde_json::Value =
        serde_json::from_slice(&server.archived(health).unwrap()).unwrap();
    assert_eq!(report["agent_id"], "test-agent");
    assert!(
        report["version"].is_string()
            && report["host"].is_string()
            && report["backlog_files"].is_u64()
    );
    let text = String::from_utf8(server.archived(health).unwrap()).unwrap();
    assert!(!text.contains(PW) && !text.contains("password"), "{text}");

    // 5. kill -9 and restart: nothing is sent again.
    agent.kill();
    // Uploads of mirrored files (the health report is refreshed on its own schedule).
    let uploads = |log: String| {
        log.lines()
            .filter(|l| l.contains(" upload ") && !l.contains(".logarchive-agent"))
            .count()
    };
    let uploads_before = uploads(server.stderr());
    agent.restart();
    write(&root.join("after-restart.log"), b"late\n");
    let local = tree_hashes(root);
    wait_for_mirror(&server, &agent, "node01", |remote| {
        local.iter().all(|(k, v)| remote.get(k) == Some(v))
    });
    let uploads_after = uploads(server.stderr());
    assert_eq!(
        uploads_after,
        uploads_before + 1,
        "a restart re-sent confirmed files"
    );
}

/// `logarchive-agent status --json` while the agent runs.
fn status(agent: &TestAgent) -> serde_json::Value {
    let out = std::process::Command::new(logarchive_tests::agent_bin())
        .args(["status", "--json", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    // Null until the running agent has written its first report.
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn refusals_are_reported_and_retried_slowly_and_outages_only_grow_the_backlog() {
    let mut server = TestServer::start_with("", &[("reader", PW, &["--perm", "elr"])]);
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    write(&root.join("a.log"), b"needs w\n");
    let agent = TestAgent::start(&server, "reader", PW, root, "");

    // Without 'w' the upload is refused: status says so, with the backlog...
    let reported = wait_until(Duration::from_secs(30), || {
        let report = status(&agent);
        report["watches"][0]["backlog_files"] == 1
            && report["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("550"))
    });
    assert!(reported, "{:#}\n{}", status(&agent), agent.stderr());
    // ...and the agent neither hammers the server (retries back off from 2 s) nor spins
    // between retries (a refused file once made every pass start the next at once: half
    // a second of CPU in these 3 s, against 10 ms now).
    let cpu = || usage(agent.pid().unwrap()).unwrap().cpu;
    let (before, cpu_before) = (server.stderr().matches("refused: no 'w'").count(), cpu());
    std::thread::sleep(Duration::from_secs(3));
    let refusals = server.stderr().matches("refused: no 'w'").count() - before;
    assert!(refusals <= 2, "{refusals} refusals in 3 s");
    let busy = cpu() - cpu_before;
    assert!(
        busy < Duration::from_millis(250),
        "the agent used {busy:?} of CPU in 3 s"
    );

    // Once permitted, the file arrives.
    // The agent needs w (store) and f (rename its temporary name into place).
    let out = server.cli(&["user", "set", "reader", "--perm", "elrwfm"], "");
    assert!(out.status.success());
    wait_for_mirror(&server, &agent, "reader", |remote| {
        remote.contains_key("a.log")
    });

    // Server down: new files wait; server back: the backlog drains.
    assert!(server.stop());
    write(&root.join("during-outage-1.log"), b"one\n");
    write(&root.join("deep/during-outage-2.log"), b"two\n");
    let waiting = wait_until(Duration::from_secs(20), || {
        status(&agent)["watches"][0]["backlog_files"] == 2
    });
    assert!(waiting, "{:#}", status(&agent));
    server.start();
    let local = tree_hashes(root);
    wait_for_copy(&server, &agent, "reader", &local);
}

#[test]
fn kill_9_at_random_moments_sends_every_file_exactly_once() {
    // Thousands of files, so the kills land in every phase of the mirror.
    let server = TestServer::start_with("", &[("crashy", PW, &["--perm", "elrwafm"])]);
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    let files = 2000;
    for i in 0..files {
        let size = 500 + (i * 7919) % 3000;
        let byte = (i % 251) as u8;
        write(
            &root.join(format!("d{}/f{i}.log", i % 20)),
            &vec![byte; size],
        );
    }
    // A few larger files, so some kills land in the middle of a transfer.
    for i in 0..3 {
        write(&root.join(format!("big/b{i}.bin")), &vec![i as u8; 3 << 20]);
    }
    std::thread::sleep(Duration::from_millis(300)); // let the files settle
    let mut agent = TestAgent::start(
        &server,
        "crashy",
        PW,
        root,
        // Bounded passes: a kill lands in the first pass or in a later one.
        "parallel = 4\nmax_rate = \"20MiB/s\"\nfiles_per_pass = 300",
    );
    for round in 0..10u64 {
        std::thread::sleep(Duration::from_millis(150 + (round * 7919) % 450));
        agent.kill();
        agent.restart();
    }
    let local = tree_hashes(root);
    let remote = wait_for_copy(&server, &agent, "crashy", &local);
    assert!(!remote.keys().any(|k| k.contains("logarchive-part")));
    // Exactly once: every final name was written (renamed into place) one time. The log
    // line follows the rename on disk by a moment: wait for all of them first.
    let placed = |log: &str, name: &str| times_placed(log, "crashy", name);
    assert!(wait_until(Duration::from_secs(10), || {
        let log = server.stderr();
        local.keys().all(|name| placed(&log, name) >= 1)
    }));
    let log = server.stderr();
    for name in local.keys() {
        let times = placed(&log, name);
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(name.as_str())).collect();
        assert_eq!(
            times, 1,
            "{name} was put in place {times} times: {lines:#?}"
        );
    }
    // Off a terminal, a large backlog is announced and its passes summed up in the log.
    let agent_log = agent.stderr();
    assert!(agent_log.contains("sending a backlog of "), "{agent_log}");
    assert!(agent_log.contains("backlog done"), "{agent_log}");
    assert!(
        agent_log.contains("a pass of the oldest 300 of "),
        "{agent_log}"
    );
}

#[test]
fn sighup_reloads_a_good_config_and_keeps_running_on_a_bad_one() {
    let server = TestServer::start_with("", &[("hup", PW, &["--perm", "elrwafm"])]);
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    write(&first.path().join("one.log"), b"one\n");
    write(&second.path().join("two.log"), b"two\n");
    let mut agent = TestAgent::start(&server, "hup", PW, first.path(), "");
    wait_for_mirror(&server, &agent, "hup", |remote| {
        remote.contains_key("one.log")
    });

    // A broken config: reported, the agent goes on.
    let good = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(&agent.config, format!("{good}\nnonsense = 1\n")).unwrap();
    agent.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || agent
        .stderr()
        .contains("not reloaded")));
    assert!(agent.is_running());

    // A good config with a second watch: its files arrive.
    let extra = format!(
        "\n[[watch]]\ndir = \"{}\"\nremote = \"/second\"\n",
        second.path().display()
    );
    let reconfigured = good.replace("remote = \"/\"", "remote = \"/first\"") + &extra;
    std::fs::write(&agent.config, reconfigured).unwrap();
    agent.signal("HUP");
    wait_for_mirror(&server, &agent, "hup", |remote| {
        remote.contains_key("second/two.log") && remote.contains_key("first/one.log")
    });
    assert!(agent.is_running());
}

/// The same mirror against a standard FTP server (vsftpd, anonymous uploads).
#[test]
fn mirrors_into_vsftpd_too() {
    let vsftpd = logarchive_tests::Vsftpd::start(&std::env::temp_dir(), 20).expect("vsftpd");
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    write_sample_tree(root);
    write(&root.join("app.log"), b"start\n");
    let agent = TestAgent::start_to(vsftpd.port, "anonymous", "agent@", root, "/upload", "");
    let stored = vsftpd.root.join("upload");
    let local = tree_hashes(root);
    wait_for_same_tree(|| tree_hashes(&stored), &agent, &local);
    // Growth by APPE, and a rewrite that keeps the old copy as a version.
    append(&root.join("app.log"), b"more\n");
    let local = tree_hashes(root);
    wait_for_same_tree(|| tree_hashes(&stored), &agent, &local);
    let old = std::fs::read(root.join("Logs/PWS/20240723/PWS_UI_1.txt")).unwrap();
    std::fs::write(root.join("Logs/PWS/20240723/PWS_UI_1.txt"), b"rewritten\n").unwrap();
    let versioned = wait_until(Duration::from_secs(60), || {
        std::fs::read_dir(stored.join("Logs/PWS/20240723"))
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with("PWS_UI_1.txt.2")
                    })
                    .any(|e| std::fs::read(e.path()).ok() == Some(old.clone()))
            })
            .unwrap_or(false)
    });
    assert!(
        versioned,
        "no version kept: {:#?}\n{}",
        tree_hashes(&stored),
        agent.stderr()
    );
    // The version is made just before the new copy is renamed into place.
    let final_name = stored.join("Logs/PWS/20240723/PWS_UI_1.txt");
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read(&final_name).ok().as_deref() == Some(b"rewritten\n")
        }),
        "{:?}",
        std::fs::read(&final_name)
    );
    assert!(
        !tree_hashes(&stored)
            .keys()
            .any(|k| k.contains("logarchive-part"))
    );
}

#[test]
fn server_killed_during_uploads_loses_nothing_and_sends_nothing_twice() {
    let mut server = TestServer::start_with("", &[("survivor", PW, &["--perm", "elrwafm"])]);
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    for i in 0..300 {
        write(
            &root.join(format!("s{}/f{i}.log", i % 10)),
            &vec![(i % 251) as u8; 1000 + i * 13],
        );
    }
    for i in 0..2 {
        write(&root.join(format!("big/b{i}.bin")), &vec![i as u8; 4 << 20]);
    }
    std::thread::sleep(Duration::from_millis(300));
    let agent = TestAgent::start(
        &server,
        "survivor",
        PW,
        root,
        "parallel = 2\nmax_rate = \"8MiB/s\"",
    );
    for round in 0..3 {
        // Let some uploads happen, then kill -9 the server mid-stream and bring it back.
        let placed = |log: &str| {
            log.lines()
                .filter(|l| l.contains(": upload ") || l.contains(": renamed "))
                .count()
        };
        let before = placed(&server.stderr());
        assert!(wait_until(Duration::from_secs(30), || placed(
            &server.stderr()
        ) > before + 20
            || round == 2));
        server.kill();
        std::thread::sleep(Duration::from_millis(500));
        server.start();
    }
    let local = tree_hashes(root);
    let remote = wait_for_copy(&server, &agent, "survivor", &local);
    assert!(!remote.keys().any(|k| k.contains("logarchive-part")));
    // Nothing twice: no final name was put in place twice, and no copy was replaced (a
    // replacement would have left a version, and the trees above are equal, so there is
    // none). A kill can fall between a rename and its log line, so a name may show no log
    // line at all; the equal trees prove it arrived.
    let log = server.stderr();
    for name in local.keys() {
        let placed = times_placed(&log, "survivor", name);
        assert!(placed <= 1, "{name} was put in place {placed} times");
    }
}

#[test]
fn mirrors_over_ftps_and_refuses_an_untrusted_server() {
    let mut server =
        TestServer::prepare("[ftp.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nrequired = true");
    let ca = write_tls_files(server.dir.path());
    for user in ["node01", "node02", "node03"] {
        server.add_user(user, PW, &["--perm", "elrwafm"]);
    }
    server.start();
    let tree = tempfile::tempdir().unwrap();
    write_sample_tree(tree.path());
    let local = tree_hashes(tree.path());

    // 1. Trusting the server's private CA, the tree arrives over FTPS, byte-identical.
    let trusting = TestAgent::start_configured(
        server.ftp_port,
        "node01",
        PW,
        tree.path(),
        "/",
        &format!("tls = true\nca_file = \"{}\"", ca.display()),
        "",
    );
    wait_for_copy(&server, &trusting, "node01", &local);

    // 2. An agent trusting another CA refuses the server's certificate and says why.
    let elsewhere = tempfile::tempdir().unwrap();
    let other_ca = write_tls_files(elsewhere.path());
    let distrusting = TestAgent::start_configured(
        server.ftp_port,
        "node02",
        PW,
        tree.path(),
        "/",
        &format!("tls = true\nca_file = \"{}\"", other_ca.display()),
        "",
    );
    // 3. A plain-FTP agent is refused by a server that requires TLS.
    let plain = TestAgent::start(&server, "node03", PW, tree.path(), "");
    assert!(
        wait_until(Duration::from_secs(20), || {
            distrusting.stderr().contains("invalid peer certificate")
                && plain.stderr().contains("login as node03")
        }),
        "untrusted: {}\nplain: {}",
        distrusting.stderr(),
        plain.stderr()
    );
    for user in ["node02", "node03"] {
        assert!(
            server
                .archived_hashes(user)
                .keys()
                .all(|path| path.starts_with(".logarchive-agent/")),
            "{user} sent files without a trusted TLS session"
        );
    }
}

#[test]
fn a_polled_watch_notices_new_files_without_inotify_or_rescans() {
    let server = TestServer::start_with("", &[("nfs", PW, &["--perm", "elrwafm"])]);
    let tree = tempfile::tempdir().unwrap();
    write(&tree.path().join("before.log"), b"there at start\n");
    // The full rescan is an hour away: only the poller can notice the second file.
    let agent = TestAgent::start_with_config(&format!(
        "state_dir = \"state\"\n[server]\nport = {}\nuser = \"nfs\"\npassword = \"{PW}\"\n[upload]\nsettle = \"200ms\"\nrescan_interval = \"1h\"\npoll_interval = \"300ms\"\n[[watch]]\ndir = \"{}\"\npoll = true\n",
        server.ftp_port,
        tree.path().display()
    ));
    wait_for_mirror(&server, &agent, "nfs", |remote| remote.len() == 1);
    assert!(agent.stderr().contains("polling for changes every 300ms"));
    write(&tree.path().join("sub/after.log"), b"written later\n");
    let local = tree_hashes(tree.path());
    wait_for_copy(&server, &agent, "nfs", &local);
}

/// How many times the server log shows `user`'s file `name` put in place: stored under
/// its final name (a small new file, `SITE NOREPLACE`), or renamed there from its
/// temporary name.
fn times_placed(log: &str, user: &str, name: &str) -> usize {
    let path = format!("/{user}/{name}");
    log.lines()
        .filter(|line| {
            (line.contains(": upload user=") && line.contains(&format!(" path={path} ")))
                || (line.contains(": renamed ")
                    && (line.ends_with(&format!(" to={path}"))
                        || line.contains(&format!(" to={path} "))))
        })
        .count()
}

/// Server log lines of finished uploads into `path` (the temporary name of a whole upload
/// ends in `<name>.logarchive-part`).
fn uploads_to(server: &TestServer, name: &str) -> Vec<String> {
    server
        .stderr()
        .lines()
        .filter(|l| l.contains(" upload ") && l.contains(name))
        .map(str::to_owned)
        .collect()
}

#[test]
fn rotation_by_rename_with_create_is_renamed_on_the_server_not_sent_twice() {
    let server = TestServer::start_with("", &[("node01", PW, &["--perm", "elrwafm"])]);
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    let first: Vec<u8> = (0..2000)
        .flat_map(|i| format!("line {i} of the first generation\n").into_bytes())
        .collect();
    write(&root.join("app.log"), &first);
    let mut agent = TestAgent::start(&server, "node01", PW, root, "");
    let local = tree_hashes(root);
    wait_for_copy(&server, &agent, "node01", &local);

    // logrotate with `create`: rename, a new file at the old name at once, and the writer
    // still adds a line to the rotated file before it reopens.
    std::fs::rename(root.join("app.log"), root.join("app.log.1")).unwrap();
    write(&root.join("app.log"), b"second generation\n");
    append(
        &root.join("app.log.1"),
        b"last line of the first generation\n",
    );
    let local = tree_hashes(root);
    let remote = wait_for_mirror(&server, &agent, "node01", |remote| {
        remote.get("app.log.1") == local.get("app.log.1")
            && remote.get("app.log") == local.get("app.log")
    });
    assert!(
        !remote.keys().any(|k| k.starts_with("app.log.2")),
        "the rotated bytes were kept twice: {remote:#?}\n{}",
        agent.stderr()
    );
    let log = server.stderr();
    assert!(
        log.lines().any(|l| l.contains(" renamed ")
            && l.contains("app.log to=")
            && l.contains("app.log.1")),
        "no server-side rename of app.log to app.log.1:\n{log}"
    );
    let whole = uploads_to(&server, ".app.log.1.logarchive-part");
    assert!(whole.is_empty(), "app.log.1 was uploaded whole: {whole:#?}");
    assert!(
        !uploads_to(&server, "app.log.1").is_empty(),
        "the line added after the rotation was not appended:\n{log}"
    );

    // The next rotation shifts two generations (app.log.1 -> app.log.2, app.log ->
    // app.log.1) while the agent is down, killed (-9) right after renaming /app.log.1 to
    // /app.log.2 on the server and before its record followed: the restarted agent finds
    // that rename done, renames /app.log to /app.log.1, sends the new app.log, and keeps
    // no version. (Past sled's background flush first, so the kill lands in that window,
    // not in the record's flush of the last append.)
    std::thread::sleep(Duration::from_millis(1500));
    agent.kill();
    std::fs::rename(root.join("app.log.1"), root.join("app.log.2")).unwrap();
    std::fs::rename(root.join("app.log"), root.join("app.log.1")).unwrap();
    write(&root.join("app.log"), b"third generation\n");
    let renamed = std::process::Command::new("curl")
        .args(["-sS", "--head", "-u", &format!("node01:{PW}")])
        .args(["-Q", "RNFR app.log.1", "-Q", "RNTO app.log.2"])
        .arg(format!("ftp://{}/", server.addr()))
        .output()
        .unwrap();
    assert!(renamed.status.success(), "{renamed:?}");
    agent.restart();
    let local = tree_hashes(root);
    let remote = wait_for_copy(&server, &agent, "node01", &local);
    assert_eq!(remote.len(), 3, "{remote:#?}\n{}", agent.stderr());
    let whole = uploads_to(&server, ".app.log.2.logarchive-part");
    assert!(whole.is_empty(), "app.log.2 was uploaded whole: {whole:#?}");
    let whole = uploads_to(&server, ".app.log.1.logarchive-part");
    assert!(whole.is_empty(), "app.log.1 was uploaded whole: {whole:#?}");
}

#[test]
fn rotation_into_a_folder_without_rename_right_keeps_versions_and_loses_nothing() {
    let mut server = TestServer::prepare("");
    server.add_user("node01", PW, &["--perm", "elrwafm"]);
    // logrotate's `olddir`: the rotated file goes to old/, where this user may write but not
    // rename, so neither the server-side rename nor a whole upload there can succeed.
    let users = server.config.with_file_name("users.toml");
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str("\n[user.dirs]\n\"/node01/old\" = \"elrwam\"\n");
    std::fs::write(&users, text).unwrap();
    server.start();
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    write(&root.join("app.log"), b"first generation\n");
    std::fs::create_dir(root.join("old")).unwrap();
    let agent = TestAgent::start(&server, "node01", PW, root, "");
    wait_for_mirror(&server, &agent, "node01", |remote| {
        remote.contains_key("app.log")
    });

    std::fs::rename(root.join("app.log"), root.join("old/app.log.1")).unwrap();
    write(&root.join("app.log"), b"second generation\n");
    // The new file goes ahead once the rotated one was refused; the first generation's
    // bytes stay on the server as a version of app.log.
    let remote = wait_for_mirror(&server, &agent, "node01", |remote| {
        remote.get("app.log") == tree_hashes(root).get("app.log")
            && remote.keys().any(|k| k.starts_with("app.log.2"))
    });
    let version = remote.keys().find(|k| k.starts_with("app.log.2")).unwrap();
    assert_eq!(
        server.archived(&format!("node01/{version}")).unwrap(),
        b"first generation\n"
    );
    assert!(!remote.contains_key("old/app.log.1"), "{remote:#?}");
    assert!(
        server.stderr().contains("refused: no 'f'"),
        "the rename into old/ was not refused:\n{}",
        server.stderr()
    );
    // The rotated file is retried slowly, not in a busy loop.
    let before = server.stderr().matches("refused: no 'f'").count();
    std::thread::sleep(Duration::from_secs(3));
    let refusals = server.stderr().matches("refused: no 'f'").count() - before;
    assert!(refusals <= 4, "{refusals} refusals in 3 s");
    assert_eq!(
        std::fs::read(root.join("old/app.log.1")).unwrap(),
        b"first generation\n"
    );
}

#[test]
fn copytruncate_during_a_transfer_sends_no_byte_of_the_new_content_as_the_old() {
    let server = TestServer::start_with("", &[("node01", PW, &["--perm", "elrwafm"])]);
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    let lines = |generation: &str, count: usize| -> Vec<u8> {
        (0..count)
            .flat_map(|i| format!("{generation} line {i:07}\n").into_bytes())
            .collect()
    };
    write(&root.join("slow.log"), &lines("old", 100));
    // Slow enough that the growth below takes seconds to send.
    let agent = TestAgent::start(&server, "node01", PW, root, "max_rate = \"256KiB/s\"");
    wait_for_copy(&server, &agent, "node01", &tree_hashes(root));

    // About 3 MiB of growth (more than the agent reads ahead); while it is appended, a
    // copytruncate: the copy holds all the old content, the file starts again, longer at
    // once than what was read so far. Read on at the old offsets, it would lend new bytes
    // to the old content's copy.
    append(&root.join("slow.log"), &lines("old", 180_000)[1_700..]);
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::copy(root.join("slow.log"), root.join("slow.log.1")).unwrap();
    std::fs::write(root.join("slow.log"), lines("new", 120_000)).unwrap();

    let local = tree_hashes(root);
    let remote = wait_for_copy(&server, &agent, "node01", &local);
    assert!(
        agent.stderr().contains("changed while being sent"),
        "the copytruncate did not fall during the transfer, so this test showed nothing:\n{}",
        agent.stderr()
    );
    // The server's partial copy, all old content, was renamed to the copy's name and
    // completed there; nothing was kept as a version.
    assert_eq!(remote.len(), 2, "{remote:#?}\n{}", agent.stderr());
    assert!(
        server
            .stderr()
            .contains("from=/node01/slow.log to=/node01/slow.log.1"),
        "the server's copy was not renamed to slow.log.1:\n{}",
        agent.stderr()
    );
}

#[test]
fn an_agent_that_lost_its_record_keeps_no_version_of_what_the_server_already_holds() {
    let server = TestServer::start_with("", &[("node01", PW, &["--perm", "elrwafm"])]);
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    write(&root.join("same.log"), b"sent once\n");
    write(&root.join("grown.log"), b"first part\n");
    write(&root.join("other.log"), b"what the server holds\n");
    write(&root.join("empty.log"), b"");
    let mut agent = TestAgent::start(&server, "node01", PW, root, "");
    wait_for_copy(&server, &agent, "node01", &tree_hashes(root));

    // The record is lost (a new disk, a wiped state folder) while the files go on.
    agent.kill();
    std::fs::remove_dir_all(agent.dir.path().join("state")).unwrap();
    append(&root.join("grown.log"), b"second part\n");
    write(&root.join("other.log"), b"rewritten locally\n");
    agent.restart();
    let local = tree_hashes(root);
    let remote = wait_for_mirror(&server, &agent, "node01", |remote| {
        ["same.log", "grown.log", "other.log", "empty.log"]
            .iter()
            .all(|name| remote.get(*name) == local.get(*name))
            && remote.len() == 5
    });
    // Only other.log's old content is not the start of its local file: the one version
    // (an empty copy has nothing to keep).
    let versions: Vec<_> = remote.keys().filter(|k| k.contains(".log.")).collect();
    assert_eq!(versions.len(), 1, "{versions:?}\n{}", agent.stderr());
    assert!(versions[0].starts_with("other.log."), "{versions:?}");
    assert_eq!(
        server.archived(&format!("node01/{}", versions[0])).unwrap(),
        b"what the server holds\n"
    );
    // same.log, unchanged, is recorded from the server's copy, not sent again.
    assert!(
        agent
            .stderr()
            .lines()
            .any(|l| l.contains("recorded, not sent again") && l.contains("/same.log")),
        "{}",
        agent.stderr()
    );
    assert_eq!(times_placed(&server.stderr(), "node01", "same.log"), 1);
}
