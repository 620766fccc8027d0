//! Names shared with the original tool: Ceph snapshot names and backup file names.
//!
//! These strings are the on-disk and in-cluster contract with existing backup chains, so they are
//! built and parsed in this one place. Parsing strips the literal `<image>@` prefix instead of using
//! a pattern, so image names containing `.`, `*` or other pattern characters cannot match another
//! image's files.

use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SubsecRound, Utc};

/// Every snapshot whose name starts with this belongs to the tool; all others are left alone.
pub const SNAP_PREFIX: &str = "BACKUP";
const SNAP_TIME_FORMAT: &str = "UTC%Y%m%dT%H%M%S";
const FULL_SUFFIX: &str = ".full";
const DIFF_MARKER: &str = ".diff_from_";
/// The original's compressed files: a gzip'd tar archive.
pub const COMPRESSED_SUFFIX: &str = ".tar.gz";
/// The same archive compressed with zstd (`compress = zstd`).
pub const ZSTD_SUFFIX: &str = ".tar.zst";
/// What an encrypted file's name adds last (`encrypt to`; [`crate::folder::format::encrypt`]).
pub const ENCRYPTED_SUFFIX: &str = ".age";
/// Checksum files written beside each backup file, in `sha256sum` format.
pub const CHECKSUM_SUFFIX: &str = ".sha256";
/// Prefix of the temporary files a run writes before renaming them to their final name.
pub const TEMP_PREFIX: &str = ".cephbackup-tmp.";
/// The marker of a build in place ([`crate::folder::slide`]), in the image folder.
pub const SLIDE_MARKER: &str = ".cephbackup-advance.json";
/// The old base of a build in place is renamed to this followed by the target's name while it
/// is changed.
pub const WORKING_PREFIX: &str = ".cephbackup-advancing.";
/// Names of `restore --to-file` targets being written: `.cephbackup-restore.<random>.<target>`.
pub const PARTIAL_PREFIX: &str = ".cephbackup-restore.";
/// The tool's record of its work on one image, in the image's folder.
pub const IMAGE_RECORD: &str = ".cephbackup-image.json";
/// The tool's record of a destination folder as a whole, at its top.
pub const DESTINATION_RECORD: &str = ".cephbackup-destination.json";
/// The last run's report, at the top of each destination it used.
pub const LAST_RUN_FILE: &str = ".cephbackup-last-run.json";

/// The name of the checksum file beside the file `name`.
pub fn checksum_name(name: &str) -> String {
    format!("{name}{CHECKSUM_SUFFIX}")
}

/// The file whose checksum file is `name`, when it is one.
pub fn checksummed(name: &str) -> Option<&str> {
    name.strip_suffix(CHECKSUM_SUFFIX)
}

/// The working name of a build in place whose target is `target` (a file name).
pub fn working_name(target: &str) -> String {
    format!("{WORKING_PREFIX}{target}")
}

/// The target a working file `name` of a build in place is named for, when it is one.
pub fn working_target_name(name: &str) -> Option<&str> {
    name.strip_prefix(WORKING_PREFIX)
}

/// True for the working file of a build in place.
pub fn is_working_name(name: &str) -> bool {
    name.starts_with(WORKING_PREFIX)
}

/// Marks a namespace's folder among a pool folder's image folders (`<pool>/@<namespace>/`): no
/// image name the tool backs up holds `@` ([`check_name`]), so the two never collide.
pub const NAMESPACE_MARK: char = '@';

/// A section's pool: `pool`, or `pool/namespace` for an RBD namespace of it.
pub fn check_pool_spec(spec: &str) -> Result<(), String> {
    let (pool, namespace) = split_pool_spec(spec);
    check_name("pool", pool)?;
    match namespace {
        Some(namespace) => check_name("namespace", namespace),
        None => Ok(()),
    }
}

/// `pool` and, for `pool/namespace`, the namespace.
pub fn split_pool_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('/') {
        Some((pool, namespace)) => (pool, Some(namespace)),
        None => (spec, None),
    }
}

/// The folders, outermost first, that hold a pool's image folders in a destination (and its
/// image locks): `[pool]`, the original's layout, or `[pool, @namespace]` for a namespace.
pub fn pool_path(spec: &str) -> Vec<String> {
    let (pool, namespace) = split_pool_spec(spec);
    std::iter::once(pool.to_string())
        .chain(namespace.map(|namespace| format!("{NAMESPACE_MARK}{namespace}")))
        .collect()
}

