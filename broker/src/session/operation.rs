//! A `subscribe` (legacy `start`) message: a query or mutation runs at once and is answered
//! with `next` and `complete`; a subscription is stored ([`crate::session::subscribe`]).

use async_graphql::parser::types::OperationType;

use crate::Broker;
use crate::domain::{Connection, SubscriptionKey};
use crate::graphql::errors_json;
use crate::protocol::CloseCode;
use crate::session::SessionError;

/// Operation ids are chosen by clients and become part of storage keys and queue messages:
/// bounded, so a key stays far below DynamoDB's sort-key limit and a fan-out page far below
/// SQS's message size.
pub const MAX_OPERATION_ID_BYTES: usize = 128;

impl Broker {
    pub(crate) async fn start(
        &self,
        connection: &Connection,
        operation_id: String,
        request: async_graphql::Request,
    ) -> Result<(), SessionError> {
        let id = &connection.id;
        let protocol = connection.protocol;
        let user = match (&connection.principal, connection.initialised) {
            (Some(user), true) => user.clone(),
            _ => {
                return self
                    .close(id, CloseCode::Unauthorized, "Unauthorized")
                    .await;
            }
        };
        if operation_id.is_empty() || operation_id.len() > MAX_OPERATION_ID_BYTES {
            let reason = format!("operation id must have 1 to {MAX_OPERATION_ID_BYTES} bytes");
            return self.close(id, CloseCode::BadRequest, &reason).await;
        }

        let key = SubscriptionKey {
            connection_id: id.clone(),
            operation_id: operation_id.clone(),
        };
        // Parsed and priced once, before any resolver runs; the parsed document travels
        // with the request.
        let prepared = self.prepare(request);
        if !matches!(prepared, Ok((_, OperationType::Subscription))) {
            // Its `complete` (or `error`) would end the client's subscription of the same id.
            if self.ports().subscriptions.contains(&key).await? {
                return self.reject_duplicate(id, &operation_id).await;
            }
        }
        let request = match prepared {
            Ok((request, OperationType::Subscription)) => request,
            Ok((request, _)) => {
                let response = self.execute_prepared(user, request).await;
                let payload = serde_json::to_string(&response)
                    .expect("a GraphQL response serializes to JSON");
                self.post(id, &protocol.next(&operation_id, &payload))
                    .await?;
                return self.post(id, &protocol.complete(&operation_id)).await;
            }
            // Over budget or not a document: refused before execution, as the protocol's
            // `error` message says ("usually due to validation errors").
            Err(error) => {
                let frame = protocol.error(&operation_id, errors_json(&[error]));
                return self.post(id, &frame).await;
            }
        };
        self.subscribe(connection, user, key, request).await
    }
}
