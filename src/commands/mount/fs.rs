//! The read-only filesystem a mount shows: `IMAGE.raw`, the chosen point's image, at the top;
//! and, when every point is shown, one folder per restore point, named by its snapshot, holding
//! that point's `IMAGE.raw`. Sizes, times (the snapshot's), bytes and holes (`SEEK_HOLE`,
//! `SEEK_DATA`) come from [`super::point`]; nothing can be written, created or changed.

use std::ffi::OsStr;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyLseek, ReplyOpen, Request,
};

use super::point::{Folder, Point};

/// How long the kernel may keep what it was told: nothing here ever changes.
const TTL: Duration = Duration::from_secs(3600);
const ROOT: u64 = 1;
/// The top's `IMAGE.raw`.
const TOP_RAW: u64 = 2;
/// Point `n`'s folder is `FIRST_POINT + 2n`, its `IMAGE.raw` the inode after.
const FIRST_POINT: u64 = 16;

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Root,
    PointFolder(usize),
    /// The raw image of point `n`.
    Raw(usize),
}

pub struct BackupFs {
    folder: Folder,
    points: Vec<Point>,
    /// The point the top's `IMAGE.raw` shows.
    chosen: usize,
    /// Whether a folder per point is shown too.
    every_point: bool,
    raw_name: String,
    uid: u32,
    gid: u32,
}

impl BackupFs {
    pub fn new(
        folder: Folder,
        points: Vec<Point>,
        chosen: usize,
        every_point: bool,
        image: &str,
    ) -> BackupFs {
        BackupFs {
            folder,
            points,
            chosen,
            every_point,
            raw_name: format!("{image}.raw"),
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        }
    }

    fn node(&self, ino: u64) -> Option<Node> {
        match ino {
            ROOT => Some(Node::Root),
            TOP_RAW => Some(Node::Raw(self.chosen)),
            _ if self.every_point && ino >= FIRST_POINT => {
                let n = usize::try_from((ino - FIRST_POINT) / 2).ok()?;
                if n >= self.points.len() {
                    None
                } else if (ino - FIRST_POINT).is_multiple_of(2) {
                    Some(Node::PointFolder(n))
                } else {
                    Some(Node::Raw(n))
                }
            }
            _ => None,
        }
    }

    fn point_folder_ino(n: usize) -> u64 {
        FIRST_POINT + 2 * n as u64
    }

    fn attr(&self, ino: u64, node: Node) -> Result<FileAttr, Errno> {
        let (kind, perm, size, time) = match node {
            Node::Root => (FileType::Directory, 0o555, 0, self.time_of(self.chosen)),
            Node::PointFolder(n) => (FileType::Directory, 0o555, 0, self.time_of(n)),
            Node::Raw(n) => {
                let point = self.points[n].open(&self.folder).map_err(|_| Errno::EIO)?;
                (FileType::RegularFile, 0o444, point.size(), self.time_of(n))
            }
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn time_of(&self, n: usize) -> SystemTime {
        SystemTime::from(self.points[n].snap.taken())
    }

    /// The entries of a folder: (inode, kind, name).
    fn entries(&self, node: Node) -> Vec<(u64, FileType, String)> {
        match node {
            Node::Root => {
                let mut entries = vec![(TOP_RAW, FileType::RegularFile, self.raw_name.clone())];
                if self.every_point {
                    entries.extend(self.points.iter().enumerate().map(|(n, point)| {
                        let ino = Self::point_folder_ino(n);
                        (ino, FileType::Directory, point.snap.to_string())
                    }));
                }
                entries
            }
            Node::PointFolder(n) => {
                let ino = Self::point_folder_ino(n) + 1;
                vec![(ino, FileType::RegularFile, self.raw_name.clone())]
            }
            Node::Raw(_) => Vec::new(),
        }
    }
}

impl Filesystem for BackupFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(node) = self.node(parent.0) else {
            return reply.error(Errno::ENOENT);
        };
        let found = self
            .entries(node)
            .into_iter()
            .find(|(_, _, entry)| OsStr::new(entry) == name);
        let Some((ino, _, _)) = found else {
            return reply.error(Errno::ENOENT);
        };
        let Some(child) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.attr(ino, child) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino.0).map(|node| self.attr(ino.0, node)) {
            Some(Ok(attr)) => reply.attr(&TTL, &attr),
            Some(Err(errno)) => reply.error(errno),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(Node::Raw(n)) = self.node(ino.0) else {
            return reply.error(Errno::EISDIR);
        };
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.points[n].open(&self.folder) {
            Ok(point) => {
                // Proven once, before the first byte is served.
                point.prove(&self.folder);
                reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(Node::Raw(n)) = self.node(ino.0) else {
            return reply.error(Errno::EISDIR);
        };
        let Ok(point) = self.points[n].open(&self.folder) else {
            return reply.error(Errno::EIO);
        };
        match point.read(&self.folder, offset, u64::from(size)) {
            Ok(bytes) => reply.data(&bytes),
            Err(unreadable) => {
                tracing::debug!("a read at {offset} fails: {}", unreadable.0);
                reply.error(Errno::EIO);
            }
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let Some(Node::Raw(n)) = self.node(ino.0) else {
            return reply.error(Errno::EINVAL);
        };
        let (Ok(point), Ok(from)) = (self.points[n].open(&self.folder), u64::try_from(offset))
        else {
            return reply.error(Errno::EINVAL);
        };
        if from >= point.size() {
            return reply.error(Errno::ENXIO);
        }
        let found = match whence {
            libc::SEEK_DATA => point.seek_data(from),
            libc::SEEK_HOLE => point.seek_hole(from).map(Some),
            _ => return reply.error(Errno::EINVAL),
        };
        match found {
            Ok(Some(at)) => reply.offset(i64::try_from(at).unwrap_or(i64::MAX)),
            Ok(None) => reply.error(Errno::ENXIO),
            Err(err) => reply.error(Errno::from_i32(err.raw_os_error().unwrap_or(libc::EIO))),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(node) = self.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if matches!(node, Node::Raw(_)) {
            return reply.error(Errno::ENOTDIR);
        }
        let mut all = vec![
            (ino.0, FileType::Directory, ".".to_string()),
            (ROOT, FileType::Directory, "..".to_string()),
        ];
        all.extend(self.entries(node));
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, (entry, kind, name)) in all.into_iter().enumerate().skip(skip) {
            if reply.add(INodeNo(entry), index as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
