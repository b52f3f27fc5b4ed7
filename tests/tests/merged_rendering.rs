//! One user's subscriptions whose documents differ only in what they select are rendered by
//! one execution of a merged document, and every subscriber still receives exactly what its
//! own document gives when rendered alone: its aliases, its fields in its order, its errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::{
    ComplexObject, Context, Object, Schema, ServerError, SimpleObject, ValidationResult,
};
use broker::memory::RecordingGateway;
use broker::{
    Audience, Broker, BrokerConfig, ConnectionId, Event, EventStream, Prevalidation, Protocol,
    Subscription, SubscriptionKey, Topic, UserId, listen,
};
use broker_tests::fixtures::{fixture_authenticator, memory_ports};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Clone, Deserialize, SimpleObject)]
#[graphql(complex)]
struct Note {
    text: String,
    length: i32,
    tags: Vec<Tag>,
    author: Author,
    pair: Pair,
    grid: Vec<Vec<Tag>>,
}

#[derive(Clone, Deserialize, SimpleObject)]
struct Pair {
    left: Author,
    right: Author,
}

/// How many fields the document selects beside it, as a resolver reading its own selection
/// sees them.
#[derive(SimpleObject)]
struct Meta {
    count: usize,
    other: bool,
}

#[derive(Clone, Deserialize, SimpleObject)]
struct Tag {
    name: String,
}

#[derive(Clone, Deserialize, SimpleObject)]
struct Author {
    id: String,
    name: String,
}

#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
enum Style {
    Loud,
    Quiet,
}

#[ComplexObject]
impl Note {
    async fn rep(&self, #[graphql(default = 2)] times: i32) -> String {
        self.text.repeat(times.max(0) as usize)
    }

    async fn opt(&self, #[graphql(default = 7)] n: Option<i32>) -> String {
        format!("{n:?}")
    }

    async fn sleepy(&self, ms: u64) -> u64 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        ms
    }

    async fn meta(&self, ctx: &Context<'_>) -> Meta {
        Meta {
            count: ctx.field().selection_set().count(),
            other: true,
        }
    }

    async fn styled(&self, style: Style) -> String {
        match style {
            Style::Loud => self.text.to_uppercase(),
            Style::Quiet => self.text.to_lowercase(),
        }
    }

    async fn shout(&self, times: usize) -> String {
        self.text.to_uppercase().repeat(times)
    }

    /// Fails for the text "boom"; nullable, so only this field becomes null.
    async fn fragile(&self) -> async_graphql::Result<Option<String>> {
        if self.text == "boom" {
            return Err("fragile broke".into());
        }
        Ok(Some(self.text.clone()))
    }

    /// Fails for the text "bang"; non-null, so the note itself becomes null.
    async fn strict(&self) -> async_graphql::Result<String> {
        if self.text == "bang" {
            return Err("strict broke".into());
        }
        Ok(self.text.clone())
    }
}

struct Query;

#[Object]
impl Query {
    async fn ok(&self) -> bool {
        true
    }
}

/// Counts the executions that reach the root field.
#[derive(Default)]
struct Executions(AtomicUsize);

/// Counts the validations that reach async-graphql's own rules (it comes after
/// `Prevalidation`, which skips those it did before).
#[derive(Clone, Default)]
struct Validations(Arc<AtomicUsize>);

impl ExtensionFactory for Validations {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Extension for Validations {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        next.run(ctx).await
    }
}

struct Notes;

#[async_graphql::Subscription]
impl Notes {
    async fn note(
        &self,
        ctx: &Context<'_>,
        channel: String,
    ) -> async_graphql::Result<EventStream<Note>> {
        ctx.data::<Arc<Executions>>()?
            .0
            .fetch_add(1, Ordering::SeqCst);
        listen(ctx, Topic::new(channel))
    }
}

const DOCUMENTS: [&str; 6] = [
    "subscription($c: String!) { note(channel: $c) { text } }",
    "subscription($c: String!) { n: note(channel: $c) { t: text length tags { name } } }",
    "subscription($c: String!) { note(channel: $c) { author { name } a2: author { id name } shout(times: 2) s3: shout(times: 3) } }",
    "subscription($c: String!) { note(channel: $c) { __typename text text fragile } }",
    "subscription($c: String!) { note(channel: $c) { ...F } } fragment F on Note { length }",
    "subscription($c: String!) { note(channel: $c) { strict text } }",
];

