//! Destinations in an S3 bucket (`destination directory = s3://BUCKET/PREFIX`): [`ObjectStore`]
//! is what a section's configuration says, [`S3Folder`] a [`Door`] whose files are the objects
//! under one prefix (`PREFIX/rbd/vm/`), and [`S3Bucket`] a synchronous client of one bucket.
//!
//! Requests are signed by `rusty-s3` (AWS Signature Version 4, as presigned URLs: the signature
//! travels in the query string, the payload is not signed) and carried by `ureq`, both blocking:
//! no async runtime, and a GET is a plain [`Read`] of the response as it arrives. Requests are
//! path-style (`ENDPOINT/BUCKET/KEY`), so any S3 service answers them (radosgw with no DNS names
//! for its buckets); plain HTTP only when the endpoint says `http://`. A request that failed on
//! the way, or that the service answered with a 5xx or 429, is tried again after a pause, a
//! bounded number of times.
//!
//! A new backup file is a multipart upload ([`S3Upload`]): its bytes leave in parts of [`PART`]
//! bytes as they are written (the only memory an upload holds), and the object appears under its
//! name only when the upload is completed, after its checksum object. An upload dropped unfinished
//! is aborted; one a killed run left is aborted by the next run, which finds its id in the image's
//! record ([`Door::abandon`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use ureq::http::Response;
use ureq::Body;

use super::{Door, LocalFolder, Opened, Published, Sharing, Staged, Upload};
use crate::folder::access::FileAccess;
use crate::folder::chain::FolderEntry;
use crate::folder::format::write::checksum_line;
use crate::folder::naming::checksum_name;
use crate::folder::untrusted::{self, EntryKind};

/// How a destination names an object store.
pub const S3_SCHEME: &str = "s3://";

/// How long a signed request stays valid: long enough for a part on a slow link.
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);

/// The size of an upload's first parts: what an upload holds in memory. A long upload takes
/// larger parts as it goes ([`part_size`]), since S3 takes at most [`MAX_PARTS`].
pub const PART: usize = 8 * 1024 * 1024;

/// S3's most parts in one upload.
const MAX_PARTS: usize = 10_000;

/// How many parts go at each size before the next part size (double) is taken, up to 64 MiB:
/// 8, 16 and 32 MiB for 1,000 parts each, then 64 MiB, about 490 GiB in all.
const PARTS_PER_SIZE: usize = 1_000;
const MAX_PART: usize = 64 * 1024 * 1024;

/// The most a listing page or an error answer may hold: a page of 1000 keys is far less.
const ANSWER_LIMIT: u64 = 8 * 1024 * 1024;

/// How many times a request is sent before its failure counts, and the first pause between
/// tries (doubled each time).
const ATTEMPTS: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_millis(500);

/// The longest a credentials file may be.
const MAX_CREDENTIALS_FILE: u64 = 64 * 1024;

/// A section's object-store destination: the bucket, the prefix in it, and how to reach it.
#[derive(Clone)]
pub struct ObjectStore {
    /// The bucket and its client, shared by every folder of the destination.
    client: Arc<S3Bucket>,
    /// Empty (the bucket's top) or without a leading or trailing `/`.
    prefix: String,
    endpoint: String,
    region: String,
}

impl std::fmt::Debug for ObjectStore {
    // Never the secret key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.client.name())
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("access key", &self.client.credentials.key())
            .finish_non_exhaustive()
    }
}

impl PartialEq for ObjectStore {
    fn eq(&self, other: &ObjectStore) -> bool {
        (
            &self.endpoint,
            self.client.name(),
            &self.prefix,
            &self.region,
        ) == (
            &other.endpoint,
            other.client.name(),
            &other.prefix,
            &other.region,
        ) && self.client.credentials.key() == other.client.credentials.key()
    }
}

impl Eq for ObjectStore {}

/// Which part of an object store's configuration a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKey {
    Destination,
    Endpoint,
    Credentials,
}

/// Where an object store's credentials come from: a file, else the `AWS_*` environment.
pub enum CredentialSource<'a> {
    File(&'a Path),
    Environment,
}

impl ObjectStore {
    /// Whether `destination` names an object store rather than a folder.
    pub fn is_named_by(destination: &str) -> bool {
        destination.starts_with(S3_SCHEME)
    }

    /// The store of `destination` (`s3://BUCKET/PREFIX`) at `endpoint`, signed for `region`,
    /// with the credentials `source` gives. An error says which key is wrong, and how.
    pub fn new(
        destination: &str,
        endpoint: &str,
        region: &str,
        source: &CredentialSource,
    ) -> Result<ObjectStore, (StoreKey, String)> {
        let (bucket, prefix) =
            parse_destination(destination).map_err(|e| (StoreKey::Destination, e))?;
        let url = parse_endpoint(endpoint).map_err(|e| (StoreKey::Endpoint, e))?;
        let credentials = match source {
            CredentialSource::File(path) => read_credentials_file(path),
            CredentialSource::Environment => credentials_from_environment(),
        }
        .map_err(|e| (StoreKey::Credentials, e))?;
        let client = S3Bucket::new(url, bucket, region, credentials)
            .map_err(|err| (StoreKey::Endpoint, format!("{err:#}")))?;
        Ok(ObjectStore {
            client: Arc::new(client),
            prefix: prefix.to_string(),
            endpoint: endpoint.to_string(),
            region: region.to_string(),
        })
    }

