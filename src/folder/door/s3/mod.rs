//! Destinations in an S3 bucket (`destination directory = s3://BUCKET/PREFIX`): [`ObjectStore`]
//! is what a section's configuration says, [`S3Folder`] a [`Door`] whose files are the objects
//! under one prefix (`PREFIX/rbd/vm/`), and [`S3Bucket`] a synchronous client of one bucket.
//!
//! Requests are signed by `rusty-s3` (AWS Signature Version 4, as presigned URLs: the signature
//! travels in the query string, the payload is not signed) and carried by `ureq`, both blocking:
//! no async runtime, and a GET is a plain `Read` of the response as it arrives. Requests are
//! path-style (`ENDPOINT/BUCKET/KEY`), so any S3 service answers them (radosgw with no DNS names
//! for its buckets); plain HTTP only when the endpoint says `http://`. A request that failed on
//! the way, or that the service answered with a 5xx or 429, is tried again after a pause, a
//! bounded number of times.
//!
//! A new backup file is a multipart upload ([`S3Upload`]): its bytes leave in parts of
//! [`upload::PART`] bytes as they are written (a few parts are all the memory an upload holds),
//! and the object appears under its name only when the upload is completed, after its checksum
//! object. An upload dropped unfinished
//! is aborted; one a killed run left is aborted by the next run, which finds its id in the image's
//! record ([`Door::abandon`]).
//!
//! [`store`] reads a section's configuration, [`client`] talks to the service, [`upload`] streams
//! one file into it.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::{Door, LocalFolder, Opened, Published, Sharing, Staged};
use crate::folder::access::FileAccess;
use crate::folder::chain::FolderEntry;
use crate::folder::format::write::checksum_line;
use crate::folder::naming::checksum_name;
use crate::folder::untrusted::EntryKind;

mod client;
mod store;
mod upload;

pub use client::S3Bucket;
pub use store::{CredentialSource, ObjectStore, StoreKey};
use upload::S3Upload;

/// How a destination names an object store.
pub const S3_SCHEME: &str = "s3://";

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

#[cfg(test)]
mod tests;
