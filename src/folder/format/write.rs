//! The bytes of a backup file as they are written: checksums on the way, raw images with their
//! holes, archives. Where the bytes go, and how a file takes its name, is the door's
//! ([`crate::folder::door`]).
//!
//! Writing streams: an export is copied from `rbd` to disk in bounded chunks, whatever the image
//! size. Raw full images keep their holes (all-zero blocks are skipped, as `rbd export` does when it
//! writes a file itself), and compressed files are a tar archive with one member, compressed on
//! the fly ([`crate::folder::format::archive`]).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};

use anyhow::Result;
use sha2::{Digest, Sha256};

pub use crate::folder::format::archive::{
    write_archive, Compressor, DataOfExtents, Member, SparseMap, SparseMapBuilder,
};
use crate::folder::format::archive::{write_archive_into, Owner};
use crate::folder::format::encrypt::Recipients;
use crate::folder::format::sparse::SparseWriter;

const COPY_CHUNK: usize = 1 << 20;

/// Passes a stream through while computing its SHA-256.
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Hashing<T> {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The lowercase hex digest of everything that passed.
    pub fn hex_digest(self) -> String {
        self.into_parts().1
    }

    /// What it passed the stream to, and the lowercase hex digest of everything that passed.
    pub fn into_parts(self) -> (T, String) {
        let digest = self
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (self.inner, digest)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A line of `sha256sum` output: `sha256sum -c` run in the file's folder checks it.
pub fn checksum_line(hex_digest: &str, file_name: &str) -> String {
    format!("{hex_digest}  {file_name}\n")
}

/// Writes `stream` to `file` as a raw file with holes; returns the stream length and the
/// SHA-256 of the file's bytes.
pub fn write_raw(stream: &mut impl Read, file: &mut File) -> io::Result<(u64, String)> {
    let mut sparse = SparseWriter::new(file)?;
    let mut hashing = Hashing::new(stream);
    // Reads of up to COPY_CHUNK (std's own buffer is 8 KiB): the sparse writer and the pipe
    // from `rbd` both do better with large writes.
    io::copy(
        &mut BufReader::with_capacity(COPY_CHUNK, &mut hashing),
        &mut sparse,
    )?;
    Ok((sparse.finish()?, hashing.hex_digest()))
}

/// Writes `stream` to `file` as an age file for `recipients` (no holes: every byte is
/// encrypted); returns the stream's length and the SHA-256 of the file's (encrypted) bytes.
pub fn write_encrypted(
    stream: &mut impl Read,
    recipients: &Recipients,
    file: &File,
) -> io::Result<(u64, String)> {
    let (len, digest, _) = write_stream(
        stream,
        Some(recipients),
        BufWriter::with_capacity(COPY_CHUNK, file),
    )?;
    Ok((len, digest))
}

/// Writes `stream` into `sink` front to back (an upload: no holes, every byte is sent), as an
/// age file when `recipients` are given; returns the stream's length, the SHA-256 of what was
/// written, and the sink, flushed.
pub fn write_stream<W: Write>(
    stream: &mut impl Read,
    recipients: Option<&Recipients>,
    sink: W,
) -> io::Result<(u64, String, W)> {
    let mut input = BufReader::with_capacity(COPY_CHUNK, stream);
    let mut hashing = match recipients {
        Some(recipients) => {
            let mut sealed = recipients.encrypt(Hashing::new(sink))?;
            let len = io::copy(&mut input, &mut sealed)?;
            return finished(len, sealed.finish()?);
        }
        None => Hashing::new(sink),
    };
    let len = io::copy(&mut input, &mut hashing)?;
    finished(len, hashing)
}

fn finished<W: Write>(len: u64, mut hashing: Hashing<W>) -> io::Result<(u64, String, W)> {
    hashing.flush()?;
    let (sink, digest) = hashing.into_parts();
    Ok((len, digest, sink))
}

/// Writes an archive of `data` as `member`, owned by `owner`, into `sink` front to back,
/// encrypted for `recipients` when given; returns the SHA-256 of what was written and the sink,
/// flushed.
pub fn write_archive_stream<W: Write + Send + 'static>(
    data: &mut dyn Read,
    member: &Member,
    compressor: &Compressor,
    recipients: Option<&Recipients>,
    (sink, owner): (W, Owner),
) -> io::Result<(String, W)> {
    let hashing = match recipients {
        Some(recipients) => {
            let sealed = recipients.encrypt(Hashing::new(sink))?;
            write_archive_into(data, member, compressor, sealed, owner)?.finish()?
        }
        None => write_archive_into(data, member, compressor, Hashing::new(sink), owner)?,
    };
    let (_, digest, sink) = finished(0, hashing)?;
    Ok((digest, sink))
}

/// [`write_archive`], the archive encrypted for `recipients` as it is written; returns the
/// SHA-256 of the file's (encrypted) bytes.
pub fn write_encrypted_archive(
    data: &mut dyn Read,
    member: &Member,
    compressor: &Compressor,
    recipients: &Recipients,
    file: &mut File,
) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata()?;
    let owner = Owner {
        uid: meta.uid(),
        gid: meta.gid(),
    };
    // The parallel compressor's writer thread needs a file of its own: a second handle on it.
    let sink = BufWriter::with_capacity(COPY_CHUNK, file.try_clone()?);
    let (digest, _) =
        write_archive_stream(data, member, compressor, Some(recipients), (sink, owner))?;
    Ok(digest)
}

