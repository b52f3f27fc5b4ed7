//! The in-memory quotas.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::domain::now_secs;
use crate::ports::{Quotas, StoreError};

/// Counters in a map: key → (value, until when). Expired counters are swept whenever the
/// map has doubled since the last sweep, so it holds about as many counters as are live.
#[derive(Debug, Default)]
pub struct MemoryQuotas {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    counters: HashMap<String, (u64, u64)>,
    /// How many counters the last sweep left.
    swept_to: usize,
}

impl State {
    fn live(&self, key: &str, now: u64) -> u64 {
        match self.counters.get(key) {
            Some(&(value, until)) if until > now => value,
            _ => 0,
        }
    }

    fn sweep(&mut self, now: u64) {
        if self.counters.len() > 2 * self.swept_to + 1024 {
            self.counters.retain(|_, (_, until)| *until > now);
            self.swept_to = self.counters.len();
        }
    }
}

#[async_trait]
impl Quotas for MemoryQuotas {
    async fn take(&self, key: &str, limit: u64, expires_at: u64) -> Result<bool, StoreError> {
        let mut state = lock(&self.state);
        let now = now_secs();
        state.sweep(now);
        let value = state.live(key, now);
        if value >= limit {
            return Ok(false);
        }
        state
            .counters
            .insert(key.to_owned(), (value + 1, expires_at));
        Ok(true)
    }

    async fn release(&self, key: &str, n: u64) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        let now = now_secs();
        if let Some((value, until)) = state.counters.get_mut(key)
            && *until > now
        {
            *value = value.saturating_sub(n);
        }
        Ok(())
    }

    async fn set(&self, key: &str, value: u64, expires_at: u64) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        state.sweep(now_secs());
        state.counters.insert(key.to_owned(), (value, expires_at));
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<u64, StoreError> {
        Ok(lock(&self.state).live(key, now_secs()))
    }
}
