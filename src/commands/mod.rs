//! The commands: the backup run itself (`backup`), `list`, `status`, `restore`, `verify`,
//! `init-destination`, and the offline check of a configuration (`--check --offline`).
//! Each takes its own options and returns a result; only `cli` turns those into exit statuses.
//! What they share, reading the configuration and the folders together: which image folders a
//! command looks at ([`catalog`]) and how well each configured image is covered ([`coverage`],
//! also the metrics'), and the Prometheus textfile a run publishes ([`metrics`]).

pub mod backup;
pub mod catalog;
pub mod check_config;
pub mod coverage;
pub mod hosts;
pub mod init;
pub mod list;
pub mod metrics;
pub mod mount;
pub mod restore;
pub mod status;
pub mod verify;

/// Checks documents against the JSON Schemas in `schema/`, for the tests of every command.
#[cfg(test)]
pub(crate) mod schema_check {
    /// The schema `schema/<kind>.schema.json`, compiled.
    pub fn validator(kind: &str) -> jsonschema::Validator {
        let path = format!("{}/schema/{kind}.schema.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    }

    /// Panics naming every place where `value` does not match the schema of `kind`.
    pub fn assert_valid(kind: &str, value: &serde_json::Value) {
        let validator = validator(kind);
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{kind}: {errors:#?}\n{value:#}");
    }

    /// True when the schema of `kind` accepts `value`.
    pub fn accepts(kind: &str, value: &serde_json::Value) -> bool {
        validator(kind).is_valid(value)
    }
}

/// One image's backups for the tests of the commands that read them (`restore`, `verify`): a
/// full of `vm` at [`S0`](chain::S0) and diffs to `S1` and `S2`, each with its checksum file.
#[cfg(test)]
pub(crate) mod chain {
    use std::path::Path;

    use crate::test_fixtures::{diff_file, diff_stream, full_file, write_with_checksum, Rec};
    pub(crate) use crate::test_fixtures::{sha256, S0, S1, S2};

    /// The image's size at every point.
    pub const SIZE: usize = 1 << 20;

    /// A diff from `from` to `to` that writes 4 KiB of 9s at 4096 and zeros 4 KiB at 65536.
    pub fn diff(from: &str, to: &str) -> Vec<u8> {
        let records = [Rec::W(4096, vec![9u8; 4096]), Rec::Z(65536, 4096)];
        diff_stream(from, to, SIZE as u64, &records)
    }

    /// The image at `S0`: all ones.
    pub fn full() -> Vec<u8> {
        vec![1u8; SIZE]
    }

    /// The image at `S1` and `S2`, which the diffs lead to.
    pub fn latest() -> Vec<u8> {
        let mut image = full();
        image[4096..8192].fill(9);
        image[65536..69632].fill(0);
        image
    }

    /// Writes the full, the two diffs and their checksum files into `dir` (which exists).
    pub fn write(dir: &Path) {
        let files = [
            (full_file(S0), full()),
            (diff_file(S0, S1), diff(S0, S1)),
            (diff_file(S1, S2), diff(S1, S2)),
        ];
        for (name, data) in files {
            write_with_checksum(dir, &name, &data);
        }
    }

    /// A destination whose `rbd/vm` holds the chain ([`write`]), with a configuration naming it
    /// (section `[rbd]`) and a lock folder; all removed when dropped.
    pub struct Backups {
        _tmp: tempfile::TempDir,
        pub config: crate::config::Config,
        pub locking: crate::lock::Locking,
        /// The image's backup folder.
        pub dir: std::path::PathBuf,
    }

    pub fn backups() -> Backups {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let dir = dest.join("rbd").join("vm");
        let locks = tmp.path().join("locks");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir(&locks).unwrap();
        write(&dir);
        let text = format!(
            "[rbd]\ndestination directory = {}\nceph config = /etc/ceph/fake.conf\n\
             images = vm\nbackup mode = incremental\n",
            dest.display()
        );
        Backups {
            config: crate::test_fixtures::parse_config(&text),
            locking: crate::lock::Locking {
                dir: locks,
                wait: std::time::Duration::ZERO,
            },
            dir,
            _tmp: tmp,
        }
    }
}
