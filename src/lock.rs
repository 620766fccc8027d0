//! Keeps two runs from working on the same image at the same time, and nothing more.
//!
//! Each image has its own lock file, `<lock folder>/<pool>/<image>.lock`, so runs whose images do
//! not overlap never wait for each other, whatever destinations they share, while two runs that
//! touch one image (a weekly full job and a nightly incremental job, say) take turns. The lock is
//! an advisory lock (flock) on that file, released by the kernel when a run dies however it dies:
//! a stale lock can never block the next run. Backups take it exclusively; check mode, restore
//! and verify take it shared, so they can read along with each other but never while a backup of
//! the image changes its snapshots or files.
//!
//! The lock folder is not the destination: a destination is often a shared disk that other users
//! can write, and anyone who can read a lock file can hold a shared flock on it and block every
//! backup. The default folder is `/run/cephbackup` for root (elsewhere a private folder of the
//! user), created 0700; a folder, subfolder or lock file that is a symlink, belongs to another
//! user or can be written by others is refused rather than used.
//!
//! A run that finds an image locked waits for it (a backup by default for a night's worth,
//! [`DEFAULT_BACKUP_WAIT`]; restore and verify briefly, [`DEFAULT_READ_WAIT`]), saying once on
//! stderr whom it waits for: the exclusive holder writes its pid and command line into the lock
//! file for that. SIGINT and SIGTERM end a wait at once.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cluster::process;
use crate::folder::untrusted::{self, effective_uid, EntryKind};
use crate::interrupt;

const POLL: Duration = Duration::from_millis(200);

/// How long a backup waits for another run's image unless `wait` or `--wait` says otherwise:
/// long enough for a night's run (a weekly full job started beside the daily incremental one).
pub const DEFAULT_BACKUP_WAIT: Duration = Duration::from_secs(6 * 60 * 60);

/// The longest wait, `wait` or `--wait`: a week. Bounded so that deadline arithmetic on it can
/// never overflow (an unbounded value made `Instant + Duration` panic).
pub const MAX_WAIT_SECONDS: u64 = 7 * 24 * 60 * 60;

/// How long restore and verify wait for a backup of the image unless `--wait` says otherwise:
/// someone is usually watching them, and a backup's hours are better said than sat out.
pub const DEFAULT_READ_WAIT: Duration = Duration::from_secs(30);

/// The most of the lock file read back to name its holder.
const MAX_HOLDER_BYTES: u64 = 512;

/// Where locks live unless `--lock-dir` says otherwise.
pub fn default_dir() -> PathBuf {
    if effective_uid() == 0 {
        return PathBuf::from("/run/cephbackup");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("cephbackup"),
        _ => std::env::temp_dir().join(format!("cephbackup-{}", effective_uid())),
    }
}

/// Where locks live and how long to wait for one: what every command that locks needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locking {
    pub dir: PathBuf,
    pub wait: Duration,
}

