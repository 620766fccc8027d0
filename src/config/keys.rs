//! Every configuration key the parser knows, with its documentation: one table ([`KEYS`]) from
//! which the parser takes the keys it accepts ([`is_known`]) and the package generates the
//! `cephbackup.conf(5)` manual page ([`crate::assets`]), so that the two cannot drift apart.
//!
//! Adding a key is one [`KeyDoc`] entry here (and the parser code that reads it). A family of
//! keys with a variable part, such as `group NAME`, is one entry whose [`KeyName::Prefixed`]
//! name matches every key starting with its prefix.

use super::*;

/// How a key is spelled in the file.
#[derive(Debug, Clone, Copy)]
pub enum KeyName {
    /// Exactly this (keys ignore case; the parser lowercases them first).
    Exact(&'static str),
    /// This prefix, a space, then a name the administrator chooses (shown as `placeholder`).
    Prefixed {
        prefix: &'static str,
        placeholder: &'static str,
    },
}

/// Where a key may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// In `[DEFAULT]` (for every pool) or in a pool's section (for that pool).
    AnySection,
    /// In `[DEFAULT]` only: it is about the whole run, not one pool.
    DefaultOnly,
    /// In a pool's section only: it names that pool's images.
    PoolOnly,
}

/// One key's documentation, as the manual page shows it.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    pub name: KeyName,
    pub scope: Scope,
    /// What it means and the values it takes; `code` in backquotes.
    pub text: &'static str,
    /// The value when the key is not set, or `required`.
    pub default: &'static str,
}

impl KeyName {
    /// The key as the manual writes it: `images`, `group NAME`.
    pub fn shown(&self) -> String {
        match self {
            KeyName::Exact(name) => (*name).to_string(),
            KeyName::Prefixed {
                prefix,
                placeholder,
            } => format!("{prefix} {placeholder}"),
        }
    }

    /// Whether `key` (lowercased, as the parser stores it) is this key.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            KeyName::Exact(name) => key == *name,
            KeyName::Prefixed { prefix, .. } => key
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix(' '))
                .is_some_and(|name| !name.trim().is_empty()),
        }
    }

    /// The exact name, for the misspelling suggestions (a prefixed family has none to suggest).
    pub fn exact(&self) -> Option<&'static str> {
        match self {
            KeyName::Exact(name) => Some(name),
            KeyName::Prefixed { .. } => None,
        }
    }
}

/// Whether the parser knows `key` (lowercased).
pub fn is_known(key: &str) -> bool {
    KEYS.iter().any(|doc| doc.name.matches(key))
}

/// The exactly named keys, in the table's order: what a misspelling is compared with.
pub fn exact_names() -> impl Iterator<Item = &'static str> + Clone {
    KEYS.iter().filter_map(|doc| doc.name.exact())
}

/// Every key, as the manual writes them, for the message about an unknown key.
pub fn shown_names() -> String {
    KEYS.iter()
        .map(|doc| doc.name.shown())
        .collect::<Vec<_>>()
        .join(", ")
}

const fn key(name: &'static str, text: &'static str, default: &'static str) -> KeyDoc {
    KeyDoc {
        name: KeyName::Exact(name),
        scope: Scope::AnySection,
        text,
        default,
    }
}

const fn run_key(name: &'static str, text: &'static str, default: &'static str) -> KeyDoc {
    KeyDoc {
        name: KeyName::Exact(name),
        scope: Scope::DefaultOnly,
        text,
        default,
    }
}

