//! The one member of a backup archive, read from the decompressed tar stream by our own header
//! walk (the `tar` crate only lends its header layouts).
//!
//! Why not the crate's reader: it keeps a GNU sparse member as a list of pieces (a run of zeros,
//! then a run of data, per range) and drops the first piece of that list after each one is read,
//! which moves the whole rest of the list: time that grows with the square of the ranges. A
//! hostile header of a few KiB of ranges then costs minutes. Here a sparse map is read into one
//! list, checked as it is read, and walked with an index: linear in the ranges. It holds at most
//! [`MAX_SPARSE_EXTENTS`] ranges (and the empty one that marks the end), what this tool's writer
//! keeps an image to; a map with more is refused before its data.
//!
//! What is understood: GNU long names, PAX `path` and `size` records, regular members and GNU
//! sparse members (the old GNU format that GNU tar writes with `S`). Every header's checksum is
//! checked. The caller bounds how much is read before the data (long names, PAX records and the
//! sparse map's extension headers are kept in memory).

use std::borrow::Borrow;
use std::io::{self, Read};

use tar::{EntryType, GnuExtSparseHeader, Header};

use crate::folder::format::archive::MAX_SPARSE_EXTENTS;
use crate::output::escaped;

const BLOCK: u64 = 512;
/// A header block, as a buffer.
type Block = [u8; 512];
/// Map entries in a sparse map: the ranges, and the empty one GNU tar (and our writer) adds at
/// the end when the member ends in a hole.
const MAX_MAP_ENTRIES: usize = MAX_SPARSE_EXTENTS + 1;

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A member's headers: what it is called, what it is, and how its data is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHeader {
    /// From a GNU long name, a PAX `path` record or the header itself.
    pub name: String,
    pub kind: EntryType,
    /// The member's length: for a sparse member, the length of the file it stands for.
    pub size: u64,
    /// Bytes of data stored in the archive (before the padding to a whole block).
    stored: u64,
    /// For a sparse member, the ranges of the file the stored data fills, as (offset, length),
    /// in order; zeros everywhere else.
    extents: Option<Vec<(u64, u64)>>,
}

