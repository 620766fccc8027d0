//! Which images a run covers, and how one failing image affects the others.

use std::fs;
use std::path::Path;

use crate::harness::*;

#[test]
fn wildcard_covers_every_image_of_the_pool_including_names_with_spaces() {
    let w = World::new();
    w.create_image("alpha", 8 * MIB, 80);
    w.create_image("my disk", 8 * MIB, 81);
    rbd(&["snap", "create", &format!("{}@user-snap", w.spec("alpha"))]);
    let conf = w.config("images = *\nbackup mode = incremental");
    let run = w.backup(&conf).success();
    assert!(
        run.stdout.contains(&format!("\t{}/alpha\n", w.pool)),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&format!("\t{}/my disk\n", w.pool)));
    for image in ["alpha", "my disk"] {
        let snaps = w.backup_snapshots(image);
        assert_eq!(snaps.len(), 1);
        assert_eq!(w.files(image), [format!("{image}@{}.full", snaps[0])]);
    }
    assert_eq!(w.snapshots("alpha")[0], "user-snap");
    restore_by_hand(
        &w,
        "my disk",
        &[&format!(
            "my disk@{}.full",
            w.backup_snapshots("my disk")[0]
        )],
        "restored disk",
    );
}

#[test]
fn a_missing_image_fails_alone_and_the_run_exits_non_zero() {
    let w = World::new();
    w.create_image("good1", 8 * MIB, 90);
    w.create_image("good2", 8 * MIB, 91);
    let conf = w.config("images = good1, nosuch ,good2\nbackup mode = incremental");
    let run = w.backup(&conf).code(1);
    assert_eq!(w.files("good1").len(), 1);
    assert_eq!(w.files("good2").len(), 1);
    assert!(w.files("nosuch").is_empty());
    let error_line = run.first_error();
    assert_eq!(
        error_line,
        format!(
            "error: {}/nosuch: cannot list snapshots: image 'nosuch' does not exist",
            w.pool
        )
    );
    assert!(
        run.stdout
            .contains("Summary: 2 image(s) backed up, 1 failed"),
        "{}",
        run.stdout
    );
}

