//! The HTTP feeds driven with curl: the OTT netDL data-logger endpoint and the telemetry
//! collector, as their real clients use them and with bad requests; and retention.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use logarchive_tests::{TestServer, run, tree_files, wait_until};

const PW: &str = "feeds-http-pw";

/// A server with the logger and telemetry feeds on, and users: `ott` (w on /logger),
/// `reader` (no w) and `admin`.
fn http_server(extra: &str) -> TestServer {
    let mut server = TestServer::prepare_with_sections(
        "",
        &format!(
            "[logger]\nenabled = true\nmax_body = \"8KiB\"\nrequest_timeout = \"2s\"\n[telemetry]\nenabled = true\n{extra}"
        ),
    );
    server.add_user("ott", PW, &["--home", "/logger", "--perm", "elrw"]);
    server.add_user("reader", PW, &["--home", "/logger", "--perm", "elr"]);
    server.add_user("elsewhere", PW, &["--home", "/elsewhere", "--perm", "elrw"]);
    server.add_user("admin", PW, &["--admin"]);
    server.start();
    server
}

/// A curl reply.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Runs curl against the server's web port; `args` come before the URL.
fn curl(server: &TestServer, args: &[&str], path: &str) -> Reply {
    let dir = tempfile::tempdir().expect("temp dir");
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let url = format!("http://127.0.0.1:{}{path}", server.web_port);
    let mut all = vec![
        "-s",
        "-D",
        headers.to_str().unwrap_or_default(),
        "-o",
        body.to_str().unwrap_or_default(),
        "-w",
        "%{http_code}",
    ];
    all.extend_from_slice(args);
    all.push(&url);
    let out = run("curl", &all);
    Reply {
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

fn post_file(server: &TestServer, user: &str, body: &[u8], extra: &[&str], path: &str) -> Reply {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("body.xml");
    std::fs::write(&file, body).expect("write body");
    let data = format!("@{}", file.display());
    let auth = format!("{user}:{PW}");
    let mut args = vec![
        "-u",
        &auth,
        "-H",
        "Content-Type: application/xml",
        "--data-binary",
        &data,
    ];
    args.extend_from_slice(extra);
    curl(server, &args, path)
}

/// Every file below `dir` in the archive but the server's own folder (path, bytes).
fn files_below(server: &TestServer, dir: &str) -> Vec<(String, Vec<u8>)> {
    let base = dir.trim_end_matches('/');
    tree_files(&server.archive(dir))
        .into_iter()
        .map(|(rel, bytes)| (format!("{base}/{rel}"), bytes))
        .filter(|(path, _)| !path.starts_with("/.logarchive"))
        .collect()
}

fn today(format: &str) -> String {
    let out = run("date", &["-u", format]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stats(server: &TestServer) -> serde_json::Value {
    let auth = format!("admin:{PW}");
    curl(server, &["-u", &auth], "/api/feeds").json()
}

/// A netDL message in ISO-8859-1 (the `é` is one byte, 0xE9).
fn latin1_message(station: &str) -> Vec<u8> {
    let mut body = format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<StationDataList>\n  <StationData stationId=\"{station}\">\n    <ChannelData channelId=\"0010\" name=\"Temp"
    )
    .into_bytes();
    body.push(0xE9);
    body.extend_from_slice(
        b"rature\" unit=\"C\">\n      <Values><VT t=\"2020-10-22T00:15:00\">3.56</VT></Values>\n    </ChannelData>\n  </StationData>\n</StationDataList>\n",
    );
    body
}

#[test]
fn ott_stores_byte_exact_never_overwrites_and_answers_like_the_old_server() {
    let mut server = http_server("");
    let body = latin1_message("0000452891");
    let day = today("+%Y/%m/%d");
    let first = post_file(
        &server,
        "ott",
        &body,
        &[],
        "/ott?stationid=0000452891&action=senddata",
    );
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(
        first
            .headers
            .to_ascii_lowercase()
            .contains("content-type: application/xml"),
        "{}",
        first.headers
    );
    let reply = first.text();
    assert!(
        reply.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>")
            && reply.contains("<Response stationId=\"0000452891\" responseDateTime=\""),
        "{reply}"
    );
    // HTTP/1.0 and a trailing slash, as some loggers send; same second or not, a new file.
    let second = post_file(
        &server,
        "ott",
        &body,
        &["-0"],
        "/ott/?stationid=0000452891&action=senddata",
    );
    assert_eq!(second.status, 200, "{}", second.text());
    let stored = files_below(&server, &format!("/logger/senddata/{day}"));
    assert_eq!(stored.len(), 2, "{stored:?}");
    let date = today("+%Y-%m-%d");
    for (path, bytes) in &stored {
        let name = path.rsplit('/').next().unwrap_or_default();
        assert!(name.starts_with(&format!("0000452891_{date}T")), "{name}");
        assert!(
            !name.contains(':') && name.matches('+').count() == 2,
            "{name}"
        );
        assert_eq!(bytes, &body, "{path} is not byte-exact");
    }

    // Deflate (zlib-wrapped, as HTTP means it) and an alarm.
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&body).expect("deflate");
    let deflated = encoder.finish().expect("deflate");
    let alarm = post_file(
        &server,
        "ott",
        &deflated,
        &["-H", "Content-Encoding: deflate"],
        "/ott?stationid=0000452891&action=sendalarm",
    );
    assert_eq!(alarm.status, 200, "{}", alarm.text());
    let alarms = files_below(&server, "/logger/sendalarm");
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0].1, body);

    // Not well-formed: stored all the same, and flagged.
    let broken = b"<StationDataList><StationData></StationDataList>".to_vec();
    let flagged = post_file(
        &server,
        "ott",
        &broken,
        &[],
        "/ott?stationid=7&action=senddata",
    );
    assert_eq!(flagged.status, 200, "{}", flagged.text());
    let sevens: Vec<_> = files_below(&server, "/logger/senddata")
        .into_iter()
        .filter(|(path, _)| path.contains("/7_"))
        .collect();
    assert_eq!(sevens.len(), 1);
    assert_eq!(sevens[0].1, broken);
    let stats = stats(&server);
    assert_eq!(stats["logger"]["stored"], 3, "{stats}");
    assert_eq!(stats["logger"]["unparsed"], 1, "{stats}");
    let flag = &stats["flagged"][0];
    assert_eq!(flag["feed"], "logger");
    assert_eq!(flag["what"], sevens[0].0.as_str());
    assert!(
        flag["reason"].as_str().unwrap_or_default().contains("XML"),
        "{flag}"
    );

    // Every stored file is in the catalog as the logger's.
    assert!(server.stop());
    let out = server.cli(&["catalog", "--json"], "");
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let logged = entries.iter().filter(|e| e["uploader"] == "logger").count();
    assert_eq!(logged, 4, "{entries:?}");
}

