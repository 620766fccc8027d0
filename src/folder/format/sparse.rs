//! Raw image files with holes: all-zero blocks are never written as data.
//!
//! One writer for every raw image this tool writes: [`SparseFile`] writes at any offset (a run of
//! data blocks costs one write, a run of zero blocks one hole punched where the file has data and
//! nothing past its end) and [`SparseWriter`] streams a whole image into an empty file through it,
//! the way `rbd export` keeps holes when it writes a file itself.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

/// Holes are made at this granularity: aligned all-zero blocks of this size become holes,
/// smaller zero runs are written.
pub const BLOCK: usize = 4096;
/// Zeros are written in chunks of this size where holes cannot be punched.
const CHUNK: usize = 1 << 20;

/// True when every byte is zero; checks 64 bytes at a time so the compiler can use wide loads.
pub fn is_zero(block: &[u8]) -> bool {
    let mut chunks = block.chunks_exact(64);
    let body_zero = chunks.all(|chunk| chunk.iter().fold(0u8, |acc, &b| acc | b) == 0);
    body_zero && chunks.remainder().iter().all(|&b| b == 0)
}

/// A raw image file being written or changed in place, keeping holes where the image is zero.
pub struct SparseFile<'a> {
    file: &'a File,
    /// The file's length: blocks past it read as zeros without any work.
    len: u64,
    zeros: Vec<u8>,
}

impl<'a> SparseFile<'a> {
    pub fn new(file: &'a File) -> io::Result<SparseFile<'a>> {
        Ok(SparseFile {
            file,
            len: file.metadata()?.len(),
            zeros: Vec::new(),
        })
    }

    /// Writes `data` at `offset`; whole aligned blocks of zeros are made holes instead.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut at = 0;
        while at < data.len() {
            let position = offset + at as u64;
            let to_boundary = BLOCK - usize::try_from(position % BLOCK as u64).unwrap_or(0);
            let block = &data[at..data.len().min(at + to_boundary)];
            let zero = block.len() == BLOCK && is_zero(block);
            // Extend the run while blocks are of the same kind, so runs cost one call each.
            let mut end = at + block.len();
            while end < data.len() {
                let next = &data[end..data.len().min(end + BLOCK)];
                if next.len() < BLOCK || is_zero(next) != zero {
                    break;
                }
                end += BLOCK;
            }
            let run = &data[at..end];
            if zero {
                self.zero(position, run.len() as u64)?;
            } else {
                self.file.write_all_at(run, position)?;
                self.len = self.len.max(position + run.len() as u64);
            }
            at = end;
        }
        Ok(())
    }

    /// Makes a range read as zeros: a hole where the file already has data, nothing past its end.
    pub fn zero(&mut self, offset: u64, length: u64) -> io::Result<()> {
        let end = (offset + length).min(self.len);
        if offset >= end {
            return Ok(());
        }
        match punch_hole(self.file, offset, end - offset) {
            Ok(()) => Ok(()),
            Err(err) if is_unsupported(&err) => self.write_zeros(offset, end - offset),
            Err(err) => Err(err),
        }
    }

    fn write_zeros(&mut self, mut offset: u64, length: u64) -> io::Result<()> {
        if self.zeros.is_empty() {
            self.zeros = vec![0u8; CHUNK];
        }
        let end = offset + length;
        while offset < end {
            let n = usize::try_from(end - offset)
                .map_or(self.zeros.len(), |left| left.min(self.zeros.len()));
            self.file.write_all_at(&self.zeros[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }

    pub fn set_len(&mut self, size: u64) -> io::Result<()> {
        self.file.set_len(size)?;
        self.len = size;
        Ok(())
    }
}

fn punch_hole(file: &File, offset: u64, length: u64) -> io::Result<()> {
    // fallocate(2) takes signed offsets: larger ones are refused here rather than wrapped.
    if libc::off_t::try_from(offset).is_err() || libc::off_t::try_from(length).is_err() {
        return Err(io::Error::other("range too large for this platform"));
    }
    use rustix::fs::FallocateFlags;
    rustix::fs::fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        length,
    )
    .map_err(io::Error::from)
}

/// Filesystems without hole punching get zeros written instead.
fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
    )
}

/// Streams a whole image into an empty file, keeping holes: whole blocks go to [`SparseFile`],
/// the bytes of a block not yet complete wait for the rest, and [`SparseWriter::finish`] sets the
/// length (trailing holes only exist once it is set).
pub struct SparseWriter<'a> {
    image: SparseFile<'a>,
    pos: u64,
    /// Bytes of a block not yet complete.
    partial: Vec<u8>,
}

impl<'a> SparseWriter<'a> {
    /// Writes into `file`, which must be empty.
    pub fn new(file: &'a File) -> io::Result<SparseWriter<'a>> {
        Ok(SparseWriter {
            image: SparseFile::new(file)?,
            pos: 0,
            partial: Vec::with_capacity(BLOCK),
        })
    }

    fn put_blocks(&mut self, blocks: &[u8]) -> io::Result<()> {
        self.image.write(self.pos, blocks)?;
        self.pos += blocks.len() as u64;
        Ok(())
    }

    /// Writes what is left and sets the length; returns it.
    pub fn finish(mut self) -> io::Result<u64> {
        let rest = std::mem::take(&mut self.partial);
        self.put_blocks(&rest)?;
        self.image.set_len(self.pos)?;
        Ok(self.pos)
    }
}

impl Write for SparseWriter<'_> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let written = data.len();
        if !self.partial.is_empty() {
            let take = (BLOCK - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < BLOCK {
                return Ok(written);
            }
            let block = std::mem::take(&mut self.partial);
            self.put_blocks(&block)?;
            self.partial = block;
            self.partial.clear();
        }
        let whole = data.len() - data.len() % BLOCK;
        self.put_blocks(&data[..whole])?;
        self.partial.extend_from_slice(&data[whole..]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_detection_looks_at_every_byte() {
        let mut block = vec![0u8; BLOCK + 7];
        assert!(is_zero(&block));
        for at in [0, 63, 64, 4000, BLOCK + 6] {
            block[at] = 1;
            assert!(!is_zero(&block), "{at}");
            block[at] = 0;
        }
    }

    #[test]
    fn streamed_images_keep_holes_and_exact_bytes() {
        let mut data = vec![0u8; 3 * 1024 * 1024 + 100];
        data[5000] = 1;
        data[2 * 1024 * 1024 + 7] = 2;
        let last = data.len() - 1;
        data[last] = 3;
        let file = tempfile::tempfile().unwrap();
        let mut writer = SparseWriter::new(&file).unwrap();
        // Odd-sized writes exercise the partial-block path.
        for chunk in data.chunks(3001) {
            writer.write_all(chunk).unwrap();
        }
        assert_eq!(writer.finish().unwrap(), data.len() as u64);
        let mut back = Vec::new();
        (&file).read_to_end(&mut back).unwrap();
        assert!(back == data, "the written file differs");
        let allocated = file.metadata().unwrap().blocks() * 512;
        assert!(allocated < 64 * 1024, "{allocated} bytes allocated");
    }
}
