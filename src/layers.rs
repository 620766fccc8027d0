//! The layering the module map promises, checked on the source: each layer imports only the
//! layers below it. Only what has been untangled is listed; a new import upwards fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Files built for unit tests only (declared under `#[cfg(test)]`): the fake cluster applies
/// real diff streams, the fixtures serve every layer.
const TEST_ONLY: [&str; 3] = ["tests.rs", "fake.rs", "test_fixtures.rs"];

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
            && path
                .file_name()
                .is_some_and(|n| !TEST_ONLY.iter().any(|t| n == *t))
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

/// The crate's top-level modules each top-level module's production code names (`crate::x`,
/// `crate::{x, y}`); comments are skipped.
fn module_imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .filter(|name| !["lib", "main", "layers", "test_fixtures"].contains(&name.as_str()))
        .collect();
    let mut imports = BTreeMap::new();
    for module in &modules {
        let path = if src.join(module).is_dir() {
            module.clone()
        } else {
            format!("{module}.rs")
        };
        let mut named = BTreeSet::new();
        for (_, text) in production_sources(&path) {
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (at, _) in line.match_indices("crate::") {
                    if line[..at].ends_with('$') {
                        continue;
                    }
                    let rest = &line[at + "crate::".len()..];
                    let heads: Vec<&str> = match rest.strip_prefix('{') {
                        Some(group) => group.split([',', '}']).collect(),
                        None => vec![rest],
                    };
                    for head in heads {
                        let name: String = head
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if modules.contains(&name) && name != *module {
                            named.insert(name);
                        }
                    }
                }
            }
        }
        imports.insert(module.clone(), named);
    }
    imports
}

#[test]
fn the_top_level_modules_import_each_other_in_no_circle() {
    let imports = module_imports();
    // Depth-first: a module met again while it is still on the path closes a circle.
    fn visit<'a>(
        module: &'a str,
        imports: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|m| *m == module) {
            panic!("import circle: {} -> {module}", path[at..].join(" -> "));
        }
        if !done.insert(module) {
            return;
        }
        path.push(module);
        for next in &imports[module] {
            visit(next, imports, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in imports.keys() {
        visit(module, &imports, &mut Vec::new(), &mut done);
    }
    // The scan sees what it must: the executor names the configuration and the cluster.
    assert!(imports["backup"].contains("config") && imports["backup"].contains("cluster"));
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
