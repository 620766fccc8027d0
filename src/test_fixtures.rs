//! Fixtures the unit tests of several modules share, so that each is written once: a parsed
//! configuration, whole UTC hours, the snapshot names of a daily chain and image `vm`'s backup file
//! names, the SHA-256 digest a checksum file records, a file written with its checksum file, an
//! export-diff stream built from records, a folder's sorted listing, and a FIFO planted where a
//! test needs an entry that blocks its reader.

use std::io;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};

use crate::folder::format::diffstream::{DiffHeader, DiffWriter};
use crate::folder::format::write::{checksum_line, Hashing};
use crate::folder::naming::SnapName;

/// Parses configuration `text` as if read from the default configuration path.
pub(crate) fn parse_config(text: &str) -> crate::config::Config {
    crate::config::parse_str(text, Path::new(crate::config::DEFAULT_CONFIG_PATH)).unwrap()
}

/// Five daily backup snapshots, 02:00 UTC on 20 to 24 November 2026, oldest first.
pub(crate) const S0: &str = "BACKUPUTC20261120T020000";
pub(crate) const S1: &str = "BACKUPUTC20261121T020000";
pub(crate) const S2: &str = "BACKUPUTC20261122T020000";
pub(crate) const S3: &str = "BACKUPUTC20261123T020000";
pub(crate) const S4: &str = "BACKUPUTC20261124T020000";

/// `name` parsed as a backup snapshot's name.
pub(crate) fn snap(name: &str) -> SnapName {
    SnapName::parse(name).unwrap()
}

/// The start of hour `h` of day `d` of month `mo` of year `y`, UTC.
pub(crate) fn utc_hour(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap()
}

/// The file name of image `vm`'s full export at snapshot `snap`.
pub(crate) fn full_file(snap: &str) -> String {
    format!("vm@{snap}.full")
}

/// The file name of image `vm`'s diff from snapshot `base` to snapshot `snap`.
pub(crate) fn diff_file(base: &str, snap: &str) -> String {
    format!("vm@{snap}.diff_from_{base}")
}

/// The lowercase hex SHA-256 digest of `data`, as a checksum file records it; made by the
/// hashing the backup writer uses, so tests compare against what production writes.
pub(crate) fn sha256(data: &[u8]) -> String {
    let mut h = Hashing::new(data);
    io::copy(&mut h, &mut io::sink()).unwrap();
    h.hex_digest()
}

/// Writes `data` as file `name` into folder `dir`, with the checksum file the backup writer would
/// give it.
pub(crate) fn write_with_checksum(dir: &Path, name: &str, data: &[u8]) {
    std::fs::write(dir.join(name), data).unwrap();
    let line = checksum_line(&sha256(data), name);
    std::fs::write(dir.join(format!("{name}.sha256")), line).unwrap();
}

/// A record of a test diff: data written at an offset, or a zeroed range (offset, length).
pub(crate) enum Rec {
    W(u64, Vec<u8>),
    Z(u64, u64),
}

/// An `rbd export-diff` stream from snapshot `from` to `to` of an image of `size` bytes,
/// carrying `records` in order.
pub(crate) fn diff_stream(from: &str, to: &str, size: u64, records: &[Rec]) -> Vec<u8> {
    let header = DiffHeader {
        from_snap: Some(from.into()),
        to_snap: Some(to.into()),
        size,
    };
    let mut w = DiffWriter::new(Vec::new(), &header).unwrap();
    for record in records {
        match record {
            Rec::W(offset, data) => w.write_data(*offset, data).unwrap(),
            Rec::Z(offset, length) => w.write_zero(*offset, *length).unwrap(),
        }
    }
    w.finish().unwrap()
}

/// The names of the entries in folder `dir`, sorted.
pub(crate) fn names_in(dir: impl AsRef<Path>) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Makes a FIFO at `path`: opened for reading, it blocks until a writer comes, which no test
/// provides, so code that must refuse it without opening it is caught if it does not.
pub(crate) fn mkfifo(path: impl AsRef<Path>) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path.as_ref(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

/// [`crate::folder::read::read_raw`] of the file at `path`, through the door of its folder.
pub(crate) fn read_raw_at<T>(
    path: &Path,
    compression: crate::folder::naming::Compression,
    limit: &crate::folder::read::Limit,
    consume: impl FnOnce(&mut dyn io::Read) -> anyhow::Result<T>,
) -> anyhow::Result<(T, crate::folder::read::Facts)> {
    let folder = crate::folder::door::LocalFolder::at(path.parent().expect("a file in a folder"));
    let name = path.file_name().expect("a file name").to_string_lossy();
    crate::folder::read::read_raw(&folder, &name, compression, limit, consume)
}
