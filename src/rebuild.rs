//! Rebuilding a restore point as a local raw image file, with no cluster at all.
//!
//! The full backup is written with holes where it is zero, then each diff is replayed onto the
//! file: written extents are written (their all-zero blocks become holes), zeroed extents are
//! punched out, and the size record sets the length. The file therefore stays as sparse as the
//! image, and memory stays bounded whatever the image size. Every link is read through
//! [`stored::read_raw`], so its checksum and, for diffs, its structure and snapshot names are
//! checked in the same pass; a problem stops the rebuild with an error naming the file.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};
use tracing::info;

use crate::chain::Stored;
use crate::diffstream::{DiffReader, Record};
use crate::{interrupt, store, stored};

/// Aligned all-zero blocks of this size become holes.
const BLOCK: usize = 4096;
const CHUNK: usize = 1 << 20;

/// A raw image file being changed in place, keeping holes where the image is zero.
struct SparseImage<'a> {
    file: &'a File,
    /// The file's length: blocks past it read as zeros without any work.
    len: u64,
    zeros: Vec<u8>,
}

impl<'a> SparseImage<'a> {
    fn new(file: &'a File) -> io::Result<SparseImage<'a>> {
        Ok(SparseImage {
            file,
            len: file.metadata()?.len(),
            zeros: Vec::new(),
        })
    }

    /// Writes `data` at `offset`; whole aligned blocks of zeros are made holes instead.
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut at = 0;
        while at < data.len() {
            let position = offset + at as u64;
            let to_boundary = BLOCK - (position % BLOCK as u64) as usize;
            let block = &data[at..data.len().min(at + to_boundary)];
            let zero = block.len() == BLOCK && block.iter().all(|&b| b == 0);
            // Extend the run while blocks are of the same kind, so runs cost one call each.
            let mut end = at + block.len();
            while end < data.len() {
                let next = &data[end..data.len().min(end + BLOCK)];
                if next.len() < BLOCK || next.iter().all(|&b| b == 0) != zero {
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
    fn zero(&mut self, offset: u64, length: u64) -> io::Result<()> {
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
            let n = self.zeros.len().min((end - offset) as usize);
            self.file.write_all_at(&self.zeros[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }

    fn set_len(&mut self, size: u64) -> io::Result<()> {
        self.file.set_len(size)?;
        self.len = size;
        Ok(())
    }
}

fn punch_hole(file: &File, offset: u64, length: u64) -> io::Result<()> {
    let (Ok(offset), Ok(length)) = (libc::off_t::try_from(offset), libc::off_t::try_from(length))
    else {
        return Err(io::Error::other("range too large for this platform"));
    };
    // SAFETY: fallocate(2) only reads its integer arguments; the descriptor belongs to `file`,
    // which outlives the call.
    let result = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            length,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Filesystems without hole punching get zeros written instead.
fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
    )
}

/// Replays one checked diff stream onto the image file and sets its length to the diff's size.
fn apply_diff<R: Read>(mut diff: DiffReader<R>, image: &mut SparseImage) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    while let Some(record) = diff.next_record()? {
        interrupt::check()?;
        match record {
            Record::Write { offset, .. } => {
                let mut at = offset;
                loop {
                    let n = diff.read_data(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    image.write(at, &buf[..n])?;
                    at += n as u64;
                }
            }
            Record::Zero { offset, length } => image.zero(offset, length)?,
        }
    }
    let size = diff.header().size;
    diff.finish()?;
    image.set_len(size)?;
    Ok(())
}

/// Fails the stream once SIGINT or SIGTERM has arrived: a rebuild runs no child that the signal
/// could stop, and a large full backup must not be written to the end first.
struct StopOnSignal<R>(R);

impl<R: Read> Read for StopOnSignal<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        interrupt::check().map_err(io::Error::other)?;
        self.0.read(buf)
    }
}

/// Rebuilds the point `route` ends at into `out`, an empty file, from the files in `dir`.
/// Returns how many of the files had a checksum file to check them against.
pub fn rebuild(dir: &Path, route: &[&Stored], out: &mut File) -> Result<usize> {
    let mut checked = 0;
    for (number, link) in route.iter().enumerate() {
        interrupt::check()?;
        let path = dir.join(&link.name);
        info!("applying {} ({} of {})", link.name, number + 1, route.len());
        let recorded = stored::recorded_digest(dir, &link.name)?;
        let ((), facts) = stored::read_raw(&path, link.file.compressed, |raw| {
            let mut raw = BufReader::with_capacity(CHUNK, StopOnSignal(raw));
            if link.file.is_full() {
                store::write_raw(&mut raw, out)?;
                return Ok(());
            }
            let diff = DiffReader::new(raw)?;
            link.check_diff_header(diff.header())
                .map_err(anyhow::Error::msg)?;
            apply_diff(diff, &mut SparseImage::new(out)?)
        })
        .with_context(|| format!("{}", path.display()))?;
        stored::check_digest(recorded.as_deref(), &facts)
            .with_context(|| format!("{}", path.display()))?;
        checked += usize::from(recorded.is_some());
    }
    out.sync_all().context("cannot sync the rebuilt image")?;
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffstream::{apply_to_file, DiffHeader, DiffWriter};
    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1 << 20;

    fn diff(size: u64, records: &[(u64, Option<Vec<u8>>, u64)]) -> Vec<u8> {
        let header = DiffHeader {
            from_snap: Some("a".into()),
            to_snap: Some("b".into()),
            size,
        };
        let mut w = DiffWriter::new(Vec::new(), &header).unwrap();
        for (offset, data, length) in records {
            match data {
                Some(data) => w.write_data(*offset, data).unwrap(),
                None => w.write_zero(*offset, *length).unwrap(),
            }
        }
        w.finish().unwrap()
    }

    fn apply(stream: &[u8], file: &File) {
        let reader = DiffReader::new(stream).unwrap();
        apply_diff(reader, &mut SparseImage::new(file).unwrap()).unwrap();
    }

    #[test]
    fn replays_like_the_plain_applier_and_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let ours = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("ours"))
            .unwrap();
        let mut plain = tempfile::tempfile().unwrap();
        let base: Vec<u8> = (0..4 * MIB).map(|i| (i % 253) as u8 | 1).collect();
        let mut with_zeros = vec![0u8; 3 * BLOCK + 100];
        with_zeros[BLOCK + 5] = 9;
        let streams = [
            diff(4 * MIB, &[(0, Some(base.clone()), 0)]),
            diff(
                6 * MIB,
                &[
                    (100, Some(vec![3u8; 10]), 0),
                    (8192, None, 2 * MIB),
                    (3 * MIB + 17, Some(with_zeros.clone()), 0),
                    (5 * MIB, Some(vec![4u8; 1000]), 0),
                ],
            ),
            // Shrinks, then the next grows again: the cut-off part must come back as zeros.
            diff(2 * MIB, &[(MIB, None, 4096)]),
            diff(5 * MIB, &[(4 * MIB, Some(vec![0u8; 2 * BLOCK]), 0)]),
        ];
        for stream in &streams {
            apply(stream, &ours);
            apply_to_file(&stream[..], &mut plain).unwrap();
        }
        let mut expected = Vec::new();
        use std::io::Seek;
        plain.rewind().unwrap();
        plain.read_to_end(&mut expected).unwrap();
        let got = std::fs::read(dir.path().join("ours")).unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the rebuilt file differs");
        // Only the first two blocks hold data: the zeroed range and everything the shrink cut
        // off are holes, and the zero blocks written past the end never became data.
        let allocated = ours.metadata().unwrap().blocks() * 512;
        assert!(allocated <= 64 * 1024, "{allocated} bytes allocated");
    }
}
