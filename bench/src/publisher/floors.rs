//! The floors a delivery cannot go below, measured in the same run as the publisher: a plain
//! pooled HTTP POST to the sink, the same POST signed with SigV4, and the broker's
//! Management API gateway alone.

use std::time::{Duration, Instant, SystemTime};

use broker::aws::{ApiGatewayConnectionGateway, PostClient};
use broker::{BrokerConfig, ConnectionId};
use futures_util::StreamExt;
use serde_json::json;

use super::{Row, process_cpu, sink};

/// Concurrency of the floors' post loops: the broker's default `POST_CONCURRENCY`.
pub(crate) fn concurrency() -> usize {
    BrokerConfig::default().post_concurrency
}

pub(crate) async fn floor_plain(sink: &sink::Sink, posts: usize) -> anyhow::Result<Row> {
    let client = reqwest::Client::new();
    let frame = frame_like();
    let post = |i: usize| {
        let request = client
            .post(format!("{}/@connections/floor-{i}", sink.url))
            .body(frame.clone());
        async move { request.send().await.map(|r| r.status().is_success()) }
    };
    // Warm the pool, then measure.
    run_posts(&post, concurrency()).await?;
    let (cpu, wall) = measure(run_posts(&post, posts)).await?;
    Ok(Row {
        label: "floor: pooled HTTP POST".into(),
        cpu_per_message: cpu / posts as u32,
        per_second: posts as f64 / wall.as_secs_f64(),
        store_requests_per_event: None,
        paired: None,
    })
}

/// The signed-POST floor: a frame-sized body, signed with SigV4 for `execute-api`, POSTed on
/// a pooled connection, as many at once as the broker posts.
pub(crate) struct SignedFloor {
    client: reqwest::Client,
    base: String,
    frame: String,
    identity: aws_smithy_runtime_api::client::identity::Identity,
}

impl SignedFloor {
    /// A floor on its own connection pool, warmed.
    pub(crate) async fn new(sink: &sink::Sink) -> anyhow::Result<Self> {
        let floor = Self {
            client: reqwest::Client::new(),
            base: format!("{}/@connections", sink.url),
            frame: frame_like(),
            identity: bench_credentials().into(),
        };
        floor.run(concurrency()).await?;
        Ok(floor)
    }

    fn request(&self, i: usize) -> reqwest::Request {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let url = format!("{}/floor-{i}", self.base);
        let mut request = http::Request::post(&url)
            .header("content-type", "application/json")
            .body(self.frame.clone())
            .expect("a valid request");
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&self.identity)
            .region("us-east-1")
            .name("execute-api")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .expect("signing parameters")
            .into();
        let signable = SignableRequest::new(
            "POST",
            &url,
            request
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or_default())),
            SignableBody::Bytes(self.frame.as_bytes()),
        )
        .expect("a signable request");
        let (instructions, _) = sign(signable, &params)
            .expect("signing succeeds")
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        reqwest::Request::try_from(request).expect("an http request converts")
    }

    pub(crate) async fn run(&self, posts: usize) -> anyhow::Result<()> {
        let post = |i: usize| {
            let request = self.request(i);
            async move {
                self.client
                    .execute(request)
                    .await
                    .map(|r| r.status().is_success())
            }
        };
        run_posts(&post, posts).await
    }
}

pub(crate) async fn floor_signed(sink: &sink::Sink, posts: usize) -> anyhow::Result<Row> {
    let floor = SignedFloor::new(sink).await?;
    let (cpu, wall) = measure(floor.run(posts)).await?;
    Ok(Row {
        label: "floor: SigV4-signed POST".into(),
        cpu_per_message: cpu / posts as u32,
        per_second: posts as f64 / wall.as_secs_f64(),
        store_requests_per_event: None,
        paired: None,
    })
}

/// Static credentials for the sink and the emulator, which check no signature: the SDK's
/// credential chain is not asked (it would look for an instance profile).
pub(crate) fn bench_credentials() -> aws_credential_types::Credentials {
    aws_credential_types::Credentials::new("AKIDBENCH", "bench-secret", None, None, "bench")
}

/// The SDK configuration of the benchmark's clients, sent to `endpoint`.
pub(crate) async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    broker::aws::config_loader(Some(endpoint))
        .credentials_provider(bench_credentials())
        .load()
        .await
}

/// The broker's Management API gateway alone, posting with `post`: what a post costs
/// before any rendering or store access.
pub(crate) async fn floor_gateway(
    sink: &sink::Sink,
    posts: usize,
    client: PostClient,
) -> anyhow::Result<Row> {
    use broker::ConnectionGateway as _;
    let sdk = sdk_config(&sink.url).await;
    let gateway = ApiGatewayConnectionGateway::from_config_with(&sdk, &sink.url, client);
    let frame = frame_like();
    let post = |i: usize| {
        let (gateway, frame) = (&gateway, &frame);
        async move {
            let id = ConnectionId::new(format!("floor-{i}"));
            gateway.post(&id, frame).await
        }
    };
    let run = |count: usize| async move {
        let outcomes: Vec<_> = futures_util::stream::iter(0..count)
            .map(post)
            .buffer_unordered(concurrency())
            .collect()
            .await;
        for outcome in outcomes {
            outcome?;
        }
        anyhow::Ok(())
    };
    run(concurrency()).await?;
    let (cpu, wall) = measure(run(posts)).await?;
    Ok(Row {
        label: match client {
            PostClient::Sdk => "gateway post, SDK client (aws-sdk-apigatewaymanagement)".into(),
            PostClient::Signed => "gateway post, signed POST (the default)".into(),
        },
        cpu_per_message: cpu / posts as u32,
        per_second: posts as f64 / wall.as_secs_f64(),
        store_requests_per_event: None,
        paired: None,
    })
}

async fn run_posts<F, Fut>(post: &F, posts: usize) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = reqwest::Result<bool>>,
{
    let outcomes: Vec<_> = futures_util::stream::iter(0..posts)
        .map(post)
        .buffer_unordered(concurrency())
        .collect()
        .await;
    for outcome in outcomes {
        anyhow::ensure!(outcome?, "the sink refused a post");
    }
    Ok(())
}

pub(crate) async fn measure<T>(
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(Duration, Duration)> {
    let (cpu, wall) = (process_cpu(), Instant::now());
    work.await?;
    Ok((process_cpu() - cpu, wall.elapsed()))
}

/// A `next` frame of the size the publisher posts.
pub(crate) fn frame_like() -> String {
    json!({"id": "s", "type": "next", "payload": {"data": {"cardAdded": {"id": "01J0000000000000000000000", "title": "A card"}}, "extensions": {"eventId": "01J0000000000000000000000"}}}).to_string()
}
