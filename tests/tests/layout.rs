//! What the architecture claims about the code's layout: the broker, the Lambda bootstrap,
//! the Lambda handlers, the publisher and the local gateway's library serve any app and name
//! none. Only an app's own crate under `apps/` and the binaries that choose an app (the app's
//! Lambda mains, `broker-local`'s `main.rs`, the tests and their kit, the benchmark) may name
//! it. And the crates depend on each other one way: the functions' crates on the bootstrap,
//! not on each other's; the tests and the benchmarks on the test kit, not on each other.
//!
//! A file's unit tests (from a top-level `#[cfg(test)]` on) are left out: their sample
//! GraphQL documents may use any field names, and they ship in no binary.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_owned()
}

/// The package name of every crate under `apps/`.
fn app_names() -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root().join("apps")).expect("apps/ exists") {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let name = text
            .lines()
            .find_map(|line| {
                let value = line.trim().strip_prefix("name")?.trim_start();
                Some(value.strip_prefix('=')?.trim().trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| panic!("{} has no package name", manifest.display()));
        names.push(name);
    }
    names
}

/// Every `.rs` file under `dir`, and `Cargo.toml` files, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The files that must not name an app.
fn app_agnostic_files() -> Vec<PathBuf> {
    let root = root();
    let mut files = Vec::new();
    for krate in ["broker", "lambda-bootstrap", "graphql-api", "publisher"] {
        files.push(root.join(krate).join("Cargo.toml"));
        sources(&root.join(krate).join("src"), &mut files);
    }
    // The local gateway's library takes any app; its binary picks one by `--app`.
    let mut local = Vec::new();
    sources(&root.join("local-gateway/src"), &mut local);
    files.extend(local.into_iter().filter(|f| !f.ends_with("main.rs")));
    files
}

/// The lines of `text` naming `name` as a whole word, in any case (`boards`, `Boards`,
/// `boards::`), but not as part of a longer word (`dashboards`).
fn lines_naming(text: &str, name: &str) -> Vec<String> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let name = name.to_ascii_lowercase();
    text.lines()
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            lower.match_indices(&name).any(|(at, _)| {
                let before = lower[..at].chars().next_back();
                let after = lower[at + name.len()..].chars().next();
                !before.is_some_and(is_word) && !after.is_some_and(is_word)
            })
        })
        .map(str::to_owned)
        .collect()
}

/// `text` up to its unit tests: the first line that is exactly `#[cfg(test)]`.
fn shipped_code(text: &str) -> &str {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "#[cfg(test)]" {
            break;
        }
        at += line.len();
    }
    &text[..at]
}

#[test]
fn unit_tests_are_cut_off_and_indented_test_items_are_not() {
    let text = "fn a() {}\n    #[cfg(test)]\n    fn b() {}\n#[cfg(test)]\nmod tests {}\n";
    assert_eq!(
        shipped_code(text),
        "fn a() {}\n    #[cfg(test)]\n    fn b() {}\n"
    );
}

#[test]
fn the_word_check_finds_names_and_only_whole_ones() {
    assert_eq!(
        lines_naming("use boards::Boards;\nlet dashboards = 1;", "boards"),
        vec!["use boards::Boards;"]
    );
    assert!(lines_naming("boards-app = 1", "boards").is_empty());
}