/// Every key, in the order the manual lists them (and the message about an unknown key).
pub const KEYS: &[KeyDoc] = &[
    key(
        IMAGES,
        "The images of the pool to back up: comma-separated names (spaces around them are \
         ignored), or `*` alone for every image in the pool.",
        "required",
    ),
    key(
        NAMESPACE,
        "The RBD namespace of the section's pool, the same as naming the section \
         `[POOL/NAMESPACE]`: its images are `POOL/NAMESPACE/IMAGE` to rbd, and their files go to \
         `DESTINATION/POOL/@NAMESPACE/IMAGE/`. Two sections of one pool and namespace are an \
         error.",
        "none: the pool's default namespace, in the original's layout",
    ),
    key(
        EXCLUDE,
        "Comma-separated shell-style patterns (`*`, `?`, `[...]`) of images to leave out, beside \
         `images = *` (`exclude = scratch-*, tmp-?`). With a list of names, a listed name a \
         pattern matches is dropped with a warning, and one that leaves nothing is an error.",
        "none",
    ),
    key(
        DESTINATION,
        "An existing folder: backups go to DIR/POOL/IMAGE/. Or `s3://BUCKET/PREFIX`: an \
         existing S3 bucket (radosgw, or any S3 service); backups go to the objects \
         PREFIX/POOL/IMAGE/... (see `s3 endpoint`).",
        "required",
    ),
    key(
        CEPH_CONFIG,
        "The Ceph configuration file given to every `rbd` call as `--conf`; it must exist and be \
         readable.",
        "/etc/ceph/ceph.conf",
    ),
    key(
        CEPH_USER,
        "The cephx id `rbd` runs as (`rbd --id`).",
        "rbd's default (client.admin)",
    ),
    key(
        CEPH_KEYRING,
        "The keyring `rbd` reads (`rbd --keyring`); it must exist and be readable.",
        "the keyring the Ceph configuration names",
    ),
    key(
        BACKUP_MODE,
        "`full` (a full export each run) or `incremental` (a full export, then diffs, within a \
         time window).",
        "required",
    ),
    key(
        COMPRESS,
        "`no`; `yes` for gzip (.tar.gz, the original's format); `zstd` for .tar.zst. Booleans \
         also as true/false, on/off, 1/0, y/n, t/f.",
        "no",
    ),
    key(
        COMPRESS_LEVEL,
        "The compressor's level: gzip 1 to 9, zstd 1 to 19 (higher: smaller and slower).",
        "the compressor's default (gzip 6, zstd 3)",
    ),
    key(
        COMPRESS_THREADS,
        "How many threads compress one file, 1 to 256.",
        "one per core",
    ),
    key(
        CHECK_MODE,
        "Yes or no: only show what a run would do, changing nothing (as `--check`).",
        "no",
    ),
    key(
        QUIESCE,
        "Whether `rbd snap create` first asks the clients mapping the image (rbd-nbd with a \
         quiesce hook) to quiesce it: `yes`, `no` (`--skip-quiesce`), or `ignore errors` \
         (`--ignore-quiesce-error`: the snapshot is taken even when a client cannot quiesce).",
        "yes (rbd's own default)",
    ),
    key(
        PRE_SNAPSHOT_COMMAND,
        "A command run just before each snapshot the section takes, to freeze what writes to the \
         image (`virsh domfsfreeze vm42`); split into words like a shell would, run without one, \
         with the pool, image and snapshot in its environment. When it fails, the image fails \
         and no snapshot is taken.",
        "none",
    ),
    key(
        POST_SNAPSHOT_COMMAND,
        "A command run just after each snapshot (or after a failed one) whose pre snapshot \
         command started, to thaw the image's writers (`virsh domfsthaw vm42`).",
        "none",
    ),
    key(
        HOOK_TIMEOUT,
        "Seconds each snapshot command may run before it is stopped (SIGTERM, SIGKILL 5 s \
         later); 1 to 86400.",
        "300",
    ),
    KeyDoc {
        name: KeyName::Prefixed {
            prefix: GROUP,
            placeholder: "NAME",
        },
        scope: Scope::PoolOnly,
        text: "Images of the section snapshotted together, comma-separated (`group vm42 = \
               vm42-disk0, vm42-disk1`): one pre and one post snapshot command for all of them \
               (with `CEPHBACKUP_GROUP` and `CEPHBACKUP_IMAGES` in their environment), their \
               snapshots taken back to back under one name. Each member must be an image the \
               section backs up, in one group only.",
        default: "none",
    },
    key(
        WINDOW_SIZE,
        "Incremental mode: how long a chain of diffs grows before a new full, in `window unit`s; \
         a whole number of 0 or more.",
        "7",
    ),
    key(
        WINDOW_UNIT,
        "Incremental mode: `minutes`, `hours`, `days`, `weeks` or `months` (singular too; \
         calendar months).",
        "days",
    ),
    key(
        CEPH_TIMEOUT,
        "Seconds any single Ceph operation may take before `rbd` gives up, 0 to 86400; `0` for \
         no limit.",
        "300",
    ),
    key(
        KEEP_LAST,
        "Full mode: keep the newest N full backups (a whole number of 0 or more). With the other \
         keep rules, a backup any rule keeps is kept; a successful run removes the others.",
        "not set: every full backup is kept",
    ),
    key(
        KEEP_DAILY,
        "Full mode: keep the newest full backup of each of the last N days.",
        "not set",
    ),
    key(
        KEEP_WEEKLY,
        "Full mode: keep the newest full backup of each of the last N weeks.",
        "not set",
    ),
    key(
        KEEP_MONTHLY,
        "Full mode: keep the newest full backup of each of the last N months.",
        "not set",
    ),
    key(
        KEEP_MINIMUM,
        "Incremental mode: the fewest restore points a window slide leaves, a whole number of 0 \
         or more (`0` means `1`).",
        "1 (the original's behaviour)",
    ),
    key(
        SLIDE_FROM_CLUSTER,
        "Incremental mode, yes or no: build a window slide's new base by exporting it from the \
         cluster, as the original did, instead of from the files already written.",
        "no",
    ),
    key(
        FILE_GROUP,
        "A group name: that group may read what the section writes, files 0640 and folders 0750 \
         owned by it; never readable by all. An unknown group is a configuration error.",
        "not set: files 0600, folders 0700, the owner only",
    ),
    key(
        ENCRYPT_TO,
        "An age public key (`age1...`, from age-keygen), or the absolute path of a file of them, \
         one a line, that only its owner may write: every new backup file is an age file for \
         those keys (.age), which neither the backup host nor the destination can read back. \
         `restore` and `verify` read them with `--identity FILE`.",
        "not set: files in clear",
    ),
    key(
        S3_ENDPOINT,
        "With an `s3://` destination: the service's URL, `https://HOST[:PORT]` (or `http://` on \
         a trusted network only); requests are path-style (URL/BUCKET/KEY).",
        "required for s3://",
    ),
    key(
        S3_REGION,
        "With an `s3://` destination: the region requests are signed for.",
        DEFAULT_S3_REGION,
    ),
    key(
        S3_CREDENTIALS,
        "With an `s3://` destination: the absolute path of a file in the AWS shared-credentials \
         format (`[default]`, `aws_access_key_id`, `aws_secret_access_key`, optionally \
         `aws_session_token`) that only its owner may read (0600).",
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment",
    ),
    run_key(
        PARALLEL_IMAGES,
        "How many images a run backs up at once, 1 to 64.",
        "1 (one after the other, as the original)",
    ),
    run_key(
        METRICS_FILE,
        "An absolute path where each run writes its Prometheus textfile (for node_exporter's \
         textfile collector); `--metrics-file PATH` overrides it.",
        "not set: no metrics file",
    ),
    run_key(
        STATE_DIRECTORY,
        "An absolute path: the host's private state folder (the destinations it wrote to, each \
         image's newest snapshot, the key sealing its records).",
        "$STATE_DIRECTORY when set (the systemd units set it), else /var/lib/cephbackup for \
         root, else ~/.local/state/cephbackup",
    ),
    run_key(
        WAIT,
        "Whole seconds a backup waits for another run using one of its images, 0 to 604800; `0` \
         skips the image at once (exit status 75); `--wait SECONDS` overrides it.",
        "21600 (6 hours)",
    ),
    run_key(
        COORDINATION_POOL,
        "A pool through which several backup hosts share this configuration, each image backed \
         up by one of them (in the cluster of [DEFAULT]'s `ceph config`, else the first \
         section's).",
        "not set: this host backs up alone",
    ),
    run_key(
        COORDINATION_LEASE,
        "Seconds an image's lease lasts unless renewed (every third of it): how soon a dead \
         host's images are taken over; 3 to 3600.",
        "60",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_documented_once_and_lowercase() {
        let names: Vec<String> = KEYS.iter().map(|doc| doc.name.shown()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for doc in KEYS {
            let shown = doc.name.shown();
            assert!(!doc.text.is_empty() && !doc.default.is_empty(), "{shown}");
            if let Some(name) = doc.name.exact() {
                assert_eq!(name, name.to_lowercase(), "the parser lowercases keys");
                assert!(is_known(name), "{shown}");
            }
        }
        // The keep rules the parser reads are all documented.
        for rule in KEEP_RULE_KEYS {
            assert!(is_known(rule), "{rule}");
        }
        assert!(!is_known("keep yearly"));
    }

    #[test]
    fn a_prefixed_key_matches_its_family_only() {
        let group = KeyName::Prefixed {
            prefix: "group",
            placeholder: "NAME",
        };
        assert!(group.matches("group vm42"));
        assert!(!group.matches("group"));
        assert!(!group.matches("group "));
        assert!(!group.matches("groups x"));
        assert_eq!(group.shown(), "group NAME");
        assert_eq!(group.exact(), None);
    }
}
