//! The web UI in a real headless Chromium (Debian's chromium + chromium-driver), driven
//! over WebDriver with fantoccini: log in, browse, filter, view, search, download a file
//! and a folder archive, and as admin change a user's permission string, after which FTP
//! refuses that user. Skipped with a message when chromedriver is not installed
//! (`scripts/test.sh` installs it).

mod web_common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use logarchive_tests::{free_port, ftp_login, ftp_retr, wait_until};
use web_common::{PASSWORD, base, ftp_put, sha256, start_server};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver { child, port };
    assert!(
        wait_until(Duration::from_secs(20), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "chromedriver did not listen"
    );
    driver
}

async fn browser(driver: &Driver, profile: &Path, downloads: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
            ],
            "prefs": {
                "download.default_directory": downloads.to_str().unwrap(),
                "download.prompt_for_download": false,
                "download.directory_upgrade": true,
                "safebrowsing.enabled": false,
            },
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session")
}

/// Waits until `file` is fully downloaded (Chromium writes `.crdownload` first).
async fn downloaded(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let partial = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".crdownload"))
            })
            .unwrap_or(false);
        if path.exists() && !partial {
            return path;
        }
        let listing: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "{name} was not downloaded; the folder has {listing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn log_in(client: &Client, web: &str, user: &str) {
    client.goto(&format!("{web}/browse/")).await.unwrap();
    client
        .find(Locator::Id("user"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    client
        .find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    client
        .find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    if client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Id("logout"))
        .await
        .is_err()
    {
        let page = client.source().await.unwrap_or_default();
        panic!("{user} did not get in: {page}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_logs_in_browses_views_downloads_and_admin_edits_a_user() {
    if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
        eprintln!("skipped: install chromium and chromium-driver (scripts/test.sh does)");
        return;
    }
    let server = start_server("", "");
    let app_log: String = (1..=50).map(|i| format!("app line {i}\n")).collect();
    ftp_put(&server, "node01", "/Logs/app.log", app_log.as_bytes()).await;
    ftp_put(&server, "node01", "/Logs/db.log", b"db line\n").await;
    ftp_put(&server, "node01", "/Logs/old/rotated.log", b"rotated\n").await;
    let web = base(&server);
    let scratch = tempfile::tempdir().unwrap();
    let downloads = scratch.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let driver = start_driver();
    let client = browser(&driver, &scratch.path().join("profile"), &downloads).await;

    // Log in; the browser lands in the user's home.
    log_in(&client, &web, "node01").await;
    assert_eq!(client.current_url().await.unwrap().path(), "/browse/node01");
    // Browse into Logs, filter.
    client
        .find(Locator::LinkText("Logs/"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let listing = client
        .wait()
        .for_element(Locator::Id("listing"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listing.contains("app.log") && listing.contains("db.log") && listing.contains("old/"),
        "{listing}"
    );
    client
        .find(Locator::Id("filter"))
        .await
        .unwrap()
        .send_keys("app")
        .await
        .unwrap();
    client
        .find(Locator::Id("filter-go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client
        .current_url()
        .await
        .unwrap()
        .query()
        .unwrap_or("")
        .contains("filter=app")
    {
        assert!(Instant::now() < deadline, "the filter was not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listing = client
        .find(Locator::Id("listing"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listing.contains("app.log") && !listing.contains("db.log"),
        "{listing}"
    );
    // View it.
    client
        .find(Locator::LinkText("app.log"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = client
        .wait()
        .for_element(Locator::Id("text"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("app line 1") && text.contains("app line 50"),
        "{text}"
    );
    // Download the file.
    client
        .find(Locator::Id("download"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let file = downloaded(&downloads, "app.log").await;
    assert_eq!(std::fs::read(&file).unwrap(), app_log.as_bytes());
    // Download the folder as .tar.gz and check every file.
    client
        .goto(&format!("{web}/browse/node01/Logs"))
        .await
        .unwrap();
    client
        .find(Locator::Id("targz"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let archive = downloaded(&downloads, "Logs.tar.gz").await;
    let mut found = BTreeMap::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&archive).unwrap(),
    ));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        found.insert(
            entry.path().unwrap().to_string_lossy().into_owned(),
            sha256(&bytes),
        );
    }
    let expected: BTreeMap<String, String> = [
        ("Logs/app.log", sha256(app_log.as_bytes())),
        ("Logs/db.log", sha256(b"db line\n")),
        ("Logs/old/rotated.log", sha256(b"rotated\n")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(found, expected);
    // Search.
    client
        .find(Locator::LinkText("Search"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Id("q"))
        .await
        .unwrap()
        .send_keys("rotated")
        .await
        .unwrap();
    client
        .find(Locator::Id("search"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let results = client
        .wait()
        .for_element(Locator::Id("results"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        results.contains("/node01/Logs/old/rotated.log") && !results.contains("app.log"),
        "{results}"
    );
    // Log out.
    client
        .find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Id("user"))
        .await
        .unwrap();

    // As admin: node01 loses `r`, and FTP refuses its download at once.
    let mut ftp = ftp_login(&server.addr(), "node01", PASSWORD).await.unwrap();
    assert_eq!(
        ftp_retr(&mut ftp, "/Logs/db.log").await.unwrap(),
        b"db line\n"
    );
    log_in(&client, &web, "admin").await;
    client
        .find(Locator::LinkText("Users"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::LinkText("node01"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let perm = client
        .wait()
        .for_element(Locator::Id("perm"))
        .await
        .unwrap();
    perm.clear().await.unwrap();
    perm.send_keys("elq").await.unwrap();
    // The live explanation flags the unknown letter before anything is sent.
    let note = client
        .find(Locator::Id("perm-check"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(note.contains("\"q\" is not a permission letter"), "{note}");
    perm.clear().await.unwrap();
    perm.send_keys("elmw").await.unwrap();
    client
        .find(Locator::Id("save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Id("saved"))
        .await
        .unwrap();
    let err = ftp_retr(&mut ftp, "/Logs/db.log")
        .await
        .expect_err("r was taken away in the browser");
    assert!(err.to_string().contains("'r'"), "{err}");
    client.close().await.unwrap();
}