/// Copies a stream of unknown length to `scratch` (the door's scratch file beside the final one,
/// [`crate::folder::door::Door::scratch`]), so it can then be archived with its size known up
/// front.
pub fn spool(stream: &mut impl Read, mut scratch: File) -> Result<(File, u64)> {
    let len = io::copy(
        &mut BufReader::with_capacity(COPY_CHUNK, stream),
        &mut scratch,
    )?;
    scratch.rewind()?;
    Ok((scratch, len))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests read back what they wrote
mod tests {
    use super::*;
    use crate::folder::door::PendingFile;
    use crate::folder::naming::Compression;
    use chrono::Utc;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn raw_files_keep_holes_and_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 3 * 1024 * 1024 + 100];
        data[5000] = 1;
        data[2 * 1024 * 1024 + 7] = 2;
        let last = data.len() - 1;
        data[last] = 3;
        let mut pending = PendingFile::create(dir.path(), "img.full").unwrap();
        // Odd-sized reads exercise the partial-block path.
        let mut src = io::Cursor::new(&data).take(u64::MAX);
        let mut chunked = ChunkedReader(&mut src, 3001);
        let (len, digest) = write_raw(&mut chunked, pending.file()).unwrap();
        assert_eq!(len, data.len() as u64);
        assert_eq!(digest, Hashing::new(&data[..]).digest_of_all());
        assert_eq!(pending.commit().unwrap(), data.len() as u64);
        let path = dir.path().join("img.full");
        assert_eq!(fs::read(&path).unwrap(), data);
        let meta = fs::metadata(&path).unwrap();
        assert!(meta.blocks() * 512 < 64 * 1024, "{} blocks", meta.blocks());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    impl<R: Read> Hashing<R> {
        fn digest_of_all(mut self) -> String {
            io::copy(&mut self, &mut io::sink()).unwrap();
            self.hex_digest()
        }
    }

    #[test]
    fn checksums_match_sha256sum() {
        // sha256 of "abc", as printed by sha256sum.
        let digest = Hashing::new(&b"abc"[..]).digest_of_all();
        assert_eq!(
            checksum_line(&digest, "x"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  x\n"
        );
    }

    struct ChunkedReader<'a, R>(&'a mut R, usize);
    impl<R: Read> Read for ChunkedReader<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1);
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    fn tar_gz_member_has_the_bare_name_and_the_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut pending = PendingFile::create(dir.path(), "a.tar.gz").unwrap();
        let member = Member {
            name: "img@BACKUPUTC20170801T000000.full",
            size: data.len() as u64,
            mtime: Utc::now(),
            sparse: None,
        };
        let gzip = Compressor::new(Compression::Gzip, None, Some(2)).unwrap();
        let digest = write_archive(&mut &data[..], &member, &gzip, pending.file()).unwrap();
        pending.commit().unwrap();
        let on_disk = fs::read(dir.path().join("a.tar.gz")).unwrap();
        assert_eq!(digest, Hashing::new(&on_disk[..]).digest_of_all());
        let gz = flate2::read::GzDecoder::new(File::open(dir.path().join("a.tar.gz")).unwrap());
        let mut archive = tar::Archive::new(gz);
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(
            entry.path().unwrap().to_str(),
            Some("img@BACKUPUTC20170801T000000.full")
        );
        let mut got = Vec::new();
        entry.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        drop(entry);
        assert!(entries.next().is_none());
    }

    #[test]
    fn tar_gz_refuses_a_stream_of_the_wrong_length() {
        let dir = tempfile::tempdir().unwrap();
        for (len, size) in [(10usize, 11u64), (12, 11)] {
            let mut pending = PendingFile::create(dir.path(), "a.tar.gz").unwrap();
            let member = Member {
                name: "m",
                size,
                mtime: Utc::now(),
                sparse: None,
            };
            let gzip = Compressor::new(Compression::Gzip, None, Some(2)).unwrap();
            let err = write_archive(&mut &vec![1u8; len][..], &member, &gzip, pending.file())
                .unwrap_err();
            assert!(err.to_string().contains("expected"), "{err}");
        }
    }
}
