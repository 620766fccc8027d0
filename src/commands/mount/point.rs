//! A restore point opened for reading in place: its chain's files opened once (regular files
//! only, never through a link), the diffs' records indexed into a [`PointMap`], and each file
//! proven before a byte of it is served.
//!
//! A file is proven the way a restore proves it ([`read::read_raw`]): read once to the end, its
//! SHA-256 compared with its `.sha256` file when it has one (the original's files have none and
//! are served with a warning), a diff's records checked as they pass. A plain file is indexed
//! without reading its payloads and proven on the first read of the point; a compressed or
//! encrypted one is proven and indexed in one pass when it is opened, and read through the
//! mount's cache ([`super::packed`]). A file that fails is never served: reads of the ranges it
//! holds fail (EIO through the mount), the error is said once on stderr, and the ranges other
//! files hold read as usual.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use anyhow::{bail, Context, Result};
use tracing::{info, warn};

use super::packed::{Cache, DiffIndex, Packed};
use crate::folder::chain::FolderFile;
use crate::folder::door::{Door, Opened};
use crate::folder::format::diffstream::{DiffReader, Record};
use crate::folder::format::point_map::{PointMap, Source};
use crate::folder::naming::SnapName;
use crate::folder::read::{self, Limits};
use crate::output::escaped_path;

/// What is known of a stored file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Proof {
    NotYet,
    /// Its SHA-256 is the one its `.sha256` file records.
    Proven,
    /// It has no `.sha256` file (the original tool's), and read to the end without a problem.
    NoChecksum,
    /// Why it must not be served.
    Failed(String),
}

/// How a stored file's raw stream is read.
enum Access {
    /// Neither compressed nor encrypted: the file is its raw stream.
    Plain(File),
    /// Read through the cache, with the records of the diff it is (read when it was proven).
    Packed(Box<Packed>, Option<DiffIndex>),
}

/// One backup file of the folder, open for reading, shared by every point whose route uses it.
pub struct StoredFile {
    stored: FolderFile,
    access: Access,
    /// The SHA-256 its `.sha256` file records, if it has one.
    recorded: Option<String>,
    proof: Mutex<Proof>,
}

impl StoredFile {
    /// Proves the file unless that was done; the reason it must not be served, if any.
    fn prove(&self, folder: &Folder) -> Option<String> {
        let mut proof = self.proof.lock().unwrap_or_else(PoisonError::into_inner);
        if *proof == Proof::NotYet {
            let shown = escaped_path(&folder.dir.location_of(&self.stored.name));
            *proof = said(&shown, self.check(folder));
        }
        match &*proof {
            Proof::Failed(why) => Some(why.clone()),
            _ => None,
        }
    }

    /// Reads the plain file to the end as a restore would: `true` when its checksum proved it,
    /// `false` when it has none to check.
    fn check(&self, folder: &Folder) -> Result<bool> {
        let Access::Plain(file) = &self.access else {
            bail!("it was proven when opened");
        };
        let limit = folder.limits.of(&self.stored);
        let opened = from_start(file)?;
        let name = &self.stored.name;
        let ((), facts) = read::read_raw_opened(opened, name, &self.stored.file, &limit, |raw| {
            io::copy(raw, &mut io::sink())?;
            Ok(())
        })?;
        read::check_digest(self.recorded.as_deref(), &facts)?;
        Ok(self.recorded.is_some())
    }

    /// The raw stream's length.
    fn len(&self) -> io::Result<u64> {
        match &self.access {
            Access::Plain(file) => Ok(file.metadata()?.len()),
            Access::Packed(packed, _) => Ok(packed.len()),
        }
    }

    /// Fills `out` with the raw stream from `offset` on.
    fn read_at(&self, folder: &Folder, out: &mut [u8], offset: u64) -> Result<()> {
        match &self.access {
            Access::Plain(file) => Ok(file.read_exact_at(out, offset)?),
            Access::Packed(packed, _) => folder
                .cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .read(packed, offset, out),
        }
    }

