//! Delivery metrics in CloudWatch Embedded Metric Format (EMF).
//!
//! Each Lambda invocation that delivers anything writes one JSON object, one line, to stdout;
//! CloudWatch Logs turns it into metrics with no API call and no extra latency. The figures
//! come from the [`DeliveryReport`]s of the invocation, summed, and the age of each event at
//! delivery as a distribution (EMF takes a list of values per metric).
//!
//! An invocation collects into a task-local record ([`collect`]); delivery code adds to it
//! with [`record`], which does nothing outside a collecting invocation (local mode, tests of
//! other things). The record is a small serde struct rather than a metrics crate: those keep
//! a process-wide recorder and flush it from their own Lambda service wrapper, while here
//! one invocation's figures are already at hand in its reports.

use std::cell::RefCell;
use std::future::Future;
use std::io::Write;

use serde::Serialize;

use crate::delivery::{Counters, DeliveryReport};
use crate::domain::now_ms;

/// The CloudWatch namespace when `METRICS_NAMESPACE` is not set (its declared default).
pub const DEFAULT_NAMESPACE: &str = match crate::settings::METRICS_NAMESPACE.setting.fallback {
    crate::settings::Fallback::Value(namespace) => namespace,
    _ => panic!("METRICS_NAMESPACE declares its default"),
};

/// EMF takes at most 100 values for one metric in one object; ages beyond are left out.
pub const MAX_AGE_VALUES: usize = 100;

/// The figures of one invocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvocationMetrics {
    /// Reports recorded: zero when the invocation delivered nothing and emits nothing.
    pub reports: usize,
    /// The sum of the reports' counts.
    pub counts: Counters,
    /// Publishes that failed because the event was not stored within the deadline
    /// ([`crate::BrokerConfig::publish_deadline`]).
    pub publish_timeouts: usize,
    /// Events the stream publisher found stored longer than `resume_settle` after their
    /// stamp: a publish that timed out, yet was stored (delivered live in stream mode). A
    /// resume may not replay such an event.
    pub late_stores: usize,
    /// Stream records the publisher gave up without retrying, since no retry could deliver
    /// them: an image that is not an event, or an audience no user can have.
    pub undeliverable: usize,
    /// Milliseconds from an event's creation to its delivery, one value per delivered event.
    pub event_age_ms: Vec<u64>,
}

impl InvocationMetrics {
    /// Adds one report. `created_at_ms`, when known, gives the event's age now if the report
    /// delivered anything.
    pub fn add(&mut self, report: &DeliveryReport, created_at_ms: Option<u64>) {
        self.reports += 1;
        self.counts.add(&report.counts);
        if let Some(created) = created_at_ms
            && report.delivered > 0
            && self.event_age_ms.len() < MAX_AGE_VALUES
        {
            self.event_age_ms.push(now_ms().saturating_sub(created));
        }
    }

    /// The EMF object for these figures, for the function `function` (a dimension).
    pub fn to_emf(&self, namespace: &str, function: &str, timestamp_ms: u64) -> serde_json::Value {
        let count = |name: &'static str| MetricDefinition {
            name,
            unit: "Count",
        };
        let metrics = Counters::METRICS
            .iter()
            .copied()
            .map(count)
            .chain([
                count("PublishTimeouts"),
                count("LateStores"),
                count("Undeliverable"),
            ])
            .chain([MetricDefinition {
                name: "EventAge",
                unit: "Milliseconds",
            }])
            .collect();
        let document = EmfDocument {
            aws: EmfMetadata {
                timestamp: timestamp_ms,
                cloudwatch_metrics: [MetricDirective {
                    namespace,
                    dimensions: [["Function"]],
                    metrics,
                }],
            },
            function,
            counts: self.counts.metrics().collect(),
            publish_timeouts: self.publish_timeouts,
            late_stores: self.late_stores,
            undeliverable: self.undeliverable,
            event_age: &self.event_age_ms,
        };
        serde_json::to_value(document).expect("an EMF document is plain JSON")
    }

    /// Writes the EMF line, if the invocation recorded anything.
    pub fn write_emf(&self, function: &str, out: &mut dyn Write) -> std::io::Result<()> {
        if self.reports == 0
            && self.publish_timeouts == 0
            && self.late_stores == 0
            && self.undeliverable == 0
        {
            return Ok(());
        }
        // Free text: never malformed.
        let namespace = crate::settings::METRICS_NAMESPACE.get().ok().flatten();
        let namespace = namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
        let mut line = self.to_emf(namespace, function, now_ms()).to_string();
        line.push('\n');
        // One write of the whole line: it is not interleaved with log lines.
        out.write_all(line.as_bytes())?;
        out.flush()
    }
}

