//! Compressed backup files: a tar archive holding one member, compressed on every core.
//!
//! The member is the raw stream (an `rbd export` or `rbd export-diff`). A full image's member can
//! be a GNU sparse member: its header carries a map of the ranges that hold data, only those
//! ranges are stored, and the never-written ranges between them (which `rbd export` sends as
//! zeros) are not compressed at all. GNU tar extracts such a member as a sparse file, Python's
//! `tarfile` and [`crate::folder::read`] read it back as the whole image; it is what the
//! original's `tar S` wrote.
//!
//! The archive goes through one compressor:
//! - gzip ([`Compression::Gzip`]): one standard gzip member, compressed in 128 KiB blocks on
//!   several threads, each block primed with the 32 KiB before it (the `pigz` scheme, by the `gzp`
//!   crate), so `gzip -t`, `tar xzf` and any inflater read it as one stream;
//! - zstd ([`Compression::Zstd`]): zstd's seekable format ([`super::seekable`]), independent
//!   frames of 2 MiB of the archive, each with its content checksum, compressed on several threads
//!   at once, then a seek table that `zstd -d` and `tar --zstd` pass over.
//!
//! Both keep a bounded number of blocks in flight, so memory does not grow with the image.
//!
//! The map is written before the data, so it must be known first: [`write_archive`] takes it with
//! the member's description ([`Member`]) and then the data of the mapped ranges, in order, as one
//! stream. [`DataOfExtents`] turns a whole image stream (holes as zeros) into that stream, checking
//! that what it leaves out really is zeros and that the image has the announced length.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::ops::RangeInclusive;
use std::os::unix::fs::MetadataExt;

use chrono::{DateTime, Utc};
use gzp::deflate::Gzip;
use gzp::par::compress::{ParCompress, ParCompressBuilder};
use gzp::ZWriter;

use crate::cluster::rbd::ExtentSink;
use crate::folder::format::seekable::SeekableWriter;
use crate::folder::format::write::Hashing;
use crate::folder::naming::Compression;

const BLOCK: u64 = 512;
/// The tar header's name field.
const NAME_FIELD: usize = 100;
/// Map entries in the main GNU sparse header, and in each extension header after it.
const MAIN_ENTRIES: usize = 4;
const EXT_ENTRIES: usize = 21;
/// gzip blocks compressed at once, one per job: `pigz`'s size (larger blocks gain nothing
/// measurable and cost memory per thread).
const GZIP_BLOCK: usize = 128 * 1024;
const COPY_CHUNK: usize = 1 << 20;
/// The most ranges a sparse map may hold: about 6 MiB of tar headers, and 4 MiB of memory while
/// it is built. A more fragmented image gets its smallest holes filled with zeros
/// ([`SparseMapBuilder`]): they are then compressed instead of skipped, which costs little.
pub const MAX_SPARSE_EXTENTS: usize = 1 << 18;

/// How compressed files are compressed: the compressor, its level and its threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compressor {
    /// [`Compression::Gzip`] or [`Compression::Zstd`].
    pub compression: Compression,
    pub level: u32,
    pub threads: u32,
}

impl Compressor {
    /// The compressor for `compression` (`None` when it is [`Compression::None`]), at `level`
    /// (its default when `None`) on `threads` threads (one per core when `None`).
    pub fn new(
        compression: Compression,
        level: Option<u32>,
        threads: Option<u32>,
    ) -> Option<Compressor> {
        if !compression.is_compressed() {
            return None;
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Some(Compressor {
            compression,
            level: level.unwrap_or_else(|| Compressor::default_level(compression)),
            threads: threads.unwrap_or_else(|| u32::try_from(cores).unwrap_or(u32::MAX)),
        })
    }

    /// The levels a compressor takes: gzip's 1 to 9, and zstd's 1 to 19 (its levels above 19
    /// need hundreds of MiB per thread).
    pub fn levels(compression: Compression) -> Option<RangeInclusive<u32>> {
        match compression {
            Compression::None => None,
            Compression::Gzip => Some(1..=9),
            Compression::Zstd => Some(1..=19),
        }
    }

    /// gzip's own default, 6, which the original used through `tar z`; zstd's own default, 3.
    pub fn default_level(compression: Compression) -> u32 {
        match compression {
            Compression::Zstd => 3,
            Compression::None | Compression::Gzip => 6,
        }
    }
}

/// Which ranges of a member hold data: sorted, disjoint and apart, each starting on a 512-byte
/// boundary and as long as a multiple of 512 bytes unless it ends at the member's end (what tar
/// readers expect of a sparse map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseMap {
    size: u64,
    extents: Vec<(u64, u64)>,
}

