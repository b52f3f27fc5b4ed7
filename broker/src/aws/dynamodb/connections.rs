use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::records::ConnectionItem;
use super::{
    BY_PRINCIPAL_INDEX, Item, backend, decode_listing, from_item, query_all, string, to_item,
};
use crate::domain::{Connection, ConnectionId, UserId, now_secs};
use crate::ports::{ConnectionStore, StoreError};

/// [`ConnectionStore`] on the connections table.
#[derive(Clone, Debug)]
pub struct DynamoDbConnectionStore {
    client: Client,
    table: String,
}

impl DynamoDbConnectionStore {
    /// A store on the connections table named `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The deployed name of the connections table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The connection's item as stored, read consistently (expired or not).
    async fn item(&self, id: &ConnectionId) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("connectionId", string(id.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend("GetItem"))?;
        Ok(output.item)
    }
}

#[async_trait]
impl ConnectionStore for DynamoDbConnectionStore {
    async fn put(&self, connection: &Connection) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(&ConnectionItem::from(connection))?))
            .send()
            .await
            .map_err(backend("PutItem"))?;
        Ok(())
    }

    async fn get(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        let Some(item) = self.item(id).await? else {
            return Ok(None);
        };
        let record: ConnectionItem = from_item(item)?;
        Ok((record.ttl > now_secs()).then(|| record.into()))
    }

    async fn mark_initialised(
        &self,
        id: &ConnectionId,
        user: &UserId,
        authorized_until: u64,
    ) -> Result<(), StoreError> {
        // One conditional write: of two concurrent `connection_init`s exactly one succeeds.
        // The write carries a nonce: when the SDK retries an attempt whose answer was lost
        // but which was applied, the condition fails on our own write, and the nonce tells.
        let nonce = ulid::Ulid::new().to_string();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("connectionId", string(id.as_str()))
            .update_expression(
                "SET #initialised = :true, #principal = :principal, #until = :until, #init = :init",
            )
            .condition_expression("attribute_exists(#id) AND #initialised = :false")
            .expression_attribute_names("#id", "connectionId")
            .expression_attribute_names("#initialised", "initialised")
            .expression_attribute_names("#principal", "principal")
            .expression_attribute_names("#until", "authorizedUntil")
            .expression_attribute_names("#init", "initNonce")
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":principal", string(user.as_str()))
            .expression_attribute_values(":until", AttributeValue::N(authorized_until.to_string()))
            .expression_attribute_values(":init", string(&nonce))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                let ours = self
                    .item(id)
                    .await?
                    .and_then(|item| item.get("initNonce").cloned())
                    .is_some_and(|v| v == AttributeValue::S(nonce.clone()));
                if ours {
                    return Ok(());
                }
                Err(StoreError::Conflict(format!(
                    "{id} is already initialised or does not exist"
                )))
            }
            Err(error) => Err(backend("UpdateItem")(error)),
        }
    }

    async fn delete(&self, id: &ConnectionId) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("connectionId", string(id.as_str()))
            .send()
            .await
            .map_err(backend("DeleteItem"))?;
        Ok(())
    }

    async fn by_user(&self, user: &UserId) -> Result<Vec<Connection>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_PRINCIPAL_INDEX)
            .key_condition_expression("#principal = :principal")
            .expression_attribute_names("#principal", "principal")
            .expression_attribute_values(":principal", string(user.as_str()));
        let now = now_secs();
        Ok(
            decode_listing::<ConnectionItem>(query_all(query).await?, &self.table)
                .into_iter()
                .filter(|c| c.ttl > now)
                .map(Connection::from)
                .collect(),
        )
    }
}