    /// The next data (`data`) or hole at or after `offset`; `None` when there is none.
    fn next_in(&self, offset: u64, data: bool) -> io::Result<Option<u64>> {
        match &self.access {
            Access::Plain(file) => next_in(file, offset, data),
            Access::Packed(packed, _) => Ok(packed.next_in(offset, data)),
        }
    }
}

/// What proving a file found, said on stderr: `Ok(true)` proven by its checksum, `Ok(false)`
/// read without a problem but with no checksum to compare, an error why it must not be served.
fn said(shown: &str, checked: Result<bool>) -> Proof {
    match checked {
        Ok(true) => {
            info!("{shown}: proven by its .sha256 file");
            Proof::Proven
        }
        Ok(false) => {
            warn!("{shown} has no .sha256 file: served as read, unproven");
            Proof::NoChecksum
        }
        Err(err) => {
            let why = format!("{err:#}");
            tracing::error!("{shown}: {why}; reads of the ranges it holds fail (EIO)");
            Proof::Failed(why)
        }
    }
}

/// A stored file opened and checked before it was needed, and its recorded checksum.
struct Held {
    file: File,
    recorded: Option<String>,
}

/// The stored file `file`, read from its first byte.
pub fn from_start(file: &File) -> Result<Opened> {
    let len = file
        .metadata()
        .context("cannot stat the stored file")?
        .len();
    let file = file
        .try_clone()
        .context("cannot open the stored file again")?;
    Ok(Opened {
        reader: Box::new(At::new(file)),
        len,
    })
}

/// An image's backup folder, its files opened on demand.
pub struct Folder {
    dir: Box<dyn Door>,
    limits: Limits,
    files: Mutex<HashMap<String, Arc<StoredFile>>>,
    /// Files opened by [`Folder::hold`], until a point needs them.
    held: Mutex<HashMap<String, Held>>,
    /// Where compressed and encrypted files' chunks are kept.
    cache: Mutex<Cache>,
}

impl Folder {
    pub fn new(dir: Box<dyn Door>, limits: Limits, cache: Cache) -> Folder {
        Folder {
            dir,
            limits,
            files: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            cache: Mutex::new(cache),
        }
    }

    /// Opens (and checks without reading) each of `files` and reads its checksum file now,
    /// before any point is looked at: a backup run by another user, whom the image's lock does
    /// not hold off, may prune a file later, and an open file can still be read to its end.
    /// A file that cannot be held now is opened when needed, its error said then.
    pub fn hold<'f>(&self, files: impl IntoIterator<Item = &'f FolderFile>) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for stored in files {
            if held.contains_key(&stored.name) {
                continue;
            }
            if let Ok(file) = self.open_checked(stored) {
                held.insert(stored.name.clone(), file);
            }
        }
    }

    /// `stored` opened (a regular file, not through a link), checked as far as can be without
    /// reading it, with its recorded checksum.
    fn open_checked(&self, stored: &FolderFile) -> Result<Held> {
        let shown = escaped_path(&self.dir.location_of(&stored.name));
        read::precheck(&*self.dir, stored, &self.limits.of(stored))?;
        let recorded = read::recorded_digest(&*self.dir, &stored.name)?;
        let file = match self.dir.open_file(&stored.name) {
            Some(file) => file.with_context(|| format!("cannot open {shown}"))?,
            None => bail!(
                "{}: only backups in a local folder can be mounted",
                escaped_path(&self.dir.location())
            ),
        };
        Ok(Held { file, recorded })
    }

    /// `stored` (a diff when `diff`), opened (once) and checked as far as can be without
    /// reading it, or, compressed or encrypted, read once to its end and proven.
    fn open(&self, stored: &FolderFile, diff: bool) -> Result<Arc<StoredFile>> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = files.get(&stored.name) {
            return Ok(Arc::clone(open));
        }
        let shown = escaped_path(&self.dir.location_of(&stored.name));
        let limit = self.limits.of(stored);
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&stored.name);
        let Held { file, recorded } = match held {
            Some(held) => held,
            None => self.open_checked(stored)?,
        };
        let (access, proof) = if stored.file.compression.is_compressed() || stored.file.encrypted {
            info!("{shown}: reading it once to its end, to prove and index it");
            let proving = Packed::prove(file, stored, &limit, diff, files.len(), &self.cache)
                .with_context(|| format!("cannot read {shown}"))?;
            let checked = read::check_digest(recorded.as_deref(), &proving.facts)
                .map(|()| recorded.is_some());
            (
                Access::Packed(Box::new(proving.packed), proving.diff),
                said(&shown, checked),
            )
        } else {
            (Access::Plain(file), Proof::NotYet)
        };
        let open = Arc::new(StoredFile {
            stored: stored.clone(),
            access,
            recorded,
            proof: Mutex::new(proof),
        });
        files.insert(stored.name.clone(), Arc::clone(&open));
        Ok(open)
    }
}

