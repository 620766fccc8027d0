//! Rebuilding a restore point as a local raw image file, with no cluster at all.
//!
//! The full backup is written with holes where it is zero, then each diff is replayed onto the
//! file: written extents are written (their all-zero blocks become holes), zeroed extents are
//! punched out, and the size record sets the length. The file therefore stays as sparse as the
//! image, and memory stays bounded whatever the image size. Every link is read through
//! [`read::read_raw`] within its [`Limits`], so its checksum and, for diffs, its structure,
//! snapshot names and size record are checked in the same pass; a problem stops the rebuild with
//! an error naming the backup file. A failure to write the image (a full disk, a read-only
//! folder) is a [`TargetFailed`] naming the target instead: it is never the backup file's fault.

use std::fs::File;
use std::io::{self, BufReader, Read};

use anyhow::{Context, Result};
use tracing::info;

use crate::folder::chain::FolderFile;
use crate::folder::door::Door;
use crate::folder::format::diffstream::{DiffReader, Record};
use crate::folder::format::sparse::SparseFile as SparseImage;
use crate::folder::read::{self, Limits};
use crate::interrupt;
use crate::output::{escaped, escaped_path};

const CHUNK: usize = 1 << 20;

/// A write to the image being rebuilt failed: the target's fault (a full disk, a read-only
/// folder), never the backup file's, so the message names the target.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {target}")]
pub struct TargetFailed {
    pub target: String,
    #[source]
    pub source: io::Error,
}

/// Where the image goes, for messages about writing it.
struct Target<'a> {
    image: SparseImage<'a>,
    name: &'a str,
}

impl Target<'_> {
    fn failed(&self, source: io::Error) -> TargetFailed {
        TargetFailed {
            target: self.name.to_string(),
            source,
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), TargetFailed> {
        self.image.write(offset, data).map_err(|e| self.failed(e))
    }

    fn zero(&mut self, offset: u64, length: u64) -> Result<(), TargetFailed> {
        self.image.zero(offset, length).map_err(|e| self.failed(e))
    }

    fn set_len(&mut self, size: u64) -> Result<(), TargetFailed> {
        self.image.set_len(size).map_err(|e| self.failed(e))
    }
}

/// Copies a full backup's raw stream into the (empty) image, leaving holes for zero blocks.
fn write_full(raw: &mut dyn Read, target: &mut Target) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    loop {
        let n = match raw.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err.into()),
        };
        target.write(at, &buf[..n])?;
        at += n as u64;
    }
    // Trailing zero blocks were left as holes past the end: the length says they are there.
    target.set_len(at)?;
    Ok(())
}

/// Replays one checked diff stream onto the image file and sets its length to the diff's size.
fn apply_diff<R: Read>(mut diff: DiffReader<R>, target: &mut Target) -> Result<()> {
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
                    target.write(at, &buf[..n])?;
                    at += n as u64;
                }
            }
            Record::Zero { offset, length } => target.zero(offset, length)?,
        }
    }
    let size = diff.header().size;
    diff.finish()?;
    target.set_len(size)?;
    Ok(())
}

/// Rebuilds the point `route` ends at into `out`, an empty file called `target` in messages, from
/// the files in `dir`, each read within its limit. Returns how many of the files had a checksum
/// file to check them against. An error names the backup file that caused it, or the target when
/// writing it failed.
pub fn rebuild(
    dir: &dyn Door,
    route: &[&FolderFile],
    limits: &Limits,
    out: &File,
    target: &str,
) -> Result<usize> {
    let mut checked = 0;
    for (number, link) in route.iter().enumerate() {
        interrupt::check()?;
        info!(
            "applying {} ({} of {})",
            escaped(&link.name),
            number + 1,
            route.len()
        );
        checked += usize::from(apply_link(dir, link, limits, out, target)?);
    }
    sync(out, target)?;
    Ok(checked)
}

/// Applies one file of a route to `out` (called `target` in messages): a full backup is written
/// into the empty file, a diff replayed onto it. True when the file had a checksum file to check
/// it against. An error names the backup file, or the target when writing it failed.
pub fn apply_link(
    dir: &dyn Door,
    link: &FolderFile,
    limits: &Limits,
    out: &File,
    target: &str,
) -> Result<bool> {
    let shown = escaped_path(&dir.location_of(&link.name));
    let recorded = read::recorded_digest(dir, &link.name)?;
    let read = read::read_raw(dir, &link.name, &link.file, &limits.of(link), |raw| {
        let mut image = Target {
            image: SparseImage::new(out).map_err(|e| TargetFailed {
                target: target.to_string(),
                source: e,
            })?,
            name: target,
        };
        if link.file.is_full() {
            return write_full(raw, &mut image);
        }
        let diff = DiffReader::new(BufReader::with_capacity(CHUNK, raw))?;
        read::check_diff_header(link, diff.header()).map_err(anyhow::Error::msg)?;
        apply_diff(diff, &mut image)
    });
    let ((), facts) = match read {
        Ok(read) => read,
        // The target's own failure is not about the backup file: say only what failed.
        Err(err) if err.downcast_ref::<TargetFailed>().is_some() => return Err(err),
        Err(err) => return Err(err.context(shown)),
    };
    read::check_digest(recorded.as_deref(), &facts).context(shown)?;
    Ok(recorded.is_some())
}

/// Syncs the rebuilt image; a failure is the target's.
pub fn sync(out: &File, target: &str) -> Result<(), TargetFailed> {
    out.sync_all().map_err(|source| TargetFailed {
        target: target.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::format::diffstream::apply_to_file;
    use crate::folder::format::sparse::BLOCK;
    use crate::test_fixtures::{diff_stream, Rec};
    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1 << 20;

    /// A diff of an image of `size` bytes carrying `records`.
    fn diff(size: u64, records: &[Rec]) -> Vec<u8> {
        diff_stream("a", "b", size, records)
    }

    fn apply(stream: &[u8], file: &File) {
        let reader = DiffReader::new(stream).unwrap();
        let mut target = Target {
            image: SparseImage::new(file).unwrap(),
            name: "test",
        };
        apply_diff(reader, &mut target).unwrap();
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
            diff(4 * MIB, &[Rec::W(0, base.clone())]),
            diff(
                6 * MIB,
                &[
                    Rec::W(100, vec![3u8; 10]),
                    Rec::Z(8192, 2 * MIB),
                    Rec::W(3 * MIB + 17, with_zeros.clone()),
                    Rec::W(5 * MIB, vec![4u8; 1000]),
                ],
            ),
            // Shrinks, then the next grows again: the cut-off part must come back as zeros.
            diff(2 * MIB, &[Rec::Z(MIB, 4096)]),
            diff(5 * MIB, &[Rec::W(4 * MIB, vec![0u8; 2 * BLOCK])]),
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