#[test]
fn ott_bad_requests_get_clear_answers_and_never_500() {
    let server = http_server("");
    let body = latin1_message("1");
    let cases: [(&str, &str, u16, &str); 6] = [
        ("ott", "/ott?action=senddata", 400, "stationid"),
        ("ott", "/ott?stationid=1", 400, "action"),
        (
            "ott",
            "/ott?stationid=1&action=deleteall",
            400,
            "unknown action \"deleteall\"",
        ),
        (
            "ott",
            "/ott?stationid=%2F%2F%2F&action=senddata",
            400,
            "no usable characters",
        ),
        (
            "reader",
            "/ott?stationid=1&action=senddata",
            403,
            "may not write",
        ),
        // `w` in its own home is no right on /logger.
        (
            "elsewhere",
            "/ott?stationid=1&action=senddata",
            403,
            "may not write",
        ),
    ];
    for (user, path, status, needle) in cases {
        let reply = post_file(&server, user, &body, &[], path);
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        assert!(reply.text().contains(needle), "{path}: {}", reply.text());
    }
    let wrong = curl(
        &server,
        &["-u", "ott:wrong", "--data-binary", "<a/>"],
        "/ott?stationid=1&action=senddata",
    );
    assert_eq!(wrong.status, 401);
    let anonymous = curl(
        &server,
        &["--data-binary", "<a/>"],
        "/ott?stationid=1&action=senddata",
    );
    assert_eq!(anonymous.status, 401);
    let big = vec![b'x'; 9 * 1024];
    let oversize = post_file(
        &server,
        "ott",
        &big,
        &[],
        "/ott?stationid=1&action=senddata",
    );
    assert_eq!(oversize.status, 413, "{}", oversize.text());
    let not_deflate = post_file(
        &server,
        "ott",
        b"plain text",
        &["-H", "Content-Encoding: deflate"],
        "/ott?stationid=1&action=senddata",
    );
    assert_eq!(not_deflate.status, 400, "{}", not_deflate.text());
    assert!(not_deflate.text().contains("deflate"));
    // A path trick in the station id becomes one harmless name.
    let trick = post_file(
        &server,
        "ott",
        &body,
        &[],
        "/ott?stationid=../../etc&action=senddata",
    );
    assert_eq!(trick.status, 200, "{}", trick.text());
    let stored = files_below(&server, "/");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].0.starts_with("/logger/senddata/"), "{stored:?}");
    assert!(
        stored[0]
            .0
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .starts_with("_.._etc_")
    );

    // A sender that stops halfway through its body gets 408 and its connection back.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", server.web_port)).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(20))).ok();
    slow.write_all(
        b"POST /ott?stationid=1&action=senddata HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n<a>",
    )
    .expect("send");
    let mut answer = [0u8; 1024];
    let n = std::io::Read::read(&mut slow, &mut answer).unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");

    let auth = format!("ott:{PW}");
    let ping = curl(&server, &[], "/ping");
    assert_eq!((ping.status, ping.text().as_str()), (200, "pong"));
    let command = curl(
        &server,
        &["-u", &auth],
        "/ott?stationid=1&action=requestcommand",
    );
    assert_eq!((command.status, command.body.len()), (200, 0));
    let stats = stats(&server);
    assert_eq!(stats["logger"]["errors"], 0, "{stats}");
    assert_eq!(stats["logger"]["oversize"], 1, "{stats}");
}

