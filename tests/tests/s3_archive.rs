//! The archive on S3 (`[storage] kind = "s3"`) against a real 3-node Garage cluster
//! (replication factor 3): what only S3 has. The end-to-end suites (FTP, permissions,
//! agent, web, feeds, reindex, retention) run on S3 too, unchanged, with
//! `LOGARCHIVE_TEST_STORAGE=s3` (scripts/test.sh); this file keeps the S3-only promises. One
//! cluster for the whole file (starting one costs seconds), so the steps run in one test:
//!
//! 1. Files above one multipart part; an emptied folder stays (folders are implicit);
//!    SITE CHMOD and MFMT shown by LIST, MLSD and MDTM (S3 listings carry no metadata).
//! 2. APPE onto a file larger than a part (server-side part copy); APPE creating a file.
//! 3. Download of the grown file, whole, over HTTP.
//! 4. An agent mirroring a tree, then growth appended (it reports to server 2 in step 7).
//! 5. Syslog over TCP: many lines, one object, each line once. Telemetry records from 20
//!    probes at once: one day object, each record once, byte-identical in the bucket, over
//!    FTP and HTTP.
//! 6. One Garage node killed: uploads, downloads and search keep working, nothing lost.
//! 7. Two servers on one bucket: a file uploaded through server 1 is found (search) and
//!    downloaded through server 2 within a bounded delay; renames and removals through
//!    server 2 reach server 1; users added on server 1 log in on server 2; the agent
//!    connected to server 1 is live and ok on server 2's agents page.
//! 8. Syslog senders behind a round-robin address: one host's numbered messages sent to
//!    both servers at once are each in the bucket exactly once (each server grows a day
//!    file with its `server_name` in it), and both servers list and serve both files at
//!    their full size. A third server with a name in use refuses to start; of two started
//!    at the same moment with one name, one refuses.
//! 9. Journal compaction (`compact-journal`) while the servers run: fewer objects, and a
//!    fresh server, and `reindex`, still know every file, its sender and time.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use logarchive_tests::garage::GarageCluster;
use logarchive_tests::{
    TestAgent, TestServer, free_port, ftp_login, ftp_retr, run, sha256_hex, tree_hashes, wait_until,
};
use suppaftp::Status;

const PW: &str = "correct horse battery";

/// A server `name` on the cluster (through node `node`); with `users`, it gets `node01`
/// (home /node01, every letter) and `admin` (home /, admin), else it takes the users the
/// bucket shares.
fn s3_server(
    cluster: &GarageCluster,
    (prefix, name): (&str, &str),
    node: usize,
    sections: &str,
    users: bool,
) -> TestServer {
    let storage = cluster.storage_section("archive", prefix, node, name);
    let mut server = TestServer::prepare_with_sections("", &format!("{storage}{sections}"));
    if users {
        server.add_user("node01", PW, &["--perm", "elradfmwMT"]);
        server.add_user(
            "admin",
            PW,
            &["--admin", "--home", "/", "--perm", "elradfmwMT"],
        );
    }
    server.start();
    server
}

