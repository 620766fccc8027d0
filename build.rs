//! Build script: records the git revision the binary is built from, for `--version` and the
//! `version` field of every JSON document (`CEPHBACKUP_VERSION`, read by `report::version`).
//!
//! Inside a git checkout the version is `<package version> (git <short revision>)`. Outside one
//! (a source tarball, `cargo install` from the registry) or without `git` it is the package
//! version alone, unless the packager names the revision in `CEPHBACKUP_GIT_REVISION`. Nothing here
//! can fail the build.

// The tool's own rule (clippy.toml) keeps process spawning in src/cluster/process.rs; a build
// script is not the tool and has no other way to ask git.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CEPHBACKUP_GIT_REVISION");
    let version = env!("CARGO_PKG_VERSION");
    let revision = std::env::var("CEPHBACKUP_GIT_REVISION")
        .ok()
        .filter(|revision| !revision.trim().is_empty())
        .map(|revision| revision.trim().to_string())
        .or_else(git_revision);
    let full = match revision {
        Some(revision) => format!("{version} (git {revision})"),
        None => version.to_string(),
    };
    println!("cargo:rustc-env=CEPHBACKUP_VERSION={full}");
}

/// The short revision of HEAD, watching the files that change when HEAD moves so that a commit
/// rebuilds with the new revision; `None` outside a git checkout or without `git`.
fn git_revision() -> Option<String> {
    let revision = git(&["rev-parse", "--short", "HEAD"])?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git_dir = root.join(git(&["rev-parse", "--git-dir"])?);
    let common_dir = git(&["rev-parse", "--git-common-dir"])
        .map_or_else(|| git_dir.clone(), |dir| root.join(dir));
    let head = git_dir.join("HEAD");
    watch(&head);
    // HEAD's reflog grows with every commit and checkout, even when the branch's ref is packed.
    watch(&git_dir.join("logs").join("HEAD"));
    if let Ok(text) = std::fs::read_to_string(&head) {
        if let Some(reference) = text.trim().strip_prefix("ref: ") {
            watch(&common_dir.join(reference));
            watch(&common_dir.join("packed-refs"));
        }
    }
    Some(revision)
}

/// Reruns the build script when `path` changes; only for paths that exist, since cargo reruns
/// the script on every build for a path that does not.
fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// `git ARGS` in the package's folder: its trimmed output when it succeeds.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}
