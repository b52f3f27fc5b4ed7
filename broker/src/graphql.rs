//! Running an app's async-graphql schema without keeping streams open.
//!
//! A Lambda cannot hold a subscription stream between invocations, so a subscription runs
//! twice, each time to completion:
//! - at `subscribe`, in *registration* mode: the resolver checks the caller may see the data
//!   and reports the topic it listens to ([`listen`] records it and yields nothing);
//! - at delivery, once per event, in *delivery* mode: [`listen`] yields the event when its
//!   topic matches, and async-graphql renders exactly the selection, aliases, variables and
//!   errors of the stored document.

mod cache;
mod merge;

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{
    Context, ErrorExtensions as _, Executor, Request, Response, ServerError, ServerResult,
    ValidationResult, Variables,
};
use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use serde::de::DeserializeOwned;

use crate::cost::CostLimits;
use crate::domain::{Event, Principal, Subscription, Topic, UserId};
use cache::lock;
pub(crate) use cache::{DOCUMENT_CACHE_BYTES, DocumentCache};
pub(crate) use merge::{Shape, UNION_OPERATION, Union};

/// An app's schema as the broker sees it. Implemented for every `async_graphql::Schema`.
#[async_trait]
pub trait GraphqlExecutor: Send + Sync + 'static {
    /// Runs a query or mutation to its response.
    async fn execute(&self, request: Request) -> Response;
    /// Runs a subscription: one response per item of its stream.
    fn execute_stream(&self, request: Request) -> BoxStream<'static, Response>;
}

#[async_trait]
impl<E: Executor> GraphqlExecutor for E {
    async fn execute(&self, request: Request) -> Response {
        Executor::execute(self, request).await
    }

    fn execute_stream(&self, request: Request) -> BoxStream<'static, Response> {
        Executor::execute_stream(self, request, None)
    }
}

/// The stream a subscription resolver returns.
pub type EventStream<T> = BoxStream<'static, T>;

/// Request data present while a subscription is being registered.
#[derive(Clone, Default)]
pub(crate) struct Registration(Arc<Mutex<Vec<Registered>>>);

impl Registration {
    fn record(&self, registered: Registered) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(registered);
    }

    fn take(&self) -> Vec<Registered> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What a subscription's resolver declared at `subscribe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Registered {
    /// The topic it listens to.
    pub topic: Topic,
    /// Whether its events render the same for every viewer ([`listen_public`]).
    pub public: bool,
}

/// Request data present while an event is rendered once for every viewer of a
/// [`listen_public`] subscription: there is no viewer, and [`principal`] says so.
pub(crate) struct PublicRendering;

/// The `extensions.code` of the error [`principal`] gives in a rendering for every viewer
/// (see [`listen_public`]): the subscription is rendered for each viewer instead.
pub const PUBLIC_READS_VIEWER: &str = "PUBLIC_READS_VIEWER";

/// Whether `response` (a rendering for every viewer) asked for the viewer.
pub(crate) fn reads_viewer(response: &Response) -> bool {
    response.errors.iter().any(|e| {
        e.extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .is_some_and(|code| *code == async_graphql::Value::from(PUBLIC_READS_VIEWER))
    })
}

/// Request data present while one event is delivered.
pub(crate) struct Delivery(pub Arc<Event>);

