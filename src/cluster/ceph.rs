//! What Ceph's tools say when they fail, read into a cause: the errno table of `rbd`'s exit
//! statuses, its words for a refused login, the format of Ceph's log lines in its stderr, the
//! usual failures restated for administrators, and the cephx identity a refused login names.
//! [`crate::cluster::process`] starts the commands and applies this to their failures.

use std::process::ExitStatus;

/// What Ceph logs when an operation did not get an answer within its timeout.
pub(super) const OPERATION_TIMED_OUT: &[u8] = b"(110) Connection timed out";

/// True when `stderr` says an operation timed out.
pub(super) fn operation_timed_out(stderr: &[u8]) -> bool {
    contains(stderr, OPERATION_TIMED_OUT)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// What the failure means, read from the exit status: `rbd` exits with the errno of what
/// failed, which is stable where its messages are not. Only a failed login is told by its
/// words too: `rbd` says it "couldn't connect to the cluster" whatever the reason, and exits
/// with the errno of the login, whose ENOENT (no keyring) must never read as "no such
/// snapshot".
pub fn failure_kind(status: ExitStatus, stderr: &[u8]) -> FailureKind {
    if connection_failed(stderr) {
        return match status.code() {
            Some(libc::ETIMEDOUT) => FailureKind::TimedOut,
            Some(libc::EACCES | libc::EPERM) => FailureKind::Unauthenticated,
            _ if keyring_missing(stderr).is_some() => FailureKind::Unauthenticated,
            _ => FailureKind::Other,
        };
    }
    if status.code().is_none() && operation_timed_out(stderr) {
        // Stopped by a signal after an operation timed out (see [`CommandLine::stop_on_timeout`](super::process::CommandLine::stop_on_timeout)).
        return FailureKind::TimedOut;
    }
    match status.code() {
        Some(libc::ENOENT) => FailureKind::NotFound,
        Some(libc::EEXIST) => FailureKind::AlreadyExists,
        Some(libc::EBUSY) => FailureKind::Busy,
        Some(libc::ETIMEDOUT) => FailureKind::TimedOut,
        // Not EPERM: it is 1, which is also what rbd exits with for any other failure.
        Some(libc::EACCES) => FailureKind::PermissionDenied,
        Some(libc::EDQUOT) => FailureKind::QuotaExceeded,
        _ => FailureKind::Other,
    }
}

/// What a failed command's exit status says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// ENOENT: no such pool, image or snapshot.
    NotFound,
    /// EEXIST: the snapshot or image exists already.
    AlreadyExists,
    /// EBUSY: the image has watchers, or the snapshot is protected.
    Busy,
    /// ETIMEDOUT: the cluster did not answer in time (or could not be reached at all).
    TimedOut,
    /// EACCES: the cephx user may not do this.
    PermissionDenied,
    /// The cluster refused the login (unknown user, wrong key, no keyring): every later call
    /// would fail the same way.
    Unauthenticated,
    /// EDQUOT: the image has as many snapshots as its snapshot limit allows.
    QuotaExceeded,
    Other,
}

/// `rbd`'s words when it could not even log in to the cluster.
const CONNECT_FAILED: &str = "couldn't connect to the cluster";

fn connection_failed(stderr: &[u8]) -> bool {
    String::from_utf8_lossy(stderr).contains(CONNECT_FAILED)
}

