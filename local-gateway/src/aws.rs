//! The local mode on DynamoDB (an emulator or a real account): the broker's tables, the app's
//! tables, and what the pollers read, the events table's stream ([`crate::stream::dynamodb`])
//! and optionally the SQS fan-out queue ([`crate::fanout::sqs`]).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use broker::aws::{AppTables, TableNames, provision};
use broker::{App, AppSchema, ConnectionGateway, Ports, Storage};

/// Where the local mode keeps its state when not embedded.
#[derive(Clone, Debug)]
pub struct AwsBackend {
    /// One endpoint for DynamoDB, DynamoDB Streams and SQS (moto serves all three); `None`
    /// for the account in the environment.
    pub endpoint: Option<String>,
    /// The deployed names of the broker's own tables.
    pub tables: TableNames,
    /// The deployed name of each of the app's tables, by [`broker::TableSpec::name`].
    pub app_tables: HashMap<String, String>,
    /// The fan-out queue; without one, every fan-out is delivered by the stream publisher.
    pub fanout_queue_url: Option<String>,
    /// Create the tables (and nothing else) when they do not exist.
    pub create_tables: bool,
}

impl AwsBackend {
    /// Each of `app`'s tables named `{prefix}{name}`.
    pub fn app_table_names(app: &dyn App, prefix: &str) -> HashMap<String, String> {
        app.tables()
            .iter()
            .map(|spec| (spec.name.to_owned(), format!("{prefix}{}", spec.name)))
            .collect()
    }
}

pub(crate) struct AwsParts {
    pub ports: Ports,
    pub schema: AppSchema,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub stream_arn: String,
    pub sqs: Option<(aws_sdk_sqs::Client, String)>,
}

/// The broker's ports and `app`'s schema on DynamoDB, posting through `gateway`, and what the
/// pollers need: the events table's stream and the fan-out queue.
pub(crate) async fn connect(
    backend: &AwsBackend,
    app: &dyn App,
    gateway: Arc<dyn ConnectionGateway>,
) -> anyhow::Result<AwsParts> {
    let sdk = broker::aws::sdk_config(backend.endpoint.as_deref()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let app_tables = AppTables::new(dynamodb.clone(), backend.app_tables.clone());
    if backend.create_tables {
        provision::create_tables(&dynamodb, &backend.tables)
            .await
            .context("creating the tables")?;
        provision::create_app_tables(&dynamodb, &app.tables(), &app_tables)
            .await
            .context("creating the app's tables")?;
    }
    let described = dynamodb
        .describe_table()
        .table_name(&backend.tables.events)
        .send()
        .await
        .with_context(|| format!("describing table {}", backend.tables.events))?;
    let stream_arn = described
        .table()
        .and_then(|t| t.latest_stream_arn())
        .with_context(|| format!("table {} has no stream", backend.tables.events))?
        .to_owned();
    let sqs = backend
        .fanout_queue_url
        .as_ref()
        .map(|url| (aws_sdk_sqs::Client::new(&sdk), url.clone()));
    Ok(AwsParts {
        ports: broker::aws::ports(
            &sdk,
            &backend.tables,
            gateway,
            backend.fanout_queue_url.as_deref(),
        ),
        schema: app.schema(&Storage::DynamoDb(app_tables))?,
        streams: aws_sdk_dynamodbstreams::Client::new(&sdk),
        stream_arn,
        sqs,
    })
}
