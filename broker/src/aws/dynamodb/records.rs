//! The items as stored: private record types with the table's attribute names, converted
//! to and from the domain types. JSON-valued fields are stored as JSON text, so an item
//! reads the same in the console, in stream images and in every SDK.

use serde::{Deserialize, Serialize};

use crate::domain::{
    Audience, Connection, ConnectionId, Event, Subscription, SubscriptionKey, Topic, UserId,
};
use crate::ports::StoreError;
use crate::protocol::Protocol;

/// The partition holding one connection's claims (see [`ClaimItem`]). `#` never starts a
/// topic the broker derives (`board/…`, `user/…`), so it cannot meet a real topic.
pub(super) fn claim_partition(connection: &ConnectionId) -> String {
    format!("#claims/{connection}")
}

/// The partition of one connection's subscription counter: a single item (sort key
/// [`COUNTER_KEY`]) whose `subscriptions` attribute every insert and delete of that
/// connection's subscriptions changes in the same transaction, so the per-connection limit
/// is a condition on it.
pub(super) fn counter_partition(connection: &ConnectionId) -> String {
    format!("#count/{connection}")
}

/// The sort key of the counter item in its [`counter_partition`].
pub(super) const COUNTER_KEY: &str = "#count";

/// The partition of a topic's fan-out pages on their way through the ordered queue: one
/// item per page, its sort key the page's id ([`crate::FanoutPage::id`]), with a `ttl` (s)
/// past which the page cannot be in the queue any more.
pub(super) fn pages_partition(topic: &Topic) -> String {
    format!("#pages/{topic}")
}

/// The partition of one counter of the per-user limits (see
/// [`super::DynamoDbQuotas`]): a single item, sort key [`QUOTA_KEY`].
pub(super) fn quota_partition(key: &str) -> String {
    format!("#quota/{key}")
}

/// The sort key of a counter item in its [`quota_partition`].
pub(super) const QUOTA_KEY: &str = "#quota";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConnectionItem {
    pub connection_id: String,
    pub protocol: Protocol,
    /// Absent rather than null: `principal` keys the `byPrincipal` index, which only takes
    /// strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub initialised: bool,
    pub connected_at: u64,
    pub ttl: u64,
    /// The verified token's `exp`, once there is a principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_until: Option<u64>,
}

impl From<&Connection> for ConnectionItem {
    fn from(c: &Connection) -> Self {
        Self {
            connection_id: c.id.to_string(),
            protocol: c.protocol,
            principal: c.principal.as_ref().map(ToString::to_string),
            initialised: c.initialised,
            connected_at: c.connected_at_ms,
            ttl: c.expires_at,
            authorized_until: c.authorized_until,
        }
    }
}