/// Reads one 512-byte block; `false` at the end of the stream before any of it.
fn read_block(archive: &mut impl Read, block: &mut Block) -> io::Result<bool> {
    let mut filled = 0;
    while filled < block.len() {
        match archive.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(invalid("the archive ends inside a header".to_string())),
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(true)
}

fn padding(len: u64) -> u64 {
    (BLOCK - len % BLOCK) % BLOCK
}

/// Reads an extension member's data (a long name, PAX records) and its padding.
fn read_data(archive: &mut impl Read, len: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    // Grows with what is actually there: the caller's bound stops a huge declared length.
    archive.take(len).read_to_end(&mut data)?;
    if (data.len() as u64) < len {
        return Err(invalid("the archive ends inside a header".to_string()));
    }
    skip(archive, padding(len))?;
    Ok(data)
}

fn skip(archive: &mut impl Read, len: u64) -> io::Result<()> {
    let skipped = io::copy(&mut archive.take(len), &mut io::sink())?;
    if skipped < len {
        return Err(invalid("the archive ends inside its member".to_string()));
    }
    Ok(())
}

/// Reads the headers of the next member, up to the start of its data. `None` at the end of the
/// archive: an empty block, or the end of the stream.
pub fn next_member(archive: &mut impl Read) -> io::Result<Option<MemberHeader>> {
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax_path: Option<Vec<u8>> = None;
    let mut pax_size: Option<u64> = None;
    let mut header = Header::new_old();
    loop {
        if !read_block(archive, header.as_mut_bytes())? {
            if long_name.is_some() || pax_path.is_some() || pax_size.is_some() {
                return Err(invalid(
                    "the archive ends after headers describing a member".to_string(),
                ));
            }
            return Ok(None);
        }
        if header.as_bytes().iter().all(|&b| b == 0) {
            return Ok(None);
        }
        check_sum(&header)?;
        let kind = header.entry_type();
        let len = header.entry_size()?;
        if kind.is_gnu_longname() {
            let mut name = read_data(archive, len)?;
            while name.last() == Some(&0) {
                name.pop();
            }
            long_name = Some(name);
        } else if kind.is_gnu_longlink() {
            read_data(archive, len)?;
        } else if kind.is_pax_local_extensions() {
            for record in tar::PaxExtensions::new(&read_data(archive, len)?) {
                let record = record?;
                match record.key_bytes() {
                    b"path" => pax_path = Some(record.value_bytes().to_vec()),
                    b"size" => {
                        let size = record.value().ok().and_then(|v| v.parse().ok());
                        pax_size = Some(size.ok_or_else(|| {
                            invalid("a PAX size record is not a number".to_string())
                        })?);
                    }
                    _ => {}
                }
            }
        } else {
            let name = long_name
                .or(pax_path)
                .unwrap_or_else(|| header.path_bytes().into_owned());
            let name = String::from_utf8_lossy(&name).into_owned();
            let stored = pax_size.unwrap_or(len);
            if !kind.is_gnu_sparse() {
                return Ok(Some(MemberHeader {
                    name,
                    kind,
                    size: stored,
                    stored,
                    extents: None,
                }));
            }
            let (size, extents) = sparse_map(archive, &header, &name, stored)?;
            return Ok(Some(MemberHeader {
                name,
                kind,
                size,
                stored,
                extents: Some(extents),
            }));
        }
    }
}

/// The sum tar headers carry: every byte, with the checksum field itself counted as spaces.
fn check_sum(header: &Header) -> io::Result<()> {
    let bytes = header.as_bytes();
    let sum: u32 = bytes[..148]
        .iter()
        .chain(&bytes[156..])
        .map(|&b| u32::from(b))
        .sum::<u32>()
        + 8 * u32::from(b' ');
    if header.cksum()? != sum {
        return Err(invalid(
            "a tar header's checksum does not match".to_string(),
        ));
    }
    Ok(())
}

/// Reads a GNU sparse member's map (its header's entries, then its extension headers) and checks
/// it as it goes: ranges in order, the stored data filling them exactly, each range but the last
/// a whole number of blocks, ending at the member's length, and at most [`MAX_MAP_ENTRIES`]
/// entries. Returns the member's length and its ranges.
fn sparse_map(
    archive: &mut impl Read,
    header: &Header,
    name: &str,
    stored: u64,
) -> io::Result<(u64, Vec<(u64, u64)>)> {
    let gnu = header.as_gnu().ok_or_else(|| {
        invalid(format!(
            "the archive member {} is sparse but has no GNU header",
            escaped(name)
        ))
    })?;
    let mut map = Map {
        name,
        stored,
        extents: Vec::new(),
        entries: 0,
        end: 0,
        filled: 0,
    };
    for entry in &gnu.sparse {
        map.add(entry)?;
    }
    let mut extended = gnu.is_extended();
    let mut ext = GnuExtSparseHeader::new();
    while extended {
        if !read_block(archive, ext.as_mut_bytes())? {
            return Err(invalid("the archive ends inside a sparse map".to_string()));
        }
        for entry in &ext.sparse {
            map.add(entry)?;
        }
        extended = ext.is_extended();
    }
    let size = gnu.real_size()?;
    if map.end != size || map.filled != stored {
        return Err(invalid(format!(
            "the archive member {}'s sparse map covers {} of {} bytes with {} bytes of data \
             stored as {}",
            escaped(name),
            map.end,
            size,
            map.filled,
            stored
        )));
    }
    Ok((size, map.extents))
}

/// A sparse map being read.
struct Map<'a> {
    name: &'a str,
    stored: u64,
    /// The ranges with data.
    extents: Vec<(u64, u64)>,
    /// Entries read, empty ranges included.
    entries: usize,
    /// Where the last range ends.
    end: u64,
    /// Data bytes the ranges so far hold.
    filled: u64,
}

impl Map<'_> {
    fn add(&mut self, entry: &tar::GnuSparseHeader) -> io::Result<()> {
        if entry.is_empty() {
            return Ok(());
        }
        self.entries += 1;
        if self.entries > MAX_MAP_ENTRIES {
            return Err(invalid(format!(
                "the archive member {} has a sparse map of more than {} ranges, more than this \
                 tool writes; it is not read",
                escaped(self.name),
                MAX_SPARSE_EXTENTS
            )));
        }
        let (offset, len) = (entry.offset()?, entry.length()?);
        let end = offset.checked_add(len);
        let filled = self.filled.checked_add(len);
        let problem = if offset < self.end {
            "ranges out of order or overlapping"
        } else if len > 0 && !self.filled.is_multiple_of(BLOCK) {
            "a range that is not the last is not a whole number of blocks"
        } else if end.is_none() || filled.is_none_or(|filled| filled > self.stored) {
            "ranges holding more data than the member stores"
        } else {
            ""
        };
        if !problem.is_empty() {
            return Err(invalid(format!(
                "the archive member {}'s sparse map has {problem}",
                escaped(self.name)
            )));
        }
        self.end = end.unwrap_or(u64::MAX);
        self.filled = filled.unwrap_or(u64::MAX);
        if len > 0 {
            self.extents.push((offset, len));
        }
        Ok(())
    }
}

impl MemberHeader {
    /// For a sparse member, the ranges of the file its stored data fills, in order, as (offset,
    /// length); `None` for a member stored whole.
    pub fn extents(&self) -> Option<&[(u64, u64)]> {
        self.extents.as_deref()
    }

