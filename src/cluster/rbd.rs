//! The `rbd` command line: how each operation is spelled, and how its JSON answers are read.
//!
//! Every call names the cluster configuration (and the cephx user and keyring when configured), so
//! the snapshots we list and the images we export always come from the same cluster; the original
//! passed the configuration to its library calls only. Queries use `--format json`, never text
//! scraping.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::cluster::ceph::CephTool;
use crate::cluster::process::{CommandError, CommandLine};

/// A snapshot as `rbd snap ls --format json` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Snapshot {
    pub id: u64,
    pub name: String,
}

/// Where [`Rbd::allocated`] puts the ranges of an image that hold data, in order of their
/// offsets, as `rbd diff` streams them: the sink (the archive's bounded sparse map) decides how
/// to keep them, so a listing of millions of extents never has to fit in memory.
pub trait ExtentSink {
    /// Takes the range of `len` bytes at `offset`; an error stops the listing.
    fn push(&mut self, offset: u64, len: u64) -> Result<(), String>;
}

/// How to reach one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub conf: PathBuf,
    pub user: Option<String>,
    pub keyring: Option<PathBuf>,
    /// Seconds a single Ceph operation may take; 0 for no limit.
    pub timeout: u32,
}

impl Cluster {
    /// The options that reach this cluster as this identity (`--conf`, `--id`, `--keyring`),
    /// for any Ceph command: the tool's own and the stock commands `restore --check` prints.
    pub fn options(&self) -> Vec<OsString> {
        let mut options = vec!["--conf".into(), self.conf.clone().into_os_string()];
        if let Some(user) = &self.user {
            options.extend(["--id".into(), user.into()]);
        }
        if let Some(keyring) = &self.keyring {
            options.extend(["--keyring".into(), keyring.clone().into_os_string()]);
        }
        options
    }
}

/// A command of Ceph's (`rbd`, `rados`) against `cluster`: its configuration, identity and
/// time limits.
pub(super) fn ceph_command(program: &str, cluster: &Cluster) -> CommandLine {
    // Its failures are read as Ceph's: the errno of its exit status, its words restated, the
    // cephx identity of a refused login.
    let ceph = CephTool::new(cluster.user.as_deref(), cluster.keyring.as_deref());
    let mut cmd = CommandLine::new(program)
        .interpreted_by(Arc::new(ceph))
        .args(cluster.options());
    if cluster.timeout > 0 {
        // Without these a monitor that does not answer or an OSD that is down makes rbd wait
        // forever, and cron piles up runs behind it.
        let seconds = cluster.timeout.to_string();
        for option in [
            "--client-mount-timeout",
            "--rados-mon-op-timeout",
            "--rados-osd-op-timeout",
        ] {
            cmd = cmd.arg(option).arg(&seconds);
        }
    }
    cmd
}

/// Builds and runs `rbd` commands against one cluster.
#[derive(Debug, Clone)]
pub struct Rbd {
    cluster: Cluster,
    /// Snapshot sizes (`pool/image@snap` → bytes) learnt from `rbd snap ls`, which gives them
    /// with every listing: a snapshot's size never changes, so [`Rbd::size`] need not start an
    /// `rbd info` for a snapshot already listed. Forgotten when this tool creates or removes a
    /// snapshot of that name. Shared by clones (and by the images a run backs up at once).
    sizes: Arc<Mutex<HashMap<String, u64>>>,
    /// What `rbd snap create` asks of the clients that map the image.
    quiesce: Quiesce,
}

/// Whether `rbd snap create` first asks the clients mapping the image (rbd-nbd with a quiesce
/// hook) to quiesce it, and whether their failure to do so fails the snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Quiesce {
    /// rbd's default: notify them, and fail when one cannot quiesce.
    #[default]
    Required,
    /// Notify them, and take the snapshot even when one cannot (`--ignore-quiesce-error`).
    IgnoreErrors,
    /// Do not notify them (`--skip-quiesce`).
    Skip,
}

