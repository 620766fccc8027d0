//! A second kind of destination, in memory: a [`Door`] with no local folder behind it, which the
//! readers of backup folders (the chains, the bounds, the checksums, a rebuild, the slide's
//! proof, the records) use exactly as they use a local folder. If a reader went around the door,
//! these tests would find nothing where the files are.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Read, Seek};
use std::sync::{Arc, Mutex};

use super::*;
use crate::folder::format::rebuild;
use crate::folder::format::write::checksum_line;
use crate::folder::naming::{checksum_name, BackupFile, Compression};
use crate::folder::read::{self, Limits};
use crate::folder::record::seal::{SealKey, KEY_BYTES};
use crate::folder::record::{self, ImageRecord};
use crate::folder::slide;
use crate::test_fixtures::{diff_file, diff_stream, full_file, sha256, snap, Rec, S0, S1, S2};

type Files = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

/// A folder held in memory: names and bytes. Like an object store, it stages a new file as a
/// stream that appears whole when completed.
#[derive(Default)]
struct MemoryFolder {
    files: Files,
}

/// A file being streamed into a [`MemoryFolder`].
struct MemoryUpload {
    files: Files,
    name: String,
    bytes: Vec<u8>,
}

impl Write for MemoryUpload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Upload for MemoryUpload {
    fn name(&self) -> &str {
        &self.name
    }

    fn id(&self) -> &str {
        "memory"
    }

    fn send_rest(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn complete(self: Box<Self>) -> io::Result<u64> {
        let size = self.bytes.len() as u64;
        self.files.lock().unwrap().insert(self.name, self.bytes);
        Ok(size)
    }
}

impl MemoryFolder {
    fn insert(&self, name: &str, bytes: &[u8]) {
        self.files
            .lock()
            .unwrap()
            .insert(name.to_string(), bytes.to_vec());
    }

    /// `bytes` under `name`, with the checksum file the tool writes beside it.
    fn insert_proven(&self, name: &str, bytes: &[u8]) {
        self.insert(
            &checksum_name(name),
            checksum_line(&sha256(bytes), name).as_bytes(),
        );
        self.insert(name, bytes);
    }

    fn bytes(&self, name: &str) -> io::Result<Vec<u8>> {
        let files = self.files.lock().unwrap();
        files
            .get(name)
            .cloned()
            .ok_or(io::ErrorKind::NotFound.into())
    }
}

impl Door for MemoryFolder {
    fn location(&self) -> PathBuf {
        PathBuf::from("memory:rbd/vm")
    }

    fn access(&self) -> FileAccess {
        FileAccess::PRIVATE
    }

    fn kind(&self) -> io::Result<EntryKind> {
        Ok(EntryKind::Directory)
    }

    fn list(&self) -> Result<Vec<FolderEntry>> {
        let files = self.files.lock().unwrap();
        Ok(files
            .iter()
            .map(|(name, bytes)| FolderEntry::file(name, bytes.len() as u64))
            .collect())
    }

    fn kind_of(&self, name: &str) -> io::Result<EntryKind> {
        self.bytes(name).map(|_| EntryKind::File)
    }

    fn open(&self, name: &str) -> io::Result<Opened> {
        let bytes = self.bytes(name)?;
        Ok(Opened {
            len: bytes.len() as u64,
            reader: Box::new(Cursor::new(bytes)),
        })
    }

    /// Nobody but the tool writes here.
    fn read_own(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        self.read_small(name, limit)
    }

    fn create(&self) -> Result<()> {
        Ok(())
    }

    fn stage(&self, name: &str) -> Result<Option<Staged>> {
        Ok(Some(Staged::Stream(Box::new(MemoryUpload {
            files: Arc::clone(&self.files),
            name: name.to_string(),
            bytes: Vec::new(),
        }))))
    }

    fn scratch(&self) -> Result<File> {
        Ok(tempfile::tempfile()?)
    }

    fn publish(&self, file: Staged, sha256: &str, _replace: bool) -> Result<Published> {
        let Staged::Stream(upload) = file else {
            anyhow::bail!("a memory folder stages streams");
        };
        let name = upload.name().to_string();
        let line = checksum_line(sha256, &name);
        self.insert(&checksum_name(&name), line.as_bytes());
        Ok(Published {
            size: upload.complete()?,
            checksum_size: line.len() as u64,
        })
    }

