//! The host's own memory of its backups: what must outlive a destination.
//!
//! A destination's records travel with its files: they vanish when the disk does not mount, when
//! the folder is emptied, or when everything (dotfiles included) is shipped offsite. So the host
//! keeps the facts its decisions need in a small private folder of its own, the state folder:
//! - each destination it wrote to: the identity in its destination record, and the filesystem it
//!   was on ([`Filesystem`]), so an empty folder on another filesystem (a disk that did not
//!   mount, a new disk at the mount point) is told apart from one emptied on purpose;
//! - each image's newest completed snapshot there, so a chain whose files were shipped
//!   continues with a diff;
//! - the key that seals the tool's records ([`crate::folder::record::seal`]).
//!
//! A few verbs make the whole interface ([`HostState::destination`],
//! [`HostState::destination_used`], [`HostState::image_completed`],
//! [`HostState::newest_completed`]), so the same facts live elsewhere without the executor
//! knowing: with `coordination pool` ([`crate::coordinate`]) they are entries of an omap object
//! in that pool instead of files, under the same names, and the record key is the pool's, so any
//! host continues any chain and proves the records any other host sealed. Only the filesystem a
//! host saw a destination on stays that host's own (a shared folder can look different from
//! each host), and each image's note also says which host completed it in which round.
//!
//! The folder is `state directory` of the configuration, else `$STATE_DIRECTORY` (what systemd's
//! `StateDirectory=` sets), else `/var/lib/cephbackup` for root and a private folder of the user
//! otherwise. It is created 0700 and refused when it is a symlink, belongs to another user or
//! can be written by others: whoever could write there could forge the host's memory or read
//! the key. Every file is small, written atomically (temporary name, sync, rename, folder sync)
//! and read through a bounded, no-follow open. A host opened read-only (check mode) creates and
//! writes nothing.

use std::fs::{DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::info;

use crate::coordinate::{Coordination, KEY_OBJECT, STATE_OBJECT};
use crate::folder::door::{ObjectStore, PendingFile};
use crate::folder::record::seal::{random_bytes, KEY_BYTES};
use crate::folder::record::{Completed, SealKey};
use crate::folder::untrusted::{self, effective_uid, EntryKind};

/// The state folder when neither the configuration nor the environment names one, for root.
pub const ROOT_DEFAULT: &str = "/var/lib/cephbackup";
/// The environment variable systemd's `StateDirectory=` sets.
pub const ENVIRONMENT: &str = "STATE_DIRECTORY";
const KEY_FILE: &str = "record.key";
const DESTINATIONS: &str = "destinations";
/// The host's files are a few hundred bytes.
const MAX_FILE_BYTES: u64 = 64 * 1024;
const FORMAT: u32 = 1;

/// Where the state folder is when the configuration does not say.
pub fn default_dir() -> PathBuf {
    if let Some(dirs) = std::env::var_os(ENVIRONMENT) {
        // systemd joins several StateDirectory= entries with ':'; the first is ours.
        let dirs = dirs.to_string_lossy().into_owned();
        if let Some(first) = dirs.split(':').next().filter(|d| !d.is_empty()) {
            return PathBuf::from(first);
        }
    }
    if effective_uid() == 0 {
        return PathBuf::from(ROOT_DEFAULT);
    }
    match (std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME")) {
        (Some(state), _) if Path::new(&state).is_absolute() => {
            PathBuf::from(state).join("cephbackup")
        }
        (_, Some(home)) if Path::new(&home).is_absolute() => {
            PathBuf::from(home).join(".local/state/cephbackup")
        }
        _ => std::env::temp_dir().join(format!("cephbackup-state-{}", effective_uid())),
    }
}

/// The filesystem a path is on, as the kernel identifies it.
///
/// `f_fsid` of statfs(2), not `st_dev`: the device number belongs to the moment of mounting (a
/// USB disk comes back as sdc instead of sdb, a loop file on another loop device), while ext4,
/// XFS and btrfs derive `f_fsid` from the filesystem's own UUID, so it stays the same across
/// remounts of the same filesystem and differs for any other (the root filesystem under an
/// empty mount point, a freshly made disk). Filesystems that report no fsid (0) fall back to the
/// device number. The type is kept to name the filesystem in messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    /// `fsid:<16 hex digits>`, or `dev:<major>:<minor>` when the filesystem has no fsid.
    pub id: String,
    /// statfs's `f_type`.
    pub kind: u64,
}

