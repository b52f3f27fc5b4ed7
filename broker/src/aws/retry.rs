//! Bounded exponential backoff with full jitter, for what the SDK's own retries leave over:
//! throttled posts, unprocessed batch entries, conflicting transactions.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// How often and how patiently a call is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// The ceiling of the first delay; it doubles with every retry.
    pub base_delay: Duration,
    /// No delay is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 5,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0 for the first): uniformly random below the
    /// exponential ceiling ("full jitter"), so many callers throttled at once spread out
    /// instead of coming back together.
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.min(20)))
            .min(self.max_delay);
        let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        if ceiling_ms == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(random_u64() % (ceiling_ms + 1))
    }

    /// Waits [`RetryPolicy::delay`] before retry number `retry`.
    pub async fn sleep(&self, retry: u32) {
        tokio::time::sleep(self.delay(retry)).await;
    }
}

/// A random number good enough for jitter: std seeds every `RandomState` from the OS and
/// varies it per instance, which saves a dependency on a random number crate.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(crate::domain::now_ms());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_exponential_ceiling() {
        let policy = RetryPolicy {
            retries: 10,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        };
        for retry in 0..10 {
            let ceiling = Duration::from_millis((10u64 << retry).min(100));
            for _ in 0..50 {
                assert!(policy.delay(retry) <= ceiling);
            }
        }
    }

    #[test]
    fn delays_are_jittered() {
        let policy = RetryPolicy::default();
        let delays: std::collections::HashSet<_> = (0..50).map(|_| policy.delay(5)).collect();
        assert!(delays.len() > 1);
    }
}
