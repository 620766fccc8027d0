//! `cephbackup mount`: an image's restore points as a read-only FUSE filesystem, read in place
//! from the backup files, so that one file of Tuesday's disk is recovered without restoring
//! the disk.
//!
//! The image's folder is scanned and its points chosen as for a restore ([`crate::folder::read`],
//! [`crate::commands::restore::choose`]); [`point`] opens and indexes a point's chain and proves
//! each file before serving it; [`fs`] is the filesystem. The mount holds the image's shared lock
//! while it stands, so a backup by the same user waits, as for a restore, up to its `--wait`;
//! and it holds every file of the points it shows open from its start, so that a file a backup of
//! another user prunes (each user locks in a folder of their own) is still served. It runs in the
//! foreground and unmounts on SIGINT or SIGTERM, or ends when unmounted from outside
//! (`fusermount -u`, `umount`); `--daemon` starts that same mount in the background and returns
//! once it stands.

mod fs;
mod packed;
pub mod point;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use fuser::{Config as FuseConfig, MountOption};

use crate::cluster::process::CommandLine;
use crate::cluster::rbd::spec;
use crate::commands::catalog;
use crate::commands::restore::choose;
use crate::config::Config;
use crate::folder::naming;
use crate::folder::read;
use crate::output::escaped_path;
use crate::{interrupt, lock, UsageError};
use point::{Folder, Point};

/// How often the foreground waits look for a signal or an unmount from outside.
const POLL: Duration = Duration::from_millis(100);

/// What `mount` is asked for.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub pool: String,
    pub image: String,
    /// Only the newest point taken at or before this instant; every point without it.
    pub at: Option<DateTime<Utc>>,
    pub mountpoint: PathBuf,
    /// The identity file that opens encrypted files.
    pub identity: Option<PathBuf>,
    /// Return once mounted, the mount going on in the background.
    pub daemon: bool,
    /// The most bytes the cache of compressed and encrypted files' chunks may take.
    pub cache_size: u64,
}

pub fn run(config: &Config, args: &MountOptions, locking: &lock::Locking) -> Result<()> {
    if args.daemon {
        return in_background(&args.mountpoint);
    }
    crate::folder::format::encrypt::use_identity_file(args.identity.as_deref())?;
    let job = catalog::section(config, &args.pool)?;
    naming::check_name("image", &args.image).map_err(UsageError)?;
    check_mountpoint(&args.mountpoint)?;
    let label = spec(&job.pool, &args.image, None);
    let dir = job.image_folder(&args.image);
    // Shared, as a restore: no backup prunes a file the mount serves while it stands.
    let _lock = locking.image(&job.pool, &args.image, lock::Kind::Shared)?;
    let mut scanned = read::scan(&*dir, &args.image)?;
    let limits = scanned.refuse_wrong_sized(&*dir);
    let (chosen_snap, _) = choose(&scanned, &label, args.at)?;
    let chosen_snap = chosen_snap.clone();
    let snaps: Vec<_> = match args.at {
        Some(_) => vec![chosen_snap.clone()],
        None => scanned.layout.points().into_iter().cloned().collect(),
    };
    let folder = Folder::new(dir, limits, packed::Cache::new(args.cache_size)?);
    more_open_files();
    let mut points = Vec::new();
    for snap in snaps {
        if let Some(route) = scanned.layout.route(&snap) {
            let route: Vec<_> = route.into_iter().cloned().collect();
            folder.hold(&route);
            points.push(Point::new(snap, route));
        }
    }
    let chosen = points
        .iter()
        .position(|point| point.snap == chosen_snap)
        .context("the chosen point has no route")?;
    let fs = fs::BackupFs::new(folder, points, chosen, args.at.is_none(), &args.image);
    let mut options = FuseConfig::default();
    options.mount_options = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
        MountOption::DefaultPermissions,
        MountOption::FSName(format!("cephbackup:{label}")),
        MountOption::Subtype("cephbackup".into()),
    ];
    let session = fuser::spawn_mount(fs, &args.mountpoint, &options)
        .map_err(|err| not_mounted(err, &args.mountpoint))?;
    crate::outln!(
        "{label} mounted read-only on {} ({}); unmount with `fusermount -u {}` or Ctrl-C",
        args.mountpoint.display(),
        match args.at {
            Some(_) => format!("restore point {chosen_snap}"),
            None => format!("every restore point; newest {chosen_snap}"),
        },
        args.mountpoint.display()
    );
    let_go_of_stderr()?;
    while interrupt::received().is_none() && !session.guard.is_finished() {
        std::thread::sleep(POLL);
    }
    if session.guard.is_finished() {
        // Unmounted from outside: the session ended on its own.
        return session.join().context("the mount ended with an error");
    }
    session
        .umount_and_join()
        .with_context(|| format!("cannot unmount {}", escaped_path(&args.mountpoint)))?;
    tracing::info!("unmounted {}", escaped_path(&args.mountpoint));
    Ok(())
}

