//! The subscription store on the subscriptions table.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update,
};

use super::records::{
    COUNTER_KEY, ClaimItem, SubscriptionItem, claim_partition, closed_partition, counter_partition,
};
use super::{
    Item, backend, batch_delete, batch_get, decode_listing, from_item, number, query_all, string,
    to_item,
};
use crate::aws::retry::RetryPolicy;
use crate::domain::{ConnectionId, Subscription, SubscriptionKey, Topic, now_secs};
use crate::ports::{Inserted, StoreError, SubscriptionStore};

/// [`SubscriptionStore`] on the subscriptions table.
///
/// Next to each subscription (partition: its topic) the store keeps a *claim* item in the
/// connection's own partition `#claims/{connectionId}`, written and deleted in the same
/// transaction as the subscription. The claim is what makes an operation id unique per
/// connection across topics, and it names the subscription's topic, so `delete` and
/// closing a connection read one partition, strongly consistently, where a global
/// secondary index would only be eventually consistent: a `complete` or a disconnect
/// arriving right after a `subscribe` still finds it. The table has no index, so a
/// subscription costs no write beyond its two items and its connection's counter (see
/// `counter_partition`), which makes the per-connection limit one conditional write.
///
/// A `complete` that finds no subscription leaves a tombstone in the claim's place (a claim
/// marked `completed`, with its expiry as `ttl`), and a closed connection an item in
/// `#closed/{connectionId}`; the insert's transaction puts the claim only where no live
/// tombstone is and checks that no live closed mark is, so whichever comes second wins.
#[derive(Clone, Debug)]
pub struct DynamoDbSubscriptionStore {
    client: Client,
    table: String,
    retry: RetryPolicy,
}

/// The key of an item of the subscriptions table: its partition (a topic, or one of the
/// store's own partitions) and its sort key.
pub(super) fn item_key(topic: &str, subscription_key: &str) -> Item {
    HashMap::from([
        ("topic".to_owned(), string(topic)),
        ("subscriptionKey".to_owned(), string(subscription_key)),
    ])
}

/// What a transaction came to, beyond success.
pub(super) enum Cancelled {
    /// A condition failed: the decision the caller asked for. The positions of the items
    /// whose condition failed.
    Condition(Vec<usize>),
    /// Another transaction held one of the items; worth trying again.
    Contention,
}

impl DynamoDbSubscriptionStore {
    /// A store on the subscriptions table named `table`, retrying with the default
    /// [`RetryPolicy`].
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            retry: RetryPolicy::default(),
        }
    }

    /// How unprocessed batch entries and contended transactions are retried.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The deployed name of the subscriptions table.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn key(&self, topic: &str, subscription_key: &str) -> Item {
        item_key(topic, subscription_key)
    }

    /// Runs a transaction, retrying it while it only collides with concurrent ones.
    /// `Ok(false)` when one of its conditions failed.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<bool, StoreError> {
        Ok(self.transact_conditions(items).await?.is_ok())
    }

    /// As [`Self::transact`], telling which items' conditions failed.
    async fn transact_conditions(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<usize>>, StoreError> {
        let mut attempt = 0;
        loop {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            match result.map_err(classify) {
                Ok(_) => return Ok(Ok(())),
                Err(Ok(Cancelled::Condition(failed))) => return Ok(Err(failed)),
                Err(Ok(Cancelled::Contention)) if attempt < self.retry.retries => {
                    self.retry.sleep(attempt).await;
                    attempt += 1;
                }
                Err(Ok(Cancelled::Contention)) => {
                    return Err(StoreError::backend(crate::aws::AwsCallError::message(
                        "TransactWriteItems",
                        "still conflicting with concurrent transactions after retries",
                    )));
                }
                Err(Err(error)) => return Err(error),
            }
        }
    }

    /// Adds `by` to the connection's subscription counter (creating it at 0, never taking
    /// it below 0 from a missing counter), expiring with its subscriptions at `ttl`.
    fn count_change(
        &self,
        connection: &ConnectionId,
        by: i64,
        ttl: u64,
    ) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        let start = if by < 0 { -by } else { 0 };
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(self.key(&counter_partition(connection), COUNTER_KEY)))
            .update_expression("SET #n = if_not_exists(#n, :start) + :by, #ttl = :ttl")
            .expression_attribute_names("#n", "subscriptions")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":start", number(start))
            .expression_attribute_values(":by", number(by))
            .expression_attribute_values(":ttl", number(ttl as i64))
    }

    /// One item, read consistently.
    async fn get(&self, key: Item) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend("GetItem"))?;
        Ok(output.item)
    }

    /// The claim of one operation id, read consistently.
    async fn claim(&self, key: &SubscriptionKey) -> Result<Option<ClaimItem>, StoreError> {
        let claim = self.key(&claim_partition(&key.connection_id), &key.encode());
        self.get(claim).await?.map(from_item).transpose()
    }

    async fn claims(&self, id: &ConnectionId) -> Result<Vec<ClaimItem>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#topic = :claims")
            .expression_attribute_names("#topic", "topic")
            .expression_attribute_values(":claims", string(claim_partition(id)))
            .consistent_read(true);
        Ok(decode_listing(query_all(query).await?, &self.table))
    }
}

