//! A compressed or encrypted backup file read at any offset of its raw stream, in no more local
//! space than the mount's cache is given.
//!
//! Such a file reads only from its start. It is read to its end once, when a point that uses it
//! is first opened ([`Packed::prove`]): its checksum is checked, a diff's records are indexed,
//! each [`CHUNK`] of its raw stream gets a keyed hash (an all-zero chunk is marked as a hole
//! instead), and the chunks fill the cache while it has room. Afterwards a chunk the cache lacks
//! is decoded again by a [`Cursor`], a reader of the file from its start, which goes on from
//! where it stopped when the next chunk asked for lies further on: reading the image in order
//! decodes each file once. A chunk decoded again must hash as it did when proven, so a file
//! changed since is never served. The cache is an unnamed file in `$TMPDIR` holding at most
//! `--cache-size` bytes; the chunks used least recently make room.
//!
//! A `.tar.zst` in zstd's seekable format (what this tool writes) needs no cursor: a chunk is
//! decompressed from the frames that hold it ([`Seekable`]), found through the file's seek table
//! and its member's header.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};

use super::point::from_start;
use crate::folder::chain::FolderFile;
use crate::folder::format::diffstream::{DiffHeader, DiffReader, Record};
use crate::folder::format::seekable::SeekTable;
use crate::folder::format::sparse::is_zero;
use crate::folder::naming::Compression;
use crate::folder::read::{self, Facts, Limit, Stored};

/// The unit the raw stream is hashed, cached and decoded again in.
pub const CHUNK: u64 = 1 << 20;
/// Readers decoding files again at once, by their [`cursor_weight`]: 64 gzip or encrypted ones
/// (so that a point of up to 64 such files is read in order without starting one over), or 4
/// zstd ones (a `.tar.zst` not in the seekable format).
const MAX_CURSOR_WEIGHT: u32 = 64;
/// What [`Packed::chunks`] holds for an all-zero chunk; a hash that happens to be this value is
/// moved off it.
const ZERO: u64 = 0;

/// A diff's records as the proving pass read them: what a point's map needs of it.
pub struct DiffIndex {
    pub header: DiffHeader,
    /// Each record's range of the image and, for a `Write`, where its payload starts in the
    /// raw stream (`None`: the range reads as zeros).
    pub records: Vec<(Range<u64>, Option<u64>)>,
}

/// A proven compressed or encrypted file, ready to be read at any offset.
pub struct Packed {
    /// This file's number in the cache.
    id: usize,
    stored: Stored,
    /// The stored file, held open: it is decoded again from this very file.
    file: File,
    /// The raw stream's length.
    len: u64,
    /// Each chunk's keyed hash, or [`ZERO`].
    chunks: Vec<u64>,
    /// How to reach any chunk directly, for a file in zstd's seekable format.
    seekable: Option<Seekable>,
}

/// Where a seekable `.tar.zst`'s member data lies: which frames hold a range of the raw stream.
struct Seekable {
    table: SeekTable,
    /// Where the member's data starts in the decompressed archive.
    data_start: u64,
    /// For a sparse member: each range of the image its stored data fills, as (offset, length,
    /// where its data starts among the stored data); zeros everywhere else.
    extents: Option<Vec<(u64, u64, u64)>>,
}

impl Seekable {
    /// The seek table and member layout of `file` (a `.tar.zst`), if it has a table that adds up
    /// and a member whose data lies in it.
    fn of(file: &File) -> Result<Option<Seekable>> {
        let Some(table) = SeekTable::read(file).context("cannot read the seek table")? else {
            return Ok(None);
        };
        let opened = from_start(file)?;
        let (data_start, header) = read::member_start(opened.reader, Compression::Zstd)?;
        let extents = header.extents().map(|extents| {
            let mut stored = 0;
            extents
                .iter()
                .map(|&(offset, len)| {
                    stored += len;
                    (offset, len, stored - len)
                })
                .collect()
        });
        let stored = extents
            .as_ref()
            .map_or(header.size, |extents: &Vec<(u64, u64, u64)>| {
                extents.last().map_or(0, |&(_, len, at)| at + len)
            });
        if table.len() < data_start.saturating_add(stored) {
            // A table of another archive's frames: read from the start instead.
            return Ok(None);
        }
        Ok(Some(Seekable {
            table,
            data_start,
            extents,
        }))
    }

