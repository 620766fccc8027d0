//! A folder of a destination in an S3 bucket (issue 18; a spike, compiled for tests only until
//! the destination is configurable): [`S3Folder`] is a [`Door`] whose files are the objects under
//! one prefix (`rbd/vm/`), through [`S3Bucket`], a synchronous client of one bucket.
//!
//! Requests are signed by `rusty-s3` (AWS Signature Version 4, as presigned URLs: the signature
//! travels in the query string, the payload is not signed) and carried by `ureq`, both blocking:
//! no async runtime, and a GET is a plain [`Read`] of the response as it arrives. Requests are
//! path-style (`ENDPOINT/BUCKET/KEY`), so any S3 service answers them (radosgw with no DNS
//! names for its buckets); plain HTTP only when the endpoint says `http://`.
//!
//! Memory stays bounded whatever the object: an upload holds one part ([`PART`]) at a time, a
//! read holds what `ureq` buffers, a listing or an error answer is read within a limit.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use ureq::http::Response;
use ureq::Body;

use super::{Door, LocalFolder, Opened, PendingFile, Published, Sharing};
use crate::folder::access::FileAccess;
use crate::folder::chain::FolderEntry;
use crate::folder::format::write::checksum_line;
use crate::folder::naming::checksum_name;
use crate::folder::untrusted::EntryKind;

/// How long a signed request stays valid: long enough for a part on a slow link.
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);

/// The part size of multipart uploads: what an upload holds in memory.
pub const PART: usize = 8 * 1024 * 1024;

/// The most a listing page or an error answer may hold: a page of 1000 keys is far less.
const ANSWER_LIMIT: u64 = 8 * 1024 * 1024;

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
    /// The bucket `name` at `endpoint` (`http://` or `https://`), in `region`.
    pub fn new(
        endpoint: &str,
        name: &str,
        region: &str,
        credentials: Credentials,
    ) -> Result<S3Bucket> {
        let url = endpoint
            .parse()
            .with_context(|| format!("{endpoint} is not a URL"))?;
        let bucket = Bucket::new(url, UrlStyle::Path, name.to_string(), region.to_string())
            .with_context(|| format!("no bucket {name} can be reached at {endpoint}"))?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_global(Some(Duration::from_secs(30 * 60)))
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
        let url = self
            .bucket
            .head_bucket(Some(&self.credentials))
            .sign(SIGNED_FOR);
        match checked(self.agent.head(url.as_str()).call()) {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// What is directly under `prefix` (which ends with `/`), every page of the listing.
    pub fn list(&self, prefix: &str) -> io::Result<Listing> {
        let mut objects = Vec::new();
        let mut folders = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(prefix);
            action.with_delimiter("/");
            if let Some(token) = &token {
                action.with_continuation_token(token.clone());
            }
            let url = action.sign(SIGNED_FOR);
            let body = read_answer(checked(self.agent.get(url.as_str()).call())?)?;
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

    /// The size of the object `key`; `NotFound` when there is none.
    pub fn size(&self, key: &str) -> io::Result<u64> {
        let url = self
            .bucket
            .head_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let response = checked(self.agent.head(url.as_str()).call())?;
        content_length(&response)
    }

    /// The object `key` as a stream, from its first byte, or only `range` of it.
    pub fn get(&self, key: &str, range: Option<Range<u64>>) -> io::Result<Opened> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let mut request = self.agent.get(url.as_str());
        if let Some(range) = &range {
            if range.is_empty() {
                return Ok(Opened {
                    reader: Box::new(io::empty()),
                    len: 0,
                });
            }
            request = request.header("range", format!("bytes={}-{}", range.start, range.end - 1));
        }
        let response = checked(request.call())?;
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
        let url = self
            .bucket
            .put_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        checked(self.agent.put(url.as_str()).send(bytes)).map(drop)
    }

    /// Removes the object `key` (S3 answers the same whether it was there or not).
    pub fn delete(&self, key: &str) -> io::Result<()> {
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        checked(self.agent.delete(url.as_str()).call()).map(drop)
    }

    /// Uploads everything `from` gives as the object `key`, through a multipart upload, one part
    /// in memory at a time: the object appears under `key` only once complete. The upload is
    /// aborted when anything fails. `started` is told the upload's id first (a caller records it
    /// so that a later run can abort what a killed one left). Returns the object's size.
    pub fn upload(
        &self,
        key: &str,
        from: &mut dyn Read,
        started: &mut dyn FnMut(&str),
    ) -> io::Result<u64> {
        let id = self.create_upload(key)?;
        started(&id);
        let sent = self.send_parts(key, &id, from);
        if sent.is_err() {
            // Best effort: the caller's record still names the upload for a later run.
            let _ = self.abort_upload(key, &id);
        }
        sent
    }

    fn send_parts(&self, key: &str, id: &str, from: &mut dyn Read) -> io::Result<u64> {
        let mut buffer = vec![0; PART];
        let mut etags = Vec::new();
        let mut size = 0;
        loop {
            let n = read_full(from, &mut buffer)?;
            // An empty object is one empty part.
            if n == 0 && !etags.is_empty() {
                break;
            }
            etags.push(self.upload_part(key, id, etags.len() + 1, &buffer[..n])?);
            size += n as u64;
            if n < PART {
                break;
            }
        }
        let complete = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            id,
            etags.iter().map(String::as_str),
        );
        let url = complete.sign(SIGNED_FOR);
        let response = checked(self.agent.post(url.as_str()).send(complete.body()))?;
        // S3 may answer 200 with an error inside when completing fails late.
        let answer = read_answer(response)?;
        if answer.contains("<Error>") {
            return Err(io::Error::other(refused(500, &answer)));
        }
        Ok(size)
    }

    /// Starts a multipart upload of `key`; its id.
    pub fn create_upload(&self, key: &str) -> io::Result<String> {
        let url = self
            .bucket
            .create_multipart_upload(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let answer = read_answer(checked(self.agent.post(url.as_str()).send_empty())?)?;
        let created = CreateMultipartUpload::parse_response(&answer).map_err(io::Error::other)?;
        Ok(created.upload_id().to_string())
    }

    /// Uploads part `number` (from 1) of the upload `id`; its ETag.
    pub fn upload_part(
        &self,
        key: &str,
        id: &str,
        number: usize,
        bytes: &[u8],
    ) -> io::Result<String> {
        let number = u16::try_from(number)
            .ok()
            .filter(|n| *n <= 10_000)
            .ok_or_else(|| io::Error::other("more than 10000 parts"))?;
        let url = self
            .bucket
            .upload_part(Some(&self.credentials), key, number, id)
            .sign(SIGNED_FOR);
        let response = checked(self.agent.put(url.as_str()).send(bytes))?;
        response
            .headers()
            .get("etag")
            .and_then(|etag| etag.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| io::Error::other("the S3 service sent no ETag for a part"))
    }

    pub fn abort_upload(&self, key: &str, id: &str) -> io::Result<()> {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.credentials), key, id)
            .sign(SIGNED_FOR);
        checked(self.agent.delete(url.as_str()).call()).map(drop)
    }

    /// The unfinished multipart uploads of keys under `prefix`, as (key, id); the first 1000.
    /// rusty-s3 has no action for ListMultipartUploads: it is signed with its public signer.
    pub fn uploads(&self, prefix: &str) -> io::Result<Vec<(String, String)>> {
        let query = [("prefix", prefix), ("uploads", "")];
        let url = rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            rusty_s3::Method::Get,
            self.bucket.base_url().clone(),
            self.credentials.key(),
            self.credentials.secret(),
            None,
            self.bucket.region(),
            SIGNED_FOR.as_secs(),
            query.iter().copied(),
            std::iter::empty(),
        );
        let answer = read_answer(checked(self.agent.get(url.as_str()).call())?)?;
        Ok(answer
            .split("<Upload>")
            .skip(1)
            .filter_map(|upload| Some((element(upload, "Key")?, element(upload, "UploadId")?)))
            .collect())
    }
}

