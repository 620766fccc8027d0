//! Reading backup files back: the raw stream inside a file, as it is stored, and its checksum.
//!
//! A stored file is either the raw stream itself or a gzip-compressed tar archive holding it as
//! the one member. The member's name does not matter: ours is the bare file name, the original
//! tool's is the absolute path without its leading `/` (and GNU tar may have stored it as a sparse
//! member). Everything streams through bounded buffers; nothing is extracted to disk.
//!
//! While the raw stream is read, the file's own bytes are hashed, so a checksum is checked in the
//! same pass that restores or verifies the file, and the archive's shape is checked too: exactly
//! one regular member whose length matches its header, nothing after the end of the archive.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use flate2::bufread::GzDecoder;

use crate::naming::CHECKSUM_SUFFIX;
use crate::store::Hashing;

const BUFFER: usize = 1 << 20;
/// A `sha256sum` line is about 64 + 2 + name; anything much longer is not a checksum file.
const MAX_CHECKSUM_FILE: u64 = 64 * 1024;

/// What reading a whole stored file showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Bytes of the file on disk.
    pub file_bytes: u64,
    /// SHA-256 of the file's bytes, lowercase hex.
    pub sha256: String,
    /// Bytes of the raw stream (the archive member, when compressed).
    pub raw_bytes: u64,
    /// The archive member's name, when compressed.
    pub member: Option<String>,
}

/// Counts the bytes that pass.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Remembers the first error of a stream, because whoever consumes it (an `rbd` child fed
/// through a pipe) may only report that its input ended early.
pub struct FirstError<R> {
    inner: R,
    error: Option<String>,
}

impl<R: Read> FirstError<R> {
    pub fn new(inner: R) -> FirstError<R> {
        FirstError { inner, error: None }
    }

    /// The first error the stream returned, as text.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

impl<R: Read> Read for FirstError<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.inner.read(buf);
        if let Err(err) = &result {
            if err.kind() != io::ErrorKind::Interrupted && self.error.is_none() {
                self.error = Some(err.to_string());
            }
        }
        result
    }
}