#[derive(Deserialize)]
struct ImageInfo {
    size: u64,
    /// Present only when a limit is set (`rbd snap limit set`).
    #[serde(default)]
    snapshot_limit: Option<u64>,
}

/// One entry of `rbd snap ls --format json`.
#[derive(Deserialize)]
struct ListedSnapshot {
    id: u64,
    name: String,
    size: Option<u64>,
}

/// `pool/image` or `pool/image@snap`, the spelling every `rbd` command accepts.
pub fn spec(pool: &str, image: &str, snap: Option<&str>) -> String {
    match snap {
        Some(snap) => format!("{pool}/{image}@{snap}"),
        None => format!("{pool}/{image}"),
    }
}

impl Rbd {
    pub fn new(cluster: Cluster) -> Rbd {
        Rbd {
            cluster,
            sizes: Arc::default(),
            quiesce: Quiesce::default(),
        }
    }

    /// The same, with `rbd snap create` quiescing as `quiesce` says.
    pub fn with_quiesce(mut self, quiesce: Quiesce) -> Rbd {
        self.quiesce = quiesce;
        self
    }

    fn sizes(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.sizes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn command<I, S>(&self, args: I) -> CommandLine
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        ceph_command("rbd", &self.cluster).args(args.into_iter().map(Into::into))
    }

    /// A command that changes or streams something, always without `rbd`'s own percentage: the
    /// tool draws one bar of its own on a terminal ([`crate::progress`]: bytes, rate and ETA
    /// where `rbd` had only a percentage, and the two would fight over one terminal line), and
    /// cron mail gets none.
    fn action<const N: usize>(&self, args: [&str; N]) -> CommandLine {
        self.command(["--no-progress"].into_iter().chain(args))
    }

    fn query<T: for<'de> Deserialize<'de>, const N: usize>(&self, args: [&str; N]) -> Result<T> {
        let cmd = self.command(["--format", "json"].into_iter().chain(args));
        let out = cmd.output()?;
        serde_json::from_slice(&out)
            .with_context(|| format!("unexpected output from `rbd {}`", args.join(" ")))
    }

    /// Every image of a pool, in the order `rbd ls` gives.
    pub fn list_images(&self, pool: &str) -> Result<Vec<String>> {
        self.query(["ls", pool])
    }

    /// All snapshots of an image, ordered by id (creation order).
    pub fn list_snapshots(&self, pool: &str, image: &str) -> Result<Vec<Snapshot>> {
        let listed: Vec<ListedSnapshot> = self.query(["snap", "ls", &spec(pool, image, None)])?;
        let mut sizes = self.sizes();
        let mut snaps: Vec<Snapshot> = listed
            .into_iter()
            .map(|listed| {
                if let Some(size) = listed.size {
                    sizes.insert(spec(pool, image, Some(&listed.name)), size);
                }
                Snapshot {
                    id: listed.id,
                    name: listed.name,
                }
            })
            .collect();
        snaps.sort_by_key(|s| s.id);
        Ok(snaps)
    }

    /// The size in bytes of an image at a snapshot: from the last listing of the image's
    /// snapshots when it was there, else from `rbd info`.
    pub fn size(&self, pool: &str, image: &str, snap: &str) -> Result<u64> {
        let key = spec(pool, image, Some(snap));
        if let Some(&size) = self.sizes().get(&key) {
            return Ok(size);
        }
        let info: ImageInfo = self
            .query(["info", &key])
            .with_context(|| format!("cannot read the size of snapshot {snap}"))?;
        self.sizes().insert(key, info.size);
        Ok(info.size)
    }

    /// The most snapshots the image may have (`rbd snap limit set`), `None` when unlimited.
    pub fn snapshot_limit(&self, pool: &str, image: &str) -> Result<Option<u64>> {
        let info: ImageInfo = self
            .query(["info", &spec(pool, image, None)])
            .context("cannot read the image's snapshot limit")?;
        Ok(info.snapshot_limit)
    }

