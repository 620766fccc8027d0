//! An in-memory cluster behind [`ClusterOps`], for the unit tests of everything that talks to a
//! cluster (the backup executor, restore into an image, `verify --source`): images are byte
//! vectors, snapshots have ids, and any operation on any image can be made to fail the way
//! `rbd` fails (by exit status).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Result;

use crate::cluster::ceph::CephTool;
use crate::cluster::process::CommandError;
use crate::cluster::rbd::{spec, Change, ClusterOps, ExtentSink, Op, Snapshot};
use crate::folder::format::diffstream::{DiffError, DiffReader, Record};

/// The kinds of call the fake answers, for failure injection and the call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    ListImages,
    ListSnapshots,
    Size,
    CreateSnapshot,
    RemoveSnapshot,
    Export,
    Import,
    ImportDiff,
    PurgeSnapshots,
    RemoveImage,
}

/// How an injected failure shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// ETIMEDOUT: the cluster did not answer.
    TimedOut,
    /// ENOENT.
    NotFound,
    /// EBUSY: a protected snapshot, an image with watchers.
    Busy,
    /// An export that sends half its data, then exits with EIO.
    HalfWay,
    /// An export during which the whole process dies (a panic stands in for SIGKILL: nothing
    /// after it in the run happens).
    Die,
    /// The call takes effect on the cluster, then its `rbd` ends without saying so (stopped by
    /// a signal just after the cluster acted): the caller cannot tell what happened.
    AfterEffect,
}

impl Fail {
    fn code(self) -> i32 {
        match self {
            Fail::TimedOut => libc::ETIMEDOUT,
            Fail::NotFound => libc::ENOENT,
            Fail::Busy => libc::EBUSY,
            Fail::HalfWay | Fail::Die => libc::EIO,
            // What `rbd` exits with for a failure it has no errno for.
            Fail::AfterEffect => 1,
        }
    }

    fn error(self, shown: &str) -> CommandError {
        CephTool::failure(shown, self.code(), &format!("rbd: injected {self:?}\n"))
    }
}

#[derive(Default)]
struct FakeImage {
    data: Vec<u8>,
    /// id, name, the image's bytes when it was taken.
    snaps: Vec<(u64, String, Vec<u8>)>,
}

#[derive(Default)]
pub(crate) struct State {
    /// `pool/image` → image.
    images: BTreeMap<String, FakeImage>,
    next_id: u64,
    /// Every call, as the fake shows it (`snap ls rbd/a`), in order.
    calls: Vec<String>,
    /// Failures to inject: the call, `pool/image` (or `pool` for listing images), how.
    failures: Vec<(Call, String, Fail)>,
    /// Failures that happen once each, before any of `failures`.
    once: Vec<(Call, String, Fail)>,
    /// When set, an export waits (up to a few seconds) until this many run at once: proof that
    /// images ran in parallel, without measuring time.
    pub(crate) gate: Option<usize>,
    exporting: usize,
    /// The gate was met: that many exports were running at the same time.
    pub(crate) gate_met: bool,
    /// `pool/image` → its snapshot limit (`rbd snap limit set`).
    limits: BTreeMap<String, u64>,
}

/// A cluster in memory; clones share it.
#[derive(Clone, Default)]
pub(crate) struct Fake(pub(crate) Arc<Mutex<State>>, Arc<Condvar>);

impl Fake {
    pub(crate) fn add_image(&self, pool: &str, image: &str, data: Vec<u8>) {
        self.0.lock().unwrap().images.insert(
            spec(pool, image, None),
            FakeImage {
                data,
                snaps: Vec::new(),
            },
        );
    }

