//! The harness shared by logarchive's end-to-end tests and benchmark programs.
//!
//! It runs the real binaries (built by `cargo build --workspace` next to the test
//! executables) on free loopback ports, each server in its own temporary folder, and
//! drives them with real clients: suppaftp in-process, curl and lftp as child processes.
//! With `LOGARCHIVE_TEST_STORAGE=s3` every server keeps its archive in a Garage bucket
//! instead of on disk (see [`storage`]); tests read and plant archived files through
//! [`TestServer::archived`] and its kin, which work on both.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;

pub mod bucket;
pub mod garage;
pub mod process;
pub mod relp_client;
pub mod soak;
pub mod statistics;
pub mod storage;

pub use storage::{on_s3, skip_on_s3};

/// The folder holding the workspace's binaries (`target/debug` or `target/release`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("executable folder").to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

pub fn server_bin() -> PathBuf {
    let bin = bin_dir().join("logarchive-server");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` before the tests",
        bin.display()
    );
    bin
}

pub fn agent_bin() -> PathBuf {
    let bin = bin_dir().join("logarchive-agent");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` before the tests",
        bin.display()
    );
    bin
}

/// A loopback port, free for TCP and UDP a moment ago, that no other caller in this
/// process has been given.
pub fn free_port() -> u16 {
    free_port_range(1).0
}

/// `count` consecutive loopback ports, free for TCP and UDP a moment ago, that no other
/// caller in this process has been given.
///
/// Ports come from below the kernel's ephemeral range, so the outgoing connections that
/// parallel tests make all the time cannot take them between this check and the
/// server's bind (a port taken that way once failed CI with "Address already in use").
/// A per-process counter keeps parallel tests from being handed the same port; a random
/// start keeps concurrent test processes apart.
pub fn free_port_range(count: u16) -> (u16, u16) {
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let high = ephemeral_range_start().max(LOW + 2_000);
    let span = high - LOW;
    let _ = NEXT.compare_exchange(
        0,
        rand::random::<u32>() % span + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..2_000 {
        let offset = NEXT.fetch_add(u32::from(count), Ordering::SeqCst) % span;
        let start = LOW + offset;
        if start + u32::from(count) > high {
            continue;
        }
        let start = start as u16;
        let all_free = (start..start + count).all(|p| {
            TcpListener::bind(("127.0.0.1", p)).is_ok() && UdpSocket::bind(("127.0.0.1", p)).is_ok()
        });
        if all_free {
            return (start, start + count - 1);
        }
    }
    panic!("no free port range of {count} below the ephemeral range");
}

/// The first port the kernel hands out for outgoing connections (32768 by default).
fn ephemeral_range_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

/// Writes `cert.pem` and `key.pem` for a server on 127.0.0.1 / localhost, signed by a
/// private CA written to `ca.pem`, into `dir`; returns the CA's path (what clients trust).
pub fn write_tls_files(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "logarchive test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .and_then(|params| params.signed_by(&key, &issuer))
        .expect("server certificate");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert.pem");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key.pem");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
    dir.join("ca.pem")
}

/// A logarchive-server process with its own data dir and ports.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub ftp_port: u16,
    pub web_port: u16,
    /// The passive port range, first and last.
    pub passive: (u16, u16),
    /// The server's `data_dir` (archive and catalog): `<dir>/data` unless moved.
    pub data_dir: PathBuf,
    /// Where the archive is on S3 (`LOGARCHIVE_TEST_STORAGE=s3`): the key prefix of this
    /// server in the shared cluster's bucket; `None` on disk.
    pub s3_prefix: Option<String>,
    child: Option<Child>,
}

impl TestServer {
    /// Writes a config with free ports plus `extra_ftp` lines under `[ftp]`, but does not
    /// start the server (add users first, or test config errors).
    pub fn prepare(extra_ftp: &str) -> TestServer {
        TestServer::prepare_with_passive_ports(extra_ftp, 20)
    }

    /// Like [`TestServer::prepare`], with `passive` passive ports (one per concurrent
    /// transfer), in a temporary folder under `base` (default: the system's).
    pub fn prepare_with_passive_ports(extra_ftp: &str, passive: u16) -> TestServer {
        TestServer::prepare_in(&std::env::temp_dir(), extra_ftp, passive)
    }

