//! Helpers for the tests and benchmarks against moto, the AWS emulator `scripts/test-all`
//! starts: SDK configuration with dummy credentials, fresh uniquely named tables and queues
//! (tests run in parallel on one moto), the events table's stream read back, and a scripted
//! HTTP server standing in for API Gateway where moto cannot (it never answers 410 Gone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_credential_types::Credentials;
use aws_lambda_events::dynamodb::EventRecord;
use boards::Boards;
use broker::App;
use broker::aws::{AppTables, TableNames, provision};
use local_gateway::stream::dynamodb::lambda_record;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Where moto listens, from `MOTO_ENDPOINT`.
pub fn moto_endpoint() -> String {
    match std::env::var("MOTO_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => {
            endpoint.trim().trim_end_matches('/').to_owned()
        }
        _ => panic!(
            "MOTO_ENDPOINT is not set: these tests need a moto server. Run them through \
             scripts/test-all (or scripts/with-moto cargo nextest run ...), which start one."
        ),
    }
}

/// SDK configuration for `endpoint` with static dummy credentials, so the SDK never looks
/// for real ones (nor probes the instance metadata address), and quick SDK retries.
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    broker::aws::config_loader(Some(endpoint))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .retry_config(RetryConfig::standard().with_initial_backoff(Duration::from_millis(10)))
        .load()
        .await
}

/// SDK configuration for moto.
pub async fn moto_config() -> SdkConfig {
    sdk_config_for(&moto_endpoint()).await
}

/// A unique suffix, so names never collide between tests or runs on one moto.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

/// Freshly created tables on moto and a client for them.
pub struct FreshTables {
    /// The SDK configuration for the moto they are on.
    pub config: SdkConfig,
    /// A DynamoDB client for them.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The broker's tables.
    pub names: TableNames,
    /// The boards app's table.
    pub app_table: String,
}

impl FreshTables {
    /// The boards app's tables by name, as `AwsBackend::app_tables` and `AppTables` take them.
    pub fn app_tables(&self) -> HashMap<String, String> {
        HashMap::from([(boards::TABLE.to_owned(), self.app_table.clone())])
    }

    /// Every record of the events table's stream so far: each shard read once from its
    /// oldest record (TRIM_HORIZON), shards in the order the stream lists them. What a
    /// retried batch would bring, and enough on moto, which answers one read with all of a
    /// shard's records.
    pub async fn stream_records(&self) -> Vec<aws_sdk_dynamodbstreams::types::Record> {
        let stream_arn = self
            .dynamodb
            .describe_table()
            .table_name(&self.names.events)
            .send()
            .await
            .expect("DescribeTable answers")
            .table()
            .and_then(|t| t.latest_stream_arn())
            .expect("the events table has a stream")
            .to_owned();
        let streams = aws_sdk_dynamodbstreams::Client::new(&self.config);
        let mut shards = Vec::new();
        let mut exclusive_start = None;
        loop {
            let description = streams
                .describe_stream()
                .stream_arn(&stream_arn)
                .set_exclusive_start_shard_id(exclusive_start.take())
                .send()
                .await
                .expect("DescribeStream answers");
            let description = description
                .stream_description()
                .expect("a stream description");
            shards.extend(
                description
                    .shards()
                    .iter()
                    .filter_map(|s| s.shard_id())
                    .map(str::to_owned),
            );
            match description.last_evaluated_shard_id() {
                Some(last) => exclusive_start = Some(last.to_owned()),
                None => break,
            }
        }
        let mut records = Vec::new();
        for shard in shards {
            let iterator = streams
                .get_shard_iterator()
                .stream_arn(&stream_arn)
                .shard_id(shard)
                .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("GetShardIterator answers");
            let Some(iterator) = iterator.shard_iterator() else {
                continue;
            };
            let output = streams
                .get_records()
                .shard_iterator(iterator)
                .send()
                .await
                .expect("GetRecords answers");
            records.extend(output.records().iter().cloned());
        }
        records
    }

    /// [`FreshTables::stream_records`] as Lambda's event source mapping hands them to the
    /// stream publisher (the local gateway's [`lambda_record`]).
    pub async fn stream_lambda_records(&self) -> Vec<EventRecord> {
        self.stream_records()
            .await
            .iter()
            .filter_map(lambda_record)
            .collect()
    }
}

/// Creates the broker's tables and the boards app's table under unique names.
pub async fn fresh_tables() -> FreshTables {
    fresh_tables_at(&moto_endpoint()).await
}

/// [`fresh_tables`] on the moto at `endpoint`.
pub async fn fresh_tables_at(endpoint: &str) -> FreshTables {
    let config = sdk_config_for(endpoint).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let suffix = unique("t");
    let names = TableNames::new(
        format!("connections-{suffix}"),
        format!("subscriptions-{suffix}"),
        format!("events-{suffix}"),
    );
    let tables = FreshTables {
        config,
        dynamodb,
        names,
        app_table: format!("boards-{suffix}"),
    };
    provision::create_tables(&tables.dynamodb, &tables.names)
        .await
        .expect("tables are created on moto");
    let app_tables = AppTables::new(tables.dynamodb.clone(), tables.app_tables());
    provision::create_app_tables(&tables.dynamodb, &Boards.tables(), &app_tables)
        .await
        .expect("the app's tables are created on moto");
    tables
}

/// A moto server of the test's own that handles one request at a time, as DynamoDB runs
/// each transaction in isolation. The shared moto serves requests on many threads and runs
/// concurrent transactions interleaved (a cancelled one can roll back another's writes), so
/// a test of what concurrent transactions may store needs this one. Stopped when dropped.
pub struct SerialMoto {
    _server: tokio::process::Child,
    /// Where it listens: `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

/// moto's WSGI application, served without threads.
const SERIAL_MOTO: &str = r#"
import os, sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app)
os.environ["MOTO_PORT"] = sys.argv[1]
run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app),
           threaded=False, request_handler=MotoRequestHandler)
