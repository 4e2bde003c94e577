//! What a running process uses, read from `/proc`: resident memory and CPU time, for the
//! benchmarks and for tests that check an agent is not spinning.

use std::time::Duration;

/// A process's memory and CPU time at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Resident memory now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// The most it was ever resident (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// User and system CPU time used so far.
    pub cpu: Duration,
}

/// The usage of process `pid`.
pub fn usage(pid: u32) -> std::io::Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which may hold spaces, in parentheses.
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name.
    let ticks = ticks(11) + ticks(12);
    // SAFETY: sysconf reads a constant of the system and has no preconditions.
    let per_second = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    };
    Ok(Usage {
        rss_kib: field("VmRSS:"),
        peak_rss_kib: field("VmHWM:"),
        cpu: Duration::from_nanos(ticks * 1_000_000_000 / per_second),
    })
}
