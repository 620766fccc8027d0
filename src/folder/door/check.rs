//! The check-mode twin of a local folder: it reads what is there as the real folder does, and
//! changes nothing. The executor announces each change and calls the door; in check mode this
//! door takes the call and leaves the folder as it was, so the executor need not ask which mode
//! it is in.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use anyhow::{bail, Result};

use super::{Door, LocalFolder, Opened, Published, Sharing, Staged};
use crate::folder::access::FileAccess;
use crate::folder::chain::FolderEntry;
use crate::folder::untrusted::EntryKind;

/// A folder seen in check mode: every read goes to the real folder, no change reaches it.
pub struct CheckFolder {
    real: Box<dyn Door>,
}

impl CheckFolder {
    pub fn new(real: Box<dyn Door>) -> CheckFolder {
        CheckFolder { real }
    }
}

impl Door for CheckFolder {
    fn location(&self) -> PathBuf {
        self.real.location()
    }

    fn access(&self) -> FileAccess {
        self.real.access()
    }

    fn kind(&self) -> io::Result<EntryKind> {
        self.real.kind()
    }

    fn list(&self) -> Result<Vec<FolderEntry>> {
        self.real.list()
    }

    fn kind_of(&self, name: &str) -> io::Result<EntryKind> {
        self.real.kind_of(name)
    }

    fn open(&self, name: &str) -> io::Result<Opened> {
        self.real.open(name)
    }

    fn read_own(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        self.real.read_own(name, limit)
    }

    fn open_file(&self, name: &str) -> Option<io::Result<File>> {
        self.real.open_file(name)
    }

    /// Nothing is created: check mode must not make a folder on a destination that is not
    /// there (an unmounted disk).
    fn create(&self) -> Result<()> {
        Ok(())
    }

    /// Stages nothing, and says so: the export that asked reads nothing from the cluster.
    fn stage(&self, _name: &str) -> Result<Option<Staged>> {
        Ok(None)
    }

    /// Nameless and gone when closed, so no reader of the folder ever sees it: proving a
    /// compressed diff in check mode needs it as a real run does.
    fn scratch(&self) -> Result<File> {
        self.real.scratch()
    }

    fn publish(&self, file: Staged, _sha256: &str, _replace: bool) -> Result<Published> {
        bail!(
            "internal error: check mode published {}, but it writes no file",
            file.name()
        )
    }

    fn put(&self, _name: &str, _bytes: &[u8], _sharing: Sharing) -> Result<()> {
        Ok(())
    }

    /// Removes nothing, and says so.
    fn remove(&self, _name: &str) -> Result<bool> {
        Ok(false)
    }

    /// A real run of this folder would build a new base in place: the plan is the same.
    fn builds_in_place(&self) -> bool {
        self.real.builds_in_place()
    }

    /// But nothing is changed in place here.
    fn in_place(&self) -> Option<&LocalFolder> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_folder_reads_the_real_one_and_changes_nothing() {
        let dest = tempfile::tempdir().unwrap();
        let real = LocalFolder::image(dest.path(), "rbd", "vm");
        real.create().unwrap();
        real.put("a", b"1", Sharing::Private).unwrap();
        let check = CheckFolder::new(Box::new(real.clone()));
        assert_eq!(check.list().unwrap(), real.list().unwrap());
        assert_eq!(check.kind_of("a").unwrap(), EntryKind::File);
        // Every change is taken and leaves the folder as it was.
        check.put("a", b"2", Sharing::Private).unwrap();
        check.put("b", b"2", Sharing::Private).unwrap();
        assert!(!check.remove("a").unwrap());
        assert!(check.stage("c").unwrap().is_none());
        assert_eq!(std::fs::read(real.file("a")).unwrap(), b"1");
        assert_eq!(real.list().unwrap().len(), 1);
        // Nor is a folder made where there is none.
        let elsewhere = CheckFolder::new(Box::new(LocalFolder::image(dest.path(), "rbd", "new")));
        elsewhere.create().unwrap();
        assert!(!dest.path().join("rbd/new").exists());
        // It plans as the real folder does, but hands out nothing to change in place.
        assert!(check.builds_in_place());
        assert!(check.in_place().is_none());
    }
}
