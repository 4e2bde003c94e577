//! The HTTP feeds driven with curl: the OTT netDL data-logger endpoint and the telemetry
//! collector, as their real clients use them and with bad requests; and retention.

use std::io::Write;
use std::time::Duration;

use logarchive_tests::{TestServer, free_port, latin1_message, run, skip_on_s3, wait_until};

const PW: &str = "feeds-http-pw";

/// A server with the logger and telemetry feeds on, and users: `ott` (w on /logger),
/// `reader` (no w), `probes` (r on /telemetry) and `admin`.
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
    server.add_user("probes", PW, &["--home", "/telemetry", "--perm", "elr"]);
    server.add_user("admin", PW, &["--admin"]);
    server.start();
    server
}

/// Logs `user` in through the web form with curl; curl's cookie jar (in the returned
/// folder) then holds the session cookie: pass [`jar_args`] to later requests.
fn web_login(server: &TestServer, user: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let jar = dir.path().join("jar");
    let jar = jar.to_str().unwrap_or_default();
    let form = curl(server, &["-c", jar, "-b", jar], "/login").text();
    let marker = "name=\"csrf\" value=\"";
    let csrf = form
        .split(marker)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no csrf field in the login form: {form}"));
    let fields = [
        format!("user={user}"),
        format!("password={PW}"),
        format!("csrf={csrf}"),
        "next=/browse/".to_owned(),
    ];
    let mut args = vec!["-c", jar, "-b", jar];
    for field in &fields {
        args.extend(["--data-urlencode", field.as_str()]);
    }
    let posted = curl(server, &args, "/login");
    assert_eq!(posted.status, 303, "login of {user}: {}", posted.text());
    dir
}

/// curl arguments that send the session cookie of [`web_login`].
fn jar_args(jar: &tempfile::TempDir) -> [String; 2] {
    [
        "-b".to_owned(),
        jar.path().join("jar").display().to_string(),
    ]
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
    server
        .archived_tree(dir)
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

/// A post whose journal line cannot be written is answered 503, not 200 (a logger drops
/// what was answered 200), and leaves no file behind; the logger's retry then stores it
/// once. The fault is real: a folder where today's journal file must be created.
#[test]
fn ott_answers_503_when_its_journal_line_fails_and_the_retry_stores_it_once() {
    if skip_on_s3(
        "ott_answers_503_when_its_journal_line_fails",
        "the fault is a folder in the journal file's place on disk; a bucket has no such place",
    ) {
        return;
    }
    let mut server = http_server("");
    let journal = server
        .archive("/.logarchive/journal")
        .join(format!("uploads-{}.jsonl", today("+%Y-%m-%d")));
    std::fs::create_dir_all(&journal).expect("a folder in the journal's place");
    let body = latin1_message("0000777");
    let path = "/ott?stationid=0000777&action=senddata";
    let refused = post_file(&server, "ott", &body, &[], path);
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("try again"), "{}", refused.text());
    let day = today("+%Y/%m/%d");
    let below = format!("/logger/senddata/{day}");
    assert_eq!(files_below(&server, &below), Vec::new());
    assert_eq!(stats(&server)["logger"]["errors"], 1);

    std::fs::remove_dir(&journal).expect("the journal's place freed");
    let stored = post_file(&server, "ott", &body, &[], path);
    assert_eq!(stored.status, 200, "{}", stored.text());
    let files = files_below(&server, &below);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].1, body);
    assert!(server.stop());
    let out = server.cli(&["catalog", "--json"], "");
    let logged = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["uploader"] == "logger")
        .count();
    assert_eq!(logged, 1);
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

