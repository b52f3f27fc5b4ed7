//! Creates the tables and the fan-out queue, for the local mode and the tests (on AWS the
//! SAM template does it): the broker's own tables, and an app's from its [`TableSpec`]s.
//! Every step is idempotent: what exists already is left as it is.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;

use super::config::TableNames;
use super::dynamodb::BY_PRINCIPAL_INDEX;
use super::error::AwsCallError;
use super::wiring::AppTables;
use crate::{ConfigError, IndexSpec, TableSpec};

/// The attribute DynamoDB's TTL reads on every table.
const TTL_ATTRIBUTE: &str = "ttl";

/// How long a new table may take to become active (seconds on AWS, none on emulators).
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Receives before SQS moves a fan-out page to the dead-letter queue.
const MAX_RECEIVE_COUNT: u32 = 5;

/// Six times the fan-out worker's 30 s timeout, as SQS advises for Lambda consumers.
const VISIBILITY_TIMEOUT_SECS: u32 = 180;

/// Fourteen days, SQS's longest retention: time to look at what failed.
const DLQ_RETENTION_SECS: u32 = 14 * 24 * 60 * 60;

/// Why creating the tables and queues of a deployment failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsCallError),
    /// A created table did not become `ACTIVE` in time.
    #[error("table {table} is not active after {waited:?}")]
    NotActive {
        /// The table's deployed name.
        table: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// A queue was created, but its attributes did not name its ARN.
    #[error("queue {0} reports no ARN")]
    MissingQueueArn(String),
    /// An app's table has no deployed name among those given ([`AppTables`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A table to create: the spec, its deployed name, and whether it streams `NEW_IMAGE`.
struct Table<'a> {
    spec: TableSpec,
    name: &'a str,
    stream: bool,
}

/// The broker's three tables as specs: the same layout as the SAM template's.
fn broker_tables(names: &TableNames) -> [Table<'_>; 3] {
    [
        Table {
            spec: TableSpec::new("connections", "connectionId")
                .index(IndexSpec::new(BY_PRINCIPAL_INDEX, "principal")),
            name: &names.connections,
            stream: false,
        },
        Table {
            // No index: a connection's subscriptions are found through its claim items.
            spec: TableSpec::new("subscriptions", "topic").sort_key("subscriptionKey"),
            name: &names.subscriptions,
            stream: false,
        },
        Table {
            spec: TableSpec::new("events", "topic").sort_key("eventId"),
            name: &names.events,
            stream: true,
        },
    ]
}

/// Creates the connections, subscriptions and events tables, pay per request, with their
/// indexes, the events stream and TTL on `ttl`.
pub async fn create_tables(
    client: &aws_sdk_dynamodb::Client,
    names: &TableNames,
) -> Result<(), ProvisionError> {
    create_all(client, &broker_tables(names)).await
}

/// Creates an app's tables (see [`crate::App::tables`]), each under its deployed name in
/// `tables`, pay per request, with their indexes and TTL on `ttl`.
pub async fn create_app_tables(
    client: &aws_sdk_dynamodb::Client,
    specs: &[TableSpec],
    tables: &AppTables,
) -> Result<(), ProvisionError> {
    let tables = specs
        .iter()
        .map(|spec| {
            Ok(Table {
                spec: spec.clone(),
                name: tables.name(spec.name)?,
                stream: false,
            })
        })
        .collect::<Result<Vec<_>, ProvisionError>>()?;
    create_all(client, &tables).await
}

