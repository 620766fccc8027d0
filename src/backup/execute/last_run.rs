//! The last-run record: a real run leaves its report in each destination it wrote to.

use super::*;

/// Leaves the report, restricted to each destination's images, in every destination a real
/// section used (check mode changes nothing, so it writes nothing either). A destination that
/// cannot take it costs a warning on stderr, never the run.
pub(super) fn write_last_run_records(sections: &[Section], report: &RunReport) {
    let mut written: Vec<&Path> = Vec::new();
    for section in sections.iter().filter(|s| !s.checking()) {
        let job = section.job;
        if written.contains(&job.destination.as_path()) {
            continue;
        }
        // Only a destination whose check passed: one that did not mount (an empty mount point)
        // must stay exactly as it is, or the next run could take it for a used destination.
        if !section.started.load(Ordering::SeqCst) {
            continue;
        }
        written.push(&job.destination);
        let restricted = report.restricted_to(&job.destination_text);
        if let Err(err) = write_last_run(&*job.destination_folder(), &restricted) {
            warn!("{err:#}");
        }
    }
}

/// Writes [`LAST_RUN_FILE`] through the door of the destination's top, replaced whole (in a
/// folder: complete and synced before it takes the final name by rename, so a symlink planted
/// there is replaced, never followed), readable by all (monitoring runs as another user).
pub(super) fn write_last_run(top: &dyn Door, report: &RunReport) -> Result<()> {
    let mut text = crate::output::json(report).context("cannot render the run report")?;
    text.push('\n');
    top.put(LAST_RUN_FILE, text.as_bytes(), Sharing::Everyone)
}