struct Rig {
    broker: Broker,
    gateway: Arc<RecordingGateway>,
    executions: Arc<Executions>,
    validations: Validations,
}

fn rig() -> Rig {
    rig_with(BrokerConfig::default())
}

fn rig_with(config: BrokerConfig) -> Rig {
    rig_on(config, None)
}

/// A rig whose schema limits the complexity of a document, if asked.
fn rig_on(config: BrokerConfig, complexity: Option<usize>) -> Rig {
    let executions = Arc::new(Executions::default());
    let validations = Validations::default();
    let mut schema = Schema::build(Query, async_graphql::EmptyMutation, Notes)
        .extension(Prevalidation)
        .extension(validations.clone())
        .data(executions.clone());
    if let Some(limit) = complexity {
        schema = schema.limit_complexity(limit);
    }
    let schema = schema.finish();
    let gateway = Arc::new(RecordingGateway::default());
    let ports = memory_ports(gateway.clone());
    let auth = fixture_authenticator();
    Rig {
        broker: Broker::new(schema, ports, auth, config),
        gateway,
        executions,
        validations,
    }
}

fn subscription(connection: &str, user: &str, document: &str) -> Subscription {
    Subscription {
        key: SubscriptionKey {
            connection_id: ConnectionId::new(connection),
            operation_id: "s".into(),
        },
        topic: Topic::new("n"),
        protocol: Protocol::GraphqlTransportWs,
        principal: UserId::new(user),
        document: document.into(),
        operation_name: None,
        variables: json!({"c": "n"}),
        expires_at: u64::MAX,
        starts_at_ms: 0,
        replaying_until_ms: 0,
        public: false,
    }
}

/// Alice's six documents, Bob's copy of the second, and two more of Alice's with variables
/// of their own: one that merges with the first five (its variables are built-in scalars),
/// one that cannot (an enum stays a variable, and no other document shares it).
fn subscribers() -> Vec<Subscription> {
    let mut all: Vec<Subscription> = DOCUMENTS
        .iter()
        .enumerate()
        .map(|(i, d)| subscription(&format!("a{i}"), "alice", d))
        .collect();
    all.push(subscription("b1", "bob", DOCUMENTS[1]));
    all.push(Subscription {
        variables: json!({"channel": "n", "k": 4}),
        ..subscription(
            "a6",
            "alice",
            "subscription($channel: String!, $k: Int!) { note(channel: $channel) { shout(times: $k) s3: shout(times: 3) } }",
        )
    });
    all.push(Subscription {
        variables: json!({"c": "n", "s": "QUIET"}),
        ..subscription(
            "a7",
            "alice",
            "subscription($c: String!, $s: Style!) { note(channel: $c) { styled(style: $s) } }",
        )
    });
    all
}

fn note(text: &str) -> Arc<Event> {
    Arc::new(Event::new(
        Topic::new("n"),
        json!({
            "text": text,
            "length": text.len(),
            "tags": [{"name": "x"}, {"name": "y"}],
            "author": {"id": "u1", "name": "Ann"},
            "pair": {"left": {"id": "L", "name": "Lena"}, "right": {"id": "R", "name": "Rui"}},
            "grid": [[{"name": "a"}, {"name": "b"}]],
        }),
        Audience::Everyone,
    ))
}

/// The frame each subscriber received, as posted, by connection.
fn frames(rig: &Rig, subscribers: &[Subscription]) -> Vec<String> {
    subscribers
        .iter()
        .map(|s| {
            let mut frames = rig.gateway.take_text(&s.key.connection_id);
            assert_eq!(frames.len(), 1, "{}: {frames:?}", s.key.connection_id);
            frames.remove(0)
        })
        .collect()
}

fn parsed(frames: &[String]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect()
}

/// What each subscriber receives when its subscription is delivered on its own.
async fn alone(event: &Arc<Event>) -> Vec<String> {
    let rig = rig();
    let subscribers = subscribers();
    for s in &subscribers {
        let report = rig
            .broker
            .deliver_to(event.clone(), std::slice::from_ref(s))
            .await;
        assert_eq!(report.delivered, 1, "{report:?}");
    }
    assert_eq!(rig.executions.0.load(Ordering::SeqCst), subscribers.len());
    frames(&rig, &subscribers)
}