impl DynamoDbSubscriptionStore {
    fn closed_key(&self, id: &ConnectionId) -> Item {
        self.key(&closed_partition(id), id.as_str())
    }

    /// Deletes every subscription of a connection, with its claims and tombstones and its
    /// counter; returns how many subscriptions there were.
    async fn delete_all_of(&self, id: &ConnectionId) -> Result<usize, StoreError> {
        let claims = self.claims(id).await?;
        let partition = claim_partition(id);
        // Subscriptions first, claims last: should a batch fail half-way, the claims left
        // behind still lead a retry to whatever remains.
        let subscriptions = claims
            .iter()
            .filter(|claim| claim.is_subscription())
            .map(|claim| self.key(&claim.subscribed_topic, &claim.subscription_key));
        let own_claims = claims
            .iter()
            .map(|claim| self.key(&partition, &claim.subscription_key));
        let keys = subscriptions.chain(own_claims).collect();
        batch_delete(&self.client, &self.table, keys, self.retry).await?;
        // The counter last, once nothing it counts is left.
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.key(&counter_partition(id), COUNTER_KEY)))
            .send()
            .await
            .map_err(backend("DeleteItem"))?;
        Ok(claims
            .iter()
            .filter(|claim| claim.is_subscription())
            .count())
    }

    /// Whether the connection carries an unexpired closed mark (a consistent read).
    async fn is_closed(&self, id: &ConnectionId) -> Result<bool, StoreError> {
        let ttl = self
            .get(self.closed_key(id))
            .await?
            .as_ref()
            .and_then(|item| item.get("ttl"))
            .and_then(|ttl| ttl.as_n().ok())
            .and_then(|ttl| ttl.parse::<u64>().ok());
        Ok(ttl.is_some_and(|ttl| ttl > now_secs()))
    }

    /// Deletes a tombstone; `false` when it was no longer there.
    async fn remove_tombstone(&self, key: &SubscriptionKey) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(
                self.key(&claim_partition(&key.connection_id), &key.encode()),
            ))
            .condition_expression("#completed = :yes")
            .expression_attribute_names("#completed", "completed")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(error) => Err(backend("DeleteItem")(error)),
        }
    }

    /// Deletes a subscription and its claim; `false` when another call deleted them first.
    async fn delete_claimed(
        &self,
        key: &SubscriptionKey,
        claim: &ClaimItem,
    ) -> Result<bool, StoreError> {
        let encoded = key.encode();
        // The claim's condition makes one of two concurrent deletes the one that found it.
        let delete_claim = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(
                self.key(&claim_partition(&key.connection_id), &encoded),
            ))
            .condition_expression("attribute_exists(#key) AND attribute_not_exists(#completed)")
            .expression_attribute_names("#key", "subscriptionKey")
            .expression_attribute_names("#completed", "completed")
            .build()
            .map_err(backend("TransactWriteItems"))?;
        let delete_subscription = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(self.key(&claim.subscribed_topic, &encoded)))
            .build()
            .map_err(backend("TransactWriteItems"))?;
        let count = self
            .count_change(&key.connection_id, -1, claim.ttl)
            .build()
            .map_err(backend("TransactWriteItems"))?;
        self.transact(vec![
            TransactWriteItem::builder().delete(delete_claim).build(),
            TransactWriteItem::builder()
                .delete(delete_subscription)
                .build(),
            TransactWriteItem::builder().update(count).build(),
        ])
        .await
    }
}

