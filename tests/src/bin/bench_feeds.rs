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
//! Build and run (release):
//!   cargo build --release --workspace && target/release/bench-feeds [--messages 1000000]
//!       [--hosts 10] [--connections 4] [--runs 3]
//! rsyslog comes from Debian (`apt-get install rsyslog`); it runs as a child process with
//! its own config, pid file and work folder, on its own port.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use logarchive_tests::{TestServer, free_port, wait_until};

struct Args {
    messages: usize,
    hosts: usize,
    connections: usize,
    runs: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        messages: 1_000_000,
        hosts: 10,
        connections: 4,
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let number: usize = value
            .parse()
            .with_context(|| format!("{flag}: \"{value}\" is not a number"))?;
        match flag.as_str() {
            "--messages" => args.messages = number,
            "--hosts" => args.hosts = number.max(1),
            "--connections" => args.connections = number.max(1),
            "--runs" => args.runs = number.max(1),
            _ => bail!("unknown option {flag}"),
        }
    }
    Ok(args)
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

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
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
    Ok(())
}
