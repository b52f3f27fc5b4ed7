//! The ports' contract (`broker_tests::contract`) run against each backend: the in-memory
//! adapters, the database file's (redb), and the DynamoDB and SQS adapters on moto.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use broker::aws::{
    DynamoDbConnectionStore, DynamoDbEventLog, DynamoDbPageMarks, DynamoDbQuotas,
    DynamoDbReplayGate, DynamoDbSubscriptionStore, SqsFanoutQueue,
};
use broker::memory::MemoryTable;
use broker::memory::{
    ChannelFanoutQueue, MemoryConnectionStore, MemoryEventLog, MemoryPageMarks, MemoryQuotas,
    MemorySubscriptionStore,
};
use broker::{AppTable, FanoutPage};
use broker_tests::aws::{FreshTables, SerialMoto, fresh_queue, fresh_tables, fresh_tables_at};
use broker_tests::contract::{self, AppItems, Stores};
use serde_json::Value;

/// The app items of an in-memory store.
struct MemoryItems(MemoryTable<Value>);

#[async_trait::async_trait]
impl AppItems for MemoryItems {
    async fn get(&self, partition: &str, sort: &str) -> Option<Value> {
        self.0.get(partition, sort).unwrap()
    }
}

/// The app items of a database file.
struct FileItems(broker::file::Table<Value>);

#[async_trait::async_trait]
impl AppItems for FileItems {
    async fn get(&self, partition: &str, sort: &str) -> Option<Value> {
        self.0.get(partition, sort).await.unwrap()
    }
}

/// The app items of a DynamoDB table keyed by `pk` and `sk`, read consistently.
struct DynamoDbItems {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

#[async_trait::async_trait]
impl AppItems for DynamoDbItems {
    async fn get(&self, partition: &str, sort: &str) -> Option<Value> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(partition.to_owned()))
            .key("sk", AttributeValue::S(sort.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        let mut item = output.item?;
        item.remove("pk");
        item.remove("sk");
        Some(serde_dynamo::from_item(item).unwrap())
    }
}

/// The app table the commit checks write to.
const APP_TABLE: &str = "things";

fn memory() -> Stores {
    let subscriptions = MemorySubscriptionStore::default();
    let events = MemoryEventLog::default();
    let app_items = Arc::new(MemoryItems(events.tables().table(APP_TABLE)));
    Stores {
        connections: Arc::new(MemoryConnectionStore::default()),
        replay_gate: Arc::new(subscriptions.replay_gate()),
        subscriptions: Arc::new(subscriptions),
        page_marks: Arc::new(MemoryPageMarks::default()),
        quotas: Arc::new(MemoryQuotas::default()),
        events: Arc::new(events),
        app_table: AppTable::new(APP_TABLE),
        app_items,
    }
}

/// A new database file. It is unlinked at once: the open store keeps using it, and nothing
/// is left behind.
fn file() -> Stores {
    let path = std::env::temp_dir().join(format!("broker-contract-{}.redb", ulid::Ulid::new()));
    let store = broker::file::FileStore::open(&path).expect("a new database file");
    std::fs::remove_file(&path).expect("unlink the database file");
    Stores {
        connections: Arc::new(store.connections()),
        subscriptions: Arc::new(store.subscriptions()),
        replay_gate: Arc::new(store.replay_gate()),
        page_marks: Arc::new(store.page_marks()),
        quotas: Arc::new(store.quotas()),
        events: Arc::new(store.events()),
        app_table: AppTable::new(APP_TABLE),
        app_items: Arc::new(FileItems(store.table(APP_TABLE))),
    }
}

async fn dynamodb() -> Stores {
    dynamodb_on(&fresh_tables().await)
}

fn dynamodb_on(tables: &FreshTables) -> Stores {
    let client = tables.dynamodb.clone();
    Stores {
        connections: Arc::new(DynamoDbConnectionStore::new(
            client.clone(),
            &tables.names.connections,
        )),
        subscriptions: Arc::new(DynamoDbSubscriptionStore::new(
            client.clone(),
            &tables.names.subscriptions,
        )),
        replay_gate: Arc::new(DynamoDbReplayGate::new(
            client.clone(),
            &tables.names.subscriptions,
        )),
        page_marks: Arc::new(DynamoDbPageMarks::new(
            client.clone(),
            &tables.names.subscriptions,
        )),
        quotas: Arc::new(DynamoDbQuotas::new(
            client.clone(),
            &tables.names.subscriptions,
        )),
        events: Arc::new(
            DynamoDbEventLog::new(client.clone(), &tables.names.events)
                .with_void_marks(&tables.names.subscriptions),
        ),
        // The boards app's table, keyed by `pk` and `sk`.
        app_table: AppTable::new(&tables.app_table),
        app_items: Arc::new(DynamoDbItems {
            client,
            table: tables.app_table.clone(),
        }),
    }
}

/// One test per backend for each check of the store contract.
macro_rules! store_contract {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $check() {
                    super::contract::$check(super::memory()).await;
                }
            )*
        }
        mod file {
            $(
                #[tokio::test]
                async fn $check() {
                    super::contract::$check(super::file()).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test]
                async fn $check() {
                    super::contract::$check(super::dynamodb().await).await;
                }
            )*
        }
    };
}

