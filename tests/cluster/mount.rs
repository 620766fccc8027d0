//! `cephbackup mount`: an image holding a real ext4 filesystem, backed up over three points
//! with files added, changed and deleted between them, browsed through the mount: every
//! point's raw file is the snapshot's bytes, and its files read back (with `debugfs`) as they
//! were at that point. A damaged diff fails only the ranges it holds; SIGTERM unmounts; a backup
//! started during a mount waits for it. gzip and zstd chains are read through a cache of one
//! MiB; a compressed file changed after it was proven is never served, and a file pruned while
//! mounted still is. The owner of the backup files mounts them without being root.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread::sleep;
use std::time::{Duration, Instant};

use cephbackup::test_support::{DiffHeader, DiffWriter};
use sha2::{Digest, Sha256};

use crate::harness::*;

const BLOCK: usize = 4096;
const SIZE: u64 = 32 * MIB;

/// A local ext4 image file the test changes with `debugfs -w`, and sends to the cluster.
struct Disk {
    path: PathBuf,
    /// Its bytes as the cluster image last got them.
    sent: Vec<u8>,
}

impl Disk {
    fn new(w: &World, image: &str) -> Disk {
        let path = w.tmp.path().join("disk.ext4");
        fs::File::create(&path).unwrap().set_len(SIZE).unwrap();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096"])
            .arg(&path));
        rbd(&["create", "--size", "32M", &w.spec(image)]);
        Disk {
            path,
            sent: vec![0; usize::try_from(SIZE).unwrap()],
        }
    }

    /// `debugfs -w` commands on the file.
    fn change(&self, requests: &[String]) {
        for request in requests {
            run(Command::new("debugfs")
                .args(["-w", "-R", request])
                .arg(&self.path));
        }
    }

    /// Sends the blocks that changed since the last time to the cluster image, as a diff;
    /// returns the byte ranges sent.
    fn send(&mut self, w: &World, image: &str) -> Vec<(u64, u64)> {
        let now = fs::read(&self.path).unwrap();
        let mut changed: Vec<(u64, u64)> = Vec::new();
        for (index, (new, old)) in now.chunks(BLOCK).zip(self.sent.chunks(BLOCK)).enumerate() {
            if new != old {
                let offset = (index * BLOCK) as u64;
                match changed.last_mut() {
                    Some((start, len)) if *start + *len == offset => *len += BLOCK as u64,
                    _ => changed.push((offset, BLOCK as u64)),
                }
            }
        }
        let header = DiffHeader {
            from_snap: None,
            to_snap: None,
            size: SIZE,
        };
        let mut stream = Vec::new();
        let mut writer = DiffWriter::new(&mut stream, &header).unwrap();
        for &(offset, len) in &changed {
            let start = usize::try_from(offset).unwrap();
            let end = usize::try_from(offset + len).unwrap();
            writer.write_data(offset, &now[start..end]).unwrap();
        }
        writer.finish().unwrap();
        let file = w.tmp.path().join("send.diff");
        fs::write(&file, &stream).unwrap();
        rbd(&["import-diff", file.to_str().unwrap(), &w.spec(image)]);
        self.sent = now;
        changed
    }
}

