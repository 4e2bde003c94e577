//! FTP benchmark: logarchive-server side by side with vsftpd, same client, same machine.
//!
//! 1. Upload and download of one large file (default 1 GiB) with curl, unthrottled, on
//!    loopback, against both servers; median of `--runs` runs each.
//! 2. `--sessions` concurrent sessions (default 200), each logging in and storing a 64 KiB
//!    file with suppaftp: all must succeed; p50/p99 latency and the server's peak RSS.
//!
//! Build and run (release):
//!   cargo build --release --workspace && target/release/bench-ftp [--size-mib 1024] [--runs 3]
//!       [--sessions 200] [--dir /tmp] [--durable-writes true|false]
//! vsftpd comes from Debian (`apt-get install vsftpd`); it runs here as a child process
//! with anonymous uploads into a temporary folder, on its own ports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use logarchive_tests::process::usage;
use logarchive_tests::statistics::{median, percentile};
use logarchive_tests::{TestServer, Vsftpd, run};

/// Passive ports for each server: enough for every concurrent session.
const PASSIVE_PORTS: u16 = 400;

#[derive(clap::Parser)]
#[command(about = "logarchive-server beside vsftpd: 1 GiB transfers and concurrent sessions")]
struct Args {
    /// Size of the large file, MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Runs of each transfer after the warm-up; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent sessions, each logging in and storing 64 KiB.
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    /// Where both servers store (e.g. /dev/shm for tmpfs, /tmp for disk).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
    /// logarchive's `durable_writes` (fsync before 226).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    durable_writes: bool,
}

struct Target {
    name: &'static str,
    /// ftp://user:pass@host:port/folder/
    base_url: String,
    user: String,
    password: String,
    addr: String,
    folder: &'static str,
    /// The local folder where this server stores the benchmark's uploads.
    stored: PathBuf,
}