fn v2_headers(severity: &str, tid: &str) -> Vec<String> {
    [
        "Record-Format-Version: 4".to_owned(),
        "classification: org.clearlinux/hello/world".to_owned(),
        format!("SEVERITY: {severity}"),
        "machine_id: 66c196ce4222dd761470da5e7e35f6f1".to_owned(),
        "creation_timestamp: 1443573575".to_owned(),
        "arch: x86_64".to_owned(),
        "host_type: blank|blank|blank".to_owned(),
        "build: 2980".to_owned(),
        "kernel_version: 4.2.0-120".to_owned(),
        "payload_format_version: 1".to_owned(),
        "system_name: clear-linux-os".to_owned(),
        "board_name: Qemu|Intel".to_owned(),
        "bios_version: Qemu".to_owned(),
        "cpu_model: Intel(R) Core(TM) i7-5650U CPU @ 2.20GHz".to_owned(),
        "event_id: 3a2d799826edc6266d72824d2aac6763".to_owned(),
        format!("X-Telemetry-TID: {tid}"),
        "Content-Type: application/text".to_owned(),
    ]
    .into()
}

fn post_v2(server: &TestServer, path: &str, headers: &[String], payload: &str) -> Reply {
    let mut args: Vec<&str> = Vec::new();
    for header in headers {
        args.extend(["-H", header.as_str()]);
    }
    args.extend(["--data-binary", payload]);
    curl(server, &args, path)
}

