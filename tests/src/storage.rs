//! The archive's back-end under test, and one way to look at what a server archived that
//! works on both.
//!
//! `LOGARCHIVE_TEST_STORAGE` chooses: unset or `fs`, each test server keeps its archive in
//! its data dir as always; `s3`, every [`TestServer`] of the process gets a key prefix of its
//! own in the bucket `archive` of one Garage cluster ([`crate::garage::shared`], started by
//! the first server and stopped when the process exits), with a `[storage]` section written
//! into its server.toml. The suites then run unchanged, reading what was stored with
//! [`TestServer::archived`], [`TestServer::archived_tree`] and the rest, which read the
//! folder on disk or the bucket (with curl, past the server). Tests about the local disk
//! itself (symbolic links, the partial folder's files, a full disk) call [`skip_on_s3`],
//! which prints why.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bucket::Bucket;
use crate::{TestServer, garage, sha256_hex, tree_files};

/// The bucket the test servers share on S3 (the one `garage.sh start` creates).
pub const BUCKET: &str = "archive";
/// `[storage] server_name` of the test servers on S3 (each has a prefix of its own).
pub const SERVER_NAME: &str = "testserver";

/// Whether this process runs its servers on S3 (`LOGARCHIVE_TEST_STORAGE=s3`); panics on
/// a value it does not know, so a typo cannot silently run the suites on disk.
pub fn on_s3() -> bool {
    match std::env::var("LOGARCHIVE_TEST_STORAGE").as_deref() {
        Err(_) | Ok("") | Ok("fs") => false,
        Ok("s3") => true,
        Ok(other) => panic!("LOGARCHIVE_TEST_STORAGE={other:?}: expected \"fs\" or \"s3\""),
    }
}

/// On S3, prints that `test` is skipped and why, and returns true (the caller returns);
/// on disk, false.
pub fn skip_on_s3(test: &str, reason: &str) -> bool {
    let skip = on_s3();
    if skip {
        eprintln!("skipped on S3: {test}: {reason}");
    }
    skip
}

impl TestServer {
    /// The shared cluster's bucket and this server's prefix in it, on S3.
    fn s3(&self) -> Option<(Bucket, &str)> {
        let prefix = self.s3_prefix.as_deref()?;
        Some((garage::shared().bucket(BUCKET), prefix))
    }

    /// The disk folder of the archive (only on disk).
    fn archive_root(&self) -> PathBuf {
        self.data_dir.join("archive")
    }

    /// The archive path of a file a feed grows, `<dir>/<stem>.<ext>`: on S3 the server's
    /// name is in it (`<dir>/<stem>.<server_name>.<ext>`: one writer per file).
    pub fn feed_file(&self, dir: &str, stem: &str, ext: &str) -> String {
        match self.s3_prefix {
            Some(_) => format!("{dir}/{stem}.{SERVER_NAME}.{ext}"),
            None => format!("{dir}/{stem}.{ext}"),
        }
    }

    /// The bytes of the archived file `path` (archive path, e.g. `/node01/a.log`), read
    /// from the disk or the bucket past the server; `None` if there is no such file.
    pub fn archived(&self, path: &str) -> Option<Vec<u8>> {
        let rel = path.trim_start_matches('/');
        match self.s3() {
            Some((bucket, prefix)) => bucket.get(&format!("{prefix}/{rel}")),
            None => {
                let file = self.archive_root().join(rel);
                file.is_file().then(|| std::fs::read(file).ok()).flatten()
            }
        }
    }

    /// The permission bits of the archived file `path`: on S3, those `SITE CHMOD` keeps in
    /// the object's metadata (0644 when it has none).
    pub fn archived_mode(&self, path: &str) -> Option<u32> {
        let rel = path.trim_start_matches('/');
        match self.s3() {
            Some((bucket, prefix)) => {
                let headers = bucket.head(&format!("{prefix}/{rel}"))?;
                Some(
                    header(&headers, "x-amz-meta-logarchive-mode")
                        .and_then(|mode| u32::from_str_radix(mode, 8).ok())
                        .unwrap_or(0o644),
                )
            }
            None => {
                use std::os::unix::fs::PermissionsExt;
                let meta = std::fs::metadata(self.archive_root().join(rel)).ok()?;
                Some(meta.permissions().mode() & 0o777)
            }
        }
    }

