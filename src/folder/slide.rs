//! The window slide in the folder: a full backup advanced to a later snapshot with the diffs
//! beside it, so that a slide never reads the cluster for its new base (the plan's
//! `Step::SlideBase`).
//!
//! The new base `S.full` is what `rbd export` of S writes: the old base with every diff leading
//! to S replayed onto it (writes and zero records are absolute, each size record sets the
//! length, so images grow and shrink). Nothing is taken on trust: the old base and every diff
//! must have a checksum file and match it before anything is changed (files the original tool
//! wrote have none; they cannot be proven, so the caller exports from the cluster instead), and
//! the finished file is hashed for its own checksum file like every file the tool writes.
//!
//! Uncompressed to uncompressed, the old base is changed in place, with the diff files as the
//! journal. Before the first byte changes, a marker ([`SLIDE_MARKER`]) is written and synced naming
//! the old file, the target, the diffs with their checksums, and how many diffs are applied;
//! then the old base is renamed to a hidden working name ([`naming::WORKING_PREFIX`] + the target's
//! name). From that moment no reader sees it: `list`, `verify`, `restore` and the planner only
//! know backup file names, so a half-advanced file can never pass for a backup, whatever reads
//! the folder (even an older version of this tool). The price is that the old chain shows a
//! missing link until the next run finishes the build, which it does first thing: re-applying a
//! diff that was partly or wholly applied gives the same bytes, so the marker's count is only a
//! shortcut. Only once the file is complete and synced is its checksum written and the file
//! renamed to its final name; then the marker goes, and only then does the plan remove the
//! diffs.
//!
//! A resumed build believes neither the marker nor the working file on their word: the marker
//! carries the record seal of [`crate::folder::record::seal`] (so a marker this host's tool did
//! not write proves nothing), and the finished file's SHA-256, computed while the old base and
//! the diffs were proven; the working file, finished, is read back whole and must hash to it. A
//! working file changed or truncated while no run held it fails that proof, and the build is
//! left to the caller to discard, exporting the new base from the cluster instead.
//!
//! Any other combination (a compressed old base or a compressed target) is one streaming pass:
//! the old base's raw stream (a plain file, or the member of our archive or the original's,
//! sparse or not) is merged with each diff's records in offset order ([`Merge`]) and written as
//! a new file under a temporary name; the old base's checksum is checked in the same pass. The
//! diffs are on local disk and read twice: once to prove them, once for their data. Memory stays
//! bounded whatever the image size.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::folder::chain::FolderFile;
use crate::folder::door::{Door, LocalFolder, Sharing, Staged};
use crate::folder::format::archive::MAX_SPARSE_EXTENTS;
use crate::folder::format::diffstream::{DiffReader, Record};
use crate::folder::format::rebuild::{self, TargetFailed};
use crate::folder::format::write::{
    self, Compressor, DataOfExtents, Hashing, Member, SparseMap, SparseMapBuilder,
};
use crate::folder::naming::{
    self, checksum_name, working_name, BackupFile, Compression, SLIDE_MARKER,
};
use crate::folder::read::{self, Limit, Limits};
use crate::folder::record::seal::{self, SealKey};
use crate::folder::{format::sparse, untrusted};
use crate::output::escaped;

/// The marker is a few hundred bytes per diff; anything far larger is not ours.
const MAX_MARKER_BYTES: u64 = 1 << 20;
const FORMAT: u32 = 1;
/// The kind the marker's seal is computed for: no record of another kind passes for it.
const MARKER_KIND: &str = "advance";
const SKIP_CHUNK: usize = 64 << 10;

/// The target of the working file `name` of a build in `image`'s folder, when it is one: an
/// uncompressed full backup of the image.
pub fn working_target(image: &str, name: &str) -> Option<BackupFile> {
    let target = naming::working_target_name(name)?;
    BackupFile::parse(image, target).filter(|f| f.is_full() && !f.compressed())
}

/// One diff of a build, as the marker names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Link {
    name: String,
    sha256: String,
}

