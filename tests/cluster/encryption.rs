//! `encrypt to`: backups written as age files for a public key. The backup host proves them by
//! checksum without the private key; `restore` and `verify` read them in clear with
//! `--identity`, and the stock tools (`age -d`, `tar`, `rbd import-diff`) restore them too.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

/// A new key pair: the public key, and the identity file (0600) holding the private key.
fn key_pair(w: &World, name: &str) -> (String, PathBuf) {
    let identity = age::x25519::Identity::generate();
    let secret = age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_string();
    let path = w.tmp.path().join(name);
    fs::write(&path, format!("# {name}\n{secret}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    (identity.to_public().to_string(), path)
}

/// Restores `chain` (oldest first) of `image`, files in `dir`, into the new image `target` with
/// the stock tools only: `age -d`, `tar` (for archives) and `rbd import`/`import-diff`, each snapshot checked
/// against the source.
pub fn restore_with_stock_tools(
    w: &World,
    (image, dir): (&str, &Path),
    chain: &[String],
    key: &Path,
    target: &str,
) {
    let target_spec = w.spec(target);
    for (i, name) in chain.iter().enumerate() {
        let path = dir.join(name);
        let clear = name.strip_suffix(".age").unwrap();
        let unpack = match clear.rsplit_once(".tar.") {
            Some((_, "zst")) => "| tar --zstd -xO",
            Some((_, "gz")) => "| tar -xzO",
            _ => "",
        };
        let snap = clear.split_once('@').unwrap().1.split('.').next().unwrap();
        let rbd_step = if i == 0 {
            format!("rbd import - {target_spec} && rbd snap create {target_spec}@{snap}")
        } else {
            format!("rbd import-diff - {target_spec}")
        };
        let script = format!(
            "set -o pipefail; age -d -i '{}' '{}' {unpack} | {}",
            key.display(),
            path.display(),
            rbd_step
        );
        let status = Command::new("bash")
            .args(["-c", &script])
            .env("CEPH_CONF", &cluster().conf)
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
        assert!(
            same_bytes(&w.export(target, Some(snap)), &w.export(image, Some(snap))),
            "{target}@{snap} differs from {image}@{snap}"
        );
    }
}

#[test]
fn an_encrypted_chain_restores_with_its_key_and_is_proven_without_it() {
    for compress in ["zstd", "yes", "no"] {
        let w = World::new();
        let (public, key) = key_pair(&w, "backup.key");
        w.create_image("vm", 24 * MIB, 900);
        let conf = w.config(&format!(
            "images = vm\nbackup mode = incremental\ncompress = {compress}\nencrypt to = {public}"
        ));
        w.backup(&conf).success();
        w.write_data("vm", 901);
        next_second();
        w.backup(&conf).success();
        let files = w.files("vm");
        assert_eq!(files.len(), 2, "{files:?}");
        let suffix = match compress {
            "zstd" => ".tar.zst.age",
            "yes" => ".tar.gz.age",
            _ => ".age",
        };
        assert!(files.iter().all(|f| f.ends_with(suffix)), "{files:?}");
        for file in &files {
            let head = fs::read(w.image_dir("vm").join(file)).unwrap();
            assert!(head.starts_with(b"age-encryption.org/v1\n"), "{file}");
        }
        // The checksums are of the stored bytes: sha256sum checks them without any key.
        w.assert_checksums("vm");

        let proven = w.verify(&conf, &[]).success();
        assert!(
            proven.stdout.contains(
                "2 encrypted file(s) proven by checksum and age header only (--identity FILE reads \
                 their contents)"
            ),
            "{}",
            proven.stdout
        );
        let key_arg = key.to_str().unwrap();
        let read = w.verify(&conf, &["--identity", key_arg]).success();
        assert!(
            !read.stdout.contains("encrypted file(s)"),
            "{}",
            read.stdout
        );

        let newest = w.backup_snapshots("vm").pop().unwrap();
        let target = w.tmp.path().join("vm.raw");
        let refused = w.restore(&conf, "vm").into_file(&target).run().code(1);
        assert!(
            refused.stderr.contains("--identity FILE"),
            "{}",
            refused.stderr
        );
        assert!(!target.exists());
        w.restore(&conf, "vm")
            .into_file(&target)
            .arg("--identity")
            .arg(key_arg)
            .run()
            .success();
        assert!(same_bytes(
            &fs::read(&target).unwrap(),
            &w.export("vm", Some(&newest))
        ));
        let mut chain = files.clone();
        chain.sort_by_key(|f| !f.contains(".full"));
        restore_with_stock_tools(
            &w,
            ("vm", &w.image_dir("vm")),
            &chain,
            &key,
            &format!("vm-stock-{compress}"),
        );
        restore_with_the_printed_commands(&w, &conf, &key, &newest);
    }
}

/// `restore --check --identity KEY` prints stock commands that decrypt the chain with `age -d`
/// and that key; run with `sh`, they rebuild `newest`.
fn restore_with_the_printed_commands(w: &World, conf: &Path, key: &Path, newest: &str) {
    let script = w
        .restore(conf, "vm")
        .into_image("vm-script")
        .arg("--check")
        .arg("--identity")
        .arg(key.to_str().unwrap())
        .run()
        .success()
        .stdout;
    assert!(
        script.contains(&format!("age -d -i {} ", key.display())),
        "{script}"
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(same_bytes(
        &w.export("vm-script", None),
        &w.export("vm", Some(newest))
    ));
}

#[test]
fn a_wrong_key_or_a_changed_byte_is_named_and_nothing_is_restored() {
    let w = World::new();
    let (public, key) = key_pair(&w, "backup.key");
    let (_, other) = key_pair(&w, "other.key");
    w.create_image("vm", 8 * MIB, 910);
    let conf = w.config(&format!(
        "images = vm\nbackup mode = incremental\ncompress = zstd\nencrypt to = {public}"
    ));
    w.backup(&conf).success();
    let file = w.files("vm").pop().unwrap();
    let target = w.tmp.path().join("vm.raw");
    let wrong = w
        .restore(&conf, "vm")
        .into_file(&target)
        .arg("--identity")
        .arg(other.to_str().unwrap())
        .run()
        .code(1);
    assert!(wrong.stderr.contains(&file), "{}", wrong.stderr);
    assert!(!target.exists());

    // One byte of the payload changed: the checksum says so without the key, age with it.
    let path = w.image_dir("vm").join(&file);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let run = w.verify(&conf, &[]).code(1);
    assert!(run.stdout.contains(&file), "{}", run.stdout);
    let run = w
        .verify(&conf, &["--identity", key.to_str().unwrap()])
        .code(1);
    assert!(run.stdout.contains(&file), "{}", run.stdout);
    w.restore(&conf, "vm")
        .into_file(&target)
        .arg("--identity")
        .arg(key.to_str().unwrap())
        .run()
        .code(1);
    assert!(!target.exists());

    // An identity file others may read is refused, naming the flag.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let run = w
        .verify(&conf, &["--identity", key.to_str().unwrap()])
        .code(1);
    assert!(
        run.stderr.contains("--identity: cannot read"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_encrypting_section_slides_by_exporting_and_a_bad_key_is_a_config_error() {
    let w = World::new();
    let (public, key) = key_pair(&w, "backup.key");
    w.create_image("vm", 8 * MIB, 920);
    // A window of 0: every run slides to a new base.
    let conf = w.config(&format!(
        "images = vm\nbackup mode = incremental\ncompress = zstd\nwindow size = 0\n\
         encrypt to = {public}"
    ));
    w.backup(&conf).success();
    w.write_data("vm", 921);
    next_second();
    let run = w.backup(&conf).success();
    // The host cannot read the old base: the new one is exported, not built in the folder.
    assert!(!run.stdout.contains("Building image"), "{}", run.stdout);
    let files = w.files("vm");
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with(".full.tar.zst.age"), "{files:?}");
    let target = w.tmp.path().join("vm.raw");
    w.restore(&conf, "vm")
        .into_file(&target)
        .arg("--identity")
        .arg(key.to_str().unwrap())
        .run()
        .success();
    let newest = w.backup_snapshots("vm").pop().unwrap();
    assert!(same_bytes(
        &fs::read(&target).unwrap(),
        &w.export("vm", Some(&newest))
    ));

    let bad = w.config("images = vm\nbackup mode = incremental\nencrypt to = age1nope");
    let run = w.backup(&bad).code(2);
    assert!(
        run.stderr
            .contains("encrypt to: \"age1nope\" is not an age X25519 public key"),
        "{}",
        run.stderr
    );
}