    /// A snapshot of that name is created or removed: what was learnt of it no longer holds.
    fn forget(&self, pool: &str, image: &str, snap: &str) {
        self.sizes().remove(&spec(pool, image, Some(snap)));
    }

    /// The ranges of the image at `snap` (of `size` bytes) that hold data, from `rbd diff` of the
    /// snapshot: what was ever written, less what was discarded. Its JSON is read as it streams
    /// into a bounded sink ([`ExtentSink`]), so even an image of millions of extents costs a few
    /// MiB.
    pub fn allocated(
        &self,
        pool: &str,
        image: &str,
        snap: &str,
        into: &mut dyn ExtentSink,
    ) -> Result<()> {
        let cmd = self
            .command(["--format", "json", "diff", &spec(pool, image, Some(snap))])
            .stop_on_timeout(true);
        let mut stream = KeepError {
            inner: cmd.spawn_reader()?,
            error: None,
        };
        let parsed = read_extents(BufReader::new(&mut stream), into);
        let what = || format!("cannot list the allocated extents of snapshot {snap}");
        match (parsed, stream.error) {
            (Ok(()), None) => Ok(()),
            // The child's failure (a CommandError, typed) explains more than the parser's.
            (_, Some(err)) => Err(err).with_context(what),
            (Err(err), None) => {
                tracing::debug!("unexpected output from `{cmd}`: {err}");
                Err(anyhow::anyhow!("unexpected output of rbd diff: {err}")).with_context(what)
            }
        }
    }

    /// The command that creates a snapshot (the [`ClusterOps`] method of the same purpose runs it).
    pub fn snap_create_command(&self, pool: &str, image: &str, snap: &str) -> CommandLine {
        let spec = spec(pool, image, Some(snap));
        match self.quiesce {
            Quiesce::Required => self.action(["snap", "create", &spec]),
            Quiesce::IgnoreErrors => {
                self.action(["snap", "create", "--ignore-quiesce-error", &spec])
            }
            Quiesce::Skip => self.action(["snap", "create", "--skip-quiesce", &spec]),
        }
    }

    /// The command that removes a snapshot.
    pub fn snap_remove_command(&self, pool: &str, image: &str, snap: &str) -> CommandLine {
        self.action(["snap", "rm", &spec(pool, image, Some(snap))])
    }

    /// Streams the raw image at `snap` to stdout. Like every stream read from the cluster, it
    /// is stopped at its first timed-out operation (see [`CommandLine::stop_on_timeout`]).
    pub fn export(&self, pool: &str, image: &str, snap: &str) -> CommandLine {
        self.action(["export", &spec(pool, image, Some(snap)), "-"])
            .stop_on_timeout(true)
    }

    /// Streams the changes from `base` to `snap` as an `rbd diff v1` stream to stdout.
    pub fn export_diff(&self, pool: &str, image: &str, base: &str, snap: &str) -> CommandLine {
        self.action([
            "export-diff",
            "--from-snap",
            base,
            &spec(pool, image, Some(snap)),
            "-",
        ])
        .stop_on_timeout(true)
    }

    /// Creates a new image from a raw stream on stdin. Ceph 16 refuses a file path containing
    /// `@` here, and every backup file has one, so restores always feed stdin.
    pub fn import(&self, pool: &str, image: &str) -> CommandLine {
        self.action(["import", "-", &spec(pool, image, None)])
    }

    /// Applies an `rbd diff v1` stream from stdin, creating its end snapshot.
    pub fn import_diff(&self, pool: &str, image: &str) -> CommandLine {
        self.action(["import-diff", "-", &spec(pool, image, None)])
    }

    /// Removes every snapshot of an image (it cannot be removed while it has any).
    pub fn purge_snapshots(&self, pool: &str, image: &str) -> CommandLine {
        self.action(["snap", "purge", &spec(pool, image, None)])
    }

    pub fn remove_image(&self, pool: &str, image: &str) -> CommandLine {
        self.action(["rm", &spec(pool, image, None)])
    }
}