    /// Fills `out` with the raw stream from `offset` on, from the frames that hold it;
    /// `memo` keeps the frame decompressed last (reads in order use each frame several times).
    fn read(&self, file: &File, offset: u64, out: &mut [u8], memo: &mut Memo) -> Result<()> {
        let Some(extents) = &self.extents else {
            return self.read_stored(file, offset, out, memo);
        };
        out.fill(0);
        let end = offset + out.len() as u64;
        let first = extents.partition_point(|&(start, len, _)| start + len <= offset);
        for &(start, len, stored) in extents[first..].iter().take_while(|(s, _, _)| *s < end) {
            let from = start.max(offset);
            let to = (start + len).min(end);
            let part = &mut out[usize::try_from(from - offset).unwrap_or(0)
                ..usize::try_from(to - offset).unwrap_or(0)];
            self.read_stored(file, stored + (from - start), part, memo)?;
        }
        Ok(())
    }

    /// Fills `out` with the member's stored data from `offset` on.
    fn read_stored(&self, file: &File, offset: u64, out: &mut [u8], memo: &mut Memo) -> Result<()> {
        let mut done = 0;
        while done < out.len() {
            let at = self.data_start + offset + done as u64;
            let (index, start) = self.table.frame_of(at);
            if memo.as_ref().is_none_or(|(held, _)| *held != index) {
                let frame = self
                    .table
                    .decompress(file, index)
                    .with_context(|| format!("cannot decompress its zstd frame {index}"))?;
                *memo = Some((index, frame));
            }
            let frame = memo
                .as_ref()
                .map(|(_, frame)| frame.as_slice())
                .unwrap_or_default();
            let within = usize::try_from(at - start).unwrap_or(usize::MAX);
            let available = frame.get(within..).unwrap_or_default();
            if available.is_empty() {
                bail!("its archive ends before byte {at}");
            }
            let take = available.len().min(out.len() - done);
            out[done..done + take].copy_from_slice(&available[..take]);
            done += take;
        }
        Ok(())
    }
}

/// The zstd frame decompressed last, by its number.
type Memo = Option<(usize, Vec<u8>)>;

/// What the proving pass of a file found.
pub struct Proving {
    pub packed: Packed,
    /// The diff's records, when the file is a diff.
    pub diff: Option<DiffIndex>,
    pub facts: Facts,
}

impl Packed {
    /// Reads the stored file `file` (`stored`, at most `limit`) to its end: see the module's
    /// documentation. `id` numbers it in `cache`, which it fills while there is room.
    pub fn prove(
        file: File,
        stored: &FolderFile,
        limit: &Limit,
        diff: bool,
        id: usize,
        cache: &std::sync::Mutex<Cache>,
    ) -> Result<Proving> {
        let opened = from_start(&file)?;
        let keys = lock(cache).keys.clone();
        let mut sealed = Vec::new();
        let (index, facts) =
            read::read_raw_opened(opened, &stored.name, &stored.file, limit, |raw| {
                let mut chunker = Chunker {
                    inner: raw,
                    pending: Vec::new(),
                    seal: |index: u64, bytes: &[u8]| {
                        let hash = chunk_hash(&keys, bytes);
                        if hash != ZERO {
                            lock(cache).offer(id, index, bytes);
                        }
                        sealed.push(hash);
                    },
                    sealed: 0,
                };
                let index = if diff {
                    Some(index_records(&mut chunker)?)
                } else {
                    None
                };
                io::copy(&mut chunker, &mut io::sink())?;
                chunker.finish();
                Ok(index)
            })?;
        let len = facts.raw_bytes;
        let seekable = match (stored.file.compression, stored.file.encrypted) {
            (Compression::Zstd, false) => Seekable::of(&file)?,
            _ => None,
        };
        Ok(Proving {
            packed: Packed {
                id,
                stored: Stored::from(&stored.file),
                file,
                len,
                chunks: sealed,
                seekable,
            },
            diff: index,
            facts,
        })
    }