/// What a build in place writes down before it changes anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    format: u32,
    image: String,
    /// The old base's name before it was renamed, and its proven checksum.
    old: String,
    old_sha256: String,
    working: String,
    target: String,
    /// The image size the last diff records: the finished file's length.
    size: u64,
    diffs: Vec<Link>,
    /// How many of the diffs are wholly applied and synced.
    applied: usize,
    /// The SHA-256 of the finished file, computed in the pass that proved the old base: the old
    /// base's bytes with the proven diffs laid over them, which is what the in-place writes
    /// produce. A resumed build reads its file back and must find it; without it, a resumed
    /// build cannot be proven.
    #[serde(default)]
    new_sha256: Option<String>,
}

/// What a build achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildOutcome {
    /// The new base is there under its final name, with its checksum file.
    Built { size: u64, sha256: String },
    /// It could not be built from the folder, for this reason; the cluster must serve it. When
    /// the old base was already being changed, the working file and marker are still there:
    /// [`discard`] removes them once the new base is written some other way.
    Unproven(String),
    /// An interrupted build found its target written already (exported by a run that fell
    /// back and died before it could clear the build): the working file and marker are gone.
    Obsolete,
}

/// Builds `file`, the full backup of a new base, in `dir` from the old full backup `from` and the
/// diffs leading from it to `file`'s snapshot, oldest first. `from` is consumed when the build
/// succeeds. An error (a full disk, a folder that cannot be written) leaves things as a crash
/// would: the next run finishes or starts over. A build in place seals its marker under `key`.
/// `compressor` is how `file` is compressed, as the section decided it
/// ([`crate::config::PoolJob::compressor_for`]); `None` when `file` is not compressed.
pub fn build(
    folder: &LocalFolder,
    image: &str,
    file: &BackupFile,
    from: &str,
    diffs: &[String],
    compressor: Option<&Compressor>,
    key: &SealKey,
) -> Result<BuildOutcome> {
    let (old, proven) = match prepare(folder, image, file, from, diffs) {
        Ok(prepared) => prepared,
        Err(why) => return Ok(BuildOutcome::Unproven(why)),
    };
    let target = file.file_name(image);
    if !old.file.compressed() && !file.compressed() {
        build_in_place(folder, image, from, &target, &proven, key)
    } else {
        build_streaming(folder, &old, file, &target, image, proven, compressor)
    }
}

/// What [`build`] would do, for check mode: `None` when every file is proven (each is read
/// whole, nothing is changed), else why the cluster would serve `file` instead.
pub fn would_build(
    folder: &dyn Door,
    image: &str,
    file: &BackupFile,
    from: &str,
    diffs: &[String],
) -> Option<String> {
    let (old, _) = match prepare(folder, image, file, from, diffs) {
        Ok(prepared) => prepared,
        Err(why) => return Some(why),
    };
    let expected = match recorded(folder, from) {
        Ok(digest) => digest,
        Err(why) => return Some(why),
    };
    let read = read::read_raw(
        folder,
        from,
        old.file.compression,
        &Limit::absolute(),
        |raw| Ok(io::copy(raw, &mut io::sink())?),
    );
    match read {
        Ok((_, facts)) if facts.sha256 == expected => None,
        Ok((_, facts)) => Some(format!(
            "{}: checksum mismatch: the file's SHA-256 is {}, its .sha256 file says {expected}",
            escaped(from),
            facts.sha256
        )),
        Err(err) => Some(format!("{}: {err:#}", escaped(from))),
    }
}

/// What [`finish`] would do, for check mode: `None` when the marker is usable for this build
/// (the working file itself is proven only when the build is finished).
pub fn would_finish(
    folder: &dyn Door,
    image: &str,
    file: &BackupFile,
    working: &str,
    key: Option<&SealKey>,
) -> Option<String> {
    let target = file.file_name(image);
    match read_marker(folder, image, key) {
        Ok(marker) if marker.working == working && marker.target == target => None,
        Ok(_) => Some(format!("{SLIDE_MARKER} describes another build")),
        Err(why) => Some(why),
    }
}

