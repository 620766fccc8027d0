//! zstd's seekable format: the archive compressed as independent frames of [`FRAME`] bytes
//! each, followed by a seek table saying where each frame starts, so that any part of the
//! archive can be decompressed without what precedes it (`cephbackup mount` reads that way).
//!
//! The seek table is a skippable frame, which every zstd decoder passes over: `zstd -d`, and so
//! `tar --zstd`, read the file as any other. The table is the one zstd's `contrib/seekable_format`
//! defines (little-endian): the skippable frame's magic number and length, then per frame its
//! compressed and decompressed sizes (4 bytes each), then a footer of the frame count, a
//! descriptor byte (no per-frame checksums here: each frame carries zstd's own) and the seekable
//! magic number.
//!
//! [`SeekableWriter`] compresses frames on several threads at once, each frame by itself, and
//! writes them in order, with a bounded number in flight. [`SeekTable::read`] reads a file's table
//! back, trusting nothing: a table that does not add up to the file is no table.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Bytes of the archive in each frame. zstd's default level looks back 2 MiB at most anyway, so
/// frames of that size cost little of its ratio; a reader decompresses at most this to reach any
/// byte.
pub const FRAME: usize = 2 << 20;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// The skippable frame's magic number and length.
const SKIPPABLE_HEADER: u64 = 8;
/// The frame count, the descriptor and the seekable magic number.
const FOOTER: u64 = 9;
/// The descriptor bit saying each entry carries a checksum too.
const CHECKSUM_FLAG: u8 = 0x80;
/// The descriptor bits that must be zero.
const RESERVED: u8 = 0x7c;
/// The most frames a table read back may list (2^24 frames of 2 MiB: 32 TiB), so that a
/// crafted file cannot make a reader hold a table of any size.
const MAX_FRAMES: u64 = 1 << 24;
/// The largest frame a table read back may announce.
const MAX_FRAME: u64 = 64 << 20;

/// A frame to compress, and where its result goes.
type Job = (Vec<u8>, SyncSender<io::Result<Vec<u8>>>);

/// Writes the seekable format into `W`: see the module's documentation.
pub struct SeekableWriter<W: Write> {
    sink: W,
    /// The frame being filled.
    pending: Vec<u8>,
    /// Frames being compressed, oldest first, with their decompressed sizes.
    in_flight: VecDeque<(Receiver<io::Result<Vec<u8>>>, usize)>,
    max_in_flight: usize,
    /// `None` once finished: the workers then end.
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    /// Each written frame's compressed and decompressed sizes.
    table: Vec<(u32, u32)>,
}

impl<W: Write> SeekableWriter<W> {
    /// A writer compressing at `level` on `threads` threads.
    pub fn new(sink: W, level: i32, threads: u32) -> io::Result<SeekableWriter<W>> {
        let threads = usize::try_from(threads.max(1)).unwrap_or(1);
        let (jobs, queue) = mpsc::sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        let workers = (0..threads)
            .map(|_| {
                let queue = Arc::clone(&queue);
                std::thread::Builder::new()
                    .name("zstd-frames".into())
                    .spawn(move || compress_frames(&queue, level))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(SeekableWriter {
            sink,
            pending: Vec::with_capacity(FRAME),
            in_flight: VecDeque::new(),
            max_in_flight: 2 * threads,
            jobs: Some(jobs),
            workers,
            table: Vec::new(),
        })
    }

    /// Hands the pending frame to the workers, first writing out the oldest frame in flight if
    /// too many are.
    fn submit(&mut self) -> io::Result<()> {
        if self.in_flight.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        let frame = std::mem::replace(&mut self.pending, Vec::with_capacity(FRAME));
        let size = frame.len();
        let (reply, result) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or_else(finished)?;
        jobs.send((frame, reply)).map_err(|_| stopped())?;
        self.in_flight.push_back((result, size));
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some((result, size)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let compressed = result.recv().map_err(|_| stopped())??;
        self.sink.write_all(&compressed)?;
        let sizes = (u32::try_from(compressed.len()), u32::try_from(size));
        let (Ok(compressed), Ok(size)) = sizes else {
            return Err(io::Error::other(
                "a zstd frame too large for the seek table",
            ));
        };
        self.table.push((compressed, size));
        Ok(())
    }

    /// Writes the last frame and the seek table, and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.pending.is_empty() {
            self.submit()?;
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.jobs = None;
        for worker in self.workers.drain(..) {
            worker
                .join()
                .map_err(|_| io::Error::other("a zstd worker failed"))?;
        }
        let entries = u32::try_from(self.table.len())
            .ok()
            .filter(|&n| u64::from(n) <= MAX_FRAMES)
            .ok_or_else(|| io::Error::other("too many zstd frames for the seek table"))?;
        let length = u64::from(entries) * 8 + FOOTER;
        let mut table = Vec::with_capacity(usize::try_from(length + SKIPPABLE_HEADER).unwrap_or(0));
        table.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        table.extend_from_slice(&u32::try_from(length).unwrap_or(u32::MAX).to_le_bytes());
        for &(compressed, size) in &self.table {
            table.extend_from_slice(&compressed.to_le_bytes());
            table.extend_from_slice(&size.to_le_bytes());
        }
        table.extend_from_slice(&entries.to_le_bytes());
        table.push(0);
        table.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        self.sink.write_all(&table)?;
        Ok(self.sink)
    }
}

impl<W: Write> Write for SeekableWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let take = buf.len().min(FRAME - self.pending.len());
        self.pending.extend_from_slice(&buf[..take]);
        if self.pending.len() == FRAME {
            self.submit()?;
        }
        Ok(take)
    }