    /// The raw stream's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The first offset at or after `offset` that holds data (`data`) or starts a hole, in
    /// chunks: `None` when no data follows; the stream's end when no hole does.
    pub fn next_in(&self, offset: u64, data: bool) -> Option<u64> {
        let first = usize::try_from(offset / CHUNK).unwrap_or(usize::MAX);
        let found = self
            .chunks
            .iter()
            .enumerate()
            .skip(first)
            .find(|(_, &hash)| (hash == ZERO) != data)
            .map(|(index, _)| (index as u64 * CHUNK).max(offset));
        match (found, data) {
            (Some(at), _) if at < self.len => Some(at),
            (_, true) => None,
            (_, false) => Some(self.len.max(offset)),
        }
    }

    /// A reader of the file's raw stream from its start.
    fn cursor(&self, clock: u64) -> Result<Cursor> {
        let reader = read::raw_reader(from_start(&self.file)?, self.stored)?;
        Ok(Cursor {
            id: self.id,
            next: 0,
            reader,
            used: clock,
            weight: cursor_weight(self.stored),
        })
    }
}

/// What a cursor of a file stored so costs in the budget of [`MAX_CURSOR_WEIGHT`]: a gzip or age
/// decoder holds some 100 KiB, a zstd one its frame's window, up to 8 MiB at zstd's levels.
fn cursor_weight(stored: Stored) -> u32 {
    match stored.compression {
        Compression::Zstd => 16,
        Compression::Gzip | Compression::None => 1,
    }
}

fn lock(cache: &std::sync::Mutex<Cache>) -> std::sync::MutexGuard<'_, Cache> {
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `bytes`' hash under the mount's secret keys, or [`ZERO`] when they are all zeros.
fn chunk_hash(keys: &RandomState, bytes: &[u8]) -> u64 {
    if is_zero(bytes) {
        return ZERO;
    }
    match keys.hash_one(bytes) {
        ZERO => ZERO + 1,
        hash => hash,
    }
}

/// Passes a raw stream through, sealing each [`CHUNK`] of it as it goes.
struct Chunker<'r, S: FnMut(u64, &[u8])> {
    inner: &'r mut dyn Read,
    pending: Vec<u8>,
    seal: S,
    sealed: u64,
}

impl<S: FnMut(u64, &[u8])> Read for Chunker<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let room = usize::try_from(CHUNK).unwrap_or(usize::MAX) - self.pending.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.pending.extend_from_slice(now);
            if self.pending.len() as u64 == CHUNK {
                self.seal_pending();
            }
            rest = later;
        }
        Ok(n)
    }
}

impl<S: FnMut(u64, &[u8])> Chunker<'_, S> {
    fn seal_pending(&mut self) {
        (self.seal)(self.sealed, &self.pending);
        self.sealed += 1;
        self.pending.clear();
    }

    /// Seals the last, shorter chunk.
    fn finish(mut self) {
        if !self.pending.is_empty() {
            self.seal_pending();
        }
    }
}

/// Reads a diff's records, and checks that nothing follows its end.
fn index_records(raw: &mut impl Read) -> Result<DiffIndex> {
    let mut reader = DiffReader::new(io::BufReader::new(raw))?;
    let header = reader.header().clone();
    let mut records = Vec::new();
    while let Some(record) = reader.next_record()? {
        records.push(match record {
            Record::Write { offset, length } => (offset..offset + length, Some(reader.position())),
            Record::Zero { offset, length } => (offset..offset + length, None),
        });
    }
    reader.finish()?;
    Ok(DiffIndex { header, records })
}

