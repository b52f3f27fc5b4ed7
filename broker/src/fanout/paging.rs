//! How a large fan-out is cut into pages, so that one subscriber's events of a topic keep
//! their order through the fan-out queue.
//!
//! Every subscription is assigned a bucket from its connection id by [`bucket_of`]: a stable
//! hash (64-bit FNV-1a, the same in every process and every build) modulo the configured
//! number of groups (`FANOUT_GROUPS`). A page holds the subscriptions of one bucket only, and
//! names its group, `"{topic}#{bucket}"`. All of one connection's pages of a topic therefore
//! share a group, across events; a FIFO queue keeps a group's messages in order and the
//! workers handle them one after another, so consecutive events reach that connection in
//! order. Different groups are handled concurrently: more groups spread a topic's pages over
//! more workers, fewer keep more of them in line behind each other.

use std::collections::BTreeMap;

use crate::domain::{ConnectionId, SubscriptionKey, Topic};
use crate::ports::FanoutPage;

/// 64-bit FNV-1a (Fowler–Noll–Vo) of `bytes`: offset basis 0xcbf29ce484222325, prime
/// 0x100000001b3, each byte XORed in before the multiplication. Not a secure hash; chosen
/// because its value depends on nothing but the bytes (unlike std's `DefaultHasher`, whose
/// algorithm may change between Rust releases, and `RandomState`, which is seeded per process).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The bucket of a connection's subscriptions among `groups` (taken as 1 when 0).
pub fn bucket_of(connection: &ConnectionId, groups: usize) -> usize {
    let groups = groups.max(1) as u64;
    // The remainder is below `groups`, which came from a usize.
    (fnv1a64(connection.as_str().as_bytes()) % groups) as usize
}

/// The group of a topic's pages for one bucket: what a FIFO queue orders by.
pub fn group_name(topic: &Topic, bucket: usize) -> String {
    format!("{topic}#{bucket}")
}

