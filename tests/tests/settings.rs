//! The environment variables as declared in `broker::settings` are the ones the README
//! documents and the SAM template sets: the README's configuration table has one row per
//! declared variable, with its place and default; the template sets every variable the Lambda
//! functions read, except those declared as left to their default (each with its reason),
//! and nothing undeclared.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use broker::App;
use broker::settings::{self, Setting, Template};
use serde_norway::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_owned()
}

/// The rows of the README's configuration table: variable → (where, default).
fn readme_rows() -> BTreeMap<String, (String, String)> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("the README has a Configuration section");
    let mut lines = section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'));
    let header = lines.next().expect("the section has a table");
    assert_eq!(header, "| variable | where | meaning | default |");
    let mut rows = BTreeMap::new();
    for line in lines.skip(1) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        let [variable, place, _meaning, default] = cells[..] else {
            panic!("a row of four cells: {line}");
        };
        // `NAME` or `NAME` / `--flag`: the variable is the first code span.
        let name = variable
            .split('`')
            .nth(1)
            .unwrap_or_else(|| panic!("a variable in backticks: {line}"))
            .to_owned();
        let previous = rows.insert(name.clone(), (place.to_owned(), default.to_owned()));
        assert!(previous.is_none(), "{name} has two rows");
    }
    rows
}

/// The variables the template sets on every function (`Globals`) or on one of them.
fn template_variables() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    let template: Value = serde_norway::from_str(&text).unwrap();
    let mut names = BTreeSet::new();
    let mut add = |environment: &Value| {
        if let Some(variables) = environment["Variables"].as_mapping() {
            names.extend(variables.keys().map(|k| k.as_str().unwrap().to_owned()));
        }
    };
    add(&template["Globals"]["Function"]["Environment"]);
    for (_, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"].as_str() == Some("AWS::Serverless::Function") {
            add(&resource["Properties"]["Environment"]);
        }
    }
    names
}

/// The `{NAME}_TABLE` variables of the apps the template deploys.
fn app_table_variables() -> BTreeSet<String> {
    let apps: [Box<dyn App>; 2] = [Box::new(boards::Boards), Box::new(prices::Prices)];
    apps.iter()
        .flat_map(|app| app.tables())
        .map(|spec| spec.env_var())
        .collect()
}

#[test]
fn the_readme_documents_every_declared_variable_with_its_place_and_default() {
    let rows = readme_rows();
    let declared: BTreeSet<&str> = settings::ALL.iter().map(|s| s.name).collect();
    let documented: BTreeSet<&str> = rows.keys().map(String::as_str).collect();
    assert_eq!(
        documented, declared,
        "the README's configuration table lists the declared variables"
    );
    for setting in settings::ALL {
        let (place, default) = &rows[setting.name];
        assert_eq!(
            place,
            setting.place.label(),
            "where {} applies",
            setting.name
        );
        assert_eq!(
            default,
            &setting.default_doc(),
            "the default of {}",
            setting.name
        );
    }
}

#[test]
fn the_template_sets_every_lambda_variable_not_left_to_its_default() {
    let set = template_variables();
    let app_tables = app_table_variables();
    assert!(!app_tables.is_empty());
    let lambda: Vec<(&Setting, Template)> = settings::ALL
        .iter()
        .filter_map(|s| s.place.template().map(|t| (*s, t)))
        .collect();
    for (setting, template) in &lambda {
        let names: Vec<&str> = if setting.name == settings::APP_TABLE.name {
            app_tables.iter().map(String::as_str).collect()
        } else {
            vec![setting.name]
        };
        for name in names {
            match template {
                Template::Sets => assert!(set.contains(name), "the template sets {name}"),
                Template::Default(reason) => {
                    assert!(
                        !reason.trim().is_empty(),
                        "why {name} is left to its default"
                    );
                    assert!(
                        !set.contains(name),
                        "{name} is declared as left to its default"
                    );
                }
            }
        }
    }
    for name in &set {
        let declared = app_tables.contains(name)
            || lambda
                .iter()
                .any(|(s, t)| s.name == name && *t == Template::Sets);
        assert!(
            declared,
            "{name}, set by the template, is a declared Lambda setting"
        );
    }
}