impl Locking {
    /// Locks `pool/image`, waiting up to the configured time.
    pub fn image(&self, pool: &str, image: &str, kind: Kind) -> Result<ImageLock> {
        lock_image(&self.dir, pool, image, kind, Instant::now() + self.wait)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A backup run: alone on the image.
    Exclusive,
    /// A dry run, restore or verify: may overlap each other, not a backup.
    Shared,
}

/// A held image lock; dropping it releases the lock.
#[derive(Debug)]
pub struct ImageLock {
    // Before the file: it must stop being passed on before it is closed.
    _inherited: process::Inherited,
    _file: File,
}

/// Another run holds the lock of an image.
#[derive(Debug, thiserror::Error)]
#[error("{holder} is using {pool}/{image}{}", advice(*.waited))]
pub struct Busy {
    pub pool: String,
    pub image: String,
    holder: String,
    /// How long this run was to wait for it.
    waited: Duration,
}

fn advice(waited: Duration) -> String {
    if waited.is_zero() {
        "; try again later, or pass --wait SECONDS".to_string()
    } else {
        format!(
            " still, after waiting {}; try again later, or pass a longer --wait SECONDS",
            crate::progress::duration(waited)
        )
    }
}

/// Locks `pool/image` in the lock folder `dir`, waiting until `deadline` for another run to let go.
pub fn lock_image(
    dir: &Path,
    pool: &str,
    image: &str,
    kind: Kind,
    deadline: Instant,
) -> Result<ImageLock> {
    private_folder(dir)?;
    let mut pool_dir = dir.to_path_buf();
    for part in crate::folder::naming::pool_path(pool) {
        pool_dir.push(part);
        private_folder(&pool_dir)?;
    }
    let path = pool_dir.join(format!("{image}.lock"));
    let mut file = open_lock_file(&path)?;
    let started = Instant::now();
    // In whole seconds, as `wait` and `--wait` give it (a moment has passed since).
    let left = deadline.saturating_duration_since(started);
    let allowed = Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0));
    let mut announced = false;
    loop {
        let attempt = match kind {
            Kind::Exclusive => file.try_lock(),
            Kind::Shared => file.try_lock_shared(),
        };
        match attempt {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                if !announced {
                    announced = true;
                    tracing::info!(
                        "{pool}/{image}: waiting up to {} for {} to finish with it",
                        crate::progress::duration(allowed),
                        holder(&mut file, kind)
                    );
                }
                // A signal ends the wait at once: nothing of the image was touched yet.
                interrupt::check()?;
                std::thread::sleep(POLL);
            }
            Err(TryLockError::WouldBlock) => {
                return Err(Busy {
                    pool: pool.to_string(),
                    image: image.to_string(),
                    holder: holder(&mut file, kind),
                    waited: allowed,
                }
                .into())
            }
            Err(TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
    if kind == Kind::Exclusive {
        // Only informative: names the holder in the line a waiting run prints.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", holder_line()))
            .with_context(|| format!("cannot write lock file {}", path.display()))?;
    }
    // The `rbd` processes this image's run starts inherit the lock. A flock belongs to the open
    // file, so it is only released once every process holding it has exited: if this run is
    // killed, the next one cannot start while an `rbd` of ours is still finishing (say, creating
    // a snapshot) unseen.
    Ok(ImageLock {
        _inherited: process::inherit_on_this_thread(file.as_fd()),
        _file: file,
    })
}

/// Creates `dir` (0700) when missing, and refuses one that is not a private folder of ours.
#[allow(clippy::disallowed_methods)] // the host's lock folder is not a destination
fn private_folder(dir: &Path) -> Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => {
            return Err(err).with_context(|| format!("cannot create lock folder {}", dir.display()))
        }
    }
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("cannot read lock folder {}", dir.display()))?;
    let kind = EntryKind::of(meta.file_type());
    if kind != EntryKind::Directory {
        bail!(
            "lock folder {} is {}, not a folder; refusing to use it",
            dir.display(),
            kind.described()
        );
    }
    if meta.uid() != effective_uid() || meta.mode() & 0o022 != 0 {
        bail!(
            "lock folder {} belongs to uid {} with mode {:o}: other users could block or fake \
             locks there; make it a folder of uid {} that only its owner can write, or choose \
             another with --lock-dir",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777,
            effective_uid()
        );
    }
    Ok(())
}

/// Opens (creating 0600) a lock file without following a symlink or blocking on a FIFO, and
/// checks on the open handle that it is a regular file of ours.
#[allow(clippy::disallowed_methods)] // lock files live in the host's lock folder, not a destination
fn open_lock_file(path: &Path) -> Result<File> {
    let file = untrusted::open_with(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600),
        path,
    )
    .with_context(|| format!("cannot open lock file {}", path.display()))?;
    let owner = file
        .metadata()
        .with_context(|| format!("cannot read lock file {}", path.display()))?
        .uid();
    if owner != effective_uid() {
        bail!(
            "lock file {} belongs to uid {owner}, not to this user (uid {}); refusing to use it",
            path.display(),
            effective_uid()
        );
    }
    Ok(file)
}

/// What an exclusive holder writes into the lock file: its pid and what it runs, so that a
/// waiting run can say whom it waits for (`pid 4242: cephbackup -c /etc/weekly.conf`).
fn holder_line() -> String {
    let command: Vec<String> = std::env::args().collect();
    format!("pid {}: {}", std::process::id(), command.join(" "))
}

/// Names whoever holds the lock that `file` could not take as `kind`, for one line on stderr.
fn holder(file: &mut File, kind: Kind) -> String {
    // A backup finds either another backup (which wrote the file) or readers only; a reader can
    // only be kept out by a backup. Readers leave no mark, and what a backup wrote before may
    // still be there, so that is told first.
    if kind == Kind::Exclusive && file.try_lock_shared().is_ok() {
        let _ = file.unlock();
        return "another cephbackup run reading it (restore, verify or check mode)".to_string();
    }
    let mut text = Vec::new();
    let _ = file
        .rewind()
        .and_then(|()| file.take(MAX_HOLDER_BYTES).read_to_end(&mut text));
    describe_holder(&String::from_utf8_lossy(&text))
}