/// The body of every broker-served subscription resolver: declare the topic, get the stream.
///
/// ```
/// # use async_graphql::{Context, ID, Result, SimpleObject, Subscription};
/// # use broker::{EventStream, Topic, listen, principal};
/// # #[derive(Clone, serde::Deserialize, SimpleObject)]
/// # struct Card { title: String }
/// # struct SubscriptionRoot;
/// # async fn ensure_owner(_: &Context<'_>, _: &broker::UserId, _: &ID) -> Result<()> { Ok(()) }
/// # #[Subscription]
/// # impl SubscriptionRoot {
/// async fn card_added(&self, ctx: &Context<'_>, board_id: ID) -> Result<EventStream<Card>> {
///     let user = principal(ctx)?;
///     ensure_owner(ctx, user, &board_id).await?;          // authorization, at subscribe
///     listen(ctx, Topic::new(format!("board/{}/cardAdded", *board_id)))   // and at delivery
/// }
/// # }
/// ```
pub fn listen<T>(ctx: &Context<'_>, topic: Topic) -> async_graphql::Result<EventStream<T>>
where
    T: DeserializeOwned + Send + 'static,
{
    listen_as(ctx, topic, false)
}

/// [`listen`], declaring that the subscription's events render the same for every viewer:
/// a public feed, stock quotes, a room's messages. Delivery then renders an event once for all
/// subscribers whose documents are the same (or merge), instead of once per user, and still
/// checks each subscriber against the event's audience.
///
/// The declaration cannot leak one viewer's data to another: such a rendering runs with
/// no viewer at all. [`principal`] fails in it (code [`PUBLIC_READS_VIEWER`]), so a resolver
/// that reads the viewer, at any depth, makes the shared rendering fail; delivery then
/// renders that subscription for each viewer, as [`listen`] would, and logs and counts it
/// (`DeliveryReport::public_fallbacks`, the `PublicFallbacks` metric). Authorization of the
/// viewer belongs at `subscribe`, behind [`registering`].
pub fn listen_public<T>(ctx: &Context<'_>, topic: Topic) -> async_graphql::Result<EventStream<T>>
where
    T: DeserializeOwned + Send + 'static,
{
    listen_as(ctx, topic, true)
}

fn listen_as<T>(
    ctx: &Context<'_>,
    topic: Topic,
    public: bool,
) -> async_graphql::Result<EventStream<T>>
where
    T: DeserializeOwned + Send + 'static,
{
    if let Some(registration) = ctx.data_opt::<Registration>() {
        registration.record(Registered { topic, public });
        return Ok(stream::empty().boxed());
    }
    if let Some(Delivery(event)) = ctx.data_opt::<Delivery>() {
        if event.topic != topic {
            return Ok(stream::empty().boxed());
        }
        // Read from the shared payload in place: no copy of the event per rendering.
        let item = T::deserialize(&event.payload).map_err(|e| {
            async_graphql::Error::new(format!(
                "event {} does not fit this subscription: {e}",
                event.id
            ))
        })?;
        return Ok(stream::once(async move { item }).boxed());
    }
    Err("subscriptions are served by the broker over WebSocket".into())
}

/// A GraphQL error for a failure of the server's own dependencies. The details (which may
/// name tables, roles, accounts) go to the log under a reference; the client gets the
/// reference only.
pub fn internal_error(error: impl std::fmt::Display) -> async_graphql::Error {
    let reference = ulid::Ulid::new().to_string();
    tracing::error!(%reference, %error, "request failed");
    async_graphql::Error::new(format!("internal error (reference {reference})"))
}

/// The roles the caller's token granted (its `roles` claim). Present on requests made over
/// HTTP, where each request carries its token; an operation sent over a WebSocket has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roles(pub Vec<String>);

/// Whether the caller's token granted `role`.
pub fn has_role(ctx: &Context<'_>, role: &str) -> bool {
    ctx.data_opt::<Roles>()
        .is_some_and(|roles| roles.0.iter().any(|r| r == role))
}

/// The authenticated user of the request, or a GraphQL error.
pub fn principal<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a UserId> {
    if ctx.data_opt::<PublicRendering>().is_some() {
        return Err(async_graphql::Error::new(
            "this subscription is declared the same for every viewer (`listen_public`) but reads the viewer",
        )
        .extend_with(|_, e| e.set("code", PUBLIC_READS_VIEWER)));
    }
    ctx.data_opt::<Principal>()
        .map(|p| &p.user)
        .ok_or_else(|| async_graphql::Error::new("authentication required"))
}

/// Which kind of operation a request would run; `None` when the document is refused by the
/// default [`CostLimits`], does not parse, or names no operation it contains (executing it
/// then reports the error). [`crate::Broker::operation_type`] applies the broker's own limits
/// and keeps the parsed document.
pub fn operation_type(request: &Request) -> Option<OperationType> {
    let document = CostLimits::default().parse(&request.query).ok()?;
    selected_operation(&document, request.operation_name.as_deref())
}

/// The kind of the operation a request selects by `operation_name` (or the only one).
pub(crate) fn selected_operation(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<OperationType> {
    let mut operations = document.operations.iter();
    match operation_name {
        Some(name) => operations
            .find(|(n, _)| n.map(|n| n.as_str()) == Some(name))
            .map(|(_, op)| op.node.ty),
        None => {
            let (_, first) = operations.next()?;
            operations.next().is_none().then_some(first.node.ty)
        }
    }
}

/// The broker's async-graphql extension. Add it to the schema builder
/// (`Schema::build(..).extension(broker::Prevalidation)`) and delivery renders a stored
/// subscription without parsing or validating its document again for every event: the
/// schema's validation runs once per process for each distinct (document, operation,
/// variables), and its outcome is reused. Without it every rendering validates in full;
/// the results are the same.
///
/// It acts only on the broker's own renderings; queries, mutations and subscribes are
/// parsed and validated as usual.
#[derive(Debug)]
pub struct Prevalidation;

impl ExtensionFactory for Prevalidation {
    fn create(&self) -> Arc<dyn Extension> {
        static HOOKS: std::sync::LazyLock<Arc<PrevalidationHooks>> =
            std::sync::LazyLock::new(|| Arc::new(PrevalidationHooks));
        HOOKS.clone()
    }
}

struct PrevalidationHooks;

/// Request data of a rendering whose document this process validated before, with the same
/// operation and variables, against the same schema.
struct Validated {
    document: Arc<ExecutableDocument>,
    result: ValidationResult,
}

/// Request data of a rendering validated in full: where the validation's outcome is left.
#[derive(Default)]
struct ValidationSlot(Mutex<Option<ValidationResult>>);

#[async_trait]
impl Extension for PrevalidationHooks {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        match ctx.data_opt::<Validated>() {
            // Checked at `subscribe` and by the cost limits when it was cached.
            Some(validated) => Ok(validated.document.as_ref().clone()),
            None => next.run(ctx, query, variables).await,
        }
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        if let Some(validated) = ctx.data_opt::<Validated>() {
            return Ok(validated.result);
        }
        let result = next.run(ctx).await;
        if let (Ok(outcome), Some(slot)) = (&result, ctx.data_opt::<Arc<ValidationSlot>>()) {
            *lock(&slot.0) = Some(*outcome);
        }
        result
    }
}

/// Whether the resolver runs at `subscribe` (registration) rather than for an event. An
/// authorization decision that reads the store belongs here: at delivery, the event's
/// audience decides who receives it, and no resolver needs to read anything per subscriber.
pub fn registering(ctx: &Context<'_>) -> bool {
    ctx.data_opt::<Registration>().is_some()
}

/// Runs a subscription request in registration mode: the topic it listens to, or the
/// GraphQL errors (validation, authorization) to send back.
pub(crate) async fn register(
    executor: &dyn GraphqlExecutor,
    request: Request,
) -> Result<Registered, Vec<ServerError>> {
    let registration = Registration::default();
    let responses: Vec<Response> = executor
        .execute_stream(request.data(registration.clone()))
        .collect()
        .await;
    let errors: Vec<ServerError> = responses.into_iter().flat_map(|r| r.errors).collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut topics = registration.take();
    match topics.len() {
        1 => Ok(topics.remove(0)),
        0 => Err(vec![ServerError::new(
            "this subscription is not served by the broker (its resolver must call `listen`)",
            None,
        )]),
        _ => Err(vec![ServerError::new(
            "a subscription must select exactly one root field",
            None,
        )]),
    }
}

/// What a rendering executes: a stored subscription's document, operation and variables,
/// or a union of several ([`merge`]).
#[derive(Clone, Copy)]
pub(crate) struct Spec<'a> {
    pub document: &'a str,
    pub operation_name: Option<&'a str>,
    pub variables: &'a serde_json::Value,
}

impl Spec<'_> {
    /// The spec as one string. Neither an operation name nor JSON text holds a line break,
    /// and the name is marked apart from no name: the key is unambiguous.
    fn key(&self) -> String {
        let (mark, name) = match self.operation_name {
            Some(name) => ('=', name),
            None => ('-', ""),
        };
        format!("{mark}{name}\n{}\n{}", self.variables, self.document)
    }
}