/// Whether a pool folder's entry `name` is a namespace's folder rather than an image's.
pub fn is_namespace_folder(name: &str) -> bool {
    name.starts_with(NAMESPACE_MARK)
}

/// Refuses a pool or image name that could escape the destination folder, be taken for an option
/// by `rbd`, or break the `<image>@<snap>` file names; `what` is "pool" or "image".
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name == "." || name == ".." {
        "would name a folder outside the backup folder"
    } else if name.contains('/') {
        "contains '/', which would reach outside the backup folder"
    } else if name.starts_with('-') {
        "starts with '-', so rbd would read it as an option"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else if what == "image" && name.contains('@') {
        "contains '@', which separates image and snapshot names"
    } else {
        return Ok(());
    };
    Err(format!("{what} name {name:?} {problem}"))
}

/// The longest file name (in bytes) Linux filesystems take (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// The longest file name the tool writes in an image's folder, in bytes: the checksum file of a
/// compressed diff when `diffs` (incremental mode), else that of a compressed full backup; with
/// the encrypted suffix when the section encrypts.
pub fn longest_file_name(image: &str, diffs: bool, encrypted: bool) -> usize {
    // Every snapshot name has the same length; any instant gives it.
    let snap = SnapName::at(DateTime::<Utc>::UNIX_EPOCH);
    let longest_suffix = Compression::SUFFIXED
        .iter()
        .map(|c| c.suffix().len())
        .max()
        .unwrap_or(0);
    let file = if diffs {
        BackupFile::diff(snap.clone(), snap, Compression::None)
    } else {
        BackupFile::full(snap, Compression::None)
    };
    let sealed = if encrypted { ENCRYPTED_SUFFIX.len() } else { 0 };
    file.file_name(image).len() + longest_suffix + sealed + CHECKSUM_SUFFIX.len()
}

/// Refuses an image name so long that a file the tool writes for it would exceed [`NAME_MAX`]
/// ("File name too long" only after a snapshot was taken and exported for nothing).
pub fn check_name_length(image: &str, diffs: bool, encrypted: bool) -> Result<(), String> {
    let longest = longest_file_name(image, diffs, encrypted);
    if longest <= NAME_MAX {
        return Ok(());
    }
    let most = NAME_MAX - (longest - image.len());
    Err(format!(
        "image name {image:?} is {} bytes long, but {} backup files need at most {most} (their \
         names add {} bytes to it and a file name may have {NAME_MAX}); rename the image \
         (`rbd rename`) or back it up with another tool",
        image.len(),
        if diffs { "incremental" } else { "full" },
        longest - image.len(),
    ))
}

/// A backup snapshot name and the instant it encodes (UTC, whole seconds).
///
/// Names written before June 2017 lack the `BACKUP` prefix (`UTC20170119T092933`); they are
/// understood when reading old backup folders but never produced.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapName {
    taken: DateTime<Utc>,
    name: String,
}

impl SnapName {
    /// The name of a snapshot taken at `at`, truncated to the second.
    pub fn at(at: DateTime<Utc>) -> SnapName {
        let taken = at.trunc_subsecs(0);
        let name = format!("{SNAP_PREFIX}{}", taken.format(SNAP_TIME_FORMAT));
        SnapName { taken, name }
    }

    /// Parses a current (`BACKUPUTC…`) or legacy (`UTC…`) snapshot name.
    pub fn parse(name: &str) -> Option<SnapName> {
        let stamp = name.strip_prefix(SNAP_PREFIX).unwrap_or(name);
        // The format has fixed width; checking it first rejects trailing junk chrono would allow.
        if stamp.len() != "UTC20170808T143015".len() {
            return None;
        }
        let naive = NaiveDateTime::parse_from_str(stamp, SNAP_TIME_FORMAT).ok()?;
        Some(SnapName {
            taken: naive.and_utc(),
            name: name.to_string(),
        })
    }

    /// True for snapshot names the tool owns, whether or not they parse.
    pub fn is_owned(name: &str) -> bool {
        name.starts_with(SNAP_PREFIX)
    }

