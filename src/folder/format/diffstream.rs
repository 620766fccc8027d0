//! The `rbd diff v1` stream format as produced by `rbd export-diff`: a strict
//! streaming reader that validates while it reads. Restores and verify read
//! every diff through it ([`crate::folder::format::checked_diff`], [`crate::folder::format::rebuild`], which
//! replays diffs onto a sparse local file).
//!
//! For tests only (unit tests, and the integration tests through the
//! `test-support` feature): a writer that emits streams byte-identical to what
//! rbd writes. Unit tests also have `validate`, which reads a whole stream, and
//! `apply_to_file`, a plain applier the sparse rebuild is compared with.
//!
//! Everything here works in bounded memory: payloads are never held whole, only
//! passed through fixed-size chunks, so multi-gigabyte diffs cost the same as
//! tiny ones.
//!
//! The format carries no checksums and no per-record lengths, so a reader that
//! tolerated an unexpected byte could silently turn corruption into garbage
//! writes. The reader therefore refuses anything it does not fully understand
//! and reports the byte offset at which it gave up.

#[cfg(any(test, feature = "test-support"))]
use std::io::Write;
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};

/// The exact first twelve bytes of every v1 stream.
pub const BANNER: &[u8; 12] = b"rbd diff v1\n";

/// Longest snapshot name accepted; matches the limit rbd applies on import, so
/// anything we accept, rbd will accept too.
pub const MAX_NAME_LEN: u32 = 4096;

/// Payloads move through buffers of this size when we allocate one.
#[cfg(any(test, feature = "test-support"))]
const CHUNK: usize = 1 << 20;

/// Skipping unread payload uses a stack buffer, so it stays smaller than
/// `CHUNK` to be safe on threads with small stacks.
const SKIP_CHUNK: usize = 64 << 10;

const TAG_FROM_SNAP: u8 = b'f';
const TAG_TO_SNAP: u8 = b't';
const TAG_SIZE: u8 = b's';
const TAG_WRITE: u8 = b'w';
const TAG_ZERO: u8 = b'z';
const TAG_END: u8 = b'e';

/// The header records of a v1 stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffHeader {
    /// Base snapshot; `None` means the diff starts from an empty image.
    pub from_snap: Option<String>,
    /// End snapshot; `None` means the diff runs to the image head.
    pub to_snap: Option<String>,
    /// Image size at the end point, in bytes.
    pub size: u64,
}

/// One data record. For `Write`, the payload follows and is read with
/// [`DiffReader::read_data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Write { offset: u64, length: u64 },
    Zero { offset: u64, length: u64 },
}

/// Totals gathered by `validate`.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffSummary {
    /// Number of `w` and `z` records.
    pub records: u64,
    /// Sum of the lengths of all `w` records.
    pub write_bytes: u64,
    /// Sum of the lengths of all `z` records.
    pub zero_bytes: u64,
    /// Length of the whole stream, banner to `e` inclusive.
    pub stream_bytes: u64,
}

/// Why a stream was rejected. `at` is a byte offset from the start of the
/// stream: for truncation, where the data ran out; for everything else, the
/// position of the offending record's tag byte (or, for the banner, of the
/// first wrong byte).
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("not an `rbd diff v1` stream: banner differs at byte {at}")]
    BadBanner { at: u64 },
    #[error("stream ends at byte {at} while reading {while_reading}")]
    UnexpectedEof {
        at: u64,
        while_reading: &'static str,
    },
    #[error("unknown tag byte {tag:#04x} at byte {at}")]
    UnknownTag { at: u64, tag: u8 },
    #[error("second '{tag}' header record at byte {at}")]
    DuplicateHeader { at: u64, tag: char },
    #[error("header record '{tag}' at byte {at} comes after data records")]
    HeaderAfterData { at: u64, tag: char },
    #[error("record at byte {at} comes before any image size ('s') record")]
    MissingSize { at: u64 },
    #[error("snapshot name in record at byte {at} is {length} bytes (limit {limit})", limit = MAX_NAME_LEN)]
    NameTooLong { at: u64, length: u32 },
    #[error("snapshot name in record at byte {at} is not valid UTF-8")]
    BadName { at: u64 },
    #[error("record at byte {at} has zero length (offset {offset})")]
    ZeroLength { at: u64, offset: u64 },
    #[error("record at byte {at} starts at offset {offset}, before the previous extent (which ends at {previous_end})")]
    OutOfOrder {
        at: u64,
        offset: u64,
        previous_end: u64,
    },
    #[error("record at byte {at} starts at offset {offset}, inside the previous extent (which ends at {previous_end})")]
    Overlap {
        at: u64,
        offset: u64,
        previous_end: u64,
    },
    #[error("record at byte {at} covers {offset}+{length}, beyond the image size {size}")]
    BeyondSize {
        at: u64,
        offset: u64,
        length: u64,
        size: u64,
    },
    #[error("data follows the end record, at byte {at}")]
    TrailingData { at: u64 },
    #[error("the diff reader already reported an error and cannot continue")]
    Failed,
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between records.
    Records,
    /// Inside a `w` payload with this many bytes still unread.
    Payload { remaining: u64 },
    /// The `e` record has been read.
    Ended,
    /// An error was reported; our position in the stream is no longer known
    /// to be on a record boundary, so nothing more may be parsed.
    Failed,
}

/// Validating, streaming reader for `rbd diff v1`.
pub struct DiffReader<R: Read> {
    inner: R,
    pos: u64,
    header: DiffHeader,
    state: State,
    /// `new` has to consume the first non-header tag to know the header is
    /// over; it is kept here for `next_record`.
    pending_tag: Option<(u64, u8)>,
    /// End of the previous extent, `None` before the first data record.
    previous: Option<(u64, u64)>,
}