/// The kind [`Filesystem::of_destination`] gives an object store: no filesystem has it.
const OBJECT_STORE_KIND: u64 = 0x5333_5333;

impl Filesystem {
    /// Where a destination keeps its files: the filesystem of the folder, or for an object
    /// store its service and bucket (which, unlike a backup disk, cannot fail to mount).
    pub fn of_destination(path: &Path, store: Option<&ObjectStore>) -> Result<Filesystem> {
        match store {
            Some(store) => Ok(Filesystem::object_store(&store.identity())),
            None => Filesystem::of(path),
        }
    }

    /// The bucket `identity` (its service and name) of an object store.
    pub fn object_store(identity: &str) -> Filesystem {
        Filesystem {
            id: format!("s3:{identity}"),
            kind: OBJECT_STORE_KIND,
        }
    }

    /// Whether this is an object store's bucket, which cannot fail to mount as a disk can.
    pub fn is_object_store(&self) -> bool {
        self.kind == OBJECT_STORE_KIND
    }

    pub fn of(path: &Path) -> Result<Filesystem> {
        let context = || format!("cannot read the filesystem of {}", path.display());
        let kind = rustix::fs::statfs(path).with_context(context)?.f_type;
        // rustix hands out statfs's f_fsid (the same number) through statvfs only.
        let fsid = rustix::fs::statvfs(path).with_context(context)?.f_fsid;
        let id = if fsid == 0 {
            let dev = std::fs::metadata(path).with_context(context)?.dev();
            format!("dev:{}:{}", libc::major(dev), libc::minor(dev))
        } else {
            format!("fsid:{fsid:016x}")
        };
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let kind = u64::try_from(kind as i64).unwrap_or(0);
        Ok(Filesystem { id, kind })
    }

    /// How messages name it: its kind and identity.
    pub fn described(&self) -> String {
        let kind = match self.kind {
            0xEF53 => "ext4".to_string(),
            0x5846_5342 => "xfs".to_string(),
            0x9123_683E => "btrfs".to_string(),
            0x0102_1994 => "tmpfs".to_string(),
            OBJECT_STORE_KIND => "object store".to_string(),
            0x794C_7630 => "overlay".to_string(),
            0x6969 => "nfs".to_string(),
            0x2FC1_2FC1 => "zfs".to_string(),
            0xFF53_4D42 => "cifs".to_string(),
            0x6573_5546 => "fuse".to_string(),
            other => format!("type {other:#x}"),
        };
        if self.is_object_store() {
            return format!("bucket {}", &self.id["s3:".len()..]);
        }
        format!("{kind} filesystem {}", self.id)
    }
}

/// What the host remembers of a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// The identity in the destination record the host last wrote or read there.
    pub id: String,
    pub filesystem: Filesystem,
}

/// Whether a run may create and change the state folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Check mode: read what is there, create and write nothing.
    ReadOnly,
    ReadWrite,
}

/// The host's state folder, opened.
#[derive(Debug)]
pub struct HostState {
    dir: PathBuf,
    access: Access,
    key: Option<SealKey>,
    /// Where the facts live when hosts share them: the coordination pool.
    shared: Option<Arc<Coordination>>,
}

impl std::fmt::Debug for Coordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "coordination pool {}", self.settings().pool)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct DestinationDoc {
    format: u32,
    /// The destination as configured, for people reading the folder.
    destination: String,
    id: String,
    filesystem: Filesystem,
    at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ImageDoc {
    format: u32,
    pool: String,
    image: String,
    /// The destination identity it was completed under: after a fresh start of the destination
    /// (a new identity) the old chain's snapshot is no base for it.
    destination_id: String,
    snapshot: String,
    file: String,
    at: DateTime<Utc>,
    /// With coordination: the host that completed it, and in which round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    round: Option<String>,
}

/// An image's newest completed backup as the shared memory has it: by which host, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedBy {
    pub pool: String,
    pub image: String,
    pub snapshot: String,
    pub host: String,
    pub at: DateTime<Utc>,
    /// Whether it was completed in the round this run belongs to.
    pub this_round: bool,
}

