//! Shows what incremental mode does, run after run, for a given window: which files are written
//! and which files and snapshots are removed. It drives the real planner with simulated time, so
//! an administrator can see the effect of `window size` / `window unit` before changing them.
//!
//! cargo run --features test-support --example window --
//!     [SIZE] [UNIT] [RUNS] [HOURS_BETWEEN_RUNS] [KEEP_MINIMUM]
//! e.g. cargo run --features test-support --example window -- 7 days 10 24
//! or, runs three days apart with a 2-day window that must keep 3 points:
//! cargo run --features test-support --example window -- 2 days 6 72 3

use std::collections::BTreeSet;

use chrono::{Duration, TimeZone, Utc};

use cephbackup::test_support::{
    plan_image, BackupMode, Compression, FolderEntry, Found, ImageRecord, KeepRules, Settings,
    Snapshot, Step, Window, WindowUnit,
};

fn unit(text: &str) -> WindowUnit {
    match text.trim_end_matches('s') {
        "minute" => WindowUnit::Minutes,
        "hour" => WindowUnit::Hours,
        "day" => WindowUnit::Days,
        "week" => WindowUnit::Weeks,
        "month" => WindowUnit::Months,
        other => panic!("unknown unit {other:?}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.to_string());
    let window = Window {
        size: arg(0, "7").parse().expect("SIZE is a whole number"),
        unit: unit(&arg(1, "days")),
    };
    let runs: i64 = arg(2, "10").parse().expect("RUNS is a whole number");
    let every: i64 = arg(3, "24")
        .parse()
        .expect("HOURS_BETWEEN_RUNS is a whole number");
    let keep_minimum: u32 = arg(4, "1").parse().expect("KEEP_MINIMUM is a whole number");
    let settings = Settings {
        mode: BackupMode::Incremental,
        window,
        compress: Compression::None,
        keep: KeepRules::default(),
        keep_minimum: keep_minimum.max(1),
        slide_from_cluster: false,
        encrypt: false,
    };
    println!(
        "incremental backups every {every} h with a window of {window}, keep minimum = \
         {keep_minimum}\n"
    );

    let start = Utc.with_ymd_and_hms(2026, 1, 1, 2, 0, 0).unwrap();
    let mut snapshots: Vec<Snapshot> = Vec::new();
    let mut files: BTreeSet<String> = BTreeSet::new();
    let mut record = ImageRecord::default();
    for run in 0..runs {
        // A few seconds of jitter, as with cron: it decides whether the window has just passed.
        let now = start + Duration::hours(run * every) + Duration::seconds(run % 3);
        let listed: Vec<FolderEntry> = files.iter().map(|f| FolderEntry::file(f, 1)).collect();
        let found = Found {
            image: "vm",
            snapshots: &snapshots,
            entries: &listed,
            record: &record,
        };
        let plan = plan_image(&settings, &found, now).expect("a plan");
        println!("run {} at {now}:", run + 1);
        for step in &plan.steps {
            match step {
                Step::CreateSnapshot { snap, .. } => snapshots.push(Snapshot {
                    id: snapshots.last().map_or(1, |s| s.id + 1),
                    name: snap.to_string(),
                }),
                Step::Export { file, reason } => {
                    println!("  write  {:60} {reason}", file.file_name("vm"));
                    files.insert(file.file_name("vm"));
                    record.file_completed(&file.snap, &file.file_name("vm"));
                }
                Step::SlideBase {
                    file, from, reason, ..
                } => {
                    println!("  build  {:60} {reason}", file.file_name("vm"));
                    files.remove(from);
                    files.insert(file.file_name("vm"));
                    record.file_completed(&file.snap, &file.file_name("vm"));
                }
                Step::RemoveFile { name, reason } => {
                    println!("  remove {name:60} {reason}");
                    files.remove(name);
                }
                Step::RemoveSnapshot { snap, reason } => {
                    println!("  drop   snapshot {snap:51} {reason}");
                    snapshots.retain(|s| s.name != snap.as_str());
                }
                other => println!("  {other:?}"),
            }
        }
        println!(
            "  now: {} file(s), {} snapshot(s)\n",
            files.len(),
            snapshots.len()
        );
    }
}