impl SparseMap {
    /// A member that is data from start to end.
    #[cfg(test)]
    pub fn whole(size: u64) -> SparseMap {
        let mut builder = SparseMapBuilder::new(size, 1);
        // Cannot fail: one range within the size.
        let _ = builder.push(0, size);
        builder.finish()
    }

    /// The member's length.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The ranges holding data, as (offset, length).
    #[cfg(test)]
    pub fn extents(&self) -> &[(u64, u64)] {
        &self.extents
    }

    /// The bytes stored: the sum of the ranges' lengths.
    pub fn data_bytes(&self) -> u64 {
        self.extents.iter().map(|&(_, len)| len).sum()
    }

    /// True unless the data covers the whole member.
    pub fn has_holes(&self) -> bool {
        self.data_bytes() != self.size
    }

    /// The entries of the header's map: the ranges, and when the member ends in a hole (or is
    /// all hole), an empty range at its end, so the map reaches the member's full length.
    fn entries(&self) -> Vec<(u64, u64)> {
        let mut entries = self.extents.clone();
        let end = entries.last().map_or(0, |&(offset, len)| offset + len);
        if end < self.size || entries.is_empty() {
            entries.push((self.size, 0));
        }
        entries
    }
}

/// Builds a [`SparseMap`] from ranges given in order of their offsets, in bounded memory: ranges
/// are widened to 512-byte boundaries and merged with their neighbours; when there are more than
/// the bound, the smallest holes between them are filled (then compressed as zeros), doubling
/// the size of hole that is filled until the map fits.
#[derive(Debug)]
pub struct SparseMapBuilder {
    size: u64,
    max: usize,
    /// Holes shorter than this are filled.
    min_hole: u64,
    extents: Vec<(u64, u64)>,
    last_offset: u64,
}

impl SparseMapBuilder {
    /// For a member of `size` bytes, keeping at most `max_extents` ranges (at least 1).
    pub fn new(size: u64, max_extents: usize) -> SparseMapBuilder {
        SparseMapBuilder {
            size,
            max: max_extents.max(1),
            min_hole: 1,
            extents: Vec::new(),
            last_offset: 0,
        }
    }

    /// Adds the range of `len` bytes at `offset`; ranges come in order of their offsets and may
    /// overlap. Fails for a range out of order or past the member's end.
    pub fn push(&mut self, offset: u64, len: u64) -> Result<(), String> {
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= self.size)
            .ok_or_else(|| {
                format!(
                    "the range of {len} bytes at {offset} ends past the image's end ({} bytes)",
                    self.size
                )
            })?;
        if offset < self.last_offset {
            return Err(format!(
                "the range at {offset} comes after one at {}: ranges out of order",
                self.last_offset
            ));
        }
        self.last_offset = offset;
        if len == 0 {
            return Ok(());
        }
        let start = offset - offset % BLOCK;
        let end = end.div_ceil(BLOCK).saturating_mul(BLOCK).min(self.size);
        self.add(start, end);
        if self.extents.len() > self.max {
            self.coarsen();
        }
        Ok(())
    }

    fn add(&mut self, start: u64, end: u64) {
        if let Some(last) = self.extents.last_mut() {
            let last_end = last.0 + last.1;
            if start <= last_end || start - last_end < self.min_hole {
                last.1 = end.max(last_end) - last.0;
                return;
            }
        }
        self.extents.push((start, end - start));
    }

    /// Fills ever larger holes until at most three quarters of the bound are used, so that the
    /// next ranges do not trigger this again at once.
    fn coarsen(&mut self) {
        let target = (self.max - self.max / 4).max(1);
        while self.extents.len() > target {
            self.min_hole = self.min_hole.saturating_mul(2).max(4096);
            let extents = std::mem::take(&mut self.extents);
            for (offset, len) in extents {
                self.add(offset, offset + len);
            }
        }
    }

    pub fn finish(self) -> SparseMap {
        SparseMap {
            size: self.size,
            extents: self.extents,
        }
    }
}

/// `rbd diff` lists its ranges straight into the bounded map.
impl ExtentSink for SparseMapBuilder {
    fn push(&mut self, offset: u64, len: u64) -> Result<(), String> {
        SparseMapBuilder::push(self, offset, len)
    }
}

