//! The local mode on DynamoDB (an emulator or a real account): the broker's tables, the
//! events table's real stream polled through `aws-sdk-dynamodbstreams` as Lambda's event
//! source mapping does, and optionally SQS for the fan-out worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aws_lambda_events::dynamodb::{EventRecord, StreamViewType};
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use broker::Broker;
use broker::aws::{
    DynamoDbConnectionStore, DynamoDbEventLog, DynamoDbSubscriptionStore, SqsFanoutQueue,
    TableNames,
};
use broker::{FanoutQueue, Ports};
use graphql_api::app::dynamodb::DynamoDbBoardStore;

use crate::stream::{BATCH_SIZE, drive};

/// Where the local mode keeps its state when not embedded.
#[derive(Clone, Debug)]
pub struct AwsBackend {
    /// One endpoint for DynamoDB, DynamoDB Streams and SQS (moto serves all three); `None`
    /// for the account in the environment.
    pub endpoint: Option<String>,
    pub tables: TableNames,
    pub app_table: String,
    /// The fan-out queue; without one, every fan-out is delivered by the stream publisher.
    pub fanout_queue_url: Option<String>,
    /// Create the tables (and nothing else) when they do not exist.
    pub create_tables: bool,
}

pub(crate) struct AwsParts {
    pub ports_without_gateway: PortsWithoutGateway,
    pub boards: Arc<DynamoDbBoardStore>,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub stream_arn: String,
    pub sqs: Option<(aws_sdk_sqs::Client, String)>,
}

pub(crate) struct PortsWithoutGateway {
    pub connections: Arc<DynamoDbConnectionStore>,
    pub subscriptions: Arc<DynamoDbSubscriptionStore>,
    pub events: Arc<DynamoDbEventLog>,
    pub fanout: Option<Arc<dyn FanoutQueue>>,
}

impl PortsWithoutGateway {
    pub fn with_gateway(self, gateway: Arc<dyn broker::ConnectionGateway>) -> Ports {
        Ports {
            connections: self.connections,
            subscriptions: self.subscriptions,
            events: self.events,
            gateway,
            fanout: self.fanout,
        }
    }
}

