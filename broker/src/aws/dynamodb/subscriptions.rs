use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};

use super::records::{ClaimItem, SubscriptionItem, claim_partition};
use super::{
    Item, backend, batch_delete, batch_get, decode_listing, from_item, query_all, string, to_item,
};
use crate::aws::retry::RetryPolicy;
use crate::domain::{ConnectionId, Subscription, SubscriptionKey, Topic, now_secs};
use crate::ports::{StoreError, SubscriptionStore};

/// [`SubscriptionStore`] on the subscriptions table.
///
/// Next to each subscription (partition: its topic) the store keeps a *claim* item in the
/// connection's own partition `#claims/{connectionId}`, written and deleted in the same
/// transaction as the subscription. The claim is what makes an operation id unique per
/// connection across topics, and it names the subscription's topic, so `delete` and
/// `delete_by_connection` read one partition, strongly consistently, where a global
/// secondary index would only be eventually consistent: a `complete` or a disconnect
/// arriving right after a `subscribe` still finds it. The table has no index, so a
/// subscription costs no write beyond its two items.
#[derive(Clone, Debug)]
pub struct DynamoDbSubscriptionStore {
    client: Client,
    table: String,
    retry: RetryPolicy,
}

/// What a transaction came to, beyond success.
enum Cancelled {
    /// A condition failed: the decision the caller asked for.
    Condition,
    /// Another transaction held one of the items; worth trying again.
    Contention,
}

impl DynamoDbSubscriptionStore {
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

    pub fn table(&self) -> &str {
        &self.table
    }

    fn key(&self, topic: &str, subscription_key: &str) -> Item {
        HashMap::from([
            ("topic".to_owned(), string(topic)),
            ("subscriptionKey".to_owned(), string(subscription_key)),
        ])
    }

    /// Runs a transaction, retrying it while it only collides with concurrent ones.
    /// `Ok(false)` when one of its conditions failed.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<bool, StoreError> {
        let mut attempt = 0;
        loop {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            match result.map_err(classify) {
                Ok(_) => return Ok(true),
                Err(Ok(Cancelled::Condition)) => return Ok(false),
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

    /// The claims of one connection.
    /// The claim of one operation id, read consistently.
    async fn claim(&self, key: &SubscriptionKey) -> Result<Option<ClaimItem>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(
                self.key(&claim_partition(&key.connection_id), &key.encode()),
            ))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend("GetItem"))?;
        output.item.map(from_item).transpose()
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

/// Sorts a failed transaction into a failed condition, contention, or anything else.
fn classify(
    error: SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Result<Cancelled, StoreError> {
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        error.as_service_error()
    {
        let codes: Vec<&str> = cancelled
            .cancellation_reasons()
            .iter()
            .filter_map(|reason| reason.code())
            .collect();
        if codes.contains(&"ConditionalCheckFailed") {
            return Ok(Cancelled::Condition);
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
    async fn insert(&self, subscription: &Subscription) -> Result<(), StoreError> {
        let key = subscription.key.encode();
        let claim = ClaimItem {
            topic: claim_partition(&subscription.key.connection_id),
            subscription_key: key.clone(),
            subscribed_topic: subscription.topic.to_string(),
            ttl: subscription.expires_at,
        };
        let record = SubscriptionItem::try_from(subscription)?;
        let put_new = |item: Item| -> Result<TransactWriteItem, StoreError> {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#key)")
                .expression_attribute_names("#key", "subscriptionKey")
                .build()
                .map_err(backend("TransactWriteItems"))?;
            Ok(TransactWriteItem::builder().put(put).build())
        };
        let items = vec![put_new(to_item(&claim)?)?, put_new(to_item(&record)?)?];
        if self.transact(items).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "subscription {key} already exists"
            )))
        }
    }

    async fn contains(&self, key: &SubscriptionKey) -> Result<bool, StoreError> {
        Ok(self.claim(key).await?.is_some())
    }

    async fn delete(&self, key: &SubscriptionKey) -> Result<bool, StoreError> {
        let claim_partition = claim_partition(&key.connection_id);
        let encoded = key.encode();
        let Some(claim) = self.claim(key).await? else {
            return Ok(false);
        };
        // The claim's condition makes one of two concurrent deletes the one that found it.
        let delete_claim = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(self.key(&claim_partition, &encoded)))
            .condition_expression("attribute_exists(#key)")
            .expression_attribute_names("#key", "subscriptionKey")
            .build()
            .map_err(backend("TransactWriteItems"))?;
        let delete_subscription = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(self.key(&claim.subscribed_topic, &encoded)))
            .build()
            .map_err(backend("TransactWriteItems"))?;
        self.transact(vec![
            TransactWriteItem::builder().delete(delete_claim).build(),
            TransactWriteItem::builder()
                .delete(delete_subscription)
                .build(),
        ])
        .await
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
        Ok(self.claims(id).await?.len())
    }

    async fn by_connection(&self, id: &ConnectionId) -> Result<Vec<SubscriptionKey>, StoreError> {
        let now = now_secs();
        Ok(self
            .claims(id)
            .await?
            .into_iter()
            .filter(|claim| claim.ttl > now)
            .filter_map(|claim| SubscriptionKey::decode(&claim.subscription_key))
            .collect())
    }

    async fn delete_by_connection(&self, id: &ConnectionId) -> Result<usize, StoreError> {
        let claims = self.claims(id).await?;
        let partition = claim_partition(id);
        // Subscriptions first, claims last: should a batch fail half-way, the claims left
        // behind still lead a retry to whatever remains.
        let subscriptions = claims
            .iter()
            .map(|claim| self.key(&claim.subscribed_topic, &claim.subscription_key));
        let own_claims = claims
            .iter()
            .map(|claim| self.key(&partition, &claim.subscription_key));
        let keys = subscriptions.chain(own_claims).collect();
        batch_delete(&self.client, &self.table, keys, self.retry).await?;
        Ok(claims.len())
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