#[derive(Serialize)]
struct EmfDocument<'a> {
    #[serde(rename = "_aws")]
    aws: EmfMetadata<'a>,
    #[serde(rename = "Function")]
    function: &'a str,
    /// Each counter under its metric's name.
    #[serde(flatten)]
    counts: std::collections::BTreeMap<&'static str, usize>,
    #[serde(rename = "PublishTimeouts")]
    publish_timeouts: usize,
    #[serde(rename = "LateStores")]
    late_stores: usize,
    #[serde(rename = "Undeliverable")]
    undeliverable: usize,
    /// An empty list is valid EMF: no age sample for this invocation.
    #[serde(rename = "EventAge")]
    event_age: &'a [u64],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EmfMetadata<'a> {
    timestamp: u64,
    #[serde(rename = "CloudWatchMetrics")]
    cloudwatch_metrics: [MetricDirective<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MetricDirective<'a> {
    namespace: &'a str,
    dimensions: [[&'static str; 1]; 1],
    metrics: Vec<MetricDefinition>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MetricDefinition {
    name: &'static str,
    unit: &'static str,
}

tokio::task_local! {
    static CURRENT: RefCell<InvocationMetrics>;
}

/// Adds a report to the invocation being collected, if any.
pub fn record(report: &DeliveryReport, created_at_ms: Option<u64>) {
    let _ = CURRENT.try_with(|m| m.borrow_mut().add(report, created_at_ms));
}

/// Counts a publish that timed out, in the invocation being collected, if any.
pub fn record_publish_timeout() {
    let _ = CURRENT.try_with(|m| m.borrow_mut().publish_timeouts += 1);
}

/// Counts an event stored late, in the invocation being collected, if any.
pub fn record_late_store() {
    let _ = CURRENT.try_with(|m| m.borrow_mut().late_stores += 1);
}

/// Counts a stream record given up as undeliverable, in the invocation being collected, if
/// any.
pub fn record_undeliverable() {
    let _ = CURRENT.try_with(|m| m.borrow_mut().undeliverable += 1);
}

/// Runs one invocation, collecting what it records.
pub async fn collect<F: Future>(invocation: F) -> (F::Output, InvocationMetrics) {
    CURRENT
        .scope(RefCell::new(InvocationMetrics::default()), async {
            let output = invocation.await;
            (output, CURRENT.with(|m| m.take()))
        })
        .await
}

/// Runs one invocation and writes its EMF line to `out` (stdout on Lambda).
pub async fn emit<F: Future>(function: &str, out: &mut dyn Write, invocation: F) -> F::Output {
    let (output, metrics) = collect(invocation).await;
    if let Err(e) = metrics.write_emf(function, out) {
        tracing::warn!(error = %e, "writing metrics failed");
    }
    output
}

/// [`emit`] to stdout, what the Lambda functions use.
pub async fn emit_to_stdout<F: Future>(function: &str, invocation: F) -> F::Output {
    let (output, metrics) = collect(invocation).await;
    if let Err(e) = metrics.write_emf(function, &mut std::io::stdout().lock()) {
        tracing::warn!(error = %e, "writing metrics failed");
    }
    output
}

/// When an event was published, from its id (a ULID carries its creation time): what a
/// fan-out page, which holds only the id, can tell of the event's age.
pub fn published_at_ms_of_id(event_id: &str) -> Option<u64> {
    ulid::Ulid::from_string(event_id)
        .ok()
        .map(|u| u.timestamp_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_invocation_sums_its_reports_into_one_emf_object() {
        let report = DeliveryReport::of(Counters {
            delivered: 3,
            filtered: 1,
            gone: 2,
            ..Default::default()
        });
        let mut out = Vec::new();
        emit("Test", &mut out, async {
            record(&report, Some(now_ms() - 50));
            record(
                &DeliveryReport::of(Counters {
                    failed: 1,
                    pages_enqueued: 2,
                    held: 1,
                    ..Default::default()
                }),
                None,
            );
        })
        .await;
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], serde_json::json!([["Function"]]));
        let names: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in names {
            assert!(v.get(name).is_some(), "{name} has no value");
        }
        assert_eq!(v["Function"], "Test");
        assert_eq!(v["Deliveries"], 3);
        assert_eq!(v["Filtered"], 1);
        assert_eq!(v["Gone"], 2);
        assert_eq!(v["Failed"], 1);
        assert_eq!(v["FanoutPages"], 2);
        assert_eq!(v["Held"], 1);
        let ages = v["EventAge"].as_array().unwrap();
        assert_eq!(ages.len(), 1);
        assert!(ages[0].as_u64().unwrap() >= 50);
        assert_eq!(v["PublishTimeouts"], 0);
    }

    #[tokio::test]
    async fn a_timed_out_publish_or_a_late_store_alone_is_written() {
        let mut out = Vec::new();
        emit("Test", &mut out, async {
            record_publish_timeout();
            record_late_store();
            record_late_store();
        })
        .await;
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["PublishTimeouts"], 1);
        assert_eq!(v["LateStores"], 2);
        assert_eq!(v["Undeliverable"], 0);
        assert_eq!(v["Deliveries"], 0);
    }

    #[tokio::test]
    async fn an_undeliverable_record_alone_is_written() {
        let mut out = Vec::new();
        emit("Test", &mut out, async {
            record_undeliverable();
        })
        .await;
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["Undeliverable"], 1);
        assert_eq!(v["Deliveries"], 0);
    }

    #[tokio::test]
    async fn nothing_recorded_writes_nothing_and_recording_outside_is_a_no_op() {
        record(&DeliveryReport::default(), None);
        let mut out = Vec::new();
        emit("Test", &mut out, async {}).await;
        assert!(out.is_empty());
    }

    #[test]
    fn an_event_id_gives_its_publication_time() {
        let event = crate::Event::new(
            crate::Topic::from("t"),
            serde_json::json!(1),
            crate::Audience::Everyone,
        );
        assert_eq!(
            published_at_ms_of_id(&event.id),
            Some(event.published_at_ms)
        );
        assert_eq!(published_at_ms_of_id("not a ulid"), None);
    }
}
