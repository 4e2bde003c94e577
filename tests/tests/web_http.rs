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
