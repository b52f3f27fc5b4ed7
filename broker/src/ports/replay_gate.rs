//! The replay gate port: the resume's hand-over from replay to live delivery.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::Subscription;

/// What [`ReplayGate::hold`] did with a live event for a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Held back: the subscription's replay sends it.
    Held,
    /// The replay has handed over (or the subscription is gone): post it live.
    Live,
    /// The replay's time is over and it never handed over: its process ended, and what it
    /// held back may never have been sent.
    Abandoned,
}

/// What [`ReplayGate::hand_over`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandOver {
    /// Live delivery posts to the subscription from now on (or it is gone).
    Done,
    /// Events were held back since the count the replay gave: this many in all. The replay
    /// reads the log again and tries again with it.
    Held(u64),
}

/// The hand-over of a resuming subscription from its replay to live delivery.
///
/// A subscription that resumes is stored replaying ([`Subscription::replaying_until_ms`]):
/// its replay sends what it missed from the event log while live delivery holds every new
/// event of its topic back ([`Self::hold`]), counting them. The replay hands over
/// ([`Self::hand_over`]) only when no event was held back since its last read of the log,
/// so every held event is in what it read; otherwise it reads again. Both calls act on the
/// subscription as the [`super::SubscriptionStore`] stored it, atomically with their check,
/// so a gate works on the store it was made for: removing a subscription removes its
/// count, and a subscription not stored (any more) is live.
#[async_trait]
pub trait ReplayGate: Send + Sync {
    /// Holds a live event back from a subscription whose replay has not handed over yet
    /// ([`Subscription::replaying_until_ms`]), counting it, atomically with the check.
    async fn hold(&self, subscription: &Subscription) -> Result<Hold, StoreError>;
    /// Hands a replaying subscription over to live delivery if no event was held back since
    /// the replay's last read, when `held` were (atomically with the check); `None` hands
    /// over whatever was held.
    async fn hand_over(
        &self,
        subscription: &Subscription,
        held: Option<u64>,
    ) -> Result<HandOver, StoreError>;
}
