//! The broker's vocabulary: connections, subscriptions, events and who they belong to.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::protocol::Protocol;

/// How long a connection (and everything stored for it) may live: API Gateway closes every
/// WebSocket after two hours, so nothing of a connection needs to outlive that by much.
pub const CONNECTION_LIFETIME_SECS: u64 = 2 * 60 * 60 + 5 * 60;

/// How long a tombstone lasts: a `complete` handled before its `subscribe`, or a connection
/// closed before its last `subscribe` was handled, makes that `subscribe` store nothing if it
/// is handled within this time: far longer than API Gateway waits for a route's integration
/// (29 seconds).
pub const TOMBSTONE_SECS: u64 = 10 * 60;

/// How long an event stays in the event log by default: the window within which a
/// subscriber can resume from it (`BrokerConfig::event_retention`), after which DynamoDB's
/// TTL removes it.
pub const EVENT_LIFETIME_SECS: u64 = 24 * 60 * 60;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// Wraps `value` without checking it: ids come from API Gateway, verified tokens or stored
            /// records.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            /// The id as a string slice, e.g. for a storage key.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

string_id!(
    /// API Gateway's id for one WebSocket connection.
    ConnectionId
);
string_id!(
    /// The authenticated user: the JWT `sub`, the app's external user id.
    UserId
);
string_id!(
    /// What a subscription listens to and an event is published on, e.g. `board/b1/cardAdded`.
    /// Private topics are derived from the authenticated user (see [`Topic::private`]).
    Topic
);

impl Topic {
    /// A topic that only `user` can listen to: built from the verified identity, never from
    /// anything the client sent.
    pub fn private(user: &UserId, name: &str) -> Self {
        Self(format!("user/{user}/{name}"))
    }
}

/// The identity a request runs as. Resolvers read it with `ctx.data::<Principal>()`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The verified user (the token's `sub`).
    pub user: UserId,
}

/// One open WebSocket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    /// API Gateway's id of the socket, the key the connection is stored under.
    pub id: ConnectionId,
    /// The subprotocol agreed at `$connect`: how every message to this socket is framed.
    pub protocol: Protocol,
    /// Set at `$connect` (token in the query string) or at `connection_init`.
    pub principal: Option<UserId>,
    /// `connection_init` was accepted and acknowledged.
    pub initialised: bool,
    /// Milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
    /// Seconds since the Unix epoch after which the record is dead (DynamoDB TTL).
    pub expires_at: u64,
    /// When the authority of the token the principal was verified with ends
    /// ([`crate::auth::Identity::expires_at`]: its `exp` and the leeway): from that second on
    /// the connection speaks for nobody and is closed with 4403.
    #[serde(default)]
    pub authorized_until: Option<u64>,
}

impl Connection {
    /// Whether the token this connection was authenticated with has expired.
    pub fn authority_expired(&self, now_secs: u64) -> bool {
        self.authorized_until.is_some_and(|exp| exp <= now_secs)
    }
}

/// Identifies one subscription: the connection and the client-chosen operation id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubscriptionKey {
    /// The connection the subscription was made on.
    pub connection_id: ConnectionId,
    /// The `id` the client gave the `subscribe` message; unique only within its connection.
    pub operation_id: String,
}

impl SubscriptionKey {
    /// `connectionId#operationId`. Connection ids never contain `#`, so the first `#` splits.
    pub fn encode(&self) -> String {
        format!("{}#{}", self.connection_id, self.operation_id)
    }

    /// The inverse of [`SubscriptionKey::encode`]; `None` without a `#` or with an empty
    /// connection id.
    pub fn decode(value: &str) -> Option<Self> {
        let (connection, operation) = value.split_once('#')?;
        (!connection.is_empty()).then(|| Self {
            connection_id: ConnectionId::new(connection),
            operation_id: operation.to_owned(),
        })
    }
}

/// A stored subscription: everything needed to run its document against one event later,
/// in another process, without the original request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// Which connection and operation the subscription belongs to.
    pub key: SubscriptionKey,
    /// The topic its resolver listened to at `subscribe`; events published on it are delivered.
    pub topic: Topic,
    /// The subprotocol of its connection, so delivery can frame a message without reading it.
    pub protocol: Protocol,
    /// The user it was made as: delivery renders every event as this user, and only events
    /// whose [`Audience`] admits them.
    pub principal: UserId,
    /// The GraphQL document of the `subscribe`, run again for each event.
    pub document: String,
    /// Which operation of `document` to run, when it holds more than one.
    pub operation_name: Option<String>,
    /// JSON object of the operation's variables.
    pub variables: serde_json::Value,
    /// Seconds since the Unix epoch after which the record is dead (DynamoDB TTL).
    pub expires_at: u64,
    /// Milliseconds since the Unix epoch when the subscription was stored: live delivery
    /// skips events published before it (those are what `resumeFrom` replays). 0 takes
    /// every event.
    #[serde(default)]
    pub starts_at_ms: u64,
    /// Milliseconds since the Unix epoch until which the subscription's resume is replaying
    /// the log to it, 0 once it is not (or never was). Until the replay hands over, live
    /// delivery posts nothing to it: it holds each event back
    /// ([`crate::ReplayGate::hold`]) and the replay sends it, in order. Past this
    /// time without a hand-over the replay was lost (its process ended), and the
    /// connection is closed so that its client resumes again.
    #[serde(default)]
    pub replaying_until_ms: u64,
    /// Its resolver declared that events render the same for every viewer
    /// ([`crate::listen_public`]): delivery renders them once for all such subscribers.
    #[serde(default)]
    pub public: bool,
}

