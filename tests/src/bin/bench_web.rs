//! Web UI benchmark (issue 4): latency of listings and searches over a large catalog, and
//! download throughput side by side with nginx.
//!
//! 1. The archive gets `--files` empty files (default 1,000,000): `--folder-files`
//!    (default 100,000) in `/big`, the rest 10,000 a folder in `/nodeNNN/Logs`, created
//!    directly on disk (tmpfs by default) and catalogued by the real `logarchive-server
//!    reindex`. Then `--requests` (default 200) sequential requests each, HTTP Basic on a
//!    fresh connection, to `/api/list` for the first page of `/big` and to `/api/search`
//!    for several searches over the whole catalog (the HTML pages run the same code and
//!    need a cookie login): p50 / p99 in milliseconds, and the server's memory.
//! 2. A `--size-mib` file (default 1024) is downloaded with curl from logarchive's
//!    `/download/` and from nginx (Debian package, run here as a child process with its own
//!    config on a free port, serving the same file), alternating, `--runs` times each after
//!    one warm-up of each: median MiB/s.
//!
//! Build and run (release):
//!   cargo build --release --workspace && target/release/bench-web [--files 1000000]
//!       [--folder-files 100000] [--requests 200] [--size-mib 1024] [--runs 5] [--dir /dev/shm]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use logarchive_tests::process::usage;
use logarchive_tests::statistics::{median, percentile};
use logarchive_tests::{TestServer, free_port, run, wait_until};

const USER: &str = "bench";
const PASSWORD: &str = "bench-web-password";
/// Files per folder outside `/big`.
const PER_FOLDER: usize = 10_000;

#[derive(clap::Parser)]
#[command(about = "The web UI over a large catalog, and downloads beside nginx")]
struct Args {
    /// Files in the catalog.
    #[arg(long, default_value_t = 1_000_000)]
    files: usize,
    /// Files in the one large folder (at most --files).
    #[arg(long, default_value_t = 100_000)]
    folder_files: usize,
    /// Requests per measured page.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Size of the downloaded file, MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Download runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Where the archive is written.
    #[arg(long, default_value = "/dev/shm")]
    dir: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let args = <Args as clap::Parser>::parse();
    if args.folder_files > args.files {
        bail!("--folder-files cannot exceed --files");
    }
    Ok(args)
}

/// Creates the benchmark's files under `root` (the archive on disk).
fn fill(root: &Path, files: usize, folder_files: usize) -> anyhow::Result<()> {
    let big = root.join("big");
    std::fs::create_dir_all(&big)?;
    for i in 0..folder_files {
        std::fs::File::create(big.join(format!("f{i:07}.log")))?;
    }
    let rest = files - folder_files;
    for folder in 0..rest.div_ceil(PER_FOLDER) {
        let dir = root.join(format!("node{folder:03}/Logs"));
        std::fs::create_dir_all(&dir)?;
        let first = folder * PER_FOLDER;
        for i in first..(first + PER_FOLDER).min(rest) {
            std::fs::File::create(dir.join(format!("app-{i:07}.log")))?;
        }
    }
    Ok(())
}

/// Writes `size` bytes of a non-repeating-looking pattern.
fn write_big_file(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for byte in block.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

fn basic_auth() -> String {
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{USER}:{PASSWORD}");
    let mut out = String::new();
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One GET on a fresh connection; returns the status and body.
fn get(port: u16, target: &str, auth: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in the answer to {target}"))?;
    let body = match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => response[at + 4..].to_vec(),
        None => Vec::new(),
    };
    Ok((status, body))
}

/// Requests `target` `count` times; returns p50 and p99 in milliseconds, and the entries
/// of the last JSON answer (if it was JSON).
fn latency(port: u16, target: &str, count: usize) -> anyhow::Result<(f64, f64, usize)> {
    let auth = basic_auth();
    let mut times = Vec::with_capacity(count);
    let mut entries = 0;
    for _ in 0..count {
        let started = Instant::now();
        let (status, body) = get(port, target, &auth)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if status != 200 {
            bail!(
                "{target}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        // Chunked bodies are not decoded: count the entries' "kind" fields instead.
        entries = String::from_utf8_lossy(&body).matches("\"kind\":").count();
    }
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 0.5), percentile(&times, 0.99), entries))
}