/// The old base and the proven diffs of a build, or why it cannot be made.
fn prepare(
    folder: &dyn Door,
    image: &str,
    file: &BackupFile,
    from: &str,
    diffs: &[String],
) -> Result<(FolderFile, Vec<ProvenDiff>), String> {
    let target = file.file_name(image);
    let Some(old) = BackupFile::parse(image, from).filter(BackupFile::is_full) else {
        return Err(format!("{from} is not a full backup of {image}"));
    };
    let mut links = Vec::new();
    let mut at = old.snap.clone();
    for name in diffs {
        let Some(diff) = BackupFile::parse(image, name).filter(|d| d.base() == Some(&at)) else {
            return Err(format!("{name} is not a diff from {at} of {image}"));
        };
        at = diff.snap.clone();
        links.push(stored(name, diff));
    }
    if at != file.snap || links.is_empty() {
        return Err(format!("the diffs do not lead from {from} to {target}"));
    }
    let mut proven = Vec::new();
    for link in &links {
        proven.push(prove_diff(folder, link)?);
    }
    Ok((stored(from, old), proven))
}

/// Finishes the build in place that an interrupted run left: `working` is its working file. The
/// marker must carry a seal under `key`, and the finished file must be the one the marker's
/// proven inputs give; else the outcome is [`BuildOutcome::Unproven`].
pub fn finish(
    folder: &LocalFolder,
    image: &str,
    file: &BackupFile,
    working: &str,
    key: Option<&SealKey>,
) -> Result<BuildOutcome> {
    let target = file.file_name(image);
    if folder.kind_of(&target).is_ok() {
        discard(folder, working, &target)?;
        return Ok(BuildOutcome::Obsolete);
    }
    let Some(key) = key else {
        return Ok(BuildOutcome::Unproven(format!(
            "{SLIDE_MARKER} cannot be checked: this host has no record key"
        )));
    };
    let marker = match read_marker(folder, image, Some(key)) {
        Ok(marker) => marker,
        Err(why) => return Ok(BuildOutcome::Unproven(why)),
    };
    if marker.working != working || marker.target != target {
        return Ok(BuildOutcome::Unproven(format!(
            "{SLIDE_MARKER} describes the build of {} in {}, not of {target} in {working}",
            escaped(&marker.target),
            escaped(&marker.working)
        )));
    }
    info!(
        "finishing the build of {target} from {} ({} of {} diffs applied)",
        marker.old,
        marker.applied,
        marker.diffs.len()
    );
    apply_in_place(folder, marker, key, true)
}

/// Removes what a build that was not finished leaves once its target was written another way:
/// the old base `from`, the working file it may have become, and the marker.
pub fn discard(folder: &LocalFolder, from: &str, target: &str) -> Result<()> {
    folder.remove_present(&[from, &working_name(target), SLIDE_MARKER])
}

fn stored(name: &str, file: BackupFile) -> FolderFile {
    FolderFile {
        name: name.to_string(),
        file,
        checksum: Some(checksum_name(name)),
        size: 0,
    }
}

/// A diff read whole and found to be what its checksum file says, with a well-formed stream
/// whose header names the right snapshots.
struct ProvenDiff {
    stored: FolderFile,
    sha256: String,
    /// The image size it records.
    size: u64,
    /// Its raw stream, rewound: the file itself, or a decompressed copy of an archive's member.
    raw: File,
}

/// The checksum its checksum file records for `name`, or why there is none to use.
fn recorded(dir: &dyn Door, name: &str) -> Result<String, String> {
    match read::recorded_digest(dir, name) {
        Ok(Some(digest)) => Ok(digest),
        Ok(None) => Err(format!(
            "{} has no checksum file (files the original tool wrote have none), so it cannot be \
             proven",
            escaped(name)
        )),
        Err(err) => Err(format!("{err:#}")),
    }
}