/// Keeps the first read error of a stream whole (a failed child's [`CommandError`] inside it),
/// since the JSON parser keeps only its text.
struct KeepError<R> {
    inner: R,
    error: Option<io::Error>,
}

impl<R: Read> Read for KeepError<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.error.is_some() {
            return Err(io::Error::other("the stream failed already"));
        }
        match self.inner.read(buf) {
            Err(err) if err.kind() != io::ErrorKind::Interrupted => {
                let text = err.to_string();
                self.error = Some(err);
                Err(io::Error::other(text))
            }
            other => other,
        }
    }
}

/// One entry of `rbd diff --format json`: `{"offset":0,"length":4096,"exists":"true"}`.
#[derive(Deserialize)]
struct DiffExtent {
    offset: u64,
    length: u64,
    /// `"true"`/`"false"` in Ceph 16; a plain bool is taken too.
    #[serde(default)]
    exists: Option<Exists>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Exists {
    Flag(bool),
    Text(String),
}

impl DiffExtent {
    fn exists(&self) -> bool {
        match &self.exists {
            None => true,
            Some(Exists::Flag(flag)) => *flag,
            Some(Exists::Text(text)) => text != "false",
        }
    }
}

/// Reads `rbd diff --format json` output entry by entry into `into`.
fn read_extents(reader: impl Read, into: &mut dyn ExtentSink) -> Result<(), String> {
    struct Extents<'a>(&'a mut dyn ExtentSink);
    impl<'de> Visitor<'de> for &mut Extents<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of extents")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(extent) = seq.next_element::<DiffExtent>()? {
                if extent.exists() {
                    self.0
                        .push(extent.offset, extent.length)
                        .map_err(de::Error::custom)?;
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_reader(reader);
    de.deserialize_seq(&mut Extents(into))
        .and_then(|()| de.end())
        .map_err(|err| err.to_string())
}

/// A change or a stream the backup executor asks of a cluster, named so it can be shown on the
/// `# <command>` lines of stdout before it happens (or, in check mode, instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    CreateSnapshot {
        snap: &'a str,
    },
    RemoveSnapshot {
        snap: &'a str,
    },
    /// The raw image at `snap`, or with `base`, the changes from `base` to `snap` as an
    /// `rbd diff v1` stream.
    Export {
        base: Option<&'a str>,
        snap: &'a str,
    },
}

/// What a changing verb of [`ClusterOps`] did: the executor announces every change and calls the
/// cluster without asking which mode it is in, and notes (in the report, in what it would roll
/// back) only a change that was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Applied,
    /// Check mode's twin ([`crate::cluster::check::CheckCluster`]) took the call and changed
    /// nothing.
    Skipped,
}