store_contract!(
    connection_put_get_delete_round_trip,
    a_second_put_replaces_the_connection,
    expired_connections_are_invisible_to_get_and_by_user,
    mark_initialised_succeeds_once_then_conflicts,
    by_user_finds_every_connection_of_one_user,
    subscriptions_round_trip_through_by_topic,
    by_topic_returns_every_subscription_of_a_large_topic,
    contains_tells_whether_an_operation_id_is_taken,
    a_duplicate_operation_id_conflicts_whatever_the_topic,
    delete_removes_one_subscription_and_frees_its_operation_id,
    expired_subscriptions_are_filtered_on_every_read,
    count_by_connection_counts_one_connections_subscriptions,
    close_connection_removes_all_of_one_connection,
    get_many_answers_in_the_order_asked,
    events_append_once_and_read_back,
    expired_events_are_invisible,
    an_append_past_its_deadline_stores_nothing,
    a_user_called_star_is_refused_as_an_audience,
    events_after_a_cursor_come_in_id_order,
    delivery_marks_are_read_back,
    by_connection_lists_the_live_subscriptions_of_one_connection,
    a_complete_before_its_subscribe_leaves_a_tombstone_the_insert_respects,
    an_expired_tombstone_is_ignored,
    a_closed_connection_stores_no_subscription,
    pages_on_their_way_are_marked_per_topic,
    a_replaying_subscription_holds_events_until_it_hands_over,
    quota_takes_stop_at_the_limit_and_releases_free_slots,
    an_expired_quota_counts_as_zero,
    a_quota_set_replaces_the_count,
    a_commit_stores_the_changes_and_the_event_together,
    a_commit_whose_change_fails_stores_no_event,
    a_commit_whose_event_fails_stores_no_change,
    a_retried_commit_is_not_applied_twice,
);

/// The checks of concurrent calls, one test per backend. On DynamoDB they run on a moto of
/// their own that handles one request at a time, as DynamoDB isolates each request: the
/// shared moto runs concurrent transactions interleaved, so a concurrent reader can see one
/// half-applied, or rolled back over another's writes.
macro_rules! concurrency_contract {
    ($($check:ident),* $(,)?) => {
        mod concurrent {
            mod memory {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $check() {
                        crate::contract::$check(crate::memory()).await;
                    }
                )*
            }
            mod file {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $check() {
                        crate::contract::$check(crate::file()).await;
                    }
                )*
            }
            mod dynamodb {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $check() {
                        let moto = crate::SerialMoto::start().await;
                        let tables = crate::fresh_tables_at(&moto.endpoint).await;
                        crate::contract::$check(crate::dynamodb_on(&tables)).await;
                    }
                )*
            }
        }
    };
}

concurrency_contract!(
    racing_completes_and_closes_leave_no_subscription,
    the_per_connection_limit_holds_under_concurrent_inserts,
    concurrent_quota_takes_grant_exactly_the_limit,
);

#[tokio::test]
async fn memory_fanout_pages_come_back_whole() {
    let (queue, mut pages) = ChannelFanoutQueue::new();
    contract::fanout_pages_come_back_whole(Arc::new(queue), async || {
        let mut received = Vec::new();
        while let Ok(page) = pages.try_recv() {
            received.push(page);
        }
        received
    })
    .await;
}

#[tokio::test]
async fn sqs_fanout_pages_come_back_whole() {
    let (sqs, url) = fresh_queue().await;
    let queue = SqsFanoutQueue::new(sqs.clone(), &url);
    contract::fanout_pages_come_back_whole(Arc::new(queue), async || {
        let output = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let mut received = Vec::new();
        for message in output.messages.unwrap_or_default() {
            let page: FanoutPage = serde_json::from_str(message.body().unwrap()).unwrap();
            received.push(page);
            sqs.delete_message()
                .queue_url(&url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        received
    })
    .await;
}
