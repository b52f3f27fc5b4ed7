//! An app's writes and their event in one `TransactWriteItems`
//! ([`crate::EventLog::append_with`] on DynamoDB).
//!
//! The transaction holds the app's changes (puts, deletes, condition checks, each with its
//! condition), the event's put (only where no event has its id) and a check that the
//! event's *void mark* is absent. Its `ClientRequestToken` is the event id, so a request
//! the SDK sends again after a lost answer is not applied twice (DynamoDB answers a repeat
//! within ten minutes with the first one's outcome); the event's own condition stops any
//! later repeat. A transaction refused because another held one of its items (concurrent
//! cards of one board all check that board) is sent again, with a token of its own, after a
//! jittered wait, while the deadline allows.
//!
//! DynamoDB cannot refuse a commit for coming late. So when no answer came by the deadline
//! (or the answer was an error that does not say the transaction was refused), the log
//! writes the void mark: an item of the subscriptions table (partition `#void/{topic}/{id}`,
//! expiring with the event) that the transaction checks is absent. Once the mark is there,
//! the transaction cannot commit any more, wherever it is; then the event, read
//! consistently, says whether it committed before. Absent, nothing was or will be stored:
//! [`StoreError::TooLate`] (past the deadline) or the error. Present, it was stored, with
//! its changes: [`Ok`], late or not. A change that was made is never reported as not made
//! (its client would make it again); an event stored past the deadline is delivered by the
//! stream publisher all the same and counted there (`LateStores`).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem};

use super::events::DynamoDbEventLog;
use super::records::EventItem;
use super::subscriptions::{Cancelled, classify, item_key};
use super::{Item, backend, number, string, to_item};
use crate::aws::retry::RetryPolicy;
use crate::changes::{Action, Change, Changes, Condition};
use crate::domain::{Event, now_ms};
use crate::ports::StoreError;

/// The sort key of a void mark in its partition.
const VOID_KEY: &str = "#void";

/// How long the void mark's write is given after the deadline before the outcome is
/// reported as unknown.
const VOID_WAIT: Duration = Duration::from_secs(5);

/// The key of one change's item, with the table's key attributes.
fn change_key(change: &Change) -> Item {
    let mut key = HashMap::from([(
        change.table.partition_key().to_owned(),
        string(change.partition.as_str()),
    )]);
    if let Some(sort) = change.table.sort_key() {
        key.insert(sort.to_owned(), string(change.sort.as_str()));
    }
    key
}

/// The condition expression of `condition` on an item keyed by `partition_key`, if any.
fn condition_expression(condition: Condition) -> Option<&'static str> {
    match condition {
        Condition::None => None,
        Condition::Exists => Some("attribute_exists(#pk)"),
        Condition::Absent => Some("attribute_not_exists(#pk)"),
    }
}

/// One change as an item of the transaction.
fn transact_item(change: &Change) -> Result<TransactWriteItem, StoreError> {
    let table = change.table.name();
    let expression = condition_expression(change.condition);
    let names = expression
        .map(|_| HashMap::from([("#pk".to_owned(), change.table.partition_key().to_owned())]));
    let built = match &change.action {
        Action::Put(value) => {
            let mut item: Item = serde_dynamo::to_item(value).map_err(|e| {
                StoreError::Malformed(format!(
                    "{}: a value put on DynamoDB must be an object: {e}",
                    change.describe()
                ))
            })?;
            item.extend(change_key(change));
            TransactWriteItem::builder().put(
                Put::builder()
                    .table_name(table)
                    .set_item(Some(item))
                    .set_condition_expression(expression.map(str::to_owned))
                    .set_expression_attribute_names(names)
                    .build()
                    .map_err(StoreError::backend)?,
            )
        }
        Action::Delete => TransactWriteItem::builder().delete(
            Delete::builder()
                .table_name(table)
                .set_key(Some(change_key(change)))
                .set_condition_expression(expression.map(str::to_owned))
                .set_expression_attribute_names(names)
                .build()
                .map_err(StoreError::backend)?,
        ),
        Action::Check => TransactWriteItem::builder().condition_check(
            ConditionCheck::builder()
                .table_name(table)
                .set_key(Some(change_key(change)))
                .condition_expression(
                    expression.unwrap_or("attribute_exists(#pk) OR attribute_not_exists(#pk)"),
                )
                .expression_attribute_names("#pk", change.table.partition_key())
                .build()
                .map_err(StoreError::backend)?,
        ),
    };
    Ok(built.build())
}

/// The conflict of `change`'s condition.
fn conflict(change: &Change) -> StoreError {
    let wanted = match change.condition {
        Condition::Absent => "exists",
        _ => "does not exist",
    };
    StoreError::Conflict(format!("{} {wanted}", change.describe()))
}

/// The key of `event`'s void mark in the subscriptions table.
fn void_key(event: &Event) -> Item {
    item_key(&format!("#void/{}/{}", event.topic, event.id), VOID_KEY)
}