    /// Frames are written whole: nothing to flush before [`SeekableWriter::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn finished() -> io::Error {
    io::Error::other("the zstd writer was already finished")
}

fn stopped() -> io::Error {
    io::Error::other("the zstd workers stopped")
}

/// A worker: compresses the frames it is handed, each a zstd frame of its own with its content
/// checksum, until the writer is done.
fn compress_frames(queue: &Mutex<Receiver<Job>>, level: i32) {
    let mut compressor = zstd::bulk::Compressor::new(level).and_then(|mut compressor| {
        compressor.include_checksum(true)?;
        Ok(compressor)
    });
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok((frame, reply)) = job else {
            return;
        };
        let compressed = match &mut compressor {
            Ok(compressor) => compressor.compress(&frame),
            Err(err) => Err(io::Error::new(err.kind(), err.to_string())),
        };
        let _ = reply.send(compressed);
    }
}

/// Where a seekable file's frames lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeekTable {
    /// The decompressed size of every frame but the last, which holds at most that.
    frame: u64,
    /// Where each frame starts in the file, then where the last one ends.
    starts: Vec<u64>,
    /// The whole decompressed stream's length.
    len: u64,
}

impl SeekTable {
    /// The seek table at the end of `file`, when it has one that adds up: frames of one size
    /// (the last at most that) filling the file up to the table. `None` otherwise: the file is
    /// then read from its start, as any zstd file.
    pub fn read(file: &File) -> io::Result<Option<SeekTable>> {
        let file_len = file.metadata()?.len();
        if file_len < SKIPPABLE_HEADER + FOOTER {
            return Ok(None);
        }
        let mut footer = [0u8; 9];
        file.read_exact_at(&mut footer, file_len - FOOTER)?;
        let [n0, n1, n2, n3, descriptor, m0, m1, m2, m3] = footer;
        let frames = u64::from(u32::from_le_bytes([n0, n1, n2, n3]));
        if u32::from_le_bytes([m0, m1, m2, m3]) != SEEKABLE_MAGIC
            || descriptor & RESERVED != 0
            || frames == 0
            || frames > MAX_FRAMES
        {
            return Ok(None);
        }
        let entry = if descriptor & CHECKSUM_FLAG == 0 {
            8
        } else {
            12
        };
        let length = frames * entry + FOOTER;
        let Some(table_at) = file_len.checked_sub(length + SKIPPABLE_HEADER) else {
            return Ok(None);
        };
        let mut table = vec![0u8; usize::try_from(length + SKIPPABLE_HEADER).unwrap_or(0)];
        file.read_exact_at(&mut table, table_at)?;
        let word = |at: usize| {
            u32::from_le_bytes([table[at], table[at + 1], table[at + 2], table[at + 3]])
        };
        if word(0) != SKIPPABLE_MAGIC || u64::from(word(4)) != length {
            return Ok(None);
        }
        let mut starts = Vec::with_capacity(usize::try_from(frames + 1).unwrap_or(0));
        let (mut at, mut frame, mut len) = (0u64, 0u64, 0u64);
        let entry = usize::try_from(entry).unwrap_or(8);
        for index in 0..usize::try_from(frames).unwrap_or(0) {
            let base = 8 + index * entry;
            let (compressed, size) = (u64::from(word(base)), u64::from(word(base + 4)));
            let last = index + 1 == usize::try_from(frames).unwrap_or(0);
            if index == 0 {
                frame = size;
            }
            if compressed == 0 || size == 0 || size > MAX_FRAME || (!last && size != frame) {
                return Ok(None);
            }
            if last && size > frame {
                return Ok(None);
            }
            starts.push(at);
            at += compressed;
            len += size;
        }
        starts.push(at);
        if at != table_at {
            return Ok(None);
        }
        Ok(Some(SeekTable { frame, starts, len }))
    }