    /// The folder `below` the store's prefix (`[]`: the destination's top; `[pool, image]`).
    pub fn folder(&self, below: &[&str]) -> S3Folder {
        let parts: Vec<&str> = std::iter::once(self.prefix.as_str())
            .filter(|p| !p.is_empty())
            .chain(below.iter().copied())
            .collect();
        S3Folder::new(Arc::clone(&self.client), &parts.join("/"))
    }

    /// What the host remembers the store by, as it remembers a folder's filesystem: the service
    /// and the bucket.
    pub fn identity(&self) -> String {
        format!(
            "{}/{}",
            self.endpoint.trim_end_matches('/'),
            self.client.name()
        )
    }

    /// The bucket's client.
    pub fn bucket(&self) -> &S3Bucket {
        &self.client
    }
}

/// The bucket and prefix of `s3://BUCKET/PREFIX`.
fn parse_destination(destination: &str) -> Result<(&str, &str), String> {
    let rest = destination
        .strip_prefix(S3_SCHEME)
        .ok_or_else(|| format!("{destination:?} does not start with {S3_SCHEME}"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_end_matches('/');
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !bucket_ok {
        return Err(format!(
            "{bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, dots and hyphens)"
        ));
    }
    if prefix.len() > 512 {
        return Err("the prefix after the bucket is longer than 512 bytes".into());
    }
    if !prefix.is_empty() {
        for part in prefix.split('/') {
            if part.is_empty() || part == "." || part == ".." || part.chars().any(char::is_control)
            {
                return Err(format!(
                    "the prefix {prefix:?} has an empty, `.`, `..` or unprintable part"
                ));
            }
        }
    }
    Ok((bucket, prefix))
}

fn parse_endpoint(endpoint: &str) -> Result<url::Url, String> {
    let url: url::Url = endpoint
        .parse()
        .map_err(|_| format!("{endpoint:?} is not a URL (http://HOST:PORT or https://HOST)"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{endpoint:?} is not an http:// or https:// URL of a host"
        ));
    }
    if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{endpoint:?}: an endpoint carries no query or user name (the keys go in `s3 credentials`)"
        ));
    }
    Ok(url)
}

/// The `[default]` keys of an AWS shared-credentials file that nobody but this user may read.
fn read_credentials_file(path: &Path) -> Result<Credentials, String> {
    let bytes = match untrusted::read_owned(path, MAX_CREDENTIALS_FILE, 0o077) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(format!("{}: no such file", path.display())),
        Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
    };
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not text", path.display()))?;
    let mut section = None;
    let (mut key, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_string());
            continue;
        }
        if section.as_deref() != Some("default") {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let value = Some(value.trim().to_string()).filter(|v| !v.is_empty());
        match name.trim() {
            "aws_access_key_id" => key = value,
            "aws_secret_access_key" => secret = value,
            "aws_session_token" => token = value,
            _ => {}
        }
    }
    match (key, secret) {
        (Some(key), Some(secret)) => Ok(match token {
            Some(token) => Credentials::new_with_token(key, secret, token),
            None => Credentials::new(key, secret),
        }),
        _ => Err(format!(
            "{} has no aws_access_key_id and aws_secret_access_key under [default]",
            path.display()
        )),
    }
}

fn credentials_from_environment() -> Result<Credentials, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(key), Some(secret)) => Ok(match var("AWS_SESSION_TOKEN") {
            Some(token) => Credentials::new_with_token(key, secret, token),
            None => Credentials::new(key, secret),
        }),
        _ => Err(
            "no credentials: set `s3 credentials` (a file of aws_access_key_id and \
             aws_secret_access_key under [default], mode 0600) or AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY"
                .into(),
        ),
    }
}

/// A listing under a prefix: the objects, as (name after the prefix, size), and the names of
/// the "folders" (common prefixes) below it.
pub struct Listing {
    pub objects: Vec<(String, u64)>,
    pub folders: Vec<String>,
}

/// One bucket of an S3 service.
pub struct S3Bucket {
    agent: ureq::Agent,
    bucket: Bucket,
    credentials: Credentials,
}

/// An S3 error answer, or a status without one, carried inside an `io::Error`.
#[derive(Debug, thiserror::Error)]
#[error("the S3 service answered {status}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct S3Refused {
    pub status: u16,
    /// The `<Code>` of the error answer (`NoSuchBucket`, `AccessDenied`, …).
    pub code: Option<String>,
}

impl S3Bucket {
    /// The bucket `name` at `endpoint`, in `region`.
    fn new(
        endpoint: url::Url,
        name: &str,
        region: &str,
        credentials: Credentials,
    ) -> Result<S3Bucket> {
        let shown = endpoint.to_string();
        let bucket = Bucket::new(
            endpoint,
            UrlStyle::Path,
            name.to_string(),
            region.to_string(),
        )
        .with_context(|| format!("no bucket {name} can be reached at {shown}"))?;
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        // No limit on a whole request (a restore reads a base for hours), but on each wait: a
        // service that stops answering fails the request instead of hanging the run.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .timeout_per_write(Some(Duration::from_secs(120)))
            .max_redirects(0)
            .build()
            .into();
        Ok(S3Bucket {
            agent,
            bucket,
            credentials,
        })
    }