/// Who may receive an event. Checked at delivery against each subscription's principal, so a
/// subscription stored on the wrong topic still cannot leak another user's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "user", rename_all = "camelCase")]
pub enum Audience {
    /// Every subscriber of the topic.
    Everyone,
    /// Only this user's subscriptions, whatever topic they are stored on.
    User(UserId),
}

impl Audience {
    /// Whether a subscription made as `user` may receive the event.
    pub fn admits(&self, user: &UserId) -> bool {
        match self {
            Audience::Everyone => true,
            Audience::User(owner) => owner == user,
        }
    }
}

/// One published change. Its id is a ULID: unique, ordered by time within a topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event's ULID.
    pub id: String,
    /// The topic it was published on.
    pub topic: Topic,
    /// What the resolver published, as JSON: the subscription's resolver receives it.
    pub payload: serde_json::Value,
    /// Who may receive it.
    pub audience: Audience,
    /// Milliseconds since the Unix epoch, when it was published.
    pub published_at_ms: u64,
    /// Seconds since the Unix epoch after which the log drops it (DynamoDB TTL).
    pub expires_at: u64,
    /// Delivered by the publishing call itself (direct mode): the event is in the log for
    /// resuming only, and the stream publisher leaves it alone.
    #[serde(default)]
    pub direct: bool,
}

impl Event {
    /// Where the log keeps this event.
    pub fn reference(&self) -> EventRef {
        EventRef {
            topic: self.topic.clone(),
            event_id: self.id.clone(),
        }
    }

    /// An event stamped now: a fresh ULID, published now, kept for [`EVENT_LIFETIME_SECS`].
    pub fn new(topic: Topic, payload: serde_json::Value, audience: Audience) -> Self {
        // One clock reading for both: the id's time is the publication time, which is what
        // a resume pages by.
        let id = next_event_id();
        let now = id.timestamp_ms();
        Self {
            id: id.to_string(),
            topic,
            payload,
            audience,
            published_at_ms: now,
            expires_at: now / 1000 + EVENT_LIFETIME_SECS,
            direct: false,
        }
    }

    /// When the event was published, in milliseconds since the epoch: its `published_at_ms`,
    /// or for items other services wrote without it, the time in its ULID.
    pub fn published_ms(&self) -> u64 {
        if self.published_at_ms > 0 {
            return self.published_at_ms;
        }
        ulid_ms(&self.id).unwrap_or_default()
    }
}

/// A new event id. Monotonic within this process, so events one process publishes in the
/// same millisecond keep their order; ids of different processes may still interleave.
fn next_event_id() -> ulid::Ulid {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let mut generator = GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Fails only when 2^80 ids were made in one millisecond; a fresh random one will do.
    generator.generate().unwrap_or_else(|_| ulid::Ulid::new())
}

/// The millisecond timestamp in a ULID, `None` for a string that is not one.
pub fn ulid_ms(id: &str) -> Option<u64> {
    ulid::Ulid::from_string(id).ok().map(|u| u.timestamp_ms())
}

/// A reference to an event in the log, small enough to put in a queue message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    /// The topic the event was published on (the log's partition).
    pub topic: Topic,
    /// The event's ULID (the log's sort key).
    pub event_id: String,
}

/// The current time in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The current time in whole seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_key_round_trips_with_hash_in_operation_id() {
        let key = SubscriptionKey {
            connection_id: ConnectionId::new("L0SM9cOFvHcCIhw="),
            operation_id: "a#b".into(),
        };
        assert_eq!(SubscriptionKey::decode(&key.encode()), Some(key));
        assert_eq!(SubscriptionKey::decode("no-separator"), None);
        assert_eq!(SubscriptionKey::decode("#op"), None);
    }

    #[test]
    fn audience_admits_only_its_user() {
        let a = UserId::new("a");
        let b = UserId::new("b");
        assert!(Audience::Everyone.admits(&a));
        assert!(Audience::User(a.clone()).admits(&a));
        assert!(!Audience::User(a).admits(&b));
    }
}

/// Where a published event goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeliveryMode {
    /// Append the event to the log and return; the stream publisher delivers it.
    #[default]
    Stream,
    /// Deliver inside the publishing call (the resolver waits for every post).
    Direct,
}

impl FromStr for DeliveryMode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "stream" => Ok(Self::Stream),
            "direct" => Ok(Self::Direct),
            other => Err(format!(
                "unknown delivery mode {other:?} (expected \"stream\" or \"direct\")"
            )),
        }
    }
}