/// The answer when its status says success; otherwise the error it carries (`NotFound` for a
/// 404, with the S3 error code inside).
fn checked(answer: Result<Response<Body>, ureq::Error>) -> io::Result<Response<Body>> {
    let response = answer.map_err(|err| match err {
        ureq::Error::Io(err) => err,
        other => io::Error::other(other),
    })?;
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
        .map_err(|err| match err {
            ureq::Error::Io(err) => err,
            other => io::Error::other(other),
        })
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

/// Fills `buffer` from `from` as far as it goes; how many bytes it got.
fn read_full(from: &mut dyn Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buffer.len() {
        match from.read(&mut buffer[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(n)
}

/// One folder of a destination in a bucket: the objects under `prefix`.
pub struct S3Folder {
    bucket: std::sync::Arc<S3Bucket>,
    /// Empty (the bucket's top) or ending with `/`.
    prefix: String,
}

impl S3Folder {
    pub fn new(bucket: std::sync::Arc<S3Bucket>, prefix: &str) -> S3Folder {
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
}

impl Door for S3Folder {
    fn location(&self) -> PathBuf {
        PathBuf::from(format!(
            "s3://{}/{}",
            self.bucket.name(),
            self.prefix.trim_end_matches('/')
        ))
    }

    fn access(&self) -> FileAccess {
        FileAccess::PRIVATE
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

    fn kind_of(&self, name: &str) -> io::Result<EntryKind> {
        self.bucket.size(&self.key(name)).map(|_| EntryKind::File)
    }

    fn open(&self, name: &str) -> io::Result<Opened> {
        self.bucket.get(&self.key(name), None)
    }

    /// Every object of the bucket was written with the credentials this run holds: a bucket
    /// that others may write is not yet told apart (next: compare the object's owner with ours).
    fn read_own(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        self.read_small(name, limit)
    }

    fn create(&self) -> Result<()> {
        if !self
            .bucket
            .exists()
            .with_context(|| format!("cannot reach bucket {}", self.bucket.name()))?
        {
            bail!("bucket {} does not exist", self.bucket.name());
        }
        Ok(())
    }

    /// A local spool file, uploaded when published (the next step streams instead).
    fn stage(&self, name: &str) -> Result<Option<PendingFile>> {
        PendingFile::create(&std::env::temp_dir(), name).map(Some)
    }

    fn scratch(&self) -> Result<File> {
        tempfile::tempfile().context("cannot create a scratch file")
    }

    fn publish(&self, mut file: PendingFile, sha256: &str, replace: bool) -> Result<Published> {
        let name = file.name().to_string();
        let location = self.location_of(&name);
        if !replace {
            match self.kind_of(&name) {
                Ok(_) => bail!("{}: already there", location.display()),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("cannot publish {}", location.display()))
                }
            }
        }
        let line = checksum_line(sha256, &name);
        let checksum = checksum_name(&name);
        self.put(&checksum, line.as_bytes(), Sharing::Folder)?;
        file.file().rewind()?;
        let uploaded = self
            .bucket
            .upload(&self.key(&name), file.file(), &mut |_| {});
        match uploaded {
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

    fn in_place(&self) -> Option<&LocalFolder> {
        None
    }
}

#[cfg(test)]
mod tests;
