//! Creates the tables and the fan-out queue, for the local mode and the tests (on AWS the
//! SAM template does it). Every step is idempotent: what exists already is left as it is.

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

/// The example app's index of boards by owner: `owner` + `pk`, all attributes.
pub const BY_OWNER_INDEX: &str = "byOwner";

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

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Aws(#[from] AwsCallError),
    #[error("table {table} is not active after {waited:?}")]
    NotActive { table: String, waited: Duration },
    #[error("queue {0} reports no ARN")]
    MissingQueueArn(String),
}

struct TableSpec<'a> {
    name: &'a str,
    hash: &'a str,
    range: Option<&'a str>,
    indexes: Vec<IndexSpec>,
    /// Streams `NEW_IMAGE` when set.
    stream: bool,
}

struct IndexSpec {
    name: &'static str,
    hash: &'static str,
    range: Option<&'static str>,
    projection: ProjectionType,
}

/// Creates the connections, subscriptions and events tables (and the app's table when
/// named), pay per request, with their indexes, the events stream and TTL on `ttl`.
pub async fn create_tables(
    client: &aws_sdk_dynamodb::Client,
    names: &TableNames,
    app_table: Option<&str>,
) -> Result<(), ProvisionError> {
    let mut specs = vec![
        TableSpec {
            name: &names.connections,
            hash: "connectionId",
            range: None,
            indexes: vec![IndexSpec {
                name: BY_PRINCIPAL_INDEX,
                hash: "principal",
                range: None,
                projection: ProjectionType::All,
            }],
            stream: false,
        },
        TableSpec {
            name: &names.subscriptions,
            hash: "topic",
            range: Some("subscriptionKey"),
            // No index: a connection's subscriptions are found through its claim items.
            indexes: Vec::new(),
            stream: false,
        },
        TableSpec {
            name: &names.events,
            hash: "topic",
            range: Some("eventId"),
            indexes: Vec::new(),
            stream: true,
        },
    ];
    if let Some(name) = app_table {
        specs.push(TableSpec {
            name,
            hash: "pk",
            range: Some("sk"),
            indexes: vec![IndexSpec {
                name: BY_OWNER_INDEX,
                hash: "owner",
                range: Some("pk"),
                projection: ProjectionType::All,
            }],
            stream: false,
        });
    }
    for spec in &specs {
        create_table(client, spec).await?;
    }
    for spec in &specs {
        wait_until_active(client, spec.name).await?;
        enable_ttl(client, spec.name).await?;
    }
    Ok(())
}

async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    spec: &TableSpec<'_>,
) -> Result<(), ProvisionError> {
    let build_error = |e| AwsCallError::new("CreateTable", e);
    let mut attributes: Vec<&str> = vec![spec.hash];
    attributes.extend(spec.range);
    for index in &spec.indexes {
        attributes.push(index.hash);
        attributes.extend(index.range);
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
                .set_key_schema(Some(key_schema(index.hash, index.range)?))
                .projection(
                    Projection::builder()
                        .projection_type(index.projection.clone())
                        .build(),
                )
                .build()
                .map_err(build_error)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut request = client
        .create_table()
        .table_name(spec.name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(definitions))
        .set_key_schema(Some(key_schema(spec.hash, spec.range)?));
    if !indexes.is_empty() {
        request = request.set_global_secondary_indexes(Some(indexes));
    }
    if spec.stream {
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

/// Creates the fan-out queue `name` with a dead-letter queue `{name}-dlq` that takes a page
/// after five failed receives; returns the queue's URL.
pub async fn create_fanout_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
) -> Result<String, ProvisionError> {
    let dlq_name = format!("{name}-dlq");
    let dlq_url = create_queue(
        sqs,
        &dlq_name,
        vec![(
            QueueAttributeName::MessageRetentionPeriod,
            DLQ_RETENTION_SECS.to_string(),
        )],
    )
    .await?;
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
    create_queue(
        sqs,
        name,
        vec![
            (QueueAttributeName::RedrivePolicy, redrive.to_string()),
            (
                QueueAttributeName::VisibilityTimeout,
                VISIBILITY_TIMEOUT_SECS.to_string(),
            ),
        ],
    )
    .await
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
