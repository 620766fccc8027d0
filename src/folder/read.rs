//! Reading backup files back, on ground that others may write to: the folder as chains, the raw
//! stream inside each file, and its checksum.
//!
//! A stored file is either the raw stream itself or a tar archive holding it as the one member,
//! compressed with gzip (`.tar.gz`) or zstd (`.tar.zst`): the file's name says which. Several
//! gzip members (zstd frames) one after the other are one stream, as `pigz`, `zstd -T` and
//! concatenation write it. The archive's headers are read by [`crate::folder::format::untar`]. The
//! member's name does not matter: ours is the bare file name, the original tool's is the absolute path without its leading `/` (and GNU tar may have stored it as a sparse
//! member). Everything streams through bounded buffers; nothing is extracted to disk.
//!
//! While the raw stream is read, the file's own bytes are hashed, so a checksum is checked in the
//! same pass that restores or verifies the file, and the archive's shape is checked too: exactly
//! one regular member whose length matches its header, nothing after the end of the archive.
//!
//! Every file is read through the folder's [`Door`], so the same readers serve any kind of
//! destination. Nothing in a destination is trusted: a door opens only regular files (a local
//! folder through [`untrusted::open_regular`]), so a symlink, FIFO, device or folder named like a
//! backup file is reported as what it is and never read, and [`scan`] keeps such entries out of
//! the chains. A
//! raw stream's length is checked before any of it is read ([`Limits`]): a full backup may be no
//! larger than the image at its own snapshot, as a diff ending at that snapshot records it (a
//! full without a checksum file must be exactly that long); a proven full whose size nothing
//! records is held to [`MAX_IMAGE_BYTES`] (never to its chain's later sizes: an image shrunk
//! after its full must stay restorable), an unproven one to the largest image size the diffs of
//! its chain record; a diff's own size record is held to [`MAX_IMAGE_BYTES`], which bounds its
//! payload. The tar headers read before the member (long names, PAX records, sparse
//! maps: tar keeps them in memory) and the padding after it are bounded too. Every read stops
//! once SIGINT or SIGTERM has arrived, because a small compressed or sparse file can stand for a
//! very long stream.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use flate2::bufread::MultiGzDecoder;
use tracing::debug;

use crate::folder::chain::FolderEntry;
use crate::folder::chain::{FolderFile, Layout};
use crate::folder::door::{Door, Opened};
use crate::folder::format::diffstream::{DiffHeader, DiffReader, MAX_NAME_LEN};
use crate::folder::format::encrypt;
use crate::folder::format::untar;
pub use crate::folder::format::untar::MemberHeader;
use crate::folder::format::write::Hashing;
use crate::folder::naming::{self, BackupFile, Compression, Entry};
use crate::folder::shared::EntryKind;
use crate::folder::untrusted::{self, NotRegular};
use crate::output::human_bytes;
use crate::output::{escaped, escaped_path};
use crate::{interrupt, progress};

const BUFFER: usize = 1 << 20;
/// A `sha256sum` line is about 64 + 2 + name; anything much longer is not a checksum file.
const MAX_CHECKSUM_FILE: u64 = 64 * 1024;

/// The largest image whose backups are read when nothing else tells how large the image is:
/// 1 PiB. Ceph refuses to create an image with an object map (a default feature) of more than
/// 256 million objects, which at the default 4 MiB objects is just under 1 PiB, so no image made
/// with default settings is refused; and a hostile file declaring more (a sparse archive member
/// of 2^62 bytes fits in 200 bytes) costs at most this much reading, which a signal still stops.
pub const MAX_IMAGE_BYTES: u64 = 1 << 50;

/// The largest zstd window read: 16 MiB (`2^24`), which every level up to 19 stays within, so a
/// hostile `.tar.zst` cannot make the reader allocate more (zstd's own limit is 128 MiB).
const MAX_ZSTD_WINDOW_LOG: u32 = 24;

/// Tar header bytes allowed before the member's data: ten times the largest sparse map read
/// (about 6 MiB, [`crate::folder::format::untar`]), and a bound on what the tar reader keeps in memory
/// for long names and PAX records.
const MAX_ARCHIVE_HEADERS: u64 = 64 << 20;
/// Bytes allowed after the member's data: the end-of-archive blocks and the padding to a whole
/// record (GNU tar pads to 10 KiB records by default).
const MAX_ARCHIVE_TAIL: u64 = 4 << 20;
/// The longest header a diff may have: banner, two names at their limit and the size record.
const MAX_DIFF_HEADER: u64 = 12 + 2 * (1 + 4 + MAX_NAME_LEN as u64) + 9 + 1;

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

/// The most bytes a file's raw stream may hold, and where that bound comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub bytes: u64,
    pub why: String,
    /// The stream must hold exactly `bytes`: a full without a checksum file, whose only proof
    /// is the image size recorded at its snapshot.
    pub exact: bool,
}

impl Limit {
    /// For a full backup whose image size nothing records.
    pub fn absolute() -> Limit {
        Limit {
            bytes: MAX_IMAGE_BYTES,
            why: "the largest image read when its chain records no size".to_string(),
            exact: false,
        }
    }

    /// For a diff: its payload is bounded by its own size record, itself at most
    /// [`MAX_IMAGE_BYTES`] ([`check_diff_header`]); records are 17 bytes and cover at least one
    /// byte of the image each.
    pub fn diff() -> Limit {
        Limit {
            bytes: MAX_DIFF_HEADER + MAX_IMAGE_BYTES.saturating_mul(18),
            why: format!(
                "the longest diff stream of an image of {}",
                human_bytes(MAX_IMAGE_BYTES)
            ),
            exact: false,
        }
    }

    /// Fails when `what` (a file or archive member) declares more bytes than allowed.
    fn check(&self, what: &str, declared: u64) -> Result<()> {
        if self.exact && declared != self.bytes {
            bail!(
                "{what} {declared} bytes, but {} is {} bytes ({}), and no checksum file proves \
                 it otherwise; it is not read",
                self.why,
                self.bytes,
                human_bytes(self.bytes)
            );
        }
        if declared > self.bytes {
            bail!(
                "{what} {declared} bytes, more than {}: {} bytes ({}); it is not read",
                self.why,
                self.bytes,
                human_bytes(self.bytes)
            );
        }
        Ok(())
    }
}