    pub fn taken(&self) -> DateTime<Utc> {
        self.taken
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Names from before the `BACKUP` prefix existed.
    pub fn is_legacy(&self) -> bool {
        !self.name.starts_with(SNAP_PREFIX)
    }
}

impl fmt::Display for SnapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Reads a point in time as restore's `--at` takes it: a snapshot name (`BACKUPUTC20261125T120000`,
/// or the legacy `UTC…`), its bare stamp (`20261125T120000`, UTC), RFC 3339 with any offset, a
/// date and time without an offset (`2026-11-25 12:00[:00]`, a space or a `T` between them,
/// UTC like the snapshot names), or a plain date (`2026-11-25`), which means the end of that day
/// (UTC): restore then takes the newest point taken on that day or before it, which is what "the
/// backup of the 25th" means to an administrator.
pub fn parse_point_in_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Some(snap) = SnapName::parse(text) {
        return Ok(snap.taken());
    }
    const BARE: &str = "%Y%m%dT%H%M%S";
    if text.len() == "20261125T120000".len() {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, BARE) {
            return Ok(naive.and_utc());
        }
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(naive.and_utc());
        }
    }
    if let Some(end_of_day) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_nano_opt(23, 59, 59, 999_999_999))
    {
        return Ok(end_of_day.and_utc());
    }
    Err(format!(
        "cannot read {text:?} as a point in time: use a snapshot name \
         (BACKUPUTC20261125T120000), its stamp (20261125T120000), a date and time \
         (2026-11-25 12:00[:00]), a date (2026-11-25: its newest point), all UTC, or RFC 3339 \
         with an offset (2026-11-25T12:00:00Z)"
    ))
}

/// What a backup file holds: a whole image, or the changes since a base snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Content {
    Full,
    DiffFrom(SnapName),
}

/// How a backup file stores its raw stream: as itself, or as the one member of a tar archive
/// compressed with gzip (the original's `.tar.gz`) or zstd (`.tar.zst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Every way, the ones that name a suffix first.
    const SUFFIXED: [Compression; 2] = [Compression::Gzip, Compression::Zstd];

    /// True for the tar archives.
    pub fn is_compressed(self) -> bool {
        self != Compression::None
    }

    /// What the file name adds to the raw stream's name.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => COMPRESSED_SUFFIX,
            Compression::Zstd => ZSTD_SUFFIX,
        }
    }

    /// "raw", "gzip" or "zstd", for listings and messages.
    pub fn label(self) -> &'static str {
        match self {
            Compression::None => "raw",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The compression a file name's suffix says, and the name without it.
    pub fn split(file_name: &str) -> (&str, Compression) {
        for compression in Compression::SUFFIXED {
            if let Some(raw) = file_name.strip_suffix(compression.suffix()) {
                return (raw, compression);
            }
        }
        (file_name, Compression::None)
    }
}