fn prove_diff(folder: &dyn Door, stored: &FolderFile) -> Result<ProvenDiff, String> {
    let name = &stored.name;
    let expected = recorded(folder, name)?;
    let failed = |err: anyhow::Error| format!("{}: {err:#}", escaped(name));
    // A plain diff is read where it lies when the door has it as a local file.
    let local = if stored.file.compressed() {
        None
    } else {
        folder.open_file(name)
    };
    let (raw, sha256) = if let Some(file) = local {
        let file = file.context("cannot open").map_err(failed)?;
        let mut hashing = Hashing::new(&file);
        let _ = io::copy(&mut hashing, &mut io::sink())
            .context("cannot read")
            .map_err(failed)?;
        let digest = hashing.hex_digest();
        (file, digest)
    } else {
        // A copy of the raw stream, which is read more than once.
        let (raw, facts) = read::read_raw(
            folder,
            name,
            stored.file.compression,
            &Limit::diff(),
            |member| {
                let mut copy = folder.scratch()?;
                io::copy(member, &mut copy)?;
                Ok(copy)
            },
        )
        .map_err(failed)?;
        (raw, facts.sha256)
    };
    if sha256 != expected {
        return Err(format!(
            "{}: checksum mismatch: the file's SHA-256 is {sha256}, its .sha256 file says \
             {expected}",
            escaped(name)
        ));
    }
    let mut raw = raw;
    let size = (|| -> Result<u64> {
        raw.rewind()?;
        let diff = DiffReader::new(BufReader::new(&raw))?;
        read::check_diff_header(stored, diff.header()).map_err(anyhow::Error::msg)?;
        let size = diff.header().size;
        diff.finish()?;
        raw.rewind()?;
        Ok(size)
    })()
    .map_err(failed)?;
    Ok(ProvenDiff {
        stored: stored.clone(),
        sha256,
        size,
        raw,
    })
}

fn build_in_place(
    folder: &LocalFolder,
    image: &str,
    from: &str,
    target: &str,
    diffs: &[ProvenDiff],
    key: &SealKey,
) -> Result<BuildOutcome> {
    let old_sha256 = match recorded(folder, from) {
        Ok(digest) => digest,
        Err(why) => return Ok(BuildOutcome::Unproven(why)),
    };
    // One pass over the old base proves it against its checksum and, with the diffs laid over
    // it, gives the finished file's checksum too: the file is then read once, not twice.
    let read = read::read_raw(folder, from, Compression::None, &Limit::absolute(), |raw| {
        let mut new = Hashing::new(merged(raw, diffs)?);
        let len = io::copy(&mut new, &mut io::sink())?;
        Ok((len, new.hex_digest()))
    });
    let new_sha256 = match read {
        Ok(((len, new_sha256), facts)) if facts.sha256 == old_sha256 => {
            let size = diffs.last().map_or(0, |d| d.size);
            (len == size).then_some(new_sha256)
        }
        Ok((_, facts)) => {
            return Ok(BuildOutcome::Unproven(format!(
                "{}: checksum mismatch: the file's SHA-256 is {}, its .sha256 file says \
                 {old_sha256}",
                escaped(from),
                facts.sha256
            )))
        }
        Err(err) if crate::interrupt::received().is_some() => return Err(err),
        Err(err) => {
            return Ok(BuildOutcome::Unproven(format!(
                "{}: {err:#}",
                escaped(from)
            )))
        }
    };
    let marker = Marker {
        format: FORMAT,
        image: image.to_string(),
        old: from.to_string(),
        old_sha256,
        working: working_name(target),
        target: target.to_string(),
        size: diffs.last().map_or(0, |d| d.size),
        diffs: diffs
            .iter()
            .map(|d| Link {
                name: d.stored.name.clone(),
                sha256: d.sha256.clone(),
            })
            .collect(),
        applied: 0,
        new_sha256,
    };
    // The marker is on disk before the old base changes name or content.
    write_marker(folder, &marker, key)?;
    folder.rename(from, &marker.working, || {
        format!(
            "cannot rename {} for the build",
            folder.file(from).display()
        )
    })?;
    apply_in_place(folder, marker, key, false)
}

