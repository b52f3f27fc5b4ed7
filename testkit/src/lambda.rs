//! The Lambda Runtime API on one machine, for running the functions' real binaries as Lambda
//! runs them: each binary is a process that asks its Runtime API for the next event
//! (`GET /2018-06-01/runtime/invocation/next`) and posts the result back (`…/response`,
//! `…/error`, or `/runtime/init/error` when it cannot start). [`RuntimeApi`] serves one
//! function; [`Function`] starts a binary against one; [`app_binaries`] builds the binaries;
//! [`function_environment`] is the environment they run with, as the template sets it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use broker::aws::TableNames;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};

use crate::aws::{FreshTables, moto_endpoint};

/// Events waiting for the function to ask for them.
const QUEUED_EVENTS: usize = 16;
/// Lambda's deadline header: how long the function may take (the template's longest timeout).
const DEADLINE: Duration = Duration::from_secs(30);
/// The most output lines of one process kept for a failure's message.
const KEPT_OUTPUT_LINES: usize = 500;

/// How an invocation ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// `…/response`: the function's result.
    Response(Value),
    /// `…/error`: the error the runtime reported (`errorType`, `errorMessage`).
    Error(Value),
}

struct Invocation {
    id: String,
    event: Value,
    done: oneshot::Sender<Outcome>,
}

struct Shared {
    queue: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    /// When the function first asked for an event.
    first_poll: watch::Sender<Option<Instant>>,
    init_error: watch::Sender<Option<Value>>,
}

/// One function's Runtime API on a free loopback port.
pub struct RuntimeApi {
    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    queue: mpsc::Sender<Invocation>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Starts serving on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let address = listener.local_addr().expect("local address").to_string();
        let (queue, receiver) = mpsc::channel(QUEUED_EVENTS);
        let shared = Arc::new(Shared {
            queue: tokio::sync::Mutex::new(receiver),
            waiting: Mutex::new(HashMap::new()),
            first_poll: watch::channel(None).0,
            init_error: watch::channel(None).0,
        });
        let routes = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, routes).await;
        });
        Self {
            address,
            queue,
            shared,
            server,
        }
    }

    /// Hands `event` to the function and waits for its outcome, at most `limit`.
    pub async fn invoke(&self, event: Value, limit: Duration) -> Result<Outcome, String> {
        let (done, outcome) = oneshot::channel();
        let id = ulid::Ulid::new().to_string().to_ascii_lowercase();
        self.queue
            .send(Invocation { id, event, done })
            .await
            .map_err(|_| "the Runtime API has stopped".to_owned())?;
        let mut init_error = self.shared.init_error.subscribe();
        tokio::select! {
            outcome = outcome => outcome.map_err(|_| "the invocation was dropped".to_owned()),
            _ = init_error.wait_for(Option::is_some) => Err(format!(
                "the function could not start: {}",
                self.shared.init_error.borrow().clone().unwrap_or_default()
            )),
            _ = tokio::time::sleep(limit) => Err(format!("no outcome within {limit:?}")),
        }
    }

    /// When the function first asked for an event; waits for it, at most `limit`.
    pub async fn first_poll(&self, limit: Duration) -> Option<Instant> {
        let mut polls = self.shared.first_poll.subscribe();
        tokio::time::timeout(limit, polls.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|seen| *seen.ok()?)
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    shared.first_poll.send_if_modified(|first| {
        let unset = first.is_none();
        if unset {
            *first = Some(Instant::now());
        }
        unset
    });
    // A function asks again only after posting the last outcome: one request waits here.
    let Some(invocation) = shared.queue.lock().await.recv().await else {
        return (StatusCode::GONE, HeaderMap::new(), Vec::new());
    };
    let deadline = std::time::SystemTime::now() + DEADLINE;
    let deadline_ms = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::from_str(&value).expect("header value"));
    };
    set("lambda-runtime-aws-request-id", invocation.id.clone());
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:local".to_owned(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0".to_owned(),
    );
    set("content-type", "application/json".to_owned());
    let body = serde_json::to_vec(&invocation.event).expect("an event is JSON");
    shared
        .waiting
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(invocation.id, invocation.done);
    (StatusCode::OK, headers, body)
}

