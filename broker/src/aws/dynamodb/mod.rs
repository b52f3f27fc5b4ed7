//! The DynamoDB stores, and what they share: item conversion, paginated queries, batches
//! that retry their unprocessed entries.
//!
//! [`to_item`], [`from_item`], [`put_new`] and [`backend`] are public on purpose: an app's
//! own DynamoDB stores use them to convert records and map SDK errors to [`StoreError`]
//! the way the broker's stores do.
//!
//! Every read of one item is strongly consistent, and so is every query on a table's own
//! key: the in-memory stores the broker is tested against read their own writes, and a
//! client that subscribes and publishes at once expects the same here. Only the queries on
//! `byPrincipal` (a global secondary index, which cannot be read consistently) may lag a
//! write by a moment.

mod connections;
mod events;
mod page_marks;
mod quotas;
mod records;
mod replay_gate;
mod subscriptions;
mod transact;

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, PutRequest, WriteRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::AwsCallError;
use super::retry::RetryPolicy;
use crate::ports::StoreError;

pub use connections::DynamoDbConnectionStore;
pub use events::{DynamoDbEventLog, event_from_image, event_to_image};
pub use page_marks::DynamoDbPageMarks;
pub use quotas::DynamoDbQuotas;
pub use replay_gate::DynamoDbReplayGate;
pub use subscriptions::DynamoDbSubscriptionStore;

/// An item as the SDK holds it.
pub type Item = HashMap<String, AttributeValue>;

/// Connections by user: `principal`, all attributes.
pub const BY_PRINCIPAL_INDEX: &str = "byPrincipal";

/// DynamoDB's limits on one BatchGetItem and one BatchWriteItem request.
const BATCH_GET_LIMIT: usize = 100;
const BATCH_WRITE_LIMIT: usize = 25;

/// Maps an SDK error of `operation` to [`StoreError::Backend`], keeping it as the source.
pub fn backend<E>(operation: &'static str) -> impl FnOnce(E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |error| StoreError::backend(AwsCallError::new(operation, error))
}

fn string(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn number(n: i64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// A record as a DynamoDB item.
pub fn to_item<T: Serialize>(record: &T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(record).map_err(|e| StoreError::Malformed(e.to_string()))
}

/// A DynamoDB item as a record; [`StoreError::Malformed`] when it does not fit.
pub fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Malformed(e.to_string()))
}

/// Puts an item that must not exist yet (`key_attribute` absent); `conflict` describes the
/// [`StoreError::Conflict`] when it does.
pub async fn put_new(
    client: &Client,
    table: &str,
    item: Item,
    key_attribute: &str,
    conflict: impl FnOnce() -> String,
) -> Result<(), StoreError> {
    let result = client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#key)")
        .expression_attribute_names("#key", key_attribute)
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Err(StoreError::Conflict(conflict()))
        }
        Err(error) => Err(backend("PutItem")(error)),
    }
}

/// Decodes the items of a listing, leaving out (and logging) any that do not decode: one bad
/// row must not stop delivery to every other subscriber of a topic.
fn decode_listing<T: DeserializeOwned>(items: Vec<Item>, table: &str) -> Vec<T> {
    items
        .into_iter()
        .filter_map(|item| match from_item(item) {
            Ok(record) => Some(record),
            Err(error) => {
                tracing::warn!(%table, %error, "skipping an item that does not decode");
                None
            }
        })
        .collect()
}

/// Every item a query matches, following `LastEvaluatedKey` page after page.
async fn query_all(query: QueryFluentBuilder) -> Result<Vec<Item>, StoreError> {
    let mut pages = query.into_paginator().items().send();
    let mut items = Vec::new();
    while let Some(item) = pages.next().await {
        items.push(item.map_err(backend("Query"))?);
    }
    Ok(items)
}

/// Reads items by key with BatchGetItem, 100 keys a request, strongly consistent, retrying
/// the keys DynamoDB leaves unprocessed (it does under throttling or past 16 MB).
async fn batch_get(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
    retry: RetryPolicy,
) -> Result<Vec<Item>, StoreError> {
    let mut found = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(BATCH_GET_LIMIT) {
        let mut pending = Some(chunk.to_vec());
        let mut attempt = 0;
        while let Some(keys) = pending.take() {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(backend("BatchGetItem"))?;
            let output = client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(backend("BatchGetItem"))?;
            if let Some(items) = output.responses.and_then(|mut r| r.remove(table)) {
                found.extend(items);
            }
            pending = output
                .unprocessed_keys
                .and_then(|mut u| u.remove(table))
                .map(|k| k.keys)
                .filter(|k| !k.is_empty());
            if pending.is_some() {
                wait_for_retry(retry, &mut attempt, "BatchGetItem").await?;
            }
        }
    }
    Ok(found)
}

/// Deletes items by key with BatchWriteItem, 25 keys a request, retrying unprocessed ones.
async fn batch_delete(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
    retry: RetryPolicy,
) -> Result<(), StoreError> {
    let requests = keys
        .into_iter()
        .map(|key| {
            let delete = DeleteRequest::builder()
                .set_key(Some(key))
                .build()
                .map_err(backend("BatchWriteItem"))?;
            Ok(WriteRequest::builder().delete_request(delete).build())
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    batch_write(client, table, requests, retry).await
}

/// Writes items (replacing any with the same key) with BatchWriteItem, 25 a request,
/// retrying unprocessed ones.
async fn batch_put(
    client: &Client,
    table: &str,
    items: Vec<Item>,
    retry: RetryPolicy,
) -> Result<(), StoreError> {
    let requests = items
        .into_iter()
        .map(|item| {
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(backend("BatchWriteItem"))?;
            Ok(WriteRequest::builder().put_request(put).build())
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    batch_write(client, table, requests, retry).await
}

async fn batch_write(
    client: &Client,
    table: &str,
    requests: Vec<WriteRequest>,
    retry: RetryPolicy,
) -> Result<(), StoreError> {
    for chunk in requests.chunks(BATCH_WRITE_LIMIT) {
        let mut pending = chunk.to_vec();
        let mut attempt = 0;
        while !pending.is_empty() {
            let output = client
                .batch_write_item()
                .request_items(table, std::mem::take(&mut pending))
                .send()
                .await
                .map_err(backend("BatchWriteItem"))?;
            pending = output
                .unprocessed_items
                .and_then(|mut u| u.remove(table))
                .unwrap_or_default();
            if !pending.is_empty() {
                wait_for_retry(retry, &mut attempt, "BatchWriteItem").await?;
            }
        }
    }
    Ok(())
}

/// Sleeps before the next retry, or gives up when the policy's retries are spent.
async fn wait_for_retry(
    retry: RetryPolicy,
    attempt: &mut u32,
    operation: &'static str,
) -> Result<(), StoreError> {
    if *attempt >= retry.retries {
        return Err(StoreError::backend(AwsCallError::message(
            operation,
            format!("entries still unprocessed after {} retries", retry.retries),
        )));
    }
    retry.sleep(*attempt).await;
    *attempt += 1;
    Ok(())
}
