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
use web_common::{PASSWORD, base, client, csrf_in, ftp_put, login, raw_get, sha256, start_server};

fn api(server: &logarchive_tests::TestServer, user: &str, path: &str) -> reqwest::RequestBuilder {
    client().get(format!("{}{path}", base(server))).basic_auth(user, Some(PASSWORD))
}

#[tokio::test(flavor = "multi_thread")]
async fn login_sessions_csrf_basic_and_blocking() {
    let server = start_server("", "max_failed_logins = 3");
    let web = client();
    // No anonymous access: pages send to the login form, the API answers 401.
    let response = web.get(format!("{}/browse/", base(&server))).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert!(response.headers()["location"].to_str().unwrap().starts_with("/login"));
    let response = web.get(format!("{}/api/list?path=/node01", base(&server))).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("authentication"));
    assert_eq!(web.get(format!("{}/healthz", base(&server))).send().await.unwrap().status(), 200);

    // The login form's token must come back with it.
    let page = web.get(format!("{}/login", base(&server))).send().await.unwrap().text().await.unwrap();
    let form_csrf = csrf_in(&page);
    let refused = web
        .post(format!("{}/login", base(&server)))
        .form(&[("user", "node01"), ("password", PASSWORD), ("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    // Each form shown comes with a fresh token.
    let form_csrf = csrf_in(&refused.text().await.unwrap());
    let wrong = web
        .post(format!("{}/login", base(&server)))
        .form(&[("user", "node01"), ("password", "nope-nope"), ("csrf", &form_csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.unwrap().contains("Wrong user name or password"));

    // A good login: an HttpOnly, SameSite=Strict session cookie.
    let page = web.get(format!("{}/login", base(&server))).send().await.unwrap().text().await.unwrap();
    let form_csrf = csrf_in(&page);
    let ok = web
        .post(format!("{}/login", base(&server)))
        .form(&[("user", "node01"), ("password", PASSWORD), ("csrf", &form_csrf), ("next", "/browse/")])
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
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let home = web.get(format!("{}/browse/", base(&server))).send().await.unwrap();
    assert_eq!(home.headers()["location"], "/browse/node01");
    let page = web.get(format!("{}/browse/node01", base(&server))).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csrf = csrf_in(&page.text().await.unwrap());
    // The cookie works for the API too, but a change needs the CSRF header.
    assert_eq!(web.get(format!("{}/api/list?path=/node01", base(&server))).send().await.unwrap().status(), 200);
    let no_token = web.delete(format!("{}/api/users/node02", base(&server))).send().await.unwrap();
    assert_eq!(no_token.status(), 403);

    // Logout needs the token; afterwards the cookie is worthless.
    assert_eq!(web.post(format!("{}/logout", base(&server))).form(&[("csrf", "forged")]).send().await.unwrap().status(), 403);
    assert_eq!(web.post(format!("{}/logout", base(&server))).form(&[("csrf", &csrf)]).send().await.unwrap().status(), 303);
    assert_eq!(web.get(format!("{}/browse/node01", base(&server))).send().await.unwrap().status(), 303);

    // Basic auth on the API; a wrong password is 401; three failures block the pair.
    assert_eq!(api(&server, "node02", "/api/list?path=/node02").send().await.unwrap().status(), 200);
    for _ in 0..3 {
        let r = client().get(format!("{}/api/list", base(&server))).basic_auth("lister", Some("wrong-password")).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    let blocked = api(&server, "lister", "/api/list").send().await.unwrap();
    assert_eq!(blocked.status(), 429, "blocked after repeated failures even with the right password");
    // Basic is for the API only: pages still ask for the form.
    let page = client().get(format!("{}/browse/node02", base(&server))).basic_auth("node02", Some(PASSWORD)).send().await.unwrap();
    assert_eq!(page.status(), 303);

    // A disabled user is refused at once, also with a live session.
    let web = client();
    login(&web, &server, "node02").await;
    let out = server.cli(&["user", "set", "node02", "--enabled", "false"], "");
    assert!(out.status.success());
    // The server re-reads users.toml within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let status = api(&server, "node02", "/api/list?path=/node02").send().await.unwrap().status();
        if status == 401 || std::time::Instant::now() > deadline {
            assert_eq!(status, 401, "a disabled user is refused");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(web.get(format!("{}/browse/node02", base(&server))).send().await.unwrap().status(), 303);
    let metrics = api(&server, "admin", "/metrics").send().await.unwrap().text().await.unwrap();
    // One form, three Basic, and the disabled user's attempt.
    assert!(metrics.contains("logarchive_web_failed_logins_total 5"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn browse_and_list_pages_confinement_traversal_and_inert_names() {
    let mut server = start_server("", "");
    // 250 files placed by hand and catalogued by `reindex` (the listing is derived data),
    // plus a few over FTP, which carry their source.
    server.stop();
    let many = server.archive("/node01/many");
    std::fs::create_dir_all(many.join("sub")).unwrap();
    for i in 0..250 {
        std::fs::write(many.join(format!("f{i:03}.log")), format!("line {i}\n")).unwrap();
    }
    std::fs::write(many.join("sub/inner.log"), "inner\n").unwrap();
    std::fs::create_dir_all(server.archive("/node02")).unwrap();
    std::fs::write(server.archive("/node02/secret.log"), "node02 only\n").unwrap();
    let out = server.cli(&["reindex"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    server.start();
    ftp_put(&server, "node01", "/Logs/app.log", b"hello\n").await;
    ftp_put(&server, "node01", "/Logs/<img src=x onerror=alert(1)>.log", b"x\n").await;

    // Pages of 100 through 251 entries: every name once, `next` null at the end.
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = "/api/list?path=/node01/many&limit=100".to_owned();
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", urlencode(c)));
        }
        let page: Value = api(&server, "node01", &url).send().await.unwrap().json().await.unwrap();
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
    let logs: Value = api(&server, "node01", "/api/list?path=/node01/Logs").send().await.unwrap().json().await.unwrap();
    let app = logs["entries"].as_array().unwrap().iter().find(|e| e["name"] == "app.log").unwrap();
    assert_eq!(app["path"], "/node01/Logs/app.log");
    assert_eq!(app["size"], 6);
    assert_eq!(app["kind"], "file");
    assert_eq!(app["source"], "node01");
    assert!(app["modified"].as_str().unwrap().ends_with('Z'));
    // Sorted by size, descending; filtered.
    let sorted: Value = api(&server, "node01", "/api/list?path=/node01/Logs&sort=size&order=desc").send().await.unwrap().json().await.unwrap();
    assert_eq!(sorted["entries"][0]["name"], "app.log");
    let filtered: Value = api(&server, "node01", "/api/list?path=/node01/many&filter=F24").send().await.unwrap().json().await.unwrap();
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
    assert_eq!(api(&server, "node01", "/api/list?path=/node02").send().await.unwrap().status(), 403);
    assert_eq!(api(&server, "node01", "/api/list?path=/").send().await.unwrap().status(), 403);
    assert_eq!(api(&server, "node01", "/api/list?path=/node01/nothing").send().await.unwrap().status(), 404);
    assert_eq!(api(&server, "node01", "/api/list?path=/.logarchive").send().await.unwrap().status(), 404);
    assert_eq!(api(&server, "admin", "/api/list?path=/.logarchive/journal").send().await.unwrap().status(), 404);
    assert_eq!(api(&server, "node02", "/api/list?path=/node02").send().await.unwrap().status(), 200);

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
        assert!(!body.contains("node02 only") && !body.contains("root:x:"), "{target}");
    }
    let (status, _) = raw_get(&server, "/download/node02/secret.log", Some("node02"));
    assert_eq!(status, 303, "Basic is not a page login");

    // The HTML page: breadcrumbs, pages, and a name with HTML in it shown as text.
    let web = client();
    login(&web, &server, "node01").await;
    let page = web.get(format!("{}/browse/node01/Logs", base(&server))).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("&#60;img src=x onerror=alert(1)&#62;.log"), "{page}");
    assert!(!page.contains("<img src=x"));
    assert!(page.contains("href=\"/browse/node01\""));
    let first = web.get(format!("{}/browse/node01/many?limit=100", base(&server))).send().await.unwrap().text().await.unwrap();
    assert!(first.contains(">f099.log<") && !first.contains(">f100.log<") && first.contains("id=\"next\""));
    let error = web.get(format!("{}/browse/node02", base(&server))).send().await.unwrap();
    assert_eq!(error.status(), 403);
    assert!(error.text().await.unwrap().contains("outside your home"));
    let lister = client();
    login(&lister, &server, "lister").await;
    assert_eq!(lister.get(format!("{}/browse/node01/Logs", base(&server))).send().await.unwrap().status(), 200);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}