/// The pages of one event for `keys`: one bucket's subscriptions per page, at most
/// `page_size` each (taken as 1 when 0). The order is deterministic whatever the order of
/// `keys`: buckets ascending, and within a bucket the keys sorted by their encoding, so the
/// same subscribers give the same pages on a retry of the event.
pub fn pages(
    topic: &Topic,
    event_id: &str,
    keys: impl IntoIterator<Item = SubscriptionKey>,
    groups: usize,
    page_size: usize,
) -> Vec<FanoutPage> {
    let mut buckets: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for key in keys {
        let bucket = bucket_of(&key.connection_id, groups);
        buckets.entry(bucket).or_default().push(key.encode());
    }
    let mut pages = Vec::new();
    for (bucket, mut encoded) in buckets {
        encoded.sort();
        encoded.dedup();
        let group = group_name(topic, bucket);
        pages.extend(encoded.chunks(page_size.max(1)).map(|chunk| FanoutPage {
            topic: topic.clone(),
            event_id: event_id.to_owned(),
            group: group.clone(),
            subscription_keys: chunk.to_vec(),
        }));
    }
    pages
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn key(connection: &str, operation: &str) -> SubscriptionKey {
        SubscriptionKey {
            connection_id: ConnectionId::new(connection),
            operation_id: operation.to_owned(),
        }
    }

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        // Values of the FNV reference test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_page_serializes_its_group_and_one_from_before_groups_still_reads() {
        let page = &pages(&Topic::new("t"), "e", [key("c", "1")], 4, 10)[0];
        let json = serde_json::to_value(page).unwrap();
        assert_eq!(
            json["group"],
            group_name(&Topic::new("t"), bucket_of(&ConnectionId::new("c"), 4))
        );
        let old: FanoutPage =
            serde_json::from_str(r#"{"topic":"t","eventId":"e","subscriptionKeys":["c#1"]}"#)
                .unwrap();
        assert_eq!(old.group, "");
        assert_eq!(old.ordering_group(), "t");
        assert_eq!(page.ordering_group(), page.group);
    }

    #[test]
    fn buckets_are_stable_values() {
        // Pinned: a change here would send a live connection's pages to another group
        // while older pages of it are still queued in the old one.
        let buckets: Vec<usize> = ["conn-0", "conn-1", "Q2xpZW50QT0=", "tab-7"]
            .iter()
            .map(|c| bucket_of(&ConnectionId::new(*c), 32))
            .collect();
        let expected: Vec<usize> = ["conn-0", "conn-1", "Q2xpZW50QT0=", "tab-7"]
            .iter()
            .map(|c| (fnv1a64(c.as_bytes()) % 32) as usize)
            .collect();
        assert_eq!(buckets, expected);
        assert_eq!(buckets, PINNED_BUCKETS);
        assert_eq!(bucket_of(&ConnectionId::new("anything"), 1), 0);
        assert_eq!(bucket_of(&ConnectionId::new("anything"), 0), 0);
    }

    const PINNED_BUCKETS: [usize; 4] = [18, 5, 14, 12];

    #[test]
    fn one_connection_keeps_its_group_across_events_and_operations() {
        let topic = Topic::new("board/b1/cardAdded");
        let keys: Vec<SubscriptionKey> = (0..200).map(|i| key(&format!("c{i}"), "s")).collect();
        let group_of = |pages: &[FanoutPage]| -> BTreeMap<String, String> {
            pages
                .iter()
                .flat_map(|p| {
                    p.subscription_keys
                        .iter()
                        .map(|k| (k.clone(), p.group.clone()))
                })
                .collect()
        };
        let first = pages(&topic, "event-1", keys.clone(), 8, 7);
        let mut reversed = keys;
        reversed.reverse();
        let second = pages(&topic, "event-2", reversed, 8, 7);
        assert_eq!(group_of(&first), group_of(&second));
        // The same pages whatever order the store listed the subscriptions in.
        let keys_of = |pages: &[FanoutPage]| -> Vec<Vec<String>> {
            pages.iter().map(|p| p.subscription_keys.clone()).collect()
        };
        assert_eq!(keys_of(&first), keys_of(&second));
        // Two operations of one connection are in one group.
        let two = pages(&topic, "e", [key("c1", "a"), key("c1", "b")], 8, 1);
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].group, two[1].group);
    }

    #[test]
    fn no_page_mixes_buckets_and_every_key_is_in_one_page_of_at_most_the_page_size() {
        let topic = Topic::new("board/b1/cardAdded");
        let keys: Vec<SubscriptionKey> = (0..500).map(|i| key(&format!("conn-{i}"), "1")).collect();
        let made = pages(&topic, "e", keys.clone(), 16, 10);
        let mut seen = BTreeSet::new();
        let mut groups = BTreeSet::new();
        for page in &made {
            assert!(!page.subscription_keys.is_empty() && page.subscription_keys.len() <= 10);
            assert_eq!(page.topic, topic);
            assert_eq!(page.event_id, "e");
            for encoded in &page.subscription_keys {
                let k = SubscriptionKey::decode(encoded).unwrap();
                let bucket = bucket_of(&k.connection_id, 16);
                assert_eq!(page.group, group_name(&topic, bucket), "{page:?}");
                assert!(seen.insert(encoded.clone()), "{encoded} twice");
            }
            groups.insert(page.group.clone());
        }
        assert_eq!(seen.len(), keys.len());
        assert!(groups.len() > 1 && groups.len() <= 16, "{groups:?}");
        // Within a bucket, only the last page is short.
        for group in &groups {
            let sizes: Vec<usize> = made
                .iter()
                .filter(|p| &p.group == group)
                .map(|p| p.subscription_keys.len())
                .collect();
            assert!(
                sizes[..sizes.len() - 1].iter().all(|&n| n == 10),
                "{sizes:?}"
            );
        }
        // One group: plain chunks of the sorted keys.
        let single = pages(&topic, "e", keys, 1, 10);
        assert_eq!(single.len(), 50);
        assert!(single.iter().all(|p| p.group == "board/b1/cardAdded#0"));
        assert_eq!(pages(&topic, "e", Vec::new(), 4, 10), Vec::new());
        assert_eq!(
            pages(&topic, "e", [key("c", "1"), key("d", "1")], 1, 0).len(),
            2
        );
    }
}