/// nginx (Debian package) as a child process serving `root` on a free loopback port.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(base: &Path, root: &Path) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir_in(base)?;
        let port = free_port();
        let prefix = dir.path();
        // One process (no master), in the foreground, so killing the child stops it; the
        // usual static-file settings (sendfile, tcp_nopush) as a stock install has them.
        let config = format!(
            "daemon off;\nmaster_process off;\nuser root;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n sendfile on;\n tcp_nopush on;\n\
             client_body_temp_path {p}/body;\n proxy_temp_path {p}/proxy;\n fastcgi_temp_path {p}/fastcgi;\n\
             uwsgi_temp_path {p}/uwsgi;\n scgi_temp_path {p}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n",
            p = prefix.display(),
            root = root.display()
        );
        let file = prefix.join("nginx.conf");
        std::fs::write(&file, config)?;
        let program = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nginx");
        let child = Command::new(program)
            .arg("-c")
            .arg(&file)
            .arg("-p")
            .arg(prefix)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start nginx (apt-get install nginx): {e}"))?;
        let mut nginx = Nginx {
            child,
            port,
            _dir: dir,
        };
        if !wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        }) {
            let _ = nginx.child.kill();
            bail!("nginx did not listen on {port}");
        }
        if let Ok(Some(status)) = nginx.child.try_wait() {
            bail!("nginx exited at start: {status}");
        }
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds for curl to fetch `url` to /dev/null; checks the byte count.
fn curl_download(url: &str, extra: &[&str], size: u64) -> anyhow::Result<f64> {
    let mut args = vec!["-sS", "-o", "/dev/null", "-w", "%{size_download}"];
    args.extend_from_slice(extra);
    args.push(url);
    let started = Instant::now();
    let out = run("curl", &args);
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "curl {url} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let got: u64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    if got != size {
        bail!("curl {url}: {got} bytes instead of {size}");
    }
    Ok(seconds)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut server = TestServer::prepare_in(&args.dir, "", 4);
    server.add_user(USER, PASSWORD, &["--admin", "--home", "/", "--perm", "elr"]);
    let root = server.archive("/");
    std::fs::create_dir_all(&root)?;

    let started = Instant::now();
    fill(&root, args.files, args.folder_files)?;
    let size = args.size_mib * 1024 * 1024;
    std::fs::create_dir_all(root.join("dl"))?;
    let big_file = root.join("dl/big.bin");
    write_big_file(&big_file, size)?;
    eprintln!(
        "created {} files and a {} MiB file in {:.1} s",
        args.files,
        args.size_mib,
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let out = server.cli(&["reindex"], "");
    if !out.status.success() {
        bail!("reindex failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let reindex_seconds = started.elapsed().as_secs_f64();
    eprintln!("reindex: {reindex_seconds:.1} s");

    let started = Instant::now();
    server.start();
    let web = server.web_port;
    if !wait_until(Duration::from_secs(120), || {
        TcpStream::connect(("127.0.0.1", web)).is_ok()
    }) {
        bail!("the web listener did not come up: {}", server.stderr());
    }
    let open_seconds = started.elapsed().as_secs_f64();
    // The first Basic request pays for the password hash; later ones hit the cache.
    get(web, "/api/list?path=/&limit=1", &basic_auth())?;

    let total = args.files + 1;
    let cases: Vec<(String, String)> = vec![
        (
            format!("first page of /big ({} files), JSON", args.folder_files),
            "/api/list?path=/big&limit=100".into(),
        ),
        (
            format!("search {total} entries: substring, 1 match (whole catalog read)"),
            "/api/search?q=F0012345&limit=100".into(),
        ),
        (
            format!("search {total} entries: glob `*99999.log`, few matches (whole catalog)"),
            "/api/search?q=*99999.log&limit=100".into(),
        ),
        (
            format!(
                "search {total} entries: substring matching all, size filter matching none (whole catalog)"
            ),
            "/api/search?q=app&min_size=1&limit=100".into(),
        ),
        (
            "search: substring matching most, first 100".into(),
            "/api/search?q=.log&limit=100".into(),
        ),
        (
            "search under /node050, time range, first 100".into(),
            "/api/search?q=app&path=/node050&from=2000-01-01T00:00:00Z&limit=100".into(),
        ),
    ];
    println!("\n| request | entries | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: |");
    for (name, target) in &cases {
        let (p50, p99, entries) = latency(web, target, args.requests)?;
        println!("| {name} | {entries} | {p50:.1} | {p99:.1} |");
    }
    let usage = usage(server.pid().context("the server is not running")?)?;
    let (_, metrics) = get(web, "/metrics", &basic_auth())?;
    let index_bytes = String::from_utf8_lossy(&metrics)
        .lines()
        .find_map(|l| l.strip_prefix("logarchive_search_index_bytes "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    println!(
        "\nreindex of {total} files: {reindex_seconds:.1} s; server start (catalog open, search table built): {open_seconds:.1} s\n\
         server memory after the searches: VmRSS {} MiB, peak {} MiB; search table estimate {:.1} MiB",
        usage.rss_kib / 1024,
        usage.peak_rss_kib / 1024,
        index_bytes as f64 / (1024.0 * 1024.0)
    );

    let nginx = Nginx::start(&args.dir, &root)?;
    let ours = format!("http://127.0.0.1:{web}/download/dl/big.bin");
    let theirs = format!("http://127.0.0.1:{}/dl/big.bin", nginx.port);
    let credentials = format!("{USER}:{PASSWORD}");
    let ours_args = ["-u", credentials.as_str()];
    let (mut ours_times, mut nginx_times) = (Vec::new(), Vec::new());
    for round in 0..=args.runs {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_ours in order {
            let seconds = if is_ours {
                curl_download(&ours, &ours_args, size)?
            } else {
                curl_download(&theirs, &[], size)?
            };
            // Round 0 warms both up (page cache, password cache).
            if round > 0 {
                if is_ours {
                    ours_times.push(seconds);
                } else {
                    nginx_times.push(seconds);
                }
            }
        }
    }
    let mib = args.size_mib as f64;
    let ours_rate = mib / median(&mut ours_times.clone());
    let nginx_rate = mib / median(&mut nginx_times.clone());
    println!(
        "\n| server | median MiB/s | runs (s) |\n| --- | ---: | --- |\n| logarchive /download | {ours_rate:.0} | {} |\n| nginx | {nginx_rate:.0} | {} |\n\nratio logarchive / nginx: {:.2}",
        ours_times
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(" "),
        nginx_times
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(" "),
        ours_rate / nginx_rate
    );
    drop(nginx);
    if !server.stop() {
        bail!("the server did not stop cleanly: {}", server.stderr());
    }
    Ok(())
}
