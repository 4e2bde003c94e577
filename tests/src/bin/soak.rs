//! `soak`: the soak under faults (issue 6) as one command; see `logarchive_tests::soak`.
//!
//! ```text
//! cargo build --release --workspace
//! cargo run --release -p logarchive-tests --bin soak -- --duration 30m --report
//! ```
//!
//! Needs root for the server's own small disk (a loop device, else a tmpfs). Exits 1 when
//! the end checks found a problem.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use logarchive_tests::soak::{self, SoakConfig};

#[derive(Parser)]
#[command(about = "Soak logarchive under faults and check that nothing was lost")]
struct Args {
    /// How long the load and the faults run: "30m", "120s", "1h".
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    duration: Duration,
    /// Agents (each its own process, id, user and log tree).
    #[arg(long, default_value_t = 20)]
    agents: usize,
    /// Seed of the writers and the fault plan.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Working folder (kept afterwards, with the server's disk image serverfs.img);
    /// default: a temporary one, removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Multiplies the writers' rate (1.0: about 25 KiB/s per node).
    #[arg(long, default_value_t = 1.0)]
    pace: f64,
    /// Prints the markdown summary.
    #[arg(long)]
    report: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with s, m or h, like 30m"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        other => Err(format!("{text:?}: unknown unit {other:?} (use s, m or h)")),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let dir = match (&args.dir, &temp) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temp)) => temp.path().to_owned(),
        (None, None) => unreachable!("a folder is chosen above"),
    };
    let mut config = SoakConfig::new(args.duration, args.agents, args.seed, dir);
    config.pace = args.pace;
    config.keep_disk = args.dir.is_some();
    eprintln!(
        "soak: {} agents for {:?} in {} (seed {})",
        config.agents,
        config.duration,
        config.dir.display(),
        config.seed
    );
    let outcome = soak::run(&config)?;
    let problems = outcome.problems();
    if args.report || !problems.is_empty() {
        println!("{}", outcome.markdown());
    }
    if !problems.is_empty() {
        eprintln!("server log (last lines):\n{}", outcome.server_log_tail);
        std::process::exit(1);
    }
    eprintln!("soak: no problems found");
    Ok(())
}
