//! Shared by the web tests: a server with a few users, FTP uploads, HTTP clients.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use logarchive_tests::{TestServer, ftp_login};

pub const PASSWORD: &str = "web-test-password";

/// A server with `admin` (home /, admin), `node01` (home /node01, elrwmf), `node02` (home
/// /node02, elrwmf) and `lister` (home /node01, el only). `web_extra` lines go under `[web]`.
pub fn start_server(web_extra: &str, ftp_extra: &str) -> TestServer {
    let mut server = TestServer::prepare(ftp_extra);
    if !web_extra.is_empty() {
        let text = std::fs::read_to_string(&server.config).unwrap();
        let text = text.replacen("[web]\n", &format!("[web]\n{web_extra}\n"), 1);
        std::fs::write(&server.config, text).unwrap();
    }
    server.add_user(
        "admin",
        PASSWORD,
        &["--admin", "--home", "/", "--perm", "elradfmwMT"],
    );
    server.add_user("node01", PASSWORD, &["--perm", "elrwmf"]);
    server.add_user("node02", PASSWORD, &["--perm", "elrwmf"]);
    server.add_user("lister", PASSWORD, &["--perm", "el", "--home", "/node01"]);
    server.start();
    let port = server.web_port;
    assert!(
        logarchive_tests::wait_until(Duration::from_secs(10), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "web listener did not come up"
    );
    server
}

/// Uploads `bytes` to `path` (below the user's home) over FTP, making folders on the way.
pub async fn ftp_put(server: &TestServer, user: &str, path: &str, bytes: &[u8]) {
    let mut ftp = ftp_login(&server.addr(), user, PASSWORD)
        .await
        .expect("ftp login");
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut dir = String::new();
    for part in &parts[..parts.len() - 1] {
        dir.push('/');
        dir.push_str(part);
        let _ = ftp.mkdir(&dir).await;
    }
    ftp.put_file(path, &mut &bytes[..]).await.expect("ftp put");
    let _ = ftp.quit().await;
}

pub fn base(server: &TestServer) -> String {
    format!("http://127.0.0.1:{}", server.web_port)
}

/// A client that keeps cookies and does not follow redirects (the tests look at them).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of `name="csrf" value="..."` in a page.
pub fn csrf_in(page: &str) -> String {
    let at =
        page.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}

/// The status of `GET <path>` with `client`'s cookies.
pub async fn status_of(client: &reqwest::Client, server: &TestServer, path: &str) -> u16 {
    client
        .get(format!("{}{path}", base(server)))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The body of `GET <path>` with `client`'s cookies, whatever the status.
pub async fn text_of(client: &reqwest::Client, server: &TestServer, path: &str) -> String {
    client
        .get(format!("{}{path}", base(server)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Logs `client` in through the form; returns the session's CSRF token.
pub async fn login(client: &reqwest::Client, server: &TestServer, user: &str) -> String {
    let page = text_of(client, server, "/login").await;
    let csrf = csrf_in(&page);
    let response = client
        .post(format!("{}/login", base(server)))
        .form(&[
            ("user", user),
            ("password", PASSWORD),
            ("csrf", &csrf),
            ("next", "/browse/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "login of {user}");
    let page = text_of(client, server, "/search").await;
    csrf_in(&page)
}

/// A GET sent byte for byte (clients would normalise `..` and `%2e%2e` away); returns the
/// status and body.
pub fn raw_get(server: &TestServer, target: &str, basic_user: Option<&str>) -> (u16, String) {
    use base64::Engine;
    let encode = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let mut stream = TcpStream::connect(("127.0.0.1", server.web_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = basic_user.map_or(String::new(), |u| {
        format!(
            "Authorization: Basic {}\r\n",
            encode(&format!("{u}:{PASSWORD}"))
        )
    });
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// Every member of a zip file and the SHA-256 of its bytes, read by Python's zipfile (an
/// independent reader), after its CRC check of every member.
pub fn zip_hashes(zip: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    let script = "import hashlib,json,sys,zipfile\nz=zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nprint(json.dumps({n:hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist()}))";
    let out = logarchive_tests::run("python3", &["-c", script, zip.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