"#;

impl SerialMoto {
    /// Starts it with the Python of `.tools/venv` (which `scripts/test-deps` installs) and
    /// waits until it answers.
    pub async fn start() -> Self {
        let python =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/python");
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port")
            .local_addr()
            .unwrap()
            .port();
        let server = tokio::process::Command::new(&python)
            .args(["-c", SERIAL_MOTO, &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/test-deps)", python.display()));
        let endpoint = format!("http://127.0.0.1:{port}");
        // A cold Python start takes a few seconds.
        for _ in 0..600 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Self {
                    _server: server,
                    endpoint,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the serial moto did not start on {endpoint}");
    }
}

/// A fresh fan-out queue (with its dead-letter queue) on moto: the client and queue URL.
pub async fn fresh_queue() -> (aws_sdk_sqs::Client, String) {
    let config = moto_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = provision::create_fanout_queue(&sqs, &unique("fanout"))
        .await
        .expect("queue is created on moto");
    (sqs, url)
}

/// A fresh FIFO fan-out queue (with its FIFO dead-letter queue) on moto, as the template
/// declares them: the client and queue URL (ending in `.fifo`).
pub async fn fresh_fifo_queue() -> (aws_sdk_sqs::Client, String) {
    let config = moto_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = provision::create_fanout_queue(&sqs, &format!("{}.fifo", unique("fanout")))
        .await
        .expect("FIFO queue is created on moto");
    (sqs, url)
}

/// Standard base64 (with padding), to compare against what moto's recorder stores.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One canned HTTP response.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// Headers beside `content-length` and `content-type: application/json`.
    pub headers: Vec<(String, String)>,
    /// The body, sent as it is.
    pub body: String,
}

impl Reply {
    /// A reply with `status` and `body`, and no other headers.
    pub fn new(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }

    /// The reply with the header `name: value` added.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A request as the scripted server saw it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// The request's method, as sent (`POST`).
    pub method: String,
    /// The request's target: path and query, as sent.
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, `content-length` bytes.
    pub body: Vec<u8>,
}

impl SeenRequest {
    /// The value of the header `name`, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 server on a free loopback port that answers with `replies` in turn (the
/// last one again once they run out) and records every request. Dropped with the runtime.
pub struct ScriptedServer {
    /// Where it listens: `http://127.0.0.1:<port>`.
    pub endpoint: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl ScriptedServer {
    /// Starts serving on a free port.
    pub async fn start(replies: Vec<Reply>) -> Self {
        assert!(!replies.is_empty(), "a scripted server needs a reply");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let endpoint = format!("http://{}", listener.local_addr().expect("local address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (replies, log) = (replies.clone(), log.clone());
                tokio::spawn(serve(stream, replies, log));
            }
        });
        Self { endpoint, seen }
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Serves one connection (keep-alive: the SDK reuses pooled connections).
async fn serve(mut stream: TcpStream, replies: Vec<Reply>, log: Arc<Mutex<Vec<SeenRequest>>>) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buffer).await else {
            return;
        };
        let reply = {
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            log.push(request);
            replies[(log.len() - 1).min(replies.len() - 1)].clone()
        };
        let mut response = format!(
            "HTTP/1.1 {} Scripted\r\ncontent-length: {}\r\ncontent-type: application/json\r\n",
            reply.status,
            reply.body.len()
        );
        for (name, value) in &reply.headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&reply.body);
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<SeenRequest> {
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, path) = (
        request_line.next()?.to_owned(),
        request_line.next()?.to_owned(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let body_start = head_end + 4;
    while buffer.len() < body_start + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = buffer[body_start..body_start + length].to_vec();
    buffer.drain(..body_start + length);
    Some(SeenRequest {
        method,
        path,
        headers,
        body,
    })
}

/// The `Authorization` header AWS computes for `request` (SigV4, service `execute-api`),
/// from what arrived: its method, `Host`, path, body, its other headers and its
/// `x-amz-date`.
pub fn sigv4_authorization(
    request: &SeenRequest,
    access_key: &str,
    secret: &str,
    region: &str,
) -> String {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let date = request.header("x-amz-date").expect("x-amz-date");
    let host = request.header("host").expect("host");
    let identity = Credentials::new(access_key, secret, None, None, "tests").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("execute-api")
        .time(parse_amz_date(date))
        .settings(SigningSettings::default())
        .build()
        .expect("signing parameters")
        .into();
    let url = format!("http://{host}{}", request.path);
    let headers = request
        .headers
        .iter()
        .filter(|(name, _)| name != "authorization" && name != "x-amz-date")
        .map(|(name, value)| (name.as_str(), value.as_str()));
    let signable = SignableRequest::new(
        &request.method,
        &url,
        headers,
        SignableBody::Bytes(&request.body),
    )
    .expect("a signable request");
    let (instructions, _) = sign(signable, &params)
        .expect("signing succeeds")
        .into_parts();
    instructions
        .headers()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.to_owned())
        .expect("an authorization header")
}

/// `20261124T023000Z` as a time.
fn parse_amz_date(date: &str) -> std::time::SystemTime {
    let number = |range: std::ops::Range<usize>| -> i64 {
        date.get(range)
            .and_then(|s| s.parse().ok())
            .expect("an x-amz-date")
    };
    let (y, m, d) = (number(0..4), number(4..6), number(6..8));
    let seconds_of_day = number(9..11) * 3600 + number(11..13) * 60 + number(13..15);
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = u64::try_from(days * 86_400 + seconds_of_day).expect("after 1970");
    std::time::UNIX_EPOCH + Duration::from_secs(seconds)
}