impl From<ConnectionItem> for Connection {
    fn from(item: ConnectionItem) -> Self {
        Self {
            id: ConnectionId(item.connection_id),
            protocol: item.protocol,
            principal: item.principal.map(UserId),
            initialised: item.initialised,
            connected_at_ms: item.connected_at,
            expires_at: item.ttl,
            authorized_until: item.authorized_until,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SubscriptionItem {
    pub topic: String,
    pub subscription_key: String,
    pub connection_id: String,
    pub operation_id: String,
    pub protocol: Protocol,
    pub principal: String,
    pub document: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_name: Option<String>,
    /// The variables object as JSON text.
    pub variables: String,
    pub ttl: u64,
    /// Milliseconds since the epoch when it was stored (0 on items written before it existed).
    #[serde(default)]
    pub starts_at: u64,
    /// Until when (ms) its replay holds live events back; absent once it has handed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaying_until: Option<u64>,
    /// How many live events were held back from it while it replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<u64>,
    /// Rendered once for every viewer (absent when not).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
}

impl TryFrom<&Subscription> for SubscriptionItem {
    type Error = StoreError;

    fn try_from(s: &Subscription) -> Result<Self, StoreError> {
        Ok(Self {
            topic: s.topic.to_string(),
            subscription_key: s.key.encode(),
            connection_id: s.key.connection_id.to_string(),
            operation_id: s.key.operation_id.clone(),
            protocol: s.protocol,
            principal: s.principal.to_string(),
            document: s.document.clone(),
            operation_name: s.operation_name.clone(),
            variables: json_text(&s.variables)?,
            ttl: s.expires_at,
            starts_at: s.starts_at_ms,
            replaying_until: (s.replaying_until_ms > 0).then_some(s.replaying_until_ms),
            held: (s.replaying_until_ms > 0).then_some(0),
            public: s.public,
        })
    }
}

impl TryFrom<SubscriptionItem> for Subscription {
    type Error = StoreError;

    fn try_from(item: SubscriptionItem) -> Result<Self, StoreError> {
        let variables = parse_json(&item.variables, "variables", &item.subscription_key)?;
        Ok(Self {
            key: SubscriptionKey {
                connection_id: ConnectionId(item.connection_id),
                operation_id: item.operation_id,
            },
            topic: Topic(item.topic),
            protocol: item.protocol,
            principal: UserId(item.principal),
            document: item.document,
            operation_name: item.operation_name,
            variables,
            expires_at: item.ttl,
            starts_at_ms: item.starts_at,
            replaying_until_ms: item.replaying_until.unwrap_or(0),
            public: item.public,
        })
    }
}

/// Claims an operation id for a connection, whatever the topic of its subscription: the
/// subscriptions table is keyed by topic, so only this item, keyed by connection, lets one
/// conditional write see a duplicate on another topic. It also records that topic, which
/// makes deleting by key or by connection a strongly consistent read of one partition.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ClaimItem {
    /// [`claim_partition`] of the connection.
    pub topic: String,
    /// The claimed subscription's key.
    pub subscription_key: String,
    /// The topic the subscription is stored under (none for a tombstone).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subscribed_topic: String,
    /// A tombstone: the operation was completed before its `subscribe` was handled, and
    /// an insert of this key until `ttl` stores nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub completed: bool,
    pub ttl: u64,
}

impl ClaimItem {
    /// A claim of a subscription, not a tombstone.
    pub(super) fn is_subscription(&self) -> bool {
        !self.completed
    }
}

/// The partition of the item that marks a connection closed (see
/// `SubscriptionStore::close_connection`); its sort key is the connection id.
pub(super) fn closed_partition(connection: &ConnectionId) -> String {
    format!("#closed/{connection}")
}

/// The `audience` of an event every subscriber may receive.
pub(super) const EVERYONE: &str = "*";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EventItem {
    pub topic: String,
    pub event_id: String,
    /// The payload as JSON text.
    pub payload: String,
    /// Who may receive the event: a user id, or [`EVERYONE`]. Required: an item written
    /// without it (another service forgetting the field) must not reach every subscriber,
    /// so it fails to decode.
    pub audience: String,
    /// Milliseconds since the epoch; items written by other publishers may leave it out.
    #[serde(default)]
    pub published_at: u64,
    pub ttl: u64,
    /// Delivered by its publisher (direct mode): the stream publisher skips it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
}

impl TryFrom<&Event> for EventItem {
    type Error = StoreError;

    fn try_from(e: &Event) -> Result<Self, StoreError> {
        Ok(Self {
            topic: e.topic.to_string(),
            event_id: e.id.clone(),
            payload: json_text(&e.payload)?,
            audience: match &e.audience {
                Audience::Everyone => EVERYONE.to_owned(),
                // Stored as is, it would read back as everyone.
                Audience::User(user) if user.as_str() == EVERYONE => {
                    return Err(StoreError::Malformed(format!(
                        "event {}: `{EVERYONE}` cannot be a user id",
                        e.id
                    )));
                }
                Audience::User(user) => user.to_string(),
            },
            published_at: e.published_at_ms,
            ttl: e.expires_at,
            direct: e.direct,
        })
    }
}

impl TryFrom<EventItem> for Event {
    type Error = StoreError;

    fn try_from(item: EventItem) -> Result<Self, StoreError> {
        let payload = parse_json(&item.payload, "payload", &item.event_id)?;
        let audience = match item.audience.as_str() {
            EVERYONE => Audience::Everyone,
            "" => {
                return Err(StoreError::Malformed(format!(
                    "audience of {} is empty (a user id, or `{EVERYONE}` for everyone)",
                    item.event_id
                )));
            }
            _ => Audience::User(UserId(item.audience)),
        };
        Ok(Self {
            id: item.event_id,
            topic: Topic(item.topic),
            payload,
            audience,
            published_at_ms: item.published_at,
            expires_at: item.ttl,
            direct: item.direct,
        })
    }
}

fn json_text(value: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Malformed(e.to_string()))
}

fn parse_json(text: &str, field: &str, item: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Malformed(format!("{field} of {item} is not JSON: {e}")))
}