/// A reader decoding one file again, from its start.
struct Cursor {
    /// The file's number.
    id: usize,
    /// The chunk it reads next.
    next: u64,
    reader: Box<dyn Read + Send>,
    used: u64,
    /// Its share of [`MAX_CURSOR_WEIGHT`].
    weight: u32,
}

/// A cached chunk: where it lies in the cache file, and when it was last read.
struct Slot {
    at: u64,
    used: u64,
}

/// The chunks of compressed and encrypted files decoded so far, in a file of bounded size, and
/// the readers decoding them again.
pub struct Cache {
    file: File,
    /// Slots the file may hold.
    capacity: u64,
    slots: HashMap<(usize, u64), Slot>,
    /// Slots let go of, to fill first.
    free: Vec<u64>,
    /// Slots the file has ever had.
    grown: u64,
    /// Counts reads, so that the least recently used slot or cursor can be found.
    clock: u64,
    cursors: Vec<Cursor>,
    keys: RandomState,
    /// Whose zstd frame was decompressed last, and that frame.
    memo: (usize, Memo),
}

impl Cache {
    /// An empty cache in `$TMPDIR` of at most `bytes` (at least one chunk).
    pub fn new(bytes: u64) -> Result<Cache> {
        Ok(Cache {
            file: tempfile::tempfile()
                .context("cannot create the mount's cache file in $TMPDIR")?,
            capacity: (bytes / CHUNK).max(1),
            slots: HashMap::new(),
            free: Vec::new(),
            grown: 0,
            clock: 0,
            cursors: Vec::new(),
            keys: RandomState::new(),
            memo: (0, None),
        })
    }

    /// Keeps chunk `index` of file `id` if there is a free slot; a failure to write it only
    /// means it is not kept.
    fn offer(&mut self, id: usize, index: u64, bytes: &[u8]) {
        if self.slots.contains_key(&(id, index)) {
            return;
        }
        if let Some(at) = self.free_slot() {
            self.keep(id, index, bytes, at);
        }
    }

    /// A slot nobody uses, if the file may hold one more.
    fn free_slot(&mut self) -> Option<u64> {
        self.free.pop().or_else(|| {
            (self.grown < self.capacity).then(|| {
                self.grown += 1;
                self.grown - 1
            })
        })
    }

    /// Keeps chunk `index` of file `id`, making room by letting go of the chunk read least
    /// recently.
    fn store(&mut self, id: usize, index: u64, bytes: &[u8]) {
        let at = match self.free_slot() {
            Some(at) => at,
            None => {
                let Some((&oldest, _)) = self.slots.iter().min_by_key(|(_, slot)| slot.used) else {
                    return;
                };
                let Some(slot) = self.slots.remove(&oldest) else {
                    return;
                };
                slot.at
            }
        };
        self.keep(id, index, bytes, at);
    }

    fn keep(&mut self, id: usize, index: u64, bytes: &[u8], at: u64) {
        match self.file.write_all_at(bytes, at * CHUNK) {
            Ok(()) => {
                self.clock += 1;
                let used = self.clock;
                self.slots.insert((id, index), Slot { at, used });
            }
            Err(err) => {
                tracing::debug!("the mount's cache file cannot be written: {err}");
                self.free.push(at);
            }
        }
    }

