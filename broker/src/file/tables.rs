//! Every table of the database file, in one place: the stores read and write them, and
//! [`super::FileStore::open`] creates them all.

use ::redb::TableDefinition;

// connections

/// Connection id → JSON [`Connection`].
pub(super) const CONNECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("connections");

/// (user, connection id): `by_user`.
pub(super) const CONNECTIONS_BY_USER: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("connections_by_user");

// events

/// (topic, event id) → JSON [`Event`]: a topic's events in id order.
pub(super) const EVENTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("events");

/// (topic, event id) of the events delivered in full.
pub(super) const DELIVERED: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("events_delivered");

/// Stream sequence number → (topic, event id): the order events were appended in, what the
/// local mode's stream reads.
pub(super) const STREAM: TableDefinition<u64, (&str, &str)> = TableDefinition::new("events_stream");

/// (expires at, topic, event id) → stream sequence number: what [`FileEventLog::purge_expired`]
/// removes.
pub(super) const EXPIRY: TableDefinition<(u64, &str, &str), u64> =
    TableDefinition::new("events_expiry");

/// Counters: the next stream sequence number, the stream position read up to.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

// page marks

/// (topic, page id) → until when: fan-out pages on their way through the ordered queue.
pub(super) const PAGES: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("fanout_pages_in_flight");

// replay gate

/// (topic, encoded key) → how many live events were held back from a replaying
/// subscription ([`ReplayGate::hold`]).
pub(super) const HELD: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("subscriptions_held");

// subscriptions

/// (topic, encoded key) → JSON [`Subscription`]: `by_topic` is one range.
pub(super) const SUBSCRIPTIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("subscriptions");

/// (connection id, operation id) → topic: `contains`, `by_connection`, the per-connection
/// uniqueness of operation ids.
pub(super) const SUBSCRIPTION_TOPICS: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("subscription_topics");

/// (connection id, operation id) → until when: a `complete` that came before its
/// `subscribe` (see [`SubscriptionStore::complete`]).
pub(super) const TOMBSTONES: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("tombstones");

/// Connection id → until when: a closed connection stores no subscription.
pub(super) const CLOSED: TableDefinition<&str, u64> = TableDefinition::new("closed_connections");

// quotas

/// Counter key → (value, until when): the per-user limits' rates and gauges.
pub(super) const QUOTAS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("quotas");