/// Applies the diffs the marker names from the first not yet applied, then hashes the file,
/// writes its checksum file and gives it its final name. A `resumed` build (its working file
/// was left unguarded between runs) reads the finished file back and must find the checksum the
/// marker expects.
fn apply_in_place(
    folder: &LocalFolder,
    mut marker: Marker,
    key: &SealKey,
    resumed: bool,
) -> Result<BuildOutcome> {
    let working = folder.file(&marker.working);
    let out = folder.open_in_place(&marker.working)?;
    while marker.applied < marker.diffs.len() {
        let link = marker.diffs[marker.applied].clone();
        let Some(file) = BackupFile::parse(&marker.image, &link.name) else {
            return Ok(BuildOutcome::Unproven(format!(
                "{SLIDE_MARKER} names {}, which is not a diff of {}",
                escaped(&link.name),
                marker.image
            )));
        };
        // The diff must still be the one proven before the old base was touched.
        match recorded(folder, &link.name) {
            Ok(digest) if digest == link.sha256 => {}
            Ok(digest) => {
                return Ok(BuildOutcome::Unproven(format!(
                    "the checksum file of {} says {digest}, not {} as when the build started",
                    escaped(&link.name),
                    link.sha256
                )))
            }
            Err(why) => return Ok(BuildOutcome::Unproven(why)),
        }
        let applied = rebuild::apply_link(
            folder,
            &stored(&link.name, file),
            &Limits::default(),
            &out,
            &marker.working,
        );
        match applied {
            Ok(_) => {}
            Err(err) if err.downcast_ref::<TargetFailed>().is_some() => return Err(err),
            Err(err) if crate::interrupt::received().is_some() => return Err(err),
            Err(err) => return Ok(BuildOutcome::Unproven(format!("{err:#}"))),
        }
        rebuild::sync(&out, &marker.working)?;
        marker.applied += 1;
        write_marker(folder, &marker, key)?;
    }
    let length = out
        .metadata()
        .with_context(|| format!("cannot read the length of {}", working.display()))?
        .len();
    drop(out);
    let sha256 = if resumed {
        match prove_working(folder, &marker) {
            Ok(sha256) => sha256,
            Err(why) => return Ok(BuildOutcome::Unproven(why)),
        }
    } else {
        match marker.new_sha256.clone().filter(|_| length == marker.size) {
            Some(known) => known,
            None => {
                let (_, facts) = read::read_raw(
                    folder,
                    &marker.working,
                    Compression::None,
                    &Limit::absolute(),
                    |raw| Ok(io::copy(raw, &mut io::sink())?),
                )
                .with_context(|| format!("cannot read back {}", working.display()))?;
                if facts.raw_bytes != marker.size {
                    bail!(
                        "{} holds {} bytes after the diffs, where the last diff records {}",
                        working.display(),
                        facts.raw_bytes,
                        marker.size
                    );
                }
                facts.sha256
            }
        }
    };
    write_checksum(folder, &marker.target, &sha256)?;
    let target = folder.file(&marker.target);
    match folder.kind_of(&marker.target) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", target.display())),
        Ok(kind) => bail!(
            "{} exists already ({}), written by something other than this run; it is left alone",
            target.display(),
            kind.described()
        ),
    }
    folder.rename(&marker.working, &marker.target, || {
        format!(
            "cannot rename {} to {}",
            working.display(),
            target.display()
        )
    })?;
    folder.remove(SLIDE_MARKER)?;
    Ok(BuildOutcome::Built {
        size: length,
        sha256,
    })
}

