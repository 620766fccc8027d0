//! One run at a time per destination.
//!
//! The lock is an OS file lock (flock) on `.cephbackup.lock` in the destination directory, so it
//! is released by the kernel when a run dies however it dies: a stale lock can never block the
//! next run. A backup run takes it exclusively; a check-mode run takes it shared, never creates
//! the file (check mode writes nothing) and so only waits for a real run to finish.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

const LOCK_FILE: &str = ".cephbackup.lock";
const POLL: Duration = Duration::from_millis(200);

/// Held locks; dropping it releases them.
#[derive(Debug)]
pub struct RunLock {
    _files: Vec<File>,
}

/// Another run holds the lock of a destination.
#[derive(Debug, thiserror::Error)]
#[error("another cephbackup run{holder} is using {}; try again later, or pass --wait SECONDS", .destination.display())]
pub struct Busy {
    pub destination: PathBuf,
    holder: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A backup run: alone on the destination.
    Exclusive,
    /// A check-mode run: may overlap other check runs, not a backup run.
    Shared,
}

/// Locks every destination (those that exist; a missing one fails its own sections later),
/// waiting up to `wait` for each.
pub fn acquire(destinations: &[(PathBuf, Kind)], wait: Duration) -> Result<RunLock> {
    let deadline = Instant::now() + wait;
    let mut files = Vec::new();
    for (destination, kind) in destinations {
        if let Some(file) = lock_one(destination, *kind, deadline)? {
            files.push(file);
        }
    }
    Ok(RunLock { _files: files })
}

fn lock_one(destination: &Path, kind: Kind, deadline: Instant) -> Result<Option<File>> {
    if !destination.is_dir() {
        return Ok(None);
    }
    let path = destination.join(LOCK_FILE);
    let opened = match kind {
        Kind::Exclusive => OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path),
        Kind::Shared => match File::open(&path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            other => other,
        },
    };
    let mut file = opened.with_context(|| format!("cannot open lock file {}", path.display()))?;
    loop {
        let attempt = match kind {
            Kind::Exclusive => file.try_lock(),
            Kind::Shared => file.try_lock_shared(),
        };
        match attempt {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => std::thread::sleep(POLL),
            Err(TryLockError::WouldBlock) => {
                return Err(Busy {
                    destination: destination.to_path_buf(),
                    holder: holder(&mut file),
                }
                .into())
            }
            Err(TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
    if kind == Kind::Exclusive {
        // Only informative: names the holder in the message another run prints.
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
    }
    share_with_children(&file)
        .with_context(|| format!("cannot prepare lock file {}", path.display()))?;
    Ok(Some(file))
}

/// Lets the `rbd` processes we start inherit the lock. A flock belongs to the open file, so it is
/// only released once every process holding it has exited: if this run is killed, the next one
/// cannot start while an `rbd` of ours is still finishing (say, creating a snapshot) unseen.
fn share_with_children(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl(2) on a descriptor we own, changing only its close-on-exec flag.
    let cleared = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) };
    if cleared == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn holder(file: &mut File) -> String {
    let mut pid = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut pid));
    match pid.trim() {
        "" => String::new(),
        pid => format!(" (pid {pid})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_exclusive_lock_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let dests = [(dir.path().to_path_buf(), Kind::Exclusive)];
        let held = acquire(&dests, Duration::ZERO).unwrap();
        let err = acquire(&dests, Duration::ZERO).unwrap_err();
        let busy = err.downcast_ref::<Busy>().expect("a Busy error");
        assert!(busy
            .to_string()
            .contains(&format!("(pid {})", std::process::id())));
        assert!(acquire(&[(dir.path().to_path_buf(), Kind::Shared)], Duration::ZERO).is_err());
        drop(held);
        acquire(&dests, Duration::ZERO).unwrap();
    }

    #[test]
    fn waiting_gets_the_lock_once_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let dests = [(dir.path().to_path_buf(), Kind::Exclusive)];
        let held = acquire(&dests, Duration::ZERO).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        acquire(&dests, Duration::from_secs(10)).unwrap();
        releaser.join().unwrap();
    }

    #[test]
    fn check_runs_share_and_never_create_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let shared = [(dir.path().to_path_buf(), Kind::Shared)];
        let _a = acquire(&shared, Duration::ZERO).unwrap();
        assert!(!dir.path().join(LOCK_FILE).exists());
        drop(
            acquire(
                &[(dir.path().to_path_buf(), Kind::Exclusive)],
                Duration::ZERO,
            )
            .unwrap(),
        );
        let _b = acquire(&shared, Duration::ZERO).unwrap();
        let _c = acquire(&shared, Duration::ZERO).unwrap();
    }

    #[test]
    fn a_missing_destination_is_left_to_its_sections() {
        let dir = tempfile::tempdir().unwrap();
        let missing = [(dir.path().join("nope"), Kind::Exclusive)];
        acquire(&missing, Duration::ZERO).unwrap();
        assert!(!dir.path().join("nope").exists());
    }
}
