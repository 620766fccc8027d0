//! A restore as one list of steps: what `--check` prints, and what a real run prints, step by
//! step, as it performs it.

use std::path::Path;

use tracing::info;

use super::Target;
use crate::folder::chain::FolderFile;
use crate::output::{escaped, escaped_path};

/// One thing a restore does. The one list of steps is what `--check` prints and what a real run
/// prints, step by step, as it performs it.
pub(super) struct RestoreStep<'a> {
    pub(super) link: &'a FolderFile,
    /// Which file of the route `link` is, from 1, of how many.
    pub(super) number: (usize, usize),
    /// What is done with the file, for people: `Importing`, `Applying`, `Writing`; none for a
    /// step that reads no file.
    pub(super) verb: Option<&'static str>,
    pub(super) action: RestoreAction,
}

pub(super) enum RestoreAction {
    /// The file's raw content (unpacked on the fly when compressed, checked record by record
    /// when a diff) is streamed into `rbd import` (a full) or `rbd import-diff` (a diff).
    Feed,
    /// `rbd snap create` of the file's snapshot in the new image.
    CreateSnapshot,
    /// The file is written into, or replayed onto, the `--to-file` target by this process.
    Rebuild,
}

/// Into a new image: `rbd import -` of the full, `rbd snap create` of its snapshot (the next
/// diff starts from it), then `rbd import-diff -` of each diff in order.
pub(super) fn image_steps<'a>(route: &[&'a FolderFile]) -> Vec<RestoreStep<'a>> {
    let mut steps = Vec::new();
    for (index, link) in route.iter().enumerate() {
        let number = (index + 1, route.len());
        if link.file.is_full() {
            steps.push(RestoreStep {
                link,
                number,
                verb: Some("Importing"),
                action: RestoreAction::Feed,
            });
            steps.push(RestoreStep {
                link,
                number,
                verb: None,
                action: RestoreAction::CreateSnapshot,
            });
        } else {
            steps.push(RestoreStep {
                link,
                number,
                verb: Some("Applying"),
                action: RestoreAction::Feed,
            });
        }
    }
    steps
}

/// Into a new local file: the full written with holes, then each diff replayed onto it.
pub(super) fn file_steps<'a>(route: &[&'a FolderFile]) -> Vec<RestoreStep<'a>> {
    route
        .iter()
        .enumerate()
        .map(|(index, link)| RestoreStep {
            link,
            number: (index + 1, route.len()),
            verb: Some(if link.file.is_full() {
                "Writing"
            } else {
                "Applying"
            }),
            action: RestoreAction::Rebuild,
        })
        .collect()
}

impl RestoreStep<'_> {
    /// The step for people, one line: what is done with which file (`[2/5]` of the route), and
    /// into what. Never a shell command: none runs (files are unpacked, checked and streamed by
    /// this process); the `rbd` verb named is the one that does run, and `-v` logs its full
    /// command line and duration.
    pub(super) fn describe(&self, folder: &Path, target: &Target) -> String {
        let path = escaped_path(&folder.join(&self.link.name));
        let (number, total) = self.number;
        let verb = self.verb.unwrap_or_default();
        let unpacked = match (self.link.file.encrypted, self.link.file.compressed()) {
            (true, true) => "decrypted, its tar member unpacked, ",
            (true, false) => "decrypted, ",
            (false, true) => "its tar member unpacked, ",
            (false, false) => "",
        };
        match &self.action {
            RestoreAction::Feed if self.link.file.is_full() => format!(
                "[{number}/{total}] {verb} {path} into {target}: {unpacked}streamed to rbd import"
            ),
            RestoreAction::Feed => format!(
                "[{number}/{total}] {verb} {path} to {target}: {unpacked}checked record by \
                 record, streamed to rbd import-diff"
            ),
            RestoreAction::CreateSnapshot => format!(
                "Creating snapshot {}@{} (the next diff starts from it): rbd snap create",
                target,
                escaped(self.link.file.snap.as_str())
            ),
            RestoreAction::Rebuild if self.link.file.is_full() => {
                format!("[{number}/{total}] {verb} {path} into {target}")
            }
            RestoreAction::Rebuild => format!("[{number}/{total}] {verb} {path} to {target}"),
        }
    }

    /// Logs that the step's file is being read, when it reads one.
    pub(super) fn log(&self) {
        if self.verb.is_some() {
            info!(
                "applying {} ({} of {})",
                escaped(&self.link.name),
                self.number.0,
                self.number.1
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::chain::{S0, S1};
    use crate::folder::chain::Layout;
    use crate::test_fixtures::diff_file;

    #[test]
    fn the_steps_say_what_is_done_and_show_no_command() {
        let names = [format!("vm@{S0}.full.tar.gz"), diff_file(S0, S1)];
        let layout = Layout::build("vm", &names);
        let route = layout.route(layout.points()[1]).unwrap();
        let image = Target::Image {
            pool: "rbd".into(),
            name: "new".into(),
        };
        let file = Target::File("/r/vm.raw".into());
        let shown = |steps: Vec<RestoreStep>, target: &Target| -> Vec<String> {
            steps
                .iter()
                .map(|step| step.describe(Path::new("/b/rbd/vm"), target))
                .collect()
        };
        // What is done, said as such: no shell command that never runs.
        let steps = image_steps(&route);
        assert_eq!(
            shown(steps, &image),
            [
                format!(
                    "[1/2] Importing /b/rbd/vm/vm@{S0}.full.tar.gz into rbd/new: its tar member \
                     unpacked, streamed to rbd import"
                ),
                format!(
                    "Creating snapshot rbd/new@{S0} (the next diff starts from it): rbd snap \
                     create"
                ),
                format!(
                    "[2/2] Applying /b/rbd/vm/vm@{S1}.diff_from_{S0} to rbd/new: checked record \
                     by record, streamed to rbd import-diff"
                ),
            ]
        );
        // An encrypted file says it is decrypted too.
        let names = [
            format!("vm@{S0}.full.tar.zst.age"),
            format!("{}.age", diff_file(S0, S1)),
        ];
        let sealed = Layout::build("vm", &names);
        let sealed_route = sealed.route(sealed.points()[1]).unwrap();
        let lines = shown(image_steps(&sealed_route), &image);
        assert!(
            lines[0].ends_with("decrypted, its tar member unpacked, streamed to rbd import"),
            "{lines:?}"
        );
        assert!(
            lines[2].contains("to rbd/new: decrypted, checked record by record"),
            "{lines:?}"
        );
        assert_eq!(
            shown(file_steps(&route), &file),
            [
                format!("[1/2] Writing /b/rbd/vm/vm@{S0}.full.tar.gz into /r/vm.raw"),
                format!("[2/2] Applying /b/rbd/vm/vm@{S1}.diff_from_{S0} to /r/vm.raw"),
            ]
        );
    }
}