/// The SHA-256 of the finished working file of a resumed build, when it is the one the marker's
/// proven inputs give; else why it is not.
fn prove_working(folder: &LocalFolder, marker: &Marker) -> Result<String, String> {
    let Some(expected) = &marker.new_sha256 else {
        return Err(format!(
            "{SLIDE_MARKER} records no checksum of the finished file, so {} cannot be proven",
            escaped(&marker.working)
        ));
    };
    let read = read::read_raw(
        folder,
        &marker.working,
        Compression::None,
        &Limit::absolute(),
        |raw| Ok(io::copy(raw, &mut io::sink())?),
    );
    let facts = match read {
        Ok((_, facts)) => facts,
        Err(err) => {
            return Err(format!(
                "{} cannot be read back: {err:#}",
                escaped(&marker.working)
            ))
        }
    };
    if facts.raw_bytes != marker.size || &facts.sha256 != expected {
        return Err(format!(
            "{} was changed while no run held it: with the diffs applied it holds {} bytes \
             (SHA-256 {}) where {} and the diffs give {} bytes (SHA-256 {expected})",
            escaped(&marker.working),
            facts.raw_bytes,
            facts.sha256,
            escaped(&marker.old),
            marker.size
        ));
    }
    Ok(facts.sha256)
}

/// One streaming pass from the old base and the diffs to a new file under a temporary name.
fn build_streaming(
    folder: &LocalFolder,
    old: &FolderFile,
    file: &BackupFile,
    target: &str,
    image: &str,
    diffs: Vec<ProvenDiff>,
    compressor: Option<&Compressor>,
) -> Result<BuildOutcome> {
    let old_sha256 = match recorded(folder, &old.name) {
        Ok(digest) => digest,
        Err(why) => return Ok(BuildOutcome::Unproven(why)),
    };
    let size = diffs.last().map_or(0, |d| d.size);
    // An archive's sparse map comes before its data: a first pass over the merged image finds
    // where its data is, so the holes stay holes and the compressor never sees them.
    let map = match compressor {
        Some(_) => {
            let mapped = read::read_raw(
                folder,
                &old.name,
                old.file.compression,
                &Limit::absolute(),
                |base| data_map(merged(base, &diffs)?, size),
            );
            match mapped {
                Ok((map, _)) => Some(map),
                Err(err) if crate::interrupt::received().is_some() => return Err(err),
                Err(err) => {
                    return Ok(BuildOutcome::Unproven(format!(
                        "{}: {err:#}",
                        escaped(&old.name)
                    )))
                }
            }
        }
        None => None,
    };
    let mut pending = folder.stage(target)?;
    let member_name = file.raw_name(image);
    let written = read::read_raw(
        folder,
        &old.name,
        old.file.compression,
        &Limit::absolute(),
        |base| {
            let mut stream = merged(base, &diffs)?;
            let out = pending.file();
            if let (Some(compressor), Some(map)) = (compressor, &map) {
                let member = Member {
                    name: &member_name,
                    size,
                    mtime: file.snap.taken(),
                    sparse: Some(map),
                };
                let mut data = DataOfExtents::new(stream, map);
                Ok(write::write_archive(&mut data, &member, compressor, out)?)
            } else {
                let (len, digest) = write::write_raw(&mut stream, out)?;
                if len != size {
                    bail!("the merged image has {len} bytes where the last diff records {size}");
                }
                Ok(digest)
            }
        },
    );
    let (sha256, facts) = match written {
        Ok(written) => written,
        Err(err) if crate::interrupt::received().is_some() => return Err(err),
        Err(err) => {
            return Ok(BuildOutcome::Unproven(format!(
                "{}: {err:#}",
                escaped(&old.name)
            )))
        }
    };
    if facts.sha256 != old_sha256 {
        return Ok(BuildOutcome::Unproven(format!(
            "{}: checksum mismatch: the file's SHA-256 is {}, its .sha256 file says {old_sha256}",
            escaped(&old.name),
            facts.sha256
        )));
    }
    let size = folder.publish(Staged::File(pending), &sha256, false)?.size;
    folder.remove(&old.name)?;
    Ok(BuildOutcome::Built { size, sha256 })
}

