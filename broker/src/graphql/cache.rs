//! The per-process cache of parsed documents, their validations and shapes, bounded by
//! the bytes of their text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerError, ValidationResult};

use super::{Shape, Spec};
use crate::cost::CostLimits;

/// Bytes of document text the per-process cache keeps (their parsed forms take a few times
/// more). Enough for thousands of distinct subscription documents.
pub(crate) const DOCUMENT_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// A map bounded by the bytes of its keys; when full, arbitrary entries make room (an entry
/// evicted is only computed again, never wrong).
pub(super) struct Bounded<V> {
    entries: HashMap<Arc<str>, V>,
    bytes: usize,
    max_bytes: usize,
}

impl<V: Clone> Bounded<V> {
    fn new(max_bytes: usize) -> Self {
        Self {
            entries: HashMap::new(),
            bytes: 0,
            max_bytes,
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<V> {
        self.entries.get(key).cloned()
    }

    pub(super) fn insert(&mut self, key: &str, value: V) {
        while self.bytes + key.len() > self.max_bytes {
            let Some(victim) = self.entries.keys().next().cloned() else {
                break;
            };
            self.entries.remove(&victim);
            self.bytes -= victim.len();
        }
        if self.entries.insert(Arc::from(key), value).is_none() {
            self.bytes += key.len();
        }
    }
}

/// Parsed, cost-checked documents, keyed by their text: a document is parsed and priced
/// once per process, however many requests, subscribers and events use it. Bounded by the
/// bytes of text it holds. Refused documents are not kept.
///
/// Beside them, what the schema's validation said of a stored subscription rendered with
/// its operation and variables ([`Prevalidation`]): delivery validates each once per
/// process, not once per event.
///
/// And the [`Shape`] of each stored document, for merging the renderings of one subscriber's
/// documents; unions the cost limits refused are remembered, so they are not tried again.
pub(crate) struct DocumentCache {
    documents: Mutex<Bounded<Arc<ExecutableDocument>>>,
    pub(super) validations: Mutex<Bounded<ValidationResult>>,
    shapes: Mutex<Bounded<Option<Arc<Shape>>>>,
    /// Unions refused, by [`Spec::key`], and when: a refusal is kept for
    /// [`UNION_REFUSAL_TTL`], so one caused by an app's extension failing for a moment does
    /// not stop merging for good.
    refused_unions: Mutex<Bounded<Instant>>,
    refusal_ttl: Duration,
}

/// How long a refused union is not tried again.
pub(crate) const UNION_REFUSAL_TTL: Duration = Duration::from_secs(60);

impl DocumentCache {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            documents: Mutex::new(Bounded::new(max_bytes)),
            validations: Mutex::new(Bounded::new(max_bytes)),
            shapes: Mutex::new(Bounded::new(max_bytes)),
            refused_unions: Mutex::new(Bounded::new(max_bytes)),
            refusal_ttl: UNION_REFUSAL_TTL,
        }
    }

    /// The shape of a stored document's operation, or `None` when its rendering cannot be
    /// merged with others (see [`merge`]).
    pub(crate) fn shape(&self, limits: &CostLimits, spec: Spec<'_>) -> Option<Arc<Shape>> {
        let key = spec.key();
        if let Some(shape) = lock(&self.shapes).get(&key) {
            return shape;
        }
        let shape = self
            .get_or_parse(limits, spec.document)
            .ok()
            .and_then(|document| Shape::of(&document, spec.operation_name, spec.variables))
            .map(Arc::new);
        lock(&self.shapes).insert(&key, shape.clone());
        shape
    }