pub(crate) async fn connect(backend: &AwsBackend) -> anyhow::Result<AwsParts> {
    let sdk = broker::aws::sdk_config(backend.endpoint.as_deref()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    if backend.create_tables {
        broker::aws::provision::create_tables(&dynamodb, &backend.tables, Some(&backend.app_table))
            .await
            .context("creating the tables")?;
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
    let fanout = sqs.as_ref().map(|(client, url)| {
        Arc::new(SqsFanoutQueue::new(client.clone(), url.clone())) as Arc<dyn FanoutQueue>
    });
    Ok(AwsParts {
        ports_without_gateway: PortsWithoutGateway {
            connections: Arc::new(DynamoDbConnectionStore::new(
                dynamodb.clone(),
                backend.tables.connections.clone(),
            )),
            subscriptions: Arc::new(DynamoDbSubscriptionStore::new(
                dynamodb.clone(),
                backend.tables.subscriptions.clone(),
            )),
            events: Arc::new(DynamoDbEventLog::new(
                dynamodb.clone(),
                backend.tables.events.clone(),
            )),
            fanout,
        },
        boards: Arc::new(DynamoDbBoardStore::new(dynamodb, backend.app_table.clone())),
        streams: aws_sdk_dynamodbstreams::Client::new(&sdk),
        stream_arn,
        sqs,
    })
}

/// A DynamoDB Streams record as Lambda hands it to a function.
pub fn lambda_record(record: &Record) -> Option<EventRecord> {
    let change = record.dynamodb()?;
    let mut out = EventRecord::default();
    out.event_id = record.event_id().unwrap_or_default().to_owned();
    out.event_name = record.event_name()?.as_str().to_owned();
    out.event_source = Some("aws:dynamodb".to_owned());
    out.event_version = record.event_version().map(str::to_owned);
    out.aws_region = record.aws_region().unwrap_or_default().to_owned();
    out.change.keys = change.keys().cloned().unwrap_or_default().into();
    out.change.new_image = change.new_image().cloned().unwrap_or_default().into();
    out.change.old_image = change.old_image().cloned().unwrap_or_default().into();
    out.change.sequence_number = change.sequence_number().map(str::to_owned);
    out.change.size_bytes = change.size_bytes().unwrap_or_default();
    out.change.stream_view_type = Some(StreamViewType::NewImage);
    Some(out)
}

/// Polls every shard of the stream from the newest record on, driving the publisher.
pub(crate) async fn poll_stream(
    broker: Broker,
    streams: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    poll_interval: Duration,
) {
    // An empty poll interval would spin; Lambda itself never polls faster than this.
    let pause = poll_interval.max(Duration::from_millis(10));
    let mut iterators: HashMap<String, Option<String>> = HashMap::new();
    let mut first_listing = true;
    loop {
        if let Err(e) = refresh_shards(&streams, &stream_arn, &mut iterators, first_listing).await {
            tracing::warn!(error = %e, "listing stream shards failed");
        }
        first_listing = false;
        for (shard, iterator) in iterators.iter_mut() {
            let Some(current) = iterator.clone() else {
                continue;
            };
            match streams
                .get_records()
                .shard_iterator(current)
                .limit(BATCH_SIZE as i32)
                .send()
                .await
            {
                Ok(output) => {
                    *iterator = output.next_shard_iterator().map(str::to_owned);
                    let records: Vec<EventRecord> =
                        output.records().iter().filter_map(lambda_record).collect();
                    if !records.is_empty() {
                        drive(&broker, records).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(shard, error = %e, "reading the stream failed");
                    *iterator = None;
                }
            }
        }
        iterators.retain(|_, iterator| iterator.is_some());
        tokio::time::sleep(pause).await;
    }
}

async fn refresh_shards(
    streams: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
    iterators: &mut HashMap<String, Option<String>>,
    at_start: bool,
) -> anyhow::Result<()> {
    let description = streams
        .describe_stream()
        .stream_arn(stream_arn)
        .send()
        .await?;
    let shards = description
        .stream_description()
        .map(|d| d.shards().to_vec())
        .unwrap_or_default();
    for shard in shards {
        let Some(id) = shard.shard_id() else { continue };
        if iterators.contains_key(id) {
            continue;
        }
        // Shards open when the gateway starts are read from their newest record, as a new
        // event source mapping with StartingPosition LATEST does; later shards from the start.
        let kind = if at_start {
            ShardIteratorType::Latest
        } else {
            ShardIteratorType::TrimHorizon
        };
        let iterator = streams
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(id)
            .shard_iterator_type(kind)
            .send()
            .await?;
        iterators.insert(id.to_owned(), iterator.shard_iterator().map(str::to_owned));
    }
    Ok(())
}

/// The SQS event source mapping: receive pages, run the worker, delete what succeeded.
/// Failed messages reappear after their visibility timeout and reach the dead-letter queue
/// after the queue's maxReceiveCount.
pub(crate) async fn poll_queue(broker: Broker, sqs: aws_sdk_sqs::Client, queue_url: String) {
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await;
        let messages = match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "receiving fan-out pages failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let mut event = SqsEvent::default();
        event.records = messages
            .iter()
            .map(|m| {
                let mut message = SqsMessage::default();
                message.message_id = m.message_id().map(str::to_owned);
                message.receipt_handle = m.receipt_handle().map(str::to_owned);
                message.body = m.body().map(str::to_owned);
                message.event_source = Some("aws:sqs".to_owned());
                message
            })
            .collect();
        let response = publisher::fanout::handle(&broker, event).await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        for message in &messages {
            if failed.contains(&message.message_id().unwrap_or_default()) {
                continue;
            }
            let Some(handle) = message.receipt_handle() else {
                continue;
            };
            let deleted = sqs
                .delete_message()
                .queue_url(&queue_url)
                .receipt_handle(handle)
                .send()
                .await;
            if let Err(e) = deleted {
                tracing::warn!(error = %e, "deleting a delivered page failed");
            }
        }
    }
}