    pub fn prepare_in(base: &Path, extra_ftp: &str, passive: u16) -> TestServer {
        TestServer::prepare_full(base, extra_ftp, passive, "")
    }

    /// The one writer of test configs: `extra_ftp` under `[ftp]`, then `sections`; on S3
    /// (unless `sections` has its own `[storage]`) a `[storage]` section for a prefix of
    /// its own in the shared cluster's bucket.
    fn prepare_full(base: &Path, extra_ftp: &str, passive: u16, sections: &str) -> TestServer {
        let dir = tempfile::tempdir_in(base).expect("temp dir");
        let ftp_port = free_port();
        let web_port = free_port();
        let (low, high) = free_port_range(passive);
        let config = dir.path().join("server.toml");
        // `[web]` first: `extra_ftp` goes under `[ftp]` and may open `[ftp.tls]`.
        let mut text = format!(
            "data_dir = \"data\"\nusers_file = \"users.toml\"\n[web]\nlisten = \"127.0.0.1:{web_port}\"\n[ftp]\nlisten = \"127.0.0.1:{ftp_port}\"\npassive_ports = \"{low}-{high}\"\n{extra_ftp}\n"
        );
        let s3_prefix = (on_s3() && !sections.contains("[storage]"))
            .then(|| format!("test-{:016x}", rand::random::<u64>()));
        if let Some(prefix) = &s3_prefix {
            text.push_str(&garage::shared().storage_section(
                storage::BUCKET,
                prefix,
                0,
                storage::SERVER_NAME,
            ));
        }
        text.push_str(sections);
        text.push('\n');
        std::fs::write(&config, text).expect("write config");
        let data_dir = dir.path().join("data");
        TestServer {
            dir,
            config,
            ftp_port,
            web_port,
            passive: (low, high),
            data_dir,
            s3_prefix,
            child: None,
        }
    }

    /// Moves the data dir (archive and catalog) to `path`, e.g. a small filesystem of the
    /// test's own; call before the server starts.
    pub fn set_data_dir(&mut self, path: &Path) {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let moved = text.replacen(
            "data_dir = \"data\"",
            &format!("data_dir = {:?}", path.display().to_string()),
            1,
        );
        std::fs::write(&self.config, moved).expect("write config");
        self.data_dir = path.to_owned();
    }