impl<R: Read> DiffReader<R> {
    /// Reads and checks the banner and header records. The first data (or end)
    /// record is not yet returned.
    pub fn new(inner: R) -> Result<Self, DiffError> {
        let mut reader = DiffReader {
            inner,
            pos: 0,
            header: DiffHeader {
                from_snap: None,
                to_snap: None,
                size: 0,
            },
            state: State::Records,
            pending_tag: None,
            previous: None,
        };
        reader.read_banner()?;
        reader.read_header()?;
        Ok(reader)
    }

    pub fn header(&self) -> &DiffHeader {
        &self.header
    }

    /// Bytes of the stream consumed so far: right after a `Write` record, where its payload
    /// starts (a mount serves the payload from there).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Returns the next data record, or `None` once the `e` record has been
    /// read. Any unread payload of the previous `Write` is skipped first.
    pub fn next_record(&mut self) -> Result<Option<Record>, DiffError> {
        let result = self.next_record_inner();
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// Reads part of the current `Write` payload into `buf`. Returns 0 once the
    /// payload is exhausted (or if there is no current `Write`).
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, DiffError> {
        let remaining = match self.state {
            State::Payload { remaining } => remaining,
            State::Failed => return Err(DiffError::Failed),
            State::Records | State::Ended => return Ok(0),
        };
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = match self.read_some(&mut buf[..want]) {
            Ok(0) => {
                self.state = State::Failed;
                return Err(DiffError::UnexpectedEof {
                    at: self.pos,
                    while_reading: "write payload",
                });
            }
            Ok(n) => n,
            Err(e) => {
                self.state = State::Failed;
                return Err(e.into());
            }
        };
        self.state = State::Payload {
            remaining: remaining - n as u64,
        };
        Ok(n)
    }

    /// Checks that nothing follows the `e` record and returns the stream
    /// length. Records not yet read are read (and validated) first, so calling
    /// this early is not a way to skip validation.
    pub fn finish(mut self) -> Result<u64, DiffError> {
        while self.next_record()?.is_some() {}
        let mut probe = [0u8; 1];
        if self.read_some(&mut probe)? != 0 {
            return Err(DiffError::TrailingData { at: self.pos - 1 });
        }
        Ok(self.pos)
    }

    fn read_banner(&mut self) -> Result<(), DiffError> {
        let mut got = [0u8; BANNER.len()];
        let n = self.read_upto(&mut got)?;
        if let Some(i) = got[..n].iter().zip(BANNER).position(|(a, b)| a != b) {
            return Err(DiffError::BadBanner { at: i as u64 });
        }
        if n < BANNER.len() {
            return Err(DiffError::UnexpectedEof {
                at: self.pos,
                while_reading: "banner",
            });
        }
        Ok(())
    }

    fn read_header(&mut self) -> Result<(), DiffError> {
        let mut size = None;
        loop {
            let at = self.pos;
            let tag = self.read_u8("record tag")?;
            match tag {
                TAG_FROM_SNAP | TAG_TO_SNAP => {
                    let already = if tag == TAG_FROM_SNAP {
                        self.header.from_snap.is_some()
                    } else {
                        self.header.to_snap.is_some()
                    };
                    if already {
                        return Err(DiffError::DuplicateHeader {
                            at,
                            tag: tag as char,
                        });
                    }
                    let name = self.read_name(at)?;
                    if tag == TAG_FROM_SNAP {
                        self.header.from_snap = Some(name);
                    } else {
                        self.header.to_snap = Some(name);
                    }
                }
                TAG_SIZE => {
                    if size.is_some() {
                        return Err(DiffError::DuplicateHeader {
                            at,
                            tag: tag as char,
                        });
                    }
                    size = Some(self.read_u64("image size")?);
                }
                TAG_WRITE | TAG_ZERO | TAG_END => {
                    self.header.size = size.ok_or(DiffError::MissingSize { at })?;
                    self.pending_tag = Some((at, tag));
                    return Ok(());
                }
                _ => return Err(DiffError::UnknownTag { at, tag }),
            }
        }
    }

    fn read_name(&mut self, at: u64) -> Result<String, DiffError> {
        let length = self.read_u32("snapshot name length")?;
        // Checked before allocating so a corrupt length cannot make us reserve
        // gigabytes.
        if length > MAX_NAME_LEN {
            return Err(DiffError::NameTooLong { at, length });
        }
        let mut bytes = vec![0u8; length as usize];
        self.fill(&mut bytes, "snapshot name")?;
        String::from_utf8(bytes).map_err(|_| DiffError::BadName { at })
    }

    fn next_record_inner(&mut self) -> Result<Option<Record>, DiffError> {
        match self.state {
            State::Failed => return Err(DiffError::Failed),
            State::Ended => return Ok(None),
            State::Payload { remaining } => {
                self.skip(remaining)?;
                self.state = State::Records;
            }
            State::Records => {}
        }
        let (at, tag) = match self.pending_tag.take() {
            Some(pending) => pending,
            None => (self.pos, self.read_u8("record tag")?),
        };
        let is_write = match tag {
            TAG_WRITE => true,
            TAG_ZERO => false,
            TAG_END => {
                self.state = State::Ended;
                return Ok(None);
            }
            TAG_FROM_SNAP | TAG_TO_SNAP | TAG_SIZE => {
                return Err(DiffError::HeaderAfterData {
                    at,
                    tag: tag as char,
                })
            }
            _ => return Err(DiffError::UnknownTag { at, tag }),
        };
        let offset = self.read_u64("record offset")?;
        let length = self.read_u64("record length")?;
        self.check_extent(at, offset, length)?;
        if is_write {
            self.state = State::Payload { remaining: length };
            Ok(Some(Record::Write { offset, length }))
        } else {
            Ok(Some(Record::Zero { offset, length }))
        }
    }

    fn check_extent(&mut self, at: u64, offset: u64, length: u64) -> Result<(), DiffError> {
        if length == 0 {
            return Err(DiffError::ZeroLength { at, offset });
        }
        if let Some((previous_offset, previous_end)) = self.previous {
            if offset < previous_offset {
                return Err(DiffError::OutOfOrder {
                    at,
                    offset,
                    previous_end,
                });
            }
            if offset < previous_end {
                return Err(DiffError::Overlap {
                    at,
                    offset,
                    previous_end,
                });
            }
        }
        let size = self.header.size;
        let end = offset
            .checked_add(length)
            .filter(|&end| end <= size)
            .ok_or(DiffError::BeyondSize {
                at,
                offset,
                length,
                size,
            })?;
        self.previous = Some((offset, end));
        Ok(())
    }

    fn skip(&mut self, mut remaining: u64) -> Result<(), DiffError> {
        let mut scratch = [0u8; SKIP_CHUNK];
        while remaining > 0 {
            let want = scratch
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            let n = self.read_some(&mut scratch[..want])?;
            if n == 0 {
                return Err(DiffError::UnexpectedEof {
                    at: self.pos,
                    while_reading: "write payload",
                });
            }
            remaining -= n as u64;
        }
        Ok(())
    }

    /// One `read` call that keeps `pos` honest and hides `Interrupted`.
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Like `read_exact`, but reports how far it got at EOF instead of failing.
    fn read_upto(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_some(&mut buf[done..])? {
                0 => break,
                n => done += n,
            }
        }
        Ok(done)
    }