    /// Fills `buf` with the raw stream of `packed` from `offset` on.
    pub fn read(&mut self, packed: &Packed, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let index = at / CHUNK;
            let within = at % CHUNK;
            let hash = usize::try_from(index)
                .ok()
                .and_then(|index| packed.chunks.get(index))
                .copied();
            let (Some(hash), true) = (hash, at < packed.len) else {
                bail!("a read past the end of its stream, at byte {at}");
            };
            let left = (CHUNK - within).min(packed.len - at);
            let take = (buf.len() - done).min(usize::try_from(left).unwrap_or(0));
            let out = &mut buf[done..done + take];
            self.clock += 1;
            let clock = self.clock;
            if hash == ZERO {
                out.fill(0);
            } else if let Some(slot) = self.slots.get_mut(&(packed.id, index)) {
                slot.used = clock;
                self.file
                    .read_exact_at(out, slot.at * CHUNK + within)
                    .context("cannot read the mount's cache file")?;
            } else {
                let chunk = match &packed.seekable {
                    Some(seekable) => self.decompress(packed, seekable, index, hash)?,
                    None => self.decode(packed, index, hash)?,
                };
                let from = usize::try_from(within).unwrap_or(0);
                let part = chunk
                    .get(from..from + take)
                    .context("a chunk shorter than proven")?;
                out.copy_from_slice(part);
                self.store(packed.id, index, &chunk);
            }
            done += take;
        }
        Ok(())
    }

    /// Chunk `index` of the seekable `packed`, from the frames that hold it, checked against its
    /// proven `hash`.
    fn decompress(
        &mut self,
        packed: &Packed,
        seekable: &Seekable,
        index: u64,
        hash: u64,
    ) -> Result<Vec<u8>> {
        let start = index * CHUNK;
        let len = CHUNK.min(packed.len - start);
        let mut chunk = vec![0u8; usize::try_from(len).unwrap_or(0)];
        if self.memo.0 != packed.id {
            self.memo = (packed.id, None);
        }
        seekable.read(&packed.file, start, &mut chunk, &mut self.memo.1)?;
        if chunk_hash(&self.keys, &chunk) != hash {
            bail!("its chunk at byte {start} is not what was proven");
        }
        Ok(chunk)
    }

    /// Chunk `index` of `packed`, decoded again by the nearest cursor at or before it (a new one
    /// from the file's start when there is none) and checked against its proven `hash`.
    fn decode(&mut self, packed: &Packed, index: u64, hash: u64) -> Result<Vec<u8>> {
        self.clock += 1;
        let clock = self.clock;
        let nearest = (0..self.cursors.len())
            .filter(|&c| self.cursors[c].id == packed.id && self.cursors[c].next <= index)
            .max_by_key(|&c| self.cursors[c].next);
        let c = match nearest {
            Some(c) => c,
            None => {
                let cursor = packed.cursor(clock)?;
                // Room is made by letting go of the cursors that are cheapest to start over:
                // those nearest their file's start.
                while !self.cursors.is_empty()
                    && self.cursors.iter().map(|c| c.weight).sum::<u32>() + cursor.weight
                        > MAX_CURSOR_WEIGHT
                {
                    let cheapest = (0..self.cursors.len())
                        .min_by_key(|&c| (self.cursors[c].next, self.cursors[c].used));
                    if let Some(cheapest) = cheapest {
                        self.cursors.swap_remove(cheapest);
                    }
                }
                self.cursors.push(cursor);
                self.cursors.len() - 1
            }
        };
        let found = self.advance(c, packed, index);
        match found {
            Ok(chunk) if chunk_hash(&self.keys, &chunk) == hash => {
                self.cursors[c].used = clock;
                Ok(chunk)
            }
            Ok(_) => {
                self.cursors.swap_remove(c);
                bail!(
                    "its chunk at byte {} changed since it was proven",
                    index * CHUNK
                )
            }
            Err(err) => {
                self.cursors.swap_remove(c);
                Err(err)
            }
        }
    }

    /// Moves cursor `c` on to chunk `index` and returns that chunk; the chunks it passes are
    /// kept while the cache has free room.
    fn advance(&mut self, c: usize, packed: &Packed, index: u64) -> Result<Vec<u8>> {
        loop {
            let cursor = &mut self.cursors[c];
            let mut chunk = Vec::new();
            (&mut cursor.reader).take(CHUNK).read_to_end(&mut chunk)?;
            if chunk.is_empty() {
                bail!("its stream ended before byte {}", index * CHUNK);
            }
            let at = cursor.next;
            cursor.next += 1;
            if at == index {
                return Ok(chunk);
            }
            let proven = usize::try_from(at)
                .ok()
                .and_then(|at| packed.chunks.get(at))
                .copied();
            if proven.is_some_and(|hash| hash != ZERO && chunk_hash(&self.keys, &chunk) == hash) {
                self.offer(packed.id, at, &chunk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    /// A plain file of `raw`, as a proving pass would have left it: a raw stream read through
    /// the cache as a compressed one is.
    fn packed(raw: &[u8], cache: &Cache) -> (Packed, tempfile::NamedTempFile) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), raw).unwrap();
        let chunks = raw
            .chunks(MIB)
            .map(|chunk| chunk_hash(&cache.keys, chunk))
            .collect();
        let packed = Packed {
            id: 7,
            stored: Stored::from(crate::folder::naming::Compression::None),
            file: file.reopen().unwrap(),
            len: raw.len() as u64,
            chunks,
            seekable: None,
        };
        (packed, file)
    }

    /// Chunks: data, zeros, data, data, zeros, and a short tail of data.
    fn image() -> Vec<u8> {
        let mut raw = vec![0u8; 5 * MIB + 1000];
        for (chunk, fill) in [(0, 1u8), (2, 2), (3, 3), (5, 5)] {
            let end = ((chunk + 1) * MIB).min(raw.len());
            raw[chunk * MIB..end].fill(fill);
        }
        raw
    }

    fn read(cache: &mut Cache, packed: &Packed, offset: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0xaa; len];
        cache.read(packed, offset as u64, &mut out).unwrap();
        out
    }

    #[test]
    fn chunks_are_served_through_a_bounded_cache_and_holes_are_never_decoded() {
        let raw = image();
        let mut cache = Cache::new(2 * CHUNK).unwrap();
        let (packed, _file) = packed(&raw, &cache);
        // Across chunk boundaries, backwards and forwards, the tail included.
        let reads = [
            (0, 10),
            (MIB - 5, 10),
            (3 * MIB, MIB),
            (2 * MIB + 7, 2 * MIB),
        ];
        for (offset, len) in reads.into_iter().chain([(5 * MIB, 1000), (0, raw.len())]) {
            assert_eq!(
                read(&mut cache, &packed, offset, len),
                raw[offset..offset + len]
            );
            assert!(cache.slots.len() <= 2 && cache.grown <= 2);
            assert!(cache.cursors.iter().map(|c| c.weight).sum::<u32>() <= MAX_CURSOR_WEIGHT);
        }
        // Only data chunks are kept; the whole last read left the last two in the cache.
        let mut kept: Vec<u64> = cache.slots.keys().map(|&(_, index)| index).collect();
        kept.sort_unstable();
        assert_eq!(kept, [3, 5]);
        let mut past = [0u8; 1];
        assert!(cache.read(&packed, raw.len() as u64, &mut past).is_err());
    }

    #[test]
    fn a_chunk_that_decodes_differently_than_proven_is_refused() {
        let raw = image();
        let mut cache = Cache::new(CHUNK).unwrap();
        let (packed, file) = packed(&raw, &cache);
        assert_eq!(read(&mut cache, &packed, 0, 10), raw[..10]);
        let mut changed = raw.clone();
        changed[3 * MIB + 9] = 0xee;
        std::fs::write(file.path(), &changed).unwrap();
        // The cached chunk and a chunk untouched are served; the changed one is not.
        assert_eq!(read(&mut cache, &packed, 0, 10), raw[..10]);
        assert_eq!(
            read(&mut cache, &packed, 2 * MIB, 10),
            raw[2 * MIB..2 * MIB + 10]
        );
        let mut out = [0u8; 10];
        let err = cache.read(&packed, 3 * MIB as u64, &mut out).unwrap_err();
        assert!(
            format!("{err:#}").contains("changed since it was proven"),
            "{err:#}"
        );
    }

    /// `image` written as a `.tar.zst` the way a backup writes it, sparse when `holes`.
    fn seekable_archive(image: &[u8], holes: bool) -> File {
        use crate::folder::format::archive::{
            write_archive, Compressor, DataOfExtents, Member, SparseMapBuilder,
        };
        let mut builder = SparseMapBuilder::new(image.len() as u64, 1000);
        for (index, block) in image.chunks(4096).enumerate() {
            if !holes || !is_zero(block) {
                builder
                    .push(index as u64 * 4096, block.len() as u64)
                    .unwrap();
            }
        }
        let map = builder.finish();
        let member = Member {
            name: "vm@BACKUPUTC20261204T000000.full",
            size: image.len() as u64,
            mtime: chrono::Utc::now(),
            sparse: Some(&map),
        };
        let compressor = Compressor::new(Compression::Zstd, None, Some(2)).unwrap();
        let mut file = tempfile::tempfile().unwrap();
        let mut data = DataOfExtents::new(image, &map);
        write_archive(&mut data, &member, &compressor, &mut file).unwrap();
        file
    }

    #[test]
    fn a_seekable_archive_is_read_at_any_offset_from_the_frames_that_hold_it() {
        let mut image = vec![0u8; 7 * MIB + 123];
        for (index, byte) in image.iter_mut().enumerate() {
            // Data in some 4 KiB blocks only, so that a sparse member has many ranges.
            if (index / 4096) % 3 != 1 && index < 6 * MIB {
                *byte = u8::try_from(index % 251).unwrap();
            }
        }
        for holes in [true, false] {
            let file = seekable_archive(&image, holes);
            let seekable = Seekable::of(&file).unwrap().expect("a seek table");
            assert_eq!(seekable.extents.is_some(), holes);
            let mut memo = None;
            let reads = [
                (0, 10),
                (4090, 10_000),
                (2 * MIB - 3, 2 * MIB + 7),
                (5 * MIB + 1, 2 * MIB + 122),
                (0, image.len()),
            ];
            for (offset, len) in reads {
                let mut out = vec![0xaa; len];
                seekable
                    .read(&file, offset as u64, &mut out, &mut memo)
                    .unwrap();
                assert!(out == image[offset..offset + len], "{holes} {offset} {len}");
            }
            if !holes {
                // Beyond the archive's frames.
                let mut past = [0u8; 1];
                let beyond = image.len() as u64 + (8 << 20);
                assert!(seekable.read(&file, beyond, &mut past, &mut memo).is_err());
            }
        }
    }

    #[test]
    fn data_and_holes_are_found_by_chunk() {
        let raw = image();
        let cache = Cache::new(CHUNK).unwrap();
        let (packed, _file) = packed(&raw, &cache);
        let mib = CHUNK;
        let len = raw.len() as u64;
        let cases = [
            (0, true, Some(0)),
            (mib + 3, true, Some(2 * mib)),
            (4 * mib, true, Some(5 * mib)),
            (len, true, None),
            (0, false, Some(mib)),
            (mib + 3, false, Some(mib + 3)),
            (2 * mib, false, Some(4 * mib)),
            (5 * mib, false, Some(len)),
        ];
        for (offset, data, expected) in cases {
            assert_eq!(packed.next_in(offset, data), expected, "{offset} {data}");
        }
    }

    #[test]
    fn the_proving_pass_seals_every_chunk_once_the_last_one_short() {
        let raw = image();
        let mut sealed = Vec::new();
        let mut source: &[u8] = &raw;
        let mut chunker = Chunker {
            inner: &mut source,
            pending: Vec::new(),
            seal: |index: u64, bytes: &[u8]| sealed.push((index, bytes.len(), bytes[0])),
            sealed: 0,
        };
        // Odd-sized reads, as a decompressor hands them over.
        let mut buf = vec![0u8; 333_333];
        while chunker.read(&mut buf).unwrap() > 0 {}
        chunker.finish();
        let full = MIB;
        assert_eq!(
            sealed,
            [
                (0, full, 1),
                (1, full, 0),
                (2, full, 2),
                (3, full, 3),
                (4, full, 0),
                (5, 1000, 5)
            ]
        );
    }
}