    /// The modification time of the archived file `path`: on S3, the one `MFMT` (or a
    /// rename) keeps in the object's metadata, else the object's `Last-Modified`.
    pub fn archived_modified(&self, path: &str) -> Option<SystemTime> {
        let rel = path.trim_start_matches('/');
        match self.s3() {
            Some((bucket, prefix)) => {
                let headers = bucket.head(&format!("{prefix}/{rel}"))?;
                if let Some(secs) = header(&headers, "x-amz-meta-logarchive-mtime") {
                    return Some(UNIX_EPOCH + Duration::from_secs(secs.parse().ok()?));
                }
                let stored = header(&headers, "last-modified")?;
                let time = time::OffsetDateTime::parse(
                    stored,
                    &time::format_description::well_known::Rfc2822,
                )
                .ok()?;
                Some(time.into())
            }
            None => std::fs::metadata(self.archive_root().join(rel))
                .ok()?
                .modified()
                .ok(),
        }
    }

    /// Whether `path` is an archived file or folder.
    pub fn archived_exists(&self, path: &str) -> bool {
        self.archived(path).is_some() || self.archived_is_dir(path)
    }

    /// Whether `path` is a folder of the archive (on S3: a folder marker or any key below).
    pub fn archived_is_dir(&self, path: &str) -> bool {
        let rel = path.trim_matches('/');
        match self.s3() {
            Some((bucket, prefix)) => !bucket.list(&format!("{prefix}/{rel}/")).is_empty(),
            None => self.archive_root().join(rel).is_dir(),
        }
    }

    /// Every file below the archive folder `dir`, by path relative to it, with its bytes.
    pub fn archived_tree(&self, dir: &str) -> BTreeMap<String, Vec<u8>> {
        let rel = dir.trim_matches('/');
        match self.s3() {
            Some((bucket, prefix)) => {
                let below = below(prefix, dir);
                bucket
                    .list(&below)
                    .into_iter()
                    // Folder markers are folders, not files.
                    .filter(|(key, _)| !key.ends_with('/'))
                    .filter_map(|(key, _)| {
                        // A file removed between listing and reading is simply not seen.
                        let bytes = bucket.get(&key)?;
                        Some((key[below.len()..].to_owned(), bytes))
                    })
                    .collect()
            }
            None => tree_files(&self.archive_root().join(rel)),
        }
    }

    /// Every file below the archive folder `dir`, by path relative to it, with its SHA-256.
    /// On S3 only objects not seen before with the same ETag are read: tests poll this
    /// while hundreds of files arrive.
    pub fn archived_hashes(&self, dir: &str) -> BTreeMap<String, String> {
        let Some((bucket, prefix)) = self.s3() else {
            return self
                .archived_tree(dir)
                .into_iter()
                .map(|(rel, bytes)| (rel, sha256_hex(&bytes)))
                .collect();
        };
        static SEEN: Mutex<BTreeMap<(String, String), String>> = Mutex::new(BTreeMap::new());
        let below = below(prefix, dir);
        let mut hashes = BTreeMap::new();
        for object in bucket.list_objects(&below) {
            if object.key.ends_with('/') {
                continue;
            }
            let id = (object.key.clone(), object.etag.clone());
            let known = SEEN
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned();
            let hash = match known {
                Some(hash) => hash,
                None => {
                    // A file removed between listing and reading is simply not seen.
                    let Some(bytes) = bucket.get(&object.key) else {
                        continue;
                    };
                    let hash = sha256_hex(&bytes);
                    // Cached only if the content is still the listed one.
                    if bytes.len() as u64 == object.size {
                        SEEN.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(id, hash.clone());
                    }
                    hash
                }
            };
            hashes.insert(object.key[below.len()..].to_owned(), hash);
        }
        hashes
    }