fn curl_seconds(args: &[&str]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = run("curl", args);
    if !out.status.success() {
        bail!(
            "curl {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One upload and one download of `file`; returns (upload, download) seconds. The stored
/// copy is removed afterwards so every run starts from the same free memory and disk.
fn transfer_once(target: &Target, file: &Path) -> anyhow::Result<(f64, f64)> {
    let credentials = format!("{}:{}", target.user, target.password);
    let url = format!("{}big.bin", target.base_url);
    let local = file.to_str().unwrap_or_default();
    let up = curl_seconds(&["-sS", "-u", &credentials, "-T", local, &url])?;
    let down = curl_seconds(&["-sS", "-u", &credentials, "-o", "/dev/null", &url])?;
    std::fs::remove_file(target.stored.join("big.bin"))?;
    Ok((up, down))
}

/// Median upload and download rates (MiB/s) per target, over `runs` rounds after one
/// warm-up round; the order of the targets alternates between rounds, so neither always
/// runs on memory and disk the other one just freed.
fn large_file(
    targets: &[Target],
    file: &Path,
    size: u64,
    runs: usize,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut times: Vec<(Vec<f64>, Vec<f64>)> =
        targets.iter().map(|_| (Vec::new(), Vec::new())).collect();
    for round in 0..=runs {
        let mut order: Vec<usize> = (0..targets.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let (up, down) = transfer_once(&targets[index], file)?;
            if round > 0 {
                times[index].0.push(up);
                times[index].1.push(down);
            }
        }
    }
    let mib = size as f64 / (1024.0 * 1024.0);
    Ok(times
        .into_iter()
        .map(|(mut up, mut down)| (mib / median(&mut up), mib / median(&mut down)))
        .collect())
}

async fn concurrent_sessions(
    target: &Target,
    sessions: usize,
) -> anyhow::Result<(usize, f64, f64)> {
    let payload = vec![42u8; 64 * 1024];
    let mut tasks = Vec::new();
    for i in 0..sessions {
        let addr = target.addr.clone();
        let user = target.user.clone();
        let password = target.password.clone();
        let folder = target.folder;
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let stage = std::sync::Arc::new(std::sync::Mutex::new("connect and login"));
            let at = stage.clone();
            let session = async move {
                let mut ftp = logarchive_tests::ftp_login(&addr, &user, &password).await?;
                *at.lock().unwrap_or_else(|p| p.into_inner()) = "STOR";
                ftp.put_file(format!("{folder}s{i}.bin"), &mut &payload[..])
                    .await?;
                *at.lock().unwrap_or_else(|p| p.into_inner()) = "QUIT";
                let _ = ftp.quit().await;
                Ok::<(), suppaftp::FtpError>(())
            };
            match tokio::time::timeout(Duration::from_secs(60), session).await {
                Ok(Ok(())) => Ok(started.elapsed().as_secs_f64()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!(
                    "no answer within 60 s during {}",
                    stage.lock().unwrap_or_else(|p| p.into_inner())
                )),
            }
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        match task.await? {
            Ok(seconds) => latencies.push(seconds),
            Err(err) => {
                failures += 1;
                eprintln!("  session failed: {err}");
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    if latencies.is_empty() {
        bail!("every session failed");
    }
    Ok((
        failures,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    ))
}

fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let size = args.size_mib * 1024 * 1024;
    let work = tempfile::tempdir_in(&args.dir)?;
    let file = work.path().join("payload.bin");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut block = vec![0u8; 1 << 20];
        for i in 0..args.size_mib {
            block
                .iter_mut()
                .enumerate()
                .for_each(|(j, b)| *b = (i as usize * 31 + j * 7) as u8);
            out.write_all(&block)?;
        }
    }

    let password = "bench-password";
    let mut server = TestServer::prepare_in(&args.dir, "", PASSIVE_PORTS);
    let config = std::fs::read_to_string(&server.config)?;
    std::fs::write(
        &server.config,
        format!("durable_writes = {}\n{config}", args.durable_writes),
    )?;
    server.add_user("bench", password, &["--perm", "elradfmw"]);
    server.start();
    let vsftpd = Vsftpd::start(&args.dir, PASSIVE_PORTS)?;
    // Both servers store into a folder `upload/` (vsftpd's anonymous root cannot be
    // writable), so curl sends the same commands to both: for a file at the top it skips
    // CWD, and when the EPSV reply then arrives before curl has finished its own state
    // step, curl 7.88 waits 200 ms before connecting (seen with --trace-time).
    std::fs::create_dir_all(server.archive("bench/upload"))?;
    let targets = [
        Target {
            name: "logarchive-server",
            base_url: format!("ftp://{}/upload/", server.addr()),
            user: "bench".into(),
            password: password.into(),
            addr: server.addr(),
            folder: "upload/",
            stored: server.archive("bench/upload"),
        },
        Target {
            name: "vsftpd",
            base_url: format!("ftp://127.0.0.1:{}/upload/", vsftpd.port),
            user: "anonymous".into(),
            password: "bench@".into(),
            addr: format!("127.0.0.1:{}", vsftpd.port),
            folder: "upload/",
            stored: vsftpd.root.join("upload"),
        },
    ];

    println!(
        "## {} MiB file in {}, curl, median of {} runs after a warm-up (MiB/s); logarchive durable_writes = {}",
        args.size_mib,
        args.dir.display(),
        args.runs,
        args.durable_writes
    );
    println!("| server | upload | download |\n|---|---|---|");
    let results = large_file(&targets, &file, size, args.runs)?;
    for (target, (up, down)) in targets.iter().zip(&results) {
        println!("| {} | {up:.0} | {down:.0} |", target.name);
    }
    println!(
        "\nlogarchive / vsftpd: upload {:.2}x, download {:.2}x\n",
        results[0].0 / results[1].0,
        results[0].1 / results[1].1
    );

    let runtime = tokio::runtime::Runtime::new()?;
    println!(
        "## {} concurrent sessions: login, STOR 64 KiB, QUIT",
        args.sessions
    );
    println!("| server | failed | p50 latency | p99 latency |\n|---|---|---|---|");
    for target in &targets {
        let (failed, p50, p99) = runtime.block_on(concurrent_sessions(target, args.sessions))?;
        println!(
            "| {} | {failed} | {:.0} ms | {:.0} ms |",
            target.name,
            p50 * 1000.0,
            p99 * 1000.0
        );
    }
    if let Some(rss) = server
        .pid()
        .and_then(|pid| usage(pid).ok())
        .map(|u| u.peak_rss_kib)
    {
        println!(
            "\nlogarchive-server peak RSS over the whole run: {:.1} MiB",
            rss as f64 / 1024.0
        );
    }
    server.stop();
    if std::env::var_os("BENCH_KEEP_LOGS").is_some() {
        let kept = server.dir.path().join("stderr.log");
        let copy = std::env::temp_dir().join("bench-ftp-server.log");
        std::fs::copy(&kept, &copy)?;
        println!("server log kept in {}", copy.display());
    }
    Ok(())
}