/// How long each file's raw stream may be, from what the diffs in the folder record about the
/// image's size.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// For each full backup, by name: the image size at its own snapshot, as a diff ending at
    /// that snapshot records it, and that diff.
    own_size: HashMap<String, (u64, String)>,
    /// For each full backup, by name: the largest image size the diffs of its chain record, and
    /// the diff that records it.
    chain_size: HashMap<String, (u64, String)>,
}

impl Limits {
    /// Reads the header of every diff in `layout` (a few KiB each). A diff whose header cannot
    /// be read tells nothing here; it is reported when it is read itself.
    pub fn learn(dir: &dyn Door, layout: &Layout) -> Limits {
        let mut limits = Limits::default();
        let mut sizes: HashMap<usize, u64> = HashMap::new();
        for (index, diff) in layout.files.iter().enumerate() {
            if diff.file.is_full() {
                continue;
            }
            if interrupt::received().is_some() {
                return limits;
            }
            match peek_diff_header(dir, &diff.name, &diff.file) {
                Ok(header) if header.size <= MAX_IMAGE_BYTES => {
                    sizes.insert(index, header.size);
                }
                Ok(_) => {}
                Err(err) => debug!(
                    "no image size from {}: {err:#}",
                    escaped_path(&dir.location_of(&diff.name))
                ),
            }
        }
        for full in layout.files.iter().filter(|f| f.file.is_full()) {
            // The first diff (in name order) that ends where the full does.
            let own = layout.files.iter().enumerate().find_map(|(index, diff)| {
                let size = sizes.get(&index)?;
                (diff.file.snap == full.file.snap).then(|| (*size, diff.name.clone()))
            });
            if let Some(own) = own {
                limits.own_size.insert(full.name.clone(), own);
            }
        }
        for chain in &layout.chains {
            let largest = chain
                .diffs
                .iter()
                .filter_map(|&index| Some((*sizes.get(&index)?, &layout.files[index].name)))
                .fold(
                    None::<(u64, &String)>,
                    |largest, (size, name)| match largest {
                        Some((known, _)) if known >= size => largest,
                        _ => Some((size, name)),
                    },
                );
            if let Some((size, name)) = largest {
                limits
                    .chain_size
                    .insert(layout.files[chain.full].name.clone(), (size, name.clone()));
            }
        }
        limits
    }

    /// The largest image size the diffs of a full's chain record, and the diff that records it.
    pub fn chain_size(&self, full: &FolderFile) -> Option<(u64, &str)> {
        self.chain_size
            .get(&full.name)
            .map(|(size, diff)| (*size, diff.as_str()))
    }

    /// The image size at a full's own snapshot, as a diff ending there records it, and that diff.
    pub fn own_size(&self, full: &FolderFile) -> Option<(u64, &str)> {
        self.own_size
            .get(&full.name)
            .map(|(size, diff)| (*size, diff.as_str()))
    }

    /// The uncompressed fulls of `layout` without a checksum file whose length on disk is not
    /// the image size a diff records at their snapshot, each with why: no route may use them.
    pub fn wrong_sized(&self, layout: &Layout) -> Vec<(String, String)> {
        layout
            .files
            .iter()
            .filter(|f| f.file.is_full() && !f.file.compressed() && f.checksum.is_none())
            .filter_map(|full| {
                let err = self.of(full).check("the file holds", full.size).err()?;
                let why = format!("{err:#}");
                let why = why.strip_suffix("; it is not read").unwrap_or(&why);
                Some((full.name.clone(), why.to_string()))
            })
            .collect()
    }

    /// The bound for one file's raw stream.
    pub fn of(&self, stored: &FolderFile) -> Limit {
        if !stored.file.is_full() {
            return Limit::diff();
        }
        let unproven = stored.checksum.is_none();
        if let Some((size, diff)) = self.own_size(stored) {
            return Limit {
                bytes: size,
                why: format!(
                    "the image size at its snapshot (recorded in {})",
                    escaped(diff)
                ),
                exact: unproven,
            };
        }
        match self.chain_size(stored) {
            // Only an unproven full is held to its chain's sizes: a proven one is what its
            // checksum file says, and after a shrink it is larger than every later point.
            Some((size, diff)) if unproven => Limit {
                bytes: size,
                why: format!(
                    "the largest image size its chain records (in {})",
                    escaped(diff)
                ),
                exact: false,
            },
            _ => Limit::absolute(),
        }
    }
}

/// Checks a diff's header before any record is read: its snapshot names must be the ones its
/// file name promises, and its image size (which bounds its payload) must be believable.
pub fn check_diff_header(stored: &FolderFile, header: &DiffHeader) -> Result<(), String> {
    stored.check_diff_names(header)?;
    if header.size > MAX_IMAGE_BYTES {
        return Err(format!(
            "the diff records an image size of {} bytes, more than the largest image read ({}); \
             it is not read",
            header.size,
            human_bytes(MAX_IMAGE_BYTES)
        ));
    }
    Ok(())
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

/// Fails the stream once SIGINT or SIGTERM has arrived. Checked on every read (an atomic load):
/// a decompressed or sparse stream can be far longer than the file it comes from, so checking
/// between files is not enough.
pub struct StopOnSignal<R>(pub R);

impl<R: Read> Read for StopOnSignal<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        interrupt::check().map_err(io::Error::other)?;
        self.0.read(buf)
    }
}

/// Bounds what the tar reader may read outside the member's data (`None`: inside it).
type Allowance = Rc<Cell<Option<(u64, &'static str)>>>;

/// The decompressed archive, metered by an [`Allowance`] and stopped by signals.
struct Metered<R> {
    inner: R,
    allowance: Allowance,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        interrupt::check().map_err(io::Error::other)?;
        let Some((left, what)) = self.allowance.get() else {
            return self.inner.read(buf);
        };
        if left == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, what));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.allowance.set(Some((left - n as u64, what)));
        Ok(n)
    }
}