impl HostState {
    /// [`HostState::open_shared`] of a host that backs up alone.
    #[cfg(test)]
    pub fn open(dir: &Path, access: Access) -> Result<HostState> {
        HostState::open_shared(dir, access, None)
    }

    /// Opens (and with [`Access::ReadWrite`] creates) the state folder `dir` and its key; with
    /// `shared`, the facts and the key are kept in the coordination pool instead.
    pub fn open_shared(
        dir: &Path,
        access: Access,
        shared: Option<Arc<Coordination>>,
    ) -> Result<HostState> {
        let exists = match check_private(dir) {
            Ok(()) => true,
            Err(Problem::Missing) if access == Access::ReadOnly => false,
            Err(Problem::Missing) => {
                create_private(dir)?;
                check_private(dir).map_err(|problem| problem.into_error(dir))?;
                true
            }
            Err(problem) => return Err(problem.into_error(dir)),
        };
        let mut state = HostState {
            dir: dir.to_path_buf(),
            access,
            key: None,
            shared,
        };
        if exists {
            state.key = state.load_or_create_key()?;
        }
        if let Some(shared) = &state.shared {
            state.key = shared_key(shared, state.key.as_ref(), access)?;
        }
        Ok(state)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key that seals records: `None` only when opened read-only before any run created it.
    pub fn key(&self) -> Option<&SealKey> {
        self.key.as_ref()
    }

    /// What the host remembers of `dest`, if it ever wrote there.
    pub fn destination(&self, dest: &Path) -> Result<Option<Known>> {
        let Some(doc) = self.read::<DestinationDoc>(&self.destination_file(dest))? else {
            return Ok(None);
        };
        Ok((doc.format == FORMAT).then_some(Known {
            id: doc.id,
            filesystem: doc.filesystem,
        }))
    }

    /// Notes that this host writes to `dest`, known as `known` (its identity and filesystem).
    pub fn destination_used(&self, dest: &Path, known: &Known, at: DateTime<Utc>) -> Result<()> {
        let doc = DestinationDoc {
            format: FORMAT,
            destination: dest.display().to_string(),
            id: known.id.clone(),
            filesystem: known.filesystem.clone(),
            at,
        };
        let file = self.destination_file(dest);
        self.write(&file, &doc)
    }

    /// Notes that the backup of `pool/image` into `dest` (identity `id`) completed `completed`.
    pub fn image_completed(
        &self,
        dest: &Path,
        id: &str,
        pool: &str,
        image: &str,
        completed: &Completed,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let doc = ImageDoc {
            format: FORMAT,
            pool: pool.to_string(),
            image: image.to_string(),
            destination_id: id.to_string(),
            snapshot: completed.snapshot.clone(),
            file: completed.file.clone(),
            at,
            host: self.shared.as_ref().map(|s| s.host().to_string()),
            round: self.shared.as_ref().and_then(|s| s.round()),
        };
        self.write(&self.image_file(dest, pool, image), &doc)
    }

    /// The newest snapshot of `pool/image` whose backup into `dest` (identity `id`) completed.
    pub fn newest_completed(
        &self,
        dest: &Path,
        id: &str,
        pool: &str,
        image: &str,
    ) -> Result<Option<Completed>> {
        let doc = self.read::<ImageDoc>(&self.image_file(dest, pool, image))?;
        Ok(doc
            .filter(|doc| {
                doc.format == FORMAT
                    && doc.destination_id == id
                    && doc.pool == pool
                    && doc.image == image
            })
            .map(|doc| Completed {
                snapshot: doc.snapshot,
                file: doc.file,
            }))
    }

    /// Who completed the newest backup of `pool/image` into `dest`, and whether in this run's
    /// round: known only when hosts share their memory.
    pub fn completed_by(
        &self,
        dest: &Path,
        pool: &str,
        image: &str,
    ) -> Result<Option<CompletedBy>> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let doc = self.read::<ImageDoc>(&self.image_file(dest, pool, image))?;
        Ok(doc
            .filter(|doc| doc.format == FORMAT && doc.pool == pool && doc.image == image)
            .and_then(|doc| {
                let this_round = doc.round.is_some() && doc.round == shared.round();
                Some(CompletedBy {
                    pool: doc.pool,
                    image: doc.image,
                    snapshot: doc.snapshot,
                    host: doc.host?,
                    at: doc.at,
                    this_round,
                })
            }))
    }