    /// Whether a union may run: it passes the cost limits (parsed once, like any document)
    /// and was not refused lately. A refused one is remembered: its members are rendered one
    /// by one without trying it again for a while.
    pub(crate) fn admit_union(&self, limits: &CostLimits, spec: Spec<'_>) -> bool {
        let key = spec.key();
        let refused = lock(&self.refused_unions).get(&key);
        if refused.is_some_and(|at| at.elapsed() < self.refusal_ttl) {
            return false;
        }
        let admitted = self.get_or_parse(limits, spec.document).is_ok();
        if !admitted {
            lock(&self.refused_unions).insert(&key, Instant::now());
        }
        admitted
    }

    /// Remembers a union the schema refused (its validation, its own limits; errors of no
    /// field): its members are rendered one by one without trying it again for a while.
    pub(crate) fn refuse_union(&self, spec: Spec<'_>) {
        lock(&self.refused_unions).insert(&spec.key(), Instant::now());
    }

    pub(crate) fn get_or_parse(
        &self,
        limits: &CostLimits,
        text: &str,
    ) -> Result<Arc<ExecutableDocument>, ServerError> {
        // The length first: a document over the limit is not even hashed for the lookup.
        if text.len() > limits.max_document_bytes {
            return Err(crate::cost::CostError::DocumentTooLarge {
                actual: text.len(),
                limit: limits.max_document_bytes,
            }
            .into());
        }
        if let Some(document) = lock(&self.documents).get(text) {
            return Ok(document);
        }
        // Parsed outside the lock: other requests go on meanwhile.
        let document = Arc::new(limits.parse(text)?);
        lock(&self.documents).insert(text, document.clone());
        Ok(document)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.documents).entries.len()
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        lock(&self.documents).bytes
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_parses_a_document_once_and_stays_within_its_bytes() {
        let cache = DocumentCache::new(100);
        let limits = CostLimits::default();
        let a = cache.get_or_parse(&limits, "{ a }").unwrap();
        let again = cache.get_or_parse(&limits, "{ a }").unwrap();
        assert!(
            Arc::ptr_eq(&a, &again),
            "the second use must not parse again"
        );
        for i in 0..50 {
            cache
                .get_or_parse(&limits, &format!("{{ field{i} }}"))
                .unwrap();
        }
        // 50 documents of 10-11 bytes do not fit in 100 bytes.
        assert!(cache.len() <= 10, "{} documents kept", cache.len());
        assert!(cache.bytes() <= 100);
    }

    #[test]
    fn the_cache_refuses_a_document_over_the_size_limit_by_its_length() {
        let cache = DocumentCache::new(1 << 20);
        let limits = CostLimits {
            max_document_bytes: 10,
            ..CostLimits::default()
        };
        let error = cache.get_or_parse(&limits, "{ a b c d e }").unwrap_err();
        assert!(error.message.contains("13 bytes"), "{}", error.message);
        assert!(cache.get_or_parse(&limits, "{ a }").is_ok());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_refused_union_is_tried_again_after_a_while() {
        let mut cache = DocumentCache::new(1 << 20);
        cache.refusal_ttl = Duration::from_millis(20);
        let limits = CostLimits::default();
        let variables = serde_json::json!({"a": 1});
        let spec = Spec {
            document: "subscription { a }",
            operation_name: None,
            variables: &variables,
        };
        assert!(cache.admit_union(&limits, spec));
        cache.refuse_union(spec);
        assert!(!cache.admit_union(&limits, spec));
        // The same text with other variables is another union.
        let other = serde_json::json!({"a": 2});
        assert!(cache.admit_union(
            &limits,
            Spec {
                variables: &other,
                ..spec
            }
        ));
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            cache.admit_union(&limits, spec),
            "tried again once the refusal is old"
        );
    }

    #[test]
    fn the_cache_keeps_no_refused_document() {
        let cache = DocumentCache::new(1 << 20);
        let bomb = format!("{{ {} }}", "id ".repeat(2_000));
        assert!(cache.get_or_parse(&CostLimits::default(), &bomb).is_err());
        assert!(cache.get_or_parse(&CostLimits::default(), "{ a(").is_err());
        assert_eq!(cache.len(), 0);
    }
}
