//! The replay gate on the subscriptions table.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use super::subscriptions::item_key;
use super::{Item, backend, number};
use crate::domain::{Subscription, now_ms};
use crate::ports::{HandOver, Hold, ReplayGate, StoreError};

/// Whether a conditional `UpdateItem` failed its condition (and nothing else).
fn is_condition_failure(error: &SdkError<UpdateItemError>) -> bool {
    error
        .as_service_error()
        .is_some_and(|e| e.is_conditional_check_failed_exception())
}

/// [`ReplayGate`] on the subscriptions table: the subscription's own item carries its
/// replay's deadline (`replayingUntil`, removed at the hand-over) and the count of events
/// held back (`held`), so each check and its change are one conditional `UpdateItem`, and
/// deleting the subscription deletes its count. The table is the one the
/// [`super::DynamoDbSubscriptionStore`] stores in.
#[derive(Clone, Debug)]
pub struct DynamoDbReplayGate {
    client: Client,
    table: String,
}

impl DynamoDbReplayGate {
    /// The gate of the subscriptions in `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
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
}

#[async_trait]
impl ReplayGate for DynamoDbReplayGate {
    async fn hold(&self, subscription: &Subscription) -> Result<Hold, StoreError> {
        let key = item_key(subscription.topic.as_str(), &subscription.key.encode());
        let held = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key.clone()))
            .update_expression("ADD #held :one")
            .condition_expression("#until > :now")
            .expression_attribute_names("#held", "held")
            .expression_attribute_names("#until", "replayingUntil")
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":now", number(now_ms() as i64))
            .send()
            .await;
        match held {
            Ok(_) => return Ok(Hold::Held),
            Err(error) if !is_condition_failure(&error) => {
                return Err(backend("UpdateItem")(error));
            }
            Err(_) => {}
        }
        // Not replaying any more: handed over (no `replayingUntil`), gone, or out of time.
        let item = self.get(key).await?;
        Ok(match item.as_ref().and_then(|i| i.get("replayingUntil")) {
            Some(_) => Hold::Abandoned,
            None => Hold::Live,
        })
    }

    async fn hand_over(
        &self,
        subscription: &Subscription,
        held: Option<u64>,
    ) -> Result<HandOver, StoreError> {
        let key = item_key(subscription.topic.as_str(), &subscription.key.encode());
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key.clone()))
            .update_expression("REMOVE #until, #held")
            .expression_attribute_names("#until", "replayingUntil")
            .expression_attribute_names("#held", "held")
            .expression_attribute_names("#key", "subscriptionKey");
        let update = match held {
            Some(held) => update
                .condition_expression("attribute_exists(#key) AND #held = :held")
                .expression_attribute_values(":held", number(held as i64)),
            None => update.condition_expression("attribute_exists(#key)"),
        };
        match update.send().await {
            Ok(_) => return Ok(HandOver::Done),
            Err(error) if !is_condition_failure(&error) => {
                return Err(backend("UpdateItem")(error));
            }
            Err(_) => {}
        }
        // Gone (nothing to hand over), or more were held back since.
        let count = self
            .get(key)
            .await?
            .and_then(|item| match item.get("held") {
                Some(AttributeValue::N(n)) => n.parse::<u64>().ok(),
                _ => None,
            });
        Ok(count.map_or(HandOver::Done, HandOver::Held))
    }
}
