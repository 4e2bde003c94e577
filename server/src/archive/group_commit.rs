//! Group commit for the server's own append-only record files (the upload journal): every
//! record must be on disk before the upload it describes is acknowledged, but concurrent
//! sessions need not pay one fsync each. The first writer to arrive becomes the leader,
//! writes every record queued so far and fsyncs each file once; the others wait for it and
//! return when their record is durable (or with the error of the batch that held it).
//!
//! It blocks the calling thread: call it from the blocking pool.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};

/// How many failed batches are remembered for writers that have not looked yet.
const FAILURES_KEPT: usize = 64;

#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    written: Condvar,
}

#[derive(Debug, Default)]
struct State {
    queued: Vec<(PathBuf, Vec<u8>)>,
    /// Records numbered in arrival order: the last one queued, the last one durable.
    last_queued: u64,
    last_durable: u64,
    leader: bool,
    /// Failed batches: first and last record number, and the error.
    failures: VecDeque<(u64, u64, String)>,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `record` to `file` and returns once it is on disk.
    pub fn append(&self, file: PathBuf, record: Vec<u8>) -> io::Result<()> {
        let mut state = self.lock();
        state.queued.push((file, record));
        state.last_queued += 1;
        let mine = state.last_queued;
        loop {
            if state.last_durable >= mine {
                return match state
                    .failures
                    .iter()
                    .find(|(a, b, _)| (*a..=*b).contains(&mine))
                {
                    Some((_, _, error)) => Err(io::Error::other(error.clone())),
                    None => Ok(()),
                };
            }
            if state.leader {
                state = self.written.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.leader = true;
            let batch = std::mem::take(&mut state.queued);
            let (first, last) = (state.last_durable + 1, state.last_queued);
            drop(state);
            let result = write_batch(batch);
            state = self.lock();
            state.leader = false;
            state.last_durable = last;
            if let Err(err) = result {
                state.failures.push_back((first, last, err.to_string()));
                if state.failures.len() > FAILURES_KEPT {
                    state.failures.pop_front();
                }
            }
            self.written.notify_all();
        }
    }
}

/// Appends the records to their files in order, then fsyncs each file once.
fn write_batch(batch: Vec<(PathBuf, Vec<u8>)>) -> io::Result<()> {
    let mut by_file: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    for (file, record) in batch {
        by_file.entry(file).or_default().extend_from_slice(&record);
    }
    for (path, bytes) in by_file {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let before = file.metadata()?.len();
        if let Err(err) = file.write_all(&bytes).and_then(|()| file.sync_data()) {
            // A full disk can take part of the batch: cut it back, so the next record does
            // not continue a torn line (and readers lose neither).
            let _ = file.set_len(before);
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_records_all_arrive_whole_and_in_order_per_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let commit = Arc::new(GroupCommit::default());
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (commit, path) = (commit.clone(), path.clone());
                std::thread::spawn(move || {
                    for i in 0..50 {
                        commit
                            .append(path.clone(), format!("w{w} r{i}\n").into_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 400);
        for w in 0..8 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("w{w} ")))
                .collect();
            let expected: Vec<String> = (0..50).map(|i| format!("w{w} r{i}")).collect();
            assert_eq!(mine, expected);
        }
    }

    #[test]
    fn a_failed_batch_is_reported_to_its_writers() {
        let dir = tempfile::tempdir().unwrap();
        let commit = GroupCommit::default();
        let missing = dir.path().join("no/such/folder/journal.jsonl");
        assert!(commit.append(missing, b"x\n".to_vec()).is_err());
        // The next batch is not affected by the earlier failure.
        commit
            .append(dir.path().join("ok.jsonl"), b"y\n".to_vec())
            .unwrap();
    }
}