/// One restore point and the files of its route, opened when first asked for.
pub struct Point {
    pub snap: SnapName,
    route: Vec<FolderFile>,
    opened: OnceLock<Result<Arc<OpenPoint>, String>>,
}

impl Point {
    pub fn new(snap: SnapName, route: Vec<FolderFile>) -> Point {
        Point {
            snap,
            route,
            opened: OnceLock::new(),
        }
    }

    /// The point, its files open and indexed; the error (said once on stderr) otherwise.
    pub fn open(&self, folder: &Folder) -> Result<Arc<OpenPoint>, String> {
        self.opened
            .get_or_init(|| {
                OpenPoint::open(folder, &self.route)
                    .map(Arc::new)
                    .map_err(|err| {
                        let why = format!("{err:#}");
                        tracing::error!("restore point {}: {why}", self.snap);
                        why
                    })
            })
            .clone()
    }
}

/// A point's image: which file holds each range.
pub struct OpenPoint {
    files: Vec<Arc<StoredFile>>,
    map: PointMap,
}

/// A read that cannot be served: the file it needs, and why.
#[derive(Debug)]
pub struct Unreadable(pub String);

impl OpenPoint {
    /// Opens the route's files and indexes the diffs' records over the full backup.
    fn open(folder: &Folder, route: &[FolderFile]) -> Result<OpenPoint> {
        let Some((full, diffs)) = route.split_first() else {
            bail!("an empty route");
        };
        let mut files = vec![folder.open(full, false)?];
        let size = files[0].len().context("cannot stat the full backup")?;
        let mut map = PointMap::full(0, size);
        for diff in diffs {
            let open = folder.open(diff, true)?;
            let shown = || escaped_path(&folder.dir.location_of(&diff.name));
            index_diff(&mut map, files.len(), &open)
                .with_context(|| format!("{}: not a sound diff", shown()))?;
            files.push(open);
        }
        info!(
            "{} extent(s) index {} file(s) of the point",
            map.extent_count(),
            files.len()
        );
        Ok(OpenPoint { files, map })
    }

    pub fn size(&self) -> u64 {
        self.map.size()
    }

    /// Proves every file of the route that is not proven yet (the first open of the point).
    pub fn prove(&self, folder: &Folder) {
        for file in &self.files {
            file.prove(folder);
        }
    }

    /// `length` bytes of the image from `offset` on (fewer at its end).
    pub fn read(&self, folder: &Folder, offset: u64, length: u64) -> Result<Vec<u8>, Unreadable> {
        let mut out = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        for piece in self.map.pieces(offset..offset.saturating_add(length)) {
            let len = usize::try_from(piece.range.end - piece.range.start).unwrap_or(0);
            match piece.source {
                Source::Zero => out.resize(out.len() + len, 0),
                Source::File { file, offset } => {
                    let stored = &self.files[file];
                    if let Some(why) = stored.prove(folder) {
                        return Err(Unreadable(format!("{}: {why}", stored.stored.name)));
                    }
                    let start = out.len();
                    out.resize(start + len, 0);
                    stored
                        .read_at(folder, &mut out[start..], offset)
                        .map_err(|err| Unreadable(format!("{}: {err:#}", stored.stored.name)))?;
                }
            }
        }
        Ok(out)
    }
}

