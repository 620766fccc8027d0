//! What Ceph's tools say when they fail, read into a cause: the errno table of `rbd`'s exit
//! statuses, its words for a refused login, the format of Ceph's log lines in its stderr, the
//! usual failures restated for administrators, and the cephx identity a refused login names.
//! [`crate::cluster::rbd`] gives every `rbd` command a [`CephTool`], the
//! [`Interpreter`] through which [`crate::cluster::process`] reads its failures; no other
//! command's failure is read this way.

use std::borrow::Cow;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::Arc;

use super::process::{CommandError, FailureKind, Interpreter};

/// How a Ceph tool's failures read, for the cephx identity it ran as.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CephTool {
    identity: Identity,
}

impl CephTool {
    /// For a command given `--id user` and `--keyring keyring` where they are `Some`.
    pub fn new(user: Option<&str>, keyring: Option<&Path>) -> CephTool {
        CephTool {
            identity: Identity {
                user: user.map(str::to_string),
                keyring: keyring.map(|path| path.to_string_lossy().into_owned()),
            },
        }
    }

    /// The failure of a stand-in for `rbd` (the unit tests' fake cluster, check mode's twin):
    /// `command` as the real one would have been spelled (its `--id` and `--keyring` are read),
    /// told apart exactly like a failure of the real `rbd`.
    pub fn failure(command: impl AsRef<str>, code: i32, stderr: &str) -> CommandError {
        let command = command.as_ref();
        let tool = CephTool {
            identity: Identity::of(command.split(' ').map(Cow::Borrowed)),
        };
        CommandError::exited(command, code, stderr).interpreted_by(Arc::new(tool))
    }
}

impl Interpreter for CephTool {
    fn kind(&self, status: ExitStatus, stderr: &[u8]) -> FailureKind {
        failure_kind(status, stderr)
    }

    fn cause(&self, status: ExitStatus, stderr: &[u8]) -> Option<String> {
        let kind = failure_kind(status, stderr);
        if kind == FailureKind::Unauthenticated {
            return Some(self.identity.refused(stderr));
        }
        known_cause(&stderr_summary(stderr), kind)
    }

    fn summary(&self, stderr: &[u8]) -> String {
        stderr_summary(stderr)
    }

    fn stalled(&self, stderr: &[u8]) -> bool {
        operation_timed_out(stderr)
    }
}

/// What Ceph logs when an operation did not get an answer within its timeout.
const OPERATION_TIMED_OUT: &[u8] = b"(110) Connection timed out";

