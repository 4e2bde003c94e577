//! The archive on S3 (`[storage] kind = "s3"`) against a real 3-node Garage cluster
//! (replication factor 3), driven by real clients: suppaftp and curl over FTP, curl over
//! HTTP, the agent, a syslog sender over TCP. One cluster for the whole file (starting one
//! costs seconds), so the steps run in one test, each server on its own key prefix:
//!
//! 1. FTP upload and download (byte-identical, above one multipart part), folders (MKD of
//!    an empty folder, RMD), rename, delete, permission letters and home confinement;
//!    SITE CHMOD and MFMT (refused without `M`/`T`, else shown by LIST, MLSD and MDTM).
//! 2. REST resume and APPE (append to a file larger than a part: server-side part copy).
//! 3. A client killed mid-STOR: nothing under the final name, ever.
//! 4. Web download with Range, and search.
//! 5. An agent mirroring a tree, then growth appended; the folder streamed as a zip.
//! 6. Syslog over TCP: many lines, one file, each line once. Telemetry records from 20
//!    probes at once: one day object, each record once, byte-identical in the bucket, over
//!    FTP and HTTP; OTT data-logger posts: one object each, byte-exact.
//! 7. One Garage node killed: uploads, downloads and search keep working, nothing lost.
//! 8. Two servers on one bucket: a file uploaded through server 1 is found (search) and
//!    downloaded through server 2 within a bounded delay; `reindex` rebuilds server 2's
//!    catalog from the bucket alone; users added on server 1 log in on server 2; the agent
//!    connected to server 1 is live and ok on server 2's agents page.
//! 9. Retention on S3: a policy removes old files below it, nothing outside.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod web_common;

use logarchive_tests::garage::GarageCluster;
use logarchive_tests::{
    TestAgent, TestServer, free_port, ftp_login, ftp_retr, latin1_message, run, tree_hashes,
    wait_until,
};
use suppaftp::{FtpError, Status};

const PW: &str = "correct horse battery";