    /// Every image's newest completed backup the hosts' shared memory holds, by pool and image
    /// (empty without coordination).
    pub fn all_completed(&self) -> Result<Vec<CompletedBy>> {
        let Some(shared) = &self.shared else {
            return Ok(Vec::new());
        };
        let entries = shared
            .pool()
            .omap_get(STATE_OBJECT, &format!("{DESTINATIONS}/"))
            .context("cannot read the shared memory")?;
        let round = shared.round();
        let mut found: Vec<CompletedBy> = entries
            .iter()
            .filter_map(|(_, bytes)| serde_json::from_slice::<ImageDoc>(bytes).ok())
            .filter_map(|doc| {
                Some(CompletedBy {
                    this_round: doc.round.is_some() && doc.round == round,
                    pool: doc.pool,
                    image: doc.image,
                    snapshot: doc.snapshot,
                    host: doc.host?,
                    at: doc.at,
                })
            })
            .collect();
        found.sort_by(|a, b| (&a.pool, &a.image, a.at).cmp(&(&b.pool, &b.image, b.at)));
        Ok(found)
    }

    /// `<dir>/destinations/<hash of the path>.json`: any path, however long or odd, makes one
    /// short, safe name.
    fn destination_file(&self, dest: &Path) -> PathBuf {
        let name = name_of(&[&path_key(dest)]);
        match &self.shared {
            // The filesystem a host saw the destination on is that host's own.
            Some(shared) => Path::new(DESTINATIONS).join(format!(
                "{name}@{}.json",
                name_of(&[shared.host().as_bytes()])
            )),
            None => Path::new(DESTINATIONS).join(format!("{name}.json")),
        }
    }

    /// One file per image, so that two runs backing up different images into one destination
    /// (each under its image lock) never overwrite each other's facts.
    fn image_file(&self, dest: &Path, pool: &str, image: &str) -> PathBuf {
        Path::new(DESTINATIONS)
            .join(name_of(&[&path_key(dest)]))
            .join(format!(
                "{}.json",
                name_of(&[pool.as_bytes(), image.as_bytes()])
            ))
    }