/// The archive `inner` decompressed, metered so that its headers cannot run on for more than
/// [`MAX_ARCHIVE_HEADERS`] bytes before its member's data.
fn metered_archive<R: BufRead>(
    inner: R,
    compression: Compression,
) -> Result<Metered<Decompressed<R>>> {
    Ok(Metered {
        inner: Decompressed::new(inner, compression)?,
        allowance: Rc::new(Cell::new(Some((
            MAX_ARCHIVE_HEADERS,
            "the archive's headers before its member's data are too long",
        )))),
    })
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

/// The file `name` of `dir` opened for reading: a regular file, never through a symlink. The
/// error says what the entry is instead, or why it cannot be opened; it does not name the file.
fn open(dir: &dyn Door, name: &str) -> Result<Opened> {
    dir.open(name).map_err(|err| {
        if untrusted::is_not_regular(&err) {
            anyhow::Error::new(err)
        } else {
            anyhow::Error::new(err).context("cannot open")
        }
    })
}

/// What a stored file is read through: its bytes counted and hashed as they pass.
type Source = Counting<Hashing<progress::Reader<Box<dyn Read + Send>>>>;

/// How a stored file's bytes become its raw stream: decrypted, then unpacked from its archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub compression: Compression,
    pub encrypted: bool,
}

impl From<Compression> for Stored {
    fn from(compression: Compression) -> Stored {
        Stored {
            compression,
            encrypted: false,
        }
    }
}

impl From<&BackupFile> for Stored {
    fn from(file: &BackupFile) -> Stored {
        Stored {
            compression: file.compression,
            encrypted: file.encrypted,
        }
    }
}

/// The count and SHA-256 of the bytes a [`Tally`] passed, shared with whoever reads through it
/// (the decryptor keeps its reader to itself), and how many more header bytes may pass.
#[derive(Clone)]
struct Seen(Arc<Mutex<SeenSoFar>>);

struct SeenSoFar {
    bytes: u64,
    hashing: Hashing<io::Sink>,
    /// `None` once the header is read.
    header_left: Option<u64>,
}

impl Seen {
    fn new(header_allowance: u64) -> Seen {
        Seen(Arc::new(Mutex::new(SeenSoFar {
            bytes: 0,
            hashing: Hashing::new(io::sink()),
            header_left: Some(header_allowance),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SeenSoFar> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// The header is read: no bound from now on.
    fn header_done(&self) {
        self.lock().header_left = None;
    }

    /// The bytes seen and their SHA-256.
    fn finish(&self) -> (u64, String) {
        let mut seen = self.lock();
        let hashing = std::mem::replace(&mut seen.hashing, Hashing::new(io::sink()));
        (seen.bytes, hashing.hex_digest())
    }
}

/// A stored file's bytes, counted and hashed into a [`Seen`] as they pass.
struct Tally<R> {
    inner: R,
    seen: Seen,
}

impl<R: Read> Read for Tally<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        interrupt::check().map_err(io::Error::other)?;
        let allowance = self.seen.lock().header_left;
        let want = match allowance {
            Some(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the age header is too long",
                ))
            }
            Some(left) => buf.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..want])?;
        let mut seen = self.seen.lock();
        seen.bytes += n as u64;
        seen.hashing.write_all(&buf[..n])?;
        if let Some(left) = &mut seen.header_left {
            *left -= n as u64;
        }
        Ok(n)
    }
}

/// The clear bytes of the age file `reader` of `len` bytes, their length, and the tally of the
/// stored bytes.
fn decrypt(reader: Box<dyn Read + Send>, len: u64) -> Result<(Box<dyn Read + Send>, u64, Seen)> {
    let identities = encrypt::identities().ok_or(encrypt::NoIdentity)?;
    let seen = Seen::new(encrypt::MAX_HEADER);
    let tally = Tally {
        inner: reader,
        seen: seen.clone(),
    };
    // age's unbuffered parser reads the header and nonce and not a byte more: what the tally
    // has seen then is their length.
    let clear = identities.decrypt(tally)?;
    seen.header_done();
    let clear_len = encrypt::clear_len(len.saturating_sub(seen.bytes()));
    Ok((Box::new(clear), clear_len, seen))
}

/// The clear bytes of `opened` and their length: an encrypted file is decrypted, its own bytes
/// tallied on the way (the tally returned), any other passed as it is.
fn in_clear(opened: Opened, encrypted: bool) -> Result<(Box<dyn Read + Send>, u64, Option<Seen>)> {
    let Opened { reader, len } = opened;
    if !encrypted {
        return Ok((reader, len, None));
    }
    let (clear, len, seen) = decrypt(reader, len)?;
    Ok((clear, len, Some(seen)))
}