fn finish(shared: &Shared, id: &str, outcome: Outcome) -> StatusCode {
    let waiting = shared
        .waiting
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
    match waiting {
        Some(done) => {
            let _ = done.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

fn json_or_text(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn response(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    finish(&shared, &id, Outcome::Response(json_or_text(&body)))
}

async fn error(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    finish(&shared, &id, Outcome::Error(json_or_text(&body)))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    shared.init_error.send_replace(Some(json_or_text(&body)));
    StatusCode::ACCEPTED
}

/// A function's binary running against its own [`RuntimeApi`], with only the variables
/// Lambda sets and the ones given (no variable of the calling process leaks in). Killed
/// when dropped.
pub struct Function {
    /// The function's name (`AWS_LAMBDA_FUNCTION_NAME`), which failures name.
    pub name: String,
    /// Its Runtime API.
    pub api: RuntimeApi,
    /// When the process was started.
    pub started: Instant,
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Function {
    /// Starts `binary` as the function `name` with `variables` beside Lambda's own.
    pub async fn start(name: &str, binary: &Path, variables: &[(String, String)]) -> Self {
        let api = RuntimeApi::start().await;
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", &api.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .envs(variables.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<_>),
            child.stderr.take().map(|s| Box::new(s) as Box<_>),
        ]
        .into_iter()
        .flatten()
        {
            tokio::spawn(keep_lines(stream, output.clone()));
        }
        Self {
            name: name.to_owned(),
            api,
            started,
            child,
            output,
        }
    }

    /// Invokes the function with `event` and returns its result; a function error, a
    /// failed start or no answer within 30 s fails with the process's output.
    pub async fn invoke(&self, event: Value) -> Value {
        match self.api.invoke(event, DEADLINE).await {
            Ok(Outcome::Response(result)) => result,
            Ok(Outcome::Error(error)) => panic!(
                "{} reported an error: {error}\n{}",
                self.name,
                self.output().join("\n")
            ),
            Err(reason) => panic!("{}: {reason}\n{}", self.name, self.output().join("\n")),
        }
    }

    /// What the process wrote so far (stdout and stderr, by line; the last lines kept).
    pub fn output(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

type Stream = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

async fn keep_lines(stream: Stream, output: Arc<Mutex<Vec<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut output = output.lock().unwrap_or_else(|e| e.into_inner());
        if output.len() == KEPT_OUTPUT_LINES {
            output.remove(0);
        }
        output.push(line);
    }
}

/// The app's four Lambda binaries (`{app}-websocket`, `{app}-http`, `{app}-stream`,
/// `{app}-fanout`) as `cargo build` makes them in this target directory and profile, in
/// that order. Built with the workspace and every feature, as `scripts/test-all` builds the
/// tests, so the dependencies built for them serve again.
pub fn app_binaries(app: &str) -> Vec<PathBuf> {
    let names: Vec<String> = ["websocket", "http", "stream", "fanout"]
        .iter()
        .map(|role| format!("{app}-{role}"))
        .collect();
    // This test binary is `<target>/<profile>/deps/<name>`.
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from a target directory");
    let target = profile_dir.parent().expect("the target directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => "dev",
    };
    let mut command = std::process::Command::new(env!("CARGO"));
    // What cargo and nextest set for this test (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...) would
    // reach build scripts that watch them and rebuild their crates for nothing.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if ["CARGO_PKG_", "CARGO_MANIFEST_", "NEXTEST"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
                "RUST_RECURSION_COUNT",
            ]
            .contains(&&*name)
        {
            command.env_remove(&*name);
        }
    }
    command
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args([
            "build",
            "--workspace",
            "--all-features",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target);
    for name in &names {
        command.args(["--bin", name]);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cargo build: {e}"));
    assert!(status.success(), "cargo build of {names:?} failed");
    names.iter().map(|name| profile_dir.join(name)).collect()
}

/// The variables of the template's `Globals` (`template.yaml`) a function needs on one
/// machine, pointing at `tables` (with `app_table`, the boards app's `BOARDS_TABLE`), the
/// fan-out queue at `fanout_queue_url`, the Management API at `management_endpoint`, and
/// signing tokens with `jwt_secret`. The others keep their defaults, as they do when the
/// template passes an empty parameter. `tests/tests/template.rs` checks that the template
/// declares every one of them.
pub fn template_variables(
    tables: &TableNames,
    app_table: &str,
    fanout_queue_url: &str,
    management_endpoint: &str,
    jwt_secret: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("CONNECTIONS_TABLE", tables.connections.clone()),
        ("SUBSCRIPTIONS_TABLE", tables.subscriptions.clone()),
        ("EVENTS_TABLE", tables.events.clone()),
        ("BOARDS_TABLE", app_table.to_owned()),
        ("FANOUT_QUEUE_URL", fanout_queue_url.to_owned()),
        ("JWT_SECRET", jwt_secret.to_owned()),
        ("MANAGEMENT_ENDPOINT", management_endpoint.to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
}

/// What Lambda (and the function's role) give a function on AWS, for the SDK on moto at
/// `endpoint`: the endpoint, dummy credentials, a region, and no instance metadata probe.
pub fn emulator_variables(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ]
}

/// The environment of the app's functions on moto (`MOTO_ENDPOINT`), as [`Function::start`]
/// takes it: the [`template_variables`] for `tables`, the fan-out queue at
/// `fanout_queue_url`, the Management API at `management_endpoint` and `jwt_secret`, then
/// the [`emulator_variables`]. A caller adds the tunables its run changes.
pub fn function_environment(
    tables: &FreshTables,
    fanout_queue_url: &str,
    management_endpoint: &str,
    jwt_secret: &str,
) -> Vec<(String, String)> {
    template_variables(
        &tables.names,
        &tables.app_table,
        fanout_queue_url,
        management_endpoint,
        jwt_secret,
    )
    .into_iter()
    .chain(emulator_variables(&moto_endpoint()))
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}