impl<'a> From<&'a Subscription> for Spec<'a> {
    fn from(s: &'a Subscription) -> Self {
        Self {
            document: &s.document,
            operation_name: s.operation_name.as_deref(),
            variables: &s.variables,
        }
    }
}

/// Renders `event` for one stored subscription: the serialized `payload` of a `next`
/// message, or `None` when the subscription does not produce anything for it. `extra` adds
/// the request data every execution gets (the subscriber as `Principal`, the publisher).
#[cfg(test)]
pub(crate) async fn render(
    executor: &dyn GraphqlExecutor,
    documents: &DocumentCache,
    limits: &CostLimits,
    subscription: &Subscription,
    event: &Arc<Event>,
    extra: impl FnOnce(Request) -> Request,
) -> Option<String> {
    let response = execute(
        executor,
        documents,
        limits,
        subscription.into(),
        event,
        extra,
    )
    .await?;
    Some(payload(&response))
}

/// Executes `spec` for `event`: the response, with the event's id in its extensions, or
/// `None` when the subscription does not produce anything for it.
///
/// The document comes parsed from `documents` (it was checked at `subscribe`): an event costs
/// no parsing per subscriber. One stored before a limit was lowered is refused with an
/// error, which the subscriber receives.
pub(crate) async fn execute(
    executor: &dyn GraphqlExecutor,
    documents: &DocumentCache,
    limits: &CostLimits,
    spec: Spec<'_>,
    event: &Arc<Event>,
    extra: impl FnOnce(Request) -> Request,
) -> Option<Response> {
    let mut response = match documents.get_or_parse(limits, spec.document) {
        Ok(document) => {
            let mut request = Request::new(spec.document)
                .variables(Variables::from_json(spec.variables.clone()))
                .data(Delivery(event.clone()));
            if let Some(name) = spec.operation_name {
                request = request.operation_name(name);
            }
            // Validation depends on the document, the operation and the variables.
            let key = spec.key();
            let validated = lock(&documents.validations).get(&key);
            let slot = match validated {
                Some(result) => {
                    request = request.data(Validated { document, result });
                    None
                }
                None => {
                    let slot = Arc::new(ValidationSlot::default());
                    request.set_parsed_query(document.as_ref().clone());
                    request = request.data(slot.clone());
                    Some(slot)
                }
            };
            let response = executor.execute_stream(extra(request)).next().await?;
            // Left there by the extension, when the schema has it and validation passed.
            if let Some(result) = slot.and_then(|slot| lock(&slot.0).take()) {
                lock(&documents.validations).insert(&key, result);
            }
            response
        }
        Err(error) => Response::from_errors(vec![error]),
    };
    // Lambda delivers at least once: the event id lets a client drop a repeated message.
    response.extensions.insert(
        "eventId".to_owned(),
        async_graphql::Value::String(event.id.clone()),
    );
    Some(response)
}

