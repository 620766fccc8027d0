//! The layering the module map promises, checked on the source: each layer imports only the
//! layers below it. Only what has been untangled is listed; a new import upwards fails here.

use std::fs;
use std::path::{Path, PathBuf};

/// The `.rs` files below `path` (or `path` itself), with their unit tests cut off: a test may
/// use whatever helps it.
fn production_sources(path: &str) -> Vec<(PathBuf, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(path);
    let mut files = vec![];
    let mut todo = vec![path];
    while let Some(path) = todo.pop() {
        if path.is_dir() {
            todo.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            let text = fs::read_to_string(&path).unwrap();
            let production = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            files.push((path, production.to_string()));
        }
    }
    assert!(!files.is_empty());
    files
}

/// Code lines (doc comments may point anywhere) of the files below `path` that mention any of
/// `forbidden`.
fn offending(path: &str, forbidden: &[&str]) -> Vec<String> {
    production_sources(path)
        .iter()
        .flat_map(|(file, text)| {
            text.lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .filter(|line| forbidden.iter().any(|f| line.contains(f)))
                .map(move |line| format!("{}: {}", file.display(), line.trim()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn config_is_below_backup() {
    assert_eq!(
        offending("config", &["crate::backup"]),
        Vec::<String>::new()
    );
}

#[test]
fn the_cluster_is_below_the_folder_and_the_executor() {
    let above = ["crate::folder", "crate::backup", "crate::commands"];
    assert_eq!(offending("cluster", &above), Vec::<String>::new());
}

#[test]
fn the_folder_is_below_the_host_state_and_the_configuration() {
    // The configuration names the folder's types (compression, file group); what reads the
    // configuration and the folders together is in `commands`.
    let above = [
        "crate::state",
        "crate::config",
        "crate::commands",
        "crate::backup",
    ];
    assert_eq!(offending("folder", &above), Vec::<String>::new());
}

#[test]
fn the_spawner_holds_no_ceph_knowledge() {
    // Errno values, rbd's words and Ceph's log format are `cluster::ceph`'s.
    let ceph = [
        "libc::E",
        "couldn't connect",
        "keyring",
        "librbd",
        "Connection timed out",
    ];
    assert_eq!(offending("cluster/process.rs", &ceph), Vec::<String>::new());
}

#[test]
fn the_folder_leaf_imports_nothing_of_the_crate() {
    assert_eq!(
        offending("folder/shared.rs", &["crate::", "super::"]),
        Vec::<String>::new()
    );
    // What made untrusted, chain and read import each other in a circle.
    assert_eq!(
        offending("folder/untrusted.rs", &["folder::chain"]),
        Vec::<String>::new()
    );
}