/// What goes into the tar header besides the data.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// The member's name (any length: a long one gets a GNU long-name entry).
    pub name: &'a str,
    /// The member's full length (for a sparse member, the image's size).
    pub size: u64,
    pub mtime: DateTime<Utc>,
    /// The ranges the data stream holds; `None` (or a map without holes): all of it, as a plain
    /// member.
    pub sparse: Option<&'a SparseMap>,
}

/// Writes a compressed tar archive holding one member to `file`, and returns the SHA-256 of the
/// file's bytes. `data` yields the member's data: with a sparse map, the bytes of its ranges one
/// after the other; else all `member.size` bytes. A stream shorter or longer than that fails.
pub fn write_archive(
    data: &mut dyn Read,
    member: &Member,
    compressor: &Compressor,
    file: &mut File,
) -> io::Result<String> {
    let meta = file.metadata()?;
    // The parallel compressor's writer thread needs a file of its own: a second handle on it.
    let sink = Hashing::new(BufWriter::with_capacity(COPY_CHUNK, file.try_clone()?));
    let owner = Owner {
        uid: meta.uid(),
        gid: meta.gid(),
    };
    let mut sink = write_archive_into(data, member, compressor, sink, owner)?;
    sink.flush()?;
    Ok(sink.hex_digest())
}

/// Who the archive's member says owns it (GNU tar restores it when run as root).
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// The user and group this process writes as: the owner a local file would have.
    pub fn this_process() -> Owner {
        Owner {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        }
    }
}

/// [`write_archive`] into any byte sink (an encrypting writer, say); returns the sink, for its
/// owner to finish.
pub fn write_archive_into<W: Write + Send + 'static>(
    data: &mut dyn Read,
    member: &Member,
    compressor: &Compressor,
    sink: W,
    owner: Owner,
) -> io::Result<W> {
    let sparse = member.sparse.filter(|map| map.has_holes());
    if let Some(map) = sparse {
        if map.size() != member.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the sparse map is of {} bytes, the member of {}",
                    map.size(),
                    member.size
                ),
            ));
        }
    }
    let stored = sparse.map_or(member.size, SparseMap::data_bytes);
    let mut out = Encoder::new(sink, compressor)?;
    let written = (|| {
        out.write_all(&headers(member, sparse, stored, owner.uid, owner.gid))?;
        let mut exact = ExactLength {
            inner: data,
            expected: stored,
            seen: 0,
        };
        copy(&mut exact, &mut out)?;
        let padding = (BLOCK - stored % BLOCK) % BLOCK;
        // The data's padding, then the two empty blocks that end an archive.
        out.write_all(&vec![
            0u8;
            usize::try_from(padding + 2 * BLOCK).unwrap_or(0)
        ])
    })();
    match written {
        Ok(()) => out.finish(),
        Err(err) => {
            out.abandon();
            Err(err)
        }
    }
}

/// The header blocks before the member's data: a GNU long-name entry when the name does not fit,
/// the member's header, and for a sparse member the extension headers its map needs.
fn headers(
    member: &Member,
    sparse: Option<&SparseMap>,
    stored: u64,
    uid: u32,
    gid: u32,
) -> Vec<u8> {
    let name = member.name.as_bytes();
    let mut blocks = Vec::new();
    let new_header = |kind: tar::EntryType, size: u64| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(0o600);
        header.set_mtime(u64::try_from(member.mtime.timestamp()).unwrap_or(0));
        header.set_uid(u64::from(uid));
        header.set_gid(u64::from(gid));
        header
    };
    let mut header;
    if name.len() > NAME_FIELD {
        // What GNU tar writes: a pseudo-member whose data is the name with a NUL after it.
        let mut long = new_header(tar::EntryType::GNULongName, name.len() as u64 + 1);
        long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        long.set_cksum();
        blocks.extend_from_slice(long.as_bytes());
        blocks.extend_from_slice(name);
        let padded = (name.len() + 1).div_ceil(512) * 512;
        blocks.resize(blocks.len() + padded - name.len(), 0);
    }
    match sparse {
        None => header = new_header(tar::EntryType::Regular, stored),
        Some(map) => {
            header = new_header(tar::EntryType::GNUSparse, stored);
            let entries = map.entries();
            let gnu = header.as_gnu_mut().expect("a GNU header");
            gnu.set_real_size(map.size());
            for (slot, &(offset, len)) in gnu.sparse.iter_mut().zip(&entries) {
                slot.set_offset(offset);
                slot.set_length(len);
            }
            gnu.set_is_extended(entries.len() > MAIN_ENTRIES);
        }
    }
    let field = name.len().min(NAME_FIELD);
    header.as_old_mut().name[..field].copy_from_slice(&name[..field]);
    header.set_cksum();
    blocks.extend_from_slice(header.as_bytes());
    if let Some(map) = sparse {
        let entries = map.entries();
        let rest = entries.get(MAIN_ENTRIES..).unwrap_or_default();
        let chunks: Vec<&[(u64, u64)]> = rest.chunks(EXT_ENTRIES).collect();
        for (index, chunk) in chunks.iter().enumerate() {
            let mut ext = tar::GnuExtSparseHeader::new();
            for (slot, &(offset, len)) in ext.sparse.iter_mut().zip(chunk.iter()) {
                slot.set_offset(offset);
                slot.set_length(len);
            }
            ext.set_is_extended(index + 1 < chunks.len());
            blocks.extend_from_slice(ext.as_bytes());
        }
    }
    blocks
}