/// The lock file's text as the name of its holder; the file is private to this user, but the
/// command line is still escaped (an argument may hold anything).
fn describe_holder(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    match line {
        "" => "another cephbackup run".to_string(),
        // Written by an older version: the pid alone.
        pid if pid.bytes().all(|b| b.is_ascii_digit()) => {
            format!("another cephbackup run (pid {pid})")
        }
        line => format!("another cephbackup run ({})", crate::output::escaped(line)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::mkfifo;
    use std::os::unix::fs::PermissionsExt;

    fn now() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_second_exclusive_lock_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let locks = dir.path().join("locks");
        let held = lock_image(&locks, "rbd", "vm", Kind::Exclusive, now()).unwrap();
        let err = lock_image(&locks, "rbd", "vm", Kind::Exclusive, now()).unwrap_err();
        let busy = err.downcast_ref::<Busy>().expect("a Busy error");
        let text = busy.to_string();
        assert!(
            text.starts_with(&format!(
                "another cephbackup run (pid {}: ",
                std::process::id()
            )),
            "{text}"
        );
        assert!(
            text.ends_with(") is using rbd/vm; try again later, or pass --wait SECONDS"),
            "{text}"
        );
        assert!(lock_image(&locks, "rbd", "vm", Kind::Shared, now()).is_err());
        // Other images, in this pool or another, are not held up.
        let _other = lock_image(&locks, "rbd", "db", Kind::Exclusive, now()).unwrap();
        let _pool = lock_image(&locks, "ssd", "vm", Kind::Exclusive, now()).unwrap();
        drop(held);
        lock_image(&locks, "rbd", "vm", Kind::Exclusive, now()).unwrap();
        let meta = std::fs::metadata(locks.join("rbd/vm.lock")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let meta = std::fs::metadata(locks.join("rbd")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn waiting_gets_the_lock_once_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_image(dir.path(), "rbd", "vm", Kind::Exclusive, now()).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let started = Instant::now();
        lock_image(
            dir.path(),
            "rbd",
            "vm",
            Kind::Exclusive,
            now() + Duration::from_secs(10),
        )
        .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250), "it waited");
        releaser.join().unwrap();
    }

    #[test]
    fn a_wait_that_runs_out_says_how_long_it_waited() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_image(dir.path(), "rbd", "vm", Kind::Exclusive, now()).unwrap();
        let deadline = now() + Duration::from_millis(300);
        let err = lock_image(dir.path(), "rbd", "vm", Kind::Exclusive, deadline).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("is using rbd/vm still, after waiting 1.0 s;"),
            "{text}"
        );
        assert!(text.ends_with("or pass a longer --wait SECONDS"), "{text}");
    }

    #[test]
    fn a_backup_kept_out_by_readers_says_so() {
        let dir = tempfile::tempdir().unwrap();
        // What an earlier backup wrote is still in the file; the readers are named instead.
        drop(lock_image(dir.path(), "rbd", "vm", Kind::Exclusive, now()).unwrap());
        let _reader = lock_image(dir.path(), "rbd", "vm", Kind::Shared, now()).unwrap();
        let err = lock_image(dir.path(), "rbd", "vm", Kind::Exclusive, now()).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "another cephbackup run reading it (restore, verify or check mode) is using"
            ),
            "{err}"
        );
        // The readers still hold it: the probe let go of what it took.
        assert!(lock_image(dir.path(), "rbd", "vm", Kind::Exclusive, now()).is_err());
    }

    #[test]
    fn the_holder_is_named_from_what_it_wrote() {
        for (text, named) in [
            ("", "another cephbackup run"),
            ("4242", "another cephbackup run (pid 4242)"),
            (
                "pid 4242: cephbackup -c /etc/weekly.conf\n",
                "another cephbackup run (pid 4242: cephbackup -c /etc/weekly.conf)",
            ),
            (
                "pid 7: cephbackup -c /tmp/\u{1b}[2Jx\n",
                "another cephbackup run (pid 7: cephbackup -c /tmp/\\x1b[2Jx)",
            ),
        ] {
            assert_eq!(describe_holder(text), named, "{text:?}");
        }
    }

    #[test]
    fn shared_locks_share() {
        let dir = tempfile::tempdir().unwrap();
        let _a = lock_image(dir.path(), "rbd", "vm", Kind::Shared, now()).unwrap();
        let _b = lock_image(dir.path(), "rbd", "vm", Kind::Shared, now()).unwrap();
        assert!(lock_image(dir.path(), "rbd", "vm", Kind::Exclusive, now()).is_err());
    }

    #[test]
    fn links_fifos_and_open_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let locks = dir.path().join("locks");
        std::fs::create_dir_all(locks.join("rbd")).unwrap();
        std::fs::set_permissions(&locks, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(locks.join("rbd"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, locks.join("rbd/vm.lock")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("absent"), locks.join("rbd/dangling.lock"))
            .unwrap();
        mkfifo(locks.join("rbd/fifo.lock"));

        for (image, what) in [
            ("vm", "is a symbolic link"),
            ("dangling", "is a symbolic link"),
            ("fifo", "is a FIFO"),
        ] {
            let err = lock_image(&locks, "rbd", image, Kind::Exclusive, now()).unwrap_err();
            let text = format!("{err:#}");
            assert!(text.contains(&format!("rbd/{image}.lock")), "{text}");
            assert!(text.contains(what), "{text}");
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!dir.path().join("absent").exists());

        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = lock_image(&open, "rbd", "vm", Kind::Exclusive, now()).unwrap_err();
        assert!(err.to_string().contains("other users could block"), "{err}");
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&locks, &linked).unwrap();
        let err = lock_image(&linked, "rbd", "x", Kind::Exclusive, now()).unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
    }
}