#[test]
fn no_app_is_named_outside_its_crate_and_the_binaries_that_choose_it() {
    let apps = app_names();
    assert!(!apps.is_empty(), "apps/ holds at least the example app");
    let files = app_agnostic_files();
    assert!(
        files.iter().any(|f| f.ends_with("broker/src/lib.rs")),
        "the broker's sources are among the files checked"
    );
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let text = shipped_code(&text);
        for app in &apps {
            for line in lines_naming(text, app) {
                found.push(format!(
                    "{}: names {app:?}: {}",
                    file.display(),
                    line.trim()
                ));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The library crates whose modules must form no circle of imports.
const LIBRARY_CRATES: [&str; 4] = ["broker", "graphql-api", "publisher", "local-gateway"];

/// The most lines of shipped code (before the unit tests) one source file of a library
/// crate may hold: past it, a file holds more than one concern and wants a folder.
const MAX_FILE_LINES: usize = 1_000;

/// The module path of a source file under `src`: `src/a/b.rs` and `src/a/b/mod.rs` are
/// `["a", "b"]`; `lib.rs` and `main.rs` are the crate root.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut path: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if path.last().is_some_and(|l| l == "mod") || path == ["lib"] || path == ["main"] {
        path.pop();
    }
    path
}

/// The `crate::`/`super::`/`self::` paths a source text names, each as its segments, with
/// grouped imports (`use crate::{a::B, c::{D, E}}`) spelled out.
fn named_paths(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    // `use` statements, which may span lines and group paths in braces.
    let mut rest = text;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        let statement: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
        if ["crate::", "super::", "self::"]
            .iter()
            .any(|p| statement.starts_with(p))
        {
            expand(&statement, &mut Vec::new(), &mut paths);
        }
    }
    // Paths written out in the code: `crate::metrics::record(..)`.
    for root in ["crate::", "super::"] {
        for (at, _) in text.match_indices(root) {
            let path: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            paths.push(
                path.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    paths
}

/// `text` without its comments (`//` to the end of a line): a doc link is no import.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Spells out one `use` tree into whole paths.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree.find('{') {
        None => {
            let mut path = prefix.clone();
            let tree = tree.split(" as ").next().unwrap_or(tree);
            path.extend(
                tree.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
            out.push(path);
        }
        Some(open) => {
            let head: Vec<String> = tree[..open]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut start = 0;
            let mut parts = Vec::new();
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        parts.push(&inner[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            parts.push(&inner[start..]);
            let len = prefix.len();
            prefix.extend(head);
            for part in parts.into_iter().filter(|p| !p.is_empty()) {
                expand(part, prefix, out);
            }
            prefix.truncate(len);
        }
    }
}

/// The module files of one crate and, for each, the module files it imports from.
fn import_graph(krate: &str) -> Vec<(String, Vec<String>)> {
    let src = root().join(krate).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.retain(|f| !f.components().any(|c| c.as_os_str() == "bin"));
    let modules: Vec<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let name = |m: &[String]| {
        if m.is_empty() {
            "lib".to_owned()
        } else {
            m.join("::")
        }
    };
    // What the crate root re-exports by name (`pub use delivery::{DeliveryReport, ..}`),
    // so that `crate::DeliveryReport` is an import from `delivery`, not from the root.
    let root_text = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let mut reexports = std::collections::HashMap::new();
    for path in named_paths(&root_text.replace("pub use ", "use crate::")) {
        if let [module @ .., item] = &path[1..] {
            reexports.insert(item.clone(), module.to_vec());
        }
    }
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|prefix| modules.contains(prefix))
    };
    let mut graph = Vec::new();
    for (file, module) in files.iter().zip(&modules) {
        let text = std::fs::read_to_string(file).unwrap();
        let is_dir_module = file.ends_with("mod.rs");
        let mut targets = Vec::new();
        for path in named_paths(&without_comments(shipped_code(&text))) {
            let absolute: Vec<String> = match path.first().map(String::as_str) {
                Some("crate") => path[1..].to_vec(),
                Some("super") => {
                    let mut base = module.clone();
                    if !is_dir_module {
                        base.pop();
                    }
                    let mut rest = &path[..];
                    while rest.first().is_some_and(|s| s == "super") {
                        rest = &rest[1..];
                        if rest.first().is_some_and(|s| s == "super") {
                            base.pop();
                        }
                    }
                    base.pop_if(|_| false);
                    base.extend(rest.iter().cloned());
                    base
                }
                Some("self") => {
                    let mut base = module.clone();
                    base.extend(path[1..].iter().cloned());
                    base
                }
                _ => continue,
            };
            let absolute = match absolute.first().and_then(|item| reexports.get(item)) {
                Some(module) if resolve(&absolute[..1]) == Some(Vec::new()) => {
                    let mut path = module.clone();
                    path.extend(absolute.iter().cloned());
                    path
                }
                _ => absolute,
            };
            if let Some(target) = resolve(&absolute)
                && target != *module
                // A module's own submodules, and the crate root, are not imports back up.
                && !target.is_empty()
                && !target.starts_with(module)
            {
                targets.push(name(&target));
            }
        }
        targets.sort();
        targets.dedup();
        graph.push((name(module), targets));
    }
    graph
}

/// The pairs of modules of a graph that import from each other: the tightest circle,
/// where neither can be read or changed without the other.
fn mutual_imports(graph: &[(String, Vec<String>)]) -> Vec<(String, String)> {
    let imports = |from: &str, to: &String| {
        graph
            .iter()
            .any(|(node, edges)| node == from && edges.contains(to))
    };
    let mut pairs = Vec::new();
    for (node, edges) in graph {
        for other in edges {
            if node < other && imports(other, node) {
                pairs.push((node.clone(), other.clone()));
            }
        }
    }
    pairs
}

#[test]
fn the_import_check_spells_out_grouped_and_relative_paths() {
    let text = "use crate::{a::B, c::{d::E, F}};\nuse super::g::H;\nlet x = crate::m::f();";
    let paths = named_paths(text);
    for expected in [
        vec!["crate", "a", "B"],
        vec!["crate", "c", "d", "E"],
        vec!["crate", "c", "F"],
        vec!["super", "g", "H"],
        vec!["crate", "m", "f"],
    ] {
        assert!(
            paths.iter().any(|p| *p == expected),
            "{expected:?} in {paths:?}"
        );
    }
    let graph = vec![
        ("a".to_owned(), vec!["b".to_owned(), "c".to_owned()]),
        ("b".to_owned(), vec!["a".to_owned()]),
        ("c".to_owned(), vec!["d".to_owned()]),
        ("d".to_owned(), vec![]),
    ];
    assert_eq!(
        mutual_imports(&graph),
        vec![("a".to_owned(), "b".to_owned())]
    );
}

#[test]
fn no_two_modules_of_a_library_crate_import_from_each_other() {
    let mut found = Vec::new();
    for krate in LIBRARY_CRATES {
        let graph = import_graph(krate);
        assert!(
            graph.len() > 1 || krate != "broker",
            "the broker's modules are read"
        );
        for (a, b) in mutual_imports(&graph) {
            found.push(format!("{krate}: {a} <-> {b}"));
        }
    }
    assert!(
        found.is_empty(),
        "modules importing from each other:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_broker_crate_root_is_only_its_front_door() {
    let text = std::fs::read_to_string(root().join("broker/src/lib.rs")).unwrap();
    let items: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("//") && !l.starts_with(' ') && !l.starts_with('}'))
        .filter(|l| {
            let l = l
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ");
            [
                "fn ", "struct ", "enum ", "impl", "trait ", "const ", "static ", "type ",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .collect();
    assert!(
        items.is_empty(),
        "broker/src/lib.rs declares modules and re-exports only; found:\n{}",
        items.join("\n")
    );
}

#[test]
fn the_broker_keeps_one_concern_a_room() {
    let src = root().join("broker/src");
    // Where a newcomer finds each concern of the `Broker`.
    for room in [
        "broker.rs",
        "config.rs",
        "publish.rs",
        "delivery/mod.rs",
        "delivery/render.rs",
        "delivery/post.rs",
        "delivery/report.rs",
        "fanout/mod.rs",
        "session/mod.rs",
        "session/subscribe.rs",
        "session/resume.rs",
        "push.rs",
        "unsubscribe.rs",
    ] {
        assert!(src.join(room).is_file(), "broker/src/{room} is missing");
    }
    let mut too_large = Vec::new();
    for krate in LIBRARY_CRATES {
        let mut files = Vec::new();
        sources(&root().join(krate).join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let lines = shipped_code(&text).lines().count();
            if lines > MAX_FILE_LINES {
                too_large.push(format!("{}: {lines} lines", file.display()));
            }
        }
    }
    assert!(
        too_large.is_empty(),
        "files over {MAX_FILE_LINES} lines of shipped code:\n{}",
        too_large.join("\n")
    );
}

/// The names of the packages the manifest in folder `krate` depends on, in any of its
/// dependency tables (`[dependencies]`, `[dev-dependencies]`, ...).
fn dependencies_of(krate: &str) -> Vec<String> {
    let manifest = root().join(krate).join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let mut in_dependencies = false;
    let mut names = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line.trim_matches(['[', ']']).ends_with("dependencies");
        } else if in_dependencies && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.']).next().unwrap_or_default().trim();
            names.push(name.to_owned());
        }
    }
    names
}

#[test]
fn the_dependency_reader_finds_every_table() {
    let names = dependencies_of("bench");
    assert!(names.iter().any(|n| n == "broker"), "{names:?}");
    assert!(names.iter().any(|n| n == "mimalloc"), "{names:?}");
    assert!(dependencies_of("tests").iter().any(|n| n == "serde_norway"));
}

#[test]
fn crates_depend_on_the_bootstrap_and_the_test_kit_not_on_each_other() {
    // (crate folder, packages it must not depend on)
    let forbidden = [
        ("lambda-bootstrap", &["graphql-api", "publisher"][..]),
        ("publisher", &["graphql-api"][..]),
        ("graphql-api", &["publisher"][..]),
        ("testkit", &["broker-tests"][..]),
        ("bench", &["broker-tests"][..]),
    ];
    let mut found = Vec::new();
    for (krate, not) in forbidden {
        for name in dependencies_of(krate) {
            if not.contains(&name.as_str()) {
                found.push(format!("{krate} depends on {name}"));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
    for krate in ["graphql-api", "publisher"] {
        assert!(
            dependencies_of(krate)
                .iter()
                .any(|n| n == "lambda-bootstrap"),
            "{krate} starts its functions with the bootstrap"
        );
    }
}