#[test]
fn two_pools_in_one_file_run_in_file_order_and_a_missing_pool_does_not_stop_the_other() {
    let w1 = World::new();
    let w2 = World::new();
    w1.create_image("x", 8 * MIB, 95);
    w2.create_image("y", 8 * MIB, 96);
    let dest = w1.dest.display().to_string();
    let conf = w1.write_config(&format!(
        "[DEFAULT]\ndestination directory = {dest}\nceph config = {}\nbackup mode = full\n\n\
         [{}]\nimages = y\n\n[nosuchpool]\nimages = *\n\n[{}]\nimages = x\n",
        cluster().conf.display(),
        w2.pool,
        w1.pool
    ));
    let run = w1.backup(&conf).code(1);
    let order: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("Starting backup for pool"))
        .collect();
    assert_eq!(
        order,
        [
            format!("Starting backup for pool {}", w2.pool),
            "Starting backup for pool nosuchpool".to_string(),
            format!("Starting backup for pool {}", w1.pool)
        ]
    );
    assert_eq!(w1.files("x").len(), 1);
    w1.assert_every_file_has_a_checksum("x");
    let y_files: Vec<String> = std::fs::read_dir(w1.dest.join(&w2.pool).join("y"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != IMAGE_RECORD)
        .collect();
    assert_eq!(y_files.len(), 2, "the backup and its checksum: {y_files:?}");
    assert!(
        run.stderr.contains(
            "error: pool nosuchpool: cannot list the images of pool nosuchpool: pool 'nosuchpool' \
             does not exist"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn exclude_leaves_images_out_of_a_wildcard_and_a_vanished_image_is_named_once_quiesce_skipped() {
    let w = World::new();
    for (seed, image) in ["vm1", "vm2", "scratch-a", "scratch-b"].iter().enumerate() {
        w.create_image(image, 4 * MIB, 120 + seed as u64);
    }
    // `quiesce = no` reaches rbd, which takes it: no client is asked to quiesce.
    let conf = w.config("images = *\nexclude = scratch-*\nbackup mode = incremental\nquiesce = no");
    let run = w.backup(&conf).success();
    assert!(
        run.stdout.contains(" snap create --skip-quiesce "),
        "{}",
        run.stdout
    );
    for image in ["vm1", "vm2"] {
        assert_eq!(w.backup_snapshots(image).len(), 1, "{image}");
        assert!(run.stdout.contains(&format!("\t{}/{image}\n", w.pool)));
    }
    for image in ["scratch-a", "scratch-b"] {
        assert!(w.backup_snapshots(image).is_empty(), "{image}");
        assert!(!w.image_dir(image).exists(), "{image}");
        assert!(!run.stdout.contains(image), "{}", run.stdout);
    }
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);

    // vm2 is removed from the pool: the next run says so once, and keeps its backups.
    rbd(&["snap", "purge", &w.spec("vm2")]);
    rbd(&["rm", &w.spec("vm2")]);
    next_second();
    let run = w.backup(&conf).success();
    let warnings: Vec<&str> = run.stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(
        warnings[0].contains(&format!(
            "{}: vm2 backed up before, no longer in the pool",
            w.pool
        )),
        "{}",
        run.stderr
    );
    assert_eq!(w.files("vm2").len(), 1);
    assert_eq!(w.files("vm1").len(), 2);
}

#[test]
fn an_image_in_a_namespace_backs_up_and_restores_beside_same_named_images_outside_it() {
    let w = World::new();
    rbd(&["namespace", "create", &format!("{}/tenant", w.pool)]);
    // `vm` twice (outside and inside the namespace), and an image named like the namespace.
    w.create_image("vm", 4 * MIB, 1);
    w.create_image("tenant/vm", 4 * MIB, 2);
    w.create_image("tenant", 4 * MIB, 3);
    let conf = w.write_config(&format!(
        "[DEFAULT]\ndestination directory = {dest}\nceph config = {conf}\n\
         backup mode = incremental\n[{pool}]\nimages = *\n[{pool}/tenant]\nimages = *\n",
        pool = w.pool,
        dest = w.dest.display(),
        conf = cluster().conf.display(),
    ));
    for night in 0..2u64 {
        if night > 0 {
            for (seed, image) in ["vm", "tenant/vm", "tenant"].iter().enumerate() {
                w.write_data(image, 10 + seed as u64);
            }
            next_second();
        }
        let run = w.backup(&conf).success();
        assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
    }
    // The original's layout outside the namespace; the namespace's images under `@tenant`.
    let pool_dir = w.dest.join(&w.pool);
    let folder_files = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| !name.starts_with('.') && !name.ends_with(".sha256"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(folder_files(&pool_dir), ["@tenant", "tenant", "vm"]);
    assert_eq!(folder_files(&pool_dir.join("@tenant")), ["vm"]);
    for dir in ["vm", "tenant", "@tenant/vm"] {
        let files = folder_files(&pool_dir.join(dir));
        assert_eq!(files.len(), 2, "{dir}: {files:?}");
    }
    for image in ["vm", "tenant/vm", "tenant"] {
        assert_eq!(w.backup_snapshots(image).len(), 2, "{image}");
    }
    // Each chain restores its own image's bytes, bit for bit.
    w.verify(&conf, &["--source"]).success();
    let listing = w.list_json(&conf, &[], 0);
    let listed: Vec<String> = listing
        .images()
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["pool"].as_str().unwrap(),
                i["image"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            format!("{}:tenant", w.pool),
            format!("{}:vm", w.pool),
            format!("{}/tenant:vm", w.pool),
        ]
    );
    let target = format!("{}/tenant/restored", w.pool);
    let restored = w
        .cephbackup(&[
            "-c",
            conf.to_str().unwrap(),
            "restore",
            "--pool",
            &format!("{}/tenant", w.pool),
            "--image",
            "vm",
            "--to",
            &target,
        ])
        .success();
    let newest = w.backup_snapshots("tenant/vm").pop().unwrap();
    assert!(
        same_bytes(
            &w.export("tenant/restored", None),
            &w.export("tenant/vm", Some(&newest))
        ),
        "{}",
        restored.stderr
    );
    let outside = w.backup_snapshots("vm").pop().unwrap();
    assert!(!same_bytes(
        &w.export("vm", Some(&outside)),
        &w.export("tenant/restored", None)
    ));
}

#[test]
fn a_namespace_the_pool_lacks_is_one_line_and_writes_nothing() {
    let w = World::new();
    w.create_image("vm", 4 * MIB, 1);
    // A namespace the pool lacks is one line naming it; nothing else is touched.
    for images in ["*", "vm"] {
        let missing = w.write_config(&format!(
            "[{pool}/nosuch]\ndestination directory = {dest}\nceph config = {conf}\n\
             backup mode = incremental\nimages = {images}\n",
            pool = w.pool,
            dest = w.dest.display(),
            conf = cluster().conf.display(),
        ));
        let run = w.backup(&missing).code(1);
        let errors: Vec<&str> = run.stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{}", run.stderr);
        assert!(
            errors[0].contains(&format!("{}/nosuch", w.pool)),
            "{}",
            run.stderr
        );
        assert!(errors[0].contains("namespace"), "{}", run.stderr);
    }
    assert!(!w.dest.join(&w.pool).join("@nosuch").exists());
}
