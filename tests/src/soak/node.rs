//! One node's writers and their ledger: log files that grow, rotate by rename
//! (`app-K.log` -> `app-K.log.N`, a new `app-K.log` at once, as logrotate's `create`) and
//! by copytruncate (`svc.log` copied to `svc.log.N`, then cut to zero in place), and new
//! files written in one go — at random sizes and pauses, with an exact ledger of every
//! version (generation) of every file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// One content a path held: from creation (or truncation) to rotation, copy or the end.
#[derive(Clone)]
pub struct Generation {
    /// SHA-256 of everything written so far.
    pub hasher: Sha256,
    pub len: u64,
    /// The local file (relative to the node's log tree) holding exactly this content now:
    /// the path itself, the name it was rotated to, or the copy copytruncate made.
    pub lives_at: String,
}

/// What one node's writers produced.
#[derive(Default, Clone)]
pub struct Ledger {
    pub generations: Vec<Generation>,
    /// Every path that ever existed -> its generations, oldest first.
    pub paths: BTreeMap<String, Vec<usize>>,
    pub files_created: u64,
    pub bytes_written: u64,
    pub rotations_by_rename: u64,
    pub copytruncates: u64,
}

impl Ledger {
    fn start(&mut self, path: &str) -> usize {
        self.generations.push(Generation {
            hasher: Sha256::new(),
            len: 0,
            lives_at: path.to_owned(),
        });
        let id = self.generations.len() - 1;
        self.paths.entry(path.to_owned()).or_default().push(id);
        self.files_created += 1;
        id
    }

    fn current(&self, path: &str) -> Option<usize> {
        self.paths
            .get(path)
            .and_then(|gens| gens.last())
            .copied()
            .filter(|&id| self.generations[id].lives_at == path)
    }

    fn wrote(&mut self, id: usize, bytes: &[u8]) {
        let generation = &mut self.generations[id];
        generation.hasher.update(bytes);
        generation.len += bytes.len() as u64;
        self.bytes_written += bytes.len() as u64;
    }

    /// The generation each local file at the end should hold, by relative path.
    pub fn final_files(&self) -> BTreeMap<String, usize> {
        self.paths
            .keys()
            .filter_map(|path| self.current(path).map(|id| (path.clone(), id)))
            .collect()
    }

    pub fn digest(&self, id: usize) -> String {
        hex::encode(self.generations[id].hasher.clone().finalize())
    }
}

/// The writers of one node, on a thread of their own.
pub struct Node {
    pub name: String,
    pub tree: PathBuf,
    rng: StdRng,
    ledger: Ledger,
    /// Rotation thresholds, chosen per file at random.
    limits: BTreeMap<String, u64>,
    next_number: u64,
}

const ROTATING: [&str; 2] = ["app-0.log", "app-1.log"];
const COPYTRUNCATED: &str = "svc.log";

impl Node {
    pub fn new(name: &str, tree: &Path, seed: u64) -> std::io::Result<Node> {
        std::fs::create_dir_all(tree)?;
        Ok(Node {
            name: name.to_owned(),
            tree: tree.to_owned(),
            rng: StdRng::seed_from_u64(seed),
            ledger: Ledger::default(),
            limits: BTreeMap::new(),
            next_number: 1,
        })
    }

    /// Writes until `stop` is set, then returns the ledger.
    pub fn run(mut self, stop: Arc<AtomicBool>, pace: f64) -> std::io::Result<Ledger> {
        while !stop.load(Ordering::Relaxed) {
            self.step()?;
            let pause = self.rng.random_range(20..400);
            std::thread::sleep(Duration::from_secs_f64(pause as f64 / 1000.0 / pace));
        }
        Ok(self.ledger)
    }