const TID: &str = "6907c830-eed9-4ce9-81ae-76daf8d88f0f";

#[test]
fn telemetry_records_are_validated_stored_and_listed() {
    let server = http_server("");
    let v2 = post_v2(&server, "/v2/collector", &v2_headers("2", TID), "hello\n");
    assert_eq!(v2.status, 201, "{}", v2.text());
    let record = v2.json();
    assert_eq!(record["classification"], "org.clearlinux/hello/world");
    assert_eq!(record["severity"], 2);
    assert_eq!(record["payload"], "hello\n");
    assert_eq!(record["ts_capture"], "2015-09-30 00:39:35 UTC");
    assert_eq!(record["external"], false);
    let root = post_v2(&server, "/", &v2_headers("1", TID), "at the root");
    assert_eq!(root.status, 201, "{}", root.text());

    let v3_body = serde_json::json!({
        "record_format_version": "4", "classification": "org.clearlinux/crash/kernel",
        "severity": "4", "machine_id": "abc", "creation_timestamp": "1443573575",
        "arch": "aarch64", "host_type": "board", "build": "31000",
        "kernel_version": "6.1.0-1", "payload_format_version": "1",
        "system_name": "clear-linux-os", "board_name": "b", "cpu_model": "c",
        "bios_version": "d", "event_id": "0123456789abcdef0123456789abcdef",
        "payload": "oops"
    })
    .to_string();
    let tid_header = format!("X-Telemetry-TID: {TID}");
    let v3 = curl(
        &server,
        &[
            "-H",
            &tid_header,
            "-H",
            "Content-Type: application/json",
            "-H",
            "X-CLR-External: true",
            "--data-binary",
            &v3_body,
        ],
        "/v3/collector",
    );
    assert_eq!(v3.status, 201, "{}", v3.text());
    assert_eq!(v3.json()["external"], true);
    assert_eq!(v3.json()["payload"], "oops");

    // Refusals: 400 with a message naming the field.
    let bad_severity = post_v2(&server, "/v2/collector", &v2_headers("9", TID), "x");
    assert_eq!(bad_severity.status, 400);
    assert!(
        bad_severity.json()["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("severity")
    );
    let bad_tid = post_v2(&server, "/v2/collector", &v2_headers("1", "other"), "x");
    assert_eq!(bad_tid.status, 400);
    assert!(
        bad_tid.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("X-Telemetry-TID")
    );
    let not_json = curl(
        &server,
        &["-H", &tid_header, "--data-binary", "{nope"],
        "/v3/collector",
    );
    assert_eq!(not_json.status, 400);
    assert!(
        not_json.json()["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("body")
    );

    // Newest first, with the filters.
    let all = curl(&server, &[], "/api/records").json();
    let ids: Vec<u64> = all["records"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["id"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(ids.len(), 3, "{all}");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let count = |query: &str| {
        curl(&server, &[], &format!("/api/records?{query}")).json()["records"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(count("classification=org.clearlinux/hello/world"), 2);
    assert_eq!(count("severity=4"), 1);
    assert_eq!(count("machine_id=abc&build=31000"), 1);
    assert_eq!(count("limit=1"), 1);
    assert_eq!(count(&format!("from_id={}", ids[1])), 2);
    assert_eq!(count("created_in_days=1"), 0, "all were created in 2015");
    assert_eq!(curl(&server, &[], "/api/records?limit=20000").status, 400);
    assert_eq!(
        curl(&server, &[], "/api/records?created_in_sec=99999999").status,
        400
    );

    // And in the archive, one JSON line each, within a second or so.
    let day = today("+%Y/%m/%d");
    let jsonl = server.archive(&format!("/telemetry/{day}.jsonl"));
    let written = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&jsonl).is_ok_and(|t| t.lines().count() == 3)
    });
    assert!(written, "{} has not 3 lines", jsonl.display());
    let stats = stats(&server);
    assert_eq!(stats["telemetry"]["stored"], 3, "{stats}");
    assert_eq!(stats["telemetry"]["rejected"], 3, "{stats}");

    // The HTML page: filtered list, counts by classification, an SVG chart; text escaped.
    let mut odd = v2_headers("3", TID);
    odd[1] = "classification: x<script>/y/z".to_owned();
    assert_eq!(post_v2(&server, "/v2/collector", &odd, "p").status, 201);
    let page = curl(
        &server,
        &[],
        "/telemetry?classification=org.clearlinux%2Fhello%2Fworld",
    );
    assert_eq!(page.status, 200);
    assert!(
        page.headers.to_ascii_lowercase().contains("text/html"),
        "{}",
        page.headers
    );
    let html = page.text();
    assert!(
        html.contains("<svg") && html.contains("severity 2: 1"),
        "{html}"
    );
    assert!(
        html.contains("<title>org.clearlinux/hello/world: 2</title>"),
        "no bar by classification: {html}"
    );
    assert!(
        html.contains("<td>org.clearlinux/hello/world</td><td>2</td>"),
        "{html}"
    );
    assert!(!html.contains("crash/kernel"), "filter ignored: {html}");
    let all = curl(&server, &[], "/telemetry").text();
    assert!(
        all.contains("x&lt;script&gt;/y/z") && !all.contains("x<script>"),
        "{all}"
    );

    // The day's file is in the catalog as the collector's.
    let mut server = server;
    assert!(server.stop());
    let out = server.cli(&["catalog", "--json"], "");
    let catalog = String::from_utf8_lossy(&out.stdout);
    let entry = catalog
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["path"] == format!("/telemetry/{day}.jsonl").as_str())
        .unwrap_or_else(|| panic!("the .jsonl is not cataloged: {catalog}"));
    assert_eq!(entry["uploader"], "telemetry");
    assert_eq!(
        entry["sha256"],
        logarchive_tests::sha256_file(&jsonl).as_str()
    );
}

fn place(server: &TestServer, path: &str, days_old: u32) {
    let local = server.archive(path);
    std::fs::create_dir_all(local.parent().unwrap_or(Path::new("/"))).expect("mkdir");
    std::fs::write(&local, path).expect("write");
    let stamp = format!("{days_old} days ago");
    let out = run("touch", &["-d", &stamp, local.to_str().unwrap_or_default()]);
    assert!(out.status.success());
}

#[test]
fn retention_dry_run_lists_and_the_job_removes_only_what_policies_cover() {
    let mut server = TestServer::prepare_with_sections(
        "",
        "[[retention]]\npath = \"/old\"\nmax_age = \"1d\"\n[[retention]]\npath = \"/old/keep\"\nmax_age = \"1000d\"\n",
    );
    place(&server, "/old/a/stale.log", 3);
    place(&server, "/old/fresh.log", 0);
    place(&server, "/old/keep/stale.log", 3);
    place(&server, "/elsewhere/stale.log", 400);
    let dry = server.cli(&["retention", "--dry-run"], "");
    let listing = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{dry:?}");
    assert!(
        listing.contains("would remove /old/a/stale.log"),
        "{listing}"
    );
    assert!(listing.contains("1 files would be removed"), "{listing}");
    assert!(
        server.archive("/old/a/stale.log").exists(),
        "dry run removed a file"
    );

    server.start();
    let gone = wait_until(Duration::from_secs(15), || {
        !server.archive("/old/a").exists()
    });
    assert!(
        gone,
        "the job did not remove /old/a/stale.log: {}",
        server.stderr()
    );
    for kept in [
        "/old/fresh.log",
        "/old/keep/stale.log",
        "/elsewhere/stale.log",
    ] {
        assert!(server.archive(kept).exists(), "{kept} was removed");
    }
    assert!(
        server.archive("/old").exists(),
        "the policy's own folder was removed"
    );
}