/// A 201 means the record's line is in the archive: with a flush interval of an hour the
/// `.jsonl` has it as soon as the answer comes, so a server killed after answering loses
/// nothing (the probe would not send it again).
#[test]
fn telemetry_answers_201_only_once_its_line_is_in_the_archive() {
    let server = http_server("[syslog]\nflush_interval = \"1h\"\n");
    let payload = format!("durable-{:08x}", rand::random::<u32>());
    let posted = post_v2(&server, "/v2/collector", &v2_headers("2", TID), &payload);
    assert_eq!(posted.status, 201, "{}", posted.text());
    let lines: Vec<String> = files_below(&server, "/telemetry")
        .into_iter()
        .flat_map(|(_, bytes)| {
            String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|line| line.contains(&payload))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
}

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

    // Reading records takes the web UI's logins: none is 401, a user without `r` on
    // /telemetry is refused, admins and `probes` (r on /telemetry) see them.
    let admin_auth = format!("admin:{PW}");
    let admin = ["-u", admin_auth.as_str()];
    let anonymous = curl(&server, &[], "/api/records");
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let reader_auth = format!("reader:{PW}");
    assert_eq!(
        curl(&server, &["-u", &reader_auth], "/api/records").status,
        403
    );
    let probes_auth = format!("probes:{PW}");
    let by_probes = curl(&server, &["-u", &probes_auth], "/api/records");
    assert_eq!(by_probes.status, 200, "{}", by_probes.text());
    assert_eq!(
        by_probes.json()["records"].as_array().map(Vec::len),
        Some(3)
    );

    // Newest first, with the filters.
    let all = curl(&server, &admin, "/api/records").json();
    let ids: Vec<u64> = all["records"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["id"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(ids.len(), 3, "{all}");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let count = |query: &str| {
        curl(&server, &admin, &format!("/api/records?{query}")).json()["records"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(count("classification=org.clearlinux/hello/world"), 2);
    assert_eq!(count("severity=4"), 1);
    assert_eq!(count("machine_id=abc&build=31000"), 1);
    assert_eq!(count("limit=1"), 1);
    assert_eq!(count(&format!("from_id={}", ids[1])), 2);
    assert_eq!(count("created_in_days=1"), 0, "all were created in 2015");
    assert_eq!(
        curl(&server, &admin, "/api/records?limit=20000").status,
        400
    );
    assert_eq!(
        curl(&server, &admin, "/api/records?created_in_sec=99999999").status,
        400
    );

    // And in the archive, one JSON line each, within a second or so.
    let day = today("+%Y/%m/%d");
    let jsonl = server.feed_file("/telemetry", &day, "jsonl");
    let written = wait_until(Duration::from_secs(10), || {
        server
            .archived(&jsonl)
            .is_some_and(|t| String::from_utf8_lossy(&t).lines().count() == 3)
    });
    assert!(written, "{jsonl} has not 3 lines");
    let stats = stats(&server);
    assert_eq!(stats["telemetry"]["stored"], 3, "{stats}");
    assert_eq!(stats["telemetry"]["rejected"], 3, "{stats}");

    // The HTML page: filtered list, counts by classification, an SVG chart; text escaped.
    let mut odd = v2_headers("3", TID);
    odd[1] = "classification: x<script>/y/z".to_owned();
    assert_eq!(post_v2(&server, "/v2/collector", &odd, "p").status, 201);
    // The page wants a web login: anonymous browsers are sent to the form.
    let anonymous = curl(&server, &[], "/telemetry");
    assert_eq!(anonymous.status, 303);
    assert!(
        anonymous
            .headers
            .to_ascii_lowercase()
            .contains("location: /login?next=%2ftelemetry"),
        "{}",
        anonymous.headers
    );
    let reader_jar = web_login(&server, "reader");
    let reader_cookie = jar_args(&reader_jar);
    let reader_cookie: Vec<&str> = reader_cookie.iter().map(String::as_str).collect();
    assert_eq!(curl(&server, &reader_cookie, "/telemetry").status, 403);
    let jar = web_login(&server, "admin");
    let cookie = jar_args(&jar);
    let cookie: Vec<&str> = cookie.iter().map(String::as_str).collect();
    let page = curl(
        &server,
        &cookie,
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
    let all = curl(&server, &cookie, "/telemetry").text();
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
        .find(|e| e["path"] == jsonl.as_str())
        .unwrap_or_else(|| panic!("the .jsonl is not cataloged: {catalog}"));
    assert_eq!(entry["uploader"], "telemetry");
    assert_eq!(
        entry["sha256"],
        logarchive_tests::sha256_hex(&server.archived(&jsonl).unwrap()).as_str()
    );
}

/// The one source named `name` of `feed` in `/api/feeds`.
fn source<'a>(stats: &'a serde_json::Value, feed: &str, name: &str) -> &'a serde_json::Value {
    stats["sources"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["feed"] == feed && s["name"] == name))
        .unwrap_or_else(|| panic!("no {feed} source {name:?} in {stats}"))
}

#[test]
fn feeds_page_and_api_show_each_source_with_counts_states_and_errors() {
    let port = free_port();
    let server = http_server(&format!(
        "[syslog]\nudp = \"127.0.0.1:{port}\"\ntcp = \"127.0.0.1:{port}\"\n"
    ));
    server.wait_for_log("syslog");

    // Syslog: real `logger` over UDP and TCP, then a frame that is not syslog and a
    // malformed F-TICKS line carrying HTML, both over UDP.
    let tag = format!("feedspage{:08x}", rand::random::<u32>());
    let port_text = port.to_string();
    for (transport, n) in [("--udp", 2), ("--tcp", 1)] {
        for i in 0..n {
            let out = run(
                "logger",
                &[
                    transport,
                    "--rfc5424",
                    "-n",
                    "127.0.0.1",
                    "-P",
                    &port_text,
                    "-t",
                    &tag,
                    &format!("{tag} message {transport} {i}"),
                ],
            );
            assert!(out.status.success(), "logger: {out:?}");
        }
    }
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    udp.send_to(b"no header at all", ("127.0.0.1", port))
        .expect("send");
    let fticks = "<134>Nov 22 20:00:00 radius-7 radiusd[1]: F-TICKS/eduroam/1.0#REALM=<script>alert(1)</script>#VISCOUNTRY=CZ#VISINST=example.cz#CSI=x#PN=#RESULT=OK";
    udp.send_to(fticks.as_bytes(), ("127.0.0.1", port))
        .expect("send");
    // A host name with HTML in it: made a safe folder name, and shown as that.
    udp.send_to(
        b"<13>Nov 22 20:00:00 <i>evil</i> app: hello",
        ("127.0.0.1", port),
    )
    .expect("send");
    // The host folder `logger` wrote to, from the archive (the machine's own name).
    let mut host = String::new();
    let landed = wait_until(Duration::from_secs(15), || {
        host = files_below(&server, "/syslog")
            .into_iter()
            .find(|(_, bytes)| String::from_utf8_lossy(bytes).contains(&tag))
            .and_then(|(path, _)| path.split('/').nth(2).map(str::to_owned))
            .unwrap_or_default();
        !host.is_empty()
    });
    assert!(landed, "logger's messages never reached /syslog");

    // Logger: a good body and a not well-formed one from st-42, bad credentials for st-bad.
    let good = post_file(
        &server,
        "ott",
        &latin1_message("st-42"),
        &[],
        "/ott?stationid=st-42&action=senddata",
    );
    assert_eq!(good.status, 200, "{}", good.text());
    let broken = post_file(
        &server,
        "ott",
        b"<a><b></a>",
        &[],
        "/ott?stationid=st-42&action=senddata",
    );
    assert_eq!(broken.status, 200, "{}", broken.text());
    let wrong = curl(
        &server,
        &["-u", "ott:wrong", "--data-binary", "<a/>"],
        "/ott?stationid=st-bad&action=senddata",
    );
    assert_eq!(wrong.status, 401);

    // Telemetry: a machine whose id is HTML, one record stored and then one refused.
    let machine = "<b>m1</b>";
    let mut headers = v2_headers("2", TID);
    headers[3] = format!("machine_id: {machine}");
    assert_eq!(
        post_v2(&server, "/v2/collector", &headers, "ok").status,
        201
    );
    headers[2] = "SEVERITY: 9".to_owned();
    assert_eq!(post_v2(&server, "/v2/collector", &headers, "x").status, 400);

    // The API, with Basic: every source with its counts and state.
    let mut stats = serde_json::Value::Null;
    let counted = wait_until(Duration::from_secs(15), || {
        stats = self::stats(&server);
        stats["sources"].as_array().is_some_and(|all| {
            all.iter()
                .any(|s| s["name"] == host.as_str() && s["counts"]["stored"] == 3)
                && all.iter().any(|s| s["name"] == "radius-7")
                && all.iter().any(|s| s["name"] == "127.0.0.1")
                && all.iter().any(|s| s["name"] == "_i_evil__i_")
        })
    });
    assert!(counted, "syslog sources not counted: {stats}");
    let logger_host = source(&stats, "syslog", &host);
    assert_eq!(logger_host["state"], "ok", "{logger_host}");
    assert_eq!(logger_host["address"], "127.0.0.1");
    let unparsed = source(&stats, "syslog", "127.0.0.1");
    assert_eq!(unparsed["counts"]["unparsed"], 1, "{unparsed}");
    assert!(
        unparsed["last_error_reason"]
            .as_str()
            .is_some_and(|r| r.contains("no <PRI> header")),
        "{unparsed}"
    );
    let radius = source(&stats, "syslog", "radius-7");
    assert_eq!(radius["counts"]["stored"], 1, "{radius}");
    assert_eq!(radius["counts"]["malformed"], 1, "{radius}");
    assert!(
        radius["last_error_reason"]
            .as_str()
            .is_some_and(|r| r.contains("malformed F-TICKS") && r.contains("VISINST")),
        "{radius}"
    );
    let station = source(&stats, "logger", "st-42");
    assert_eq!(station["counts"]["stored"], 1, "{station}");
    assert_eq!(station["counts"]["malformed"], 1, "{station}");
    assert_eq!(station["state"], "erroring", "{station}");
    let refused = source(&stats, "logger", "st-bad");
    assert_eq!(refused["counts"]["refused"], 1, "{refused}");
    assert_eq!(refused["counts"]["stored"], 0, "{refused}");
    let probe = source(&stats, "telemetry", machine);
    assert_eq!(probe["counts"]["stored"], 1, "{probe}");
    assert_eq!(probe["counts"]["refused"], 1, "{probe}");
    assert_eq!(probe["state"], "erroring", "{probe}");
    assert!(
        probe["last_error_reason"]
            .as_str()
            .is_some_and(|r| r.contains("severity")),
        "{probe}"
    );
    assert_eq!(stats["silent_after_secs"], 3600);

    // /metrics counts the same messages for scrapers (Basic auth).
    let metrics = curl(&server, &["-u", &format!("admin:{PW}")], "/metrics").text();
    let counter = |labels: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("logarchive_feed_messages_total{{{labels}}} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no counter {labels}: {metrics}"))
    };
    // The body that is not well-formed XML is kept too, but counted as unparsed.
    for (outcome, expected) in [("stored", 1), ("unparsed", 1), ("rejected", 1)] {
        let labels = format!("feed=\"logger\",outcome=\"{outcome}\"");
        assert_eq!(counter(&labels), expected, "{metrics}");
    }
    assert_eq!(
        counter("feed=\"telemetry\",outcome=\"stored\""),
        1,
        "{metrics}"
    );
    assert!(
        counter("feed=\"syslog\",outcome=\"stored\"") >= 4,
        "{metrics}"
    );

    // The page, with a session: the same sources, HTML in names and reasons inert.
    let jar = web_login(&server, "admin");
    let cookie = jar_args(&jar);
    let cookie: Vec<&str> = cookie.iter().map(String::as_str).collect();
    let page = curl(&server, &cookie, "/admin/feeds");
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    for needle in [
        host.as_str(),
        "radius-7",
        "_i_evil__i_",
        "st-42",
        "st-bad",
        "&#60;b&#62;m1&#60;/b&#62;",
        "&#60;script&#62;alert(1)&#60;/script&#62;",
        "badge erroring",
        "badge ok",
        "malformed 1",
        "href=\"/admin/feeds\"",
    ] {
        assert!(html.contains(needle), "{needle:?} not on the page: {html}");
    }
    assert!(
        !html.contains("<b>m1") && !html.contains("<script>alert") && !html.contains("<i>evil"),
        "HTML from a feed is live: {html}"
    );

    // The agents page's growth chart has the feeds as sources.
    let mut agents = String::new();
    let charted = wait_until(Duration::from_secs(15), || {
        agents = curl(&server, &cookie, "/admin/agents").text();
        ["syslog", "logger", "telemetry"]
            .iter()
            .all(|feed| agents.contains(&format!("font-size=\"11\">{feed}</text>")))
    });
    assert!(charted, "feeds missing from the growth chart: {agents}");

    // Anonymous: 401 for the API, the login form for the page; non-admins are refused.
    let anonymous = curl(&server, &[], "/api/feeds");
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous.json()["error"].is_string(),
        "{}",
        anonymous.text()
    );
    let anonymous = curl(&server, &[], "/admin/feeds");
    assert_eq!(anonymous.status, 303);
    assert!(
        anonymous.headers.contains("/login?next="),
        "{}",
        anonymous.headers
    );
    let reader_auth = format!("reader:{PW}");
    let by_reader = curl(&server, &["-u", &reader_auth], "/api/feeds");
    assert_eq!(by_reader.status, 403, "{}", by_reader.text());
    let reader_jar = web_login(&server, "reader");
    let reader_cookie = jar_args(&reader_jar);
    let reader_cookie: Vec<&str> = reader_cookie.iter().map(String::as_str).collect();
    let page = curl(&server, &reader_cookie, "/admin/feeds");
    assert_eq!(page.status, 403);
    assert!(!page.text().contains("st-42"), "{}", page.text());
    // Basic is for `/api/` only: the page does not take it.
    let admin_auth = format!("admin:{PW}");
    assert_eq!(
        curl(&server, &["-u", &admin_auth], "/admin/feeds").status,
        303
    );
}

fn place(server: &TestServer, path: &str, days_old: u64) {
    let modified = std::time::SystemTime::now() - Duration::from_secs(days_old * 24 * 60 * 60);
    server.plant_modified(path, path.as_bytes(), modified);
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
        server.archived_exists("/old/a/stale.log"),
        "dry run removed a file"
    );

    server.start();
    let gone = wait_until(Duration::from_secs(15), || {
        !server.archived_exists("/old/a")
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
        assert!(server.archived_exists(kept), "{kept} was removed");
    }
    assert!(
        server.archived_exists("/old"),
        "the policy's own folder was removed"
    );
}