    pub(crate) fn write(&self, pool: &str, image: &str, offset: usize, bytes: &[u8]) {
        let mut state = self.0.lock().unwrap();
        let data = &mut state.images.get_mut(&spec(pool, image, None)).unwrap().data;
        data[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    pub(crate) fn fail(&self, call: Call, target: &str, how: Fail) {
        self.0
            .lock()
            .unwrap()
            .failures
            .push((call, target.to_string(), how));
    }

    /// Like [`Fake::fail`], for the next such call only: a condition that passes (an image a
    /// killed client still watches, until Ceph lets it go).
    pub(crate) fn fail_once(&self, call: Call, target: &str, how: Fail) {
        let mut state = self.0.lock().unwrap();
        state.once.push((call, target.to_string(), how));
    }

    pub(crate) fn limit(&self, pool: &str, image: &str, limit: u64) {
        let mut state = self.0.lock().unwrap();
        state.limits.insert(spec(pool, image, None), limit);
    }

    pub(crate) fn heal(&self) {
        self.0.lock().unwrap().failures.clear();
    }

    pub(crate) fn snapshots(&self, pool: &str, image: &str) -> Vec<String> {
        self.0.lock().unwrap().images[&spec(pool, image, None)]
            .snaps
            .iter()
            .map(|(_, name, _)| name.clone())
            .collect()
    }

    pub(crate) fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().calls.clone()
    }

    /// The calls that change the cluster.
    pub(crate) fn changes(&self) -> Vec<String> {
        const CHANGES: [&str; 6] = [
            "snap create",
            "snap rm",
            "import",
            "snap purge",
            "rm ",
            "import-diff",
        ];
        self.calls()
            .into_iter()
            .filter(|c| CHANGES.iter().any(|change| c.starts_with(change)))
            .collect()
    }

    /// The bytes of the image `pool/image` now, `None` when there is no such image.
    pub(crate) fn data(&self, pool: &str, image: &str) -> Option<Vec<u8>> {
        let state = self.0.lock().unwrap();
        state
            .images
            .get(&spec(pool, image, None))
            .map(|found| found.data.clone())
    }

    /// Logs the call and answers with the injected failure, if any.
    fn enter(&self, call: Call, target: &str, shown: String) -> Result<(), (Fail, CommandError)> {
        let mut state = self.0.lock().unwrap();
        state.calls.push(shown.clone());
        let matches = |(c, t, _): &(Call, String, Fail)| *c == call && t == target;
        let once = state.once.iter().position(matches);
        let injected = match once {
            Some(index) => Some(state.once.remove(index).2),
            None => state.failures.iter().find(|f| matches(f)).map(|f| f.2),
        };
        match injected {
            Some(how) => Err((how, how.error(&shown))),
            None => Ok(()),
        }
    }

    fn query(&self, call: Call, target: &str, shown: String) -> Result<()> {
        self.enter(call, target, shown)
            .map_err(|(_, err)| err.into())
    }

    fn meet_at_gate(&self) {
        let mut state = self.0.lock().unwrap();
        let Some(gate) = state.gate else {
            return;
        };
        state.exporting += 1;
        if state.exporting >= gate {
            state.gate_met = true;
            self.1.notify_all();
        }
        let (mut state, _) = self
            .1
            .wait_timeout_while(state, Duration::from_secs(5), |s| !s.gate_met)
            .unwrap();
        state.exporting -= 1;
    }

    fn missing(shown: &str) -> CommandError {
        Fail::NotFound.error(shown)
    }

    /// Takes a snapshot of the image's bytes now.
    fn take_snapshot(state: &mut State, target: &str, snap: &str) {
        state.next_id += 1;
        let id = state.next_id;
        let found = state.images.get_mut(target).expect("the image exists");
        let data = found.data.clone();
        found.snaps.push((id, snap.to_string(), data));
    }
}

/// Replays the records of `diff` onto `data` (already of the stream's image size); the first
/// error leaves the records before it applied, as `rbd import-diff` does.
fn apply(diff: &mut DiffReader<&mut dyn Read>, data: &mut [u8]) -> Result<(), DiffError> {
    while let Some(record) = diff.next_record()? {
        match record {
            Record::Write { offset, length } => {
                let start = usize::try_from(offset).unwrap();
                let end = start + usize::try_from(length).unwrap();
                let mut at = start;
                while at < end {
                    match diff.read_data(&mut data[at..end])? {
                        0 => break,
                        n => at += n,
                    }
                }
            }
            Record::Zero { offset, length } => {
                let start = usize::try_from(offset).unwrap();
                data[start..start + usize::try_from(length).unwrap()].fill(0);
            }
        }
    }
    Ok(())
}

/// `data` as an `rbd diff v1` stream that writes all of it.
fn whole_diff(data: &[u8]) -> Vec<u8> {
    let mut out = b"rbd diff v1\n".to_vec();
    out.push(b's');
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.push(b'w');
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    out.push(b'e');
    out
}

/// An export stream: its bytes, then (optionally) the failure at the end, the way
/// [`crate::cluster::process::ChildReader`] reports a child that failed.
struct Stream {
    data: io::Cursor<Vec<u8>>,
    end: Option<(Fail, CommandError)>,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.read(buf)?;
        if n == 0 && !buf.is_empty() {
            match self.end.take() {
                Some((Fail::Die, _)) => panic!("the run was killed"),
                Some((_, err)) => return Err(io::Error::other(err)),
                None => {}
            }
        }
        Ok(n)
    }
}