/// One of the two compressors, writing into `W`.
struct Encoder<W: Write + Send + 'static> {
    inner: Inner<W>,
}

enum Inner<W: Write + Send + 'static> {
    Gzip(ParCompress<'static, Gzip, W>),
    Zstd(SeekableWriter<W>),
    /// After [`Encoder::finish`] or [`Encoder::abandon`].
    Done,
}

impl<W: Write + Send + 'static> Encoder<W> {
    fn new(sink: W, compressor: &Compressor) -> io::Result<Encoder<W>> {
        let threads = compressor.threads.max(1);
        let inner = match compressor.compression {
            Compression::Zstd => {
                let level = i32::try_from(compressor.level).unwrap_or(3);
                Inner::Zstd(SeekableWriter::new(sink, level, threads)?)
            }
            Compression::Gzip | Compression::None => {
                let builder = ParCompressBuilder::<Gzip>::new()
                    .num_threads(usize::try_from(threads).unwrap_or(1))
                    .and_then(|b| b.buffer_size(GZIP_BLOCK))
                    .map_err(io::Error::other)?
                    .compression_level(flate2::Compression::new(compressor.level.min(9)));
                Inner::Gzip(builder.from_writer(sink))
            }
        };
        Ok(Encoder { inner })
    }

    /// Ends the stream (the gzip trailer, the last zstd frame and the seek table) and returns
    /// the sink.
    fn finish(&mut self) -> io::Result<W> {
        match std::mem::replace(&mut self.inner, Inner::Done) {
            Inner::Gzip(mut gz) => gz.finish().map_err(gzp_error),
            Inner::Zstd(zstd) => zstd.finish(),
            Inner::Done => Err(io::Error::other("the compressor was already finished")),
        }
    }

    /// Stops after a failure. gzp must be finished explicitly: dropping it unfinished finishes it
    /// and panics if that fails.
    fn abandon(&mut self) {
        if let Inner::Gzip(mut gz) = std::mem::replace(&mut self.inner, Inner::Done) {
            let _ = gz.finish();
        }
    }
}

impl<W: Write + Send + 'static> Drop for Encoder<W> {
    fn drop(&mut self) {
        self.abandon();
    }
}

fn gzp_error(err: gzp::GzpError) -> io::Error {
    match err {
        gzp::GzpError::Io(err) => err,
        other => io::Error::other(other),
    }
}

impl<W: Write + Send + 'static> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Gzip(gz) => gz.write(buf),
            Inner::Zstd(zstd) => zstd.write(buf),
            Inner::Done => Err(io::Error::other("the compressor was already finished")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Gzip(gz) => gz.flush(),
            Inner::Zstd(zstd) => zstd.flush(),
            Inner::Done => Ok(()),
        }
    }
}

/// Copies in bounded chunks.
fn copy(src: &mut impl Read, dst: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Fails unless the stream yields exactly the announced number of bytes: a tar member's size is
/// written before its data, so a short or long export must not pass unnoticed.
pub(crate) struct ExactLength<R> {
    pub(crate) inner: R,
    pub(crate) expected: u64,
    pub(crate) seen: u64,
}

impl<R: Read> Read for ExactLength<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if self.seen > self.expected || (n == 0 && !buf.is_empty() && self.seen != self.expected) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the export stream had {} bytes where {} were expected",
                    if n == 0 {
                        self.seen.to_string()
                    } else {
                        format!("more than {}", self.expected)
                    },
                    self.expected
                ),
            ));
        }
        Ok(n)
    }
}

