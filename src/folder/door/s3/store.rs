//! A section's object-store destination as its configuration gives it: the bucket and prefix of
//! `s3://BUCKET/PREFIX`, the service's URL, and the keys, from a file only its owner may read or
//! from the `AWS_*` environment.

use std::path::Path;
use std::sync::Arc;

use rusty_s3::Credentials;

use super::{S3Bucket, S3Folder, S3_SCHEME};
use crate::folder::untrusted;

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
            .field("access key", &self.client.access_key())
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
        ) && self.client.access_key() == other.client.access_key()
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
    pub fn folder(&self, below: &[impl AsRef<str>]) -> S3Folder {
        let parts: Vec<&str> = std::iter::once(self.prefix.as_str())
            .filter(|p| !p.is_empty())
            .chain(below.iter().map(AsRef::as_ref))
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

pub(super) fn parse_endpoint(endpoint: &str) -> Result<url::Url, String> {
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
}