    pub fn name(&self) -> &str {
        self.bucket.name()
    }

    /// Whether the bucket is there (and these credentials may see it).
    pub fn exists(&self) -> io::Result<bool> {
        let sent = retrying(|| {
            let url = self
                .bucket
                .head_bucket(Some(&self.credentials))
                .sign(SIGNED_FOR);
            checked(self.agent.head(url.as_str()).call())
        });
        match sent {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// What is directly under `prefix` (empty, or ending with `/`), every page of the listing.
    pub fn list(&self, prefix: &str) -> io::Result<Listing> {
        let mut objects = Vec::new();
        let mut folders = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let body = retrying(|| {
                let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
                action.with_prefix(prefix);
                action.with_delimiter("/");
                if let Some(token) = &token {
                    action.with_continuation_token(token.clone());
                }
                let url = action.sign(SIGNED_FOR);
                read_answer(checked(self.agent.get(url.as_str()).call())?)
            })?;
            let page = ListObjectsV2::parse_response(&body).map_err(io::Error::other)?;
            for object in page.contents {
                let name = object.key.strip_prefix(prefix).unwrap_or(&object.key);
                // A "folder marker" (an empty object named like the prefix) is no file.
                if !name.is_empty() {
                    objects.push((name.to_string(), object.size.unwrap_or(0)));
                }
            }
            for folder in page.common_prefixes {
                let name = folder.prefix.strip_prefix(prefix).unwrap_or(&folder.prefix);
                folders.push(name.trim_end_matches('/').to_string());
            }
            match page.next_continuation_token {
                Some(next) if token.as_ref() != Some(&next) => token = Some(next),
                _ => return Ok(Listing { objects, folders }),
            }
        }
    }

    /// Whether any object's key starts with `prefix`.
    pub fn holds_any(&self, prefix: &str) -> io::Result<bool> {
        let body = retrying(|| {
            let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(prefix);
            action.with_max_keys(1);
            let url = action.sign(SIGNED_FOR);
            read_answer(checked(self.agent.get(url.as_str()).call())?)
        })?;
        let page = ListObjectsV2::parse_response(&body).map_err(io::Error::other)?;
        Ok(!page.contents.is_empty())
    }

    /// The size of the object `key`; `NotFound` when there is none.
    pub fn size(&self, key: &str) -> io::Result<u64> {
        retrying(|| {
            let url = self
                .bucket
                .head_object(Some(&self.credentials), key)
                .sign(SIGNED_FOR);
            content_length(&checked(self.agent.head(url.as_str()).call())?)
        })
    }

    /// The object `key` as a stream, from its first byte, or only `range` of it.
    pub fn get(&self, key: &str, range: Option<Range<u64>>) -> io::Result<Opened> {
        if range.as_ref().is_some_and(Range::is_empty) {
            return Ok(Opened {
                reader: Box::new(io::empty()),
                len: 0,
            });
        }
        let response = retrying(|| {
            let url = self
                .bucket
                .get_object(Some(&self.credentials), key)
                .sign(SIGNED_FOR);
            let mut request = self.agent.get(url.as_str());
            if let Some(range) = &range {
                request =
                    request.header("range", format!("bytes={}-{}", range.start, range.end - 1));
            }
            checked(request.call())
        })?;
        let len = content_length(&response)?;
        if let Some(range) = range {
            if response.status().as_u16() != 206 || len != range.end - range.start {
                return Err(io::Error::other(format!(
                    "asked for bytes {range:?}, the S3 service sent {len} bytes with status {}",
                    response.status()
                )));
            }
        }
        // The body is read as it comes, and never past the length the answer announced.
        let reader = response.into_body().into_reader().take(len);
        Ok(Opened {
            reader: Box::new(reader),
            len,
        })
    }

    /// Stores `bytes` as the object `key`, whole (S3 has no partial object).
    pub fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        retrying(|| {
            let url = self
                .bucket
                .put_object(Some(&self.credentials), key)
                .sign(SIGNED_FOR);
            checked(self.agent.put(url.as_str()).send(bytes)).map(drop)
        })
    }

    /// Removes the object `key` (S3 answers the same whether it was there or not).
    pub fn delete(&self, key: &str) -> io::Result<()> {
        retrying(|| {
            let url = self
                .bucket
                .delete_object(Some(&self.credentials), key)
                .sign(SIGNED_FOR);
            checked(self.agent.delete(url.as_str()).call()).map(drop)
        })
    }

    /// Starts a multipart upload of `key`; its id.
    pub fn create_upload(&self, key: &str) -> io::Result<String> {
        let answer = retrying(|| {
            let url = self
                .bucket
                .create_multipart_upload(Some(&self.credentials), key)
                .sign(SIGNED_FOR);
            read_answer(checked(self.agent.post(url.as_str()).send_empty())?)
        })?;
        let created = CreateMultipartUpload::parse_response(&answer).map_err(io::Error::other)?;
        Ok(created.upload_id().to_string())
    }

    /// Uploads part `number` (from 1) of the upload `id`; its ETag.
    pub fn upload_part(
        &self,
        key: &str,
        id: &str,
        number: u16,
        bytes: &[u8],
    ) -> io::Result<String> {
        let response = retrying(|| {
            let url = self
                .bucket
                .upload_part(Some(&self.credentials), key, number, id)
                .sign(SIGNED_FOR);
            checked(self.agent.put(url.as_str()).send(bytes))
        })?;
        response
            .headers()
            .get("etag")
            .and_then(|etag| etag.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| io::Error::other("the S3 service sent no ETag for a part"))
    }

