//! The administrator's commands around a snapshot: what they see (the image's names in their
//! environment, the snapshot not yet there for the pre command and there for the post command),
//! a failing pre command, and a signal between the two.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::*;

/// A hook script in the world's folder that appends what it sees to `log`: its name, the
/// image's names, whether the snapshot exists yet, and `extra` shell lines after that.
fn hook(w: &World, name: &str, extra: &str) -> PathBuf {
    let path = w.tmp.path().join(format!("{name}.sh"));
    let log = w.tmp.path().join("hooks.log");
    let script = format!(
        "#!/bin/sh\n\
         if rbd --conf \"$CEPHBACKUP_CEPH_CONFIG\" snap ls \"$CEPHBACKUP_POOL/$CEPHBACKUP_IMAGE\" \
         | grep -q \"$CEPHBACKUP_SNAPSHOT\"; then seen=yes; else seen=no; fi\n\
         echo \"{name} $CEPHBACKUP_HOOK $CEPHBACKUP_POOL/$CEPHBACKUP_IMAGE@$CEPHBACKUP_SNAPSHOT \
         exists=$seen taken=${{CEPHBACKUP_SNAPSHOT_TAKEN:-}}\" >> '{log}'\n\
         {extra}\n",
        log = log.display()
    );
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn hook_log(w: &World) -> Vec<String> {
    fs::read_to_string(w.tmp.path().join("hooks.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn config(w: &World, images: &str, pre: &Path, post: &Path) -> PathBuf {
    w.config(&format!(
        "images = {images}\nbackup mode = incremental\npre snapshot command = {} 'a b'\n\
         post snapshot command = {}\nhook timeout = 60",
        pre.display(),
        post.display()
    ))
}

#[test]
fn the_hooks_run_around_the_snapshot_with_its_names_and_check_mode_runs_none() {
    let w = World::new();
    w.create_image("db", 4 * MIB, 1);
    let marker = w.tmp.path().join("frozen");
    let pre = hook(&w, "pre", &format!("echo \"$1\" > '{}'", marker.display()));
    let post = hook(&w, "post", &format!("rm '{}'", marker.display()));
    let conf = config(&w, "db", &pre, &post);

    let checked = with_conf(&w, &conf, &["--check"]).success();
    assert!(
        checked.stdout.contains("# pre snapshot command: "),
        "{}",
        checked.stdout
    );
    assert!(
        hook_log(&w).is_empty(),
        "check mode ran a hook: {:?}",
        hook_log(&w)
    );

    let run = w.backup(&conf).success();
    let snap = &w.backup_snapshots("db")[0];
    let spec = format!("{}/db@{snap}", w.pool);
    assert_eq!(
        hook_log(&w),
        [
            format!("pre pre {spec} exists=no taken="),
            format!("post post {spec} exists=yes taken=yes"),
        ],
        "{}",
        run.stderr
    );
    // The pre command got its argument as one word, and the post command thawed.
    assert!(!marker.exists());
    assert!(
        run.stdout.contains("# pre snapshot command: "),
        "{}",
        run.stdout
    );
    assert_eq!(w.files("db").len(), 1);
}

#[test]
fn a_failing_pre_hook_fails_its_image_alone_and_the_post_hook_still_thaws() {
    let w = World::new();
    w.create_image("good", 4 * MIB, 2);
    w.create_image("bad", 4 * MIB, 3);
    let pre = hook(
        &w,
        "pre",
        "[ \"$CEPHBACKUP_IMAGE\" != bad ] || { echo 'cannot freeze' >&2; exit 4; }",
    );
    let post = hook(&w, "post", "");
    let conf = config(&w, "good, bad", &pre, &post);
    let run = w.backup(&conf).code(1);
    assert!(
        run.stderr.contains(&format!(
            "{}/bad: the pre snapshot command failed: cannot freeze ({} exit status 4)",
            w.pool,
            pre.display()
        )),
        "{}",
        run.stderr
    );
    assert!(w.backup_snapshots("bad").is_empty());
    assert!(w.files("bad").is_empty());
    assert_eq!(w.backup_snapshots("good").len(), 1);
    let log = hook_log(&w);
    assert!(
        log.iter()
            .any(|l| l.starts_with("post post") && l.contains("/bad@") && l.ends_with("taken=no")),
        "{log:?}"
    );
}

#[test]
fn sigterm_between_the_hooks_still_runs_the_post_hook() {
    let w = World::new();
    w.create_image("vm", 4 * MIB, 4);
    let pre = hook(&w, "pre", "");
    let post = hook(&w, "post", "");
    let conf = config(&w, "vm", &pre, &post);
    // `rbd snap create` that takes its time, so the signal lands between the two commands.
    let creating = w.tmp.path().join("creating");
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in *' snap create '*) touch '{}'; sleep 3;; esac\nexec '{}' \"$@\"\n",
        creating.display(),
        real_rbd()
    );
    let path = path_with_rbd_script(&w, "slow-snap", &script);
    let child = w.spawn_with_env(&["-c", conf.to_str().unwrap()], &[("PATH", &path)]);
    let pid = child.id();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !creating.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the snapshot was never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(hook_log(&w).len(), 1, "only the pre command ran so far");
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let run = finish_within(child, Duration::from_secs(60));
    assert_eq!(run.code, 143, "{}", run.stderr);
    let log = hook_log(&w);
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[1].starts_with("post post"), "{log:?}");
    // No snapshot outlives the interrupted run.
    assert!(
        w.backup_snapshots("vm").is_empty(),
        "{:?}",
        w.backup_snapshots("vm")
    );
}