/// Opens the stored file at `path` and hands its raw stream to `consume`, which should read it
/// to the end. Afterwards the rest of the file is read too, so the digest covers every byte, and
/// the archive's shape is checked. Errors do not name the file; callers add it.
pub fn read_raw<T>(
    path: &Path,
    compressed: bool,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<(T, Facts)> {
    let file = File::open(path).context("cannot open")?;
    let counted = Counting {
        inner: Hashing::new(file),
        count: 0,
    };
    if compressed {
        read_archive(counted, consume)
    } else {
        read_plain(counted, consume)
    }
}

fn read_plain<T>(
    counted: Counting<Hashing<File>>,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<(T, Facts)> {
    let mut buffered = BufReader::with_capacity(BUFFER, counted);
    let value = consume(&mut buffered)?;
    let unread = io::copy(&mut buffered, &mut io::sink())?;
    if unread > 0 {
        bail!("{unread} bytes at the end were not used");
    }
    let counted = buffered.into_inner();
    Ok((
        value,
        Facts {
            file_bytes: counted.count,
            raw_bytes: counted.count,
            sha256: counted.inner.hex_digest(),
            member: None,
        },
    ))
}

fn read_archive<T>(
    counted: Counting<Hashing<File>>,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<(T, Facts)> {
    let gz = GzDecoder::new(BufReader::with_capacity(BUFFER, counted));
    let mut archive = tar::Archive::new(gz);
    let (value, member, raw_bytes) = {
        let mut entries = archive.entries().context("not a tar archive")?;
        let mut entry = match entries.next() {
            Some(entry) => entry.context("cannot read the archive's first member")?,
            None => bail!("the archive is empty"),
        };
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_gnu_sparse()) {
            bail!("the archive's member is not a regular file ({kind:?})");
        }
        let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let expected = entry.size();
        let mut counted = Counting {
            inner: &mut entry,
            count: 0,
        };
        let value = consume(&mut counted)?;
        io::copy(&mut counted, &mut io::sink())?;
        if counted.count != expected {
            bail!(
                "the archive member {member} has {} bytes where its header says {expected}",
                counted.count
            );
        }
        if let Some(next) = entries.next() {
            let next = next.context("cannot read past the archive's first member")?;
            bail!(
                "the archive holds more than one member ({member}, {}, …)",
                String::from_utf8_lossy(&next.path_bytes())
            );
        }
        (value, member, counted.count)
    };
    // Tar stops at the first end-of-archive block; reading the padding after it also makes gzip
    // check its CRC and length, which cover the archive even when no checksum file exists.
    let mut gz = archive.into_inner();
    let mut padding = vec![0u8; 64 * 1024];
    loop {
        let n = gz.read(&mut padding).context("cannot decompress")?;
        if n == 0 {
            break;
        }
        if padding[..n].iter().any(|&b| b != 0) {
            bail!("data follows the end of the tar archive");
        }
    }
    let mut buffered = gz.into_inner();
    if !buffered.fill_buf()?.is_empty() {
        bail!("data follows the end of the gzip stream");
    }
    let counted = buffered.into_inner();
    Ok((
        value,
        Facts {
            file_bytes: counted.count,
            raw_bytes,
            sha256: counted.inner.hex_digest(),
            member: Some(member),
        },
    ))
}

/// The digest recorded for `file_name` in its `.sha256` file in `dir`, or `None` when it has no
/// such file.
pub fn recorded_digest(dir: &Path, file_name: &str) -> Result<Option<String>> {
    let name = format!("{file_name}{CHECKSUM_SUFFIX}");
    let path = dir.join(&name);
    let mut text = String::new();
    match File::open(&path) {
        Ok(file) => file
            .take(MAX_CHECKSUM_FILE)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {}", path.display()))?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    parse_checksum_line(&text, file_name)
        .map(Some)
        .map_err(|problem| anyhow::anyhow!("{}: {problem}", path.display()))
}

/// Reads a `sha256sum` line for `file_name` (text or binary mode marker), returning the digest in
/// lowercase.
pub fn parse_checksum_line(text: &str, file_name: &str) -> Result<String, String> {
    let line = text.strip_suffix('\n').unwrap_or(text);
    if line.contains('\n') {
        return Err("holds more than one line; expected one `sha256sum` line".into());
    }
    let (digest, rest) = line.split_once(' ').ok_or("is not in `sha256sum` format")?;
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("does not start with a SHA-256 digest (64 hex digits)".into());
    }
    let named = rest
        .strip_prefix(' ')
        .or_else(|| rest.strip_prefix('*'))
        .ok_or("is not in `sha256sum` format")?;
    if named != file_name {
        return Err(format!(
            "is the checksum of {named:?}, not of {file_name:?}"
        ));
    }
    Ok(digest.to_ascii_lowercase())
}

/// Fails unless the file's digest is the recorded one (when one is recorded).
pub fn check_digest(recorded: Option<&str>, facts: &Facts) -> Result<()> {
    match recorded {
        Some(recorded) if recorded != facts.sha256 => bail!(
            "checksum mismatch: the file's SHA-256 is {}, its .sha256 file says {recorded}",
            facts.sha256
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sha256(data: &[u8]) -> String {
        let mut h = Hashing::new(data);
        io::copy(&mut h, &mut io::sink()).unwrap();
        h.hex_digest()
    }

    /// A gzip'd tar with the given members, each a regular file.
    fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn read_all(path: &Path, compressed: bool) -> Result<(Vec<u8>, Facts)> {
        read_raw(path, compressed, |raw| {
            let mut out = Vec::new();
            raw.read_to_end(&mut out)?;
            Ok(out)
        })
    }

    #[test]
    fn plain_files_are_read_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img@S.full");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let (got, facts) = read_all(&path, false).unwrap();
        assert_eq!(got, data);
        assert_eq!(facts.sha256, sha256(&data));
        assert_eq!((facts.file_bytes, facts.raw_bytes), (300_000, 300_000));
    }

    #[test]
    fn any_member_name_is_accepted_and_the_archive_bytes_are_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![5u8; 200_000];
        for name in [
            "img@S.full",
            "mnt/backups/rbd/img/img@BACKUPUTC20170808T143015.diff_from_BACKUPUTC20170807T143015",
        ] {
            let bytes = archive(&[(name, &data)]);
            let path = dir.path().join("x.tar.gz");
            std::fs::write(&path, &bytes).unwrap();
            let (got, facts) = read_all(&path, true).unwrap();
            assert_eq!(got, data);
            assert_eq!(facts.member.as_deref(), Some(name));
            assert_eq!(facts.sha256, sha256(&bytes));
            assert_eq!(facts.file_bytes, bytes.len() as u64);
            assert_eq!(facts.raw_bytes, 200_000);
        }
    }

    #[test]
    fn gnu_tar_sparse_members_with_nested_names_read_back_whole() {
        // What the original ran: `tar Scvfz X.tar.gz /abs/path/X`.
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("mnt/backups/rbd/img");
        std::fs::create_dir_all(&nested).unwrap();
        let name = "img@UTC20170119T092933.full";
        let raw = nested.join(name);
        let mut data = vec![0u8; 8 << 20];
        data[1 << 20..(1 << 20) + 5000].fill(0xab);
        data[(8 << 20) - 1] = 1;
        let file = File::create(&raw).unwrap();
        file.set_len(data.len() as u64).unwrap();
        use std::os::unix::fs::FileExt;
        file.write_all_at(&data[1 << 20..(1 << 20) + 5000], 1 << 20)
            .unwrap();
        file.write_all_at(&[1], (8 << 20) - 1).unwrap();
        let archive = dir.path().join("x.tar.gz");
        crate::process::CommandLine::new("tar")
            .arg("Scfz")
            .arg(&archive)
            .arg(&raw)
            .run()
            .unwrap();
        let (got, facts) = read_all(&archive, true).unwrap();
        assert!(got == data, "the sparse member reads back differently");
        let member = facts.member.unwrap();
        assert!(
            member.ends_with(&format!("/mnt/backups/rbd/img/{name}")),
            "{member}"
        );
        assert!(!member.starts_with('/'), "{member}");
    }

    #[test]
    fn damaged_archives_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let good = archive(&[("m", &data)]);
        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"junk");
        let cases: [(&str, Vec<u8>); 5] = [
            ("truncated", good[..good.len() - 30].to_vec()),
            ("flipped byte", flipped),
            ("two members", archive(&[("m", &data), ("n", b"x")])),
            ("trailing data", trailing),
            ("empty archive", archive(&[])),
        ];
        for (what, bytes) in cases {
            let path = dir.path().join("x.tar.gz");
            std::fs::write(&path, &bytes).unwrap();
            assert!(read_all(&path, true).is_err(), "{what} was accepted");
        }
    }

    #[test]
    fn checksum_lines_in_sha256sum_format() {
        let digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            parse_checksum_line(&format!("{digest}  x@S.full\n"), "x@S.full"),
            Ok(digest.to_string())
        );
        assert_eq!(
            parse_checksum_line(&format!("{}  *x", digest.to_uppercase()), "*x"),
            Ok(digest.to_string())
        );
        assert_eq!(
            parse_checksum_line(&format!("{digest} *x"), "x"),
            Ok(digest.to_string())
        );
        for (text, problem) in [
            (format!("{digest}  y\n"), "not of"),
            (format!("{}  x\n", &digest[1..]), "64 hex"),
            (format!("{digest}\n"), "format"),
            (format!("{digest}  x\n{digest}  x\n"), "more than one line"),
            (String::new(), "format"),
        ] {
            let err = parse_checksum_line(&text, "x").unwrap_err();
            assert!(err.contains(problem), "{text:?}: {err}");
        }
    }

    #[test]
    fn recorded_digests_are_read_from_the_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded_digest(dir.path(), "f").unwrap(), None);
        let digest = sha256(b"abc");
        let mut sidecar = File::create(dir.path().join("f.sha256")).unwrap();
        writeln!(sidecar, "{digest}  f").unwrap();
        assert_eq!(recorded_digest(dir.path(), "f").unwrap(), Some(digest));
        std::fs::write(dir.path().join("g.sha256"), "nonsense").unwrap();
        let err = recorded_digest(dir.path(), "g").unwrap_err().to_string();
        assert!(err.contains("g.sha256: "), "{err}");
    }
}
