//! Running an app's async-graphql schema without keeping streams open.
//!
//! A Lambda cannot hold a subscription stream between invocations, so a subscription runs
//! twice, each time to completion:
//! - at `subscribe`, in *registration* mode: the resolver checks the caller may see the data
//!   and reports the topic it listens to ([`listen`] records it and yields nothing);
//! - at delivery, once per event, in *delivery* mode: [`listen`] yields the event when its
//!   topic matches, and async-graphql renders exactly the selection, aliases, variables and
//!   errors of the stored document.

use std::sync::{Arc, Mutex};

use async_graphql::parser::types::OperationType;
use async_graphql::{Context, Executor, Request, Response, ServerError, Variables};
use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use serde::de::DeserializeOwned;

use crate::domain::{Event, Principal, Subscription, Topic, UserId};

/// An app's schema as the broker sees it. Implemented for every `async_graphql::Schema`.
#[async_trait]
pub trait GraphqlExecutor: Send + Sync + 'static {
    async fn execute(&self, request: Request) -> Response;
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
pub(crate) struct Registration(Arc<Mutex<Vec<Topic>>>);

impl Registration {
    fn record(&self, topic: Topic) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(topic);
    }

    fn topics(&self) -> Vec<Topic> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Request data present while one event is delivered.
pub(crate) struct Delivery(pub Arc<Event>);

/// The body of every broker-served subscription resolver: declare the topic, get the stream.
///
/// ```ignore
/// async fn card_added(&self, ctx: &Context<'_>, board_id: ID) -> Result<EventStream<Card>> {
///     let user = principal(ctx)?;
///     ensure_owner(ctx, user, &board_id).await?;          // authorization, at subscribe
///     listen(ctx, Topic::new(format!("board/{}/cardAdded", *board_id)))   // and at delivery
/// }
/// ```
pub fn listen<T>(ctx: &Context<'_>, topic: Topic) -> async_graphql::Result<EventStream<T>>
where
    T: DeserializeOwned + Send + 'static,
{
    if let Some(registration) = ctx.data_opt::<Registration>() {
        registration.record(topic);
        return Ok(stream::empty().boxed());
    }
    if let Some(Delivery(event)) = ctx.data_opt::<Delivery>() {
        if event.topic != topic {
            return Ok(stream::empty().boxed());
        }
        let item: T = serde_json::from_value(event.payload.clone()).map_err(|e| {
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

/// The authenticated user of the request, or a GraphQL error.
pub fn principal<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a UserId> {
    ctx.data_opt::<Principal>()
        .map(|p| &p.user)
        .ok_or_else(|| async_graphql::Error::new("authentication required"))
}

/// Which kind of operation a request would run; `None` when the document does not parse or
/// names no operation it contains (executing it then reports the error).
pub fn operation_type(request: &Request) -> Option<OperationType> {
    let document = async_graphql::parser::parse_query(&request.query).ok()?;
    let mut operations = document.operations.iter();
    match &request.operation_name {
        Some(name) => operations
            .find(|(n, _)| n.map(|n| n.as_str()) == Some(name.as_str()))
            .map(|(_, op)| op.node.ty),
        None => {
            let (_, first) = operations.next()?;
            operations.next().is_none().then_some(first.node.ty)
        }
    }
}

/// Runs a subscription request in registration mode: the topic it listens to, or the
/// GraphQL errors (validation, authorization) to send back.
pub(crate) async fn register(
    executor: &dyn GraphqlExecutor,
    request: Request,
) -> Result<Topic, Vec<ServerError>> {
    let registration = Registration::default();
    let responses: Vec<Response> = executor
        .execute_stream(request.data(registration.clone()))
        .collect()
        .await;
    let errors: Vec<ServerError> = responses.into_iter().flat_map(|r| r.errors).collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut topics = registration.topics();
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

/// Renders `event` for one stored subscription: the serialized `payload` of a `next`
/// message, or `None` when the subscription does not produce anything for it. `extra` adds
/// the request data every execution gets (the subscriber as `Principal`, the publisher).
pub(crate) async fn render(
    executor: &dyn GraphqlExecutor,
    subscription: &Subscription,
    event: &Arc<Event>,
    extra: impl FnOnce(Request) -> Request,
) -> Option<String> {
    let request = Request::new(subscription.document.clone())
        .variables(Variables::from_json(subscription.variables.clone()))
        .data(Delivery(event.clone()));
    let request = match &subscription.operation_name {
        Some(name) => request.operation_name(name.clone()),
        None => request,
    };
    let mut response = executor.execute_stream(extra(request)).next().await?;
    // Lambda delivers at least once: the event id lets a client drop a repeated message.
    response.extensions.insert(
        "eventId".to_owned(),
        async_graphql::Value::String(event.id.clone()),
    );
    Some(serde_json::to_string(&response).expect("a GraphQL response serializes to JSON"))
}

/// GraphQL errors as the JSON a protocol `error` message carries.
pub(crate) fn errors_json(errors: &[ServerError]) -> Vec<serde_json::Value> {
    errors
        .iter()
        .map(|e| serde_json::to_value(e).expect("a GraphQL error serializes to JSON"))
        .collect()
}