impl ClusterOps for Fake {
    fn list_images(&self, pool: &str) -> Result<Vec<String>> {
        self.query(Call::ListImages, pool, format!("ls {pool}"))?;
        let prefix = format!("{pool}/");
        Ok(self
            .0
            .lock()
            .unwrap()
            .images
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix).map(String::from))
            .collect())
    }

    fn list_snapshots(&self, pool: &str, image: &str) -> Result<Vec<Snapshot>> {
        let target = spec(pool, image, None);
        let shown = format!("snap ls {target}");
        self.query(Call::ListSnapshots, &target, shown.clone())?;
        let state = self.0.lock().unwrap();
        let found = state
            .images
            .get(&target)
            .ok_or_else(|| Fake::missing(&shown))?;
        Ok(found
            .snaps
            .iter()
            .map(|(id, name, _)| Snapshot {
                id: *id,
                name: name.clone(),
            })
            .collect())
    }

    fn snapshot_limit(&self, pool: &str, image: &str) -> Result<Option<u64>> {
        let target = spec(pool, image, None);
        self.query(Call::Size, &target, format!("info {target}"))?;
        Ok(self.0.lock().unwrap().limits.get(&target).copied())
    }

    fn size(&self, pool: &str, image: &str, snap: &str) -> Result<u64> {
        let target = spec(pool, image, None);
        let shown = format!("info {}", spec(pool, image, Some(snap)));
        self.query(Call::Size, &target, shown.clone())?;
        let state = self.0.lock().unwrap();
        let found = state
            .images
            .get(&target)
            .ok_or_else(|| Fake::missing(&shown))?;
        let (_, _, data) = found
            .snaps
            .iter()
            .find(|(_, name, _)| name == snap)
            .ok_or_else(|| Fake::missing(&shown))?;
        Ok(data.len() as u64)
    }

    /// Like `rbd diff`: the 4 KiB blocks that are not all zeros.
    fn allocated(
        &self,
        pool: &str,
        image: &str,
        snap: &str,
        into: &mut dyn ExtentSink,
    ) -> Result<()> {
        let state = self.0.lock().unwrap();
        let target = spec(pool, image, None);
        let shown = format!("diff {}", spec(pool, image, Some(snap)));
        let found = state
            .images
            .get(&target)
            .ok_or_else(|| Fake::missing(&shown))?;
        let (_, _, data) = found
            .snaps
            .iter()
            .find(|(_, name, _)| name == snap)
            .ok_or_else(|| Fake::missing(&shown))?;
        for (index, block) in data.chunks(4096).enumerate() {
            if block.iter().any(|&b| b != 0) {
                let offset = index as u64 * 4096;
                into.push(offset, block.len() as u64)
                    .map_err(anyhow::Error::msg)?;
            }
        }
        Ok(())
    }

    fn show(&self, pool: &str, image: &str, op: Op) -> String {
        match op {
            Op::CreateSnapshot { snap } => format!("snap create {}", spec(pool, image, Some(snap))),
            Op::RemoveSnapshot { snap } => format!("snap rm {}", spec(pool, image, Some(snap))),
            Op::Export { base: None, snap } => format!("export {}", spec(pool, image, Some(snap))),
            Op::Export {
                base: Some(base),
                snap,
            } => format!(
                "export-diff --from-snap {base} {}",
                spec(pool, image, Some(snap))
            ),
        }
    }

    fn create_snapshot(&self, pool: &str, image: &str, snap: &str) -> Result<Change, CommandError> {
        let target = spec(pool, image, None);
        let shown = self.show(pool, image, Op::CreateSnapshot { snap });
        let after_effect = match self.enter(Call::CreateSnapshot, &target, shown.clone()) {
            Err((Fail::AfterEffect, err)) => Some(err),
            Err((_, err)) => return Err(err),
            Ok(()) => None,
        };
        let mut state = self.0.lock().unwrap();
        state.next_id += 1;
        let id = state.next_id;
        let found = state
            .images
            .get_mut(&target)
            .ok_or_else(|| Fake::missing(&shown))?;
        if found.snaps.iter().any(|(_, name, _)| name == snap) {
            return Err(CephTool::failure(shown, libc::EEXIST, "rbd: exists"));
        }
        if let Some(&limit) = state.limits.get(&target) {
            let found = &state.images[&target];
            if found.snaps.len() as u64 >= limit {
                return Err(CephTool::failure(
                    shown,
                    libc::EDQUOT,
                    "rbd: failed to create snapshot: (122) Disk quota exceeded",
                ));
            }
        }
        let found = state.images.get_mut(&target).unwrap();
        let data = found.data.clone();
        found.snaps.push((id, snap.to_string(), data));
        match after_effect {
            Some(err) => Err(err),
            None => Ok(Change::Applied),
        }
    }

    fn remove_snapshot(&self, pool: &str, image: &str, snap: &str) -> Result<Change, CommandError> {
        let target = spec(pool, image, None);
        let shown = self.show(pool, image, Op::RemoveSnapshot { snap });
        self.enter(Call::RemoveSnapshot, &target, shown.clone())
            .map_err(|(_, err)| err)?;
        let mut state = self.0.lock().unwrap();
        let found = state
            .images
            .get_mut(&target)
            .ok_or_else(|| Fake::missing(&shown))?;
        let before = found.snaps.len();
        found.snaps.retain(|(_, name, _)| name != snap);
        if found.snaps.len() == before {
            return Err(Fake::missing(&shown));
        }
        Ok(Change::Applied)
    }

    fn open_export(
        &self,
        pool: &str,
        image: &str,
        base: Option<&str>,
        snap: &str,
    ) -> Result<Box<dyn Read>, CommandError> {
        self.meet_at_gate();
        let target = spec(pool, image, None);
        let shown = self.show(pool, image, Op::Export { base, snap });
        let end = match self.enter(Call::Export, &target, shown.clone()) {
            Ok(()) => None,
            Err((how @ (Fail::HalfWay | Fail::Die), err)) => Some((how, err)),
            Err((_, err)) => return Err(err),
        };
        let state = self.0.lock().unwrap();
        let found = state
            .images
            .get(&target)
            .ok_or_else(|| Fake::missing(&shown))?;
        let snap_data = |name: &str| {
            found
                .snaps
                .iter()
                .find(|(_, n, _)| n == name)
                .map(|(_, _, data)| data.clone())
                .ok_or_else(|| Fake::missing(&shown))
        };
        let mut data = snap_data(snap)?;
        if let Some(base) = base {
            snap_data(base)?;
            data = whole_diff(&data);
        }
        if end.is_some() {
            data.truncate(data.len() / 2);
        }
        Ok(Box::new(Stream {
            data: io::Cursor::new(data),
            end,
        }))
    }

    fn import(&self, pool: &str, image: &str, input: &mut dyn Read) -> Result<(), CommandError> {
        let target = spec(pool, image, None);
        let shown = format!("import - {target}");
        self.enter(Call::Import, &target, shown.clone())
            .map_err(|(_, err)| err)?;
        if self.0.lock().unwrap().images.contains_key(&target) {
            return Err(CephTool::failure(shown, libc::EEXIST, "rbd: image exists"));
        }
        // Like rbd reading stdin: the image holds what arrived, also when the input broke off.
        let mut data = Vec::new();
        let read = input.read_to_end(&mut data);
        self.add_image(pool, image, data);
        read.map(drop).map_err(|err| {
            CephTool::failure(shown, libc::EIO, &format!("rbd: reading stdin: {err}\n"))
        })
    }

    fn import_diff(
        &self,
        pool: &str,
        image: &str,
        input: &mut dyn Read,
    ) -> Result<(), CommandError> {
        let target = spec(pool, image, None);
        let shown = format!("import-diff - {target}");
        self.enter(Call::ImportDiff, &target, shown.clone())
            .map_err(|(_, err)| err)?;
        let invalid = |err: DiffError| {
            CephTool::failure(
                shown.clone(),
                libc::EINVAL,
                &format!("rbd: import-diff failed: {err}\n"),
            )
        };
        let mut diff = DiffReader::new(input).map_err(invalid)?;
        let header = diff.header().clone();
        let mut data = {
            let state = self.0.lock().unwrap();
            let found = state
                .images
                .get(&target)
                .ok_or_else(|| Fake::missing(&shown))?;
            let has = |name: &String| found.snaps.iter().any(|(_, n, _)| n == name);
            if header.from_snap.as_ref().is_some_and(|from| !has(from)) {
                return Err(Fake::missing(&shown));
            }
            if header.to_snap.as_ref().is_some_and(has) {
                return Err(CephTool::failure(
                    shown,
                    libc::EEXIST,
                    "rbd: snapshot exists",
                ));
            }
            found.data.clone()
        };
        data.resize(usize::try_from(header.size).unwrap(), 0);
        let applied = apply(&mut diff, &mut data).and_then(|()| diff.finish().map(drop));
        let mut state = self.0.lock().unwrap();
        state.images.get_mut(&target).unwrap().data = data;
        applied.map_err(invalid)?;
        if let Some(to) = &header.to_snap {
            Fake::take_snapshot(&mut state, &target, to);
        }
        Ok(())
    }

    fn purge_snapshots(&self, pool: &str, image: &str) -> Result<(), CommandError> {
        let target = spec(pool, image, None);
        let shown = format!("snap purge {target}");
        self.enter(Call::PurgeSnapshots, &target, shown.clone())
            .map_err(|(_, err)| err)?;
        let mut state = self.0.lock().unwrap();
        let found = state
            .images
            .get_mut(&target)
            .ok_or_else(|| Fake::missing(&shown))?;
        found.snaps.clear();
        Ok(())
    }

    fn remove_image(&self, pool: &str, image: &str) -> Result<(), CommandError> {
        let target = spec(pool, image, None);
        let shown = format!("rm {target}");
        self.enter(Call::RemoveImage, &target, shown.clone())
            .map_err(|(_, err)| err)?;
        let mut state = self.0.lock().unwrap();
        let found = state
            .images
            .get(&target)
            .ok_or_else(|| Fake::missing(&shown))?;
        if !found.snaps.is_empty() {
            return Err(CephTool::failure(
                shown,
                libc::ENOTEMPTY,
                "rbd: image has snapshots - not removing",
            ));
        }
        state.images.remove(&target);
        Ok(())
    }
}