    /// GET `/healthz`: whether the server answers `ok`.
    pub fn healthy(&self) -> bool {
        use std::io::Read;
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.web_port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        let mut reply = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut reply).is_ok()
            && reply.split_whitespace().nth(1) == Some("200")
            && reply.ends_with("ok\n")
    }

    /// Like [`TestServer::prepare`], with `sections` (top-level tables such as `[syslog]`)
    /// appended after the `[ftp]` lines.
    pub fn prepare_with_sections(extra_ftp: &str, sections: &str) -> TestServer {
        TestServer::prepare_full(&std::env::temp_dir(), extra_ftp, 20, sections)
    }

    /// Waits until the server's log contains `needle` (e.g. a listener's "up" line).
    pub fn wait_for_log(&self, needle: &str) {
        let seen = wait_until(Duration::from_secs(20), || self.stderr().contains(needle));
        assert!(seen, "server log never said {needle:?}: {}", self.stderr());
    }

    /// Prepares and starts a server with `users` (name, password, extra CLI args).
    pub fn start_with(extra_ftp: &str, users: &[(&str, &str, &[&str])]) -> TestServer {
        let mut server = TestServer::prepare(extra_ftp);
        for (name, password, args) in users {
            server.add_user(name, password, args);
        }
        server.start();
        server
    }

    pub fn start(&mut self) {
        // Appended, so a restarted server's log follows the earlier run's.
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .expect("log")
        };
        let (stdout, stderr) = (log("stdout.log"), log("stderr.log"));
        let child = Command::new(server_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start logarchive-server");
        self.child = Some(child);
        let port = self.ftp_port;
        let up = wait_until(Duration::from_secs(30), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("server exited at start ({status}): {}", self.stderr());
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "server did not listen: {}", self.stderr());
    }

    /// Runs `logarchive-server <args> --config <this config>`.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(server_bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run logarchive-server");
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin.as_bytes());
        }
        child
            .wait_with_output()
            .expect("wait for logarchive-server")
    }

    pub fn add_user(&self, name: &str, password: &str, args: &[&str]) {
        let mut all = vec!["user", "add", name, "--password-stdin"];
        all.extend_from_slice(args);
        let out = self.cli(&all, &format!("{password}\n"));
        assert!(
            out.status.success(),
            "user add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.ftp_port)
    }

    /// A path in the archive tree on disk. Only for what is about the disk itself: on S3
    /// there is no such tree, so this panics (use [`TestServer::archived`] and its kin).
    pub fn archive(&self, path: &str) -> PathBuf {
        assert!(
            self.s3_prefix.is_none(),
            "the archive of this server is in a bucket, not at a path: use archived()"
        );
        self.data_dir
            .join("archive")
            .join(path.trim_start_matches('/'))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Logs in with suppaftp, in binary mode.
pub async fn ftp_login(
    addr: &str,
    user: &str,
    password: &str,
) -> suppaftp::FtpResult<AsyncFtpStream> {
    let mut ftp = AsyncFtpStream::connect(addr).await?;
    ftp.login(user, password).await?;
    ftp.transfer_type(FileType::Binary).await?;
    Ok(ftp)
}

/// RETR with suppaftp: the whole file, or the server's refusal.
pub async fn ftp_retr(ftp: &mut AsyncFtpStream, name: &str) -> suppaftp::FtpResult<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut stream = ftp.retr_as_stream(name).await?;
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .await
        .map_err(suppaftp::FtpError::ConnectionError)?;
    stream.finish().await?;
    Ok(bytes)
}

/// Runs a command and returns its output.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"))
}

pub fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    sha256_hex(&bytes)
}

/// The SHA-256 of `bytes`, in hex (as the catalog shows it).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A logarchive-agent process mirroring `tree` into a [`TestServer`] as `user`.
pub struct TestAgent {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
}

impl TestAgent {
    /// Writes an agent.toml (settle 200 ms, rescan 1 s) with `extra` appended to
    /// `[upload]`, and starts the agent.
    pub fn start(
        server: &TestServer,
        user: &str,
        password: &str,
        tree: &Path,
        extra: &str,
    ) -> TestAgent {
        TestAgent::start_to(server.ftp_port, user, password, tree, "/", extra)
    }

    /// Like [`TestAgent::start`], for any FTP server on a loopback `port`, mirroring into
    /// `remote`.
    pub fn start_to(
        port: u16,
        user: &str,
        password: &str,
        tree: &Path,
        remote: &str,
        extra: &str,
    ) -> TestAgent {
        TestAgent::start_configured(port, user, password, tree, remote, "", extra)
    }

    /// The most general start: `server_extra` goes under `[server]` (e.g. `tls = true`),
    /// `extra` under `[upload]`.
    pub fn start_configured(
        port: u16,
        user: &str,
        password: &str,
        tree: &Path,
        remote: &str,
        server_extra: &str,
        extra: &str,
    ) -> TestAgent {
        let text = format!(
            "agent_id = \"test-agent\"\nstate_dir = \"state\"\n[server]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"{user}\"\npassword = \"{password}\"\n{server_extra}\n[upload]\nsettle = \"200ms\"\nrescan_interval = \"1s\"\n{extra}\n[[watch]]\ndir = \"{}\"\nremote = \"{remote}\"\n",
            tree.display()
        );
        TestAgent::start_with_config(&text)
    }

    /// Starts an agent with exactly this agent.toml (relative paths: its own temp dir).
    pub fn start_with_config(text: &str) -> TestAgent {
        TestAgent::start_in(&std::env::temp_dir(), text)
    }