/// The data of a sparse map's ranges, read from a stream of the whole member (an `rbd export`):
/// the bytes between the ranges are read and dropped, and must be zeros; the stream must have
/// exactly the map's size. A nonzero byte in a hole fails the stream: the map (which the
/// archive's header has already recorded) was wrong, and storing it would lose data.
pub struct DataOfExtents<'m, R> {
    inner: R,
    map: &'m SparseMap,
    /// Where the whole stream is.
    pos: u64,
    /// The range being read or, between ranges, the next one.
    next: usize,
    skip: Vec<u8>,
}

impl<'m, R: Read> DataOfExtents<'m, R> {
    pub fn new(inner: R, map: &'m SparseMap) -> DataOfExtents<'m, R> {
        DataOfExtents {
            inner,
            map,
            pos: 0,
            next: 0,
            skip: Vec::new(),
        }
    }

    /// Reads up to `len` bytes of a hole and checks they are zeros; false at the end of the stream.
    fn skip_hole(&mut self, len: u64) -> io::Result<bool> {
        if self.skip.is_empty() {
            self.skip = vec![0u8; COPY_CHUNK];
        }
        let want = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(self.skip.len());
        let n = loop {
            match self.inner.read(&mut self.skip[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if let Some(at) = first_nonzero(&self.skip[..n]) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the image has data at byte {} where its allocation map (rbd diff) said it \
                     has none",
                    self.pos + at as u64
                ),
            ));
        }
        self.pos += n as u64;
        Ok(n > 0)
    }

    fn short(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the export stream had {} bytes where {} were expected",
                self.pos,
                self.map.size()
            ),
        )
    }
}

/// Where the first nonzero byte is, if any. OR-ing each 4 KiB together first is what compilers
/// turn into wide vector instructions: holes are checked at memory speed.
fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    const STEP: usize = 4096;
    bytes.chunks(STEP).enumerate().find_map(|(index, chunk)| {
        if chunk.iter().fold(0u8, |acc, &b| acc | b) == 0 {
            return None;
        }
        chunk
            .iter()
            .position(|&b| b != 0)
            .map(|at| index * STEP + at)
    })
}