/// A hook for groups and single images: appends to `hooks.log` which command it is, the group,
/// the images, the snapshot name and how many of the images have that snapshot yet. The group's
/// pre command fails while `fail-group` exists.
fn group_hook(w: &World) -> PathBuf {
    let path = w.tmp.path().join("group-hook.sh");
    let script = format!(
        "#!/bin/sh\n\
         images=\"${{CEPHBACKUP_IMAGES:-$CEPHBACKUP_IMAGE}}\"\n\
         seen=0\n\
         for image in $images; do\n\
         \x20 if rbd --conf \"$CEPHBACKUP_CEPH_CONFIG\" snap ls \"$CEPHBACKUP_POOL/$image\" \
         | grep -q \"$CEPHBACKUP_SNAPSHOT\"; then seen=$((seen + 1)); fi\n\
         done\n\
         echo \"$CEPHBACKUP_HOOK group=${{CEPHBACKUP_GROUP:-}} images=$(echo $images) \
         snap=$CEPHBACKUP_SNAPSHOT seen=$seen taken=${{CEPHBACKUP_SNAPSHOT_TAKEN:-}}\" >> '{log}'\n\
         if [ -e '{fail}' ] && [ -n \"${{CEPHBACKUP_GROUP:-}}\" ] && [ \"$CEPHBACKUP_HOOK\" = pre ]; \
         then echo 'guest agent not running' >&2; exit 3; fi\n",
        log = w.tmp.path().join("hooks.log").display(),
        fail = w.tmp.path().join("fail-group").display(),
    );
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_group_is_frozen_once_and_its_images_share_one_snapshot_name() {
    let w = World::new();
    for (seed, image) in ["d0", "d1", "solo"].iter().enumerate() {
        w.create_image(image, 4 * MIB, seed as u64 + 1);
    }
    let hook = group_hook(&w);
    let body = |defaults: &str| {
        format!(
            "[DEFAULT]\n{defaults}\n[{pool}]\ndestination directory = {dest}\nceph config = {conf}\n\
             images = d0, solo, d1\nbackup mode = incremental\ngroup vm42 = d0, d1\n\
             pre snapshot command = {hook}\npost snapshot command = {hook}\n",
            pool = w.pool,
            dest = w.dest.display(),
            conf = cluster().conf.display(),
            hook = hook.display(),
        )
    };
    let one_at_a_time = w.write_config(&body(""));
    let checked = with_conf(&w, &one_at_a_time, &["--check"]).success();
    assert_eq!(
        checked.stdout.matches("# pre snapshot command: ").count(),
        2,
        "one for the group, one for solo: {}",
        checked.stdout
    );
    assert!(hook_log(&w).is_empty(), "check mode ran a hook");

    // Two nights: one at a time, then the group's exports two at once.
    let two_at_once = w.write_config(&body("parallel images = 2"));
    for (night, conf) in [&one_at_a_time, &two_at_once].into_iter().enumerate() {
        fs::remove_file(w.tmp.path().join("hooks.log")).ok();
        if night > 0 {
            for (seed, image) in ["d0", "d1", "solo"].iter().enumerate() {
                w.write_data(image, 10 + seed as u64);
            }
            next_second();
        }
        let run = w.backup(conf).success();
        let d0 = w.backup_snapshots("d0");
        assert_eq!(
            d0,
            w.backup_snapshots("d1"),
            "one name for the group's snapshots"
        );
        assert_eq!(d0.len(), night + 1);
        let snap = d0.last().unwrap();
        let log = hook_log(&w);
        let group: Vec<&String> = log.iter().filter(|l| l.contains("group=vm42")).collect();
        assert_eq!(
            group,
            [
                &format!("pre group=vm42 images=d0 d1 snap={snap} seen=0 taken="),
                &format!("post group=vm42 images=d0 d1 snap={snap} seen=2 taken=yes"),
            ],
            "{}",
            run.stderr
        );
        assert_eq!(log.len(), 4, "and one pair for solo: {log:?}");
        assert!(
            log.iter().any(|l| l.starts_with("pre group= images=solo")),
            "{log:?}"
        );
        for image in ["d0", "d1", "solo"] {
            assert_eq!(w.files(image).len(), night + 1, "{image}");
        }
    }
    w.verify(&two_at_once, &["--source"]).success();

    // The group's pre command fails: neither member is snapshotted, both fail, solo goes on,
    // and the post command thaws.
    fs::write(w.tmp.path().join("fail-group"), "").unwrap();
    fs::remove_file(w.tmp.path().join("hooks.log")).unwrap();
    next_second();
    let run = w.backup(&two_at_once).code(1);
    for image in ["d0", "d1"] {
        assert!(
            run.stderr.contains(&format!(
                "{}/{image}: the pre snapshot command failed: guest agent not running",
                w.pool
            )),
            "{}",
            run.stderr
        );
        assert_eq!(w.backup_snapshots(image).len(), 2, "{image}");
    }
    assert_eq!(w.backup_snapshots("solo").len(), 3);
    let log = hook_log(&w);
    assert!(
        log.iter()
            .any(|l| l.starts_with("post group=vm42") && l.ends_with("seen=0 taken=no")),
        "{log:?}"
    );
}