/// Sorts a failed transaction into a failed condition, contention, or anything else.
pub(super) fn classify(
    error: SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Result<Cancelled, StoreError> {
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        error.as_service_error()
    {
        let codes: Vec<&str> = cancelled
            .cancellation_reasons()
            .iter()
            .map(|reason| reason.code().unwrap_or("None"))
            .collect();
        if codes.contains(&"ConditionalCheckFailed") {
            let failed = (0..codes.len())
                .filter(|&i| codes[i] == "ConditionalCheckFailed")
                .collect();
            return Ok(Cancelled::Condition(failed));
        }
        if codes.contains(&"TransactionConflict") {
            return Ok(Cancelled::Contention);
        }
    }
    if error
        .as_service_error()
        .is_some_and(|e| e.is_transaction_in_progress_exception())
    {
        return Ok(Cancelled::Contention);
    }
    Err(backend("TransactWriteItems")(error))
}

#[async_trait]
impl SubscriptionStore for DynamoDbSubscriptionStore {
    async fn insert_within(
        &self,
        subscription: &Subscription,
        max_per_connection: usize,
    ) -> Result<Inserted, StoreError> {
        let key = subscription.key.encode();
        let connection = &subscription.key.connection_id;
        let claim = ClaimItem {
            topic: claim_partition(connection),
            subscription_key: key.clone(),
            subscribed_topic: subscription.topic.to_string(),
            completed: false,
            ttl: subscription.expires_at,
        };
        let record = SubscriptionItem::try_from(subscription)?;
        let mut attempt = 0;
        loop {
            let now = AttributeValue::N(now_secs().to_string());
            // The claim goes where no claim is, or over a tombstone that has expired.
            let put_claim = Put::builder()
                .table_name(&self.table)
                .set_item(Some(to_item(&claim)?))
                .condition_expression(
                    "attribute_not_exists(#key) OR (#completed = :yes AND #ttl <= :now)",
                )
                .expression_attribute_names("#key", "subscriptionKey")
                .expression_attribute_names("#completed", "completed")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .expression_attribute_values(":now", now.clone())
                .build()
                .map_err(backend("TransactWriteItems"))?;
            let put_subscription = Put::builder()
                .table_name(&self.table)
                .set_item(Some(to_item(&record)?))
                .condition_expression("attribute_not_exists(#key)")
                .expression_attribute_names("#key", "subscriptionKey")
                .build()
                .map_err(backend("TransactWriteItems"))?;
            let open = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(self.closed_key(connection)))
                .condition_expression("attribute_not_exists(#key) OR #ttl <= :now")
                .expression_attribute_names("#key", "subscriptionKey")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":now", now)
                .build()
                .map_err(backend("TransactWriteItems"))?;
            // The connection's counter, below the limit.
            let count = self.count_change(connection, 1, subscription.expires_at);
            let count = if max_per_connection == usize::MAX {
                count
            } else {
                count
                    .condition_expression("attribute_not_exists(#n) OR #n < :max")
                    .expression_attribute_values(":max", number(max_per_connection as i64))
            };
            let count = count.build().map_err(backend("TransactWriteItems"))?;
            let items = vec![
                TransactWriteItem::builder().put(put_claim).build(),
                TransactWriteItem::builder().put(put_subscription).build(),
                TransactWriteItem::builder().condition_check(open).build(),
                TransactWriteItem::builder().update(count).build(),
            ];
            let failed = match self.transact_conditions(items).await? {
                Ok(()) => return Ok(Inserted::Stored),
                Err(failed) => failed,
            };
            // Which condition failed: a closed connection, a tombstone, a duplicate, or the
            // limit.
            if self.is_closed(connection).await? {
                return Ok(Inserted::ConnectionClosed);
            }
            let found = self.claim(&subscription.key).await?;
            if found.as_ref().is_some_and(ClaimItem::is_subscription) {
                return Err(StoreError::Conflict(format!(
                    "subscription {key} already exists"
                )));
            }
            // A live tombstone: this insert uses it up. Should another call take it first,
            // or should it expire meanwhile, the next attempt sees what is left.
            let tombstone = found.is_some_and(|claim| claim.ttl > now_secs());
            if tombstone && self.remove_tombstone(&subscription.key).await? {
                return Ok(Inserted::Completed);
            }
            if failed.contains(&3) {
                return Err(StoreError::LimitReached(format!(
                    "{connection} holds {max_per_connection} subscriptions"
                )));
            }
            if attempt >= self.retry.retries {
                return Err(StoreError::backend(crate::aws::AwsCallError::message(
                    "TransactWriteItems",
                    "the subscription's claim kept changing under the insert",
                )));
            }
            attempt += 1;
        }
    }

    async fn complete(
        &self,
        key: &SubscriptionKey,
        tombstone_until: u64,
    ) -> Result<bool, StoreError> {
        let mut attempt = 0;
        loop {
            match self.claim(key).await? {
                Some(claim) if claim.is_subscription() => {
                    if self.delete_claimed(key, &claim).await? {
                        return Ok(true);
                    }
                }
                Some(claim) if claim.ttl >= tombstone_until => return Ok(false),
                _ => {
                    let tombstone = ClaimItem {
                        topic: claim_partition(&key.connection_id),
                        subscription_key: key.encode(),
                        subscribed_topic: String::new(),
                        completed: true,
                        ttl: tombstone_until,
                    };
                    // Only where no subscription is: one stored meanwhile is deleted by
                    // the next attempt instead.
                    let result = self
                        .client
                        .put_item()
                        .table_name(&self.table)
                        .set_item(Some(to_item(&tombstone)?))
                        .condition_expression("attribute_not_exists(#key) OR #completed = :yes")
                        .expression_attribute_names("#key", "subscriptionKey")
                        .expression_attribute_names("#completed", "completed")
                        .expression_attribute_values(":yes", AttributeValue::Bool(true))
                        .send()
                        .await;
                    match result {
                        Ok(_) => return Ok(false),
                        Err(error)
                            if error
                                .as_service_error()
                                .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                        Err(error) => return Err(backend("PutItem")(error)),
                    }
                }
            }
            if attempt >= self.retry.retries {
                return Err(StoreError::backend(crate::aws::AwsCallError::message(
                    "PutItem",
                    "the subscription's claim kept changing under the complete",
                )));
            }
            attempt += 1;
        }
    }

    async fn close_connection(
        &self,
        id: &ConnectionId,
        closed_until: u64,
    ) -> Result<usize, StoreError> {
        // The mark first: an insert that commits before it is found and deleted below, one
        // after it finds the mark.
        let mut mark = self.closed_key(id);
        mark.insert(
            "ttl".to_owned(),
            AttributeValue::N(closed_until.to_string()),
        );
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(mark))
            .send()
            .await
            .map_err(backend("PutItem"))?;
        self.delete_all_of(id).await
    }

    async fn contains(&self, key: &SubscriptionKey) -> Result<bool, StoreError> {
        Ok(self
            .claim(key)
            .await?
            .is_some_and(|claim| claim.is_subscription()))
    }

    async fn delete(&self, key: &SubscriptionKey) -> Result<bool, StoreError> {
        match self.claim(key).await? {
            Some(claim) if claim.is_subscription() => self.delete_claimed(key, &claim).await,
            _ => Ok(false),
        }
    }

    async fn by_topic(&self, topic: &Topic) -> Result<Vec<Subscription>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#topic = :topic")
            .expression_attribute_names("#topic", "topic")
            .expression_attribute_values(":topic", string(topic.as_str()))
            .consistent_read(true);
        Ok(live(decode_listing(query_all(query).await?, &self.table)))
    }

    async fn get_many(
        &self,
        topic: &Topic,
        keys: &[SubscriptionKey],
    ) -> Result<Vec<Subscription>, StoreError> {
        // BatchGetItem rejects a request that names one key twice.
        let mut seen = HashSet::new();
        let unique: Vec<Item> = keys
            .iter()
            .map(SubscriptionKey::encode)
            .filter(|k| seen.insert(k.clone()))
            .map(|k| self.key(topic.as_str(), &k))
            .collect();
        let items = batch_get(&self.client, &self.table, unique, self.retry).await?;
        let found: HashMap<SubscriptionKey, Subscription> =
            live(decode_listing(items, &self.table))
                .into_iter()
                .map(|s| (s.key.clone(), s))
                .collect();
        // In the order asked for, as the in-memory store answers.
        Ok(keys.iter().filter_map(|k| found.get(k).cloned()).collect())
    }

    async fn count_by_connection(&self, id: &ConnectionId) -> Result<usize, StoreError> {
        // One claim per subscription, in the connection's own partition.
        Ok(self
            .claims(id)
            .await?
            .iter()
            .filter(|claim| claim.is_subscription())
            .count())
    }

    async fn by_connection(&self, id: &ConnectionId) -> Result<Vec<SubscriptionKey>, StoreError> {
        let now = now_secs();
        Ok(self
            .claims(id)
            .await?
            .into_iter()
            .filter(|claim| claim.is_subscription() && claim.ttl > now)
            .filter_map(|claim| SubscriptionKey::decode(&claim.subscription_key))
            .collect())
    }
}

/// The subscriptions among `items` that have not expired.
fn live(items: Vec<SubscriptionItem>) -> Vec<Subscription> {
    let now = now_secs();
    items
        .into_iter()
        .filter(|item| item.ttl > now)
        .filter_map(|item| {
            let key = item.subscription_key.clone();
            Subscription::try_from(item)
                .inspect_err(|error| tracing::warn!(%key, %error, "skipping a subscription"))
                .ok()
        })
        .collect()
}
