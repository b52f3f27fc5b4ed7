//! What one delivery did: the [`Counters`] every delivery path reports and the metrics sum,
//! declared once, and the [`DeliveryReport`] that carries them with the subscriptions a retry
//! must reach.

use std::ops::{Deref, DerefMut};

use crate::domain::SubscriptionKey;

/// Declares [`Counters`]: each counter once, with its meaning and the name of its metric.
/// Summing, the metric names and their values all follow from this one list.
macro_rules! counters {
    ($( $(#[doc = $doc:literal])+ $field:ident => $metric:literal, )+) => {
        /// What happened to one event (or one fan-out page), counted; also the sum of an
        /// invocation's reports in its metrics ([`crate::metrics::InvocationMetrics`]).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $( $(#[doc = $doc])+ pub $field: usize, )+
        }

        impl Counters {
            /// The metric of each counter (its CloudWatch name), in declaration order.
            pub const METRICS: &'static [&'static str] = &[$($metric),+];

            /// Adds `other`'s counts to these.
            pub fn add(&mut self, other: &Self) {
                $( self.$field += other.$field; )+
            }

            /// Each counter's metric name and value, in the order of [`Self::METRICS`].
            pub fn metrics(&self) -> impl Iterator<Item = (&'static str, usize)> {
                [$( ($metric, self.$field) ),+].into_iter()
            }
        }
    };
}

counters! {
    /// `next` frames posted.
    delivered => "Deliveries",
    /// Subscriptions whose document produced nothing for the event.
    filtered => "Filtered",
    /// Subscriptions refused because the event's audience excludes their user.
    refused => "Refused",
    /// Connections found gone (410) and cleaned up.
    gone => "Gone",
    /// Frames the gateway refused for good: retrying cannot help.
    dropped => "Dropped",
    /// Subscribers whose frame would have been over
    /// [`MAX_FRAME_BYTES`](crate::delivery::MAX_FRAME_BYTES) and who were posted an
    /// [`EVENT_TOO_LARGE`](crate::delivery::EVENT_TOO_LARGE) error in its place (not counted
    /// in `delivered`).
    too_large => "TooLarge",
    /// Posts that failed otherwise: the event must be retried.
    failed => "Failed",
    /// Fan-out pages handed to the queue instead of delivering here.
    pages_enqueued => "FanoutPages",
    /// Subscriptions still replaying their resume, which the event was held back from:
    /// their replay sends it, in order with what it replays.
    held => "Held",
    /// Subscribers of a subscription declared the same for every viewer
    /// ([`crate::listen_public`]) whose shared rendering read the viewer: they were rendered
    /// one user at a time instead. Not zero means a declaration to fix.
    public_fallbacks => "PublicFallbacks",
}

/// What happened to one event (or one fan-out page): its [`Counters`] (read and written
/// through the report, `report.delivered`), and which subscriptions failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The counts.
    pub counts: Counters,
    /// The subscriptions counted in `failed`: what a retry must reach, and nothing else.
    pub failed_keys: Vec<SubscriptionKey>,
}

impl DeliveryReport {
    /// A report of `counts` alone, with no failed subscription named.
    pub fn of(counts: Counters) -> Self {
        Self {
            counts,
            failed_keys: Vec::new(),
        }
    }

    /// Whether every post that was due went out: nothing to retry.
    pub fn is_complete(&self) -> bool {
        self.failed == 0
    }

    pub(crate) fn absorb(&mut self, other: DeliveryReport) {
        self.counts.add(&other.counts);
        self.failed_keys.extend(other.failed_keys);
    }
}

impl Deref for DeliveryReport {
    type Target = Counters;

    fn deref(&self) -> &Counters {
        &self.counts
    }
}

impl DerefMut for DeliveryReport {
    fn deref_mut(&mut self) -> &mut Counters {
        &mut self.counts
    }
}