/// The `payload` of a `next` message carrying `response`.
pub(crate) fn payload(response: &Response) -> String {
    serde_json::to_string(response).expect("a GraphQL response serializes to JSON")
}

/// GraphQL errors as the JSON a protocol `error` message carries.
pub(crate) fn errors_json(errors: &[ServerError]) -> Vec<serde_json::Value> {
    errors
        .iter()
        .map(|e| serde_json::to_value(e).expect("a GraphQL error serializes to JSON"))
        .collect()
}

#[cfg(test)]
mod prevalidation_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_graphql::{Object, Schema, SimpleObject, Subscription as GqlSubscription};

    use super::*;
    use crate::domain::{Audience, ConnectionId, SubscriptionKey};
    use crate::protocol::Protocol;

    #[derive(Clone, serde::Deserialize, SimpleObject)]
    struct Note {
        text: String,
        length: i32,
    }

    struct Query;

    #[Object]
    impl Query {
        async fn ok(&self) -> bool {
            true
        }
    }

    struct Notes;

    #[GqlSubscription]
    impl Notes {
        async fn note(
            &self,
            ctx: &Context<'_>,
            channel: String,
        ) -> async_graphql::Result<EventStream<Note>> {
            listen(ctx, Topic::new(channel))
        }
    }

    /// Counts the validations that reach async-graphql's own rules: it comes after
    /// [`Prevalidation`] in the chain, so a validation skipped there never reaches it.
    #[derive(Clone, Default)]
    struct CountValidations(Arc<AtomicUsize>);

    impl ExtensionFactory for CountValidations {
        fn create(&self) -> Arc<dyn Extension> {
            Arc::new(self.clone())
        }
    }

    #[async_trait]
    impl Extension for CountValidations {
        async fn validation(
            &self,
            ctx: &ExtensionContext<'_>,
            next: NextValidation<'_>,
        ) -> Result<ValidationResult, Vec<ServerError>> {
            self.0.fetch_add(1, Ordering::Relaxed);
            next.run(ctx).await
        }
    }

    fn subscription(document: &str, variables: serde_json::Value) -> Subscription {
        Subscription {
            key: SubscriptionKey {
                connection_id: ConnectionId::new("c"),
                operation_id: "1".into(),
            },
            topic: Topic::new("notes"),
            protocol: Protocol::GraphqlTransportWs,
            principal: UserId::new("alice"),
            document: document.into(),
            operation_name: None,
            variables,
            expires_at: u64::MAX,
            starts_at_ms: 0,
            replaying_until_ms: 0,
            public: false,
        }
    }

    fn event(text: &str) -> Arc<Event> {
        Arc::new(Event::new(
            Topic::new("notes"),
            serde_json::json!({"text": text, "length": text.len()}),
            Audience::Everyone,
        ))
    }

    async fn render_all(
        schema: &dyn GraphqlExecutor,
        documents: &DocumentCache,
        subscription: &Subscription,
        texts: &[&str],
    ) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for text in texts {
            let event = event(text);
            let rendered = render(
                schema,
                documents,
                &CostLimits::default(),
                subscription,
                &event,
                |r| r,
            )
            .await
            .expect("the subscription renders the event");
            let mut value: serde_json::Value = serde_json::from_str(&rendered).unwrap();
            // The event id differs per event by design.
            value["extensions"].take();
            out.push(value);
        }
        out
    }

    #[tokio::test]
    async fn a_stored_document_is_validated_once_per_process_and_renders_the_same() {
        let counted = CountValidations::default();
        let fast = Schema::build(Query, async_graphql::EmptyMutation, Notes)
            .extension(Prevalidation)
            .extension(counted.clone())
            .finish();
        let plain = Schema::new(Query, async_graphql::EmptyMutation, Notes);
        let document = r#"subscription($c: String!) { n: note(channel: $c) { t: text length } }"#;
        let stored = subscription(document, serde_json::json!({"c": "notes"}));
        let texts = ["a", "bb", "ccc", "dddd"];

        let cache = DocumentCache::new(1 << 20);
        let rendered = render_all(&fast, &cache, &stored, &texts).await;
        assert_eq!(
            counted.0.load(Ordering::Relaxed),
            1,
            "four events, one validation"
        );
        let reference = render_all(&plain, &DocumentCache::new(1 << 20), &stored, &texts).await;
        assert_eq!(rendered, reference);
        assert_eq!(
            rendered[2],
            serde_json::json!({"data": {"n": {"t": "ccc", "length": 3}}, "extensions": null})
        );

        // Other variables are validated on their own.
        let other = subscription(document, serde_json::json!({"c": "notes", "x": 1}));
        render_all(&fast, &cache, &other, &texts).await;
        assert_eq!(counted.0.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_document_that_fails_validation_is_never_taken_as_validated() {
        let counted = CountValidations::default();
        let fast = Schema::build(Query, async_graphql::EmptyMutation, Notes)
            .extension(Prevalidation)
            .extension(counted.clone())
            .finish();
        // A variable of the wrong type: validation refuses it at every event.
        let stored = subscription(
            r#"subscription($c: String!) { note(channel: $c) { text } }"#,
            serde_json::json!({"c": 42}),
        );
        let cache = DocumentCache::new(1 << 20);
        let rendered = render_all(&fast, &cache, &stored, &["a", "b"]).await;
        for response in &rendered {
            assert!(response["errors"].is_array(), "{response}");
            assert!(response["data"].is_null(), "{response}");
        }
        assert_eq!(counted.0.load(Ordering::Relaxed), 2);
    }
}
