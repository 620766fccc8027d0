//! Fixtures the unit tests of several modules share, so that each is written once: the snapshot
//! names of a daily chain and a FIFO planted where a test needs an entry that blocks its reader.

use std::path::Path;

/// Four daily backup snapshots, 02:00 UTC on 20 to 23 November 2026, oldest first.
pub(crate) const S0: &str = "BACKUPUTC20261120T020000";
pub(crate) const S1: &str = "BACKUPUTC20261121T020000";
pub(crate) const S2: &str = "BACKUPUTC20261122T020000";
pub(crate) const S3: &str = "BACKUPUTC20261123T020000";

/// Makes a FIFO at `path`: opened for reading, it blocks until a writer comes, which no test
/// provides, so code that must refuse it without opening it is caught if it does not.
pub(crate) fn mkfifo(path: impl AsRef<Path>) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path.as_ref(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}