impl DynamoDbEventLog {
    /// See the module's documentation.
    pub(super) async fn transact(
        &self,
        changes: &Changes,
        event: &Event,
        deadline_ms: u64,
    ) -> Result<(), StoreError> {
        let Some(voids) = self.voids.as_deref() else {
            return Err(StoreError::backend(
                "this event log has no table for void marks (DynamoDbEventLog::with_void_marks)",
            ));
        };
        let mut items = changes
            .iter()
            .map(transact_item)
            .collect::<Result<Vec<_>, _>>()?;
        let event_item = to_item(&EventItem::try_from(event)?)?;
        items.push(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(self.table())
                        .set_item(Some(event_item))
                        .condition_expression("attribute_not_exists(#id)")
                        .expression_attribute_names("#id", "eventId")
                        .build()
                        .map_err(StoreError::backend)?,
                )
                .build(),
        );
        items.push(
            TransactWriteItem::builder()
                .condition_check(
                    ConditionCheck::builder()
                        .table_name(voids)
                        .set_key(Some(void_key(event)))
                        .condition_expression("attribute_not_exists(#k)")
                        .expression_attribute_names("#k", "topic")
                        .build()
                        .map_err(StoreError::backend)?,
                )
                .build(),
        );
        let retry = RetryPolicy::default();
        let mut attempt: u32 = 0;
        let unsettled = loop {
            let now = now_ms();
            if now > deadline_ms {
                // Not sent (again): every earlier attempt was refused whole.
                return Err(StoreError::TooLate);
            }
            // The first attempt's token is the event id; a retry after a conflict is a new
            // request (DynamoDB refused the first whole), so it gets a token of its own.
            let token = match attempt {
                0 => event.id.clone(),
                n => format!("{}.{n}", event.id),
            };
            let request = self
                .client()
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(token)
                .send();
            let left = Duration::from_millis(deadline_ms - now);
            match tokio::time::timeout(left, request).await {
                Ok(Ok(_)) => {
                    stored_late(event, deadline_ms);
                    return Ok(());
                }
                Ok(Err(error)) => match classify(error) {
                    Ok(Cancelled::Condition(failed)) => {
                        return Err(match failed.first() {
                            Some(&i) if i < changes.len() => {
                                conflict(changes.iter().nth(i).expect("a change"))
                            }
                            Some(&i) if i == changes.len() => {
                                StoreError::Conflict(format!("event {} exists", event.id))
                            }
                            // The void mark is there: the deadline passed and an earlier
                            // attempt was settled as not stored.
                            _ => StoreError::TooLate,
                        });
                    }
                    // Refused whole, nothing stored: another transaction held one of its
                    // items (concurrent cards of one board check the same board). Again,
                    // after a jittered wait, while the deadline allows.
                    Ok(Cancelled::Contention) => {
                        let wait = retry.delay(attempt);
                        let left = deadline_ms.saturating_sub(now_ms());
                        tokio::time::sleep(wait.min(Duration::from_millis(left))).await;
                        attempt += 1;
                    }
                    Err(error) => break error,
                },
                Err(_) => break StoreError::TooLate,
            }
        };
        self.settle(voids, event, deadline_ms, unsettled).await
    }

    /// Makes sure a transaction whose outcome is unknown cannot commit any more, then
    /// tells whether it did (see the module's documentation).
    async fn settle(
        &self,
        voids: &str,
        event: &Event,
        deadline_ms: u64,
        unsettled: StoreError,
    ) -> Result<(), StoreError> {
        let mut mark = void_key(event);
        mark.insert("ttl".to_owned(), number(event.expires_at as i64));
        mark.insert("void".to_owned(), AttributeValue::Bool(true));
        let put = self
            .client()
            .put_item()
            .table_name(voids)
            .set_item(Some(mark))
            .send();
        match tokio::time::timeout(VOID_WAIT, put).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(event = %event.id, error = %backend("PutItem")(error), "void mark not written");
                return Err(unknown(event));
            }
            Err(_) => return Err(unknown(event)),
        }
        match crate::ports::EventLog::get(self, &event.reference()).await {
            Ok(None) if now_ms() > deadline_ms => Err(StoreError::TooLate),
            Ok(None) => Err(unsettled),
            Ok(Some(stored)) if stored == *event => {
                stored_late(event, deadline_ms);
                Ok(())
            }
            Ok(Some(_)) => Err(StoreError::Conflict(format!(
                "another event has the id {}",
                event.id
            ))),
            Err(_) => Err(unknown(event)),
        }
    }
}

/// Logs a commit that came in past the deadline: it stands, and its event goes out late.
fn stored_late(event: &Event, deadline_ms: u64) {
    let now = now_ms();
    if now > deadline_ms {
        tracing::warn!(
            event = %event.id,
            late_ms = now - deadline_ms,
            "the change and its event were stored after the publish deadline; they stand"
        );
    }
}

/// The outcome of a transaction that may still commit.
fn unknown(event: &Event) -> StoreError {
    StoreError::backend(format!(
        "event {}: not known whether it and its changes were stored",
        event.id
    ))
}