    /// Reads the fact named `name` (a path below the state folder, or the same name as an
    /// omap key of the shared memory).
    fn read<T: serde::de::DeserializeOwned>(&self, name: &Path) -> Result<Option<T>> {
        if let Some(shared) = &self.shared {
            let key = name.display().to_string();
            let found = shared
                .pool()
                .omap_get(STATE_OBJECT, &key)
                .with_context(|| format!("cannot read {key} of the shared memory"))?;
            let Some((_, bytes)) = found.into_iter().find(|(k, _)| *k == key) else {
                return Ok(None);
            };
            return serde_json::from_slice(&bytes).map(Some).with_context(|| {
                format!("cannot read {key} of the shared memory: not the tool's state")
            });
        }
        let path = &self.dir.join(name);
        let bytes = match untrusted::read_small(path, MAX_FILE_BYTES) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            // A folder on the way that does not exist yet: nothing known.
            Err(err) if err.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("cannot read {}: not the tool's state", path.display()))
    }

    fn write(&self, name: &Path, doc: &impl Serialize) -> Result<()> {
        if self.access == Access::ReadOnly {
            bail!(
                "internal error: the state folder {} was opened read-only",
                self.dir.display()
            );
        }
        let mut text = serde_json::to_vec_pretty(doc).context("cannot encode the host state")?;
        text.push(b'\n');
        if let Some(shared) = &self.shared {
            let key = name.display().to_string();
            return shared
                .pool()
                .omap_set(STATE_OBJECT, &[(&key, &text)], false)
                .with_context(|| format!("cannot write {key} of the shared memory"));
        }
        let path = &self.dir.join(name);
        let parent = path.parent().unwrap_or(&self.dir);
        let mut level = self.dir.clone();
        for part in parent.strip_prefix(&self.dir).unwrap_or(Path::new("")) {
            level.push(part);
            if let Err(Problem::Missing) = check_private(&level) {
                create_private(&level)?;
            }
            check_private(&level).map_err(|problem| problem.into_error(&level))?;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("state.json");
        let mut pending = PendingFile::create(parent, name)?;
        pending
            .file()
            .write_all(&text)
            .with_context(|| format!("cannot write {}", path.display()))?;
        pending.commit_replacing()?;
        Ok(())
    }

    /// The key: read when there, created (0600, 32 random bytes) on first use otherwise. Two
    /// runs creating it at once agree on one: it is linked into place, never renamed over
    /// another.
    #[allow(clippy::disallowed_methods)] // the host's state folder is not a destination
    fn load_or_create_key(&self) -> Result<Option<SealKey>> {
        let path = self.dir.join(KEY_FILE);
        if let Some(key) = read_key(&path)? {
            return Ok(Some(key));
        }
        if self.access == Access::ReadOnly {
            return Ok(None);
        }
        let mut bytes = [0u8; KEY_BYTES];
        random_bytes(&mut bytes)?;
        let mut pending = tempfile::Builder::new()
            .prefix(".record.key.")
            .tempfile_in(&self.dir)
            .with_context(|| format!("cannot create a key in {}", self.dir.display()))?;
        pending
            .write_all(&bytes)
            .and_then(|()| pending.as_file().sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
        match std::fs::hard_link(pending.path(), &path) {
            Ok(()) => File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .with_context(|| format!("cannot sync folder {}", self.dir.display()))?,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => {
                return Err(err).with_context(|| format!("cannot create {}", path.display()))
            }
        }
        drop(pending);
        read_key(&path)?
            .map(Some)
            .with_context(|| format!("{} vanished as it was created", path.display()))
    }
}

/// The record key the hosts share, from the coordination pool: made on first use from this
/// host's own key when it has one (so the records it sealed alone stay proven), else new.
/// Created in one exclusive step, so hosts starting together agree on one key.
fn shared_key(
    shared: &Coordination,
    own: Option<&SealKey>,
    access: Access,
) -> Result<Option<SealKey>> {
    let read = || -> Result<Option<SealKey>> {
        let found = shared
            .pool()
            .omap_get(KEY_OBJECT, KEY_FILE)
            .context("cannot read the shared record key")?;
        let Some((_, bytes)) = found.into_iter().find(|(k, _)| k == KEY_FILE) else {
            return Ok(None);
        };
        let bytes: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| {
            anyhow::anyhow!(
                "{KEY_OBJECT} in coordination pool {} holds no record key",
                shared.settings().pool
            )
        })?;
        Ok(Some(SealKey::new(bytes)))
    };
    if let Some(key) = read()? {
        return Ok(Some(key));
    }
    if access == Access::ReadOnly {
        return Ok(None);
    }
    let bytes = match own {
        Some(key) => *key.bytes(),
        None => {
            let mut bytes = [0u8; KEY_BYTES];
            random_bytes(&mut bytes)?;
            bytes
        }
    };
    match shared
        .pool()
        .omap_set(KEY_OBJECT, &[(KEY_FILE, &bytes)], true)
    {
        Ok(()) => {}
        Err(err) if err.errno == libc::EEXIST => {}
        Err(err) => return Err(err).context("cannot create the shared record key"),
    }
    read()?
        .map(Some)
        .context("the shared record key vanished as it was created")
}

fn read_key(path: &Path) -> Result<Option<SealKey>> {
    let bytes = match untrusted::read_owned(path, KEY_BYTES as u64, 0o077) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(None),
        Err(err) => match untrusted::not_own(&err) {
            Some(owner) => bail!(
                "{} belongs to uid {} with mode {:o}: a record key others can read or write \
                 proves nothing; remove it (records are then rewritten under a new one) or make \
                 it a file of uid {} with mode 600",
                path.display(),
                owner.uid,
                owner.mode,
                effective_uid()
            ),
            None => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        },
    };
    let bytes: [u8; KEY_BYTES] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} is not a record key: too short", path.display()))?;
    Ok(Some(SealKey::new(bytes)))
}

/// The destination path as a key: its components, so `/mnt/b/` and `/mnt/b` are one.
fn path_key(dest: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let normal: PathBuf = dest
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
    normal.as_os_str().as_bytes().to_vec()
}