/// Exactly what the tool asks of a cluster: the backup executor ([`crate::backup::execute`]),
/// `restore` into an image and `verify --source`. [`Rbd`] does it by running `rbd`; their unit
/// tests use an in-memory stand-in (`cluster/fake.rs`).
///
/// Failures carry a [`CommandError`] (inside the `anyhow::Error` for queries, inside the
/// `io::Error` at the end of a stream) whose [`CommandError::kind`] says what happened, because
/// that is what the executor decides on: a timeout stops the whole cluster, a missing snapshot was
/// gone already, a busy one is left in place.
pub trait ClusterOps: Send + Sync {
    /// Every image of a pool, in the order `rbd ls` gives.
    fn list_images(&self, pool: &str) -> Result<Vec<String>>;
    /// All snapshots of an image, ordered by id (creation order).
    fn list_snapshots(&self, pool: &str, image: &str) -> Result<Vec<Snapshot>>;
    /// The size in bytes of an image at a snapshot.
    fn size(&self, pool: &str, image: &str, snap: &str) -> Result<u64>;
    /// The image's snapshot limit, `None` when it has none ([`Rbd::snapshot_limit`]). Asked only
    /// when it matters (check mode, or once Ceph refused a snapshot), so a stand-in without
    /// limits need not answer.
    fn snapshot_limit(&self, _pool: &str, _image: &str) -> Result<Option<u64>> {
        Ok(None)
    }
    /// The ranges of the image at `snap` that hold data, into `into` ([`Rbd::allocated`]).
    fn allocated(
        &self,
        pool: &str,
        image: &str,
        snap: &str,
        into: &mut dyn ExtentSink,
    ) -> Result<()>;
    /// How `op` is shown on a `# <command>` line.
    fn show(&self, pool: &str, image: &str, op: Op) -> String;
    /// Creates a snapshot; [`Change::Skipped`] when this cluster changes nothing (check mode's
    /// twin), so the caller notes only a snapshot that now exists.
    fn create_snapshot(&self, pool: &str, image: &str, snap: &str) -> Result<Change, CommandError>;
    /// Removes a snapshot; [`Change::Skipped`] when this cluster changes nothing.
    fn remove_snapshot(&self, pool: &str, image: &str, snap: &str) -> Result<Change, CommandError>;
    /// Starts an export ([`Op::Export`]). Reading the stream to its end reports a failure of the
    /// export as an `io::Error` wrapping its [`CommandError`], like [`crate::cluster::process::ChildReader`];
    /// dropping it early abandons the export.
    fn open_export(
        &self,
        pool: &str,
        image: &str,
        base: Option<&str>,
        snap: &str,
    ) -> Result<Box<dyn Read>, CommandError>;
    /// True when `pool` holds an image called `image` (restore never writes into one that
    /// exists; `verify --source` has nothing to compare without it).
    fn image_exists(&self, pool: &str, image: &str) -> Result<bool> {
        Ok(self.list_images(pool)?.iter().any(|name| name == image))
    }
    /// Creates the new image `pool/image` from the raw image read from `input` ([`Rbd::import`]).
    /// When reading `input` fails, the cluster sees its end early: the caller knows why.
    fn import(&self, pool: &str, image: &str, input: &mut dyn Read) -> Result<(), CommandError>;
    /// Applies the `rbd diff v1` stream read from `input` to `pool/image`, creating its end
    /// snapshot ([`Rbd::import_diff`]).
    fn import_diff(
        &self,
        pool: &str,
        image: &str,
        input: &mut dyn Read,
    ) -> Result<(), CommandError>;
    /// Removes every snapshot of an image ([`Rbd::purge_snapshots`]).
    fn purge_snapshots(&self, pool: &str, image: &str) -> Result<(), CommandError>;
    /// Removes an image that has no snapshots ([`Rbd::remove_image`]).
    fn remove_image(&self, pool: &str, image: &str) -> Result<(), CommandError>;
}

impl Rbd {
    /// The `rbd` command line that carries out `op`.
    pub fn command_for(&self, pool: &str, image: &str, op: Op) -> CommandLine {
        match op {
            Op::CreateSnapshot { snap } => self.snap_create_command(pool, image, snap),
            Op::RemoveSnapshot { snap } => self.snap_remove_command(pool, image, snap),
            Op::Export { base: None, snap } => self.export(pool, image, snap),
            Op::Export {
                base: Some(base),
                snap,
            } => self.export_diff(pool, image, base, snap),
        }
    }
}

impl ClusterOps for Rbd {
    fn list_images(&self, pool: &str) -> Result<Vec<String>> {
        Rbd::list_images(self, pool)
    }

    fn list_snapshots(&self, pool: &str, image: &str) -> Result<Vec<Snapshot>> {
        Rbd::list_snapshots(self, pool, image)
    }

    fn size(&self, pool: &str, image: &str, snap: &str) -> Result<u64> {
        Rbd::size(self, pool, image, snap)
    }

    fn snapshot_limit(&self, pool: &str, image: &str) -> Result<Option<u64>> {
        Rbd::snapshot_limit(self, pool, image)
    }