/// True when `stderr` says an operation timed out.
fn operation_timed_out(stderr: &[u8]) -> bool {
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
fn failure_kind(status: ExitStatus, stderr: &[u8]) -> FailureKind {
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
fn stderr_summary(stderr: &[u8]) -> String {
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
fn known_cause(summary: &str, kind: FailureKind) -> Option<String> {
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
struct Identity {
    user: Option<String>,
    keyring: Option<String>,
}

impl Identity {
    fn of<'a>(mut words: impl Iterator<Item = Cow<'a, str>>) -> Identity {
        let mut identity = Identity::default();
        while let Some(word) = words.next() {
            let slot = match &*word {
                "--id" => &mut identity.user,
                "--keyring" => &mut identity.keyring,
                _ => continue,
            };
            *slot = words.next().map(Cow::into_owned);
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
    fn refused(&self, stderr: &[u8]) -> String {
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
    use std::io::Read;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::cluster::process::CommandLine;

    /// A shell script standing in for a Ceph tool: its failures are read as Ceph's.
    fn sh(script: &str) -> CommandLine {
        CommandLine::new("sh")
            .args(["-c", script])
            .interpreted_by(Arc::new(CephTool::default()))
    }

    #[test]
    fn a_failure_reads_as_its_cause() {
        let err =
            sh("echo progress: 50% complete >&2; echo 'rbd: error opening image x' >&2; exit 2")
                .output()
                .unwrap_err();
        // The cause first, without the command line; exit status 2 is ENOENT.
        assert_eq!(err.to_string(), "image 'x' does not exist");
        assert_eq!(err.kind(), FailureKind::NotFound);
    }

    #[test]
    fn usual_rbd_failures_are_restated_as_their_cause() {
        for (code, stderr, cause) in [
            (
                2,
                "rbd: error opening pool 'rbd': (2) No such file or directory",
                "pool 'rbd' does not exist",
            ),
            (
                2,
                "rbd: error opening image vm: (2) No such file or directory",
                "image 'vm' does not exist",
            ),
            (
                110,
                "2026-11-25T22:52:16.937+0000 7fc3 0 monclient(hunting): authenticate timed out after 3\n\
                 rbd: couldn't connect to the cluster!",
                "cannot reach the cluster (monclient(hunting): authenticate timed out after 3)",
            ),
            (
                2,
                "rbd: error setting snapshot context: (2) No such file or directory",
                "the snapshot does not exist",
            ),
            (1, "rbd: something new", "something new (rbd exit status 1)"),
        ] {
            let err = CephTool::failure("rbd --conf /c snap ls rbd/vm", code, stderr);
            assert_eq!(err.to_string(), cause, "{stderr}");
        }
    }

    #[test]
    fn a_refused_login_names_the_user_and_keyring_settings() {
        let settings = "see `ceph user` and `ceph keyring`";
        for (command, code, stderr, cause) in [
            (
                "rbd --conf /c --id nobody --keyring /k snap ls p/i",
                13,
                "rbd: couldn't connect to the cluster!\n\
                 rbd: listing images failed: (13) Permission denied\n",
                format!(
                    "authentication failed: the cluster refused ceph user 'nobody' with the key \
                     in /k (an unknown user or a wrong key; {settings})"
                ),
            ),
            (
                // A user the default keyring has no key for: EPERM.
                "rbd --conf /c --id nobody snap create p/i@s",
                1,
                "rbd: couldn't connect to the cluster!\n",
                format!(
                    "authentication failed: the cluster refused ceph user 'nobody' with the key \
                     in the keyring the ceph config names (an unknown user or a wrong key; \
                     {settings})"
                ),
            ),
            (
                "rbd --conf /c export p/i@s -",
                13,
                "rbd: couldn't connect to the cluster!\n",
                format!(
                    "authentication failed: the cluster refused ceph user 'admin' (the default) \
                     with the key in the keyring the ceph config names (an unknown user or a \
                     wrong key; {settings})"
                ),
            ),
            (
                // No keyring: ENOENT, which must not read as "no such snapshot".
                "rbd --conf /c --id backup snap rm p/i@s",
                2,
                "2026-12-03T02:14:54.057+0000 7fb1 -1 auth: unable to find a keyring on \
                 /etc/ceph/ceph.client.backup.keyring: (2) No such file or directory\n\
                 rbd: couldn't connect to the cluster!\n",
                format!(
                    "authentication failed: no keyring for ceph user 'backup' at \
                     /etc/ceph/ceph.client.backup.keyring ({settings})"
                ),
            ),
        ] {
            let err = CephTool::failure(command, code, stderr);
            assert_eq!(err.kind(), FailureKind::Unauthenticated, "{stderr}");
            assert_eq!(err.to_string(), cause);
        }
        // A timeout while logging in stays a timeout, and any other failure to connect is
        // nothing more specific.
        let err = CephTool::failure("rbd ls p", 110, "rbd: couldn't connect to the cluster!\n");
        assert_eq!(err.kind(), FailureKind::TimedOut);
        let err = CephTool::failure("rbd ls p", 2, "rbd: couldn't connect to the cluster!\n");
        assert_eq!(err.kind(), FailureKind::Other);
    }

    #[test]
    fn librbd_internals_are_left_out_of_the_message() {
        let stderr = "2026-12-03T02:31:55.341+0000 7fc8 -1 librbd::Watcher: 0x7f handle_error: \
                      handle=9, err=-107\nrbd: failed to remove snapshot: (5) Input/output error\n\
                      2026-12-03T02:31:55.341+0000 7fc8 -1 librbd::ImageWatcher: 0x7f image \
                      watch failed: 9, (107) Transport endpoint is not connected\n";
        let err = CephTool::failure("rbd snap rm p/i@s", 5, stderr);
        assert_eq!(
            err.to_string(),
            "failed to remove snapshot: (5) Input/output error (rbd exit status 5)"
        );
        // As rbd writes it when librbd logs between its words and the reason.
        let stderr = "rbd: export-diff error: 2026-12-03T02:31:55.341+0000 7fc8 -1 \
                      librbd::io::ImageRequest: finish: C_AssembleSnapshotDeltas: list snaps \
                      failed: (5) Input/output error\n(5) Input/output error\n";
        let err = CephTool::failure("rbd export-diff p/i@s -", 5, stderr);
        assert_eq!(
            err.to_string(),
            "export-diff error: (5) Input/output error (rbd exit status 5)"
        );
    }

    #[test]
    fn a_stream_is_stopped_once_an_operation_timed_out() {
        let started = Instant::now();
        let mut reader = sh(
            "echo data; echo 'librbd::io::ObjectRequest: x: (110) Connection \
                             timed out' >&2; exec sleep 30",
        )
        .stop_on_timeout(true)
        .spawn_reader()
        .unwrap();
        let mut out = Vec::new();
        let io_err = reader.read_to_end(&mut out).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(20), "not stopped");
        assert_eq!(out, b"data\n");
        let err = CommandError::find(&anyhow::Error::new(io_err)).map(CommandError::kind);
        assert_eq!(err, Some(FailureKind::TimedOut));
        // Without the option the child runs to its own end.
        let out = sh("echo '(110) Connection timed out' >&2; echo done")
            .output()
            .unwrap();
        assert_eq!(out, b"done\n");
    }

    #[test]
    fn exit_statuses_are_typed() {
        for (code, kind) in [
            (2, FailureKind::NotFound),
            (17, FailureKind::AlreadyExists),
            (16, FailureKind::Busy),
            (110, FailureKind::TimedOut),
            (13, FailureKind::PermissionDenied),
            (1, FailureKind::Other),
        ] {
            let err = sh(&format!("exit {code}")).run().unwrap_err();
            assert_eq!(err.kind(), kind, "exit {code}");
        }
        let mut reader = sh("echo x; exit 17").spawn_reader().unwrap();
        let io_err = reader.read_to_end(&mut Vec::new()).unwrap_err();
        let err = anyhow::Error::new(io_err).context("cannot write x");
        assert_eq!(
            CommandError::find(&err).map(CommandError::kind),
            Some(FailureKind::AlreadyExists)
        );
        assert!(CommandError::find(&anyhow::anyhow!("plain")).is_none());
        let made = CephTool::failure("rbd snap rm p/i@s", 16, "rbd: no\n");
        assert_eq!(made.kind(), FailureKind::Busy);
        assert_eq!(made.to_string(), "no (rbd exit status 16)");
        // A timeout is said in two words whatever rbd printed; the context says of what.
        let made = CephTool::failure(
            "rbd snap rm p/i@s",
            110,
            "2026-12-03T02:33:21.002+0000 7f27 -1 librbd::ImageState: 0x55 failed to open \
             image: (110) Connection timed out\nrbd: error opening image big: (110) Connection \
             timed out\n",
        );
        assert_eq!(made.kind(), FailureKind::TimedOut);
        assert_eq!(made.to_string(), "timed out");
    }

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