    fn step(&mut self) -> std::io::Result<()> {
        match self.rng.random_range(0..100) {
            0..55 => {
                let name = ROTATING[self.rng.random_range(0..ROTATING.len())];
                self.append(name)?;
                if self.size_of(name) > self.limit(name) {
                    self.rotate_by_rename(name)?;
                }
            }
            55..85 => {
                self.append(COPYTRUNCATED)?;
                if self.size_of(COPYTRUNCATED) > self.limit(COPYTRUNCATED) {
                    self.copytruncate(COPYTRUNCATED)?;
                }
            }
            _ => self.new_file()?,
        }
        Ok(())
    }

    fn limit(&mut self, name: &str) -> u64 {
        let fresh = self.rng.random_range(16 * 1024..512 * 1024);
        *self.limits.entry(name.to_owned()).or_insert(fresh)
    }

    fn size_of(&self, name: &str) -> u64 {
        self.ledger
            .current(name)
            .map_or(0, |id| self.ledger.generations[id].len)
    }

    /// Text lines naming the node, file and generation, so every prefix is unique.
    fn lines(&mut self, name: &str, id: usize, offset: u64, target: usize) -> Vec<u8> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 ";
        let mut bytes = Vec::with_capacity(target + 128);
        while bytes.len() < target {
            let at = offset + bytes.len() as u64;
            let _ = write!(bytes, "{} {name} g{id} o{at} ", self.name);
            let filler = self.rng.random_range(10..160);
            for _ in 0..filler {
                bytes.push(ALPHABET[self.rng.random_range(0..ALPHABET.len())]);
            }
            bytes.push(b'\n');
        }
        bytes
    }

    fn append(&mut self, name: &str) -> std::io::Result<()> {
        let id = match self.ledger.current(name) {
            Some(id) => id,
            None => self.ledger.start(name),
        };
        let size = self.rng.random_range(100..8000);
        let offset = self.ledger.generations[id].len;
        let bytes = self.lines(name, id, offset, size);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tree.join(name))?;
        file.write_all(&bytes)?;
        self.ledger.wrote(id, &bytes);
        Ok(())
    }

    fn rotate_by_rename(&mut self, name: &str) -> std::io::Result<()> {
        let Some(id) = self.ledger.current(name) else {
            return Ok(());
        };
        let rotated = format!("{name}.{}", self.next_number);
        self.next_number += 1;
        std::fs::rename(self.tree.join(name), self.tree.join(&rotated))?;
        std::fs::File::create(self.tree.join(name))?;
        self.ledger.generations[id].lives_at = rotated.clone();
        self.ledger.paths.entry(rotated).or_default().push(id);
        self.ledger.start(name);
        self.ledger.rotations_by_rename += 1;
        self.limits.remove(name);
        Ok(())
    }

    fn copytruncate(&mut self, name: &str) -> std::io::Result<()> {
        let Some(id) = self.ledger.current(name) else {
            return Ok(());
        };
        let copy = format!("{name}.{}", self.next_number);
        self.next_number += 1;
        std::fs::copy(self.tree.join(name), self.tree.join(&copy))?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.tree.join(name))?
            .set_len(0)?;
        // The copy is a new file with the old content; the old content now lives there.
        let mut copied = self.ledger.generations[id].clone();
        copied.lives_at = copy.clone();
        self.ledger.generations[id].lives_at = copy.clone();
        self.ledger.generations.push(copied);
        let copy_id = self.ledger.generations.len() - 1;
        self.ledger.paths.entry(copy).or_default().push(copy_id);
        self.ledger.files_created += 1;
        self.ledger.start(name);
        // `start` counted the truncated file as a new one; it is the same file.
        self.ledger.files_created -= 1;
        self.ledger.copytruncates += 1;
        self.limits.remove(name);
        Ok(())
    }

    fn new_file(&mut self) -> std::io::Result<()> {
        let number = self.next_number;
        self.next_number += 1;
        let name = format!("batch/{}/dump-{number}.dat", number % 5);
        let size = self.rng.random_range(0..128 * 1024);
        let id = self.ledger.start(&name);
        let bytes = self.lines(&name, id, 0, size);
        let path = self.tree.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &bytes)?;
        self.ledger.wrote(id, &bytes);
        Ok(())
    }
}
