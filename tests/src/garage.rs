//! A 3-node Garage cluster (replication factor 3) on loopback ports, for the tests of the
//! S3 back-end: started by `scripts/garage.sh start`, which builds Garage into
//! `target/garage/` the first time, and stopped (every node) when dropped. [`shared`] is the
//! one cluster of a test process (`LOGARCHIVE_TEST_STORAGE=s3`), stopped when it exits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::bucket::Bucket;
use crate::free_port;

static SHARED: OnceLock<GarageCluster> = OnceLock::new();

/// The cluster every test of this process shares, started by the first caller. It is
/// stopped (and its folder removed) when the process exits; should the process be killed
/// instead, `garage.sh` stops it within a second of the process's end.
pub fn shared() -> &'static GarageCluster {
    SHARED.get_or_init(|| {
        let cluster = GarageCluster::start();
        // SAFETY: registers a plain `extern "C"` function, as atexit requires.
        let registered = unsafe { libc::atexit(stop_shared) };
        assert_eq!(registered, 0, "atexit");
        cluster
    })
}

extern "C" fn stop_shared() {
    if let Some(cluster) = SHARED.get() {
        cluster.stop();
        let _ = std::fs::remove_dir_all(cluster.dir.path());
    }
}

pub struct GarageCluster {
    pub dir: tempfile::TempDir,
    /// The S3 endpoint of each node.
    pub endpoints: Vec<String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/garage.sh")
}

impl GarageCluster {
    /// Starts the cluster with a key and the bucket `archive`.
    pub fn start() -> GarageCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..9).map(|_| free_port()).collect();
        let mut command = Command::new("bash");
        command.arg(script()).arg("start").arg(dir.path());
        // The nodes outlive this process by a second at most, however it ends.
        command.env("GARAGE_WATCH_PID", std::process::id().to_string());
        for port in &ports {
            command.arg(port.to_string());
        }
        let out = command.output().expect("run scripts/garage.sh");
        let cluster = GarageCluster {
            endpoints: (0..3)
                .map(|i| format!("http://127.0.0.1:{}", ports[i * 3 + 1]))
                .collect(),
            dir,
        };
        assert!(
            out.status.success(),
            "garage.sh start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    /// Creates another bucket the key may read and write.
    pub fn create_bucket(&self, name: &str) {
        let out = Command::new("bash")
            .arg(script())
            .args(["bucket"])
            .arg(self.dir.path())
            .arg(name)
            .output()
            .expect("run scripts/garage.sh");
        assert!(
            out.status.success(),
            "garage.sh bucket: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The file with the key id and secret (what `[storage] credentials_file` names).
    pub fn credentials(&self) -> PathBuf {
        self.dir.path().join("s3.credentials")
    }

    /// The bucket `name`, read and written past the servers with the cluster's key.
    pub fn bucket(&self, name: &str) -> Bucket {
        Bucket {
            endpoint: self.endpoints[0].clone(),
            name: name.to_owned(),
            credentials: self.credentials(),
            scratch: self.dir.path().to_owned(),
        }
    }

    /// A `[storage]` section for `bucket` under `prefix`, through node `node`, for the
    /// server named `server_name` (unique among the servers sharing the prefix).
    pub fn storage_section(
        &self,
        bucket: &str,
        prefix: &str,
        node: usize,
        server_name: &str,
    ) -> String {
        format!(
            "[storage]\nkind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{bucket}\"\nregion = \"garage\"\nprefix = \"{prefix}\"\ncredentials_file = \"{}\"\nfollow_interval = \"500ms\"\nserver_name = \"{server_name}\"\n",
            self.endpoints[node],
            self.credentials().display()
        )
    }

    /// Stops node `i` (SIGKILL: a crashed machine, not a clean shutdown).
    pub fn stop_node(&self, i: usize) {
        let pid = std::fs::read_to_string(self.dir.path().join(format!("node-{i}.pid")))
            .expect("node pid file");
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .expect("kill");
        assert!(status.success(), "node {i} was not running");
    }

    /// The log of node `i`.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{i}.log"))).unwrap_or_default()
    }
}

impl GarageCluster {
    /// Stops every node and waits for them to exit.
    pub fn stop(&self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