    fn allocated(
        &self,
        pool: &str,
        image: &str,
        snap: &str,
        into: &mut dyn ExtentSink,
    ) -> Result<()> {
        Rbd::allocated(self, pool, image, snap, into)
    }

    /// The exact argv that runs, shell-quoted.
    fn show(&self, pool: &str, image: &str, op: Op) -> String {
        self.command_for(pool, image, op).to_string()
    }

    fn create_snapshot(&self, pool: &str, image: &str, snap: &str) -> Result<Change, CommandError> {
        self.forget(pool, image, snap);
        self.snap_create_command(pool, image, snap).run()?;
        Ok(Change::Applied)
    }

    fn remove_snapshot(&self, pool: &str, image: &str, snap: &str) -> Result<Change, CommandError> {
        self.forget(pool, image, snap);
        self.snap_remove_command(pool, image, snap).run()?;
        Ok(Change::Applied)
    }

    fn open_export(
        &self,
        pool: &str,
        image: &str,
        base: Option<&str>,
        snap: &str,
    ) -> Result<Box<dyn Read>, CommandError> {
        let reader = self
            .command_for(pool, image, Op::Export { base, snap })
            .spawn_reader()?;
        Ok(Box::new(reader))
    }

    fn import(&self, pool: &str, image: &str, input: &mut dyn Read) -> Result<(), CommandError> {
        Rbd::import(self, pool, image).run_with_input(input)
    }

    fn import_diff(
        &self,
        pool: &str,
        image: &str,
        input: &mut dyn Read,
    ) -> Result<(), CommandError> {
        Rbd::import_diff(self, pool, image).run_with_input(input)
    }

    fn purge_snapshots(&self, pool: &str, image: &str) -> Result<(), CommandError> {
        Rbd::purge_snapshots(self, pool, image).run()
    }

