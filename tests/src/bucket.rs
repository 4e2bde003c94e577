//! An S3 bucket read and written past the server, with curl's SigV4 signing: how the tests
//! look at (and plant fixtures in) an archive kept in a bucket, as they read the archive
//! folder when it is on disk.

use std::path::PathBuf;
use std::process::Command;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What SigV4 leaves unencoded in a key: the unreserved characters and `/`.
const KEY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');
/// A query value: the same, `/` encoded too.
const QUERY: &AsciiSet = &KEY.add(b'/');

/// One bucket of an S3 endpoint, reached with the key in `credentials` (two lines: key id,
/// secret, as `[storage] credentials_file`).
#[derive(Debug, Clone)]
pub struct Bucket {
    pub endpoint: String,
    pub name: String,
    pub credentials: PathBuf,
    /// Where request and reply bodies pass through files (curl's `-K` config included, so
    /// the secret never appears on a command line).
    pub scratch: PathBuf,
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// Changes whenever the object's content does.
    pub etag: String,
}

/// A multipart upload not yet completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
}

impl Bucket {
    /// The object `key`, or `None` unless the store answers 200.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let (status, body) = self.request("GET", &object_url(key), None);
        (status == 200).then_some(body)
    }

    /// The headers of the object `key` (names in lower case), or `None` unless the store
    /// answers 200.
    pub fn head(&self, key: &str) -> Option<Vec<(String, String)>> {
        let (status, headers) = self.request("HEAD", &object_url(key), None);
        (status == 200).then(|| {
            String::from_utf8_lossy(&headers)
                .lines()
                .filter_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
                })
                .collect()
        })
    }

    /// Writes `bytes` under `key`; panics unless the store accepts it.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        self.put_with(key, bytes, &[]);
    }

    /// Like [`Bucket::put`], with `headers` (e.g. `x-amz-meta-*` user metadata).
    pub fn put_with(&self, key: &str, bytes: &[u8], headers: &[(&str, &str)]) {
        let (status, body) = self.request_with("PUT", &object_url(key), Some(bytes), headers);
        assert_eq!(status, 200, "PUT {key}: {}", String::from_utf8_lossy(&body));
    }

    /// Every key below `prefix` with its size, in key order (ListObjectsV2, all pages).
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        self.list_objects(prefix)
            .into_iter()
            .map(|object| (object.key, object.size))
            .collect()
    }

    /// Every object below `prefix`, in key order (ListObjectsV2, all pages).
    pub fn list_objects(&self, prefix: &str) -> Vec<Listed> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // Parameters in SigV4's canonical (sorted) order: curl 7.88 signs them as given.
            let mut query = String::new();
            if let Some(token) = &token {
                query.push_str(&format!(
                    "continuation-token={}&",
                    utf8_percent_encode(token, QUERY)
                ));
            }
            query.push_str(&format!(
                "list-type=2&prefix={}",
                utf8_percent_encode(prefix, QUERY)
            ));
            let (status, body) = self.request("GET", &format!("?{query}"), None);
            assert_eq!(
                status,
                200,
                "list {prefix}: {}",
                String::from_utf8_lossy(&body)
            );
            let page = xml_fields(&body, "Contents", &["Key", "Size", "ETag"]);
            objects.extend(page.into_iter().map(|fields| Listed {
                key: fields[0].clone(),
                size: fields[1].parse().unwrap_or(0),
                etag: fields[2].clone(),
            }));
            let next = xml_fields(&body, "ListBucketResult", &["NextContinuationToken"]);
            token = next
                .into_iter()
                .next()
                .map(|fields| fields[0].clone())
                .filter(|t| !t.is_empty());
            if token.is_none() {
                return objects;
            }
        }
    }

    /// The multipart uploads in progress below `prefix` (ListMultipartUploads).
    pub fn pending_uploads(&self, prefix: &str) -> Vec<PendingUpload> {
        let query = format!("?prefix={}&uploads=", utf8_percent_encode(prefix, QUERY));
        let (status, body) = self.request("GET", &query, None);
        assert_eq!(
            status,
            200,
            "list uploads: {}",
            String::from_utf8_lossy(&body)
        );
        xml_fields(&body, "Upload", &["Key", "UploadId"])
            .into_iter()
            .map(|fields| PendingUpload {
                key: fields[0].clone(),
                upload_id: fields[1].clone(),
            })
            .collect()
    }

    /// The bytes the parts of a pending upload hold so far (ListParts); 0 once it is gone.
    pub fn pending_bytes(&self, upload: &PendingUpload) -> u64 {
        let query = format!(
            "{}?uploadId={}",
            object_url(&upload.key),
            utf8_percent_encode(&upload.upload_id, QUERY)
        );
        let (status, body) = self.request("GET", &query, None);
        if status != 200 {
            return 0;
        }
        xml_fields(&body, "Part", &["Size"])
            .iter()
            .filter_map(|fields| fields[0].parse::<u64>().ok())
            .sum()
    }

    /// One signed request; (status, body; the headers for a HEAD). `path` follows the
    /// bucket's URL: `/key...` or `?query`.
    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
        self.request_with(method, path, body, &[])
    }

    fn request_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<u8>) {
        let credentials = std::fs::read_to_string(&self.credentials).expect("S3 credentials");
        let mut lines = credentials.lines();
        let (id, secret) = (
            lines.next().unwrap_or_default(),
            lines.next().unwrap_or_default(),
        );
        let tag = format!("{:016x}", rand::random::<u64>());
        let config = self.scratch.join(format!("curl-{tag}.conf"));
        let reply = self.scratch.join(format!("reply-{tag}"));
        let sent = self.scratch.join(format!("body-{tag}"));
        std::fs::write(&config, format!("user = \"{id}:{secret}\"\n")).expect("curl config");
        let mut command = Command::new("curl");
        if method == "HEAD" {
            command.arg("-I").arg("-D").arg(&reply);
        } else {
            command.args(["-X", method]);
        }
        command
            .args(["-sS", "--aws-sigv4", "aws:amz:garage:s3"])
            .arg("-K")
            .arg(&config)
            .args(["-w", "%{http_code}"]);
        if method != "HEAD" {
            command.arg("-o").arg(&reply);
        } else {
            command.args(["-o", "/dev/null"]);
        }
        match body {
            Some(bytes) => {
                std::fs::write(&sent, bytes).expect("request body");
                // The payload's hash, as S3 wants it signed.
                let hash = {
                    use sha2::Digest;
                    hex::encode(sha2::Sha256::digest(bytes))
                };
                command
                    .args(["-H", &format!("x-amz-content-sha256: {hash}")])
                    .args(["-H", "Content-Type: application/octet-stream"])
                    .arg("--data-binary")
                    .arg(format!("@{}", sent.display()));
            }
            None => {
                // The hash of an empty body.
                command.args([
                    "-H",
                    "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                ]);
            }
        }
        for (name, value) in headers {
            command.args(["-H", &format!("{name}: {value}")]);
        }
        command.arg(format!("{}/{}{path}", self.endpoint, self.name));
        let out = command
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
        let _ = std::fs::remove_file(&config);
        let _ = std::fs::remove_file(&sent);
        let bytes = std::fs::read(&reply).unwrap_or_default();
        let _ = std::fs::remove_file(&reply);
        let status = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        (status, bytes)
    }
}

/// `/key` encoded as SigV4 signs it.
fn object_url(key: &str) -> String {
    format!("/{}", utf8_percent_encode(key, KEY))
}

/// For each `<element>` of an S3 XML reply, the text of its children named `fields` (empty
/// when absent), in that order.
fn xml_fields(xml: &[u8], element: &str, fields: &[&str]) -> Vec<Vec<String>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut found = Vec::new();
    let mut current: Option<Vec<String>> = None;
    let mut field: Option<usize> = None;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(start)) => {
                let name = start.local_name().as_ref().to_owned();
                if name == element {
                    current = Some(vec![String::new(); fields.len()]);
                } else if current.is_some() {
                    field = fields.iter().position(|f| *f == name);
                }
            }
            Ok(Event::Text(text)) => {
                if let (Some(values), Some(i)) = (current.as_mut(), field) {
                    values[i].push_str(&text.xml10_content());
                }
            }
            Ok(Event::GeneralRef(entity)) => {
                if let (Some(values), Some(i)) = (current.as_mut(), field) {
                    // `&amp;` and kin arrive as references of their own.
                    if let Ok(Some(ch)) = entity.resolve_char_ref() {
                        values[i].push(ch);
                    } else if let Some(text) =
                        quick_xml::escape::resolve_predefined_entity(&entity.xml10_content())
                    {
                        values[i].push_str(text);
                    }
                }
            }
            Ok(Event::End(end)) => {
                let name = end.local_name().as_ref().to_owned();
                if name == element {
                    found.extend(current.take());
                }
                field = None;
            }
            Ok(Event::Eof) => return found,
            Err(err) => panic!(
                "S3 reply is not XML ({err}): {}",
                String::from_utf8_lossy(xml)
            ),
            _ => {}
        }
        buf.clear();
    }
}
