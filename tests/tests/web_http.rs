//! The web UI and API over real HTTP against a real server: logins, sessions, CSRF and
//! Basic auth; browse and list with pages and home confinement; traversal in several
//! encodings; view; downloads with Range, ETag and Content-Disposition; zip and tar.gz of a
//! folder unpacked and compared by SHA-256; search; admin user edits that FTP obeys at
//! once; agents, sessions, healthz and metrics; a file name with HTML in it stays inert.

mod web_common;

use std::collections::BTreeMap;
use std::io::Read;

use logarchive_tests::{ftp_login, ftp_retr};
use serde_json::Value;
use web_common::{
    PASSWORD, base, client, csrf_in, ftp_put, login, raw_get, sha256, start_server, status_of,
    text_of, zip_hashes,
};

/// `GET path` with Basic auth as `user`, as JSON.
async fn get_json(server: &logarchive_tests::TestServer, user: &str, path: &str) -> Value {
    api(server, user, path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The status of `GET path` with Basic auth as `user`.
async fn get_status(server: &logarchive_tests::TestServer, user: &str, path: &str) -> u16 {
    api(server, user, path)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn api(server: &logarchive_tests::TestServer, user: &str, path: &str) -> reqwest::RequestBuilder {
    client()
        .get(format!("{}{path}", base(server)))
        .basic_auth(user, Some(PASSWORD))
}

#[tokio::test(flavor = "multi_thread")]
async fn login_sessions_csrf_basic_and_blocking() {
    let server = start_server("", "max_failed_logins = 3");
    let web = client();
    // No anonymous access: pages send to the login form, the API answers 401.
    let response = web
        .get(format!("{}/browse/", base(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );
    let response = web
        .get(format!("{}/api/list?path=/node01", base(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("authentication"));
    assert_eq!(status_of(&web, &server, "/healthz").await, 200);

    // The login form's token must come back with it.
    let page = text_of(&web, &server, "/login").await;
    // The form has its token (and its cookie); a forged one is refused.
    assert_eq!(csrf_in(&page).len(), 64);
    let refused = web
        .post(format!("{}/login", base(&server)))
        .form(&[
            ("user", "node01"),
            ("password", PASSWORD),
            ("csrf", "forged"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    // Each form shown comes with a fresh token.
    let form_csrf = csrf_in(&refused.text().await.unwrap());
    let wrong = web
        .post(format!("{}/login", base(&server)))
        .form(&[
            ("user", "node01"),
            ("password", "nope-nope"),
            ("csrf", &form_csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Wrong user name or password")
    );

    // A good login: an HttpOnly, SameSite=Strict session cookie.
    let page = text_of(&web, &server, "/login").await;
    let form_csrf = csrf_in(&page);
    let ok = web
        .post(format!("{}/login", base(&server)))
        .form(&[
            ("user", "node01"),
            ("password", PASSWORD),
            ("csrf", &form_csrf),
            ("next", "/browse/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    let cookie = ok
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("logarchive_session="))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let home = web
        .get(format!("{}/browse/", base(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(home.headers()["location"], "/browse/node01");
    let page = web
        .get(format!("{}/browse/node01", base(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csrf = csrf_in(&page.text().await.unwrap());
    // The cookie works for the API too, but a change needs the CSRF header.
    assert_eq!(
        status_of(&web, &server, "/api/list?path=/node01").await,
        200
    );
    let no_token = web
        .delete(format!("{}/api/users/node02", base(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 403);

    // Logout needs the token; afterwards the cookie is worthless.
    assert_eq!(
        web.post(format!("{}/logout", base(&server)))
            .form(&[("csrf", "forged")])
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        web.post(format!("{}/logout", base(&server)))
            .form(&[("csrf", &csrf)])
            .send()
            .await
            .unwrap()
            .status(),
        303
    );
    assert_eq!(status_of(&web, &server, "/browse/node01").await, 303);

    // Basic auth on the API; a wrong password is 401; three failures block the pair.
    assert_eq!(
        get_status(&server, "node02", "/api/list?path=/node02").await,
        200
    );
    for _ in 0..3 {
        let r = client()
            .get(format!("{}/api/list", base(&server)))
            .basic_auth("lister", Some("wrong-password"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let blocked = api(&server, "lister", "/api/list").send().await.unwrap();
    assert_eq!(
        blocked.status(),
        429,
        "blocked after repeated failures even with the right password"
    );
    // Basic is for the API only: pages still ask for the form.
    let page = client()
        .get(format!("{}/browse/node02", base(&server)))
        .basic_auth("node02", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);

    // A disabled user is refused at once, also with a live session.
    let web = client();
    login(&web, &server, "node02").await;
    let out = server.cli(&["user", "set", "node02", "--enabled", "false"], "");
    assert!(out.status.success());
    // The server re-reads users.toml within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let status = get_status(&server, "node02", "/api/list?path=/node02").await;
        if status == 401 || std::time::Instant::now() > deadline {
            assert_eq!(status, 401, "a disabled user is refused");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status_of(&web, &server, "/browse/node02").await, 303);
    let metrics = api(&server, "admin", "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // One form, three Basic, and the disabled user's attempt.
    assert!(
        metrics.contains("logarchive_web_failed_logins_total 5"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn browse_and_list_pages_confinement_traversal_and_inert_names() {
    let mut server = start_server("", "");
    // 250 files placed by hand and catalogued by `reindex` (the listing is derived data),
    // plus a few over FTP, which carry their source.
    server.stop();
    for i in 0..250 {
        server.plant(
            &format!("/node01/many/f{i:03}.log"),
            format!("line {i}\n").as_bytes(),
        );
    }
    server.plant("/node01/many/sub/inner.log", b"inner\n");
    server.plant("/node02/secret.log", b"node02 only\n");
    let out = server.cli(&["reindex"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.start();
    ftp_put(&server, "node01", "/Logs/app.log", b"hello\n").await;
    ftp_put(
        &server,
        "node01",
        "/Logs/<img src=x onerror=alert(1)>.log",
        b"x\n",
    )
    .await;

    // Pages of 100 through 251 entries: every name once, `next` null at the end.
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = "/api/list?path=/node01/many&limit=100".to_owned();
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", urlencode(c)));
        }
        let page: Value = get_json(&server, "node01", &url).await;
        pages += 1;
        for entry in page["entries"].as_array().unwrap() {
            names.push(entry["name"].as_str().unwrap().to_owned());
            if entry["name"] == "sub" {
                assert_eq!(entry["kind"], "dir");
                assert_eq!(entry["path"], "/node01/many/sub");
            }
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 251);
    let unique: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), 251);
    // The contract's entry shape, with the FTP user as source.
    let logs: Value = get_json(&server, "node01", "/api/list?path=/node01/Logs").await;
    let app = logs["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "app.log")
        .unwrap();
    assert_eq!(app["path"], "/node01/Logs/app.log");
    assert_eq!(app["size"], 6);
    assert_eq!(app["kind"], "file");
    assert_eq!(app["source"], "node01");
    assert!(app["modified"].as_str().unwrap().ends_with('Z'));
    // Sorted by size, descending; filtered.
    let sorted: Value = api(
        &server,
        "node01",
        "/api/list?path=/node01/Logs&sort=size&order=desc",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(sorted["entries"][0]["name"], "app.log");
    let filtered: Value =
        get_json(&server, "node01", "/api/list?path=/node01/many&filter=F24").await;
    assert_eq!(filtered["entries"].as_array().unwrap().len(), 10);

    // Bad parameters: 400 with a JSON error, never 500.
    for url in [
        "/api/list?path=/node01&limit=100000",
        "/api/list?path=/node01&limit=0",
        "/api/list?path=/node01&limit=abc",
        "/api/list?path=/node01&cursor=%2Fnode02%2Fx",
        "/api/list?path=/node01&sort=colour",
        "/api/list?path=/node01/../node02",
        "/api/list?path=/node01/Logs/app.log",
    ] {
        let response = api(&server, "node01", url).send().await.unwrap();
        assert_eq!(response.status(), 400, "{url}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{url}");
    }
    // Outside the home: 403; unknown: 404; `l` missing: 403.
    assert_eq!(
        get_status(&server, "node01", "/api/list?path=/node02").await,
        403
    );
    assert_eq!(get_status(&server, "node01", "/api/list?path=/").await, 403);
    assert_eq!(
        get_status(&server, "node01", "/api/list?path=/node01/nothing").await,
        404
    );
    assert_eq!(
        get_status(&server, "node01", "/api/list?path=/.logarchive").await,
        404
    );
    assert_eq!(
        get_status(&server, "admin", "/api/list?path=/.logarchive/journal").await,
        404
    );
    assert_eq!(
        get_status(&server, "node02", "/api/list?path=/node02").await,
        200
    );

    // Traversal, sent byte for byte, in several encodings, on every route: refused, and
    // never a byte of the other user's file.
    for target in [
        "/api/list?path=/node01/%2e%2e/node02",
        "/api/list?path=%2Fnode01%2F..%2Fnode02",
        "/browse/node01/../node02",
        "/browse/node01/%2e%2e/node02",
        "/browse/node01/%2E%2E%2Fnode02",
        "/view/node01/..%2Fnode02%2Fsecret.log",
        "/download/node01/%2e%2e/node02/secret.log",
        "/download/node01/..%252Fnode02/secret.log",
        "/download/node02/secret.log",
        "/download/node01/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/view/..%5c..%5cetc%5cpasswd",
    ] {
        let (status, body) = raw_get(&server, target, Some("node01"));
        assert!([303, 400, 403, 404].contains(&status), "{target}: {status}");
        assert!(
            !body.contains("node02 only") && !body.contains("root:x:"),
            "{target}"
        );
    }
    // Scripts download with Basic; pages still want the form.
    let (status, body) = raw_get(&server, "/download/node02/secret.log", Some("node02"));
    assert_eq!(status, 200);
    assert!(body.ends_with("\r\n\r\nnode02 only\n"), "{body}");
    let (status, _) = raw_get(&server, "/browse/node02", Some("node02"));
    assert_eq!(status, 303, "Basic is not a page login");

    // The HTML page: breadcrumbs, pages, and a name with HTML in it shown as text.
    let web = client();
    login(&web, &server, "node01").await;
    let page = web
        .get(format!("{}/browse/node01/Logs", base(&server)))
        .send()
        .await
        .unwrap();
    // Even a name that slipped through would find no inline script allowed.
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    let page = page.text().await.unwrap();
    assert!(
        page.contains("&#60;img src=x onerror=alert(1)&#62;.log"),
        "{page}"
    );
    assert!(!page.contains("<img src=x"));
    assert!(page.contains("href=\"/browse/node01\""));
    let first = text_of(&web, &server, "/browse/node01/many?limit=100").await;
    assert!(
        first.contains(">f099.log<")
            && !first.contains(">f100.log<")
            && first.contains("id=\"next\"")
    );
    let error = web
        .get(format!("{}/browse/node02", base(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(error.status(), 403);
    assert!(error.text().await.unwrap().contains("outside your home"));
    // A user whose home is the root sees the root, without a redirect loop.
    let admin = client();
    login(&admin, &server, "admin").await;
    let root = admin
        .get(format!("{}/browse/", base(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), 200);
    let root = root.text().await.unwrap();
    assert!(
        root.contains(">node01/<") && !root.contains(".logarchive"),
        "{root}"
    );
    let lister = client();
    login(&lister, &server, "lister").await;
    assert_eq!(
        status_of(&lister, &server, "/browse/node01/Logs").await,
        200
    );
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn view_and_download_files_and_folders() {
    let server = start_server("", "");
    let lines: String = (1..=5000).map(|i| format!("line number {i}\n")).collect();
    ftp_put(&server, "node01", "/Logs/big.log", lines.as_bytes()).await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, b"first\ncompressed <b>line</b>\n").unwrap();
    ftp_put(&server, "node01", "/Logs/old.log.gz", &gz.finish().unwrap()).await;
    ftp_put(
        &server,
        "node01",
        "/Logs/binary.log",
        &[0xff, 0xfe, b'o', b'k', b'\n'],
    )
    .await;
    let odd_name = "é \"quoted\" ;x.log";
    ftp_put(&server, "node01", &format!("/Logs/{odd_name}"), b"odd\n").await;
    let mut originals = BTreeMap::new();
    for (name, size) in [
        ("Logs/deep/a.log", 300_000),
        ("Logs/deep/b.log", 17),
        ("Logs/c.log", 5),
    ] {
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        ftp_put(&server, "node01", &format!("/{name}"), &bytes).await;
        originals.insert(name.to_owned(), sha256(&bytes));
    }
    originals.insert("Logs/big.log".into(), sha256(lines.as_bytes()));
    originals.insert(
        "Logs/binary.log".into(),
        sha256(&[0xff, 0xfe, b'o', b'k', b'\n']),
    );
    originals.insert(format!("Logs/{odd_name}"), sha256(b"odd\n"));
    let gz_bytes = server.archived("/node01/Logs/old.log.gz").unwrap();
    originals.insert("Logs/old.log.gz".into(), sha256(&gz_bytes));

    let web = client();
    login(&web, &server, "node01").await;
    let get = |path: &str| web.get(format!("{}{path}", base(&server)));
    // View: numbered lines, a page at a time; the tail; .gz decompressed; escaped.
    let page = get("/view/node01/Logs/big.log")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<td class=\"ln\">1</td><td class=\"line\">line number 1</td>"));
    assert!(!page.contains("line number 5000"), "a huge file is paged");
    let next = page
        .split("id=\"next\" href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&#61;", "=")
        .replace("&amp;", "&");
    let second = get(&next).send().await.unwrap().text().await.unwrap();
    assert!(
        second.contains("line number 4000") || second.contains("line number 3000"),
        "{next}"
    );
    let tail = get("/view/node01/Logs/big.log?tail=3")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        tail.contains("line number 5000")
            && tail.contains("line number 4998")
            && !tail.contains("line number 4997<")
    );
    let follow = get("/view/node01/Logs/big.log?follow=1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(follow.contains("http-equiv=\"refresh\"") && follow.contains("line number 5000"));
    let gz_page = get("/view/node01/Logs/old.log.gz")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        gz_page.contains("compressed &#60;b&#62;line&#60;/b&#62;"),
        "{gz_page}"
    );
    let binary = get("/view/node01/Logs/binary.log")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(binary.contains("\u{fffd}\u{fffd}ok"));
    assert_eq!(
        get("/view/node01/Logs/big.log?tail=0")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        get("/view/node01/Logs/big.log?offset=99999999")
            .send()
            .await
            .unwrap()
            .status(),
        416
    );
    assert_eq!(
        get("/view/node01/Logs/big.log?offset=-1")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        get("/view/node01/Logs/none.log")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The same as JSON.
    let tail: Value = api(
        &server,
        "node01",
        "/api/view?path=/node01/Logs/big.log&tail=2",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(tail["lines"][1]["text"], "line number 5000");
    assert_eq!(tail["lines"][1]["number"], "-1");
    assert_eq!(tail["size"], lines.len());
    let head: Value = get_json(&server, "node01", "/api/view?path=/node01/Logs/big.log").await;
    assert_eq!(head["lines"][0]["number"], "1");
    assert!(head["next_offset"].as_u64().unwrap() > 0 && head["prev_offset"].is_null());
    for (url, status) in [
        ("/api/view?path=/node01/Logs", 400),
        ("/api/view?path=/node02/x.log", 403),
        ("/api/view?path=/node01/Logs/big.log&tail=99999", 400),
        ("/api/view", 400),
    ] {
        assert_eq!(get_status(&server, "node01", url).await, status, "{url}");
    }
    // A file used as a folder, and control characters: refused, not a server error.
    for path in [
        "/view/node01/Logs/big.log/x",
        "/download/node01/Logs/big.log/x",
        "/view/node01/Logs/%01x",
    ] {
        assert_eq!(get(path).send().await.unwrap().status(), 400, "{path}");
    }
    let lister = client();
    login(&lister, &server, "lister").await;
    let refused = lister
        .get(format!("{}/view/node01/Logs/big.log", base(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "viewing needs r");
    assert_eq!(
        status_of(&lister, &server, "/download/node01/Logs/big.log").await,
        403
    );

    // Download: whole, ranged, conditional, named.
    let whole = get("/download/node01/Logs/big.log").send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    let etag = whole.headers()["etag"].to_str().unwrap().to_owned();
    let modified = whole.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(modified.ends_with(" GMT"));
    assert_eq!(
        sha256(&whole.bytes().await.unwrap()),
        originals["Logs/big.log"]
    );
    let part = get("/download/node01/Logs/big.log")
        .header("range", "bytes=5-18")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 5-18/{}", lines.len())
    );
    assert_eq!(part.text().await.unwrap(), "number 1\nline ");
    let suffix = get("/download/node01/Logs/big.log")
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(
        suffix.text().await.unwrap(),
        " 5000\n".chars().skip(1).collect::<String>()
    );
    let past = get("/download/node01/Logs/big.log")
        .header("range", "bytes=99999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 416);
    assert_eq!(
        past.headers()["content-range"],
        format!("bytes */{}", lines.len())
    );
    let cached = get("/download/node01/Logs/big.log")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    let stale = get("/download/node01/Logs/big.log")
        .header("range", "bytes=0-3")
        .header("if-range", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        stale.status(),
        200,
        "If-Range with another version sends the whole file"
    );
    let fresh = get("/download/node01/Logs/big.log")
        .header("range", "bytes=0-3")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 206);
    let odd = get(&format!("/download/node01/Logs/{}", urlencode(odd_name)))
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), 200);
    let disposition = odd.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\""),
        "{disposition}"
    );
    assert!(
        disposition.contains("filename*=UTF-8''%C3%A9%20%22quoted%22%20%3Bx%2Elog"),
        "{disposition}"
    );
    assert_eq!(
        get("/download/node01/Logs").send().await.unwrap().status(),
        400,
        "a folder needs ?format"
    );
    assert_eq!(
        get("/download/node01/Logs?format=rar")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    // The folder as tar.gz and as zip: unpacked, every file as uploaded.
    let tgz = get("/download/node01/Logs?format=tar.gz")
        .send()
        .await
        .unwrap();
    assert_eq!(tgz.status(), 200);
    assert!(
        tgz.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("Logs.tar.gz")
    );
    let tgz = tgz.bytes().await.unwrap();
    let mut unpacked = BTreeMap::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&tgz[..]));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        unpacked.insert(name, sha256(&bytes));
    }
    assert_eq!(unpacked, originals);
    let zip = get("/download/node01/Logs?format=zip")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let zip_file = server.dir.path().join("Logs.zip");
    std::fs::write(&zip_file, &zip).unwrap();
    let from_zip = zip_hashes(&zip_file);
    assert_eq!(from_zip, originals);
    // A selection.
    let some = get("/download/node01/Logs?format=tar.gz&select=deep")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&some[..]));
    let names: Vec<String> = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["Logs/deep/a.log", "Logs/deep/b.log"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn folder_downloads_respect_the_size_cap() {
    let server = start_server("max_archive_size = \"1KiB\"", "");
    ftp_put(&server, "node01", "/d/a.log", &[b'a'; 800]).await;
    ftp_put(&server, "node01", "/d/b.log", &[b'b'; 800]).await;
    let over = api(&server, "node01", "/api/list?path=/node01/d")
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), 200);
    let web = client();
    login(&web, &server, "node01").await;
    let refused = web
        .get(format!("{}/download/node01/d?format=zip", base(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("max_archive_size"));
    let one = web
        .get(format!(
            "{}/download/node01/d?format=zip&select=a.log",
            base(&server)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200, "a selection under the cap is fine");
    let head = web
        .head(format!(
            "{}/download/node01/d?format=tar.gz&select=a.log",
            base(&server)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "application/gzip");
}

#[tokio::test(flavor = "multi_thread")]
async fn search_from_the_catalog() {
    let server = start_server("", "");
    for name in [
        "/Logs/app-2026-01.log",
        "/Logs/app-2026-02.log",
        "/Logs/db.log",
        "/Other/APP-notes.txt",
    ] {
        ftp_put(&server, "node01", name, name.as_bytes()).await;
    }
    ftp_put(&server, "node02", "/Logs/app-node02.log", b"x").await;
    let search = |user: &str, query: &str| api(&server, user, &format!("/api/search?{query}"));
    let names = |v: &Value| -> Vec<String> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_owned())
            .collect()
    };
    let glob: Value = search("node01", "q=app-*.log")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        names(&glob),
        [
            "/node01/Logs/app-2026-01.log",
            "/node01/Logs/app-2026-02.log"
        ]
    );
    let substring: Value = search("node01", "q=app")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        names(&substring).len(),
        3,
        "case-insensitive substring, own home only"
    );
    let under: Value = search("node01", "q=app&path=/node01/Other")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(names(&under), ["/node01/Other/APP-notes.txt"]);
    let all: Value = search("admin", "q=app&path=/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(names(&all).len(), 4);
    let by_source: Value = search("admin", "q=&path=/&source=node02")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(names(&by_source), ["/node02/Logs/app-node02.log"]);
    assert_eq!(by_source["entries"][0]["source"], "node02");
    let sized: Value = search("node01", "q=&min_size=21&max_size=21")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(names(&sized).len(), 2, "{sized}");
    let future: Value = search("node01", "q=app&from=2999-01-01T00:00:00Z")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(names(&future).is_empty());
    let past: Value = search(
        "node01",
        "q=app&to=2999-01-01T00:00:00Z&from=2000-01-01T00:00:00Z",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(names(&past).len(), 3);
    // Pages: one at a time, by cursor.
    let first: Value = search("node01", "q=.&limit=2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(names(&first).len(), 2);
    let cursor = first["next"].as_str().unwrap();
    let rest: Value = search(
        "node01",
        &format!("q=.&limit=2&cursor={}", urlencode(cursor)),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(names(&rest).len(), 2);
    assert!(names(&first).iter().all(|n| !names(&rest).contains(n)));
    // Refusals.
    assert_eq!(
        search("node01", "q=app&path=/node02")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        search("node01", "q=app&from=yesterday")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        search("node01", "q=[unclosed")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        search("node01", "q=app&limit=5000")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        search("node01", "q=app&min_size=-3")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    // The page.
    let web = client();
    login(&web, &server, "node01").await;
    let page = text_of(&web, &server, "/search?q=db").await;
    assert!(page.contains("/node01/Logs/db.log"));
    // Empty optional fields, as a browser sends them, mean "not given".
    let status = web
        .get(format!(
            "{}/search?q=db&path=&from=&to=&source=&min_size=&max_size=",
            base(&server)
        ))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_edits_users_and_ftp_obeys_at_once() {
    let server = start_server("", "");
    let users_file = server.dir.path().join("users.toml");
    let text = std::fs::read_to_string(&users_file).unwrap();
    std::fs::write(&users_file, format!("# kept: an operator's note\n{text}")).unwrap();
    ftp_put(&server, "node02", "/x.log", b"data\n").await;

    // Only admins.
    assert_eq!(get_status(&server, "node01", "/api/users").await, 403);
    let web = client();
    login(&web, &server, "node01").await;
    assert_eq!(status_of(&web, &server, "/admin/users").await, 403);

    let listed: Value = get_json(&server, "admin", "/api/users").await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "node02" && u["perm"] == "elrfmw")
    );
    assert!(
        !listed.to_string().contains("argon2"),
        "no hashes in the API"
    );
    // Add, with validation.
    let add = |body: Value| {
        client()
            .post(format!("{}/api/users", base(&server)))
            .basic_auth("admin", Some(PASSWORD))
            .json(&body)
            .send()
    };
    let bad = add(serde_json::json!({"name": "node03", "password": PASSWORD, "perm": "elrq"}))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(
        bad.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains('q')
    );
    assert_eq!(
        add(serde_json::json!({"name": "node03", "password": "short"}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        add(serde_json::json!({"name": "node03", "password": PASSWORD, "colour": "red"}))
            .await
            .unwrap()
            .status(),
        400
    );
    let created = add(serde_json::json!({"name": "node03", "password": PASSWORD, "perm": "elr", "dirs": {"/node03/in": "elrw"}})).await.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(
        add(serde_json::json!({"name": "node03", "password": PASSWORD}))
            .await
            .unwrap()
            .status(),
        409
    );
    ftp_login(&server.addr(), "node03", PASSWORD)
        .await
        .expect("the new user logs in over FTP");

    // The admin form: change node02's permission string (CSRF checked), and FTP refuses RETR.
    let admin = client();
    let csrf = login(&admin, &server, "admin").await;
    let page = text_of(&admin, &server, "/admin/users/node02").await;
    assert!(page.contains("value=\"elrfmw\"") && page.contains("data-letter=\"r\""));
    let form = |token: &str, perm: &str| {
        admin
            .post(format!("{}/admin/users/node02", base(&server)))
            .form(&[
                ("csrf", token),
                ("perm", perm),
                ("home", "/node02"),
                ("enabled", "on"),
                ("dirs", ""),
            ])
            .send()
    };
    assert_eq!(form("forged", "el").await.unwrap().status(), 403);
    let mut ftp = ftp_login(&server.addr(), "node02", PASSWORD).await.unwrap();
    assert_eq!(ftp_retr(&mut ftp, "/x.log").await.unwrap(), b"data\n");
    let saved = form(&csrf, "el").await.unwrap();
    assert_eq!(saved.status(), 303);
    let err = ftp_retr(&mut ftp, "/x.log")
        .await
        .expect_err("r was taken away");
    assert!(err.to_string().contains("'r'"), "{err}");
    let bad = form(&csrf, "elx").await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("x"));
    // The users page lists everybody; its form adds a user that FTP knows at once.
    let page = text_of(&admin, &server, "/admin/users").await;
    assert!(page.contains(">node02</a>") && page.contains("<code>el</code>"));
    let added = admin
        .post(format!("{}/admin/users", base(&server)))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "node04"),
            ("password", PASSWORD),
            ("home", ""),
            ("perm", "elr"),
            ("enabled", "on"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 303);
    let node04 = get_json(&server, "admin", "/api/users/node04").await;
    assert_eq!(node04["home"], "/node04");
    assert_eq!(node04["perm"], "elr");
    assert_eq!(node04["admin"], false);
    ftp_login(&server.addr(), "node04", PASSWORD)
        .await
        .expect("a user added in the browser logs in over FTP");
    let after = std::fs::read_to_string(&users_file).unwrap();
    assert!(after.starts_with("# kept: an operator's note"), "{after}");

    // PUT: disable; FTP login refused. Reset the password. Delete.
    let put = |name: &str, body: Value| {
        client()
            .put(format!("{}/api/users/{name}", base(&server)))
            .basic_auth("admin", Some(PASSWORD))
            .json(&body)
            .send()
    };
    let changed = put("node03", serde_json::json!({"enabled": false}))
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(changed.json::<Value>().await.unwrap()["enabled"], false);
    assert!(ftp_login(&server.addr(), "node03", PASSWORD).await.is_err());
    assert_eq!(
        put(
            "node03",
            serde_json::json!({"enabled": true, "password": "another-password"})
        )
        .await
        .unwrap()
        .status(),
        200
    );
    ftp_login(&server.addr(), "node03", "another-password")
        .await
        .expect("new password works");
    assert_eq!(
        put("admin", serde_json::json!({"admin": false}))
            .await
            .unwrap()
            .status(),
        400,
        "no self lock-out"
    );
    assert_eq!(
        put("ghost", serde_json::json!({"enabled": false}))
            .await
            .unwrap()
            .status(),
        404
    );
    let delete = |name: &str| {
        client()
            .delete(format!("{}/api/users/{name}", base(&server)))
            .basic_auth("admin", Some(PASSWORD))
            .send()
    };
    assert_eq!(delete("node03").await.unwrap().status(), 204);
    assert!(
        ftp_login(&server.addr(), "node03", "another-password")
            .await
            .is_err()
    );
    assert_eq!(delete("admin").await.unwrap().status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_sessions_metrics_and_healthz() {
    let server = start_server("agent_silent_after = \"5m\"", "");
    let now = time::OffsetDateTime::now_utc();
    let at = |minutes: i64| {
        (now - time::Duration::minutes(minutes))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let report = |id: &str, updated: String, success: String, error: Option<String>| {
        serde_json::json!({
            "agent_id": id, "version": "0.1.0", "host": format!("{id}.example"), "updated": updated,
            "backlog_files": 3, "backlog_bytes": 4096,
            "last_success": {"at": success, "message": "sent"},
            "last_error": error.map(|e| serde_json::json!({"at": e, "message": "550 <refused>"})),
        })
        .to_string()
    };
    ftp_put(
        &server,
        "node01",
        "/.logarchive-agent/status.json",
        report("n1", at(0), at(10), Some(at(1))).as_bytes(),
    )
    .await;
    ftp_put(&server, "node01", "/Logs/a.log", b"12345").await;
    ftp_put(
        &server,
        "node02",
        "/.logarchive-agent/status.json",
        report("n2", at(30), at(31), None).as_bytes(),
    )
    .await;
    let agents: Value = get_json(&server, "admin", "/api/agents").await;
    let by_id = |id: &str| {
        agents
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .cloned()
            .unwrap()
    };
    let n1 = by_id("n1");
    assert_eq!(n1["state"], "erroring");
    assert_eq!(n1["host"], "n1.example");
    assert_eq!(n1["backlog_files"], 3);
    assert_eq!(n1["last_error"], "550 <refused>");
    assert!(n1["files_24h"].as_u64().unwrap() >= 2, "{n1}");
    assert!(n1["last_upload"].is_string());
    assert_eq!(by_id("n2")["state"], "silent");
    assert_eq!(get_status(&server, "node01", "/api/agents").await, 403);
    let web = client();
    login(&web, &server, "admin").await;
    let page = text_of(&web, &server, "/admin/agents").await;
    assert!(
        page.contains("badge erroring")
            && page.contains("badge silent")
            && page.contains("<svg id=\"growth\"")
    );
    assert!(page.contains("550 &#60;refused&#62;") && page.contains("<rect"));

    // A live FTP session is listed.
    let ftp = ftp_login(&server.addr(), "node02", PASSWORD).await.unwrap();
    let sessions: Value = get_json(&server, "admin", "/api/sessions").await;
    assert!(
        sessions
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["user"] == "node02"),
        "{sessions}"
    );
    let page = text_of(&web, &server, "/admin/sessions").await;
    assert!(page.contains("<td>node02</td>"));
    drop(ftp);

    let metrics = api(&server, "node01", "/metrics").send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    assert!(text.contains("logarchive_catalog_files 3"), "{text}");
    assert!(text.contains("logarchive_ftp_sessions "));
    assert!(text.contains("logarchive_web_responses_total{class=\"2xx\"}"));
    assert_eq!(
        client()
            .get(format!("{}/metrics", base(&server)))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Assets are served by the server itself (no CDN), without a login.
    let css = client()
        .get(format!("{}/assets/style.css", base(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert_eq!(
        client()
            .get(format!("{}/healthz", base(&server)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok\n"
    );
    let (status, body) = raw_get(&server, "/api/nothing", Some("node01"));
    assert_eq!(status, 404);
    assert!(body.contains("\"error\""));
}

/// The sessions page and `/api/sessions` show a throttled upload while it runs: user,
/// client address, path, direction, bytes so far and rate; then the idle session; then
/// nothing once the client has gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_show_the_running_transfer() {
    // Every user's uploads are throttled, so the transfer lasts seconds.
    let server = start_server("", "max_upload_rate = \"64KiB/s\"");
    const SIZE: usize = 256 * 1024;
    let addr = server.addr();
    let upload = tokio::spawn(async move {
        let mut ftp = ftp_login(&addr, "node01", PASSWORD)
            .await
            .expect("ftp login");
        let data = vec![7u8; SIZE];
        ftp.put_file("slow.bin", &mut &data[..])
            .await
            .expect("ftp put");
        ftp
    });
    let slow_session = |sessions: &Value| {
        sessions
            .as_array()
            .and_then(|all| all.iter().find(|s| s["user"] == "node01").cloned())
    };
    // Wait for the transfer to show with some bytes moved, but not all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let running = loop {
        let sessions = get_json(&server, "admin", "/api/sessions").await;
        if let Some(session) = slow_session(&sessions)
            && session["transfer"]["bytes"].as_u64().is_some_and(|n| n > 0)
        {
            break session;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no running transfer listed: {sessions}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(running["address"], "127.0.0.1", "{running}");
    assert!(running["since"].is_string(), "{running}");
    let transfer = &running["transfer"];
    assert_eq!(transfer["path"], "/node01/slow.bin", "{running}");
    assert_eq!(transfer["direction"], "upload", "{running}");
    assert!(
        transfer["bytes"].as_u64().unwrap() < SIZE as u64,
        "{running}"
    );
    assert!(transfer["rate"].as_u64().unwrap() > 0, "{running}");
    let web = client();
    login(&web, &server, "admin").await;
    let page = text_of(&web, &server, "/admin/sessions").await;
    assert!(
        page.contains("<td>node01</td><td>127.0.0.1</td>")
            && page.contains("<td class=\"transfer\">upload /node01/slow.bin</td>"),
        "{page}"
    );
    // Finished: the session stays, idle; gone once the client quits.
    let mut ftp = upload.await.unwrap();
    let sessions = get_json(&server, "admin", "/api/sessions").await;
    let idle = slow_session(&sessions).expect("the session is still open");
    assert!(idle["transfer"].is_null(), "{idle}");
    ftp.quit().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let sessions = get_json(&server, "admin", "/api/sessions").await;
        if slow_session(&sessions).is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session outlived QUIT: {sessions}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `[web] cert` / `key`: the listener speaks HTTPS (curl trusts the private CA), the
/// login cookie is `Secure`, Basic-auth API calls work over it, and plain HTTP gets no
/// page.
#[tokio::test(flavor = "multi_thread")]
async fn https_when_a_certificate_is_configured() {
    let tls_dir = tempfile::tempdir().unwrap();
    let ca = logarchive_tests::write_tls_files(tls_dir.path());
    let (cert, key) = (
        tls_dir.path().join("cert.pem"),
        tls_dir.path().join("key.pem"),
    );
    let server = start_server(
        &format!("cert = \"{}\"\nkey = \"{}\"", cert.display(), key.display()),
        "",
    );
    let url = |path: &str| format!("https://localhost:{}{path}", server.web_port);
    let ca = ca.to_str().unwrap();
    let login = logarchive_tests::run(
        "curl",
        &[
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--cacert",
            ca,
            &url("/login"),
        ],
    );
    let headers = String::from_utf8_lossy(&login.stdout);
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    let cookie = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{headers}"
    );
    let credentials = format!("admin:{PASSWORD}");
    let list = logarchive_tests::run(
        "curl",
        &[
            "-sS",
            "-f",
            "--cacert",
            ca,
            "-u",
            &credentials,
            &url("/api/list?path=/"),
        ],
    );
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listing: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(listing["entries"].is_array(), "{listing}");
    // An untrusted certificate is refused by the client; plain HTTP gets no answer.
    let untrusted = logarchive_tests::run("curl", &["-sS", &url("/healthz")]);
    assert!(!untrusted.status.success());
    let plain = logarchive_tests::run(
        "curl",
        &[
            "-sS",
            "-f",
            "-m",
            "10",
            &format!("http://127.0.0.1:{}/healthz", server.web_port),
        ],
    );
    assert!(!plain.status.success(), "plain HTTP was answered");
    // A certificate without its key is a config error that names the line.
    let lone = logarchive_tests::TestServer::prepare("");
    let text = std::fs::read_to_string(&lone.config).unwrap();
    let text = text.replacen(
        "[web]\n",
        &format!("[web]\ncert = \"{}\"\n", cert.display()),
        1,
    );
    std::fs::write(&lone.config, text).unwrap();
    let out = lone.cli(&["run"], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started with a certificate and no key"
    );
    assert!(
        err.contains("server.toml:4:") && err.contains("cert and key go together"),
        "{err}"
    );
}