impl OpenPoint {
    /// The first offset at or after `from` that holds data (`None`: only holes follow), for
    /// `SEEK_DATA`: zeroed extents are holes, and so are the holes of the files that hold the
    /// others (a sparse full backup's never-written ranges).
    pub fn seek_data(&self, from: u64) -> io::Result<Option<u64>> {
        for piece in self.map.pieces(from..self.size()) {
            let Source::File { file, offset } = piece.source else {
                continue;
            };
            let length = piece.range.end - piece.range.start;
            match self.files[file].next_in(offset, true)? {
                Some(data) if data < offset + length => {
                    return Ok(Some(piece.range.start + (data - offset)));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// The first offset at or after `from` in a hole (the image's size when none), for
    /// `SEEK_HOLE`.
    pub fn seek_hole(&self, from: u64) -> io::Result<u64> {
        for piece in self.map.pieces(from..self.size()) {
            let Source::File { file, offset } = piece.source else {
                return Ok(piece.range.start);
            };
            let length = piece.range.end - piece.range.start;
            match self.files[file].next_in(offset, false)? {
                Some(hole) if hole < offset + length => {
                    return Ok(piece.range.start + (hole - offset));
                }
                _ => {}
            }
        }
        Ok(self.size().max(from))
    }
}

/// The next data (`data`) or hole at or after `offset` in `file`; `None` when there is none.
fn next_in(file: &File, offset: u64, data: bool) -> io::Result<Option<u64>> {
    let to = if data {
        rustix::fs::SeekFrom::Data(offset)
    } else {
        rustix::fs::SeekFrom::Hole(offset)
    };
    match rustix::fs::seek(file, to) {
        Ok(at) => Ok(Some(at)),
        Err(rustix::io::Errno::NXIO) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Overlays the records of the diff `stored` (the route's file number `number`) on `map`, its
/// size record first; a stream that does not end where the file does is refused.
fn index_diff(map: &mut PointMap, number: usize, stored: &StoredFile) -> Result<()> {
    let at = |offset| Source::File {
        file: number,
        offset,
    };
    let file = match &stored.access {
        Access::Packed(_, Some(index)) => {
            // Read when the file was proven, its end checked then.
            stored
                .stored
                .check_diff_names(&index.header)
                .map_err(anyhow::Error::msg)?;
            map.resize(index.header.size);
            for (range, payload) in &index.records {
                map.overwrite(range.clone(), payload.map_or(Source::Zero, at));
            }
            return Ok(());
        }
        Access::Packed(_, None) => bail!("it was not read as a diff"),
        Access::Plain(file) => file,
    };
    let len = file.metadata()?.len();
    let mut reader = DiffReader::new(BufReader::new(At::new(file)))?;
    stored
        .stored
        .check_diff_names(reader.header())
        .map_err(anyhow::Error::msg)?;
    map.resize(reader.header().size);
    while let Some(record) = reader.next_record_seeking()? {
        match record {
            Record::Write { offset, length } => {
                map.overwrite(offset..offset + length, at(reader.position()));
            }
            Record::Zero { offset, length } => map.overwrite(offset..offset + length, Source::Zero),
        }
    }
    if reader.position() != len {
        bail!("its stream ends at byte {} of {len}", reader.position());
    }
    Ok(())
}

/// A file read from a position of its own: the points sharing an open file never move each
/// other's place in it.
pub struct At<F: Borrow<File>> {
    file: F,
    position: u64,
}

impl<F: Borrow<File>> At<F> {
    /// `file` from its first byte.
    pub fn new(file: F) -> At<F> {
        At { file, position: 0 }
    }
}

impl<F: Borrow<File>> Read for At<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.borrow().read_at(buf, self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl<F: Borrow<File>> Seek for At<F> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let position = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::Current(by) => self.position.checked_add_signed(by),
            SeekFrom::End(by) => self.file.borrow().metadata()?.len().checked_add_signed(by),
        };
        self.position = position.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.position)
    }
}