    /// The names of the files and folders directly in the archive folder `dir`.
    pub fn archived_names(&self, dir: &str) -> Vec<String> {
        let rel = dir.trim_matches('/');
        let mut names: Vec<String> = match self.s3() {
            Some((bucket, prefix)) => {
                let below = below(prefix, dir);
                bucket
                    .list(&below)
                    .into_iter()
                    .filter_map(|(key, _)| {
                        let name = key[below.len()..].split('/').next()?.to_owned();
                        (!name.is_empty()).then_some(name)
                    })
                    .collect()
            }
            None => std::fs::read_dir(self.archive_root().join(rel))
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default(),
        };
        names.sort();
        names.dedup();
        names
    }

    /// Puts a file into the archive behind the server's back (as an operator copying files
    /// into the tree, or a fixture), making its folders.
    pub fn plant(&self, path: &str, bytes: &[u8]) {
        let rel = path.trim_start_matches('/');
        match self.s3() {
            Some((bucket, prefix)) => bucket.put(&format!("{prefix}/{rel}"), bytes),
            None => {
                let file = self.archive_root().join(rel);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent).expect("make the file's folders");
                }
                std::fs::write(&file, bytes).expect("plant a file");
            }
        }
    }

    /// Like [`TestServer::plant`], with the modification time `modified`: on S3 the time
    /// `MFMT` would keep in the object's metadata (the store's own time cannot be set).
    pub fn plant_modified(&self, path: &str, bytes: &[u8], modified: SystemTime) {
        let rel = path.trim_start_matches('/');
        match self.s3() {
            Some((bucket, prefix)) => {
                let secs = modified
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                bucket.put_with(
                    &format!("{prefix}/{rel}"),
                    bytes,
                    &[("x-amz-meta-logarchive-mtime", &secs.to_string())],
                );
            }
            None => {
                self.plant(path, bytes);
                std::fs::File::options()
                    .write(true)
                    .open(self.archive_root().join(rel))
                    .and_then(|file| file.set_modified(modified))
                    .expect("set the planted file's time");
            }
        }
    }

    /// Makes an (empty) folder in the archive behind the server's back: on S3, the folder
    /// marker the server itself writes for MKD.
    pub fn plant_dir(&self, path: &str) {
        let rel = path.trim_matches('/');
        match self.s3() {
            Some((bucket, prefix)) => {
                // Every level, as `mkdir -p` would on disk.
                let mut at = String::new();
                for component in rel.split('/') {
                    at.push_str(component);
                    at.push('/');
                    bucket.put(&format!("{prefix}/{at}"), b"");
                }
            }
            None => std::fs::create_dir_all(self.archive_root().join(rel)).expect("plant a folder"),
        }
    }

    /// The bytes each upload in progress holds in the store so far: on disk, the files of
    /// the partial folder; on S3, the parts of each incomplete multipart upload (the server
    /// keeps an upload's first part in memory until it is full: 8 MiB).
    pub fn uploads_in_progress(&self) -> Vec<u64> {
        match self.s3() {
            Some((bucket, prefix)) => bucket
                .pending_uploads(&format!("{prefix}/"))
                .iter()
                .map(|upload| bucket.pending_bytes(upload))
                .collect(),
            None => std::fs::read_dir(self.archive_root().join(".logarchive/partial"))
                .map(|entries| {
                    entries
                        .flatten()
                        .filter_map(|e| e.metadata().ok())
                        .map(|m| m.len())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// The value of the header `name` (lower case).
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, value)| value.as_str())
}

/// The key prefix of the files below the archive folder `dir`.
fn below(prefix: &str, dir: &str) -> String {
    let rel = dir.trim_matches('/');
    if rel.is_empty() {
        format!("{prefix}/")
    } else {
        format!("{prefix}/{rel}/")
    }
}