/// Why a mount could not be made, pointing at the cause: where `/dev/fuse` is closed to a user
/// that is not root, that (the mount point is not to blame).
fn not_mounted(err: std::io::Error, mountpoint: &Path) -> anyhow::Error {
    let shown = escaped_path(mountpoint);
    let fuse_closed = || {
        use rustix::fs::{access, Access};
        access("/dev/fuse", Access::READ_OK | Access::WRITE_OK).is_err()
    };
    if err.kind() == std::io::ErrorKind::PermissionDenied
        && !rustix::process::geteuid().is_root()
        && fuse_closed()
    {
        return anyhow::anyhow!(
            "cannot mount on {shown}: /dev/fuse is not open to this user, so only root can mount \
             FUSE filesystems on this host (a stock system's udev makes it read-write for all)"
        );
    }
    anyhow::Error::new(err).context(format!("cannot mount on {shown}"))
}

/// Raises this process's limit of open files as far as it may: the mount holds every file of
/// the points it shows open ([`Folder::hold`]).
fn more_open_files() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(err) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!("cannot raise the limit of open files: {err}");
        }
    }
}

/// Set in the environment of the mount `--daemon` starts: once its filesystem stands, it lets go
/// of the pipe that carries its stderr to the command that started it.
const DETACHED: &str = "CEPHBACKUP_MOUNT_DETACHED";

/// `--daemon`: this same command line without `--daemon`, started detached. Its stderr comes
/// back here (its errors, if it fails) until its filesystem stands; then this returns, and the
/// mount goes on in the background.
fn in_background(mountpoint: &Path) -> Result<()> {
    check_mountpoint(mountpoint)?;
    let program = std::env::current_exe().context("cannot find this program to start it again")?;
    let args = std::env::args_os().skip(1).filter(|arg| arg != "--daemon");
    let mut child = CommandLine::new(program)
        .args(args)
        .env(DETACHED, "1")
        .spawn_detached()?;
    // Whatever the mount says before it stands (a failure, why) is ours to say.
    let said = match child.stderr.take() {
        Some(mut said) => std::io::copy(&mut said, &mut std::io::stderr()).unwrap_or(0),
        None => 0,
    };
    let target = mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}", escaped_path(mountpoint)))?;
    if is_mounted(&target)? {
        crate::outln!(
            "mounted on {} in the background (process {}); unmount with `fusermount -u {}`",
            mountpoint.display(),
            child.id(),
            mountpoint.display()
        );
        return Ok(());
    }
    let status = child.wait().context("cannot watch the mount")?;
    match status.code() {
        // It said why; one line is enough.
        Some(code) if said > 0 && code != 0 => Err(crate::AlreadySaid(code).into()),
        _ => bail!("the mount ended before it was made ({status})"),
    }
}

/// In the mount `--daemon` started, once its filesystem stands: stderr goes to /dev/null, so
/// that the command that started it sees the end of its pipe and returns. (Later messages are
/// not shown; run the mount in the foreground to see them.)
fn let_go_of_stderr() -> Result<()> {
    if std::env::var_os(DETACHED).is_none() {
        return Ok(());
    }
    let null = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .context("cannot open /dev/null")?;
    rustix::stdio::dup2_stderr(&null).context("cannot let go of stderr")?;
    Ok(())
}

/// Whether a filesystem is mounted on `target` (canonical), as /proc/self/mounts says (where
/// a space is `\040`).
fn is_mounted(target: &Path) -> Result<bool> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    let wanted = target.to_string_lossy().replace(' ', "\\040");
    Ok(mounts
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(wanted.as_str())))
}

/// An existing, empty folder (FUSE would hide what it holds).
fn check_mountpoint(path: &Path) -> Result<()> {
    let shown = escaped_path(path);
    let mut entries = std::fs::read_dir(path)
        .with_context(|| format!("mount point {shown} is not a folder that can be read"))?;
    if entries.next().is_some() {
        bail!("mount point {shown} is not empty");
    }
    Ok(())
}
