//! The web UI in a real headless Chromium (Debian's chromium + chromium-driver), driven
//! over WebDriver with fantoccini: log in, browse, filter, view, search, download a file
//! and a folder archive, and as admin change a user's permission string, after which FTP
//! refuses that user. Needs Debian's chromium and chromium-driver (`scripts/test.sh`
//! installs them).

mod web_common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use logarchive_tests::{free_port, ftp_login, ftp_retr, wait_until};
use web_common::{PASSWORD, base, ftp_put, sha256, start_server, zip_hashes};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free port, in a process group of its own with the browser it starts;
/// the whole group is killed when dropped, also after a failed assertion (Chromium's
/// helper processes would otherwise outlive the test).
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .process_group(0)
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
                "--disable-dev-shm-usage", "--disable-crash-reporter", "--disable-breakpad",
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

/// Waits until the element is there.
async fn wait_for(client: &Client, at: Locator<'_>) {
    client.wait().for_element(at).await.unwrap();
}

/// Waits for the element and clicks it.
async fn click(client: &Client, at: Locator<'_>) {
    client
        .wait()
        .for_element(at)
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Waits for the input and types into it.
async fn type_into(client: &Client, at: Locator<'_>, text: &str) {
    client
        .wait()
        .for_element(at)
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Waits for the element and returns its text.
async fn text_of(client: &Client, at: Locator<'_>) -> String {
    client
        .wait()
        .for_element(at)
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn log_in(client: &Client, web: &str, user: &str) {
    client.goto(&format!("{web}/browse/")).await.unwrap();
    type_into(client, Locator::Id("user"), user).await;
    type_into(client, Locator::Id("password"), PASSWORD).await;
    click(client, Locator::Id("login")).await;
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
    // Missing browsers fail the test rather than skip it: a skipped browser test would
    // pass without testing anything.
    assert!(
        Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
        "install chromium and chromium-driver (scripts/test.sh does)"
    );
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
    click(&client, Locator::LinkText("Logs/")).await;
    let listing = text_of(&client, Locator::Id("listing")).await;
    assert!(
        listing.contains("app.log") && listing.contains("db.log") && listing.contains("old/"),
        "{listing}"
    );
    type_into(&client, Locator::Id("filter"), "app").await;
    click(&client, Locator::Id("filter-go")).await;
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
    let listing = text_of(&client, Locator::Id("listing")).await;
    assert!(
        listing.contains("app.log") && !listing.contains("db.log"),
        "{listing}"
    );
    // View it.
    click(&client, Locator::LinkText("app.log")).await;
    let text = text_of(&client, Locator::Id("text")).await;
    assert!(
        text.contains("app line 1") && text.contains("app line 50"),
        "{text}"
    );
    // Download the file.
    click(&client, Locator::Id("download")).await;
    let file = downloaded(&downloads, "app.log").await;
    assert_eq!(std::fs::read(&file).unwrap(), app_log.as_bytes());
    // Download the folder as .tar.gz and check every file.
    client
        .goto(&format!("{web}/browse/node01/Logs"))
        .await
        .unwrap();
    click(&client, Locator::Id("targz")).await;
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
    // A selection as .zip: two of the three entries, ticked in the listing.
    click(&client, Locator::Css("input[name=select][value='db.log']")).await;
    click(&client, Locator::Css("input[name=select][value='old']")).await;
    click(&client, Locator::Id("selected-zip")).await;
    let zip = downloaded(&downloads, "Logs.zip").await;
    let from_zip = zip_hashes(&zip);
    let selected: BTreeMap<String, String> = expected
        .into_iter()
        .filter(|(name, _)| name != "Logs/app.log")
        .collect();
    assert_eq!(from_zip, selected);
    // Search.
    click(&client, Locator::LinkText("Search")).await;
    type_into(&client, Locator::Id("q"), "rotated").await;
    click(&client, Locator::Id("search")).await;
    let results = text_of(&client, Locator::Id("results")).await;
    assert!(
        results.contains("/node01/Logs/old/rotated.log") && !results.contains("app.log"),
        "{results}"
    );
    // Log out.
    click(&client, Locator::Id("logout")).await;
    wait_for(&client, Locator::Id("user")).await;

    // As admin: node01 loses `r`, and FTP refuses its download at once.
    let mut ftp = ftp_login(&server.addr(), "node01", PASSWORD).await.unwrap();
    assert_eq!(
        ftp_retr(&mut ftp, "/Logs/db.log").await.unwrap(),
        b"db line\n"
    );
    log_in(&client, &web, "admin").await;
    click(&client, Locator::LinkText("Users")).await;
    click(&client, Locator::LinkText("node01")).await;
    let perm = client
        .wait()
        .for_element(Locator::Id("perm"))
        .await
        .unwrap();
    perm.clear().await.unwrap();
    perm.send_keys("elq").await.unwrap();
    // The live explanation flags the unknown letter before anything is sent.
    let note = text_of(&client, Locator::Id("perm-check")).await;
    assert!(note.contains("\"q\" is not a permission letter"), "{note}");
    perm.clear().await.unwrap();
    perm.send_keys("elmw").await.unwrap();
    click(&client, Locator::Id("save")).await;
    wait_for(&client, Locator::Id("saved")).await;
    let err = ftp_retr(&mut ftp, "/Logs/db.log")
        .await
        .expect_err("r was taken away in the browser");
    assert!(err.to_string().contains("'r'"), "{err}");
    client.close().await.unwrap();
}