impl<R: Read> Read for DataOfExtents<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(&(offset, len)) = self.map.extents.get(self.next) else {
                // Past the last range: the rest is a hole to the end, then the stream must end.
                if self.pos < self.map.size() {
                    if !self.skip_hole(self.map.size() - self.pos)? {
                        return Err(self.short());
                    }
                    continue;
                }
                let mut probe = [0u8; 1];
                return match self.inner.read(&mut probe)? {
                    0 => Ok(0),
                    _ => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the export stream had more than the {} bytes expected",
                            self.map.size()
                        ),
                    )),
                };
            };
            if self.pos < offset {
                if !self.skip_hole(offset - self.pos)? {
                    return Err(self.short());
                }
                continue;
            }
            let left = offset + len - self.pos;
            if left == 0 {
                self.next += 1;
                continue;
            }
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let n = self.inner.read(&mut buf[..want])?;
            if n == 0 {
                return Err(self.short());
            }
            self.pos += n as u64;
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::door::PendingFile;
    use crate::folder::read::Limit;
    use crate::test_fixtures::read_raw_at;

    fn gzip(threads: u32) -> Compressor {
        Compressor::new(Compression::Gzip, None, Some(threads)).unwrap()
    }

    fn zstd() -> Compressor {
        Compressor::new(Compression::Zstd, Some(5), Some(2)).unwrap()
    }

    /// An image of `size` bytes holding `fill` over each of `data` (its other bytes zero).
    fn image(size: usize, data: &[(usize, usize)]) -> Vec<u8> {
        let mut bytes = vec![0u8; size];
        for (index, &(offset, len)) in data.iter().enumerate() {
            for (i, b) in bytes[offset..offset + len].iter_mut().enumerate() {
                *b = u8::try_from((i * 7 + index * 13) % 251 + 1).unwrap();
            }
        }
        bytes
    }

    fn map_of(size: usize, data: &[(usize, usize)]) -> SparseMap {
        let mut builder = SparseMapBuilder::new(size as u64, MAX_SPARSE_EXTENTS);
        for &(offset, len) in data {
            builder.push(offset as u64, len as u64).unwrap();
        }
        builder.finish()
    }

    /// Writes `bytes` as a (sparse, when `map` says so) member and reads it back with our reader.
    fn round_trip(
        bytes: &[u8],
        map: Option<&SparseMap>,
        compressor: &Compressor,
    ) -> (std::path::PathBuf, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("a{}", compressor.compression.suffix());
        let mut pending = PendingFile::create(dir.path(), &name).unwrap();
        let member = Member {
            name: "vm@BACKUPUTC20261126T000000.full",
            size: bytes.len() as u64,
            mtime: Utc::now(),
            sparse: map,
        };
        let digest = match map {
            Some(map) => {
                let mut data = DataOfExtents::new(bytes, map);
                write_archive(&mut data, &member, compressor, pending.file()).unwrap()
            }
            None => write_archive(&mut &bytes[..], &member, compressor, pending.file()).unwrap(),
        };
        pending.commit().unwrap();
        let path = dir.path().join(&name);
        let (back, facts) = read_raw_at(&path, compressor.compression, &Limit::absolute(), |raw| {
            let mut out = Vec::new();
            raw.read_to_end(&mut out)?;
            Ok(out)
        })
        .unwrap();
        assert!(back == bytes, "the member reads back differently");
        assert_eq!(facts.sha256, digest);
        assert_eq!(facts.raw_bytes, bytes.len() as u64);
        (path, dir)
    }

    #[test]
    fn sparse_members_round_trip_in_every_shape() {
        let k = 1024;
        type Case = (&'static str, usize, Vec<(usize, usize)>);
        let cases: Vec<Case> = vec![
            (
                "ends in a hole",
                1 << 20,
                vec![(4 * k, 8 * k), (300 * k, 5)],
            ),
            ("all hole", 1 << 20, vec![]),
            ("no holes", 300 * k + 7, vec![(0, 300 * k + 7)]),
            ("ends in data", 1 << 20, vec![(0, 1), ((1 << 20) - 3, 3)]),
            (
                "ranges off the 512-byte grid",
                100 * k + 300,
                vec![(1, 1), (700, 1000), (5000, 3), (100 * k + 299, 1)],
            ),
            (
                "more ranges than the main header holds",
                2 << 20,
                (0..100).map(|i| (i * 20 * k + 100, 600)).collect(),
            ),
            ("empty image", 0, vec![]),
        ];
        for (what, size, data) in cases {
            let bytes = image(size, &data);
            let map = map_of(size, &data);
            for compressor in [gzip(1), gzip(3), zstd()] {
                let (path, dir) = round_trip(&bytes, Some(&map), &compressor);
                // GNU tar extracts the same bytes.
                let out = dir.path().join("out");
                std::fs::create_dir(&out).unwrap();
                let flag = match compressor.compression {
                    Compression::Zstd => "--zstd",
                    _ => "--gzip",
                };
                crate::cluster::process::CommandLine::new("tar")
                    .args([
                        "-C".as_ref(),
                        out.as_os_str(),
                        flag.as_ref(),
                        "-xf".as_ref(),
                    ])
                    .arg(&path)
                    .run()
                    .unwrap();
                let extracted = std::fs::read(out.join("vm@BACKUPUTC20261126T000000.full"));
                assert!(
                    extracted.unwrap() == bytes,
                    "{what}: GNU tar extracts other bytes"
                );
                // Small: the holes were not compressed as zeros (1 MiB of zeros is ~1 KiB).
                let on_disk = std::fs::metadata(&path).unwrap().len();
                if map.has_holes() && size >= 1 << 20 {
                    assert!(
                        on_disk < 2 * map.data_bytes() + 2048,
                        "{what}: {on_disk} bytes"
                    );
                }
            }
        }
    }

    #[test]
    fn maps_are_aligned_merged_and_bounded() {
        let map = map_of(
            10_000,
            &[(1, 1), (100, 10), (600, 10), (1024, 1), (9_999, 1)],
        );
        assert_eq!(map.extents(), [(0, 1536), (9_728, 272)]);
        assert_eq!(map.entries(), [(0, 1536), (9_728, 272)]);
        assert_eq!(map_of(4096, &[(0, 512)]).entries(), [(0, 512), (4096, 0)]);
        assert_eq!(map_of(4096, &[]).entries(), [(4096, 0)]);
        assert!(!SparseMap::whole(5).has_holes());
        let mut builder = SparseMapBuilder::new(100, 8);
        assert!(builder
            .push(50, 51)
            .unwrap_err()
            .contains("past the image's end"));
        builder.push(10, 1).unwrap();
        assert!(builder.push(5, 1).unwrap_err().contains("out of order"));
        // 10,000 ranges one block apart, bounded to 100: holes get filled, nothing is lost.
        let mut builder = SparseMapBuilder::new(1 << 34, 100);
        for i in 0..10_000u64 {
            builder.push(i * 1024 * 1024, 512).unwrap();
        }
        let map = builder.finish();
        assert!(map.extents().len() <= 100, "{}", map.extents().len());
        assert_eq!(map.extents()[0].0, 0);
        let (last_offset, last_len) = *map.extents().last().unwrap();
        assert_eq!(last_offset + last_len, 9_999 * 1024 * 1024 + 512);
    }

    #[test]
    fn data_in_a_hole_or_a_wrong_length_fails_the_archive() {
        let bytes = image(64 * 1024, &[(0, 512)]);
        let map = map_of(bytes.len(), &[(0, 512)]);
        let mut wrong = bytes.clone();
        wrong[40_000] = 9;
        let longer = [bytes.clone(), vec![0u8; 10]].concat();
        let shorter = bytes[..60_000].to_vec();
        for (what, stream, expected) in [
            ("data in a hole", wrong, "has data at byte 40000"),
            ("longer", longer, "more than the 65536 bytes"),
            ("shorter", shorter, "had 60000 bytes where 65536"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut pending = PendingFile::create(dir.path(), "a.tar.gz").unwrap();
            let member = Member {
                name: "m",
                size: map.size(),
                mtime: Utc::now(),
                sparse: Some(&map),
            };
            let mut data = DataOfExtents::new(&stream[..], &map);
            let err = write_archive(&mut data, &member, &gzip(2), pending.file()).unwrap_err();
            assert!(err.to_string().contains(expected), "{what}: {err}");
        }
    }

    #[test]
    fn long_member_names_survive() {
        let name = format!("{}@BACKUPUTC20261126T000000.full", "v".repeat(150));
        let dir = tempfile::tempdir().unwrap();
        let mut pending = PendingFile::create(dir.path(), "a.tar.zst").unwrap();
        let bytes = image(8192, &[(4096, 100)]);
        let map = map_of(8192, &[(4096, 100)]);
        let member = Member {
            name: &name,
            size: 8192,
            mtime: Utc::now(),
            sparse: Some(&map),
        };
        let mut data = DataOfExtents::new(&bytes[..], &map);
        write_archive(&mut data, &member, &zstd(), pending.file()).unwrap();
        pending.commit().unwrap();
        let ((), facts) = read_raw_at(
            &dir.path().join("a.tar.zst"),
            Compression::Zstd,
            &Limit::absolute(),
            |raw| {
                io::copy(raw, &mut io::sink())?;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(facts.member, Some(name));
    }

    #[test]
    fn gzip_output_is_one_standard_member_whatever_the_threads() {
        // Larger than many blocks, partly compressible.
        let bytes: Vec<u8> = (0..3_000_000u32)
            .map(|i| if i % 3 == 0 { (i % 251) as u8 } else { b'a' })
            .collect();
        for threads in [1, 4] {
            let (path, _dir) = round_trip(&bytes, None, &gzip(threads));
            let archive = std::fs::read(&path).unwrap();
            // One member: a single-member decoder consumes every byte of the file.
            let mut decoder = flate2::bufread::GzDecoder::new(&archive[..]);
            io::copy(&mut decoder, &mut io::sink()).unwrap();
            assert!(decoder.into_inner().is_empty(), "{threads} threads");
        }
    }

    #[test]
    fn levels_and_threads_have_their_defaults() {
        let gzip = Compressor::new(Compression::Gzip, None, None).unwrap();
        assert_eq!(gzip.level, 6);
        assert!(gzip.threads >= 1);
        assert_eq!(
            Compressor::new(Compression::Zstd, None, Some(3)),
            Some(Compressor {
                compression: Compression::Zstd,
                level: 3,
                threads: 3
            })
        );
        assert_eq!(Compressor::new(Compression::None, Some(5), None), None);
    }
}
