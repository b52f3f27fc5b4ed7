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
