//! The functions' IAM roles held against what the functions do: every AWS call a function
//! made in a test (recorded by a [`RecordingProxy`](crate::recorder::RecordingProxy) in front
//! of its endpoints) as the IAM action and resource it needs, and each function's role as the
//! template deploys it (`scripts/iam-policies.py`: the SAM transform, conditions and
//! parameters). [`check`] fails when a call is not granted, or when a grant serves no
//! recorded call and `tests/iam-unused-grants.yaml` gives no reason for it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::recorder::RecordedRequest;

/// moto's account, in every ARN here.
pub const ACCOUNT: &str = "123456789012";
/// The region of the tests.
pub const REGION: &str = "us-east-1";
/// The WebSocket API's id in the tests' ARNs (`${WebSocketApi}`).
pub const API_ID: &str = "testapi";
/// The stage the tests' management endpoints end in, the template's default `StageName`.
pub const STAGE: &str = "dev";

/// One AWS call as IAM authorises it: an action on a resource. A request may be several
/// (a transaction is authorised per item).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    /// `dynamodb:PutItem`, `execute-api:ManageConnections`, ...
    pub action: String,
    /// The resource's ARN.
    pub resource: String,
    /// The operation as sent (`DynamoDB_20120810.TransactWriteItems`, `POST /@connections/…`).
    pub operation: String,
}

fn table_arn(name: &str) -> String {
    format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}")
}

fn queue_arn(name: &str) -> String {
    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")
}

fn text<'a>(body: &'a Value, field: &str) -> &'a str {
    body[field].as_str().unwrap_or("?")
}

/// The calls of one request a function made to its AWS endpoint (DynamoDB and SQS, JSON
/// protocols) or to its Management API endpoint (`…/{stage}/@connections/{id}`).
pub fn calls_of(request: &RecordedRequest) -> Vec<Call> {
    if request.path.contains("/@connections/") {
        let (stage, connection) = request
            .path
            .split_once("/@connections/")
            .expect("a management path");
        let stage = stage.trim_start_matches('/');
        let connection = percent_decoded(connection.split('?').next().unwrap_or_default());
        return vec![Call {
            action: "execute-api:ManageConnections".into(),
            resource: format!(
                "arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/{stage}/{}/@connections/{connection}",
                request.method
            ),
            operation: format!("{} /@connections/{{id}}", request.method),
        }];
    }
    let target = request.header("x-amz-target").unwrap_or_default();
    let Some((prefix, op)) = target.split_once('.') else {
        // A protocol these mappings do not know: a call no grant can be checked against.
        return vec![Call {
            action: format!("unknown:{} {}", request.method, request.path),
            resource: "*".into(),
            operation: String::from_utf8_lossy(&request.body).into_owned(),
        }];
    };
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let call = |action: &str, resource: String| Call {
        action: action.to_owned(),
        resource,
        operation: target.to_owned(),
    };
    match prefix {
        "DynamoDB_20120810" => dynamodb_calls(op, &body, call),
        "AmazonSQS" => {
            let queue = text(&body, "QueueUrl").rsplit('/').next().unwrap_or("?");
            let action = match op.strip_suffix("Batch") {
                Some(single) => format!("sqs:{single}"),
                None => format!("sqs:{op}"),
            };
            let queue = match op {
                "GetQueueUrl" => text(&body, "QueueName"),
                _ => queue,
            };
            vec![call(&action, queue_arn(queue))]
        }
        _ => vec![call(&format!("unknown:{target}"), "*".into())],
    }
}

/// `%XX` escapes decoded (a connection id's `=` is sent as `%3D`).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = text
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn dynamodb_calls(op: &str, body: &Value, call: impl Fn(&str, String) -> Call) -> Vec<Call> {
    let mut calls = Vec::new();
    match op {
        "BatchGetItem" | "BatchWriteItem" => {
            for table in body["RequestItems"].as_object().into_iter().flatten() {
                calls.push(call(&format!("dynamodb:{op}"), table_arn(table.0)));
            }
        }
        "TransactWriteItems" | "TransactGetItems" => {
            for item in body["TransactItems"].as_array().into_iter().flatten() {
                for (kind, inner) in item.as_object().into_iter().flatten() {
                    let action = match kind.as_str() {
                        "Put" => "dynamodb:PutItem",
                        "Update" => "dynamodb:UpdateItem",
                        "Delete" => "dynamodb:DeleteItem",
                        "ConditionCheck" => "dynamodb:ConditionCheckItem",
                        "Get" => "dynamodb:GetItem",
                        other => panic!("a transaction item of an unknown kind: {other}"),
                    };
                    calls.push(call(action, table_arn(text(inner, "TableName"))));
                }
            }
        }
        _ => {
            let mut resource = table_arn(text(body, "TableName"));
            if let Some(index) = body["IndexName"].as_str() {
                resource = format!("{resource}/index/{index}");
            }
            calls.push(call(&format!("dynamodb:{op}"), resource));
        }
    }
    calls
}