    /// The member's data, read from `archive` (just after this header): `size` bytes, the holes
    /// of a sparse member as zeros.
    pub fn data<R: Read>(&self, archive: R) -> MemberData<&MemberHeader, R> {
        MemberData::new(self, archive)
    }

    /// [`MemberHeader::data`], the reader owning the header.
    pub fn into_data<R: Read>(self, archive: R) -> MemberData<MemberHeader, R> {
        MemberData::new(self, archive)
    }
}

/// A member's data; [`MemberData::finish`] reads the padding after it.
pub struct MemberData<H, R> {
    archive: R,
    header: H,
    /// Where in the member's data (as the file it stands for) the reader is.
    pos: u64,
    /// The sparse range being read or, between ranges, the next one.
    next: usize,
    /// Stored bytes read from the archive.
    taken: u64,
}

impl<H: Borrow<MemberHeader>, R: Read> MemberData<H, R> {
    fn new(header: H, archive: R) -> MemberData<H, R> {
        MemberData {
            archive,
            header,
            pos: 0,
            next: 0,
            taken: 0,
        }
    }

    /// Reads up to `want` stored bytes from the archive.
    fn take(&mut self, buf: &mut [u8], want: u64) -> io::Result<usize> {
        let want = usize::try_from(want).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            // Not asked of the decompressor: zstd's fails a read into no room.
            return Ok(0);
        }
        let n = self.archive.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the archive ends inside its member {}, after {} of its {} bytes",
                    escaped(&self.header.borrow().name),
                    self.pos,
                    self.header.borrow().size
                ),
            ));
        }
        self.taken += n as u64;
        self.pos += n as u64;
        Ok(n)
    }

    fn zeros(&mut self, buf: &mut [u8], want: u64) -> usize {
        let n = usize::try_from(want).unwrap_or(usize::MAX).min(buf.len());
        buf[..n].fill(0);
        self.pos += n as u64;
        n
    }

    /// Reads what is left of the member and the padding after it; returns the archive, at the
    /// next header.
    pub fn finish(mut self) -> io::Result<R> {
        io::copy(&mut self, &mut io::sink())?;
        let stored = self.header.borrow().stored;
        let rest = stored - self.taken + padding(stored);
        skip(&mut self.archive, rest)?;
        Ok(self.archive)
    }
}

impl<H: Borrow<MemberHeader>, R: Read> Read for MemberData<H, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let size = self.header.borrow().size;
        let Some(extents) = &self.header.borrow().extents else {
            return self.take(buf, size - self.pos);
        };
        // Each call moves on through the ranges it has finished: linear in the map.
        while let Some(&(offset, len)) = extents.get(self.next) {
            if self.pos < offset {
                return Ok(self.zeros(buf, offset - self.pos));
            }
            if self.pos < offset + len {
                return self.take(buf, offset + len - self.pos);
            }
            self.next += 1;
        }
        Ok(self.zeros(buf, size - self.pos))
    }
}