    fn put(&self, name: &str, bytes: &[u8], _sharing: Sharing) -> Result<()> {
        self.insert(name, bytes);
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<bool> {
        Ok(self.files.lock().unwrap().remove(name).is_some())
    }

    fn in_place(&self) -> Option<&LocalFolder> {
        None
    }
}

const SIZE: u64 = 64 * 1024;

/// A chain of image `vm` in memory: a full at S0 and diffs to S1 and S2; the image at S2.
fn chain() -> (MemoryFolder, Vec<u8>) {
    let folder = MemoryFolder::default();
    let mut image: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    folder.insert_proven(&full_file(S0), &image);
    let first = [Rec::W(4096, vec![7; 8192])];
    let second = [Rec::Z(0, 4096), Rec::W(60 * 1024, vec![9; 1024])];
    folder.insert_proven(&diff_file(S0, S1), &diff_stream(S0, S1, SIZE, &first));
    folder.insert_proven(&diff_file(S1, S2), &diff_stream(S1, S2, SIZE, &second));
    image[4096..12288].fill(7);
    image[..4096].fill(0);
    image[60 * 1024..61 * 1024].fill(9);
    (folder, image)
}

/// The newest point of `folder` rebuilt into a file, read back.
fn rebuilt(folder: &MemoryFolder) -> Result<Vec<u8>> {
    let mut scanned = read::scan(folder, "vm")?;
    let limits = scanned.refuse_wrong_sized(folder);
    let point = *scanned.layout.points().last().unwrap();
    let route = scanned.layout.route(point).unwrap();
    let mut out = tempfile::tempfile()?;
    let checked = rebuild::rebuild(folder, &route, &limits, &out, "the test's file")?;
    assert_eq!(checked, route.len());
    let mut bytes = Vec::new();
    out.rewind()?;
    out.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[test]
fn a_chain_behind_another_kind_of_door_is_scanned_bounded_and_rebuilt_bit_for_bit() {
    let (folder, image) = chain();
    let scanned = read::scan(&folder, "vm").unwrap();
    assert_eq!(scanned.layout.points().len(), 3);
    assert!(scanned.layout.files.iter().all(|f| f.checksum.is_some()));
    // The bounds come from the diffs' headers, read through the door.
    let limits = Limits::learn(&folder, &scanned.layout);
    let full = &scanned.layout.files[0];
    assert_eq!(limits.own_size(full), None);
    assert_eq!(limits.chain_size(full).map(|(size, _)| size), Some(SIZE));
    assert_eq!(rebuilt(&folder).unwrap(), image);
}

#[test]
fn a_damaged_file_behind_another_kind_of_door_is_named_by_the_door() {
    let (folder, _) = chain();
    let name = diff_file(S1, S2);
    let mut damaged = folder.bytes(&name).unwrap();
    let last = damaged.len() - 2;
    damaged[last] ^= 1;
    folder.insert(&name, &damaged);
    let err = format!("{:#}", rebuilt(&folder).unwrap_err());
    assert!(err.starts_with(&format!("memory:rbd/vm/{name}: ")), "{err}");
}

#[test]
fn the_slide_proves_its_inputs_through_a_door_without_local_files() {
    let (folder, _) = chain();
    let new_base = BackupFile::full(snap(S2), Compression::None);
    let diffs = [diff_file(S0, S1), diff_file(S1, S2)];
    let from = full_file(S0);
    assert_eq!(
        slide::would_build(&folder, "vm", &new_base, &from, &diffs),
        None
    );
    // The door has no local file to read in place: a slide is exported instead.
    assert!(!folder.builds_in_place());
    folder.insert(&checksum_name(&diffs[1]), b"not a checksum line");
    let why = slide::would_build(&folder, "vm", &new_base, &from, &diffs).unwrap();
    assert!(why.contains("memory:rbd/vm/"), "{why}");
}

#[test]
fn records_round_trip_through_another_kind_of_door() {
    let folder = MemoryFolder::default();
    let key = SealKey::new([3; KEY_BYTES]);
    let mut written = ImageRecord::default();
    written.snapshot_planned(
        S1,
        &full_file(S1),
        false,
        crate::test_fixtures::utc_hour(2026, 11, 21, 2),
    );
    record::write_image_record(&folder, "rbd", "vm", &written, &key).unwrap();
    let back = record::read_image_record(&folder, "rbd", "vm", Some(&key)).unwrap();
    assert_eq!(back, written);
    assert_eq!(
        read::recorded_digest(&folder, "none").unwrap(),
        None,
        "a file without a checksum file"
    );
}