async fn create_all(
    client: &aws_sdk_dynamodb::Client,
    tables: &[Table<'_>],
) -> Result<(), ProvisionError> {
    for table in tables {
        create_table(client, table).await?;
    }
    for table in tables {
        wait_until_active(client, table.name).await?;
        enable_ttl(client, table.name).await?;
    }
    Ok(())
}

async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    table: &Table<'_>,
) -> Result<(), ProvisionError> {
    let build_error = |e| AwsCallError::new("CreateTable", e);
    let spec = &table.spec;
    let mut attributes: Vec<&str> = vec![spec.partition_key];
    attributes.extend(spec.sort_key);
    for index in &spec.indexes {
        attributes.push(index.partition_key);
        attributes.extend(index.sort_key);
    }
    attributes.sort_unstable();
    attributes.dedup();
    let definitions = attributes
        .into_iter()
        .map(|name| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_error)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let indexes = spec
        .indexes
        .iter()
        .map(|index| {
            GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .set_key_schema(Some(key_schema(index.partition_key, index.sort_key)?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .map_err(build_error)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut request = client
        .create_table()
        .table_name(table.name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(definitions))
        .set_key_schema(Some(key_schema(spec.partition_key, spec.sort_key)?));
    if !indexes.is_empty() {
        request = request.set_global_secondary_indexes(Some(indexes));
    }
    if table.stream {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .map_err(build_error)?,
        );
    }
    match request.send().await {
        Ok(_) => Ok(()),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            Ok(())
        }
        Err(error) => Err(AwsCallError::new("CreateTable", error).into()),
    }
}

fn key_schema(hash: &str, range: Option<&str>) -> Result<Vec<KeySchemaElement>, AwsCallError> {
    let element = |name: &str, key_type| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .map_err(|e| AwsCallError::new("CreateTable", e))
    };
    let mut schema = vec![element(hash, KeyType::Hash)?];
    if let Some(range) = range {
        schema.push(element(range, KeyType::Range)?);
    }
    Ok(schema)
}

async fn wait_until_active(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), ProvisionError> {
    let started = std::time::Instant::now();
    loop {
        let output = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| AwsCallError::new("DescribeTable", e))?;
        let status = output.table.as_ref().and_then(|t| t.table_status.clone());
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        if started.elapsed() > ACTIVE_TIMEOUT {
            return Err(ProvisionError::NotActive {
                table: table.to_owned(),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn enable_ttl(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), ProvisionError> {
    // DynamoDB refuses to enable TTL twice, so look first.
    let current = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| AwsCallError::new("DescribeTimeToLive", e))?;
    let status = current
        .time_to_live_description
        .and_then(|d| d.time_to_live_status);
    if matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        return Ok(());
    }
    let specification = TimeToLiveSpecification::builder()
        .attribute_name(TTL_ATTRIBUTE)
        .enabled(true)
        .build()
        .map_err(|e| AwsCallError::new("UpdateTimeToLive", e))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(specification)
        .send()
        .await
        .map_err(|e| AwsCallError::new("UpdateTimeToLive", e))?;
    Ok(())
}

/// Creates the fan-out queue `name` with a dead-letter queue that takes a page after five
/// failed receives; returns the queue's URL. A `name` ending in `.fifo` makes both FIFO
/// queues, as the template's are (the dead-letter queue `{stem}-dlq.fifo`, since a FIFO
/// queue's dead-letter queue must be FIFO too), with the high-throughput settings; any
/// other name makes standard queues (the dead-letter queue `{name}-dlq`).
pub async fn create_fanout_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
) -> Result<String, ProvisionError> {
    let (dlq_name, fifo) = match name.strip_suffix(".fifo") {
        Some(stem) => (format!("{stem}-dlq.fifo"), true),
        None => (format!("{name}-dlq"), false),
    };
    let fifo_attributes = || {
        if !fifo {
            return Vec::new();
        }
        vec![
            (QueueAttributeName::FifoQueue, "true".to_owned()),
            (
                QueueAttributeName::ContentBasedDeduplication,
                "false".to_owned(),
            ),
            (
                QueueAttributeName::DeduplicationScope,
                "messageGroup".to_owned(),
            ),
            (
                QueueAttributeName::FifoThroughputLimit,
                "perMessageGroupId".to_owned(),
            ),
        ]
    };
    let mut dlq_attributes = fifo_attributes();
    dlq_attributes.push((
        QueueAttributeName::MessageRetentionPeriod,
        DLQ_RETENTION_SECS.to_string(),
    ));
    let dlq_url = create_queue(sqs, &dlq_name, dlq_attributes).await?;
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| AwsCallError::new("GetQueueAttributes", e))?;
    let dlq_arn = attributes
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or(ProvisionError::MissingQueueArn(dlq_name))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": MAX_RECEIVE_COUNT.to_string(),
    });
    let mut queue_attributes = fifo_attributes();
    queue_attributes.extend([
        (QueueAttributeName::RedrivePolicy, redrive.to_string()),
        (
            QueueAttributeName::VisibilityTimeout,
            VISIBILITY_TIMEOUT_SECS.to_string(),
        ),
    ]);
    create_queue(sqs, name, queue_attributes).await
}

/// CreateQueue is idempotent in SQS as long as the attributes match.
async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> Result<String, ProvisionError> {
    let output = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes.into_iter().collect()))
        .send()
        .await
        .map_err(|e| AwsCallError::new("CreateQueue", e))?;
    output.queue_url.ok_or_else(|| {
        AwsCallError::message("CreateQueue", format!("no URL for queue {name}")).into()
    })
}
