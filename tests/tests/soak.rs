//! The soak under faults, short: the same code as `soak --duration 30m` (see
//! `logarchive_tests::soak`), for 100 s with 6 agents, so a 2-core CI machine can hold it
//! beside the rest of the suite. Every fault kind happens at least once: agents and the
//! server killed with SIGKILL and restarted, the proxy cutting, stalling and trickling,
//! the server's disk filled and freed. Needs root (the small disk); it says so otherwise.

use std::time::Duration;

use logarchive_tests::soak::{self, SoakConfig};

#[test]
fn soak_under_faults_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SoakConfig::new(Duration::from_secs(100), 6, 7, dir.path().to_owned());
    let outcome = soak::run(&config).expect("the soak runs");
    let report = outcome.markdown();
    eprintln!("{report}");
    let problems = outcome.problems();
    assert!(
        problems.is_empty(),
        "{report}\nserver log:\n{}",
        outcome.server_log_tail
    );
    // Every fault kind really happened, and load really flowed.
    let f = &outcome.counts;
    assert!(
        f.agent_kills > 0 && f.server_kills > 0 && f.disk_fills > 0,
        "{report}"
    );
    assert!(f.cuts > 0 && f.stalls > 0 && f.trickles > 0, "{report}");
    assert!(
        outcome.files_created > 100 && outcome.bytes_written > 1 << 20,
        "{report}"
    );
    assert!(outcome.feeds.iter().all(|f| f.stored > 0), "{report}");
}
