//! A synchronous client of one bucket: each S3 request signed by `rusty-s3` and carried by
//! `ureq`, its answer read within a bound, and sent again after a pause when another try may mend
//! its failure.

use std::io::{self, Read};
use std::ops::Range;
use std::time::Duration;

use anyhow::{Context, Result};
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use ureq::http::Response;
use ureq::Body;

use crate::folder::door::Opened;

/// How long a signed request stays valid: long enough for a part on a slow link.
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);

/// The most a listing page or an error answer may hold: a page of 1000 keys is far less.
const ANSWER_LIMIT: u64 = 8 * 1024 * 1024;

/// How many times a request is sent before its failure counts, and the first pause between
/// tries (doubled each time).
pub(super) const ATTEMPTS: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_millis(500);

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
    pub(super) fn new(
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

    /// The access key the requests are signed with (never the secret).
    pub fn access_key(&self) -> &str {
        self.credentials.key()
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

#[cfg(test)]
mod tests {
    use super::*;

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