/// A short file name for `parts`: the start of their SHA-256.
fn name_of(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What is wrong with a folder meant to be private.
enum Problem {
    Missing,
    Unusable(anyhow::Error),
}

impl Problem {
    fn into_error(self, dir: &Path) -> anyhow::Error {
        match self {
            Problem::Missing => anyhow::anyhow!("state folder {} does not exist", dir.display()),
            Problem::Unusable(err) => err,
        }
    }
}

/// A folder of this user that only this user can write, not reached through a final symlink.
fn check_private(dir: &Path) -> Result<(), Problem> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(Problem::Missing),
        Err(err) => {
            return Err(Problem::Unusable(
                anyhow::Error::new(err)
                    .context(format!("cannot read state folder {}", dir.display())),
            ))
        }
    };
    let kind = EntryKind::of(meta.file_type());
    if kind != EntryKind::Directory {
        return Err(Problem::Unusable(anyhow::anyhow!(
            "state folder {} is {}, not a folder; refusing to use it",
            dir.display(),
            kind.described()
        )));
    }
    if meta.uid() != effective_uid() || meta.mode() & 0o022 != 0 {
        return Err(Problem::Unusable(anyhow::anyhow!(
            "state folder {} belongs to uid {} with mode {:o}: others could forge what this host \
             remembers of its backups; make it a folder of uid {} that only its owner can write, \
             or choose another with `state directory`",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777,
            effective_uid()
        )));
    }
    Ok(())
}

/// Creates `dir` 0700 (its parents as the system makes them: `/var/lib` exists, `~/.local/state`
/// may not).
#[allow(clippy::disallowed_methods)] // the host's state folder is not a destination
fn create_private(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create state folder {}", parent.display()))?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => {
            Err(err).with_context(|| format!("cannot create state folder {}", dir.display()))
        }
    }
}

/// Where the backup executor notes what a run did beyond the image's folder: an image's newest
/// completed snapshot the moment it completes, and the destination it writes to (this host's
/// memory of it, and its record, sealed under the host's key): the host's state in a real run,
/// [`CheckNotes`] in check mode. The executor notes without asking which mode it is in; the pick
/// is per section, since one run may mix sections of both modes over one (then writable) state.
pub trait Notes: Send + Sync {
    /// [`HostState::image_completed`].
    fn image_completed(
        &self,
        dest: &Path,
        id: &str,
        pool: &str,
        image: &str,
        completed: &Completed,
        at: DateTime<Utc>,
    ) -> Result<()>;

    /// [`HostState::destination_used`].
    fn destination_used(&self, dest: &Path, known: &Known, at: DateTime<Utc>) -> Result<()>;

    /// The key the run's records are sealed under, when there is one to seal with.
    fn record_key(&self) -> Result<Option<&SealKey>>;

    /// Says that the record of destination `dest` is written now, as `how` (the record's
    /// `how`), before it is.
    fn announce_record(&self, dest: &Path, how: &str);

    /// Marks the record and memory of a destination written for this run (`written`, shared by
    /// the sections using it), so that no other section writes them again.
    fn mark_written(&self, written: &mut bool);
}

/// The real notes: the host's state. On a reference, so that [`CheckNotes`], which borrows
/// the state, and it are handed out alike.
impl Notes for &HostState {
    fn image_completed(
        &self,
        dest: &Path,
        id: &str,
        pool: &str,
        image: &str,
        completed: &Completed,
        at: DateTime<Utc>,
    ) -> Result<()> {
        HostState::image_completed(self, dest, id, pool, image, completed, at)
    }

    fn destination_used(&self, dest: &Path, known: &Known, at: DateTime<Utc>) -> Result<()> {
        HostState::destination_used(self, dest, known, at)
    }

    /// A real run opens the state writable, which makes the key: one without it would leave
    /// its destination and snapshots unrecorded, a bug said as one.
    fn record_key(&self) -> Result<Option<&SealKey>> {
        match self.key() {
            Some(key) => Ok(Some(key)),
            None => bail!("internal error: no record key in a real run"),
        }
    }

    fn announce_record(&self, dest: &Path, how: &str) {
        info!(
            "destination {}: writing its cephbackup record ({how})",
            dest.display()
        );
    }

    fn mark_written(&self, written: &mut bool) {
        *written = true;
    }
}

/// Check mode's twin of the host's notes: reads the host's key as the real notes do, takes each
/// note and keeps nothing.
pub struct CheckNotes<'h> {
    real: &'h HostState,
}