    /// Like [`TestAgent::start_with_config`], with its temporary folder under `base`.
    pub fn start_in(base: &Path, text: &str) -> TestAgent {
        let dir = tempfile::tempdir_in(base).expect("temp dir");
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, text).expect("write agent config");
        TestAgent::start_existing(dir, config)
    }

    /// Starts an agent on an agent.toml written elsewhere (e.g. by `logarchive-agent
    /// import`); `dir`, kept as long as the agent, receives its log.
    pub fn start_existing(dir: tempfile::TempDir, config: PathBuf) -> TestAgent {
        let mut agent = TestAgent {
            dir,
            config,
            child: None,
        };
        agent.restart();
        agent
    }

    pub fn restart(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .expect("log");
        let child = Command::new(agent_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start logarchive-agent");
        self.child = Some(child);
    }

    /// Sends a signal by name (e.g. "HUP") to the running agent.
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{name}"), &child.id().to_string()])
                .status();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// `logarchive-agent status --json`: the running agent's report (backlog, last
    /// success and error).
    pub fn status_json(&self) -> anyhow::Result<serde_json::Value> {
        let out = Command::new(agent_bin())
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .current_dir(self.dir.path())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "agent status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every file below `root` with its SHA-256, by path relative to `root`.
pub fn tree_hashes(root: &Path) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest;
    tree_files(root)
        .into_iter()
        .map(|(rel, bytes)| (rel, hex::encode(sha2::Sha256::digest(bytes))))
        .collect()
}

/// Every file below `root` with its contents, by path relative to `root`.
pub fn tree_files(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let (Ok(rel), Ok(bytes)) = (path.strip_prefix(root), std::fs::read(&path)) {
                // A file renamed away between listing and reading is simply not seen.
                files.insert(rel.to_string_lossy().into_owned(), bytes);
            }
        }
    }
    files
}

/// A vsftpd with anonymous upload and download in its own folder.
pub struct Vsftpd {
    child: Child,
    pub port: u16,
    /// The anonymous root; uploads go to its `upload` folder.
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Vsftpd {
    /// Starts vsftpd (Debian package) with anonymous upload, download, MKD, APPE and
    /// rename in `<temp>/root/upload`, on free loopback ports.
    pub fn start(base: &Path, passive: u16) -> anyhow::Result<Vsftpd> {
        let dir = tempfile::tempdir_in(base)?;
        let root = dir.path().join("root");
        let upload = root.join("upload");
        std::fs::create_dir_all(&upload)?;
        // vsftpd refuses a writable anonymous root; the upload folder belongs to `ftp`.
        run("chown", &["ftp:ftp", upload.to_str().unwrap_or_default()]);
        let port = free_port();
        let (low, high) = free_port_range(passive);
        let config = dir.path().join("vsftpd.conf");
        std::fs::write(
            &config,
            format!(
                "listen=YES\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\n\
                 anonymous_enable=YES\nlocal_enable=NO\nwrite_enable=YES\nanon_upload_enable=YES\nanon_mkdir_write_enable=YES\nanon_other_write_enable=YES\n\
                 anon_world_readable_only=NO\nanon_umask=022\nno_anon_password=YES\nanon_root={}\n\
                 pasv_enable=YES\npasv_min_port={low}\npasv_max_port={high}\nmax_clients=0\nmax_per_ip=0\n\
                 seccomp_sandbox=NO\nsecure_chroot_dir=/var/run/vsftpd/empty\nxferlog_enable=NO\n\
                 use_sendfile=YES\n",
                root.display()
            ),
        )?;
        std::fs::create_dir_all("/var/run/vsftpd/empty")?;
        // Debian installs it in /usr/sbin, which not every PATH has.
        let program = ["/usr/sbin/vsftpd", "/usr/local/sbin/vsftpd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("vsftpd");
        let child = Command::new(program)
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start vsftpd (apt-get install vsftpd): {e}"))?;
        if !wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }) {
            anyhow::bail!("vsftpd did not listen on {port}");
        }
        Ok(Vsftpd {
            child,
            port,
            root,
            _dir: dir,
        })
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A netDL message in ISO-8859-1 (the `é` is one byte, 0xE9), as a data logger posts
/// it: stored byte-exact, never re-encoded.
pub fn latin1_message(station: &str) -> Vec<u8> {
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