#[tokio::test]
async fn one_users_documents_render_once_and_each_gets_its_own_selection() {
    let event = note("hello");
    let rig = rig();
    let subscribers = subscribers();
    let report = rig.broker.deliver_to(event.clone(), &subscribers).await;
    assert_eq!(report.delivered, subscribers.len(), "{report:?}");
    // Byte for byte: the same keys in the same order, the same event id.
    let merged = frames(&rig, &subscribers);
    assert_eq!(merged, alone(&event).await);
    let merged = parsed(&merged);
    // Alice's six documents made only of fields and built-in variables run as one; the one
    // with a fragment and the one with an enum variable run alone; Bob's runs for Bob.
    assert_eq!(rig.executions.0.load(Ordering::SeqCst), 4);

    assert_eq!(
        merged[1]["payload"]["data"],
        json!({"n": {"t": "hello", "length": 5, "tags": [{"name": "x"}, {"name": "y"}]}})
    );
    assert_eq!(
        merged[2]["payload"]["data"],
        json!({"note": {
            "author": {"name": "Ann"},
            "a2": {"id": "u1", "name": "Ann"},
            "shout": "HELLOHELLO",
            "s3": "HELLOHELLOHELLO",
        }})
    );
    assert_eq!(
        merged[3]["payload"]["data"],
        json!({"note": {"__typename": "Note", "text": "hello", "fragile": "hello"}})
    );
    assert_eq!(merged[6]["payload"], merged[1]["payload"]);
    assert_eq!(
        merged[7]["payload"]["data"],
        json!({"note": {"shout": "HELLOHELLOHELLOHELLO", "s3": "HELLOHELLOHELLO"}})
    );
    assert_eq!(
        merged[8]["payload"]["data"],
        json!({"note": {"styled": "hello"}})
    );

    // The next events run the same merged document, validated once.
    assert_eq!(rig.validations.0.load(Ordering::SeqCst), 4);
    for text in ["again", "and again"] {
        let event = note(text);
        rig.broker.deliver_to(event.clone(), &subscribers).await;
        assert_eq!(frames(&rig, &subscribers), alone(&event).await);
    }
    assert_eq!(rig.executions.0.load(Ordering::SeqCst), 12);
    assert_eq!(rig.validations.0.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn an_error_anywhere_in_the_merged_result_renders_each_document_alone() {
    for (text, broken) in [("boom", 3), ("bang", 5)] {
        let event = note(text);
        let rig = rig();
        let subscribers = subscribers();
        let report = rig.broker.deliver_to(event.clone(), &subscribers).await;
        assert_eq!(report.delivered, subscribers.len(), "{report:?}");
        let merged = frames(&rig, &subscribers);
        assert_eq!(merged, alone(&event).await, "{text}");
        let merged = parsed(&merged);
        // Only the document that asked for the failing field carries its error.
        for (i, frame) in merged.iter().enumerate() {
            let errors = &frame["payload"]["errors"];
            assert_eq!(
                errors.is_array(),
                i == broken,
                "{text}, subscriber {i}: {frame}"
            );
        }
        if text == "boom" {
            assert_eq!(merged[3]["payload"]["data"]["note"]["fragile"], Value::Null);
        }
    }
}

#[tokio::test]
async fn a_merged_document_stays_within_the_cost_limits() {
    // Every document fits; their union, which aliases each of its fields, would not: it is
    // cut into unions that fit.
    let longest = DOCUMENTS.iter().map(|d| d.len()).max().unwrap();
    let rig = rig_with(BrokerConfig {
        limits: broker::CostLimits {
            max_document_bytes: longest,
            ..Default::default()
        },
        ..Default::default()
    });
    let subscribers = subscribers();
    let event = note("one");
    let report = rig.broker.deliver_to(event.clone(), &subscribers).await;
    assert_eq!(report.delivered, subscribers.len(), "{report:?}");
    assert_eq!(frames(&rig, &subscribers), alone(&event).await);
    let executions = rig.executions.0.load(Ordering::SeqCst);
    assert!(
        (5..subscribers.len()).contains(&executions),
        "{executions} executions"
    );
}

#[tokio::test]
async fn a_merged_document_the_schema_refuses_is_not_tried_again() {
    // Each document is within the schema's own complexity limit; their union is not.
    let rig = rig_on(BrokerConfig::default(), Some(9));
    let subscribers = subscribers();
    let mut validations = Vec::new();
    for (round, text) in ["one", "two"].into_iter().enumerate() {
        let event = note(text);
        let report = rig.broker.deliver_to(event.clone(), &subscribers).await;
        assert_eq!(report.delivered, subscribers.len(), "{report:?}");
        assert_eq!(frames(&rig, &subscribers), alone(&event).await);
        assert_eq!(
            rig.executions.0.load(Ordering::SeqCst),
            (round + 1) * subscribers.len(),
            "each document ran once, the union never"
        );
        validations.push(rig.validations.0.load(Ordering::SeqCst));
    }
    assert_eq!(validations[0], validations[1], "nothing validated again");
}

/// Two of Alice's subscriptions, delivered together and each on its own: the frames each
/// connection received, together and alone.
async fn pair_of(
    documents: [(&str, Value); 2],
    config: impl Fn() -> BrokerConfig,
) -> [Vec<String>; 2] {
    let subscribers: Vec<Subscription> = documents
        .into_iter()
        .enumerate()
        .map(|(i, (document, variables))| Subscription {
            variables,
            ..subscription(&format!("a{i}"), "alice", document)
        })
        .collect();
    let event = note("hi");
    let rig = rig_with(config());
    rig.broker.deliver_to(event.clone(), &subscribers).await;
    let together = subscribers
        .iter()
        .flat_map(|s| rig.gateway.take_text(&s.key.connection_id))
        .collect();
    let mut alone = Vec::new();
    for s in &subscribers {
        let rig = rig_with(config());
        rig.broker
            .deliver_to(event.clone(), std::slice::from_ref(s))
            .await;
        alone.extend(rig.gateway.take_text(&s.key.connection_id));
    }
    [together, alone]
}

const PLAIN: &str = "subscription($c: String!) { note(channel: $c) { text } }";

#[tokio::test]
async fn documents_async_graphql_reads_its_own_way_get_what_they_get_alone() {
    for document in [
        // A nullable variable not given is null to the resolver, not the argument's default.
        "subscription($c: String!, $t: Int) { note(channel: $c) { rep(times: $t) opt(n: $t) } }",
        // A field with a selection asked twice: async-graphql merges the results its own way.
        "subscription($c: String!) { note(channel: $c) { pair { p: left { id } } pair { p: right { name } } } }",
        "subscription($c: String!) { note(channel: $c) { grid { name } grid { n: name } } }",
    ] {
        let [together, alone] = pair_of(
            [(PLAIN, json!({"c": "n"})), (document, json!({"c": "n"}))],
            BrokerConfig::default,
        )
        .await;
        assert_eq!(together.len(), 2, "{document}: {together:?}");
        assert_eq!(together, alone, "{document}");
    }
}

#[tokio::test]
async fn a_slow_field_delays_only_the_documents_that_ask_for_it() {
    let config = || BrokerConfig {
        render_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let fast = "subscription($c: String!) { note(channel: $c) { sleepy(ms: 1) } }";
    let slow = "subscription($c: String!) { note(channel: $c) { s: sleepy(ms: 2000) } }";
    let [together, alone] = pair_of(
        [(fast, json!({"c": "n"})), (slow, json!({"c": "n"}))],
        config,
    )
    .await;
    // The union times out; the fast document still gets its event, the slow one does not.
    assert_eq!(together, alone);
    assert_eq!(together.len(), 1, "{together:?}");
    assert!(together[0].contains(r#""sleepy":1"#), "{together:?}");
}

#[tokio::test]
async fn merging_can_be_turned_off_for_resolvers_that_read_their_own_selection() {
    let narrow = "subscription($c: String!) { note(channel: $c) { meta { count } } }";
    let wide = "subscription($c: String!) { note(channel: $c) { meta { count other } } }";
    let documents = || [(narrow, json!({"c": "n"})), (wide, json!({"c": "n"}))];
    let off = || BrokerConfig {
        merge_renderings: false,
        ..Default::default()
    };
    let [together, alone] = pair_of(documents(), off).await;
    assert_eq!(together, alone);
    assert!(together[0].contains(r#""count":1"#), "{together:?}");
    // Merged, the resolver sees the union's selection: the contract the setting is for.
    let [merged, _] = pair_of(documents(), BrokerConfig::default).await;
    assert!(merged[0].contains(r#""count":2"#), "{merged:?}");
}