    fn remove_image(&self, pool: &str, image: &str) -> Result<(), CommandError> {
        Rbd::remove_image(self, pool, image).run()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::process::FailureKind;
    use crate::folder::format::archive::{SparseMapBuilder, MAX_SPARSE_EXTENTS};

    fn rbd(user: Option<&str>) -> Rbd {
        Rbd::new(Cluster {
            conf: "/etc/ceph/ceph.conf".into(),
            user: user.map(Into::into),
            keyring: user.map(|_| "/etc/ceph/k".into()),
            timeout: if user.is_some() { 30 } else { 0 },
        })
    }

    #[test]
    fn every_command_names_the_cluster() {
        assert_eq!(
            rbd(None).export("rbd", "my disk", "S1").to_string(),
            "rbd --conf /etc/ceph/ceph.conf --no-progress export 'rbd/my disk@S1' -"
        );
        assert_eq!(
            rbd(Some("backup"))
                .export_diff("p", "i", "S0", "S1")
                .to_string(),
            "rbd --conf /etc/ceph/ceph.conf --id backup --keyring /etc/ceph/k \
             --client-mount-timeout 30 --rados-mon-op-timeout 30 --rados-osd-op-timeout 30 \
             --no-progress export-diff --from-snap S0 p/i@S1 -"
        );
    }

    #[test]
    fn every_command_has_its_failures_read_as_cephs() {
        let refused = "rbd: couldn't connect to the cluster!\n";
        let err = rbd(Some("backup"))
            .snap_create_command("p", "i", "S1")
            .failure(libc::EACCES, refused);
        assert_eq!(err.kind(), FailureKind::Unauthenticated);
        assert_eq!(
            err.to_string(),
            "authentication failed: the cluster refused ceph user 'backup' with the key in \
             /etc/ceph/k (an unknown user or a wrong key; see `ceph user` and `ceph keyring`)"
        );
        let missing = "rbd: error opening image i: (2) No such file or directory\n";
        let err = rbd(None)
            .export("p", "i", "S1")
            .failure(libc::ENOENT, missing);
        assert_eq!(err.kind(), FailureKind::NotFound);
        assert_eq!(err.to_string(), "image 'i' does not exist");
    }

    #[test]
    fn restores_read_stdin() {
        let rbd = rbd(None);
        let prefix = "rbd --conf /etc/ceph/ceph.conf --no-progress";
        for (cmd, expected) in [
            (rbd.import("p", "new"), "import - p/new"),
            (rbd.import_diff("p", "new"), "import-diff - p/new"),
            (rbd.purge_snapshots("p", "new"), "snap purge p/new"),
            (rbd.remove_image("p", "new"), "rm p/new"),
        ] {
            assert_eq!(cmd.to_string(), format!("{prefix} {expected}"));
        }
    }

    #[test]
    fn sizes_learnt_from_a_listing_are_forgotten_when_the_snapshot_changes() {
        let rbd = rbd(None);
        rbd.sizes().insert(spec("p", "i", Some("s")), 42);
        // Known: no `rbd info` (which would fail here: there is no cluster).
        assert_eq!(rbd.size("p", "i", "s").unwrap(), 42);
        rbd.forget("p", "i", "s");
        assert!(rbd.sizes().is_empty());
        let json = r#"[{"id":7,"name":"b","size":1048576,"protected":"false","timestamp":"x"}]"#;
        let listed: Vec<ListedSnapshot> = serde_json::from_str(json).unwrap();
        assert_eq!(listed[0].size, Some(1_048_576));
    }

    #[test]
    fn the_snapshot_limit_is_read_from_rbd_info_when_set() {
        let unlimited: ImageInfo =
            serde_json::from_str(r#"{"name":"vm","size":4194304,"snapshot_count":2}"#).unwrap();
        assert_eq!(unlimited.snapshot_limit, None);
        let limited: ImageInfo = serde_json::from_str(
            r#"{"name":"vm","size":4194304,"snapshot_count":2,"snapshot_limit":3}"#,
        )
        .unwrap();
        assert_eq!((limited.size, limited.snapshot_limit), (4_194_304, Some(3)));
    }

    #[test]
    fn allocated_extents_are_read_from_rbd_diff_json() {
        // As Ceph 16 prints it (one line), with a discarded extent and a partial one.
        let json = r#"[{"offset":0,"length":4096,"exists":"true"},
            {"offset":8192,"length":100,"exists":"true"},{"offset":16384,"length":4096,
            "exists":"false"},{"offset":1048000,"length":576,"exists":true}]"#;
        let read = |json: &str, size| {
            let mut map = SparseMapBuilder::new(size, MAX_SPARSE_EXTENTS);
            read_extents(json.as_bytes(), &mut map).map(|()| map.finish())
        };
        let map = read(json, 1 << 20).unwrap();
        assert_eq!(map.extents(), [(0, 4096), (8192, 512), (1_047_552, 1024)]);
        assert_eq!(read("[]", 10).unwrap().extents(), []);
        for (bad, expected) in [
            (r#"[{"offset":0,"length":4096}]"#, "past the image's end"),
            (
                r#"[{"offset":5,"length":1},{"offset":1,"length":1}]"#,
                "out of order",
            ),
            (r#"{"offset":0}"#, "a list of extents"),
            (r#"[] trailing"#, "trailing characters"),
        ] {
            let err = read(bad, 1000).unwrap_err();
            assert!(err.contains(expected), "{bad}: {err}");
        }
        assert_eq!(
            rbd(None)
                .command(["--format", "json", "diff", "p/i@S"])
                .to_string(),
            "rbd --conf /etc/ceph/ceph.conf --format json diff p/i@S"
        );
    }

    #[test]
    fn snapshot_list_parses_rbd_json() {
        let json = r#"[{"id":7,"name":"b","size":1,"protected":"false","timestamp":"x"},
                       {"id":4,"name":"a","size":1,"protected":"true","timestamp":"x"}]"#;
        let snaps: Vec<Snapshot> = serde_json::from_str(json).unwrap();
        assert_eq!(
            snaps[1],
            Snapshot {
                id: 4,
                name: "a".into()
            }
        );
    }
}
