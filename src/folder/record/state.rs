//! What the image record holds, and how each step of a run changes it: plain data, so the planner
//! can read it and the executor and the planner's tests change it the same way.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::folder::naming::SnapName;

/// A snapshot a run created (or was about to create) and has not yet backed by a complete file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub snapshot: String,
    /// The backup file that will back it.
    pub file: String,
    /// A full-mode snapshot, removed once its export is done whatever happens.
    pub temporary: bool,
    pub pid: u32,
    pub started: DateTime<Utc>,
}

/// The newest snapshot this destination completed a backup of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    pub snapshot: String,
    pub file: String,
}

/// A file a run started to upload and had not published yet: a kill leaves the store holding
/// its parts out of sight, which the next run takes back by `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unfinished {
    pub file: String,
    /// The store's id of the upload.
    pub id: String,
}

/// What the image record holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    #[serde(default)]
    pub pending: Vec<Pending>,
    #[serde(default)]
    pub newest: Option<Completed>,
    /// Absent from records of local folders, which never have any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uploads: Vec<Unfinished>,
}

impl ImageRecord {
    /// Before `rbd snap create`: notes that `snapshot` is about to exist to back `file`.
    pub fn snapshot_planned(
        &mut self,
        snapshot: &str,
        file: &str,
        temporary: bool,
        at: DateTime<Utc>,
    ) {
        self.pending.retain(|p| p.snapshot != snapshot);
        self.pending.push(Pending {
            snapshot: snapshot.to_string(),
            file: file.to_string(),
            temporary,
            pid: std::process::id(),
            started: at,
        });
    }

    /// Before the first byte of `file` is sent: its upload `id`, which a kill would leave
    /// unfinished.
    pub fn upload_started(&mut self, file: &str, id: &str) {
        self.uploads.push(Unfinished {
            file: file.to_string(),
            id: id.to_string(),
        });
    }

    /// After the upload `id` was completed or taken back.
    pub fn upload_ended(&mut self, id: &str) {
        self.uploads.retain(|upload| upload.id != id);
    }

    /// After `file` was completed: the snapshot it backs is settled (unless it is a temporary
    /// one, which still has to go) and, when newer, becomes the newest completed backup.
    pub fn file_completed(&mut self, snapshot: &SnapName, file: &str) {
        self.pending
            .retain(|p| p.snapshot != snapshot.as_str() || p.temporary);
        let newer = match &self.newest {
            Some(newest) => SnapName::parse(&newest.snapshot)
                .is_none_or(|known| known.taken() <= snapshot.taken()),
            None => true,
        };
        if newer {
            self.newest = Some(Completed {
                snapshot: snapshot.to_string(),
                file: file.to_string(),
            });
        }
    }

    /// After `snapshot` was removed (or found gone): nothing is pending on it any more. True when
    /// something was.
    pub fn snapshot_gone(&mut self, snapshot: &str) -> bool {
        let before = self.pending.len();
        self.pending.retain(|p| p.snapshot != snapshot);
        before != self.pending.len()
    }
}