    /// The decompressed stream's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The frame holding decompressed byte `at`, and where that frame starts.
    pub fn frame_of(&self, at: u64) -> (usize, u64) {
        let index = at / self.frame;
        (
            usize::try_from(index).unwrap_or(usize::MAX),
            index * self.frame,
        )
    }

    /// Frame `index` of `file`, decompressed (at most [`MAX_FRAME`] bytes, and exactly what
    /// the table says).
    pub fn decompress(&self, file: &File, index: usize) -> io::Result<Vec<u8>> {
        let (Some(&start), Some(&end)) = (self.starts.get(index), self.starts.get(index + 1))
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no zstd frame {index}"),
            ));
        };
        let expected = if index + 2 == self.starts.len() {
            self.len - self.frame * (self.starts.len() as u64 - 2)
        } else {
            self.frame
        };
        let mut compressed = vec![0u8; usize::try_from(end - start).unwrap_or(0)];
        file.read_exact_at(&mut compressed, start)?;
        let capacity = usize::try_from(expected).unwrap_or(0);
        let decompressed = zstd::bulk::decompress(&compressed, capacity)?;
        if decompressed.len() != capacity {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "zstd frame {index} holds {} bytes, not {expected}",
                    decompressed.len()
                ),
            ));
        }
        Ok(decompressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Half noise, half runs: something to compress.
                if (i / 4096) % 2 == 0 {
                    state.to_le_bytes()[0]
                } else {
                    b'z'
                }
            })
            .collect()
    }

    fn written(data: &[u8], threads: u32) -> Vec<u8> {
        let mut writer = SeekableWriter::new(Vec::new(), 3, threads).unwrap();
        // Odd-sized writes, across frame boundaries.
        for piece in data.chunks(777_777) {
            writer.write_all(piece).unwrap();
        }
        writer.finish().unwrap()
    }

    fn file_of(bytes: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file
    }

    #[test]
    fn every_frame_decompresses_alone_and_the_whole_reads_as_one_zstd_stream() {
        for (len, threads) in [(3 * FRAME + 12_345, 2), (FRAME, 1), (10, 3)] {
            let data = noise(len);
            let bytes = written(&data, threads);
            let mut whole = Vec::new();
            zstd::stream::read::Decoder::new(&bytes[..])
                .unwrap()
                .read_to_end(&mut whole)
                .unwrap();
            assert_eq!(whole, data, "{len}");
            let file = file_of(&bytes);
            let table = SeekTable::read(file.as_file()).unwrap().unwrap();
            assert_eq!(table.len(), len as u64);
            let frames = len.div_ceil(FRAME);
            assert_eq!(table.starts.len(), frames + 1);
            for index in 0..frames {
                let start = index * FRAME;
                let end = (start + FRAME).min(len);
                assert_eq!(table.frame_of(start as u64), (index, start as u64));
                let frame = table.decompress(file.as_file(), index).unwrap();
                assert_eq!(frame, data[start..end], "{len} {index}");
            }
            assert!(table.decompress(file.as_file(), frames).is_err());
        }
    }

    #[test]
    fn a_table_that_does_not_add_up_is_no_table() {
        let bytes = written(&noise(FRAME + 5000), 2);
        let len = bytes.len();
        let footer = len - 9;
        let table = len - 9 - 16 - 8;
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut changed = |what: &'static str, at: usize, value: u8| {
            let mut copy = bytes.clone();
            copy[at] = value;
            cases.push((what, copy));
        };
        changed("seekable magic", len - 1, 0);
        changed("reserved descriptor bits", footer + 4, 0x04);
        changed("frame count", footer, 3);
        changed("skippable magic", table, 0);
        changed("skippable length", table + 4, 1);
        changed(
            "a compressed size",
            table + 8,
            bytes[table + 8].wrapping_add(1),
        );
        changed("a frame of no bytes", table + 12 + 2, 0);
        changed("a last frame larger than the others", table + 20 + 2, 0x30);
        cases.push(("no table", bytes[..table].to_vec()));
        cases.push(("nothing", Vec::new()));
        for (what, case) in cases {
            let file = file_of(&case);
            assert_eq!(SeekTable::read(file.as_file()).unwrap(), None, "{what}");
        }
        // The untouched file has one.
        assert!(SeekTable::read(file_of(&bytes).as_file())
            .unwrap()
            .is_some());
    }
}