    fn fill(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), DiffError> {
        if self.read_upto(buf)? < buf.len() {
            return Err(DiffError::UnexpectedEof {
                at: self.pos,
                while_reading: what,
            });
        }
        Ok(())
    }

    fn read_u8(&mut self, what: &'static str) -> Result<u8, DiffError> {
        let mut b = [0u8; 1];
        self.fill(&mut b, what)?;
        Ok(b[0])
    }

    fn read_u32(&mut self, what: &'static str) -> Result<u32, DiffError> {
        let mut b = [0u8; 4];
        self.fill(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_u64(&mut self, what: &'static str) -> Result<u64, DiffError> {
        let mut b = [0u8; 8];
        self.fill(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }
}

impl<R: Read + Seek> DiffReader<R> {
    /// [`DiffReader::next_record`], skipping the unread payload of the previous `Write` with a
    /// seek instead of reading it: the records of a stored diff are indexed without reading its
    /// data. A payload cut short is still caught, at the next record.
    pub fn next_record_seeking(&mut self) -> Result<Option<Record>, DiffError> {
        if let State::Payload { remaining } = self.state {
            let by = i64::try_from(remaining).map_err(|_| DiffError::Failed)?;
            if let Err(err) = self.inner.seek(SeekFrom::Current(by)) {
                self.state = State::Failed;
                return Err(err.into());
            }
            self.pos += remaining;
            self.state = State::Records;
        }
        self.next_record()
    }
}

/// Reads a whole stream, checking every rule including that nothing follows
/// the `e` record. Payloads are read and discarded.
#[cfg(test)]
pub fn validate<R: Read>(r: R) -> Result<(DiffHeader, DiffSummary), DiffError> {
    let mut reader = DiffReader::new(r)?;
    let mut summary = DiffSummary::default();
    while let Some(record) = reader.next_record()? {
        summary.records += 1;
        // Payloads are left for `next_record` to skip, which reads them through
        // a bounded buffer.
        match record {
            Record::Write { length, .. } => summary.write_bytes += length,
            Record::Zero { length, .. } => summary.zero_bytes += length,
        }
    }
    let header = reader.header().clone();
    summary.stream_bytes = reader.finish()?;
    Ok((header, summary))
}

/// Writes `rbd diff v1` streams in the exact byte layout rbd uses: for tests,
/// which need streams to feed the reader and `rbd import-diff`.
///
/// If any call fails, the output is left mid-record and must be discarded.
#[cfg(any(test, feature = "test-support"))]
pub struct DiffWriter<W: Write> {
    out: W,
    /// Only used by debug assertions: release builds trust the caller, since
    /// the merger that feeds this already walks extents in order.
    size: u64,
    previous_end: u64,
    /// Allocated on first use of `write_data_from`.
    chunk: Vec<u8>,
}

#[cfg(any(test, feature = "test-support"))]
impl<W: Write> DiffWriter<W> {
    /// Writes the banner and the header records, in the order rbd does: `f`,
    /// `t`, `s`. Names longer than [`MAX_NAME_LEN`] are refused because rbd
    /// would refuse to import the result.
    pub fn new(mut out: W, header: &DiffHeader) -> io::Result<Self> {
        out.write_all(BANNER)?;
        if let Some(name) = &header.from_snap {
            write_name(&mut out, TAG_FROM_SNAP, name)?;
        }
        if let Some(name) = &header.to_snap {
            write_name(&mut out, TAG_TO_SNAP, name)?;
        }
        let mut size = [0u8; 9];
        size[0] = TAG_SIZE;
        size[1..].copy_from_slice(&header.size.to_le_bytes());
        out.write_all(&size)?;
        Ok(DiffWriter {
            out,
            size: header.size,
            previous_end: 0,
            chunk: Vec::new(),
        })
    }

    /// One `w` record whose payload is `data`.
    pub fn write_data(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.record(TAG_WRITE, offset, data.len() as u64)?;
        self.out.write_all(data)
    }

    /// One `w` record whose payload is the next `length` bytes of `src`. Fails
    /// if `src` ends early; bytes beyond `length` are left unread.
    pub fn write_data_from<R: Read>(
        &mut self,
        offset: u64,
        length: u64,
        mut src: R,
    ) -> io::Result<()> {
        self.record(TAG_WRITE, offset, length)?;
        if self.chunk.is_empty() {
            self.chunk = vec![0u8; CHUNK];
        }
        let mut remaining = length;
        while remaining > 0 {
            let want = self
                .chunk
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            let n = match src.read(&mut self.chunk[..want]) {
                Ok(0) => {
                    let got = length - remaining;
                    let msg = format!("source gave {got} of {length} bytes for write at {offset}");
                    return Err(io::Error::new(ErrorKind::UnexpectedEof, msg));
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.write_all(&self.chunk[..n])?;
            remaining -= n as u64;
        }
        Ok(())
    }

    /// One `z` record.
    pub fn write_zero(&mut self, offset: u64, length: u64) -> io::Result<()> {
        self.record(TAG_ZERO, offset, length)
    }

    /// Writes the `e` record, flushes, and hands back the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[TAG_END])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn record(&mut self, tag: u8, offset: u64, length: u64) -> io::Result<()> {
        debug_assert!(length > 0, "zero-length extent at {offset}");
        debug_assert!(
            offset >= self.previous_end,
            "extent at {offset} starts before the previous one ends ({})",
            self.previous_end
        );
        debug_assert!(
            offset
                .checked_add(length)
                .is_some_and(|end| end <= self.size),
            "extent {offset}+{length} beyond image size {}",
            self.size
        );
        self.previous_end = offset.saturating_add(length);
        let mut head = [0u8; 17];
        head[0] = tag;
        head[1..9].copy_from_slice(&offset.to_le_bytes());
        head[9..].copy_from_slice(&length.to_le_bytes());
        self.out.write_all(&head)
    }
}

#[cfg(any(test, feature = "test-support"))]
fn write_name<W: Write>(out: &mut W, tag: u8, name: &str) -> io::Result<()> {
    let length = u32::try_from(name.len())
        .ok()
        .filter(|&n| n <= MAX_NAME_LEN)
        .ok_or_else(|| {
            io::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "snapshot name of {} bytes exceeds the {MAX_NAME_LEN}-byte limit",
                    name.len()
                ),
            )
        })?;
    let mut head = [0u8; 5];
    head[0] = tag;
    head[1..].copy_from_slice(&length.to_le_bytes());
    out.write_all(&head)?;
    out.write_all(name.as_bytes())
}

/// For tests: replays a v1 stream onto `target`, a raw image file opened for reading and
/// writing, and finally sets its length to the header's image size.
///
/// Validation happens as the stream is applied, so on error the file has been
/// partly modified; apply to a scratch copy when the original matters. The file
/// is not synced.
#[cfg(test)]
pub fn apply_to_file<R: Read>(
    stream: R,
    target: &mut std::fs::File,
) -> Result<DiffHeader, DiffError> {
    use std::io::{Seek, SeekFrom, Write};
    let mut reader = DiffReader::new(stream)?;
    // Bytes past the current end need no zeroing: the final `set_len`, or a
    // later write past the end, fills any gap with zeros anyway.
    let mut file_len = target.metadata()?.len();
    let mut buf: Vec<u8> = Vec::new();
    let mut zeros: Vec<u8> = Vec::new();
    while let Some(record) = reader.next_record()? {
        match record {
            Record::Write { offset, length } => {
                if buf.is_empty() {
                    buf = vec![0u8; CHUNK];
                }
                target.seek(SeekFrom::Start(offset))?;
                loop {
                    let n = reader.read_data(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    target.write_all(&buf[..n])?;
                }
                // The reader has already checked offset + length <= size.
                file_len = file_len.max(offset + length);
            }
            Record::Zero { offset, length } => {
                let end = (offset + length).min(file_len);
                if offset >= end {
                    continue;
                }
                if zeros.is_empty() {
                    zeros = vec![0u8; CHUNK];
                }
                target.seek(SeekFrom::Start(offset))?;
                let mut remaining = end - offset;
                while remaining > 0 {
                    let n = zeros
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    target.write_all(&zeros[..n])?;
                    remaining -= n as u64;
                }
            }
        }
    }
    let header = reader.header().clone();
    reader.finish()?;
    target.set_len(header.size)?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    const MIB: u64 = 1 << 20;

    /// The hand-built example stream from the format notes.
    const SPEC_VECTOR: &[u8] = &[
        0x72, 0x62, 0x64, 0x20, 0x64, 0x69, 0x66, 0x66, 0x20, 0x76, 0x31, 0x0a, // banner
        0x74, 0x02, 0x00, 0x00, 0x00, 0x73, 0x31, // t "s1"
        0x73, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, // s 8 MiB
        0x77, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0xde, 0xad, 0xbe, 0xef, // w 0x1000 len 4
        0x65, // e
    ];

    /// Builds streams byte by byte, including ones the writer refuses to make.
    #[derive(Default)]
    struct Raw(Vec<u8>);

    impl Raw {
        fn banner() -> Self {
            Raw(BANNER.to_vec())
        }
        fn byte(mut self, b: u8) -> Self {
            self.0.push(b);
            self
        }
        fn name(mut self, tag: u8, name: &[u8]) -> Self {
            self.0.push(tag);
            self.0
                .extend_from_slice(&u32::try_from(name.len()).unwrap().to_le_bytes());
            self.0.extend_from_slice(name);
            self
        }
        fn size(mut self, size: u64) -> Self {
            self.0.push(b's');
            self.0.extend_from_slice(&size.to_le_bytes());
            self
        }
        fn ext(mut self, tag: u8, offset: u64, length: u64) -> Self {
            self.0.push(tag);
            self.0.extend_from_slice(&offset.to_le_bytes());
            self.0.extend_from_slice(&length.to_le_bytes());
            self
        }
        fn w(self, offset: u64, data: &[u8]) -> Self {
            let mut me = self.ext(b'w', offset, data.len() as u64);
            me.0.extend_from_slice(data);
            me
        }
        fn z(self, offset: u64, length: u64) -> Self {
            self.ext(b'z', offset, length)
        }
        fn e(self) -> Self {
            self.byte(b'e')
        }
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
    }

    fn err(bytes: &[u8]) -> DiffError {
        match validate(bytes) {
            Ok(ok) => panic!("stream unexpectedly valid: {ok:?}"),
            Err(e) => e,
        }
    }

    fn header(from: Option<&str>, to: Option<&str>, size: u64) -> DiffHeader {
        DiffHeader {
            from_snap: from.map(str::to_owned),
            to_snap: to.map(str::to_owned),
            size,
        }
    }

    fn read_all(reader: &mut DiffReader<impl Read>, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = reader.read_data(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn spec_vector_parses() {
        let mut reader = DiffReader::new(SPEC_VECTOR).unwrap();
        assert_eq!(reader.header(), &header(None, Some("s1"), 8 * MIB));
        assert_eq!(
            reader.next_record().unwrap(),
            Some(Record::Write {
                offset: 0x1000,
                length: 4
            })
        );
        assert_eq!(read_all(&mut reader, 3), [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(reader.next_record().unwrap(), None);
        assert_eq!(reader.next_record().unwrap(), None);
        assert_eq!(reader.finish().unwrap(), SPEC_VECTOR.len() as u64);
    }

    #[test]
    fn writer_reproduces_spec_vector() {
        let mut w = DiffWriter::new(Vec::new(), &header(None, Some("s1"), 8 * MIB)).unwrap();
        w.write_data(0x1000, &[0xde, 0xad, 0xbe, 0xef]).unwrap();
        assert_eq!(w.finish().unwrap(), SPEC_VECTOR);

        let mut w = DiffWriter::new(Vec::new(), &header(None, Some("s1"), 8 * MIB)).unwrap();
        w.write_data_from(0x1000, 4, &[0xde, 0xad, 0xbe, 0xef, 0x99][..])
            .unwrap();
        assert_eq!(w.finish().unwrap(), SPEC_VECTOR);
    }

    #[test]
    fn empty_diff_between_two_snapshots_is_80_bytes() {
        let h = header(
            Some("BACKUPUTC20170808T020000"),
            Some("BACKUPUTC20170809T020000"),
            10 << 30,
        );
        let bytes = DiffWriter::new(Vec::new(), &h).unwrap().finish().unwrap();
        assert_eq!(bytes.len(), 80);
        let expected = Raw::banner()
            .name(b'f', b"BACKUPUTC20170808T020000")
            .name(b't', b"BACKUPUTC20170809T020000")
            .size(10 << 30)
            .e();
        assert_eq!(bytes, expected.0);
        let (got, summary) = validate(&bytes[..]).unwrap();
        assert_eq!(got, h);
        assert_eq!(
            summary,
            DiffSummary {
                records: 0,
                write_bytes: 0,
                zero_bytes: 0,
                stream_bytes: 80
            }
        );
    }

    #[test]
    fn header_variants_round_trip() {
        for h in [
            header(None, None, 0),
            header(Some("a"), None, 1),
            header(None, Some("b"), u64::MAX),
            header(Some(""), Some("ünïcode"), 42),
            header(Some("x".repeat(4096).as_str()), Some("y"), 7),
        ] {
            let bytes = DiffWriter::new(Vec::new(), &h).unwrap().finish().unwrap();
            assert_eq!(validate(&bytes[..]).unwrap().0, h);
        }
    }

    #[test]
    fn writer_refuses_overlong_name() {
        let h = header(Some("x".repeat(4097).as_str()), None, 1);
        let e = DiffWriter::new(Vec::new(), &h).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn round_trip_several_records() {
        let h = header(Some("base"), Some("next"), 4 * MIB);
        let big: Vec<u8> = (0..(CHUNK + 12345))
            .map(|i| u8::try_from(i * 7 % 251).unwrap())
            .collect();
        let mut w = DiffWriter::new(Vec::new(), &h).unwrap();
        w.write_zero(0, 512).unwrap();
        w.write_data(512, b"hello").unwrap();
        // Adjacent extents are legal: offset == previous end.
        w.write_zero(517, 1000).unwrap();
        w.write_data_from(MIB, big.len() as u64, &big[..]).unwrap();
        w.write_data(4 * MIB - 3, b"end").unwrap();
        let bytes = w.finish().unwrap();

        let mut reader = DiffReader::new(&bytes[..]).unwrap();
        assert_eq!(reader.header(), &h);
        assert_eq!(
            reader.next_record().unwrap(),
            Some(Record::Zero {
                offset: 0,
                length: 512
            })
        );
        assert_eq!(
            reader.next_record().unwrap(),
            Some(Record::Write {
                offset: 512,
                length: 5
            })
        );
        assert_eq!(read_all(&mut reader, 2), b"hello");
        assert_eq!(
            reader.next_record().unwrap(),
            Some(Record::Zero {
                offset: 517,
                length: 1000
            })
        );
        assert_eq!(
            reader.next_record().unwrap(),
            Some(Record::Write {
                offset: MIB,
                length: big.len() as u64
            })
        );
        assert_eq!(read_all(&mut reader, 100_000), big);
        assert_eq!(
            reader.next_record().unwrap(),
            Some(Record::Write {
                offset: 4 * MIB - 3,
                length: 3
            })
        );
        assert_eq!(read_all(&mut reader, 4096), b"end");
        assert_eq!(reader.next_record().unwrap(), None);
        assert_eq!(reader.finish().unwrap(), bytes.len() as u64);

        let (_, summary) = validate(&bytes[..]).unwrap();
        assert_eq!(
            summary,
            DiffSummary {
                records: 5,
                write_bytes: 5 + big.len() as u64 + 3,
                zero_bytes: 1512,
                stream_bytes: bytes.len() as u64
            }
        );
    }

    #[test]
    fn unread_and_partly_read_payloads_are_skipped() {
        let bytes = Raw::banner()
            .size(100)
            .w(0, b"abcdef")
            .w(10, b"ghij")
            .w(20, b"kl")
            .e()
            .0;
        let mut reader = DiffReader::new(&bytes[..]).unwrap();
        assert!(reader.next_record().unwrap().is_some());
        let mut two = [0u8; 2];
        assert_eq!(reader.read_data(&mut two).unwrap(), 2);
        assert_eq!(&two, b"ab");
        assert_eq!(
            reader.next_record().unwrap(),
            Some(Record::Write {
                offset: 10,
                length: 4
            })
        );
        assert_eq!(
            reader.next_record().unwrap(),
            Some(Record::Write {
                offset: 20,
                length: 2
            })
        );
        assert_eq!(read_all(&mut reader, 8), b"kl");
        // finish() drains whatever is left, here just the end record.
        assert_eq!(reader.finish().unwrap(), bytes.len() as u64);
    }

    #[test]
    fn bad_banner() {
        let mut bytes = SPEC_VECTOR.to_vec();
        bytes[10] = b'2'; // "rbd diff v2\n"
        assert!(matches!(err(&bytes), DiffError::BadBanner { at: 10 }));
        assert!(matches!(
            err(b"rbd image v2\n"),
            DiffError::BadBanner { at: 4 }
        ));
        // An old, length-prefixed banner.
        let mut prefixed = 13u32.to_le_bytes().to_vec();
        prefixed.extend_from_slice(SPEC_VECTOR);
        assert!(matches!(err(&prefixed), DiffError::BadBanner { at: 0 }));
        // A short stream that is not even a banner prefix is a bad banner.
        assert!(matches!(err(b"rbx"), DiffError::BadBanner { at: 2 }));
    }

    #[test]
    fn every_truncation_is_unexpected_eof_at_the_cut() {
        let full = Raw::banner()
            .name(b'f', b"a")
            .name(b't', b"bc")
            .size(100)
            .z(0, 10)
            .w(10, b"xyz")
            .e()
            .0;
        validate(&full[..]).unwrap();
        for cut in 0..full.len() {
            match err(&full[..cut]) {
                DiffError::UnexpectedEof { at, .. } => assert_eq!(at, cut as u64, "cut {cut}"),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn truncation_names_the_part_being_read() {
        let cases: [(&[u8], u64, &str); 8] = [
            (b"rbd diff", 8, "banner"),
            (&Raw::banner().byte(b't').0, 13, "snapshot name length"),
            (
                &Raw::banner().byte(b't').byte(2).byte(0).0,
                15,
                "snapshot name length",
            ),
            (
                &Raw::banner().name(b't', b"s1").0[..18],
                18,
                "snapshot name",
            ),
            (&Raw::banner().size(8).0[..17], 17, "image size"),
            (
                &Raw::banner().size(8).ext(b'w', 0, 4).0[..26],
                26,
                "record offset",
            ),
            (
                &Raw::banner().size(8).ext(b'z', 0, 4).0[..35],
                35,
                "record length",
            ),
            (&Raw::banner().size(8).w(0, b"ab").0, 40, "record tag"),
        ];
        for (bytes, want_at, want_what) in cases {
            match err(bytes) {
                DiffError::UnexpectedEof { at, while_reading } => {
                    assert_eq!((at, while_reading), (want_at, want_what));
                }
                other => panic!("{want_what}: {other:?}"),
            }
        }
        // Payload cut short, and a stream without its end record.
        match err(&SPEC_VECTOR[..SPEC_VECTOR.len() - 3]) {
            DiffError::UnexpectedEof { at, while_reading } => {
                assert_eq!((at, while_reading), (47, "write payload"));
            }
            other => panic!("{other:?}"),
        }
        match err(&SPEC_VECTOR[..SPEC_VECTOR.len() - 1]) {
            DiffError::UnexpectedEof { at, while_reading } => {
                assert_eq!((at, while_reading), (49, "record tag"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_payload_via_read_data() {
        let mut reader = DiffReader::new(&SPEC_VECTOR[..SPEC_VECTOR.len() - 3]).unwrap();
        reader.next_record().unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(reader.read_data(&mut buf).unwrap(), 2);
        assert!(matches!(
            reader.read_data(&mut buf),
            Err(DiffError::UnexpectedEof {
                at: 47,
                while_reading: "write payload"
            })
        ));
        // Once failed, the reader stays failed rather than misparsing.
        assert!(matches!(reader.next_record(), Err(DiffError::Failed)));
    }

    #[test]
    fn unknown_tags_are_fatal() {
        // In the header, including a v2-only tag.
        let bytes = Raw::banner().byte(b'x').0;
        assert!(matches!(
            err(&bytes),
            DiffError::UnknownTag { at: 12, tag: b'x' }
        ));
        let bytes = Raw::banner()
            .name(b't', b"s")
            .byte(b'p')
            .byte(1)
            .size(1)
            .e()
            .0;
        assert!(matches!(
            err(&bytes),
            DiffError::UnknownTag { at: 18, tag: b'p' }
        ));
        // Among data records.
        let bytes = Raw::banner().size(10).z(0, 1).byte(0).e().0;
        assert!(matches!(
            err(&bytes),
            DiffError::UnknownTag { at: 38, tag: 0 }
        ));
    }

    #[test]
    fn flipped_tag_bytes() {
        // Each tag byte in the spec vector, flipped by one bit, must be caught.
        for (at, tag) in [(12usize, b't'), (19, b's'), (28, b'w'), (49, b'e')] {
            let mut bytes = SPEC_VECTOR.to_vec();
            assert_eq!(bytes[at], tag);
            bytes[at] ^= 0x01;
            match err(&bytes) {
                DiffError::UnknownTag {
                    at: got,
                    tag: got_tag,
                } => {
                    assert_eq!((got, got_tag), (at as u64, tag ^ 0x01));
                }
                other => panic!("flip at {at}: {other:?}"),
            }
        }
    }

    #[test]
    fn duplicate_header_records() {
        let s = Raw::banner().size(1).size(1).e();
        assert!(matches!(
            err(&s.0),
            DiffError::DuplicateHeader { at: 21, tag: 's' }
        ));
        let f = Raw::banner().name(b'f', b"a").name(b'f', b"a").size(1).e();
        assert!(matches!(
            err(&f.0),
            DiffError::DuplicateHeader { at: 18, tag: 'f' }
        ));
        let t = Raw::banner().name(b't', b"a").size(1).name(b't', b"b").e();
        assert!(matches!(
            err(&t.0),
            DiffError::DuplicateHeader { at: 27, tag: 't' }
        ));
    }

    #[test]
    fn header_after_data() {
        for tag in [b's', b'f', b't'] {
            let base = Raw::banner().size(100).w(0, b"a");
            let at = base.len();
            let bytes = base.byte(tag).e().0;
            match err(&bytes) {
                DiffError::HeaderAfterData {
                    at: got,
                    tag: got_tag,
                } => {
                    assert_eq!((got, got_tag), (at, tag as char));
                }
                other => panic!("{}: {other:?}", tag as char),
            }
        }
    }

    #[test]
    fn missing_size() {
        let bytes = Raw::banner().name(b't', b"s1").w(0, b"a").e().0;
        assert!(matches!(err(&bytes), DiffError::MissingSize { at: 19 }));
        let bytes = Raw::banner().e().0;
        assert!(matches!(err(&bytes), DiffError::MissingSize { at: 12 }));
    }

    #[test]
    fn zero_length_records() {
        let bytes = Raw::banner().size(100).w(5, b"").e().0;
        assert!(matches!(
            err(&bytes),
            DiffError::ZeroLength { at: 21, offset: 5 }
        ));
        let bytes = Raw::banner().size(100).z(0, 1).z(7, 0).e().0;
        assert!(matches!(
            err(&bytes),
            DiffError::ZeroLength { at: 38, offset: 7 }
        ));
    }

    #[test]
    fn overlapping_and_descending_extents() {
        let bytes = Raw::banner().size(100).w(0, b"0123456789").z(5, 10).e().0;
        assert!(matches!(
            err(&bytes),
            DiffError::Overlap {
                at: 48,
                offset: 5,
                previous_end: 10
            }
        ));
        // Same start as the previous extent.
        let bytes = Raw::banner().size(100).z(4, 2).z(4, 2).e().0;
        assert!(matches!(
            err(&bytes),
            DiffError::Overlap {
                at: 38,
                offset: 4,
                previous_end: 6
            }
        ));
        let bytes = Raw::banner().size(100).z(50, 10).w(0, b"a").e().0;
        assert!(matches!(
            err(&bytes),
            DiffError::OutOfOrder {
                at: 38,
                offset: 0,
                previous_end: 60
            }
        ));
    }

    #[test]
    fn extent_beyond_size() {
        // Ending exactly at the size is fine ...
        let ok = Raw::banner().size(100).z(90, 10).e().0;
        validate(&ok[..]).unwrap();
        // ... one byte more is not.
        let bytes = Raw::banner().size(100).z(90, 11).e().0;
        assert!(matches!(
            err(&bytes),
            DiffError::BeyondSize {
                at: 21,
                offset: 90,
                length: 11,
                size: 100
            }
        ));
        let bytes = Raw::banner().size(100).w(100, b"a").e().0;
        assert!(matches!(
            err(&bytes),
            DiffError::BeyondSize { offset: 100, .. }
        ));
    }

    #[test]
    fn extent_end_overflow() {
        let bytes = Raw::banner().size(u64::MAX).z(u64::MAX - 1, 4).e().0;
        assert!(matches!(
            err(&bytes),
            DiffError::BeyondSize {
                at: 21,
                offset: 0xffff_ffff_ffff_fffe,
                length: 4,
                size: u64::MAX
            }
        ));
    }

    #[test]
    fn trailing_data_after_end() {
        let mut bytes = SPEC_VECTOR.to_vec();
        bytes.push(0);
        assert!(matches!(err(&bytes), DiffError::TrailingData { at: 50 }));
        // A second stream glued on is trailing data too.
        let mut two = SPEC_VECTOR.to_vec();
        two.extend_from_slice(SPEC_VECTOR);
        assert!(matches!(err(&two), DiffError::TrailingData { at: 50 }));
    }

    #[test]
    fn snapshot_name_limits() {
        let long = vec![b'n'; 4097];
        let bytes = Raw::banner().name(b'f', &long).size(1).e().0;
        assert!(matches!(
            err(&bytes),
            DiffError::NameTooLong {
                at: 12,
                length: 4097
            }
        ));
        // A huge declared length is refused before anything is allocated.
        let mut bytes = Raw::banner().byte(b't').0;
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            err(&bytes),
            DiffError::NameTooLong {
                at: 12,
                length: u32::MAX
            }
        ));
        let bytes = Raw::banner().name(b't', &[b'a', 0xff, b'b']).size(1).e().0;
        assert!(matches!(err(&bytes), DiffError::BadName { at: 12 }));
    }

    /// A scratch file deleted on drop; the crate has no tempfile dependency.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(tag: &str, content: &[u8]) -> Self {
            let path = std::env::temp_dir()
                .join(format!("diffstream-test-{}-{tag}.img", std::process::id()));
            std::fs::write(&path, content).unwrap();
            Scratch(path)
        }
        fn open(&self) -> File {
            File::options()
                .read(true)
                .write(true)
                .open(&self.0)
                .unwrap()
        }
        fn read(&self) -> Vec<u8> {
            std::fs::read(&self.0).unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len)
            .map(|i| u8::try_from((i * 31 + seed) % 255 + 1).unwrap())
            .collect()
    }

    #[test]
    fn apply_grows_image() {
        let base = pattern(10_000, 1);
        let file = Scratch::new("grow", &base);
        let payload_a = pattern(50, 2);
        let payload_b = pattern(100, 3);
        let h = header(Some("a"), Some("b"), 20_000);
        let mut w = DiffWriter::new(Vec::new(), &h).unwrap();
        w.write_data(100, &payload_a).unwrap();
        w.write_zero(5_000, 2_000).unwrap(); // inside the old image
        w.write_zero(9_000, 3_000).unwrap(); // straddles the old end
        w.write_data(15_000, &payload_b).unwrap(); // past the old end, leaves a gap
        w.write_zero(19_000, 1_000).unwrap(); // entirely past the old end
        let stream = w.finish().unwrap();

        let mut expected = base.clone();
        expected.resize(20_000, 0);
        expected[100..150].copy_from_slice(&payload_a);
        expected[5_000..7_000].fill(0);
        expected[9_000..12_000].fill(0);
        expected[15_000..15_100].copy_from_slice(&payload_b);

        let got = apply_to_file(&stream[..], &mut file.open()).unwrap();
        assert_eq!(got, h);
        assert_eq!(file.read(), expected);
    }

    #[test]
    fn apply_shrinks_image() {
        let base = pattern(10_000, 4);
        let file = Scratch::new("shrink", &base);
        let payload = pattern(10, 5);
        let mut w = DiffWriter::new(Vec::new(), &header(None, Some("s"), 6_000)).unwrap();
        w.write_data(0, &payload).unwrap();
        w.write_zero(3_000, 1_000).unwrap();
        let stream = w.finish().unwrap();

        let mut expected = base[..6_000].to_vec();
        expected[..10].copy_from_slice(&payload);
        expected[3_000..4_000].fill(0);

        apply_to_file(&stream[..], &mut file.open()).unwrap();
        assert_eq!(file.read(), expected);
    }

    #[test]
    fn apply_multi_chunk_records() {
        // Larger than CHUNK so the chunk loops go round more than once.
        let len = 3 * CHUNK + 777;
        let base = pattern(len, 6);
        let file = Scratch::new("chunks", &base);
        let payload = pattern(CHUNK + CHUNK / 2, 7);
        let mut w = DiffWriter::new(Vec::new(), &header(None, None, len as u64)).unwrap();
        w.write_zero(10, 2 * CHUNK as u64 + 5).unwrap();
        let off = 2 * CHUNK + 100;
        w.write_data(off as u64, &payload[..len - off]).unwrap();
        let stream = w.finish().unwrap();

        let mut expected = base.clone();
        expected[10..10 + 2 * CHUNK + 5].fill(0);
        expected[off..].copy_from_slice(&payload[..len - off]);

        apply_to_file(&stream[..], &mut file.open()).unwrap();
        assert!(file.read() == expected);
    }

    #[test]
    fn apply_rejects_corrupt_stream_and_keeps_length() {
        let base = pattern(1_000, 8);
        let file = Scratch::new("corrupt", &base);
        let mut stream = Raw::banner().size(500).z(0, 10).e().0;
        stream.push(b'!');
        assert!(matches!(
            apply_to_file(&stream[..], &mut file.open()),
            Err(DiffError::TrailingData { .. })
        ));
        // The final resize only happens after the whole stream checked out.
        assert_eq!(file.read().len(), 1_000);
    }

    /// Produces a stream with a single write record of `payload` bytes without
    /// ever holding the payload in memory.
    struct GeneratedStream {
        head: Vec<u8>,
        payload: u64,
        tail_sent: bool,
        pos: usize,
    }

    impl Read for GeneratedStream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos < self.head.len() {
                let n = buf.len().min(self.head.len() - self.pos);
                buf[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.payload > 0 {
                let n = buf
                    .len()
                    .min(usize::try_from(self.payload).unwrap_or(usize::MAX));
                buf[..n].fill(0x5a);
                self.payload -= n as u64;
                return Ok(n);
            }
            if !self.tail_sent && !buf.is_empty() {
                buf[0] = b'e';
                self.tail_sent = true;
                return Ok(1);
            }
            Ok(0)
        }
    }

    #[test]
    fn large_record_streams_in_constant_memory() {
        let len = 64 * MIB;
        let head = Raw::banner().size(len).ext(b'w', 0, len).0;
        let head_len = head.len() as u64;
        let stream = GeneratedStream {
            head,
            payload: len,
            tail_sent: false,
            pos: 0,
        };
        let (h, summary) = validate(stream).unwrap();
        assert_eq!(h, header(None, None, len));
        assert_eq!(
            summary,
            DiffSummary {
                records: 1,
                write_bytes: len,
                zero_bytes: 0,
                stream_bytes: head_len + len + 1
            }
        );
    }

    #[test]
    fn writer_streams_large_record_from_reader() {
        struct Count(u64);
        impl Write for Count {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0 += buf.len() as u64;
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let len = 64 * MIB;
        let mut w = DiffWriter::new(Count(0), &header(None, None, len)).unwrap();
        w.write_data_from(0, len, io::repeat(0xab).take(len))
            .unwrap();
        assert_eq!(w.finish().unwrap().0, 12 + 9 + 17 + len + 1);

        let mut w = DiffWriter::new(Count(0), &header(None, None, len)).unwrap();
        let e = w.write_data_from(0, 10, io::repeat(0).take(9)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    }
}