/// The old base's raw stream with every diff laid over it in turn: the new base's image.
fn merged<'a>(base: &'a mut dyn Read, diffs: &'a [ProvenDiff]) -> Result<Box<dyn Read + 'a>> {
    let mut stream: Box<dyn Read + 'a> = Box::new(base);
    for diff in diffs {
        // Each pass reads the diff from its start (the map pass came first).
        let mut raw = &diff.raw;
        raw.seek(SeekFrom::Start(0))?;
        let reader = DiffReader::new(BufReader::with_capacity(1 << 20, raw))?;
        stream = Box::new(Merge::new(stream, reader));
    }
    Ok(stream)
}

/// The ranges of `image` (of `size` bytes) that hold anything but zeros, in tar's 512-byte
/// blocks; bounded like the map of an export ([`write::SparseMapBuilder`]).
fn data_map(mut image: impl Read, size: u64) -> Result<SparseMap> {
    const BLOCK: usize = 512;
    let mut builder = SparseMapBuilder::new(size, MAX_SPARSE_EXTENTS);
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    // The data run being collected: its start and length.
    let mut run: Option<(u64, u64)> = None;
    loop {
        let n = read_full(&mut image, &mut buf)?;
        if n == 0 {
            break;
        }
        for block in buf[..n].chunks(BLOCK) {
            let len = block.len() as u64;
            if !sparse::is_zero(block) {
                run = Some(run.map_or((offset, len), |(start, l)| (start, l + len)));
            } else if let Some((start, l)) = run.take() {
                builder.push(start, l).map_err(anyhow::Error::msg)?;
            }
            offset += len;
        }
    }
    if let Some((start, l)) = run {
        builder.push(start, l).map_err(anyhow::Error::msg)?;
    }
    if offset != size {
        bail!("the merged image has {offset} bytes where the last diff records {size}");
    }
    Ok(builder.finish())
}

/// Fills `buf` as far as the stream goes; fewer bytes only at its end.
fn read_full(stream: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// The checksum file of a file finished in place, before the file takes its final name.
fn write_checksum(folder: &LocalFolder, target: &str, sha256: &str) -> Result<()> {
    let line = write::checksum_line(sha256, target);
    folder.put(&checksum_name(target), line.as_bytes(), Sharing::Folder)
}

fn write_marker(folder: &LocalFolder, marker: &Marker, key: &SealKey) -> Result<()> {
    let text = seal::seal(key, MARKER_KIND, marker).context("cannot encode the marker")?;
    folder.put(SLIDE_MARKER, &text, Sharing::Private)
}

/// Reads the marker of `image`'s folder, believed only under its seal; the error says why it
/// cannot be used.
fn read_marker(dir: &dyn Door, image: &str, key: Option<&SealKey>) -> Result<Marker, String> {
    let path = dir.location_of(SLIDE_MARKER);
    let shown = path.display();
    let bytes = match dir.read_own(SLIDE_MARKER, MAX_MARKER_BYTES) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            let missing = io::Error::from_raw_os_error(libc::ENOENT);
            return Err(format!("{shown}: {missing}"));
        }
        Err(err) if untrusted::is_not_own(&err) => return Err(format!("{shown} {err}")),
        Err(err) => return Err(format!("{shown}: {err}")),
    };
    let marker: Marker = seal::open(key, MARKER_KIND, &bytes).map_err(|why| {
        format!("{shown}: {why}; without proof of the build, its working file is not used")
    })?;
    if marker.format != FORMAT || marker.image != image {
        return Err(format!(
            "{shown} is not a marker of format {FORMAT} for image {image}"
        ));
    }
    if marker.applied > marker.diffs.len() {
        return Err(format!("{shown} counts more diffs applied than it names"));
    }
    if !naming::is_working_name(&marker.working) || marker.working.contains('/') {
        return Err(format!("{shown} names a working file that is not one"));
    }
    Ok(marker)
}