/// `compress = yes` is the original's gzip; `no` stores the raw stream.
impl From<bool> for Compression {
    fn from(compressed: bool) -> Compression {
        if compressed {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

/// One backup file of an image: `<image>@<snap>.full` or `<image>@<snap>.diff_from_<base>`,
/// optionally with `.tar.gz` or `.tar.zst`, then `.age` when encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackupFile {
    pub snap: SnapName,
    pub content: Content,
    pub compression: Compression,
    /// An age file ([`ENCRYPTED_SUFFIX`]): its clear bytes are what the name says without it.
    pub encrypted: bool,
}

impl BackupFile {
    /// A full backup; `compression` is a [`Compression`] or, as the original's switch, a bool.
    pub fn full(snap: SnapName, compression: impl Into<Compression>) -> BackupFile {
        BackupFile {
            snap,
            content: Content::Full,
            compression: compression.into(),
            encrypted: false,
        }
    }

    pub fn diff(base: SnapName, snap: SnapName, compression: impl Into<Compression>) -> BackupFile {
        BackupFile {
            snap,
            content: Content::DiffFrom(base),
            compression: compression.into(),
            encrypted: false,
        }
    }

    /// The same file, encrypted or not as `encrypted` says.
    #[must_use]
    pub fn encrypted(self, encrypted: bool) -> BackupFile {
        BackupFile { encrypted, ..self }
    }

    /// True when the file is a tar archive rather than the raw stream.
    pub fn compressed(&self) -> bool {
        self.compression.is_compressed()
    }

    /// The name of the uncompressed stream (the tar member name when compressed).
    pub fn raw_name(&self, image: &str) -> String {
        match &self.content {
            Content::Full => format!("{image}@{}{FULL_SUFFIX}", self.snap),
            Content::DiffFrom(base) => format!("{image}@{}{DIFF_MARKER}{base}", self.snap),
        }
    }

    /// The name of the file on disk.
    pub fn file_name(&self, image: &str) -> String {
        let sealed = if self.encrypted { ENCRYPTED_SUFFIX } else { "" };
        self.raw_name(image) + self.compression.suffix() + sealed
    }

    pub fn is_full(&self) -> bool {
        self.content == Content::Full
    }

    pub fn base(&self) -> Option<&SnapName> {
        match &self.content {
            Content::Full => None,
            Content::DiffFrom(base) => Some(base),
        }
    }

    /// Parses a file name found in `image`'s folder; `None` for anything that is not a backup
    /// file of that image.
    pub fn parse(image: &str, file_name: &str) -> Option<BackupFile> {
        let rest = file_name.strip_prefix(image)?.strip_prefix('@')?;
        let (rest, encrypted) = match rest.strip_suffix(ENCRYPTED_SUFFIX) {
            Some(clear) => (clear, true),
            None => (rest, false),
        };
        let (rest, compression) = Compression::split(rest);
        let file = if let Some(snap) = rest.strip_suffix(FULL_SUFFIX) {
            BackupFile::full(SnapName::parse(snap)?, compression)
        } else {
            let (snap, base) = rest.split_once(DIFF_MARKER)?;
            BackupFile::diff(SnapName::parse(base)?, SnapName::parse(snap)?, compression)
        };
        Some(file.encrypted(encrypted))
    }
}

/// What an entry of an image folder is, as far as the tool is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Backup(BackupFile),
    /// `X.sha256` beside backup file `X`.
    Checksum(BackupFile),
    /// A leftover of a run that did not finish.
    Temporary,
    /// The tool's record of its work on the image ([`crate::folder::record`]).
    Record,
    Unexpected,
}

impl Entry {
    pub fn classify(image: &str, file_name: &str) -> Entry {
        if file_name.starts_with(TEMP_PREFIX) {
            return Entry::Temporary;
        }
        if file_name == IMAGE_RECORD {
            return Entry::Record;
        }
        if let Some(file) = BackupFile::parse(image, file_name) {
            return Entry::Backup(file);
        }
        match checksummed(file_name).and_then(|of| BackupFile::parse(image, of)) {
            Some(file) => Entry::Checksum(file),
            None => Entry::Unexpected,
        }
    }
}

/// Names of full backups from before the original took snapshots (`<image>_UTC20170119T092933.full`,
/// optionally `.tar.gz`; `.tar.zst` too, though the original never wrote one). They are recognised so listings can say what they are, but no chain is
/// built from them: they restore by hand with `rbd import`.
pub fn is_snapshotless_full_name(image: &str, file_name: &str) -> bool {
    let Some(rest) = file_name
        .strip_prefix(image)
        .and_then(|r| r.strip_prefix('_'))
    else {
        return false;
    };
    let (rest, _) = Compression::split(rest);
    rest.strip_suffix(FULL_SUFFIX)
        .and_then(SnapName::parse)
        .is_some_and(|snap| snap.is_legacy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_folder_never_collides_with_an_image_folder() {
        assert_eq!(pool_path("rbd"), ["rbd"]);
        assert_eq!(pool_path("rbd/tenant"), ["rbd", "@tenant"]);
        assert!(is_namespace_folder("@tenant"));
        assert!(!is_namespace_folder("tenant"));
        // No image the tool backs up can be named like a namespace's folder.
        assert!(check_name("image", "@tenant").is_err());
        assert!(check_pool_spec("rbd/tenant").is_ok());
        assert!(check_pool_spec("rbd/-x").is_err());
        assert!(check_pool_spec("../x").is_err());
    }
    use crate::test_fixtures::snap;
    use chrono::TimeZone;

    #[test]
    fn snapshot_names_round_trip_with_second_resolution() {
        let at = Utc
            .with_ymd_and_hms(2017, 8, 8, 14, 30, 15)
            .unwrap()
            .checked_add_signed(chrono::Duration::milliseconds(999))
            .unwrap();
        let name = SnapName::at(at);
        assert_eq!(name.as_str(), "BACKUPUTC20170808T143015");
        assert_eq!(name.as_str().len(), 24);
        assert_eq!(SnapName::parse(name.as_str()), Some(name.clone()));
        assert_eq!(
            name.taken(),
            Utc.with_ymd_and_hms(2017, 8, 8, 14, 30, 15).unwrap()
        );
    }

    #[test]
    fn snapshot_names_that_do_not_parse() {
        for bad in [
            "BACKUP-manual",
            "BACKUPUTC20170808T14301",
            "BACKUPUTC20170808T1430150",
            "BACKUPUTC20171308T143015",
            "backupUTC20170808T143015",
            "BACKUPUTC20170808 143015",
            "",
        ] {
            assert_eq!(SnapName::parse(bad), None, "{bad:?}");
        }
        assert!(SnapName::is_owned("BACKUP-manual"));
        assert!(!SnapName::is_owned("nightly"));
    }

    #[test]
    fn legacy_names_parse_but_are_marked() {
        let old = snap("UTC20170119T092933");
        assert!(old.is_legacy());
        assert!(!snap("BACKUPUTC20170119T092933").is_legacy());
    }

    #[test]
    fn image_names_are_bounded_by_the_longest_file_name_they_give() {
        // `<image>@<S>.diff_from_<B>.tar.zst.sha256`: 75 bytes besides the image name.
        assert_eq!(longest_file_name("vm", true, false), 77);
        assert_eq!(longest_file_name("vm", false, false), 47);
        let fits = "v".repeat(180);
        assert_eq!(longest_file_name(&fits, true, false), NAME_MAX);
        assert!(check_name_length(&fits, true, false).is_ok());
        let over = "v".repeat(181);
        let err = check_name_length(&over, true, false).unwrap_err();
        assert!(
            err.contains("181 bytes long") && err.contains("at most 180"),
            "{err}"
        );
        // A full backup's names are shorter: the same name fits a full-mode section.
        assert!(check_name_length(&over, false, false).is_ok());
        let err = check_name_length(&"v".repeat(250), false, false).unwrap_err();
        assert!(err.contains("at most 210") && !err.contains('\n'), "{err}");
        // An encrypting section's names are 4 bytes longer (`.age`).
        assert_eq!(longest_file_name("vm", true, true), 81);
        assert!(check_name_length(&fits, true, true).is_err());
        // Bytes, not characters: 'é' is two.
        assert!(check_name_length(&"é".repeat(91), true, false).is_err());
    }

    #[test]
    fn file_names_match_the_original_layout() {
        let s0 = snap("BACKUPUTC20170801T020000");
        let s1 = snap("BACKUPUTC20170802T020000");
        let cases = [
            (
                BackupFile::full(s0.clone(), false),
                "img@BACKUPUTC20170801T020000.full",
            ),
            (
                BackupFile::full(s0.clone(), true),
                "img@BACKUPUTC20170801T020000.full.tar.gz",
            ),
            (
                BackupFile::diff(s0.clone(), s1.clone(), false),
                "img@BACKUPUTC20170802T020000.diff_from_BACKUPUTC20170801T020000",
            ),
            (
                BackupFile::diff(s0.clone(), s1.clone(), true),
                "img@BACKUPUTC20170802T020000.diff_from_BACKUPUTC20170801T020000.tar.gz",
            ),
            (
                BackupFile::full(s0.clone(), Compression::Zstd),
                "img@BACKUPUTC20170801T020000.full.tar.zst",
            ),
            (
                BackupFile::diff(s0.clone(), s1.clone(), Compression::Zstd),
                "img@BACKUPUTC20170802T020000.diff_from_BACKUPUTC20170801T020000.tar.zst",
            ),
            (
                BackupFile::full(s0.clone(), false).encrypted(true),
                "img@BACKUPUTC20170801T020000.full.age",
            ),
            (
                BackupFile::diff(s0, s1, Compression::Zstd).encrypted(true),
                "img@BACKUPUTC20170802T020000.diff_from_BACKUPUTC20170801T020000.tar.zst.age",
            ),
        ];
        for (file, name) in cases {
            assert_eq!(file.file_name("img"), name);
            assert_eq!(BackupFile::parse("img", name), Some(file));
        }
    }

    #[test]
    fn parsing_does_not_treat_the_image_name_as_a_pattern() {
        let name = "vmXdisk@BACKUPUTC20170801T020000.full";
        assert_eq!(BackupFile::parse("vm.disk", name), None);
        assert!(BackupFile::parse("vmXdisk", name).is_some());
        assert_eq!(
            BackupFile::parse("my disk", "my disk@BACKUPUTC20170801T020000.full")
                .map(|f| f.snap.to_string()),
            Some("BACKUPUTC20170801T020000".into())
        );
    }

    #[test]
    fn hostile_names_are_refused_and_ordinary_ones_accepted() {
        for bad in [
            "", ".", "..", "a/b", "../etc", "-x", "--conf", "a\nb", "a\tb", "\u{7f}", "a@b",
        ] {
            assert!(check_name("image", bad).is_err(), "{bad:?}");
        }
        let message = check_name("image", "a\nb").unwrap_err();
        assert_eq!(message, r#"image name "a\nb" contains a control character"#);
        for good in ["vm1", "my disk", "disque-été", "a.b", "x-", "..x", "日本"] {
            assert_eq!(check_name("image", good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn points_in_time_in_every_accepted_spelling() {
        let noon = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        for text in [
            "BACKUPUTC20261125T120000",
            "UTC20261125T120000",
            "20261125T120000",
            "2026-11-25T12:00:00Z",
            "2026-11-25T13:00:00+01:00",
            "2026-11-25T12:00:00.000Z",
            "2026-11-25 12:00:00",
            "2026-11-25 12:00",
            "2026-11-25T12:00:00",
            "2026-11-25T12:00",
        ] {
            assert_eq!(parse_point_in_time(text), Ok(noon), "{text}");
        }
        // A plain date is the end of that day: its last point still counts.
        let day = parse_point_in_time("2026-11-25").unwrap();
        let last_second = Utc.with_ymd_and_hms(2026, 11, 25, 23, 59, 59).unwrap();
        assert!(day >= last_second, "{day}");
        assert!(day < Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap());
        for bad in [
            "",
            "latest",
            "2026-11-32",
            "2026-11-25 25:00",
            "20261125T1200",
            "20261125T120000Z1",
            "BACKUPUTC20261325T120000",
            "25.11.2026",
        ] {
            let err = parse_point_in_time(bad).unwrap_err();
            assert!(
                err.contains("RFC 3339") && err.contains("2026-11-25 12:00"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn snapshotless_full_names_are_recognised() {
        for (name, expected) in [
            ("img_UTC20170119T092933.full", true),
            ("img_UTC20170119T092933.full.tar.gz", true),
            ("img_UTC20170119T092933.full.tar.zst", true),
            ("img_BACKUPUTC20170119T092933.full", false),
            ("img_UTC20170119T092933.diff_from_UTC20170118T092933", false),
            ("img@UTC20170119T092933.full", false),
            ("imgx_UTC20170119T092933.full", false),
        ] {
            assert_eq!(is_snapshotless_full_name("img", name), expected, "{name}");
        }
    }

    #[test]
    fn entries_are_classified() {
        let s = "img@BACKUPUTC20170801T020000.full";
        assert!(matches!(Entry::classify("img", s), Entry::Backup(_)));
        assert!(matches!(
            Entry::classify("img", &format!("{s}.tar.gz.sha256")),
            Entry::Checksum(f) if f.compression == Compression::Gzip
        ));
        assert!(matches!(
            Entry::classify("img", &format!("{s}.tar.zst.sha256")),
            Entry::Checksum(f) if f.compression == Compression::Zstd
        ));
        // Other archive suffixes are not backup files.
        assert_eq!(
            Entry::classify("img", &format!("{s}.tar.xz")),
            Entry::Unexpected
        );
        assert_eq!(
            Entry::classify("img", ".cephbackup-tmp.abc"),
            Entry::Temporary
        );
        for other in [
            "img@BACKUPfoo.full",
            "img_UTC20170119T092933.full",
            "notes.txt",
            "img@BACKUPUTC20170801T020000.fully",
            "other@BACKUPUTC20170801T020000.full",
        ] {
            assert_eq!(Entry::classify("img", other), Entry::Unexpected, "{other}");
        }
        assert!(matches!(
            Entry::classify("img", "img@UTC20170119T092933.full"),
            Entry::Backup(f) if f.snap.is_legacy()
        ));
    }
}