fn run(command: &mut Command) -> Vec<u8> {
    let out = command.output().expect("start a tool");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A file in the world's folder holding `text`, to be written into the filesystem.
fn content(w: &World, name: &str, text: &str) -> String {
    let path = w.tmp.path().join(name);
    fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// What `debugfs` reads of `file` in the filesystem image `raw`.
fn cat(raw: &Path, file: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {file}")])
        .arg(raw)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_of(path: &Path) -> String {
    let mut file = fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    format!("{:x}", hasher.finalize())
}

/// A mount a test started: unmounted and killed when the test ends, even when it fails, so that
/// no mount outlives its test.
struct Mounted {
    /// The foreground mount; `None` for one `--daemon` started.
    child: Option<Child>,
    pid: u32,
    mountpoint: PathBuf,
}

impl Mounted {
    fn pid(&self) -> String {
        self.pid.to_string()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let alive = fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .is_ok_and(|stat| !stat.contains(") Z "));
        if alive {
            if let Some(pid) = rustix::process::Pid::from_raw(self.pid.cast_signed()) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        if mounted(&self.mountpoint) {
            let _ = Command::new("fusermount")
                .arg("-u")
                .arg("-z")
                .arg(&self.mountpoint)
                .status();
        }
    }
}

/// Starts `mount` of `image` on `mountpoint` and waits until its raw file appears under it.
fn start_mount(w: &World, conf: &Path, image: &str, mountpoint: &Path, extra: &[&str]) -> Mounted {
    fs::create_dir_all(mountpoint).unwrap();
    let mut args = vec![
        "-c",
        conf.to_str().unwrap(),
        "mount",
        "--pool",
        &w.pool,
        "--image",
        image,
        mountpoint.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut child = w.spawn(&args);
    let raw = mountpoint.join(format!("{image}.raw"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !raw.exists() {
        if child.try_wait().unwrap().is_some() {
            let ended = finish_within(child, Duration::from_secs(5));
            panic!("the mount ended (exit {}): {}", ended.code, ended.stderr);
        }
        assert!(Instant::now() < deadline, "the mount did not appear");
        sleep(Duration::from_millis(50));
    }
    Mounted {
        pid: child.id(),
        child: Some(child),
        mountpoint: mountpoint.to_path_buf(),
    }
}

fn mounted(mountpoint: &Path) -> bool {
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(mountpoint.to_str().unwrap()))
}

/// Stops the foreground mount with SIGTERM; it unmounts and exits 0.
fn stop(mut mount: Mounted) {
    let mut child = mount.child.take().expect("a foreground mount");
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the mount did not end on SIGTERM");
        }
        sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?} {:?}", status.signal());
    assert!(!mounted(&mount.mountpoint), "still mounted");
}

/// One night's changes to the filesystem: files written (path, text), files removed.
type Night<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

/// What `/notes` and `/report` hold at a point (`None`: no such file).
type Expected = (Option<String>, Option<String>);

/// Three points: a file written; changed and another added; the first deleted. Returns what
/// each point holds and the byte ranges each night changed.
fn three_points(w: &World, disk: &mut Disk, conf: &Path) -> (Vec<Expected>, Vec<Vec<(u64, u64)>>) {
    let nights: [Night; 3] = [
        (&[("/notes", "monday\n")], &[]),
        (
            &[
                ("/notes", "tuesday, changed\n"),
                ("/report", "added on tuesday\n"),
            ],
            &["/notes"],
        ),
        (&[], &["/notes"]),
    ];
    let mut expected = Vec::new();
    let mut sent = Vec::new();
    for (night, (writes, removes)) in nights.iter().enumerate() {
        let mut requests: Vec<String> = removes.iter().map(|f| format!("rm {f}")).collect();
        for (file, text) in *writes {
            let source = content(w, &format!("src-{night}{}", file.replace('/', "-")), text);
            requests.push(format!("write {source} {file}"));
        }
        disk.change(&requests);
        sent.push(disk.send(w, "fs"));
        next_second();
        w.backup(conf).success();
        expected.push((
            Some(cat(&disk.path, "/notes")).filter(|t| !t.is_empty()),
            Some(cat(&disk.path, "/report")).filter(|t| !t.is_empty()),
        ));
    }
    assert_eq!(expected[0].0.as_deref(), Some("monday\n"));
    assert_eq!(expected[2].0, None);
    (expected, sent)
}

#[test]
fn every_point_of_an_ext4_image_is_browsed_in_place_and_a_bad_diff_fails_only_its_ranges() {
    let w = World::new();
    let mut disk = Disk::new(&w, "fs");
    let conf = w.config("images = fs\nbackup mode = incremental");
    let (expected, sent) = three_points(&w, &mut disk, &conf);
    let snaps = w.backup_snapshots("fs");
    assert_eq!(snaps.len(), 3);

    // Every point at once: one folder each, the top's raw file the newest.
    let mountpoint = w.tmp.path().join("mnt");
    let mount = start_mount(&w, &conf, "fs", &mountpoint, &[]);
    let mut listed: Vec<String> = fs::read_dir(&mountpoint)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    let mut wanted: Vec<String> = snaps.clone();
    wanted.push("fs.raw".into());
    wanted.sort();
    assert_eq!(listed, wanted);
    assert!(
        fs::write(mountpoint.join("fs.raw"), b"x").is_err(),
        "read-only"
    );
    for (snap, (notes, report)) in snaps.iter().zip(&expected) {
        let raw = mountpoint.join(snap).join("fs.raw");
        assert_eq!(fs::metadata(&raw).unwrap().len(), SIZE);
        let exported = w.tmp.path().join("exported.raw");
        fs::write(&exported, w.export("fs", Some(snap))).unwrap();
        assert_eq!(sha256_of(&raw), sha256_of(&exported), "{snap}");
        let read = |file: &str| Some(cat(&raw, file)).filter(|t| !t.is_empty());
        assert_eq!(&read("/notes"), notes, "{snap}");
        assert_eq!(&read("/report"), report, "{snap}");
    }
    assert_eq!(
        sha256_of(&mountpoint.join("fs.raw")),
        sha256_of(&mountpoint.join(&snaps[2]).join("fs.raw"))
    );

    loop_mounted_read(
        &w,
        &mountpoint.join("fs.raw"),
        "/report",
        expected[2].1.as_deref(),
    );

    // A backup started meanwhile does not prune under the mount: it waits (here: not at all).
    let busy = w.cephbackup(&["-c", conf.to_str().unwrap(), "--wait", "0"]);
    assert_eq!(busy.code, 75, "{}", busy.stderr);
    stop(mount);

    // A byte of the second point's diff payload is damaged: its ranges fail, the rest reads.
    let diff = w
        .files("fs")
        .into_iter()
        .find(|name| {
            name.contains(&format!("@{}.diff_from_", snaps[1])) && !name.ends_with(".sha256")
        })
        .unwrap();
    let path = w.image_dir("fs").join(&diff);
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    let last = fs::metadata(&path).unwrap().len() - 200;
    file.write_all_at(b"!", last).unwrap();
    let at = snaps[1].clone();
    let mount = start_mount(&w, &conf, "fs", &mountpoint, &["--at", &at]);
    let raw = fs::File::open(mountpoint.join("fs.raw")).unwrap();
    let mut block = vec![0u8; BLOCK];
    let (damaged, _) = sent[1][0];
    let err = raw.read_exact_at(&mut block, damaged).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // A block no diff touched is the full backup's, and reads.
    let untouched = (0..SIZE / BLOCK as u64)
        .map(|b| b * BLOCK as u64)
        .find(|o| {
            sent.iter()
                .flatten()
                .all(|(s, l)| o + BLOCK as u64 <= *s || *o >= s + l)
        })
        .unwrap();
    raw.read_exact_at(&mut block, untouched).unwrap();
    drop(raw);
    stop(mount);
}

/// The README's way, where loop devices can be had: `losetup -r`, `mount -o ro`, read `file`,
/// unmount. Says so and returns where they cannot (a container without loop devices).
fn loop_mounted_read(w: &World, raw: &Path, file: &str, expected: Option<&str>) {
    let attached = Command::new("losetup")
        .args(["--find", "--show", "--read-only"])
        .arg(raw)
        .output()
        .unwrap();
    if !attached.status.success() {
        eprintln!(
            "no loop device here ({}): the files were read with debugfs only",
            String::from_utf8_lossy(&attached.stderr).trim()
        );
        return;
    }
    let device = String::from_utf8(attached.stdout)
        .unwrap()
        .trim()
        .to_string();
    let target = w.tmp.path().join("disk");
    fs::create_dir_all(&target).unwrap();
    let mounted = Command::new("mount")
        .args(["-o", "ro,noload", &device])
        .arg(&target)
        .status()
        .unwrap();
    let read = mounted
        .success()
        .then(|| fs::read_to_string(target.join(file.trim_start_matches('/'))).ok());
    if mounted.success() {
        run(Command::new("umount").arg(&target));
    }
    run(Command::new("losetup").args(["--detach", &device]));
    match read {
        Some(read) => assert_eq!(read.as_deref(), expected),
        None => eprintln!("the loop device would not mount here: read with debugfs only"),
    }
}

/// The most the mount's cache may take in these tests: one chunk.
const CACHE: &str = "1M";

/// Writes `len` bytes of noise into the filesystem as `file`: data the cache cannot hold.
fn add_noise(w: &World, disk: &Disk, file: &str, len: usize) {
    let mut rng = Rng(0x5eed_cafe);
    let noise: Vec<u8> = (0..len / 8)
        .flat_map(|_| rng.next().to_le_bytes())
        .collect();
    let path = w.tmp.path().join("noise");
    fs::write(&path, noise).unwrap();
    disk.change(&[format!("write {} {file}", path.display())]);
}

/// How many unnamed files process `pid` holds open, and the bytes they take on disk: the
/// mount's cache is one.
fn unnamed_files(pid: &str) -> (usize, u64) {
    let (mut count, mut bytes) = (0, 0);
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let fd = entry.unwrap().path();
        let Ok(target) = fs::read_link(&fd) else {
            continue;
        };
        let Ok(meta) = fs::metadata(&fd) else {
            continue;
        };
        if meta.is_file() && target.to_string_lossy().ends_with(" (deleted)") {
            count += 1;
            bytes += meta.blocks() * 512;
        }
    }
    (count, bytes)
}

#[test]
fn gzip_and_zstd_chains_are_browsed_through_a_bounded_cache() {
    for compress in ["yes", "zstd"] {
        let w = World::new();
        let mut disk = Disk::new(&w, "fs");
        add_noise(&w, &disk, "/noise", 6 << 20);
        let conf = w.config(&format!(
            "images = fs\nbackup mode = incremental\ncompress = {compress}"
        ));
        let (expected, _) = three_points(&w, &mut disk, &conf);
        let snaps = w.backup_snapshots("fs");
        let mountpoint = w.tmp.path().join("mnt");
        // gzip in the foreground; zstd with --daemon, which returns once mounted.
        // The foreground mount (if any), and the mount's process id.
        let mount = if compress == "yes" {
            start_mount(&w, &conf, "fs", &mountpoint, &["--cache-size", CACHE])
        } else {
            fs::create_dir_all(&mountpoint).unwrap();
            let c = conf.to_str().unwrap();
            let m = mountpoint.to_str().unwrap();
            let args = [
                "-c",
                c,
                "mount",
                "--pool",
                &w.pool,
                "--image",
                "fs",
                m,
                "--daemon",
                "--cache-size",
                CACHE,
            ];
            let started = w.cephbackup(&args).success();
            assert!(mounted(&mountpoint), "{}", started.stderr);
            let pid = started
                .stdout
                .split("(process ")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .unwrap_or_else(|| panic!("no process named: {}", started.stdout));
            Mounted {
                child: None,
                pid: pid.parse().unwrap(),
                mountpoint: mountpoint.clone(),
            }
        };
        let pid = mount.pid();
        for (snap, (notes, report)) in snaps.iter().zip(&expected) {
            let raw = mountpoint.join(snap).join("fs.raw");
            let exported = w.tmp.path().join("exported.raw");
            fs::write(&exported, w.export("fs", Some(snap))).unwrap();
            assert_eq!(sha256_of(&raw), sha256_of(&exported), "{compress} {snap}");
            let read = |file: &str| Some(cat(&raw, file)).filter(|t| !t.is_empty());
            assert_eq!(&read("/notes"), notes, "{compress} {snap}");
            assert_eq!(&read("/report"), report, "{compress} {snap}");
        }
        // Three points of over 6 MiB of data each were read, through a cache of one MiB.
        let (files, bytes) = unnamed_files(&pid);
        assert_eq!(files, 1, "{compress}: the cache file");
        assert!(bytes > 0 && bytes <= MIB + 64 * 1024, "{compress}: {bytes}");
        match mount.child {
            Some(_) => stop(mount),
            None => {
                // Unmounted from outside, the background mount ends by itself.
                run(Command::new("fusermount").arg("-u").arg(&mountpoint));
                assert!(!mounted(&mountpoint));
                let deadline = Instant::now() + Duration::from_secs(20);
                let stat = format!("/proc/{pid}/stat");
                while fs::read_to_string(&stat).is_ok_and(|s| !s.contains(") Z ")) {
                    assert!(
                        Instant::now() < deadline,
                        "the background mount did not end"
                    );
                    sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// A `.tar.zst` this tool wrote is in zstd's seekable format: once proven, a chunk far from its
/// start is decompressed from the frames that hold it alone, so damage to its first frame does
/// not reach it. A `.tar.gz` can only be decoded from its start: the same damage fails the read
/// (EIO), never wrong bytes.
#[test]
fn a_zstd_file_is_read_from_the_frames_that_hold_a_chunk() {
    for (compress, served) in [("zstd", true), ("yes", false)] {
        let w = World::new();
        let mut disk = Disk::new(&w, "fs");
        add_noise(&w, &disk, "/noise", 6 << 20);
        disk.send(&w, "fs");
        let conf = w.config(&format!(
            "images = fs\nbackup mode = full\ncompress = {compress}"
        ));
        w.backup(&conf).success();
        let image = fs::read(&disk.path).unwrap();
        let last = image
            .chunks(BLOCK)
            .rposition(|block| block.iter().any(|&b| b != 0))
            .unwrap()
            * BLOCK;

        let mountpoint = w.tmp.path().join("mnt");
        let mount = start_mount(&w, &conf, "fs", &mountpoint, &["--cache-size", CACHE]);
        let raw = fs::File::open(mountpoint.join("fs.raw")).unwrap();
        let mut block = vec![0u8; BLOCK];
        raw.read_exact_at(&mut block, 0).unwrap();
        // The archive's first frame (its first bytes) damaged after it was proven.
        let full = w.image_dir("fs").join(&w.files("fs")[0]);
        let file = fs::OpenOptions::new().write(true).open(&full).unwrap();
        file.write_all_at(&[0x55; 64], 64).unwrap();
        let read = raw.read_exact_at(&mut block, last as u64);
        match read {
            Ok(()) => {
                assert!(served, "{compress}: a damaged gzip file served");
                assert_eq!(block, image[last..last + BLOCK], "{compress}");
            }
            Err(err) => {
                assert!(!served, "{compress}: {err}");
                assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
            }
        }
        drop(raw);
        stop(mount);
    }
}

#[test]
fn a_compressed_file_changed_after_it_was_proven_is_never_served() {
    let w = World::new();
    let mut disk = Disk::new(&w, "fs");
    add_noise(&w, &disk, "/noise", 6 << 20);
    let conf = w.config("images = fs\nbackup mode = incremental\ncompress = yes");
    three_points(&w, &mut disk, &conf);
    let snaps = w.backup_snapshots("fs");
    let first = w.tmp.path().join("first.raw");
    fs::write(&first, w.export("fs", Some(&snaps[0]))).unwrap();
    let image = fs::read(&first).unwrap();
    let chunks: Vec<usize> = (1..image.len() / (1 << 20))
        .filter(|c| image[c << 20..(c + 1) << 20].iter().any(|&b| b != 0))
        .collect();
    let (&earlier, &later) = (chunks.first().unwrap(), chunks.last().unwrap());
    assert!(earlier < later, "{chunks:?}");

    let mountpoint = w.tmp.path().join("mnt");
    let at = ["--at", snaps[0].as_str(), "--cache-size", CACHE];
    let mount = start_mount(&w, &conf, "fs", &mountpoint, &at);
    let raw = fs::File::open(mountpoint.join("fs.raw")).unwrap();
    let mut block = vec![0u8; BLOCK];
    // The first read proves the full backup.
    raw.read_exact_at(&mut block, 0).unwrap();
    assert_eq!(block, image[..BLOCK]);

    // Then the full backup is changed in place: one byte of the later chunk, a valid archive.
    let full = w
        .files("fs")
        .into_iter()
        .find(|name| !name.contains(".diff_from_"))
        .unwrap();
    let path = w.image_dir("fs").join(&full);
    let member = tar_list(&path).remove(0);
    let unpacked = untar(&path, &w.tmp.path().join("unpacked"));
    let changed = unpacked.join(&member);
    let flip = (later << 20) + image[later << 20..].iter().position(|&b| b != 0).unwrap();
    let mut bytes = fs::read(&changed).unwrap();
    bytes[flip] ^= 0xff;
    fs::write(&changed, bytes).unwrap();
    let repacked = w.tmp.path().join("repacked.tar.gz");
    run(Command::new("tar")
        .arg("czSf")
        .arg(&repacked)
        .arg("-C")
        .arg(&unpacked)
        .arg(&member));
    let mut same_file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut same_file, &fs::read(&repacked).unwrap()).unwrap();
    drop(same_file);

    // A chunk before the change still decodes as proven; the changed one fails, never served.
    let offset = (earlier << 20) as u64;
    raw.read_exact_at(&mut block, offset).unwrap();
    assert_eq!(block, image[earlier << 20..(earlier << 20) + BLOCK]);
    let offset = (flip - flip % BLOCK) as u64;
    let err = raw.read_exact_at(&mut block, offset).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(raw);
    stop(mount);
}

/// A backup run by another user than the mount's is not held off by the mount's lock (each user
/// has a lock folder of their own), and may prune a file of a point nobody has looked at yet:
/// the mount holds every file open from its start, so the point still reads, bit for bit.
#[test]
fn a_file_pruned_while_mounted_is_still_served() {
    let w = World::new();
    w.create_image("vm", 8 * MIB, 11);
    let conf = w.config("images = vm\nbackup mode = full");
    w.backup(&conf).success();
    let first = w.export("vm", None);
    w.write_data("vm", 12);
    next_second();
    w.backup(&conf).success();
    let files = w.files("vm");
    assert_eq!(files.len(), 2, "{files:?}");
    // Full mode keeps no snapshot: the first point is named by its file.
    let first_snap = files[0]
        .strip_prefix("vm@")
        .and_then(|rest| rest.strip_suffix(".full"))
        .unwrap();

    let mountpoint = w.tmp.path().join("mnt");
    let mount = start_mount(&w, &conf, "vm", &mountpoint, &[]);
    // The first point's full backup goes, with its checksum, before anyone looks at the point.
    let pruned = w.image_dir("vm").join(&files[0]);
    fs::remove_file(&pruned).unwrap();
    fs::remove_file(pruned.with_file_name(format!("{}.sha256", files[0]))).unwrap();
    let raw = mountpoint.join(first_snap).join("vm.raw");
    let exported = w.tmp.path().join("first.raw");
    fs::write(&exported, &first).unwrap();
    assert_eq!(sha256_of(&raw), sha256_of(&exported));
    stop(mount);
}

#[test]
fn a_mount_that_cannot_be_made_is_one_line_naming_what_is_wrong() {
    let w = World::new();
    let conf = w.config("images = fs\nbackup mode = incremental");
    let empty = w.tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let busy = w.tmp.path().join("busy");
    fs::create_dir_all(&busy).unwrap();
    fs::write(busy.join("something"), "").unwrap();
    let missing = w.tmp.path().join("missing");
    let c = conf.to_str().unwrap();
    let cases: [(&Path, &str, &str); 3] = [
        (&missing, "fs", "is not a folder that can be read"),
        (&busy, "fs", "is not empty"),
        (&empty, "fs", "has no restorable backup"),
    ];
    for (mountpoint, image, expected) in cases {
        let m = mountpoint.to_str().unwrap();
        let run = w.cephbackup(&["-c", c, "mount", "--pool", &w.pool, "--image", image, m]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
        assert!(!mounted(mountpoint));
    }
    // With --daemon, the background mount's own line, and no second one.
    let m = empty.to_str().unwrap();
    let run = w.cephbackup(&[
        "-c", c, "mount", "--pool", &w.pool, "--image", "fs", m, "--daemon",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("has no restorable backup"),
        "{}",
        run.stderr
    );
    let checked = w.cephbackup(&[
        "-c",
        c,
        "--check",
        "mount",
        "--pool",
        &w.pool,
        "--image",
        "fs",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(checked.code, 2, "{}", checked.stderr);
}

/// The unprivileged user a test acts as (`nobody`), through `setpriv`: no capability, no
/// supplementary group, and an environment of its own (`PATH`, and `HOME` and `TMPDIR` a folder
/// it owns; no `XDG_RUNTIME_DIR`).
struct Unprivileged {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl Unprivileged {
    fn new(w: &World, name: &str) -> Unprivileged {
        let id = |flag: &str| -> u32 {
            let out = run(Command::new("id").args([flag, name]));
            String::from_utf8(out).unwrap().trim().parse().unwrap()
        };
        let user = Unprivileged {
            uid: id("-u"),
            gid: id("-g"),
            home: w.tmp.path().join("home"),
        };
        assert_ne!(user.uid, 0);
        fs::create_dir_all(&user.home).unwrap();
        user.own(&user.home);
        user
    }

    /// Gives `path` and everything under it to the user.
    fn own(&self, path: &Path) {
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.uid, self.gid))
            .arg(path));
    }

    /// `setpriv` and its arguments, to run what follows as the user.
    fn setpriv(&self) -> [String; 5] {
        [
            "setpriv".into(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--clear-groups".into(),
            "--".into(),
        ]
    }

    /// The user's environment, and nothing else of the test's.
    fn environment<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", &self.home)
            .env("TMPDIR", &self.home)
            .stdin(std::process::Stdio::null())
    }

    /// `program` run as the user in the mount namespace of process `pid` (see [`UserMount`]).
    fn command(&self, pid: u32, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .arg("--")
            .args(self.setpriv())
            .arg(program);
        self.environment(&mut command);
        command
    }
}

/// `mount` run by [`Unprivileged`], in a mount namespace of its own: there `/dev/fuse` is
/// usable by every user (mode 0666, as udev makes it on a stock host) even where the host keeps
/// it to root (this container's 0600: fusermount opens it with the user's own rights, so no user
/// could mount anything). Everything
/// else is the host's: the kernel's FUSE, the setuid fusermount, the files. Nothing of it shows
/// outside the namespace, which goes, its mounts with it, when the mount process ends; dropping
/// this ends it whatever happened to the test.
struct UserMount {
    child: Option<Child>,
    pid: u32,
}

/// Run by `unshare` in the new namespace: a tmpfs on `$1`, a 0666 FUSE device node in it bound
/// over `/dev/fuse`, then the rest of the command line.
const USABLE_DEV_FUSE: &str = r#"mount -t tmpfs -o mode=0755 cephbackup-test "$1" &&
mknod -m 0666 "$1/fuse" c 10 229 &&
mount --bind "$1/fuse" /dev/fuse &&
shift && exec "$@""#;

impl UserMount {
    fn start(w: &World, user: &Unprivileged, args: &[&str]) -> UserMount {
        let dev = w.tmp.path().join("dev");
        fs::create_dir_all(&dev).unwrap();
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", USABLE_DEV_FUSE, "sh"])
            .arg(&dev)
            .args(user.setpriv())
            .arg(env!("CARGO_BIN_EXE_cephbackup"))
            .args(args);
        user.environment(&mut command)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = command.spawn().unwrap();
        UserMount {
            pid: child.id(),
            child: Some(child),
        }
    }

    /// The filesystem type and mount options of what is mounted on `mountpoint` in the mount's
    /// namespace, as its /proc/PID/mounts says.
    fn entry(&self, mountpoint: &Path) -> Option<(String, Vec<String>)> {
        fs::read_to_string(format!("/proc/{}/mounts", self.pid))
            .ok()?
            .lines()
            .map(|line| line.split(' ').collect::<Vec<_>>())
            .find(|fields| fields.get(1) == Some(&mountpoint.to_str().unwrap()))
            .map(|fields| {
                let options = fields[3].split(',').map(str::to_string).collect();
                (fields[2].to_string(), options)
            })
    }

    /// Waits until the mount stands on `mountpoint`.
    fn wait_for(&mut self, mountpoint: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .entry(mountpoint)
            .is_none_or(|(kind, _)| kind != "fuse.cephbackup")
        {
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                let ended = finish_within(self.child.take().unwrap(), Duration::from_secs(5));
                panic!("the mount ended (exit {}): {}", ended.code, ended.stderr);
            }
            assert!(Instant::now() < deadline, "the mount did not appear");
            sleep(Duration::from_millis(50));
        }
    }

    /// Every change the user tries under `mountpoint` fails: with EROFS, the mount being
    /// read-only, not merely made of files the user may not write (EACCES).
    fn assert_read_only(&self, user: &Unprivileged, mountpoint: &Path) {
        let top = mountpoint.join("img.raw");
        let t = top.to_str().unwrap();
        let new = mountpoint.join("new");
        let n = new.to_str().unwrap();
        for attempt in [
            format!("printf x >> {t}"),
            format!("printf x > {t}"),
            format!("touch {t}"),
            format!("chmod 666 {t}"),
            format!("rm -f {t}"),
            format!("touch {n}"),
            format!("mkdir {n}"),
        ] {
            let out = user
                .command(self.pid, "sh")
                .args(["-c", &attempt])
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{attempt}: succeeded");
            assert!(said.contains("Read-only file system"), "{attempt}: {said}");
        }
    }

    /// Waits for the mount process to end by itself.
    fn finish(mut self) -> Run {
        finish_within(self.child.take().unwrap(), Duration::from_secs(20))
    }
}

impl Drop for UserMount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An image backed up twice, incrementally and compressed (zstd): the config, the two points'
/// snapshots and the SHA-256 of each point's bytes (as `rbd export` gives them).
fn two_compressed_points(w: &World) -> (PathBuf, Vec<String>, Vec<String>) {
    w.create_image("img", 8 * MIB, 1);
    let conf = w.config("images = img\nbackup mode = incremental\ncompress = zstd");
    w.backup(&conf).success();
    next_second();
    w.write_data("img", 2);
    w.backup(&conf).success();
    let snaps = w.backup_snapshots("img");
    assert_eq!(snaps.len(), 2);
    let expected: Vec<String> = snaps
        .iter()
        .map(|snap| {
            let exported = w.tmp.path().join(format!("{snap}.raw"));
            fs::write(&exported, w.export("img", Some(snap))).unwrap();
            sha256_of(&exported)
        })
        .collect();
    assert_ne!(expected[0], expected[1]);
    (conf, snaps, expected)
}

/// Where the host keeps /dev/fuse to root, the user is told so (not that the mount point is to
/// blame), in one line, in the foreground and with --daemon alike.
fn closed_dev_fuse_is_said(user: &Unprivileged, mount_args: &[&str]) {
    let fuse_mode = fs::metadata("/dev/fuse").unwrap().permissions().mode();
    if fuse_mode & 0o006 == 0o006 {
        return;
    }
    for daemon in [&[][..], &["--daemon"][..]] {
        let mut command = Command::new(user.setpriv()[0].clone());
        command
            .args(&user.setpriv()[1..])
            .arg(env!("CARGO_BIN_EXE_cephbackup"))
            .args(mount_args)
            .args(daemon);
        let out = user.environment(&mut command).output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{daemon:?}: {said}");
        assert_eq!(said.lines().count(), 1, "{daemon:?}: {said}");
        assert!(
            said.contains("/dev/fuse is not open to this user"),
            "{said}"
        );
    }
}

/// Issue 21: a user that is not root, who owns the backup files, mounts them: the mount is
/// theirs (`user_id=`, root kept out), read-only whatever they try, serves each point's bytes (a
/// compressed chain, read through a cache file of theirs), takes the image's lock in their own
/// lock folder, and ends with exit 0 when they unmount it with fusermount.
#[test]
fn the_owner_of_the_backup_files_mounts_them_read_only_without_being_root() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: cannot act as another user; skipped");
        return;
    }
    let out =
        run(Command::new("sh").args(["-c", "command -v fusermount3 || command -v fusermount"]));
    let fusermount = String::from_utf8(out).unwrap().trim().to_string();
    let w = World::new();
    let (conf, snaps, expected) = two_compressed_points(&w);

    // The backups (the pool's folder, 0700 as the tool makes it, and the image's in it) and the
    // mount point are the user's; the world's folder only lets them through (the config file is
    // readable, as /etc's is).
    let user = Unprivileged::new(&w, "nobody");
    fs::set_permissions(w.tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
    user.own(&w.dest.join(&w.pool));
    let mountpoint = w.tmp.path().join("mnt");
    fs::create_dir_all(&mountpoint).unwrap();
    user.own(&mountpoint);
    let backups_before = tree_of(&w.image_dir("img"));

    let c = conf.to_str().unwrap();
    let m = mountpoint.to_str().unwrap();
    let mount_args = ["-c", c, "mount", "--pool", &w.pool, "--image", "img", m];
    closed_dev_fuse_is_said(&user, &mount_args);
    let mut mount = UserMount::start(&w, &user, &mount_args);
    mount.wait_for(&mountpoint);
    let as_user = |program: &str, args: &[&str]| -> std::process::Output {
        user.command(mount.pid, program)
            .args(args)
            .output()
            .unwrap()
    };

    // The user's filesystem, read-only; root itself is kept out (no allow_other).
    let (_, options) = mount.entry(&mountpoint).unwrap();
    assert!(options.iter().any(|o| o == "ro"), "{options:?}");
    assert!(
        options.contains(&format!("user_id={}", user.uid)),
        "{options:?}"
    );
    let top = mountpoint.join("img.raw");
    let t = top.to_str().unwrap();
    let by_root = Command::new("nsenter")
        .arg(format!("--mount=/proc/{}/ns/mnt", mount.pid))
        .args(["--", "stat", t])
        .output()
        .unwrap();
    assert!(!by_root.status.success());
    assert!(
        String::from_utf8_lossy(&by_root.stderr).contains("Permission denied"),
        "{by_root:?}"
    );

    // What the user reads is each point's bytes.
    let listed = as_user("ls", &[m]);
    assert!(listed.status.success(), "{listed:?}");
    let listing = String::from_utf8(listed.stdout).unwrap();
    let mut wanted: Vec<String> = snaps.clone();
    wanted.push("img.raw".into());
    wanted.sort();
    assert_eq!(listing.lines().collect::<Vec<_>>(), wanted);
    let sha256 = |path: &Path| -> String {
        let out = as_user("sha256sum", &[path.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        text.split(' ').next().unwrap().to_string()
    };
    assert_eq!(sha256(&top), expected[1]);
    for (snap, sha) in snaps.iter().zip(&expected) {
        assert_eq!(
            &sha256(&mountpoint.join(snap).join("img.raw")),
            sha,
            "{snap}"
        );
    }

    // The image's lock, taken shared in the user's own lock folder (under their $TMPDIR).
    let lock = (user.home.join(format!("cephbackup-{}", user.uid)))
        .join(&w.pool)
        .join("img.lock");
    let meta = fs::metadata(&lock).unwrap_or_else(|e| panic!("{}: {e}", lock.display()));
    assert_eq!(meta.uid(), user.uid);

    // Nothing can be written, created, removed or changed, whatever the user asks; nothing
    // changed.
    mount.assert_read_only(&user, &mountpoint);
    assert_eq!(sha256(&top), expected[1]);
    let listed = as_user("ls", &[m]);
    assert_eq!(String::from_utf8(listed.stdout).unwrap(), listing);
    assert!(
        tree_of(&w.image_dir("img")) == backups_before,
        "the backups changed"
    );

    // The user unmounts it; the mount, which only ends when unmounted or signalled, ends by
    // itself with exit 0.
    let unmounted = as_user(&fusermount, &["-u", m]);
    assert!(unmounted.status.success(), "{unmounted:?}");
    let ended = mount.finish();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert!(
        ended.stdout.contains("mounted read-only"),
        "{}",
        ended.stdout
    );
}