/// A tar stream whose one member, `member`, is GNU sparse with the given map entries (offset,
/// length), `data` as its stored bytes, and `size` bytes long. For tests only: hostile maps.
#[cfg(any(test, feature = "test-support"))]
pub fn sparse_tar(member: &str, entries: &[(u64, u64)], size: u64, data: &[u8]) -> Vec<u8> {
    let mut header = Header::new_gnu();
    header.set_path(member).unwrap();
    header.set_mode(0o600);
    header.set_entry_type(EntryType::GNUSparse);
    header.set_size(data.len() as u64);
    let gnu = header.as_gnu_mut().unwrap();
    gnu.set_real_size(size);
    let (main, rest) = entries.split_at(entries.len().min(4));
    for (slot, &(offset, len)) in gnu.sparse.iter_mut().zip(main) {
        slot.set_offset(offset);
        slot.set_length(len);
    }
    gnu.set_is_extended(!rest.is_empty());
    header.set_cksum();
    let mut tar = header.as_bytes().to_vec();
    let chunks: Vec<_> = rest.chunks(21).collect();
    for (index, chunk) in chunks.iter().enumerate() {
        let mut ext = GnuExtSparseHeader::new();
        for (slot, &(offset, len)) in ext.sparse.iter_mut().zip(*chunk) {
            slot.set_offset(offset);
            slot.set_length(len);
        }
        ext.set_is_extended(index + 1 < chunks.len());
        tar.extend_from_slice(ext.as_bytes());
    }
    tar.extend_from_slice(data);
    tar.resize(
        tar.len() + data.len().next_multiple_of(512) - data.len() + 1024,
        0,
    );
    tar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_member(tar: &[u8]) -> io::Result<(MemberHeader, Vec<u8>)> {
        let mut archive = tar;
        let header = next_member(&mut archive)?.expect("a member");
        let mut data = header.data(&mut archive);
        let mut out = Vec::new();
        data.read_to_end(&mut out)?;
        let rest = data.finish()?;
        assert_eq!(rest.len(), 1024, "the reader stops at the next header");
        Ok((header, out))
    }

    #[test]
    fn sparse_members_read_as_the_whole_file() {
        let data: Vec<u8> = (0..1024 + 3).map(|i| (i % 251) as u8 + 1).collect();
        let tar = sparse_tar("m", &[(512, 1024), (4096, 3), (5000, 0)], 5000, &data);
        let (header, out) = read_member(&tar).unwrap();
        assert_eq!((header.name.as_str(), header.size), ("m", 5000));
        let mut expected = vec![0u8; 5000];
        expected[512..1536].copy_from_slice(&data[..1024]);
        expected[4096..4099].copy_from_slice(&data[1024..]);
        assert!(out == expected, "the sparse member reads back differently");
    }

    #[test]
    fn a_huge_sparse_map_is_read_in_linear_time_and_one_past_the_cap_is_refused() {
        // 200,000 ranges one byte apart, all empty but the last, in about 4.5 MiB of headers:
        // the `tar` crate's reader took minutes over such a map.
        let count = 200_000u64;
        let mut entries: Vec<(u64, u64)> = (0..count - 1).map(|i| (i, 0)).collect();
        entries.push((count - 1, 1));
        let tar = sparse_tar("m", &entries, count, &[7]);
        let started = std::time::Instant::now();
        let (_, out) = read_member(&tar).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(out.len() as u64, count);
        assert_eq!(out[..out.len() - 1].iter().filter(|&&b| b != 0).count(), 0);
        assert_eq!(out.last(), Some(&7));
        // The cap: as many entries as the writer writes is read, one more is refused.
        let most = MAX_MAP_ENTRIES as u64;
        let at_cap: Vec<(u64, u64)> = (0..most).map(|i| (i, 0)).collect();
        read_member(&sparse_tar("m", &at_cap, most - 1, &[])).unwrap();
        let over: Vec<(u64, u64)> = (0..=most).map(|i| (i, 0)).collect();
        let err = read_member(&sparse_tar("m", &over, most, &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the archive member m has a sparse map of more than 262144 ranges, more than this \
             tool writes; it is not read"
        );
    }

    #[test]
    fn inconsistent_sparse_maps_are_refused() {
        let block = vec![1u8; 512];
        for (what, entries, size, data, problem) in [
            (
                "out of order",
                vec![(1024, 512), (0, 0)],
                2048,
                &block[..],
                "out of order",
            ),
            (
                "a short range before another",
                vec![(0, 100), (1024, 412), (2048, 0)],
                2048,
                &block[..],
                "not a whole number of blocks",
            ),
            (
                "more data than stored",
                vec![(0, 1024), (2048, 0)],
                2048,
                &block[..],
                "more data than the member stores",
            ),
            (
                "less data than stored",
                vec![(0, 100), (2048, 0)],
                2048,
                &block[..],
                "with 100 bytes of data stored as 512",
            ),
            (
                "not reaching the end",
                vec![(0, 512)],
                2048,
                &block[..],
                "covers 512 of 2048 bytes",
            ),
        ] {
            let err = read_member(&sparse_tar("m", &entries, size, data)).unwrap_err();
            assert!(err.to_string().contains(problem), "{what}: {err}");
        }
    }

    #[test]
    fn long_and_pax_names_and_damaged_headers() {
        let mut tar = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut tar);
            let mut header = Header::new_gnu();
            header.set_size(3);
            header.set_mode(0o600);
            let name = "d/".repeat(80) + "member";
            builder
                .append_data(&mut header, &name, &b"abc"[..])
                .unwrap();
            builder.finish().unwrap();
        }
        let (header, out) = read_member(&tar).unwrap();
        assert_eq!(header.name, "d/".repeat(80) + "member");
        assert_eq!(out, b"abc");
        let mut pax = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut pax);
            builder
                .append_pax_extensions([("path", &b"from/pax"[..])])
                .unwrap();
            let mut header = Header::new_ustar();
            header.set_size(2);
            header.set_path("short").unwrap();
            header.set_cksum();
            builder.append(&header, &b"xy"[..]).unwrap();
            builder.finish().unwrap();
        }
        let (header, out) = read_member(&pax).unwrap();
        assert_eq!((header.name.as_str(), &out[..]), ("from/pax", &b"xy"[..]));
        let mut damaged = tar.clone();
        damaged[10] ^= 1;
        let err = next_member(&mut &damaged[..]).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        let err = next_member(&mut &tar[..700]).unwrap_err();
        assert!(err.to_string().contains("the archive ends inside"), "{err}");
        assert_eq!(next_member(&mut &[0u8; 1024][..]).unwrap(), None);
        assert_eq!(next_member(&mut &[][..]).unwrap(), None);
    }
}