/// A server on the cluster (through node `node`); with `users`, it gets `node01` (home
/// /node01, every letter), `reader` (home /node01, `elr`), `keeper` (home /node01, all but
/// `M` and `T`), `ott` (home /logger, `elrw`: a data logger) and `admin` (home /, admin),
/// else it takes the users the bucket shares.
fn s3_server(
    cluster: &GarageCluster,
    prefix: &str,
    node: usize,
    sections: &str,
    users: bool,
) -> TestServer {
    let storage = cluster.storage_section("archive", prefix, node);
    let mut server = TestServer::prepare_with_sections("", &format!("{storage}{sections}"));
    if users {
        server.add_user("node01", PW, &["--perm", "elradfmwMT"]);
        server.add_user("reader", PW, &["--home", "/node01", "--perm", "elr"]);
        server.add_user("keeper", PW, &["--home", "/node01", "--perm", "elradfmw"]);
        server.add_user("ott", PW, &["--home", "/logger", "--perm", "elrw"]);
        server.add_user(
            "admin",
            PW,
            &["--admin", "--home", "/", "--perm", "elradfmwMT"],
        );
    }
    server.start();
    server
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

/// An object of the bucket `archive` read straight from Garage (node 0) with curl's
/// SigV4 signing, past the server: `None` unless it answers 200.
fn bucket_object(cluster: &GarageCluster, key: &str) -> Option<Vec<u8>> {
    let credentials = std::fs::read_to_string(cluster.credentials()).ok()?;
    let mut lines = credentials.lines();
    let (id, secret) = (lines.next()?, lines.next()?);
    // The key goes to curl in a config file, not on its command line.
    let config = cluster
        .dir
        .path()
        .join(format!("curl-{}.conf", rand_name()));
    std::fs::write(&config, format!("user = \"{id}:{secret}\"\n")).ok()?;
    let out_file = cluster.dir.path().join(format!("object-{}", rand_name()));
    let out = run(
        "curl",
        &[
            "-sS",
            "--aws-sigv4",
            "aws:amz:garage:s3",
            // S3 wants the payload's hash signed: here, of the empty body of a GET.
            "-H",
            "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "-K",
            config.to_str()?,
            "-o",
            out_file.to_str()?,
            "-w",
            "%{http_code}",
            // Encoded as SigV4 signs it (a `+` in a key is `%2B`).
            &format!(
                "{}/archive/{}",
                cluster.endpoints[0],
                key.replace('+', "%2B")
            ),
        ],
    );
    let _ = std::fs::remove_file(&config);
    let body = std::fs::read(&out_file).ok();
    let _ = std::fs::remove_file(&out_file);
    (String::from_utf8_lossy(&out.stdout).trim() == "200")
        .then_some(body)
        .flatten()
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
        "one",
        0,
        &format!(
            "[syslog]\ntcp = \"127.0.0.1:{syslog_port}\"\nflush_interval = \"300ms\"\n[logger]\nenabled = true\n[telemetry]\nenabled = true\n"
        ),
        true,
    );

    // 1. Upload and download, folders, rename, delete.
    let big = data(20 << 20, 1); // 20 MiB: three multipart parts
    let mut ftp = ftp_login(&one.addr(), "node01", PW).await.unwrap();
    ftp.mkdir("logs").await.unwrap();
    ftp.mkdir("empty").await.unwrap();
    // For step 9 (retention): a file that is old by the end of the test.
    ftp.mkdir("expire").await.unwrap();
    ftp.put_file("expire/old.log", &mut &b"old"[..])
        .await
        .unwrap();
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
    ftp.put_file("logs/old.log", &mut &b"renamed"[..])
        .await
        .unwrap();
    ftp.rename("logs/old.log", "logs/new.log").await.unwrap();
    assert_eq!(
        ftp_retr(&mut ftp, "logs/new.log").await.unwrap(),
        b"renamed"
    );
    assert!(ftp.size("logs/old.log").await.is_err());
    ftp.rm("logs/new.log").await.unwrap();
    assert!(ftp.size("logs/new.log").await.is_err());
    // The folder whose last file went stays, as on a disk.
    ftp.put_file("keep/only.log", &mut &b"x"[..])
        .await
        .unwrap_err();
    ftp.mkdir("keep").await.unwrap();
    ftp.put_file("keep/only.log", &mut &b"x"[..]).await.unwrap();
    ftp.rm("keep/only.log").await.unwrap();
    ftp.cwd("keep").await.unwrap();
    ftp.cdup().await.unwrap();

    // Permission letters and home confinement hold on S3 as on disk.
    let mut reader = ftp_login(&one.addr(), "reader", PW).await.unwrap();
    let refused = reader.put_file("nope.log", &mut &b"x"[..]).await;
    assert!(refused.is_err(), "reader has no 'w'");
    assert!(
        reader.rm("logs/big.bin").await.is_err(),
        "reader has no 'd'"
    );
    assert_eq!(
        ftp_retr(&mut reader, "logs/big.bin").await.unwrap().len(),
        big.len()
    );
    reader.cwd("../../..").await.unwrap();
    assert_eq!(reader.pwd().await.unwrap(), "/");
    assert!(
        ftp_retr(&mut reader, "/../other/x").await.is_err(),
        "nothing outside the home"
    );
    let _ = reader.quit().await;

    // SITE CHMOD (letter M) and MFMT (letter T): refused without the letter, nothing
    // changed; with it, LIST shows the mode, MLSD and MDTM the time, and the bytes stay.
    ftp.put_file("logs/attrs.log", &mut &b"attrs\n"[..])
        .await
        .unwrap();
    let mut keeper = ftp_login(&one.addr(), "keeper", PW).await.unwrap();
    for (letter, refused) in [
        ('M', keeper.site("CHMOD 600 logs/attrs.log").await.map(drop)),
        (
            'T',
            keeper
                .custom_command("MFMT 20200101000000 logs/attrs.log", &[Status::File])
                .await
                .map(drop),
        ),
    ] {
        match refused {
            Err(FtpError::UnexpectedResponse(reply)) => {
                let text = String::from_utf8_lossy(&reply.body).into_owned();
                assert_eq!(reply.status, Status::FileUnavailable, "{text}");
                assert!(text.contains(&format!("'{letter}'")), "{text}");
            }
            other => panic!("keeper has no '{letter}', got {other:?}"),
        }
    }
    let _ = keeper.quit().await;
    let year_2020 = "2020-01-01 00:00:00";
    assert!(
        listed(&ftp.list(Some("logs")).await.unwrap(), "attrs.log").starts_with("-rw-r--r--"),
        "a refused CHMOD changed the mode"
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

    // 2. REST resume, and APPE onto a file larger than a part (server-side copy).
    let resumed = data(3_000_000, 2);
    ftp.put_file("logs/resumed.bin", &mut &resumed[..1_000_000])
        .await
        .unwrap();
    ftp.resume_transfer(1_000_000).await.unwrap();
    ftp.put_file("logs/resumed.bin", &mut &resumed[1_000_000..])
        .await
        .unwrap();
    assert_eq!(
        ftp_retr(&mut ftp, "logs/resumed.bin").await.unwrap(),
        resumed
    );
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

    // 3. A client killed mid-STOR leaves nothing under the final name.
    let source = one.dir.path().join("cut.bin");
    std::fs::write(&source, data(4 << 20, 4)).unwrap();
    let mut curl = Command::new("curl")
        .args([
            "-sS",
            "--limit-rate",
            "256k",
            "-u",
            &format!("node01:{PW}"),
            "-T",
        ])
        .arg(&source)
        .arg(format!("ftp://{}/logs/cut.bin", one.addr()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        ftp.size("logs/cut.bin").await.is_err(),
        "an upload in progress is not visible"
    );
    curl.kill().unwrap();
    curl.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        ftp.size("logs/cut.bin").await.is_err(),
        "a cut upload appeared under its final name"
    );
    assert!(
        !ftp.nlst(Some("logs"))
            .await
            .unwrap()
            .iter()
            .any(|n| n.contains("cut.bin"))
    );

    // 4. Web: Range download and search (from the catalog).
    let (status, body) = web_get(
        &one,
        "node01",
        "/download/node01/logs/big.bin",
        &["-r", "100-199"],
    );
    assert_eq!(status, 206);
    assert_eq!(body, &grown[100..200]);
    let (status, body) = web_get(&one, "node01", "/download/node01/logs/big.bin", &[]);
    assert_eq!(status, 200);
    assert_eq!(body.len(), grown.len());
    assert!(body == grown, "whole download differs");
    assert_eq!(
        search(&one, "node01", "resumed"),
        vec!["/node01/logs/resumed.bin"]
    );

    // 5. An agent mirrors a tree into the bucket, then appends growth.
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
            status == 200 && local_hash(&body) == local[*name]
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

    // A folder streamed as a zip: every mirrored file, byte-identical.
    let (status, zip) = web_get(&one, "node01", "/download/node01/mirror?format=zip", &[]);
    assert_eq!(status, 200);
    let zip_file = one.dir.path().join("mirror.zip");
    std::fs::write(&zip_file, zip).unwrap();
    let zipped = web_common::zip_hashes(&zip_file);
    let final_local = tree_hashes(tree.path());
    for (name, hash) in &final_local {
        assert_eq!(
            zipped.get(&format!("mirror/{name}")),
            Some(hash),
            "{name} in the zip: {zipped:?}"
        );
    }

    // 6. Syslog over TCP: 300 lines into one day file, each once, in order.
    let mut sender = std::net::TcpStream::connect(("127.0.0.1", syslog_port)).unwrap();
    for i in 0..300 {
        writeln!(sender, "<13>Nov 22 10:00:00 s3host app: message {i:04}").unwrap();
    }
    sender.flush().unwrap();
    let today = time::OffsetDateTime::now_utc();
    let day_file = format!(
        "/download/syslog/s3host/{:04}/{:02}/{:02}.log",
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

    // 6b. Telemetry: records posted at once by 20 probes are appended to the day's one
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
    let jsonl = format!("/telemetry/{year}/{month}/{day}.jsonl");
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

    // OTT data loggers: each post is its own object, byte-exact (ISO-8859-1 kept), under
    // the logger's folder, never replacing another post of the same second.
    let message = latin1_message("0000452891");
    let body_file = one.dir.path().join("netdl.xml");
    std::fs::write(&body_file, &message).unwrap();
    let body_arg = format!("@{}", body_file.display());
    for _ in 0..2 {
        let (status, reply) = web_get(
            &one,
            "ott",
            "/ott?stationid=0000452891&action=senddata",
            &[
                "-H",
                "Content-Type: application/xml",
                "--data-binary",
                body_arg.as_str(),
            ],
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    }
    let posts_dir = format!("/logger/senddata/{year}/{month}/{day}");
    let posts = admin.nlst(Some(posts_dir.as_str())).await.unwrap();
    assert_eq!(posts.len(), 2, "{posts:?}");
    let mut ott = ftp_login(&one.addr(), "ott", PW).await.unwrap();
    for post in &posts {
        let name = post.rsplit('/').next().unwrap_or_default();
        assert!(name.starts_with("0000452891_"), "{name}");
        let path = format!("{posts_dir}/{name}");
        assert_eq!(
            bucket_object(&cluster, &format!("one{path}")).as_deref(),
            Some(&message[..]),
            "{path} in the bucket"
        );
        assert_eq!(
            ftp_retr(&mut ott, &format!("senddata/{year}/{month}/{day}/{name}"))
                .await
                .unwrap(),
            message
        );
        let (status, body) = web_get(&one, "admin", &format!("/download{path}"), &[]);
        assert_eq!((status, body == message), (200, true), "{path} over HTTP");
    }
    let _ = ott.quit().await;
    let _ = admin.quit().await;

    // 7. One Garage node dies: everything keeps working through the other two.
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

    // 8. A second server on the same bucket and prefix (through node 1), with no users of
    //    its own, takes the shared users.toml, sees what the first stored, and follows new
    //    uploads within a bounded delay.
    let two = s3_server(&cluster, "one", 1, "", false);
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
    ftp_two.rm("logs/resumed.bin").await.unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || {
            search(&one, "node01", "moved") == vec!["/node01/logs/moved.bin"]
                && search(&one, "node01", "through-one").is_empty()
                && search(&one, "node01", "resumed").is_empty()
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
    // 9. Retention on S3 (server 2 stopped, its CLI, a policy added to its config now so
    //    its job at start had none): the old file below the policy goes, a fresh one below
    //    it and everything outside stay, and the removal reaches the catalog.
    let mut two = two;
    assert!(two.stop());
    let mut ftp = ftp_login(&one.addr(), "node01", PW).await.unwrap();
    ftp.put_file("expire/fresh.log", &mut &b"fresh"[..])
        .await
        .unwrap();
    let _ = ftp.quit().await;
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(two.dir.path().join("server.toml"))
        .unwrap();
    writeln!(
        config,
        "[[retention]]\npath = \"/node01/expire\"\nmax_age = \"8s\""
    )
    .unwrap();
    drop(config);
    let dry = two.cli(&["retention", "--dry-run"], "");
    let dry = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(
        dry.contains("would remove /node01/expire/old.log") && dry.contains("1 files would"),
        "{dry}"
    );
    let out = two.cli(&["retention"], "");
    assert!(
        out.status.success(),
        "retention: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(bucket_object(&cluster, "one/node01/expire/old.log"), None);
    assert_eq!(
        bucket_object(&cluster, "one/node01/expire/fresh.log").as_deref(),
        Some(&b"fresh"[..])
    );
    assert!(bucket_object(&cluster, "one/node01/logs/big.bin").is_some());
    let listing = two.cli(&["catalog"], "");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(!listing.contains("/node01/expire/old.log"), "{listing}");
    // `reindex` rebuilds server 2's catalog from the bucket alone.
    let out = two.cli(&["reindex"], "");
    assert!(
        out.status.success(),
        "reindex: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = two.cli(&["catalog"], "");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    for path in [
        "/node01/logs/big.bin",
        "/node01/logs/moved.bin",
        "/node01/logs/after-failure.bin",
        "/node01/mirror/app/a.log",
        "/node01/expire/fresh.log",
    ] {
        assert!(listing.contains(path), "reindex lost {path}: {listing}");
    }
    assert!(!listing.contains("cut.bin"));
    assert!(!listing.contains("/node01/expire/old.log"));
    assert!(
        one.stop(),
        "server 1 did not stop cleanly: {}",
        one.stderr()
    );
    eprintln!("whole S3 test: {:?}", started.elapsed());
}

fn local_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