/// The raw stream of an image at a later snapshot: a base stream (the image at the diff's start)
/// with the diff's records laid over it in offset order. Past the base's end the image reads as
/// zeros; past the diff's size record nothing is read of the base, which is drained at the end
/// so that its reader sees it whole (and checks it). The diff is read to its end record.
pub struct Merge<'a, D: Read> {
    base: Box<dyn Read + 'a>,
    base_ended: bool,
    diff: Option<DiffReader<D>>,
    size: u64,
    pos: u64,
    /// The record being laid over the base: whether it writes data, and where it ends.
    current: Option<(bool, u64)>,
    /// The next record, not reached yet.
    next: Option<Record>,
    records_ended: bool,
    scratch: Vec<u8>,
}

impl<'a, D: Read> Merge<'a, D> {
    pub fn new(base: Box<dyn Read + 'a>, diff: DiffReader<D>) -> Merge<'a, D> {
        Merge {
            base,
            base_ended: false,
            size: diff.header().size,
            diff: Some(diff),
            pos: 0,
            current: None,
            next: None,
            records_ended: false,
            scratch: Vec::new(),
        }
    }

    fn diff(&mut self) -> io::Result<&mut DiffReader<D>> {
        self.diff
            .as_mut()
            .ok_or_else(|| io::Error::other("the diff was read to its end already"))
    }

    /// Reads base bytes into `buf`, or zeros once the base has ended.
    fn read_base(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.base_ended {
            let n = loop {
                match self.base.read(buf) {
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    other => break other?,
                }
            };
            if n > 0 {
                return Ok(n);
            }
            self.base_ended = true;
        }
        buf.fill(0);
        Ok(buf.len())
    }

    /// Passes over `n` bytes of the base, which a record replaces.
    fn skip_base(&mut self, mut n: usize) -> io::Result<()> {
        if self.scratch.is_empty() {
            self.scratch = vec![0u8; SKIP_CHUNK];
        }
        while n > 0 && !self.base_ended {
            let mut scratch = std::mem::take(&mut self.scratch);
            let want = n.min(scratch.len());
            let got = self.read_base(&mut scratch[..want]);
            self.scratch = scratch;
            n -= got?;
        }
        Ok(())
    }

    /// At the end of the image: drain the base and read the diff to its end.
    fn end(&mut self) -> io::Result<()> {
        if let Some(diff) = self.diff.take() {
            if !self.base_ended {
                io::copy(&mut self.base, &mut io::sink())?;
                self.base_ended = true;
            }
            diff.finish().map_err(io::Error::other)?;
        }
        Ok(())
    }
}

fn invalid(err: crate::folder::format::diffstream::DiffError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

impl<D: Read> Read for Merge<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos >= self.size {
                self.end()?;
                return Ok(0);
            }
            if let Some((writes, end)) = self.current {
                let want = buf
                    .len()
                    .min(usize::try_from(end - self.pos).unwrap_or(usize::MAX));
                let n = if writes {
                    let n = self.diff()?.read_data(&mut buf[..want]).map_err(invalid)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the diff's write record ends early",
                        ));
                    }
                    n
                } else {
                    buf[..want].fill(0);
                    want
                };
                self.skip_base(n)?;
                self.pos += n as u64;
                if self.pos == end {
                    self.current = None;
                }
                return Ok(n);
            }
            if self.next.is_none() && !self.records_ended {
                match self.diff()?.next_record().map_err(invalid)? {
                    Some(record) => self.next = Some(record),
                    None => self.records_ended = true,
                }
            }
            let boundary = match self.next {
                // The reader has checked that records are in order, do not overlap and lie
                // within the size.
                Some(Record::Write { offset, .. } | Record::Zero { offset, .. }) => offset,
                None => self.size,
            };
            if boundary <= self.pos {
                self.current = match self.next.take() {
                    Some(Record::Write { offset, length }) => Some((true, offset + length)),
                    Some(Record::Zero { offset, length }) => Some((false, offset + length)),
                    None => None,
                };
                continue;
            }
            let want = buf
                .len()
                .min(usize::try_from(boundary - self.pos).unwrap_or(usize::MAX));
            let n = self.read_base(&mut buf[..want])?;
            self.pos += n as u64;
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests;