    /// Completes the upload `id` of `key` from its parts' ETags, in order.
    pub fn complete_upload(&self, key: &str, id: &str, etags: &[String]) -> io::Result<()> {
        let complete = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            id,
            etags.iter().map(String::as_str),
        );
        let url = complete.sign(SIGNED_FOR);
        // Sent once: had a lost answer hidden a success, a second try would find no upload.
        let answer = read_answer(checked(
            self.agent.post(url.as_str()).send(complete.body()),
        )?)?;
        // S3 may answer 200 with an error inside when completing fails late.
        if answer.contains("<Error>") {
            return Err(io::Error::other(refused(500, &answer)));
        }
        Ok(())
    }

    pub fn abort_upload(&self, key: &str, id: &str) -> io::Result<()> {
        let aborted = retrying(|| {
            let url = self
                .bucket
                .abort_multipart_upload(Some(&self.credentials), key, id)
                .sign(SIGNED_FOR);
            checked(self.agent.delete(url.as_str()).call()).map(drop)
        });
        match aborted {
            // Gone already (completed, or aborted by an earlier try).
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// The unfinished multipart uploads of keys under `prefix`, as (key, id); the first 1000.
    /// rusty-s3 has no action for ListMultipartUploads: it is signed with its public signer.
    pub fn uploads(&self, prefix: &str) -> io::Result<Vec<(String, String)>> {
        let answer = retrying(|| {
            let query = [("prefix", prefix), ("uploads", "")];
            let url = rusty_s3::signing::sign(
                &jiff::Timestamp::now(),
                rusty_s3::Method::Get,
                self.bucket.base_url().clone(),
                self.credentials.key(),
                self.credentials.secret(),
                self.credentials.token(),
                self.bucket.region(),
                SIGNED_FOR.as_secs(),
                query.iter().copied(),
                std::iter::empty(),
            );
            read_answer(checked(self.agent.get(url.as_str()).call())?)
        })?;
        Ok(answer
            .split("<Upload>")
            .skip(1)
            .filter_map(|upload| Some((element(upload, "Key")?, element(upload, "UploadId")?)))
            .collect())
    }
}

/// `send` until it succeeds, fails for good, or has been tried [`ATTEMPTS`] times, pausing
/// longer after each failure that another try may mend (a broken connection, a 5xx, a 429).
fn retrying<T>(mut send: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        match send() {
            Err(err) if attempt < ATTEMPTS && transient(&err) => {
                tracing::debug!("S3 request failed ({err}); trying again in {pause:?}");
                std::thread::sleep(pause);
                pause *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Whether a failed request may succeed when sent again.
fn transient(err: &io::Error) -> bool {
    if crate::interrupt::received().is_some() {
        return false;
    }
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<S3Refused>())
    {
        Some(refused) => refused.status >= 500 || refused.status == 429,
        // Not an answer: the connection failed or timed out. A 404 is an answer.
        None => err.kind() != io::ErrorKind::NotFound,
    }
}

/// The answer when its status says success; otherwise the error it carries (`NotFound` for a
/// 404, with the S3 error code inside).
fn checked(answer: Result<Response<Body>, ureq::Error>) -> io::Result<Response<Body>> {
    let response = answer.map_err(io_error)?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    let body = read_answer(response).unwrap_or_default();
    let err = refused(status, &body);
    Err(if status == 404 {
        io::Error::new(io::ErrorKind::NotFound, err)
    } else {
        io::Error::other(err)
    })
}

fn io_error(err: ureq::Error) -> io::Error {
    match err {
        ureq::Error::Io(err) => err,
        other => io::Error::other(other),
    }
}

fn refused(status: u16, body: &str) -> S3Refused {
    S3Refused {
        status,
        code: element(body, "Code"),
    }
}

/// The body of an answer as text, within [`ANSWER_LIMIT`].
fn read_answer(response: Response<Body>) -> io::Result<String> {
    response
        .into_body()
        .into_with_config()
        .limit(ANSWER_LIMIT)
        .read_to_string()
        .map_err(io_error)
}

fn content_length(response: &Response<Body>) -> io::Result<u64> {
    response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("the S3 service sent no length"))
}

/// The text of the first `<name>` element of `xml`, when there is one (S3's answers hold no
/// nested element of the same name).
fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find('<')?;
    Some(xml[start..end].to_string())
}

/// The size of part `number` (from 1) of an upload: small parts keep a small file's upload
/// small, larger ones let a large image fit in S3's most parts, without knowing its size first.
fn part_size(number: usize) -> usize {
    let doublings = ((number.max(1) - 1) / PARTS_PER_SIZE).min(3);
    (PART << doublings).min(MAX_PART)
}

/// One folder of a destination in a bucket: the objects under `prefix`.
pub struct S3Folder {
    bucket: Arc<S3Bucket>,
    /// Empty (the bucket's top) or ending with `/`.
    prefix: String,
}

impl S3Folder {
    fn new(bucket: Arc<S3Bucket>, prefix: &str) -> S3Folder {
        let prefix = prefix.trim_matches('/');
        S3Folder {
            bucket,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn start_upload(&self, name: &str) -> Result<S3Upload> {
        let key = self.key(name);
        let id = self.bucket.create_upload(&key).with_context(|| {
            format!(
                "cannot start the upload of {}",
                self.location_of(name).display()
            )
        })?;
        Ok(S3Upload::new(&self.bucket, name, key, id))
    }
}

impl Door for S3Folder {
    fn location(&self) -> PathBuf {
        PathBuf::from(format!(
            "{S3_SCHEME}{}/{}",
            self.bucket.name(),
            self.prefix.trim_end_matches('/')
        ))
    }

    /// A bucket's objects are as private as its policy makes them.
    fn access(&self) -> FileAccess {
        FileAccess::PRIVATE
    }

    /// A prefix is there as long as its bucket is.
    fn kind(&self) -> io::Result<EntryKind> {
        match self.bucket.exists()? {
            true => Ok(EntryKind::Directory),
            false => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("there is no bucket {}", self.bucket.name()),
            )),
        }
    }

    fn list(&self) -> Result<Vec<FolderEntry>> {
        let listing = self
            .bucket
            .list(&self.prefix)
            .with_context(|| format!("cannot list {}", self.location().display()))?;
        let mut entries: Vec<FolderEntry> = listing
            .objects
            .iter()
            .map(|(name, size)| FolderEntry::file(name, *size))
            .chain(listing.folders.iter().map(|name| FolderEntry {
                name: name.clone(),
                kind: EntryKind::Directory,
                size: 0,
                exact_name: true,
            }))
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// An object is a file; a name that other objects' keys continue with a `/` is a folder.
    fn kind_of(&self, name: &str) -> io::Result<EntryKind> {
        match self.bucket.size(&self.key(name)) {
            Ok(_) => Ok(EntryKind::File),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                match self.bucket.holds_any(&format!("{}/", self.key(name)))? {
                    true => Ok(EntryKind::Directory),
                    false => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    fn open(&self, name: &str) -> io::Result<Opened> {
        self.bucket.get(&self.key(name), None)
    }

    /// An object's owner is whoever holds the bucket's keys: the tool's records are believed for
    /// their seal ([`crate::folder::record`]), never for where they are.
    fn read_own(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        self.read_small(name, limit)
    }

    fn create(&self) -> Result<()> {
        match self.kind() {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => bail!("{err}"),
            Err(err) => {
                Err(err).with_context(|| format!("cannot reach bucket {}", self.bucket.name()))
            }
        }
    }

    fn stage(&self, name: &str) -> Result<Option<Staged>> {
        Ok(Some(Staged::Stream(Box::new(self.start_upload(name)?))))
    }

    fn abandon(&self, name: &str, leftover: &str) -> Result<()> {
        self.bucket
            .abort_upload(&self.key(name), leftover)
            .with_context(|| {
                format!(
                    "cannot abort the unfinished upload {leftover} of {}",
                    self.location_of(name).display()
                )
            })
    }

    /// In `TMPDIR`, else `/var/tmp`: a compressed diff is spooled here before it is archived,
    /// and `/tmp` is often a small tmpfs.
    fn scratch(&self) -> Result<File> {
        let dir =
            std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
        #[allow(clippy::disallowed_methods)] // nameless, in the host's temporary folder
        let scratch = tempfile::tempfile_in(&dir);
        scratch.with_context(|| format!("cannot create a temporary file in {}", dir.display()))
    }

    fn publish(&self, file: Staged, sha256: &str, replace: bool) -> Result<Published> {
        let Staged::Stream(mut upload) = file else {
            bail!("internal error: an S3 folder was given a local file to publish");
        };
        let name = upload.name().to_string();
        let location = self.location_of(&name);
        // S3 would replace an object without a word (radosgw ignores If-None-Match when an
        // upload is completed): ask first. The image's lock keeps the tool's own runs out
        // between the question and the completion.
        if !replace {
            match self.kind_of(&name) {
                Ok(_) => bail!(
                    "{} exists already, written by something other than this run; it is left alone",
                    location.display()
                ),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("cannot publish {}", location.display()))
                }
            }
        }
        upload
            .send_rest()
            .with_context(|| format!("cannot upload {}", location.display()))?;
        let line = checksum_line(sha256, &name);
        let checksum = checksum_name(&name);
        self.put(&checksum, line.as_bytes(), Sharing::Folder)?;
        match upload.complete() {
            Ok(size) => Ok(Published {
                size,
                checksum_size: line.len() as u64,
            }),
            Err(err) => {
                // No checksum without its file.
                let _ = self.bucket.delete(&self.key(&checksum));
                Err(err).with_context(|| format!("cannot upload {}", location.display()))
            }
        }
    }

    fn put(&self, name: &str, bytes: &[u8], _sharing: Sharing) -> Result<()> {
        self.bucket
            .put(&self.key(name), bytes)
            .with_context(|| format!("cannot write {}", self.location_of(name).display()))
    }

    fn remove(&self, name: &str) -> Result<bool> {
        let location = self.location_of(name);
        match self.kind_of(name) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot remove {}", location.display()))
            }
            Ok(_) => {}
        }
        self.bucket
            .delete(&self.key(name))
            .with_context(|| format!("cannot remove {}", location.display()))?;
        Ok(true)
    }

    /// Objects are never changed in place: a slide's new base is exported from the cluster.
    fn in_place(&self) -> Option<&LocalFolder> {
        None
    }
}

/// A backup file on its way into a bucket: a multipart upload fed part by part. Full parts go
/// to [`SENDERS`] threads that send them while the next one fills, so the upload holds at most
/// `SENDERS + 1` parts in memory.
pub struct S3Upload {
    bucket: Arc<S3Bucket>,
    name: String,
    key: String,
    id: String,
    /// The part being filled.
    part: Vec<u8>,
    /// How many parts were handed to the senders.
    handed: usize,
    size: u64,
    senders: Option<PartSenders>,
    /// The parts' ETags, once all were sent.
    etags: Option<Vec<String>>,
    completed: bool,
}

/// How many parts are sent at once.
const SENDERS: usize = 2;

/// The threads sending an upload's parts, fed through a hand-over with no room: a part waits in
/// the writer's hands until a sender is free.
struct PartSenders {
    hand_over: std::sync::mpsc::SyncSender<(u16, Vec<u8>)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    sent: Arc<std::sync::Mutex<SentParts>>,
}

#[derive(Default)]
struct SentParts {
    etags: std::collections::BTreeMap<u16, String>,
    /// The first failure: no part is sent after it.
    failure: Option<(io::ErrorKind, String)>,
}

impl PartSenders {
    fn start(bucket: &Arc<S3Bucket>, key: &str, id: &str) -> PartSenders {
        let (hand_over, parts) = std::sync::mpsc::sync_channel::<(u16, Vec<u8>)>(0);
        let parts = Arc::new(std::sync::Mutex::new(parts));
        let sent = Arc::new(std::sync::Mutex::new(SentParts::default()));
        let threads = (0..SENDERS)
            .map(|_| {
                let (bucket, key, id) = (Arc::clone(bucket), key.to_string(), id.to_string());
                let (parts, sent) = (Arc::clone(&parts), Arc::clone(&sent));
                std::thread::spawn(move || loop {
                    let next = parts
                        .lock()
                        .map_err(drop)
                        .and_then(|p| p.recv().map_err(drop));
                    let Ok((number, bytes)) = next else { return };
                    if sent.lock().is_ok_and(|s| s.failure.is_some()) {
                        continue;
                    }
                    let result = bucket.upload_part(&key, &id, number, &bytes);
                    drop(bytes);
                    if let Ok(mut sent) = sent.lock() {
                        match result {
                            Ok(etag) => drop(sent.etags.insert(number, etag)),
                            Err(err) => {
                                let message = format!("part {number}: {err}");
                                sent.failure.get_or_insert((err.kind(), message));
                            }
                        }
                    }
                })
            })
            .collect();
        PartSenders {
            hand_over,
            threads,
            sent,
        }
    }

    /// The first failure of a sender, as an error.
    fn failure(&self) -> io::Result<()> {
        let sent = self
            .sent
            .lock()
            .map_err(|_| io::Error::other("a part sender failed"))?;
        match &sent.failure {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None => Ok(()),
        }
    }

    fn send(&self, number: u16, part: Vec<u8>) -> io::Result<()> {
        self.failure()?;
        self.hand_over
            .send((number, part))
            .map_err(|_| io::Error::other("the part senders stopped"))
    }

    /// Waits for every part handed over; their ETags in order, or the first failure.
    fn finish(self, parts: usize) -> io::Result<Vec<String>> {
        drop(self.hand_over);
        for thread in self.threads {
            thread
                .join()
                .map_err(|_| io::Error::other("a part sender panicked"))?;
        }
        let mut sent = self
            .sent
            .lock()
            .map_err(|_| io::Error::other("a part sender failed"))?;
        if let Some((kind, message)) = sent.failure.take() {
            return Err(io::Error::new(kind, message));
        }
        let etags: Vec<String> = std::mem::take(&mut sent.etags).into_values().collect();
        if etags.len() != parts {
            return Err(io::Error::other(format!(
                "{} of {parts} parts were sent",
                etags.len()
            )));
        }
        Ok(etags)
    }
}

impl S3Upload {
    fn new(bucket: &Arc<S3Bucket>, name: &str, key: String, id: String) -> S3Upload {
        S3Upload {
            senders: Some(PartSenders::start(bucket, &key, &id)),
            bucket: Arc::clone(bucket),
            name: name.to_string(),
            key,
            id,
            part: Vec::with_capacity(PART),
            handed: 0,
            size: 0,
            etags: None,
            completed: false,
        }
    }

    fn send_part(&mut self) -> io::Result<()> {
        let number = u16::try_from(self.handed + 1)
            .ok()
            .filter(|&n| usize::from(n) <= MAX_PARTS)
            .ok_or_else(|| io::Error::other(format!("more than {MAX_PARTS} parts")))?;
        let senders = self
            .senders
            .as_ref()
            .ok_or_else(|| io::Error::other("the upload was finished"))?;
        let next = Vec::with_capacity(part_size(self.handed + 2));
        let part = std::mem::replace(&mut self.part, next);
        self.size += part.len() as u64;
        senders.send(number, part)?;
        self.handed += 1;
        Ok(())
    }

    /// The size the part being filled is sent at.
    fn part_size(&self) -> usize {
        part_size(self.handed + 1)
    }

    /// Stops the senders, after the parts they hold; the ETags of all parts, in order.
    fn finish_sending(&mut self) -> io::Result<Vec<String>> {
        match self.senders.take() {
            Some(senders) => senders.finish(self.handed),
            None => Err(io::Error::other("the upload was finished")),
        }
    }
}

impl Write for S3Upload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.part_size() - self.part.len();
        let taken = buf.len().min(room);
        self.part.extend_from_slice(&buf[..taken]);
        if self.part.len() == self.part_size() {
            self.send_part()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Upload for S3Upload {
    fn name(&self) -> &str {
        &self.name
    }

    fn id(&self) -> &str {
        &self.id
    }

    /// Sends the last part and waits until every part is there.
    fn send_rest(&mut self) -> io::Result<()> {
        if self.etags.is_some() {
            return Ok(());
        }
        // An empty object is one empty part.
        if !self.part.is_empty() || self.handed == 0 {
            self.send_part()?;
        }
        self.etags = Some(self.finish_sending()?);
        Ok(())
    }

    fn complete(mut self: Box<Self>) -> io::Result<u64> {
        self.send_rest()?;
        let etags = self.etags.take().unwrap_or_default();
        self.bucket.complete_upload(&self.key, &self.id, &etags)?;
        self.completed = true;
        Ok(self.size)
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if let Some(senders) = self.senders.take() {
            // Their parts are lost anyway: only waited for, so that the abort comes last.
            let _ = senders.finish(self.handed);
        }
        if !self.completed {
            // Best effort: the image's record still names the upload for the next run.
            if let Err(err) = self.bucket.abort_upload(&self.key, &self.id) {
                tracing::debug!("cannot abort the upload {} of {}: {err}", self.id, self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_name_a_bucket_and_a_clean_prefix() {
        assert_eq!(parse_destination("s3://backups").unwrap(), ("backups", ""));
        assert_eq!(
            parse_destination("s3://backups/ceph/site-a/").unwrap(),
            ("backups", "ceph/site-a")
        );
        for bad in [
            "s3://",
            "s3://ab",
            "s3://Backups",
            "s3://-backups",
            "s3://back_ups",
            "s3://backups//x",
            "s3://backups/a/../b",
            "s3://backups/a/\u{7}",
        ] {
            assert!(parse_destination(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_are_http_or_https_urls_of_a_host() {
        assert!(parse_endpoint("http://127.0.0.1:7480").is_ok());
        assert!(parse_endpoint("https://s3.example.com").is_ok());
        for bad in [
            "127.0.0.1:7480",
            "ftp://host",
            "https://k:s@host",
            "https://host/?x=1",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_credentials_file_is_read_only_when_private_and_complete() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let write = |text: &str, mode: u32| {
            #[allow(clippy::disallowed_methods)] // a test's own file
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(
            "[other]\naws_access_key_id = no\n[default]\naws_access_key_id = K\n\
             aws_secret_access_key = S \n",
            0o600,
        );
        let credentials = read_credentials_file(&path).unwrap();
        assert_eq!((credentials.key(), credentials.secret()), ("K", "S"));
        write("[default]\naws_access_key_id = K\n", 0o600);
        assert!(read_credentials_file(&path)
            .unwrap_err()
            .contains("has no aws_access_key_id and aws_secret_access_key"));
        write(
            "[default]\naws_access_key_id = K\naws_secret_access_key = S\n",
            0o640,
        );
        assert!(read_credentials_file(&path)
            .unwrap_err()
            .contains("cannot read"));
    }

    #[test]
    fn parts_grow_so_that_ten_thousand_carry_hundreds_of_gigabytes() {
        assert_eq!(part_size(1), PART);
        assert_eq!(part_size(1000), PART);
        assert_eq!(part_size(1001), 2 * PART);
        assert_eq!(part_size(3001), MAX_PART);
        assert_eq!(part_size(MAX_PARTS), MAX_PART);
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size(n) as u64).sum();
        assert!(total > 480 << 30, "{total}");
    }

    /// An S3 service on a loopback port that answers each request with `answer(method, path
    /// and query)`, and records what it was asked.
    struct FakeService {
        endpoint: String,
        asked: Arc<std::sync::Mutex<Vec<String>>>,
    }

    type Answer = (u16, String);

    impl FakeService {
        fn start(answer: impl Fn(&str, usize) -> Answer + Send + Sync + 'static) -> FakeService {
            use std::io::{BufRead, BufReader};
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let endpoint = format!("http://{}", listener.local_addr().unwrap());
            let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
            let (log, answer) = (Arc::clone(&asked), Arc::new(answer));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let (log, answer) = (Arc::clone(&log), Arc::clone(&answer));
                    std::thread::spawn(move || {
                        let mut stream = stream.unwrap();
                        let mut reader = BufReader::new(stream.try_clone().unwrap());
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let mut length = 0;
                            loop {
                                let mut header = String::new();
                                reader.read_line(&mut header).unwrap();
                                if header.trim().is_empty() {
                                    break;
                                }
                                let lower = header.to_ascii_lowercase();
                                if let Some(v) = lower.strip_prefix("content-length:") {
                                    length = v.trim().parse().unwrap();
                                }
                            }
                            let mut body = vec![0; length];
                            reader.read_exact(&mut body).unwrap();
                            let mut parts = line.split_whitespace();
                            let method = parts.next().unwrap().to_string();
                            let target = parts.next().unwrap();
                            // The signature's parameters aside: the path and what is asked.
                            let (path, query) = target.split_once('?').unwrap_or((target, ""));
                            let query: Vec<&str> = query
                                .split('&')
                                .filter(|p| !p.starts_with("X-Amz-"))
                                .collect();
                            let asked = format!("{method} {path}?{}", query.join("&"));
                            let (status, text) = {
                                let mut log = log.lock().unwrap();
                                log.push(asked.clone());
                                let tries = log.iter().filter(|a| **a == asked).count();
                                answer(&asked, tries)
                            };
                            let reply = format!(
                                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\netag: \"e\"\r\n\r\n{text}",
                                text.len()
                            );
                            stream.write_all(reply.as_bytes()).unwrap();
                        }
                    });
                }
            });
            FakeService { endpoint, asked }
        }

        fn folder(&self) -> S3Folder {
            let credentials = Credentials::new("k", "s");
            let url = parse_endpoint(&self.endpoint).unwrap();
            let bucket = S3Bucket::new(url, "bucket", "us-east-1", credentials).unwrap();
            S3Folder::new(Arc::new(bucket), "rbd/vm")
        }

        fn asked(&self, what: &str) -> usize {
            let asked = self.asked.lock().unwrap();
            asked.iter().filter(|a| a.starts_with(what)).count()
        }
    }

    /// The service's answers to an upload of `rbd/vm/f`: `part` answers its part.
    fn upload_answers(part: fn(usize) -> u16) -> impl Fn(&str, usize) -> Answer {
        move |asked, tries| match asked {
            a if a.starts_with("POST /bucket/rbd/vm/f?uploads") => (
                200,
                "<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <Bucket>bucket</Bucket><Key>rbd/vm/f</Key>\
                 <UploadId>id-1</UploadId></InitiateMultipartUploadResult>"
                    .into(),
            ),
            a if a.starts_with("PUT /bucket/rbd/vm/f?partNumber=1") => (part(tries), String::new()),
            a if a.starts_with("HEAD /bucket/rbd/vm/f?") => (404, String::new()),
            a if a.starts_with("GET /bucket/?") => (
                200,
                "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <Name>bucket</Name><KeyCount>0</KeyCount></ListBucketResult>"
                    .into(),
            ),
            a if a.starts_with("POST /bucket/rbd/vm/f?uploadId") => {
                (200, "<CompleteMultipartUploadResult/>".into())
            }
            _ => (200, String::new()),
        }
    }

    /// Stages, writes and publishes `rbd/vm/f` through `folder`.
    fn upload(folder: &S3Folder) -> Result<Published> {
        let Some(Staged::Stream(mut stream)) = folder.stage("f")? else {
            panic!("an S3 folder stages streams");
        };
        stream.write_all(b"twenty bytes of data")?;
        folder.publish(Staged::Stream(stream), "0123", false)
    }

    #[test]
    fn a_part_the_service_fails_once_is_sent_again_and_the_file_published() {
        let service = FakeService::start(upload_answers(|tries| match tries {
            1 => 503,
            _ => 200,
        }));
        let published = upload(&service.folder()).unwrap();
        assert_eq!(published.size, 20);
        assert_eq!(service.asked("PUT /bucket/rbd/vm/f?partNumber=1"), 2);
        // The checksum object before the upload was completed.
        let asked = service.asked.lock().unwrap().clone();
        let checksum = asked
            .iter()
            .position(|a| a.starts_with("PUT /bucket/rbd/vm/f.sha256"));
        let complete = asked
            .iter()
            .position(|a| a.starts_with("POST /bucket/rbd/vm/f?uploadId"));
        assert!(checksum.unwrap() < complete.unwrap(), "{asked:?}");
    }

    #[test]
    fn a_refused_part_is_not_sent_again_and_its_upload_is_aborted() {
        let service = FakeService::start(upload_answers(|_| 403));
        let err = upload(&service.folder()).unwrap_err();
        assert!(format!("{err:#}").contains("403"), "{err:#}");
        assert_eq!(service.asked("PUT /bucket/rbd/vm/f?partNumber=1"), 1);
        assert_eq!(service.asked("DELETE /bucket/rbd/vm/f?uploadId"), 1);
        // Nothing was published: not even the checksum went.
        assert_eq!(service.asked("PUT /bucket/rbd/vm/f.sha256"), 0);
    }

    #[test]
    fn a_service_failing_every_try_gives_up_after_a_bounded_number() {
        let service = FakeService::start(upload_answers(|_| 500));
        assert!(upload(&service.folder()).is_err());
        assert_eq!(
            service.asked("PUT /bucket/rbd/vm/f?partNumber=1"),
            ATTEMPTS as usize
        );
    }

    #[test]
    fn only_failures_another_try_may_mend_are_retried() {
        let answer = |status| io::Error::other(S3Refused { status, code: None });
        assert!(transient(&answer(503)));
        assert!(transient(&answer(429)));
        assert!(!transient(&answer(403)));
        assert!(!transient(&io::Error::new(io::ErrorKind::NotFound, "x")));
        assert!(transient(&io::Error::from(io::ErrorKind::ConnectionReset)));
        let mut tries = 0;
        let result: io::Result<()> = retrying(|| {
            tries += 1;
            Err(answer(403))
        });
        assert!(result.is_err());
        assert_eq!(tries, 1);
    }
}
