//! `cephbackup --check --offline`: everything a backup run would check before it talks to the
//! cluster, checked without it, so a configuration can be tried on a host where the cluster is not
//! reachable (yet), or before a first run.
//!
//! The file's syntax, keys and values were checked when it was loaded (those problems are
//! printed by `main` and stop everything before this runs). Here: the `ceph config` and
//! `ceph keyring` files each section names (present, a regular file, readable), and each
//! destination as a run would see it: present, a folder, writable, the pool's folder inside it a
//! folder, and whether it is recorded as the tool's, can be adopted (it holds files) or is empty
//! (which a run refuses when the cluster already holds backup snapshots of its images, a backup
//! disk that did not mount). One line per problem on stderr, one line per section on stdout.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::config::{self, Config, PoolJob};
use crate::folder::record::{self, Destination};
use crate::folder::untrusted::{self, EntryKind};
use crate::outln;
use crate::output::escaped_path;

/// How the check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// A `ceph config` or `ceph keyring` file cannot be read: the configuration must change.
    ConfigProblems,
    /// A destination a run would refuse (or fail to write).
    DestinationProblems,
}

/// Checks and prints; never starts a process.
pub fn run(config: &Config) -> Verdict {
    let config_problems = config::cluster_file_problems(config);
    for problem in &config_problems {
        eprintln!("error: {problem}");
    }
    let mut destination_problems = 0;
    for job in &config.pools {
        match check_destination(job) {
            Ok(state) => outln!("[{}] {}: {state}", job.pool, escaped_path(&job.destination)),
            Err(problem) => {
                destination_problems += 1;
                eprintln!("error: [{}] destination directory {problem}", job.pool);
            }
        }
    }
    let verdict = if !config_problems.is_empty() {
        Verdict::ConfigProblems
    } else if destination_problems > 0 {
        Verdict::DestinationProblems
    } else {
        Verdict::Fine
    };
    let problems = config_problems.len() + destination_problems;
    outln!(
        "Offline check of {}: {} section(s), {}; the cluster was not contacted",
        escaped_path(&config.path),
        config.pools.len(),
        match problems {
            0 => "no problems".to_string(),
            n => format!("{n} problem(s)"),
        }
    );
    verdict
}

/// What a run would find at the destination: its state when usable, else the problem (the
/// message starts with the path, after "destination directory").
fn check_destination(job: &PoolJob) -> Result<&'static str, String> {
    let dest = &job.destination;
    let shown = escaped_path(dest);
    let state = match record::inspect(&*job.destination_folder()) {
        Ok(state) => state,
        Err(err) => return Err(format!("{shown}: {err:#}")),
    };
    let described = match state {
        Destination::Missing => {
            return Err(format!("{shown} does not exist{}", record::UNMOUNTED_HINT))
        }
        Destination::NotAFolder(kind) => {
            return Err(format!("{shown} is {}, not a folder", kind.described()))
        }
        Destination::Recorded => "a cephbackup destination, ready",
        Destination::Adoptable => "holds files but no cephbackup record; a run adopts it",
        Destination::Empty => {
            "empty and without a cephbackup record: a run refuses it when this host wrote there \
             before on another filesystem, or when an incremental section's images carry backup \
             snapshots (a disk that did not mount looks like this); `cephbackup \
             init-destination` marks it on purpose"
        }
    };
    // A bucket: reached, and there (or `Missing` above). Whether these keys may write to it is
    // the bucket's policy, which only a write would tell.
    if job.store.is_some() {
        return Ok(match state {
            Destination::Empty => "an empty bucket prefix: a run starts it",
            _ => described,
        });
    }
    if let Err(err) = writable(dest) {
        return Err(format!("{shown} cannot be written: {err}"));
    }
    let pool_dir = dest.join(&job.pool);
    match untrusted::kind_of(&pool_dir) {
        Ok(EntryKind::Directory) => {
            if let Err(err) = writable(&pool_dir) {
                return Err(format!(
                    "{shown}: its pool folder {} cannot be written: {err}",
                    escaped_path(&pool_dir)
                ));
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(format!(
                "{shown}: cannot read {}: {err}",
                escaped_path(&pool_dir)
            ))
        }
        Ok(kind) => {
            return Err(format!(
                "{shown}: its pool folder {} is {}, not a folder",
                escaped_path(&pool_dir),
                kind.described()
            ))
        }
    }
    Ok(described)
}

/// Whether this process may create files in `dir` (permissions, a read-only mount), asked of
/// the kernel without writing anything.
fn writable(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path holds a NUL byte",
        ));
    }
    use rustix::fs::{Access, AtFlags};
    // AT_EACCESS asks for the effective ids, which are the ones a run writes with.
    rustix::fs::accessat(
        rustix::fs::CWD,
        dir,
        Access::WRITE_OK | Access::EXEC_OK,
        AtFlags::EACCESS,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::parse_config;
    use std::fmt::Write as _;

    fn config_for(dest: &Path, ceph: &Path, keyring: Option<&Path>) -> Config {
        let mut text = format!(
            "[rbd]\nimages = vm\nbackup mode = full\ndestination directory = {}\nceph config = {}\n",
            dest.display(),
            ceph.display()
        );
        if let Some(keyring) = keyring {
            let _ = write!(
                text,
                "ceph user = backup\nceph keyring = {}\n",
                keyring.display()
            );
        }
        parse_config(&text)
    }

    #[test]
    fn a_good_configuration_passes_and_problems_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let ceph = tmp.path().join("ceph.conf");
        std::fs::write(&ceph, "[global]\n").unwrap();
        let dest = tmp.path().join("backups");
        std::fs::create_dir(&dest).unwrap();
        assert_eq!(run(&config_for(&dest, &ceph, None)), Verdict::Fine);
        let keyring = tmp.path().join("missing.keyring");
        let config = config_for(&dest, &ceph, Some(&keyring));
        assert_eq!(run(&config), Verdict::ConfigProblems);
        let problems = config::cluster_file_problems(&config);
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].to_string(),
            format!(
                "/etc/cephbackup/cephbackup.conf:1: [rbd] ceph keyring: cannot read {}: No such \
                 file or directory",
                keyring.display()
            )
        );
        let missing = tmp.path().join("not-mounted");
        assert_eq!(
            check_destination(&config_for(&missing, &ceph, None).pools[0]).unwrap_err(),
            format!(
                "{} does not exist{}",
                missing.display(),
                record::UNMOUNTED_HINT
            )
        );
        assert_eq!(
            run(&config_for(&missing, &ceph, None)),
            Verdict::DestinationProblems
        );
        std::fs::write(dest.join("rbd"), "").unwrap();
        let err = check_destination(&config_for(&dest, &ceph, None).pools[0]).unwrap_err();
        assert!(
            err.contains("pool folder") && err.contains("not a folder"),
            "{err}"
        );
    }
}