/// The keyring path Ceph looked for and did not find (`auth: unable to find a keyring on
/// /etc/ceph/x: (2) No such file or directory`).
fn keyring_missing(stderr: &[u8]) -> Option<String> {
    const MARKER: &str = "unable to find a keyring on ";
    let text = String::from_utf8_lossy(stderr);
    let rest = &text[text.find(MARKER)? + MARKER.len()..];
    let end = rest.find([':', '\n']).unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// Ceph's log lines start with a timestamp, a thread id and a level
/// (`2026-11-25T22:52:16.937+0000 7fc31932a380 -1 monclient: …`); only the message matters here.
fn without_log_prefix(line: &str) -> &str {
    if !looks_like_timestamp(line.as_bytes()) {
        return line;
    }
    let mut rest = line;
    for _ in 0..3 {
        rest = rest.trim_start();
        rest = rest.find(char::is_whitespace).map_or("", |i| &rest[i..]);
    }
    rest.trim()
}

fn looks_like_timestamp(bytes: &[u8]) -> bool {
    bytes.len() > 20
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[10] == b'T'
}

/// A line cut where a Ceph log record starts inside it: `rbd` writes `rbd: export-diff error: `
/// and the reason apart, and librbd's log lines land in between.
fn split_at_log_records(line: &str) -> impl Iterator<Item = &str> {
    let bytes = line.as_bytes();
    let mut starts: Vec<usize> = (1..bytes.len())
        .filter(|&i| line.is_char_boundary(i) && looks_like_timestamp(&bytes[i..]))
        .collect();
    starts.insert(0, 0);
    starts.push(line.len());
    (0..starts.len() - 1).map(move |i| &line[starts[i]..starts[i + 1]])
}

/// The last lines of a child's stderr, joined so the whole error stays on one line.
pub(super) fn stderr_summary(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut lines: Vec<&str> = text
        .split(['\n', '\r'])
        .flat_map(split_at_log_records)
        .map(|l| without_log_prefix(l.trim()))
        .filter(|l| !l.is_empty() && !l.contains("% complete"))
        .collect();
    // librbd's log lines (`librbd::Watcher: 0x55… handle_error: …`) are its internals: what
    // `rbd` itself concluded says the same for people, when it said anything.
    if lines.iter().any(|l| !l.starts_with("librbd::")) {
        lines.retain(|l| !l.starts_with("librbd::"));
    }
    // A line cut short by a log record (`export-diff error:`) goes on with the next one.
    let mut joined: Vec<String> = Vec::new();
    for line in lines {
        match joined.last_mut() {
            Some(last) if last.ends_with(':') => {
                last.push(' ');
                last.push_str(line);
            }
            _ => joined.push(line.to_string()),
        }
    }
    let start = joined.len().saturating_sub(3);
    joined[start..].join(" / ")
}

/// What a failed `rbd` said, restated as the cause an administrator acts on when it is one of
/// the usual ones; `None` leaves the child's own words.
pub(super) fn known_cause(summary: &str, kind: FailureKind) -> Option<String> {
    let quoted_after = |marker: &str| -> Option<String> {
        let rest = &summary[summary.find(marker)? + marker.len()..];
        let end = rest.find(['\'', ':']).unwrap_or(rest.len());
        Some(rest[..end].trim().to_string())
    };
    if summary.contains("couldn't connect to the cluster") {
        let detail: Vec<&str> = summary
            .split(" / ")
            .filter(|part| !part.contains("couldn't connect to the cluster"))
            .collect();
        return Some(if detail.is_empty() {
            "cannot reach the cluster".to_string()
        } else {
            format!("cannot reach the cluster ({})", detail.join(" / "))
        });
    }
    if kind == FailureKind::TimedOut {
        // Which operation it was is in the error's context; rbd's words (dozens of lines
        // when many operations were in flight) go to the debug log.
        return Some("timed out".to_string());
    }
    if kind != FailureKind::NotFound {
        return None;
    }
    if let Some(pool) = quoted_after("error opening pool '") {
        return Some(format!("pool '{pool}' does not exist"));
    }
    if let Some(image) = quoted_after("error opening image ") {
        return Some(format!("image '{image}' does not exist"));
    }
    if summary.contains("error setting snapshot context") {
        return Some("the snapshot does not exist".to_string());
    }
    None
}

/// The cephx user and keyring a command was given (`--id`, `--keyring`); `None` where Ceph's
/// defaults applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Identity {
    user: Option<String>,
    keyring: Option<String>,
}

impl Identity {
    pub(super) fn of<'a>(mut words: impl Iterator<Item = std::borrow::Cow<'a, str>>) -> Identity {
        let mut identity = Identity::default();
        while let Some(word) = words.next() {
            let slot = match &*word {
                "--id" => &mut identity.user,
                "--keyring" => &mut identity.keyring,
                _ => continue,
            };
            *slot = words.next().map(std::borrow::Cow::into_owned);
        }
        identity
    }

    /// `ceph user 'backup'`, saying when the default applied.
    fn user(&self) -> String {
        match &self.user {
            Some(user) => format!("ceph user '{}'", crate::output::escaped(user)),
            None => "ceph user 'admin' (the default)".to_string(),
        }
    }

    /// Why the login failed, for a command whose login the cluster refused.
    pub(super) fn refused(&self, stderr: &[u8]) -> String {
        const SETTINGS: &str = "see `ceph user` and `ceph keyring`";
        if let Some(path) = keyring_missing(stderr) {
            return format!(
                "authentication failed: no keyring for {} at {} ({SETTINGS})",
                self.user(),
                crate::output::escaped(&path)
            );
        }
        let keyring = match &self.keyring {
            Some(keyring) => crate::output::escaped(keyring).into_owned(),
            None => "the keyring the ceph config names".to_string(),
        };
        format!(
            "authentication failed: the cluster refused {} with the key in {keyring} (an \
             unknown user or a wrong key; {SETTINGS})",
            self.user()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceph_log_prefixes_are_dropped() {
        assert_eq!(
            without_log_prefix(
                "2026-11-25T22:52:16.937+0000 7fc31932a380  0 monclient(hunting): authenticate timed out"
            ),
            "monclient(hunting): authenticate timed out"
        );
        assert_eq!(
            without_log_prefix("rbd: error opening image x"),
            "rbd: error opening image x"
        );
    }
}