/// The server binary with `args` and the config of `server`, in its folder, started and
/// not waited for (stdout and stderr piped).
fn spawn_server(server: &TestServer, args: &[&str]) -> std::process::Child {
    Command::new(logarchive_tests::server_bin())
        .args(args)
        .arg("--config")
        .arg(&server.config)
        .current_dir(server.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start logarchive-server")
}

/// `curl` with Basic auth against the server's web listener; (status, body).
fn web_get(server: &TestServer, user: &str, path: &str, extra: &[&str]) -> (u16, Vec<u8>) {
    let out_file = server.dir.path().join(format!("curl-{}.out", rand_name()));
    let url = format!("http://127.0.0.1:{}{path}", server.web_port);
    let auth = format!("{user}:{PW}");
    let mut args = vec![
        "-sS",
        "-u",
        &auth,
        "-o",
        out_file.to_str().unwrap(),
        "-w",
        "%{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = run("curl", &args);
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let body = std::fs::read(&out_file).unwrap_or_default();
    (status, body)
}

fn rand_name() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The paths `/api/search?q=` finds for `user`.
fn search(server: &TestServer, user: &str, query: &str) -> Vec<String> {
    let (status, body) = web_get(server, user, &format!("/api/search?q={query}"), &[]);
    if status != 200 {
        return Vec::new();
    }
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    value["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["path"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// An object of the bucket `archive` read straight from Garage (node 0), past the server:
/// `None` unless it answers 200.
fn bucket_object(cluster: &GarageCluster, key: &str) -> Option<Vec<u8>> {
    cluster.bucket("archive").get(key)
}

/// The line of an FTP listing (LIST or MLSD) that names `name`.
fn listed<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find(|line| line.ends_with(&format!(" {name}")) || line.ends_with(&format!(";{name}")))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("{name} not listed: {lines:?}"))
}

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_archive_on_a_garage_cluster() {
    let started = Instant::now();
    let cluster = GarageCluster::start();
    eprintln!("garage cluster up in {:?}", started.elapsed());
    let syslog_port = free_port();
    let mut one = s3_server(
        &cluster,
        ("one", "srv-one"),
        0,
        &format!(
            "[syslog]\ntcp = \"127.0.0.1:{syslog_port}\"\nflush_interval = \"300ms\"\n[logger]\nenabled = true\n[telemetry]\nenabled = true\n"
        ),
        true,
    );

    // 1. Upload and download above one part; folders.
    let big = data(20 << 20, 1); // 20 MiB: three multipart parts
    let mut ftp = ftp_login(&one.addr(), "node01", PW).await.unwrap();
    ftp.mkdir("logs").await.unwrap();
    ftp.mkdir("empty").await.unwrap();
    ftp.put_file("logs/big.bin", &mut &big[..]).await.unwrap();
    assert_eq!(ftp_retr(&mut ftp, "logs/big.bin").await.unwrap(), big);
    assert_eq!(ftp.size("logs/big.bin").await.unwrap(), big.len());
    let names = ftp.nlst(None).await.unwrap();
    assert!(
        names.iter().any(|n| n.ends_with("empty")),
        "an empty folder made with MKD is listed: {names:?}"
    );
    ftp.rmdir("empty").await.unwrap();
    assert!(
        !ftp.nlst(None)
            .await
            .unwrap()
            .iter()
            .any(|n| n.ends_with("empty"))
    );
    // The folder whose last file went stays, as on a disk.
    ftp.put_file("keep/only.log", &mut &b"x"[..])
        .await
        .unwrap_err();
    ftp.mkdir("keep").await.unwrap();
    ftp.put_file("keep/only.log", &mut &b"x"[..]).await.unwrap();
    ftp.rm("keep/only.log").await.unwrap();
    ftp.cwd("keep").await.unwrap();
    ftp.cdup().await.unwrap();

    // SITE CHMOD and MFMT: LIST shows the mode, MLSD and MDTM the time (a HEAD per file,
    // as listings carry no user metadata), and the bytes stay.
    ftp.put_file("logs/attrs.log", &mut &b"attrs\n"[..])
        .await
        .unwrap();
    let year_2020 = "2020-01-01 00:00:00";
    assert!(
        listed(&ftp.list(Some("logs")).await.unwrap(), "attrs.log").starts_with("-rw-r--r--"),
        "the default mode before CHMOD"
    );
    assert!(!listed(&ftp.mlsd(Some("logs")).await.unwrap(), "attrs.log").contains("modify=2020"));
    assert_ne!(
        ftp.mdtm("logs/attrs.log").await.unwrap().to_string(),
        year_2020
    );
    ftp.site("CHMOD 600 logs/attrs.log").await.unwrap();
    ftp.custom_command("MFMT 20200101000000 logs/attrs.log", &[Status::File])
        .await
        .unwrap();
    let list = ftp.list(Some("logs")).await.unwrap();
    assert!(
        listed(&list, "attrs.log").starts_with("-rw-------")
            && listed(&list, "attrs.log").contains(" Jan 01 2020 "),
        "LIST after CHMOD and MFMT: {list:?}"
    );
    let mlsd = ftp.mlsd(Some("logs")).await.unwrap();
    assert!(
        listed(&mlsd, "attrs.log").contains("modify=20200101000000;"),
        "MLSD after MFMT: {mlsd:?}"
    );
    assert_eq!(
        ftp.mdtm("logs/attrs.log").await.unwrap().to_string(),
        year_2020
    );
    assert_eq!(
        ftp_retr(&mut ftp, "logs/attrs.log").await.unwrap(),
        b"attrs\n"
    );
    // An append keeps the mode; the file was modified, so its time is the store's again.
    ftp.append_file("logs/attrs.log", &mut &b"more\n"[..])
        .await
        .unwrap();
    assert!(listed(&ftp.list(Some("logs")).await.unwrap(), "attrs.log").starts_with("-rw-------"));
    assert_ne!(
        ftp.mdtm("logs/attrs.log").await.unwrap().to_string(),
        year_2020
    );

    // 2. APPE onto a file larger than a part (server-side copy).
    let tail = data(123_457, 3);
    ftp.append_file("logs/big.bin", &mut &tail[..])
        .await
        .unwrap();
    let mut grown = big.clone();
    grown.extend_from_slice(&tail);
    assert_eq!(ftp_retr(&mut ftp, "logs/big.bin").await.unwrap(), grown);
    ftp.append_file("logs/fresh.log", &mut &b"first\n"[..])
        .await
        .unwrap();
    ftp.append_file("logs/fresh.log", &mut &b"second\n"[..])
        .await
        .unwrap();
    assert_eq!(
        ftp_retr(&mut ftp, "logs/fresh.log").await.unwrap(),
        b"first\nsecond\n"
    );

    // 3. The grown file over HTTP, whole (read in ranged chunks).
    let (status, body) = web_get(&one, "node01", "/download/node01/logs/big.bin", &[]);
    assert_eq!(status, 200);
    assert_eq!(body.len(), grown.len());
    assert!(body == grown, "whole download differs");
    // 4. An agent mirrors a tree into the bucket, then appends growth.
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("app")).unwrap();
    std::fs::write(tree.path().join("app/a.log"), data(300_000, 5)).unwrap();
    std::fs::write(tree.path().join("b.log"), b"line one\n").unwrap();
    let agent = TestAgent::start_to(
        one.ftp_port,
        "node01",
        PW,
        tree.path(),
        "/mirror",
        "report_interval = \"1s\"",
    );
    let local = tree_hashes(tree.path());
    let mirrored = |ftp_names: &[&str]| {
        ftp_names.iter().all(|name| {
            let (status, body) = web_get(
                &one,
                "node01",
                &format!("/download/node01/mirror/{name}"),
                &[],
            );
            status == 200 && sha256_hex(&body) == local[*name]
        })
    };
    assert!(
        wait_until(Duration::from_secs(60), || mirrored(&[
            "app/a.log",
            "b.log"
        ])),
        "agent did not mirror: {}",
        agent.stderr()
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(tree.path().join("b.log"))
        .unwrap();
    file.write_all(b"line two\n").unwrap();
    drop(file);
    assert!(
        wait_until(Duration::from_secs(60), || {
            web_get(&one, "node01", "/download/node01/mirror/b.log", &[]).1
                == b"line one\nline two\n"
        }),
        "growth not appended: {}",
        agent.stderr()
    );

    // 5. Syslog over TCP: 300 lines into one day file, each once, in order.
    let mut sender = std::net::TcpStream::connect(("127.0.0.1", syslog_port)).unwrap();
    for i in 0..300 {
        writeln!(sender, "<13>Nov 22 10:00:00 s3host app: message {i:04}").unwrap();
    }
    sender.flush().unwrap();
    let today = time::OffsetDateTime::now_utc();
    let day_file = format!(
        "/download/syslog/s3host/{:04}/{:02}/{:02}.srv-one.log",
        today.year(),
        u8::from(today.month()),
        today.day()
    );
    let complete = wait_until(Duration::from_secs(30), || {
        let (status, body) = web_get(&one, "admin", &day_file, &[]);
        status == 200 && String::from_utf8_lossy(&body).lines().count() == 300
    });
    let (_, body) = web_get(&one, "admin", &day_file, &[]);
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(
        complete,
        "syslog lines missing: {} lines",
        text.lines().count()
    );
    for (i, line) in text.lines().enumerate() {
        assert!(
            line.ends_with(&format!("message {i:04}")),
            "line {i}: {line}"
        );
    }
    drop(sender);

    // 5b. Telemetry: records posted at once by 20 probes are appended to the day's one
    //     `.jsonl` object (as to one file on disk), never an object per record, and read
    //     back byte-identical from the bucket, over FTP and over HTTP.
    let tid = "X-Telemetry-TID: 6907c830-eed9-4ce9-81ae-76daf8d88f0f";
    let url = format!("http://127.0.0.1:{}/v3/collector", one.web_port);
    let posted = time::OffsetDateTime::now_utc();
    let probes: Vec<_> = (0..20)
        .map(|i| {
            let record = serde_json::json!({
                "record_format_version": "4", "classification": "org.clearlinux/s3/probe",
                "severity": "2", "machine_id": format!("machine{i:02}"),
                "creation_timestamp": "1443573575", "arch": "x86_64", "host_type": "board",
                "build": "31000", "kernel_version": "6.1.0-1", "payload_format_version": "1",
                "system_name": "clear-linux-os", "board_name": "b", "cpu_model": "c",
                "bios_version": "d", "event_id": "0123456789abcdef0123456789abcdef",
                "payload": format!("probe {i:02}")
            });
            Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", tid])
                .args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(record.to_string())
                .arg(&url)
                .stdout(Stdio::piped())
                .spawn()
                .expect("curl")
        })
        .collect();
    for probe in probes {
        let out = probe.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "201");
    }
    let [year, month, day] = [
        format!("{:04}", posted.year()),
        format!("{:02}", u8::from(posted.month())),
        format!("{:02}", posted.day()),
    ];
    let jsonl = format!("/telemetry/{year}/{month}/{day}.srv-one.jsonl");
    let stored = wait_until(Duration::from_secs(10), || {
        bucket_object(&cluster, &format!("one{jsonl}"))
            .is_some_and(|bytes| bytes.split(|b| *b == b'\n').count() == 21)
    });
    assert!(stored, "20 records never reached {jsonl}: {}", one.stderr());
    let in_bucket = bucket_object(&cluster, &format!("one{jsonl}")).unwrap();
    let mut payloads: Vec<String> = String::from_utf8_lossy(&in_bucket)
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            record["payload"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    payloads.sort();
    let expected: Vec<String> = (0..20).map(|i| format!("probe {i:02}")).collect();
    assert_eq!(payloads, expected, "each record once");
    let mut admin = ftp_login(&one.addr(), "admin", PW).await.unwrap();
    assert_eq!(ftp_retr(&mut admin, &jsonl).await.unwrap(), in_bucket);
    let (status, body) = web_get(&one, "admin", &format!("/download{jsonl}"), &[]);
    assert_eq!((status, body == in_bucket), (200, true));
    let month_dir = format!("/telemetry/{year}/{month}");
    let names = admin.nlst(Some(month_dir.as_str())).await.unwrap();
    assert_eq!(names.len(), 1, "one object for the day: {names:?}");
    let (status, records) = web_get(&one, "admin", "/api/records?limit=100", &[]);
    let records: serde_json::Value = serde_json::from_slice(&records).unwrap_or_default();
    assert_eq!(
        (status, records["records"].as_array().map(Vec::len)),
        (200, Some(20))
    );

    let _ = admin.quit().await;

    // 6. One Garage node dies: everything keeps working through the other two.
    cluster.stop_node(2);
    let after = data(9 << 20, 6);
    ftp.put_file("logs/after-failure.bin", &mut &after[..])
        .await
        .unwrap();
    assert_eq!(
        ftp_retr(&mut ftp, "logs/after-failure.bin").await.unwrap(),
        after
    );
    assert_eq!(ftp_retr(&mut ftp, "logs/big.bin").await.unwrap(), grown);
    ftp.append_file("logs/fresh.log", &mut &b"third\n"[..])
        .await
        .unwrap();
    assert_eq!(
        ftp_retr(&mut ftp, "logs/fresh.log").await.unwrap(),
        b"first\nsecond\nthird\n"
    );
    assert_eq!(
        search(&one, "node01", "after-failure"),
        vec!["/node01/logs/after-failure.bin"]
    );
    let _ = ftp.quit().await;

    // 7. A second server on the same bucket and prefix (through node 1), with no users of
    //    its own, takes the shared users.toml, sees what the first stored, and follows new
    //    uploads within a bounded delay.
    let syslog_port_two = free_port();
    let mut two = s3_server(
        &cluster,
        ("one", "srv-two"),
        1,
        &format!("[syslog]\ntcp = \"127.0.0.1:{syslog_port_two}\"\nflush_interval = \"200ms\"\n"),
        false,
    );
    assert!(
        two.stderr()
            .contains("users.toml taken from the shared archive"),
        "{}",
        two.stderr()
    );
    let late = data(50_000, 7);
    let mut ftp = ftp_login(&one.addr(), "node01", PW).await.unwrap();
    ftp.put_file("logs/through-one.bin", &mut &late[..])
        .await
        .unwrap();
    let uploaded = Instant::now();
    let found = wait_until(Duration::from_secs(15), || {
        search(&two, "node01", "through-one") == vec!["/node01/logs/through-one.bin"]
    });
    assert!(found, "server 2 never listed the upload: {}", two.stderr());
    eprintln!(
        "server 2 found server 1's upload after {:?}",
        uploaded.elapsed()
    );
    let (status, body) = web_get(&two, "node01", "/download/node01/logs/through-one.bin", &[]);
    assert_eq!((status, body == late), (200, true));
    // Through FTP on server 2 as well, including what the agent sent to server 1.
    let mut ftp_two = ftp_login(&two.addr(), "node01", PW).await.unwrap();
    assert_eq!(
        ftp_retr(&mut ftp_two, "logs/through-one.bin")
            .await
            .unwrap(),
        late
    );
    assert_eq!(
        ftp_retr(&mut ftp_two, "mirror/b.log").await.unwrap(),
        b"line one\nline two\n"
    );
    // The agent, connected to server 1, is on server 2's agents page, ok and live: its
    // report (in its home, in the bucket) was written after this growth was sent.
    let grown_at = time::OffsetDateTime::now_utc();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(tree.path().join("b.log"))
        .unwrap();
    file.write_all(b"line three\n").unwrap();
    drop(file);
    let agent_on_two = || {
        let (status, body) = web_get(&two, "admin", "/api/agents", &[]);
        let agents: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let row = agents
            .as_array()
            .and_then(|rows| rows.iter().find(|row| row["user"] == "node01").cloned());
        (status, row)
    };
    let live = wait_until(Duration::from_secs(20), || {
        let (_, row) = agent_on_two();
        row.is_some_and(|row| {
            row["state"] == "ok"
                && row["last_seen"].as_str().is_some_and(|seen| {
                    time::OffsetDateTime::parse(
                        seen,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .is_ok_and(|seen| seen > grown_at)
                })
        })
    });
    let (status, row) = agent_on_two();
    assert!(
        live,
        "server 2's agents page ({status}): {}; agent: {}",
        String::from_utf8_lossy(&web_get(&two, "admin", "/api/agents", &[]).1),
        agent.stderr()
    );
    let row = row.unwrap_or_default();
    assert!(row["files_24h"].as_u64() >= Some(2), "{row}");
    assert!(
        wait_until(Duration::from_secs(20), || {
            web_get(&two, "node01", "/download/node01/mirror/b.log", &[]).1
                == b"line one\nline two\nline three\n"
        }),
        "the growth sent to server 1 is not read through server 2: {}",
        agent.stderr()
    );
    drop(agent);
    // A rename and a removal through server 2 reach server 1's catalog.
    ftp_two
        .rename("logs/through-one.bin", "logs/moved.bin")
        .await
        .unwrap();
    ftp_two.rm("logs/attrs.log").await.unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || {
            search(&one, "node01", "moved") == vec!["/node01/logs/moved.bin"]
                && search(&one, "node01", "through-one").is_empty()
                && search(&one, "node01", "attrs").is_empty()
        }),
        "server 1 did not follow server 2's rename and removal"
    );
    let _ = ftp.quit().await;
    let _ = ftp_two.quit().await;
    // A user added on server 1 can log in on server 2 (an agent may use either).
    one.add_user("node02", PW, &["--perm", "elrw"]);
    let added = Instant::now();
    // Logins are tried only once the file arrived: failed logins count towards a block.
    let users_two = two.dir.path().join("users.toml");
    let arrived = wait_until(Duration::from_secs(15), || {
        std::fs::read_to_string(&users_two).is_ok_and(|text| text.contains("node02"))
    });
    assert!(
        arrived,
        "users.toml never reached server 2: {}",
        two.stderr()
    );
    let mut shared = false;
    for _ in 0..4 {
        // The UserStore re-reads the file within a second.
        tokio::time::sleep(Duration::from_millis(700)).await;
        if ftp_login(&two.addr(), "node02", PW).await.is_ok() {
            shared = true;
            break;
        }
    }
    assert!(shared, "server 2 never accepted the user added on server 1");
    eprintln!(
        "server 2 accepted server 1's new user after {:?}",
        added.elapsed()
    );

    // 8. Syslog senders behind a round-robin address: the same host's messages reach both
    //    servers at once (one sender each, numbered lines). Each server grows a day file
    //    of its own (its `server_name` in the name), so no append can overwrite the
    //    other's: every message is in the bucket exactly once, and both servers list both
    //    files, at their full size, within the follow delay.
    const EACH: usize = 600;
    let senders: Vec<_> = [("one", syslog_port), ("two", syslog_port_two)]
        .into_iter()
        .map(|(tag, port)| {
            std::thread::spawn(move || {
                let mut sender = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                for i in 0..EACH {
                    writeln!(sender, "<13>Nov 23 10:00:00 rrhost app: via-{tag} {i:04}").unwrap();
                    if i % 10 == 9 {
                        std::thread::sleep(Duration::from_millis(40));
                    }
                }
                sender.flush().unwrap();
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let bucket = cluster.bucket("archive");
    let day_files = || -> Vec<(String, Vec<u8>)> {
        bucket
            .list("one/syslog/rrhost/")
            .into_iter()
            .filter_map(|(key, _)| Some((key.clone(), bucket.get(&key)?)))
            .collect()
    };
    let count_lines = |files: &[(String, Vec<u8>)]| -> std::collections::BTreeMap<String, usize> {
        let mut seen = std::collections::BTreeMap::new();
        for (_, bytes) in files {
            for line in String::from_utf8_lossy(bytes).lines() {
                if let Some(at) = line.find("via-") {
                    *seen.entry(line[at..].to_owned()).or_insert(0) += 1;
                }
            }
        }
        seen
    };
    let sent_at = Instant::now();
    let all_stored = wait_until(Duration::from_secs(20), || {
        count_lines(&day_files()).len() == 2 * EACH
    });
    let files = day_files();
    let seen = count_lines(&files);
    let missing: Vec<String> = ["one", "two"]
        .iter()
        .flat_map(|tag| (0..EACH).map(move |i| format!("via-{tag} {i:04}")))
        .filter(|message| !seen.contains_key(message))
        .collect();
    assert!(
        all_stored && missing.is_empty(),
        "{} of {} messages lost (e.g. {:?}) in {:?}",
        missing.len(),
        2 * EACH,
        missing.first(),
        files
            .iter()
            .map(|(key, bytes)| (key, bytes.len()))
            .collect::<Vec<_>>()
    );
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    eprintln!(
        "both senders' messages stored after {:?}",
        sent_at.elapsed()
    );
    let dd = format!("{:02}", time::OffsetDateTime::now_utc().day());
    let mut names: Vec<&str> = files
        .iter()
        .filter(|(key, _)| !key.ends_with('/'))
        .map(|(key, _)| key.rsplit('/').next().unwrap_or_default())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [format!("{dd}.srv-one.log"), format!("{dd}.srv-two.log")],
        "one day file per server"
    );
    // Both servers list both files at the size in the bucket (the other server's growth
    // is followed through its journal records), and serve their bytes.
    let listed_sizes = |server: &TestServer| -> Vec<(String, u64)> {
        let (_, body) = web_get(
            server,
            "admin",
            "/api/search?q=.log&path=/syslog/rrhost",
            &[],
        );
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let mut found: Vec<(String, u64)> = value["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e["path"].as_str()?.to_owned(), e["size"].as_u64()?)))
            .collect();
        found.sort();
        found
    };
    let mut in_bucket: Vec<(String, u64)> = files
        .iter()
        .filter(|(key, _)| !key.ends_with('/'))
        .map(|(key, bytes)| (key["one".len()..].to_owned(), bytes.len() as u64))
        .collect();
    in_bucket.sort();
    let followed = wait_until(Duration::from_secs(10), || {
        listed_sizes(&one) == in_bucket && listed_sizes(&two) == in_bucket
    });
    assert!(
        followed,
        "bucket {in_bucket:?}; server 1 lists {:?}; server 2 lists {:?}",
        listed_sizes(&one),
        listed_sizes(&two)
    );
    eprintln!(
        "both servers list both day files after {:?}",
        sent_at.elapsed()
    );
    for (path, bytes) in &files {
        if path.ends_with('/') {
            continue;
        }
        let url = format!("/download{}", &path["one".len()..]);
        for server in [&one, &two] {
            let (status, body) = web_get(server, "admin", &url, &[]);
            assert_eq!((status, &body == bytes), (200, true), "{url}");
        }
    }
    // A third server given a name in use does not start: it would grow the same files.
    let three = TestServer::prepare_with_sections(
        "",
        &cluster.storage_section("archive", "one", 0, "srv-two"),
    );
    let mut refused = spawn_server(&three, &["run"]);
    let exited = wait_until(Duration::from_secs(30), || {
        refused.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = refused.kill();
    }
    let out = refused.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        exited && !out.status.success() && stderr.contains("server_name \"srv-two\" is in use"),
        "a second srv-two: {stderr}"
    );
    // Two servers started at the same moment with one new name: both read no claim, but
    // exactly one starts (the earlier claim, written over, is found at its check).
    let twins: Vec<TestServer> = (0..2)
        .map(|_| {
            TestServer::prepare_with_sections(
                "",
                &cluster.storage_section("archive", "one", 0, "srv-twin"),
            )
        })
        .collect();
    let mut twin_runs: Vec<std::process::Child> = twins
        .iter()
        .map(|twin| spawn_server(twin, &["run"]))
        .collect();
    let one_exited = wait_until(Duration::from_secs(30), || {
        twin_runs
            .iter_mut()
            .any(|twin| twin.try_wait().ok().flatten().is_some())
    });
    // The other keeps running (it renews its claim meanwhile).
    std::thread::sleep(Duration::from_secs(if one_exited { 6 } else { 0 }));
    let running: Vec<bool> = twin_runs
        .iter_mut()
        .map(|twin| twin.try_wait().ok().flatten().is_none())
        .collect();
    let mut errors = String::new();
    for mut twin in twin_runs {
        let _ = twin.kill();
        let out = twin.wait_with_output().unwrap();
        errors.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        one_exited
            && running.iter().filter(|up| **up).count() == 1
            && errors.contains("server_name \"srv-twin\" is in use"),
        "two srv-twin started at once, running {running:?}: {errors}"
    );

    // The same server killed and restarted takes its name back at once: the claim left
    // names its machine and data dir, whose catalog lock it now holds.
    two.kill();
    let restarted = Instant::now();
    two.start();
    assert!(
        restarted.elapsed() < Duration::from_secs(10),
        "restart took {:?}: {}",
        restarted.elapsed(),
        two.stderr()
    );

    // 9. Journal compaction beside the running servers: the day's record objects become
    //    one (reindex and new servers read one object instead of hundreds), and a fresh
    //    server (following the whole journal) and `reindex` still know every file.
    let journal = |bucket: &logarchive_tests::bucket::Bucket| {
        bucket
            .list("one/.logarchive/journal/")
            .into_iter()
            .filter(|(key, _)| !key.ends_with('/'))
            .count()
    };
    std::thread::sleep(Duration::from_millis(1100));
    let before = journal(&bucket);
    // Two compactions at once (one per server's config): neither may lose a record.
    let compactions: Vec<_> = [&one, &two]
        .iter()
        .map(|server| spawn_server(server, &["compact-journal", "--older-than", "1s"]))
        .collect();
    let mut reports = Vec::new();
    for compaction in compactions {
        let out = compaction.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "compact-journal: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        reports.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    let after = journal(&bucket);
    eprintln!("journal objects: {before} before compaction, {after} after ({reports:?})");
    assert!(
        before >= 20 && after <= 4,
        "{before} objects before, {after} after"
    );
    let catalog_of = |server: &TestServer| -> Vec<(String, u64, String, String)> {
        let out = server.cli(&["catalog", "--json"], "");
        let mut entries: Vec<_> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|e| {
                (
                    e["path"].as_str().unwrap_or_default().to_owned(),
                    e["size"].as_u64().unwrap_or_default(),
                    e["uploader"].as_str().unwrap_or("-").to_owned(),
                    e["received"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        entries.sort();
        entries
    };
    let mut fresh = s3_server(&cluster, ("one", "srv-fresh"), 1, "", false);
    let files_known = wait_until(Duration::from_secs(20), || {
        listed_sizes(&fresh) == in_bucket
            && search(&fresh, "admin", "moved") == vec!["/node01/logs/moved.bin"]
    });
    assert!(files_known, "the fresh server: {}", fresh.stderr());
    assert!(fresh.stop(), "{}", fresh.stderr());
    drop(two);
    assert!(
        one.stop(),
        "server 1 did not stop cleanly: {}",
        one.stderr()
    );
    let known = catalog_of(&one);
    assert!(known.len() >= 10, "{known:?}");
    assert_eq!(catalog_of(&fresh), known, "the fresh server's catalog");
    let out = fresh.cli(&["reindex"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(catalog_of(&fresh), known, "after reindex");
    eprintln!("whole S3 test: {:?}", started.elapsed());
}
