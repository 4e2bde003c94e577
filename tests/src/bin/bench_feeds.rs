//! Syslog benchmark: logarchive-server side by side with rsyslog, same generator, same
//! messages, same machine.
//!
//! Each receiver listens on TCP and writes one file per host and day (logarchive:
//! `/syslog/<host>/<YYYY>/<MM>/<DD>.log`; rsyslog: `omfile` with a dynaFile template of the
//! same shape). `--connections` senders write `--messages` newline-framed RFC 3164
//! messages from `--hosts` host names as fast as the receiver reads them. The time runs
//! from the first byte sent until every message is a line in the files (counted), so a
//! receiver's buffering counts against it. The two alternate, `--runs` rounds, median.
//!
//! Then, unless `--http-seconds 0`, wrk (keep-alive, 64 connections) posts OTT netDL data
//! (`POST /ott`, Basic auth, 1.7 KB XML) and telemetry records (`POST /v3/collector`) for
//! that many seconds each; every reply counted by wrk must be a stored file or line.
//!
//! Build and run (release):
//!   cargo build --release --workspace && target/release/bench-feeds [--messages 1000000]
//!       [--hosts 10] [--connections 4] [--runs 3] [--http-seconds 10]
//! rsyslog and wrk come from Debian (`apt-get install rsyslog wrk`); rsyslog runs as a
//! child process with its own config, pid file and work folder, on its own port.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use logarchive_tests::statistics::median;
use logarchive_tests::{TestServer, free_port, wait_until};

#[derive(clap::Parser)]
#[command(about = "Syslog over TCP beside rsyslog; OTT and telemetry POSTs")]
struct Args {
    /// Syslog messages per run.
    #[arg(long, default_value_t = 1_000_000)]
    messages: usize,
    /// Distinct sending hosts in the messages.
    #[arg(long, default_value_t = 10, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    hosts: usize,
    /// TCP connections the messages are spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    connections: usize,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    runs: usize,
    /// Seconds of each HTTP feed measurement.
    #[arg(long, default_value_t = 10)]
    http_seconds: usize,
}

/// One byte stream per connection; message `i` comes from host `i % hosts`.
fn generate(args: &Args) -> Vec<Vec<u8>> {
    let mut streams = vec![Vec::new(); args.connections];
    for i in 0..args.messages {
        let line = format!(
            "<134>Nov 22 19:00:00 bench-host{:02} app[{}]: message {i:09} user=alice action=login result=ok latency_ms=12\n",
            i % args.hosts,
            i % 5000
        );
        streams[i % args.connections].extend_from_slice(line.as_bytes());
    }
    streams
}

/// Counts the lines below a folder incrementally: each poll reads only what was appended
/// since the last, so counting costs both receivers the same little.
#[derive(Default)]
struct LineCounter {
    files: std::collections::HashMap<std::path::PathBuf, (u64, usize)>,
}

impl LineCounter {
    fn count(&mut self, dir: &Path) -> usize {
        use std::io::{Read, Seek, SeekFrom};
        let mut pending = vec![dir.to_owned()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let (offset, lines) = self.files.entry(path.clone()).or_default();
                let Ok(mut file) = std::fs::File::open(&path) else {
                    continue;
                };
                let mut fresh = Vec::new();
                if file.seek(SeekFrom::Start(*offset)).is_ok()
                    && file.read_to_end(&mut fresh).is_ok()
                {
                    *offset += fresh.len() as u64;
                    *lines += fresh.iter().filter(|b| **b == b'\n').count();
                }
            }
        }
        self.files.values().map(|(_, lines)| lines).sum()
    }
}

/// Sends the streams in parallel and waits until `dir` holds every message as a line.
fn measure(port: u16, streams: &[Vec<u8>], dir: &Path, messages: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let senders: Vec<_> = streams
            .iter()
            .map(|stream| {
                scope.spawn(move || -> std::io::Result<()> {
                    let mut socket = TcpStream::connect(("127.0.0.1", port))?;
                    socket.write_all(stream)?;
                    socket.flush()
                })
            })
            .collect();
        for sender in senders {
            sender
                .join()
                .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
        }
        Ok(())
    })?;
    let mut seen = 0;
    let mut counter = LineCounter::default();
    let complete = wait_until(Duration::from_secs(300), || {
        seen = counter.count(dir);
        seen >= messages
    });
    let elapsed = start.elapsed().as_secs_f64();
    if !complete || seen != messages {
        bail!("{seen} of {messages} messages written");
    }
    Ok(messages as f64 / elapsed)
}

struct Rsyslog {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_rsyslog(port: u16, out: &Path) -> anyhow::Result<Rsyslog> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("work"))?;
    let conf = dir.path().join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{work}")
module(load="imtcp" MaxSessions="1000")
template(name="perHost" type="string" string="{out}/%HOSTNAME%/%$YEAR%/%$MONTH%/%$DAY%.log")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="files")
ruleset(name="files") {{
  action(type="omfile" dynaFile="perHost" template="RSYSLOG_FileFormat")
}}
"#,
            work = dir.path().join("work").display(),
            out = out.display()
        ),
    )?;
    let program = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("rsyslogd");
    let child = Command::new(program)
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.path().join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start rsyslogd (apt-get install rsyslog)")?;
    if !wait_until(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }) {
        bail!("rsyslogd did not listen on {port}");
    }
    Ok(Rsyslog { child, _dir: dir })
}

fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let streams = generate(&args);
    let bytes: usize = streams.iter().map(Vec::len).sum();
    println!(
        "{} messages ({:.1} MiB) from {} hosts over {} TCP connections, {} runs",
        args.messages,
        bytes as f64 / (1 << 20) as f64,
        args.hosts,
        args.connections,
        args.runs
    );
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 1..=args.runs {
        let out = tempfile::tempdir()?;
        let port = free_port();
        let rsyslog = start_rsyslog(port, out.path())?;
        let rate = measure(port, &streams, out.path(), args.messages)?;
        drop(rsyslog);
        theirs.push(rate);

        let port = free_port();
        let mut server = TestServer::prepare_with_sections(
            "",
            &format!("[syslog]\ntcp = \"127.0.0.1:{port}\"\n"),
        );
        server.start();
        server.wait_for_log("syslog tcp listener up");
        let ours_rate = measure(port, &streams, &server.archive("/syslog"), args.messages)?;
        server.stop();
        ours.push(ours_rate);
        println!("run {run}: rsyslog {rate:.0} msg/s, logarchive {ours_rate:.0} msg/s");
    }
    let (ours, theirs) = (median(&mut ours), median(&mut theirs));
    println!(
        "median: logarchive {ours:.0} msg/s, rsyslog {theirs:.0} msg/s, ratio {:.2}x",
        ours / theirs
    );
    if args.http_seconds > 0 {
        http_feeds(args.http_seconds)?;
    }
    Ok(())
}

/// Runs wrk for `seconds` against `url` with a Lua script; returns (replies, requests/s).
fn wrk(seconds: usize, script: &Path, url: &str) -> anyhow::Result<(u64, f64)> {
    let out = Command::new("wrk")
        .args(["-t2", "-c64", &format!("-d{seconds}s"), "-s"])
        .arg(script)
        .arg(url)
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        bail!("wrk saw errors: {text}");
    }
    let replies = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no request count in wrk's output: {text}"))?;
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no rate in wrk's output: {text}"))?;
    Ok((replies, rate))
}

/// OTT and telemetry POSTs per second, every reply accounted for in the archive.
fn http_feeds(seconds: usize) -> anyhow::Result<()> {
    let mut server = TestServer::prepare_with_sections(
        "",
        "[logger]\nenabled = true\n[telemetry]\nenabled = true\n",
    );
    server.add_user(
        "ott",
        "bench-password",
        &["--home", "/logger", "--perm", "elrw"],
    );
    server.start();
    let dir = server.dir.path().to_owned();
    let mut body = String::from(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<StationDataList><StationData stationId=\"0000452891\"><ChannelData channelId=\"0010\"><Values>",
    );
    for i in 0..40 {
        body.push_str(&format!(
            "<VT t=\"2020-10-22T00:{:02}:00\">3.{:02}</VT>",
            i % 60,
            i
        ));
    }
    body.push_str("</Values></ChannelData></StationData></StationDataList>\n");
    std::fs::write(dir.join("body.xml"), &body)?;
    // "ott:bench-password" in base64.
    std::fs::write(
        dir.join("ott.lua"),
        format!(
            "local f = io.open(\"{}\", \"rb\"); local body = f:read(\"*a\"); f:close()\n\
             wrk.method = \"POST\"; wrk.body = body\n\
             wrk.headers[\"Content-Type\"] = \"application/xml\"\n\
             wrk.headers[\"Authorization\"] = \"Basic b3R0OmJlbmNoLXBhc3N3b3Jk\"\n",
            dir.join("body.xml").display()
        ),
    )?;
    let record = r#"{"record_format_version":"4","classification":"org.clearlinux/crash/kernel","severity":"2","machine_id":"66c196ce4222dd761470da5e7e35f6f1","creation_timestamp":"1443573575","arch":"x86_64","host_type":"blank|blank|blank","build":"31000","kernel_version":"6.1.0-1","payload_format_version":"1","system_name":"clear-linux-os","board_name":"Qemu","cpu_model":"Intel","bios_version":"Qemu","event_id":"0123456789abcdef0123456789abcdef","payload":"hello world"}"#;
    std::fs::write(
        dir.join("telemetry.lua"),
        format!(
            "wrk.method = \"POST\"\nwrk.body = [[{record}]]\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"X-Telemetry-TID\"] = \"6907c830-eed9-4ce9-81ae-76daf8d88f0f\"\n"
        ),
    )?;
    let base = format!("http://127.0.0.1:{}", server.web_port);
    let (ott_replies, ott_rate) = wrk(
        seconds,
        &dir.join("ott.lua"),
        &format!("{base}/ott?stationid=0000452891&action=senddata"),
    )?;
    let (tel_replies, tel_rate) = wrk(
        seconds,
        &dir.join("telemetry.lua"),
        &format!("{base}/v3/collector"),
    )?;
    // Stopping flushes the appender, so every record's line is in the archive.
    server.stop();
    let files = logarchive_tests::tree_files(&server.archive("/logger")).len() as u64;
    let lines: u64 = logarchive_tests::tree_files(&server.archive("/telemetry"))
        .values()
        .map(|bytes| bytes.iter().filter(|b| **b == b'\n').count() as u64)
        .sum();
    println!(
        "OTT POST /ott: {ott_rate:.0} requests/s ({ott_replies} replies, {files} files stored)"
    );
    println!(
        "telemetry POST /v3/collector: {tel_rate:.0} records/s ({tel_replies} replies, {lines} lines stored)"
    );
    if files < ott_replies || lines < tel_replies {
        bail!("some acknowledged requests are not in the archive");
    }
    Ok(())
}
