//! The quotas on the subscriptions table.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;

use super::records::{QUOTA_KEY, quota_partition};
use super::subscriptions::item_key;
use super::{Item, backend, number};
use crate::domain::now_secs;
use crate::ports::{Quotas, StoreError};

/// [`Quotas`] on the subscriptions table: one item per counter in its own partition
/// `#quota/{key}` (sort key `#quota`), its value `n` and its expiry `ttl` (s), which
/// DynamoDB's TTL removes eventually; until then every condition treats it as zero.
///
/// A take is one conditional `UpdateItem` (`ADD n 1` if `n` is below the limit and the
/// counter live), and a second one only when the first fails: to start an expired counter
/// afresh, or to find it full. A release is one `UpdateItem` (two when it would pass zero).
#[derive(Clone, Debug)]
pub struct DynamoDbQuotas {
    client: Client,
    table: String,
}

impl DynamoDbQuotas {
    /// The counters kept in `table` (the subscriptions table).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(key: &str) -> Item {
        item_key(&quota_partition(key), QUOTA_KEY)
    }

    fn update(&self, key: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .expression_attribute_names("#n", "n")
            .expression_attribute_names("#ttl", "ttl")
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `Ok(true)` when the update was made, `Ok(false)` when its condition failed.
fn conditional<T>(result: Result<T, SdkError<UpdateItemError>>) -> Result<bool, StoreError> {
    match result {
        Ok(_) => Ok(true),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(false)
        }
        Err(error) => Err(backend("UpdateItem")(error)),
    }
}

#[async_trait]
impl Quotas for DynamoDbQuotas {
    async fn take(&self, key: &str, limit: u64, expires_at: u64) -> Result<bool, StoreError> {
        if limit == 0 {
            return Ok(false);
        }
        let now = number(clamp(now_secs()));
        let until = number(clamp(expires_at));
        let added = self
            .update(key)
            .update_expression("SET #ttl = :until ADD #n :one")
            .condition_expression("attribute_not_exists(#n) OR (#n < :limit AND #ttl > :now)")
            .expression_attribute_values(":until", until.clone())
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":limit", number(clamp(limit)))
            .expression_attribute_values(":now", now.clone())
            .send()
            .await;
        if conditional(added)? {
            return Ok(true);
        }
        // Full, or expired and not removed yet: an expired counter starts afresh.
        let restarted = self
            .update(key)
            .update_expression("SET #n = :one, #ttl = :until")
            .condition_expression("#ttl <= :now")
            .expression_attribute_values(":until", until)
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":now", now)
            .send()
            .await;
        conditional(restarted)
    }

    async fn release(&self, key: &str, n: u64) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let now = number(clamp(now_secs()));
        let count = clamp(n);
        let n = number(count);
        let subtracted = self
            .update(key)
            .update_expression("ADD #n :minus")
            .condition_expression("#n >= :count AND #ttl > :now")
            .expression_attribute_values(":minus", number(-count))
            .expression_attribute_values(":count", n.clone())
            .expression_attribute_values(":now", now.clone())
            .send()
            .await;
        if conditional(subtracted)? {
            return Ok(());
        }
        // Fewer than `n` (a release counted twice): down to zero, not below.
        let zeroed = self
            .update(key)
            .update_expression("SET #n = :zero")
            .condition_expression("#n < :count AND #ttl > :now")
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":count", n)
            .expression_attribute_values(":now", now)
            .send()
            .await;
        conditional(zeroed).map(|_| ())
    }

    async fn set(&self, key: &str, value: u64, expires_at: u64) -> Result<(), StoreError> {
        self.update(key)
            .update_expression("SET #n = :value, #ttl = :until")
            .expression_attribute_values(":value", number(clamp(value)))
            .expression_attribute_values(":until", number(clamp(expires_at)))
            .send()
            .await
            .map_err(backend("UpdateItem"))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<u64, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend("GetItem"))?;
        let Some(item) = output.item else {
            return Ok(0);
        };
        let read = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<u64>().ok())
        };
        match (read("n"), read("ttl")) {
            (Some(value), Some(until)) if until > now_secs() => Ok(value),
            _ => Ok(0),
        }
    }
}