/// One grant: an action (or `managed` for a managed policy) on a resource, as the template
/// writes it (`${ConnectionsTable.Arn}/index/byPrincipal`) and as it resolves in a test.
#[derive(Clone, Debug)]
struct Grant {
    action: String,
    written: String,
    resource: String,
    allow: bool,
}

impl Grant {
    /// How tests/iam-unused-grants.yaml names it.
    fn name(&self) -> String {
        format!("{} {}", self.action, self.written)
    }

    fn covers(&self, call: &Call) -> bool {
        self.action != "managed"
            && glob(
                &self.action.to_ascii_lowercase(),
                &call.action.to_ascii_lowercase(),
            )
            && glob(&self.resource, &call.resource)
    }
}

/// IAM's wildcards: `*` any run of characters, `?` one.
fn glob(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut pi, mut vi, mut star, mut mark) = (0, 0, None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// What the `${...}` of the template's resources are in a test: the names of its tables and
/// queue; the rest get names no call uses.
pub struct Names {
    /// Logical id (`ConnectionsTable`) to the table's name in the test.
    pub tables: BTreeMap<String, String>,
    /// Logical id (`FanoutQueue`) to the queue's name in the test.
    pub queues: BTreeMap<String, String>,
}

impl Names {
    fn value_of(&self, placeholder: &str) -> Option<String> {
        let (logical, attribute) = placeholder
            .split_once('.')
            .map_or((placeholder, None), |(l, a)| (l, Some(a)));
        Some(match (logical, attribute) {
            ("AWS::Partition", None) => "aws".into(),
            ("AWS::Region", None) => REGION.into(),
            ("AWS::AccountId", None) => ACCOUNT.into(),
            ("AWS::URLSuffix", None) => "amazonaws.com".into(),
            ("WebSocketApi", None) => API_ID.into(),
            (table, Some("Arn")) if self.tables.contains_key(table) => {
                table_arn(&self.tables[table])
            }
            (table, Some("StreamArn")) if self.tables.contains_key(table) => {
                format!(
                    "{}/stream/2026-01-01T00:00:00.000",
                    table_arn(&self.tables[table])
                )
            }
            (queue, Some("Arn")) => queue_arn(
                self.queues
                    .get(queue)
                    .map_or_else(|| format!("{queue}-not-in-the-test"), Clone::clone)
                    .as_str(),
            ),
            _ => return None,
        })
    }

    /// `written` with every `${...}` replaced; None names the first one unknown.
    fn resolve(&self, written: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = written;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').ok_or_else(|| written.to_owned())? + start;
            let placeholder = &rest[start + 2..end];
            out.push_str(
                &self
                    .value_of(placeholder)
                    .ok_or_else(|| format!("{placeholder} in {written}"))?,
            );
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_owned()
}

/// Each function's role as deployed with `App` = `app` (and the defaults' token secret).
fn roles(app: &str) -> BTreeMap<String, Vec<Value>> {
    let root = root();
    let parameters = std::env::temp_dir().join(format!("iam-{app}-{}.json", std::process::id()));
    let values = serde_json::json!([
        {"ParameterKey": "JwtSecret", "ParameterValue": "0123456789abcdef0123456789abcdef"},
        {"ParameterKey": "App", "ParameterValue": app},
    ]);
    std::fs::write(&parameters, values.to_string()).expect("a temporary file");
    let python = root.join(".tools/venv/bin/python");
    let output = std::process::Command::new(&python)
        .arg(root.join("scripts/iam-policies.py"))
        .arg(root.join("template.yaml"))
        .arg(&parameters)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/test-deps)", python.display()));
    let _ = std::fs::remove_file(&parameters);
    assert!(
        output.status.success(),
        "scripts/iam-policies.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let policies: BTreeMap<String, Vec<Value>> =
        serde_json::from_slice(&output.stdout).expect("iam-policies.py prints JSON");
    policies
}

fn grants(statements: &[Value], names: &Names) -> Result<Vec<Grant>, String> {
    let mut grants = Vec::new();
    for statement in statements {
        let strings = |field: &str| -> Vec<String> {
            statement[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        let effect = statement["effect"].as_str().unwrap_or_default();
        let actions = match effect {
            "Managed" => vec!["managed".to_owned()],
            _ => strings("actions"),
        };
        for action in actions {
            for written in strings("resources") {
                grants.push(Grant {
                    resource: names.resolve(&written)?,
                    action: action.clone(),
                    written,
                    allow: effect != "Deny",
                });
            }
        }
    }
    Ok(grants)
}

/// An entry of tests/iam-unused-grants.yaml.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Unused {
    function: String,
    grant: String,
    /// Only the deployments of this app have the grant (its tables).
    #[serde(default)]
    app: Option<String>,
    why: String,
}

fn unused_reasons() -> Vec<Unused> {
    let path = root().join("tests/iam-unused-grants.yaml");
    let text = std::fs::read_to_string(&path).expect("tests/iam-unused-grants.yaml");
    serde_norway::from_str(&text).expect("tests/iam-unused-grants.yaml: a list of entries")
}

/// Holds the roles of the template deployed with `App` = `app` against `recorded`: for each
/// function, the requests it made (to its AWS and Management API endpoints). Fails when a
/// call is not granted (or is denied), or when a grant no call used is not in
/// tests/iam-unused-grants.yaml; and when an entry there is used, or no longer granted.
/// With `broker_grants` false only the grants on the app's own tables are held to their
/// use (a run of a second app, whose broker grants another run checked).
pub fn check(
    app: &str,
    names: &Names,
    recorded: &BTreeMap<String, Vec<RecordedRequest>>,
    app_tables: &[&str],
    broker_grants: bool,
) {
    let roles = roles(app);
    let reasons = unused_reasons();
    let mut problems = Vec::new();
    for reason in &reasons {
        if !roles.contains_key(&reason.function) {
            problems.push(format!(
                "tests/iam-unused-grants.yaml names {}, no function of the template",
                reason.function
            ));
        }
        if reason.why.trim().is_empty() {
            problems.push(format!(
                "{} {}: no reason given",
                reason.function, reason.grant
            ));
        }
    }
    let functions: BTreeSet<&String> = roles.keys().chain(recorded.keys()).collect();
    let mut seen = Vec::new();
    for function in functions {
        let Some(statements) = roles.get(function) else {
            problems.push(format!("{function}: no such function in the template"));
            continue;
        };
        let grants = match grants(statements, names) {
            Ok(grants) => grants,
            Err(unknown) => {
                problems.push(format!("{function}: cannot resolve {unknown}"));
                continue;
            }
        };
        let calls: BTreeSet<Call> = recorded
            .get(function)
            .into_iter()
            .flatten()
            .flat_map(calls_of)
            .collect();
        seen.extend(calls.iter().map(|c| {
            format!(
                "{function}: {} on {} ({})",
                c.action, c.resource, c.operation
            )
        }));
        for call in &calls {
            let allowed = grants.iter().any(|g| g.allow && g.covers(call));
            let denied = grants.iter().any(|g| !g.allow && g.covers(call));
            if !allowed || denied {
                problems.push(format!(
                    "{function}: {} on {} ({}) is not granted",
                    call.action, call.resource, call.operation
                ));
            }
        }
        let checked = |grant: &Grant| {
            broker_grants
                || app_tables
                    .iter()
                    .any(|t| grant.written.contains(&format!("${{{t}")))
        };
        let listed: Vec<&Unused> = reasons
            .iter()
            .filter(|r| &r.function == function)
            .filter(|r| r.app.as_deref().is_none_or(|a| a == app))
            .collect();
        for grant in grants.iter().filter(|g| g.allow && checked(g)) {
            let used = calls.iter().any(|c| grant.covers(c));
            let reason = listed.iter().any(|r| r.grant == grant.name());
            match (used, reason) {
                (false, false) => problems.push(format!(
                    "{function}: {} is used by no call and tests/iam-unused-grants.yaml gives no reason",
                    grant.name()
                )),
                (true, true) => problems.push(format!(
                    "{function}: {} is used, yet tests/iam-unused-grants.yaml lists it",
                    grant.name()
                )),
                _ => {}
            }
        }
        for reason in &listed {
            let granted = grants.iter().any(|g| g.name() == reason.grant);
            let in_scope = broker_grants || reason.app.is_some();
            if in_scope && !granted {
                problems.push(format!(
                    "{function}: tests/iam-unused-grants.yaml lists {}, which is not granted",
                    reason.grant
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the {app} app's roles and the recorded calls disagree:\n  {}\nthe calls recorded:\n  {}",
        problems.join("\n  "),
        seen.join("\n  ")
    );
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn iam_wildcards() {
        assert!(glob("arn:t/x/index/*", "arn:t/x/index/byOwner"));
        assert!(!glob("arn:t/x", "arn:t/x/index/byOwner"));
        assert!(glob("dynamodb:get*", "dynamodb:getitem"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*", ""));
    }

    #[test]
    fn connection_ids_are_decoded() {
        assert_eq!(
            super::percent_decoded("L0SM9cOFvHcCIhw%3D"),
            "L0SM9cOFvHcCIhw="
        );
        assert_eq!(super::percent_decoded("a%2"), "a%2");
    }
}