/// Opens the stored file `name` of `dir` and hands its raw stream to `consume`, which should
/// read it to the end. The stream's declared length is checked against `limit` first.
/// Afterwards the rest of the file is read too, so the digest covers every byte, and the
/// archive's shape is checked. Errors do not name the file; callers add it.
pub fn read_raw<T>(
    dir: &dyn Door,
    name: &str,
    stored: impl Into<Stored>,
    limit: &Limit,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<(T, Facts)> {
    read_raw_opened(open(dir, name)?, name, stored, limit, consume)
}

/// [`read_raw`] of a file already open (`name` labels its progress bar).
pub fn read_raw_opened<T>(
    opened: Opened,
    name: &str,
    stored: impl Into<Stored>,
    limit: &Limit,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<(T, Facts)> {
    let Stored {
        compression,
        encrypted,
    } = stored.into();
    let (reader, len, sealed) = in_clear(opened, encrypted)?;
    let (value, mut facts) = read_clear(reader, len, name, compression, limit, consume)?;
    if let Some(sealed) = sealed {
        (facts.file_bytes, facts.sha256) = sealed.finish();
    }
    Ok((value, facts))
}

/// The length and SHA-256 of the stored bytes of the encrypted file `name`, whose age header is
/// checked on the way: what can be proven of it without its private key.
pub fn read_sealed_bytes(dir: &dyn Door, name: &str) -> Result<(u64, String)> {
    let Opened { reader, .. } = open(dir, name)?;
    let seen = Seen::new(encrypt::MAX_HEADER);
    let mut tally = Tally {
        inner: reader,
        seen: seen.clone(),
    };
    encrypt::check_header(&mut tally)?;
    seen.header_done();
    io::copy(&mut tally, &mut io::sink())?;
    Ok(seen.finish())
}

/// [`read_raw`] of a file's clear bytes.
fn read_clear<T>(
    reader: Box<dyn Read + Send>,
    len: u64,
    name: &str,
    compression: Compression,
    limit: &Limit,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<(T, Facts)> {
    if !compression.is_compressed() {
        limit.check("the file holds", len)?;
    }
    // On a terminal, a bar of the file's bytes (verify and restore read every file whole).
    let file = progress::reader(reader, Some(len), &escaped(name));
    let counted = Counting {
        inner: Hashing::new(file),
        count: 0,
    };
    if compression.is_compressed() {
        read_archive(counted, compression, limit, consume)
    } else {
        read_plain(counted, consume)
    }
}

/// The decompressed stream of an archive, and at its end the file's reader back.
enum Decompressed<R: BufRead> {
    Gzip(Box<MultiGzDecoder<R>>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Decompressed<R> {
    fn new(inner: R, compression: Compression) -> Result<Decompressed<R>> {
        Ok(match compression {
            Compression::Zstd => {
                // Every frame in turn, as `zstd -d` does: `zstd -T` and concatenated files
                // write several. Anything after them that is not a frame fails the stream.
                let mut zstd = zstd::stream::read::Decoder::with_buffer(inner)
                    .context("cannot start the zstd decoder")?;
                zstd.window_log_max(MAX_ZSTD_WINDOW_LOG)
                    .context("cannot start the zstd decoder")?;
                Decompressed::Zstd(zstd)
            }
            // Every member in turn, as `gzip -d` does: `pigz` and concatenated files write
            // several. Anything after them that is not a gzip member fails the stream.
            Compression::Gzip | Compression::None => {
                Decompressed::Gzip(Box::new(MultiGzDecoder::new(inner)))
            }
        })
    }

    fn into_inner(self) -> R {
        match self {
            Decompressed::Gzip(gz) => gz.into_inner(),
            Decompressed::Zstd(zstd) => zstd.finish(),
        }
    }

    fn format(&self) -> &'static str {
        match self {
            Decompressed::Gzip(_) => "gzip",
            Decompressed::Zstd(_) => "zstd",
        }
    }
}

impl<R: BufRead> Read for Decompressed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decompressed::Gzip(gz) => gz.read(buf),
            Decompressed::Zstd(zstd) => zstd.read(buf),
        }
    }
}

fn read_plain<T>(
    counted: Source,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<(T, Facts)> {
    let mut buffered = BufReader::with_capacity(BUFFER, StopOnSignal(counted));
    let value = consume(&mut buffered)?;
    let unread = io::copy(&mut buffered, &mut io::sink())?;
    if unread > 0 {
        bail!("{unread} bytes at the end were not used");
    }
    let counted = buffered.into_inner().0;
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

/// The archive's first member's headers; it must be a regular file (plain or GNU sparse).
fn first_member(archive: &mut impl Read) -> Result<MemberHeader> {
    let Some(member) =
        untar::next_member(archive).context("cannot read the archive's first member")?
    else {
        bail!("the archive is empty");
    };
    if !(member.kind.is_file() || member.kind.is_gnu_sparse()) {
        bail!(
            "the archive's member is not a regular file ({:?})",
            member.kind
        );
    }
    Ok(member)
}

fn read_archive<T>(
    counted: Source,
    compression: Compression,
    limit: &Limit,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<(T, Facts)> {
    let mut metered = metered_archive(BufReader::with_capacity(BUFFER, counted), compression)?;
    let allowance = Rc::clone(&metered.allowance);
    let header = first_member(&mut metered)?;
    let member = header.name.clone();
    // Before a byte of data: a sparse member can declare any size at no cost to its file.
    limit.check(
        &format!("the archive member {} declares", escaped(&member)),
        header.size,
    )?;
    allowance.set(None);
    let mut data = header.data(&mut metered);
    let mut counted = Counting {
        inner: StopOnSignal(&mut data),
        count: 0,
    };
    let value = consume(&mut counted)?;
    io::copy(&mut counted, &mut io::sink())?;
    let raw_bytes = counted.count;
    data.finish()?;
    allowance.set(Some((
        MAX_ARCHIVE_TAIL,
        "the archive goes on too long after its member",
    )));
    if let Some(next) =
        untar::next_member(&mut metered).context("cannot read past the archive's first member")?
    {
        bail!(
            "the archive holds more than one member ({}, {}, …)",
            escaped(&member),
            escaped(&next.name)
        );
    }
    // The archive ends at its first end-of-archive block; reading the padding after it also
    // makes gzip (zstd) check its CRC and length (its checksum), which cover the archive even
    // when no checksum file exists.
    let mut padding = vec![0u8; 64 * 1024];
    loop {
        let n = metered.read(&mut padding).context("cannot decompress")?;
        if n == 0 {
            break;
        }
        if padding[..n].iter().any(|&b| b != 0) {
            bail!("data follows the end of the tar archive");
        }
    }
    let format = metered.inner.format();
    let mut buffered = metered.inner.into_inner();
    if !buffered.fill_buf()?.is_empty() {
        bail!("data follows the end of the {format} stream");
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

/// Opens the stored file `name` of `dir`, checks the raw stream's declared length against
/// `limit` (when given) and hands the start of the stream to `peek`, which reads only a little
/// of it.
fn open_start<T>(
    dir: &dyn Door,
    name: &str,
    stored: Stored,
    limit: Option<&Limit>,
    peek: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let Stored {
        compression,
        encrypted,
    } = stored;
    let (reader, len, _) = in_clear(open(dir, name)?, encrypted)?;
    if !compression.is_compressed() {
        if let Some(limit) = limit {
            limit.check("the file holds", len)?;
        }
        return peek(&mut StopOnSignal(reader));
    }
    let mut metered = metered_archive(BufReader::new(reader), compression)?;
    let header = first_member(&mut metered)?;
    if let Some(limit) = limit {
        limit.check(
            &format!("the archive member {} declares", escaped(&header.name)),
            header.size,
        )?;
    }
    // What `peek` reads of the member goes through the same meter: a diff's header fits.
    peek(&mut header.data(&mut metered))
}

/// The raw stream of the stored file `opened` from its start, as a reader of its own: decrypted,
/// decompressed and taken out of its archive, the headers checked as [`read_raw`] checks them,
/// but nothing counted or hashed (the caller proves what it reads otherwise). Stops on SIGINT
/// and SIGTERM.
pub fn raw_reader(opened: Opened, stored: impl Into<Stored>) -> Result<Box<dyn Read + Send>> {
    let Stored {
        compression,
        encrypted,
    } = stored.into();
    let (reader, _, _) = in_clear(opened, encrypted)?;
    if !compression.is_compressed() {
        return Ok(Box::new(StopOnSignal(reader)));
    }
    let mut metered = metered_archive(BufReader::new(reader), compression)?;
    let header = first_member(&mut metered)?;
    Ok(Box::new(StopOnSignal(header.into_data(metered.inner))))
}

/// The first member's header of the archive `reader` (compressed by `compression`), and where
/// its data starts in the decompressed archive: what a reader needs to reach a byte of the
/// member without reading the archive from its start.
pub fn member_start(
    reader: Box<dyn Read + Send>,
    compression: Compression,
) -> Result<(u64, MemberHeader)> {
    let mut metered = Counting {
        inner: metered_archive(BufReader::new(reader), compression)?,
        count: 0,
    };
    // The headers are read block by block, not a byte further.
    let header = first_member(&mut metered)?;
    Ok((metered.count, header))
}

/// The header of the diff stored as `name` in `dir`, reading no more than the header (and,
/// compressed, the archive's headers before it).
pub fn peek_diff_header(
    dir: &dyn Door,
    name: &str,
    stored: impl Into<Stored>,
) -> Result<DiffHeader> {
    open_start(dir, name, stored.into(), None, |raw| {
        let reader = BufReader::new(raw.take(MAX_DIFF_HEADER));
        Ok(DiffReader::new(reader)?.header().clone())
    })
}

/// What can be checked of a file without reading it, before anything is created from it: it and
/// its checksum file are regular files, its declared length is within `limit`, and a diff's
/// header names the right snapshots and a believable size. The error names the file.
pub fn precheck(dir: &dyn Door, stored: &FolderFile, limit: &Limit) -> Result<()> {
    recorded_digest(dir, &stored.name)?;
    open_start(
        dir,
        &stored.name,
        Stored::from(&stored.file),
        Some(limit),
        |raw| {
            if stored.file.is_full() {
                return Ok(());
            }
            let reader = BufReader::new(raw.take(MAX_DIFF_HEADER));
            let diff = DiffReader::new(reader)?;
            check_diff_header(stored, diff.header()).map_err(anyhow::Error::msg)
        },
    )
    .with_context(|| escaped_path(&dir.location_of(&stored.name)))
}

/// The digest recorded for `file_name` in its `.sha256` file in `dir`, or `None` when it has no
/// such file. The error names the checksum file.
pub fn recorded_digest(dir: &dyn Door, file_name: &str) -> Result<Option<String>> {
    let name = naming::checksum_name(file_name);
    let path = dir.location_of(&name);
    let shown = || escaped_path(&path);
    let bytes = match dir.read_small(&name, MAX_CHECKSUM_FILE) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(None),
        Err(err) if untrusted::is_not_regular(&err) => {
            return Err(anyhow::Error::new(err).context(shown()))
        }
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", shown())),
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{}: is not text; expected one `sha256sum` line", shown()))?;
    parse_checksum_line(&text, file_name)
        .map(Some)
        .map_err(|problem| anyhow::anyhow!("{}: {problem}", shown()))
}

/// An entry named like a backup or checksum file of the image that is not a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRegularEntry {
    pub name: String,
    pub kind: EntryKind,
}

impl NotRegularEntry {
    /// "is a FIFO, not a regular file; it is not read".
    pub fn message(&self) -> String {
        NotRegular(self.kind).to_string()
    }
}

/// An image's backup folder as the read side sees it.
#[derive(Debug, Clone)]
pub struct ScannedFolder {
    pub path: PathBuf,
    /// The chains of the backup files that are regular files with, when they have one, a regular
    /// checksum file: what can be read.
    pub layout: Layout,
    /// The chains that every backup file name in the folder would form, whatever the entries
    /// are. Restore compares the two, so that a point only a non-regular entry offers is refused
    /// by name instead of quietly replaced by an older one.
    pub claimed: Layout,
    /// Entries named like backup or checksum files that are not regular files, by name.
    pub not_regular: Vec<NotRegularEntry>,
    /// Backup files left out of `layout` because reading showed they cannot be what they claim
    /// ([`ScannedFolder::refuse_wrong_sized`]), each with why.
    pub refused: Vec<(String, String)>,
}

impl ScannedFolder {
    /// Leaves out of the routes every full without a checksum file whose length is known to be
    /// wrong, so that a point it offers is reached another way when the folder has one (the
    /// original's chain beside a stray empty `.full`); returns the bounds learnt for what is left.
    pub fn refuse_wrong_sized(&mut self, dir: &dyn Door) -> Limits {
        let limits = Limits::learn(dir, &self.layout);
        let refused = limits.wrong_sized(&self.layout);
        if refused.is_empty() {
            return limits;
        }
        let names: Vec<&str> = refused.iter().map(|(name, _)| name.as_str()).collect();
        self.layout = self.layout.without(&names);
        self.refused = refused;
        Limits::learn(dir, &self.layout)
    }
}

/// Reads `image`'s folder through [`Door::list`] (what each entry is, without following it,
/// and the sizes of the regular files). A folder that does not exist reads as empty.
pub fn scan(dir: &dyn Door, image: &str) -> Result<ScannedFolder> {
    let entries = dir.list()?;
    let mut not_regular = Vec::new();
    let mut unusable: HashSet<&str> = HashSet::new();
    for entry in &entries {
        if entry.kind == EntryKind::File {
            continue;
        }
        match Entry::classify(image, &entry.name) {
            Entry::Backup(_) => {}
            Entry::Checksum(_) => {
                // A backup file whose checksum cannot be read is not used either: its bytes
                // cannot be proven, and refusing it says why.
                if let Some(of) = naming::checksummed(&entry.name) {
                    unusable.insert(of);
                }
            }
            // Other entries are not read; the layout reports them.
            Entry::Temporary | Entry::Record | Entry::Unexpected => continue,
        }
        unusable.insert(&entry.name);
        not_regular.push(NotRegularEntry {
            name: entry.name.clone(),
            kind: entry.kind,
        });
    }
    let usable: Vec<FolderEntry> = entries
        .iter()
        .filter(|entry| !unusable.contains(entry.name.as_str()))
        .cloned()
        .collect();
    // As if every entry were the regular file its name says it is.
    let claimed: Vec<FolderEntry> = entries
        .iter()
        .map(|entry| FolderEntry {
            kind: EntryKind::File,
            ..entry.clone()
        })
        .collect();
    Ok(ScannedFolder {
        claimed: Layout::from_entries(image, &claimed),
        path: dir.location(),
        layout: Layout::from_entries(image, &usable),
        not_regular,
        refused: Vec::new(),
    })
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

/// A gzip'd tar whose one member is a GNU sparse file declaring `declared` bytes, all holes but
/// its last byte: about 200 bytes on disk, like the one in the security review. For tests only.
#[cfg(any(test, feature = "test-support"))]
pub fn sparse_bomb(member: &str, declared: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_path(member).unwrap();
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::GNUSparse);
    header.set_size(1);
    let gnu = header.as_gnu_mut().unwrap();
    gnu.set_real_size(declared);
    gnu.sparse[0].set_offset(declared - 1);
    gnu.sparse[0].set_length(1);
    header.set_cksum();
    let mut tarball = header.as_bytes().to_vec();
    let mut data = [0u8; 512];
    data[0] = 1;
    tarball.extend_from_slice(&data);
    tarball.extend_from_slice(&[0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &tarball).unwrap();
    gz.finish().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::door::LocalFolder;
    use crate::test_fixtures::{
        diff_file, diff_stream, full_file, mkfifo, read_raw_at, sha256, S0, S1, S2, S3,
    };
    use std::io::Write;

    #[test]
    fn an_encrypted_file_reads_in_clear_with_its_key_and_proves_its_stored_bytes_without() {
        use crate::folder::format::encrypt::{self, Identities, Recipients};
        use crate::folder::format::write::{self, Compressor, Member};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let identity = age::x25519::Identity::generate();
        let key = dir.path().join("key");
        let secret = age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_string();
        std::fs::write(&key, secret).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let recipients = Recipients::parse(&identity.to_public().to_string()).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let folder = LocalFolder::at(dir.path());

        let mut plain = std::fs::File::create(dir.path().join("a.full.age")).unwrap();
        let (len, plain_digest) =
            write::write_encrypted(&mut &data[..], &recipients, &plain).unwrap();
        assert_eq!(len, data.len() as u64);
        plain.flush().unwrap();
        let mut archive = std::fs::File::create(dir.path().join("a.full.tar.zst.age")).unwrap();
        let member = Member {
            name: "a.full",
            size: data.len() as u64,
            mtime: chrono::Utc::now(),
            sparse: None,
        };
        let zstd = Compressor::new(Compression::Zstd, None, Some(1)).unwrap();
        let archive_digest = write::write_encrypted_archive(
            &mut &data[..],
            &member,
            &zstd,
            &recipients,
            &mut archive,
        )
        .unwrap();

        let cases = [
            ("a.full.age", Compression::None, &plain_digest),
            ("a.full.tar.zst.age", Compression::Zstd, &archive_digest),
        ];
        // Without the key: the stored bytes and the header only.
        for (name, compression, digest) in cases {
            let (bytes, sha256) = read_sealed_bytes(&folder, name).unwrap();
            assert_eq!(&sha256, digest);
            assert_eq!(
                bytes,
                std::fs::metadata(dir.path().join(name)).unwrap().len()
            );
            let stored = Stored {
                compression,
                encrypted: true,
            };
            if encrypt::identities().is_none() {
                let err =
                    read_raw(&folder, name, stored, &Limit::absolute(), |_| Ok(())).unwrap_err();
                assert!(err.is::<encrypt::NoIdentity>(), "{err:#}");
            }
        }
        encrypt::use_identities(Identities::read(&key).unwrap());
        for (name, compression, digest) in cases {
            let stored = Stored {
                compression,
                encrypted: true,
            };
            // The image's exact size is the bound a plain file is held to: met, not exceeded.
            let exact = Limit {
                bytes: data.len() as u64,
                why: "the image".into(),
                exact: true,
            };
            let (clear, facts) = read_raw(&folder, name, stored, &exact, |raw| {
                let mut clear = Vec::new();
                raw.read_to_end(&mut clear)?;
                Ok(clear)
            })
            .unwrap();
            assert_eq!(clear, data, "{name}");
            assert_eq!(&facts.sha256, digest, "{name}");
            assert_eq!(facts.raw_bytes, data.len() as u64);
            assert_eq!(
                facts.file_bytes,
                std::fs::metadata(dir.path().join(name)).unwrap().len()
            );
        }
        // Not an age file at all.
        std::fs::write(dir.path().join("b.full.age"), b"plain bytes").unwrap();
        assert!(read_sealed_bytes(&folder, "b.full.age").is_err());
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

    fn read_all(path: &std::path::Path, compressed: bool) -> Result<(Vec<u8>, Facts)> {
        read_raw_at(path, compressed.into(), &Limit::absolute(), |raw| {
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
        let file = std::fs::File::create(&raw).unwrap();
        file.set_len(data.len() as u64).unwrap();
        use std::os::unix::fs::FileExt;
        file.write_all_at(&data[1 << 20..(1 << 20) + 5000], 1 << 20)
            .unwrap();
        file.write_all_at(&[1], (8 << 20) - 1).unwrap();
        let archive = dir.path().join("x.tar.gz");
        crate::cluster::process::CommandLine::new("tar")
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
    fn several_gzip_members_or_zstd_frames_are_one_stream() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut tarball = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut tarball);
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            builder.append_data(&mut header, "m", &data[..]).unwrap();
            builder.finish().unwrap();
        }
        // Split mid-header and mid-data, as `pigz` and `zstd -T` split by size.
        let pieces = [&tarball[..300], &tarball[300..100_000], &tarball[100_000..]];
        let gzip: Vec<u8> = pieces
            .iter()
            .flat_map(|piece| {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(piece).unwrap();
                gz.finish().unwrap()
            })
            .collect();
        let zstd: Vec<u8> = pieces
            .iter()
            .flat_map(|piece| zstd::encode_all(*piece, 3).unwrap())
            .collect();
        for (name, bytes) in [("x.tar.gz", gzip), ("x.tar.zst", zstd)] {
            let compression = if name.ends_with(".zst") {
                Compression::Zstd
            } else {
                Compression::Gzip
            };
            let path = dir.path().join(name);
            let read = |bytes: &[u8]| {
                std::fs::write(&path, bytes).unwrap();
                read_raw_at(&path, compression, &Limit::absolute(), |raw| {
                    let mut out = Vec::new();
                    raw.read_to_end(&mut out)?;
                    Ok(out)
                })
            };
            let (got, facts) = read(&bytes).unwrap();
            assert!(got == data, "{name} reads back differently");
            assert_eq!(facts.sha256, sha256(&bytes));
            // Still refused: the last member cut short, and bytes after the last member.
            assert!(read(&bytes[..bytes.len() - 5]).is_err(), "{name} cut short");
            for junk in [&b"junk"[..], &[0u8; 8][..], &bytes[..20]] {
                let longer = [&bytes[..], junk].concat();
                assert!(read(&longer).is_err(), "{name} with {} more", junk.len());
            }
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
        assert_eq!(
            recorded_digest(&LocalFolder::at(dir.path()), "f").unwrap(),
            None
        );
        let digest = sha256(b"abc");
        let mut sidecar = std::fs::File::create(dir.path().join("f.sha256")).unwrap();
        writeln!(sidecar, "{digest}  f").unwrap();
        assert_eq!(
            recorded_digest(&LocalFolder::at(dir.path()), "f").unwrap(),
            Some(digest)
        );
        std::fs::write(dir.path().join("g.sha256"), "nonsense").unwrap();
        let err = recorded_digest(&LocalFolder::at(dir.path()), "g")
            .unwrap_err()
            .to_string();
        assert!(err.contains("g.sha256: "), "{err}");
    }

    #[test]
    fn a_sparse_member_declaring_an_absurd_size_is_refused_before_any_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm@S.full.tar.gz");
        let bomb = sparse_bomb("vm@S.full", 1 << 62);
        assert!(bomb.len() < 300, "{} bytes", bomb.len());
        std::fs::write(&path, &bomb).unwrap();
        // Without the check, this reads 2^62 zeros: months.
        let started = std::time::Instant::now();
        let mut consumed = false;
        let err = read_raw_at(&path, Compression::Gzip, &Limit::absolute(), |_| {
            consumed = true;
            Ok(())
        })
        .unwrap_err();
        assert!(!consumed);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let err = format!("{err:#}");
        assert!(
            err.starts_with(&format!(
                "the archive member vm@S.full declares {} bytes, more than the largest image read \
                 when its chain records no size: 1125899906842624 bytes (1.0 PiB)",
                1u64 << 62
            )),
            "{err}"
        );
        assert!(err.ends_with("it is not read"), "{err}");
        // As a diff, the same: no diff stream of a believable image is that long.
        let err = read_raw_at(&path, Compression::Gzip, &Limit::diff(), |_| Ok(())).unwrap_err();
        assert!(
            format!("{err:#}").contains("the longest diff stream"),
            "{err:#}"
        );
        // A small sparse member is still read whole.
        std::fs::write(&path, sparse_bomb("vm@S.full", 5000)).unwrap();
        let (data, _) = read_all(&path, true).unwrap();
        assert_eq!(data.len(), 5000);
        assert_eq!(data[4999], 1);
    }

    #[test]
    fn a_full_may_not_be_larger_than_its_chain_records() {
        use crate::folder::format::diffstream::{DiffHeader, DiffWriter};
        let dir = tempfile::tempdir().unwrap();
        let (s0, s1) = (S0, S1);
        let full = full_file(s0);
        let diff = diff_file(s0, s1);
        let header = DiffHeader {
            from_snap: Some(s0.into()),
            to_snap: Some(s1.into()),
            size: 1 << 20,
        };
        let stream = DiffWriter::new(Vec::new(), &header)
            .unwrap()
            .finish()
            .unwrap();
        std::fs::write(dir.path().join(&diff), &stream).unwrap();
        let layout = Layout::build("vm", &[full.clone(), diff.clone()]);
        let limits = Limits::learn(&LocalFolder::at(dir.path()), &layout);
        let limit = limits.of(&layout.files[0]);
        assert_eq!(limit.bytes, 1 << 20);
        for (len, ok) in [(1 << 20, true), ((1 << 20) + 1, false)] {
            let file = std::fs::File::create(dir.path().join(&full)).unwrap();
            file.set_len(len).unwrap();
            let read = read_raw_at(&dir.path().join(&full), Compression::None, &limit, |raw| {
                io::copy(raw, &mut io::sink())?;
                Ok(())
            });
            assert_eq!(read.is_ok(), ok, "{len}");
            if let Err(err) = read {
                assert_eq!(
                    format!("{err:#}"),
                    format!(
                        "the file holds {len} bytes, more than the largest image size its chain \
                         records (in {diff}): 1048576 bytes (1.0 MiB); it is not read"
                    )
                );
            }
        }
        // Nothing known: only the absolute limit; a diff's size record is held to it too.
        assert_eq!(Limits::default().of(&layout.files[0]), Limit::absolute());
        let huge = DiffHeader {
            size: MAX_IMAGE_BYTES + 1,
            ..header
        };
        let err = check_diff_header(&layout.files[1], &huge).unwrap_err();
        assert!(err.contains("more than the largest image read"), "{err}");
    }

    #[test]
    fn a_full_is_bounded_by_its_own_size_not_by_later_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let (s0, s1, s2) = (S0, S1, S2);
        let write_diff = |from: &str, to: &str, size: u64| {
            let name = diff_file(from, to);
            let stream = diff_stream(from, to, size, &[]);
            std::fs::write(dir.path().join(&name), stream).unwrap();
            name
        };
        // The image had 4 MiB at s0 and s1, then shrank to 1 MiB before s2.
        let full0 = full_file(s0);
        let full1 = full_file(s1);
        let d01 = write_diff(s0, s1, 4 << 20);
        let d12 = write_diff(s1, s2, 1 << 20);
        let sha = |n: &str| format!("{n}.sha256");
        // A proven full whose chain only records the size after the shrink: nothing but the
        // absolute bound (its checksum file proves it).
        let layout = Layout::build("vm", &[full1.clone(), sha(&full1), d12.clone()]);
        let limits = Limits::learn(&LocalFolder::at(dir.path()), &layout);
        assert_eq!(limits.of(&layout.files[0]), Limit::absolute());
        // The same without its checksum file: its chain's largest size, as before.
        let layout = Layout::build("vm", &[full1.clone(), d12.clone()]);
        let limits = Limits::learn(&LocalFolder::at(dir.path()), &layout);
        assert_eq!(limits.of(&layout.files[0]).bytes, 1 << 20);
        assert!(!limits.of(&layout.files[0]).exact);
        // A diff that ends at the full's snapshot records its size: a bound for a proven full,
        // the exact length of an unproven one (used or not).
        let names = [full0.clone(), sha(&full0), d01.clone(), d12, full1.clone()];
        let layout = Layout::build("vm", &names);
        let limits = Limits::learn(&LocalFolder::at(dir.path()), &layout);
        let of = |name: &str| limits.of(layout.files.iter().find(|f| f.name == name).unwrap());
        assert_eq!((of(&full1).bytes, of(&full1).exact), (4 << 20, true));
        assert_eq!(of(&full0), Limit::absolute());
        for (len, ok) in [(0, false), (4 << 20, true), ((4 << 20) - 1, false)] {
            let file = std::fs::File::create(dir.path().join(&full1)).unwrap();
            file.set_len(len).unwrap();
            let read = read_raw_at(
                &dir.path().join(&full1),
                Compression::None,
                &of(&full1),
                |raw| {
                    io::copy(raw, &mut io::sink())?;
                    Ok(())
                },
            );
            assert_eq!(read.is_ok(), ok, "{len}");
            if let Err(err) = read {
                assert_eq!(
                    format!("{err:#}"),
                    format!(
                        "the file holds {len} bytes, but the image size at its snapshot \
                         (recorded in {d01}) is 4194304 bytes (4.0 MiB), and no checksum file \
                         proves it otherwise; it is not read"
                    )
                );
            }
        }
    }

    #[test]
    fn entries_that_are_not_regular_files_are_named_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        let link = dir.path().join("vm@S.full");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let zero = dir.path().join("zero.full");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let fifo = dir.path().join("fifo.full");
        mkfifo(&fifo);
        for (path, kind) in [
            (&link, "a symbolic link"),
            (&zero, "a symbolic link"),
            (&fifo, "a FIFO"),
            (&dir.path().to_path_buf(), "a folder"),
        ] {
            for compressed in [false, true] {
                let err = read_all(path, compressed).unwrap_err();
                assert_eq!(
                    format!("{err:#}"),
                    format!("is {kind}, not a regular file; it is not read")
                );
            }
        }
        // A FIFO as a checksum file would block a plain open() forever.
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        mkfifo(dir.path().join("f.sha256"));
        let err = recorded_digest(&LocalFolder::at(dir.path()), "f").unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "{}: is a FIFO, not a regular file; it is not read",
                dir.path().join("f.sha256").display()
            )
        );
        std::fs::write(dir.path().join("g.sha256"), vec![b'a'; 70_000]).unwrap();
        let err = recorded_digest(&LocalFolder::at(dir.path()), "g").unwrap_err();
        assert!(format!("{err:#}").contains("is larger than"), "{err:#}");
    }

    #[test]
    fn the_scan_keeps_entries_that_are_not_regular_files_out_of_the_chains() {
        let dir = tempfile::tempdir().unwrap();
        let image_dir = crate::folder::door::LocalFolder::image(dir.path(), "rbd", "vm");
        let folder = image_dir.path();
        std::fs::create_dir_all(&folder).unwrap();
        let (s0, s1, s2, s3) = (S0, S1, S2, S3);
        let full = full_file(s0);
        let d1 = diff_file(s0, s1);
        let d2 = diff_file(s1, s2);
        let d3 = diff_file(s2, s3);
        std::fs::write(folder.join(&full), vec![0u8; 4096]).unwrap();
        std::fs::write(folder.join(&d1), b"d1").unwrap();
        std::fs::write(folder.join(&d2), b"d2").unwrap();
        mkfifo(folder.join(format!("{d2}.sha256")));
        std::os::unix::fs::symlink("/nonexistent", folder.join(&d3)).unwrap();
        std::fs::create_dir(folder.join(full_file(s3))).unwrap();
        std::os::unix::fs::symlink("/etc", folder.join("notes")).unwrap();
        let scanned = scan(&image_dir, "vm").unwrap();
        let entries: Vec<(&str, EntryKind)> = scanned
            .not_regular
            .iter()
            .map(|e| (e.name.as_str(), e.kind))
            .collect();
        let d2_sum = format!("{d2}.sha256");
        let full3 = full_file(s3);
        assert_eq!(
            entries,
            [
                (d2_sum.as_str(), EntryKind::Fifo),
                (d3.as_str(), EntryKind::Symlink),
                (full3.as_str(), EntryKind::Directory),
            ]
        );
        let names: Vec<&str> = scanned
            .layout
            .files
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, [full.as_str(), d1.as_str()]);
        assert_eq!(scanned.layout.files[0].size, 4096);
        assert_eq!(scanned.claimed.points().len(), 4);
        assert_eq!(scanned.layout.points().len(), 2);
    }

    #[test]
    fn tar_headers_and_padding_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tar.gz");
        // A GNU long name of 65 MiB: the tar reader would hold it in memory whole.
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_path("././@LongLink").unwrap();
        header.set_size(65 << 20);
        header.set_cksum();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(header.as_bytes()).unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..65 {
            gz.write_all(&chunk).unwrap();
        }
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let err = read_all(&path, true).unwrap_err();
        assert!(
            format!("{err:#}").contains("headers before its member's data are too long"),
            "{err:#}"
        );
        // Zeros after the end of the archive, far more than any record padding.
        let mut tarball = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut tarball);
            let mut header = tar::Header::new_gnu();
            header.set_size(3);
            header.set_mode(0o600);
            builder.append_data(&mut header, "m", &b"abc"[..]).unwrap();
            builder.finish().unwrap();
        }
        tarball.resize(tarball.len() + (5 << 20), 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tarball).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let err = read_all(&path, true).unwrap_err();
        assert!(
            format!("{err:#}").contains("goes on too long after its member"),
            "{err:#}"
        );
    }
}