impl<'h> CheckNotes<'h> {
    pub fn new(real: &'h HostState) -> CheckNotes<'h> {
        CheckNotes { real }
    }
}

impl Notes for CheckNotes<'_> {
    fn image_completed(
        &self,
        _dest: &Path,
        _id: &str,
        _pool: &str,
        _image: &str,
        _completed: &Completed,
        _at: DateTime<Utc>,
    ) -> Result<()> {
        Ok(())
    }

    fn destination_used(&self, _dest: &Path, _known: &Known, _at: DateTime<Utc>) -> Result<()> {
        Ok(())
    }

    /// The host's key when it has one: a record sealed under it goes to a door that keeps
    /// nothing, but meets what a real run's would (a non-file at its name). A state opened
    /// read-only, for check sections alone, may have no key yet: then nothing is sealed.
    fn record_key(&self) -> Result<Option<&SealKey>> {
        Ok(self.real.key())
    }

    /// What a real run would do.
    fn announce_record(&self, dest: &Path, how: &str) {
        info!(
            "destination {} has no cephbackup record yet; a real run writes one ({how})",
            dest.display()
        );
    }

    /// Nothing was written: each check section using the destination says again what a real
    /// run would write, and a real section sharing it still writes it.
    fn mark_written(&self, _written: &mut bool) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fs_a() -> Filesystem {
        Filesystem {
            id: "fsid:00000000000000aa".into(),
            kind: 0xEF53,
        }
    }

    #[test]
    fn a_read_only_state_creates_nothing() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let state = HostState::open(&dir, Access::ReadOnly).unwrap();
        assert!(state.key().is_none());
        assert_eq!(state.destination(Path::new("/mnt/b")).unwrap(), None);
        assert!(!dir.exists());
        let known = Known {
            id: "x".into(),
            filesystem: fs_a(),
        };
        assert!(state
            .destination_used(Path::new("/mnt/b"), &known, Utc::now())
            .is_err());
        assert!(!dir.exists());
    }

    #[test]
    fn facts_are_kept_per_destination_and_image() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let state = HostState::open(&dir, Access::ReadWrite).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        let key = state.key().cloned().unwrap();

        let dest = Path::new("/mnt/backups/");
        let known = Known {
            id: "id-1".into(),
            filesystem: fs_a(),
        };
        state.destination_used(dest, &known, Utc::now()).unwrap();
        assert_eq!(
            state.destination(Path::new("/mnt/backups")).unwrap(),
            Some(known)
        );
        assert_eq!(state.destination(Path::new("/mnt/other")).unwrap(), None);

        let done = Completed {
            snapshot: "BACKUPUTC20261126T000000".into(),
            file: "vm@BACKUPUTC20261126T000000.full".into(),
        };
        state
            .image_completed(dest, "id-1", "rbd", "vm", &done, Utc::now())
            .unwrap();
        assert_eq!(
            state.newest_completed(dest, "id-1", "rbd", "vm").unwrap(),
            Some(done.clone())
        );
        assert_eq!(
            state.newest_completed(dest, "id-2", "rbd", "vm").unwrap(),
            None
        );
        assert_eq!(
            state.newest_completed(dest, "id-1", "rbd", "db").unwrap(),
            None
        );

        // Opened again, the same key; read-only, the same facts.
        let again = HostState::open(&dir, Access::ReadOnly).unwrap();
        assert_eq!(again.key(), Some(&key));
        assert_eq!(
            again.newest_completed(dest, "id-1", "rbd", "vm").unwrap(),
            Some(done)
        );
    }

    #[test]
    fn a_state_folder_others_could_change_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = HostState::open(&dir, Access::ReadOnly).unwrap_err();
        assert!(err.to_string().contains("others could forge"), "{err}");

        let link = root.path().join("link");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = HostState::open(&link, Access::ReadWrite).unwrap_err();
        assert!(err.to_string().contains("a symbolic link"), "{err}");

        HostState::open(&dir, Access::ReadWrite).unwrap();
        let key = dir.join(KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = HostState::open(&dir, Access::ReadOnly).unwrap_err();
        assert!(err.to_string().contains("proves nothing"), "{err}");
    }

    #[test]
    fn the_filesystem_of_a_folder_is_stable_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = Filesystem::of(dir.path()).unwrap();
        assert_eq!(a, Filesystem::of(dir.path()).unwrap());
        assert!(a.described().contains(&a.id), "{}", a.described());
        assert!(Filesystem::of(&dir.path().join("none")).is_err());
    }
}
