//! Rendering one event for its admitted subscribers: once per distinct document, variables
//! and user, and once per union of one user's documents that differ only in what they
//! select (`graphql::merge`); each rendering bounded by the render timeout. Subscriptions
//! declared the same for every viewer (`listen_public`) are rendered once for all their
//! users, with no viewer: one whose rendering asks for the viewer is rendered per user.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream;

use crate::Broker;
use crate::delivery::DeliveryReport;
use crate::delivery::post::Frame;
use crate::domain::{Event, Subscription, UserId};
use crate::graphql;

/// API Gateway's limit on one message posted to a connection: 128 KB.
pub const MAX_FRAME_BYTES: usize = 128 * 1024;

/// The `extensions.code` of the GraphQL error a subscriber gets in place of an event whose
/// frame would be over [`MAX_FRAME_BYTES`]; `extensions.eventId` names the event, so the
/// client can re-query what it changed. The subscription goes on.
pub const EVENT_TOO_LARGE: &str = "EVENT_TOO_LARGE";

/// Whom a rendering is for: one user, or no viewer at all (`None`), for the subscriptions
/// declared the same for every viewer.
type Viewer<'a> = Option<&'a UserId>;

/// Subscriptions with the same key render the same payload: document, operation name,
/// variables (as JSON text) and viewer.
type GroupKey<'a> = (&'a str, Option<&'a str>, String, Viewer<'a>);

/// What rendering an event for a group of subscriptions gave: a payload, nothing (the
/// subscription does not produce anything for this event), or a failure.
type Rendered = Result<Option<String>, Unrendered>;

#[derive(Clone, Copy, Debug)]
enum Unrendered {
    /// The rendering outlived the render timeout.
    TimedOut,
    /// A rendering for no viewer asked for one: it must be made per user.
    ReadsViewer,
}

/// The viewer `s` is rendered for.
fn viewer(s: &Subscription) -> Viewer<'_> {
    (!s.public).then_some(&s.principal)
}

/// Render groups (indices into the admitted subscriptions) that execute together.
enum RenderJob {
    Alone(Vec<usize>),
    /// A union's members, in the order it merged them.
    Merged(graphql::Union, Vec<Vec<usize>>),
}

impl From<(graphql::Union, Vec<Vec<usize>>)> for RenderJob {
    fn from((union, mut groups): (graphql::Union, Vec<Vec<usize>>)) -> Self {
        if groups.len() == 1 {
            return Self::Alone(groups.remove(0));
        }
        Self::Merged(union, groups)
    }
}

/// The payload a subscriber gets in place of an event whose frame would be `bytes` long.
fn too_large_payload(event_id: &str, bytes: usize) -> String {
    serde_json::json!({
        "errors": [{
            "message": format!(
                "event {event_id} is too large to deliver ({bytes} bytes; the limit is {MAX_FRAME_BYTES}); re-query what it changed"
            ),
            "extensions": {"code": EVENT_TOO_LARGE, "eventId": event_id},
        }],
        "extensions": {"eventId": event_id},
    })
    .to_string()
}

impl Broker {
    /// The frames of `event` for the `admitted` subscriptions, counting in `report` what
    /// rendered nothing or timed out.
    pub(crate) async fn render_frames(
        &self,
        admitted: &[&Subscription],
        event: &Arc<Event>,
        report: &mut DeliveryReport,
    ) -> Vec<Frame> {
        // Render once per distinct (document, operation, variables, user), and once per
        // union of one user's documents that differ only in what they select (see
        // `graphql::merge`). Renderings run concurrently, each bounded by the render timeout:
        // a slow resolver delays its own group only. The documents come parsed and priced
        // from the cache. Groups hold indices into `admitted`: owned values keep the
        // concurrent renderings' futures free of borrowed arguments.
        let mut groups: HashMap<GroupKey<'_>, Vec<usize>> = HashMap::new();
        for (index, s) in admitted.iter().enumerate() {
            let key = (
                s.document.as_str(),
                s.operation_name.as_deref(),
                s.variables.to_string(),
                viewer(s),
            );
            groups.entry(key).or_default().push(index);
        }
        // In the order the store gave: the same subscribers make the same unions at every
        // event, so a union is parsed and validated once, not once per event.
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_unstable_by_key(|(_, members)| members[0]);
        let jobs = self.render_jobs(admitted, groups);
        let concurrency = self.config().render_concurrency.max(1);
        let rendered: Vec<Vec<(Vec<usize>, Option<Rendered>)>> = stream::iter(jobs)
            .map(|job| self.render_job(admitted, event, job))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        // What a union could not render for, each document on its own, after the unions: an
        // error's path and null propagation are those of the document that asked for the
        // field, and a slow field delays only the documents that ask for it.
        let (mut renderings, alone): (Vec<_>, Vec<_>) = rendered
            .into_iter()
            .flatten()
            .partition(|(_, rendered)| rendered.is_some());
        let alone: Vec<(Vec<usize>, Option<Rendered>)> = stream::iter(alone)
            .map(|(members, _)| async move {
                let first = admitted[members[0]];
                let rendered = self.render_alone(first, viewer(first), event).await;
                (members, Some(rendered))
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        renderings.extend(alone);
        // A shared rendering that asked for the viewer: each of its users on their own.
        let (per_viewer, renderings): (Vec<_>, Vec<_>) = renderings
            .into_iter()
            .filter_map(|(members, rendered)| Some((members, rendered?)))
            .partition(|(_, rendered)| matches!(rendered, Err(Unrendered::ReadsViewer)));
        let mut renderings = renderings;
        if !per_viewer.is_empty() {
            renderings.extend(
                self.render_per_viewer(admitted, event, per_viewer, report)
                    .await,
            );
        }
        let mut frames: Vec<Frame> = Vec::with_capacity(admitted.len());
        for (members, rendered) in renderings {
            let members: Vec<&Subscription> = members.iter().map(|&i| admitted[i]).collect();
            match rendered {
                Ok(Some(payload)) => frames.extend(members.iter().map(|s| {
                    let frame = s.protocol.next(&s.key.operation_id, &payload);
                    if frame.len() <= MAX_FRAME_BYTES {
                        return Frame::new(s.key.connection_id.clone(), Some(s.key.clone()), frame);
                    }
                    // The gateway would refuse it: say so instead of dropping it in silence.
                    tracing::warn!(
                        event = %event.id,
                        subscription = %s.key.encode(),
                        bytes = frame.len(),
                        limit = MAX_FRAME_BYTES,
                        "event too large for its subscriber; sent EVENT_TOO_LARGE instead"
                    );
                    let error = too_large_payload(&event.id, frame.len());
                    Frame::too_large(
                        s.key.connection_id.clone(),
                        s.key.clone(),
                        s.protocol.next(&s.key.operation_id, &error),
                    )
                })),
                Ok(None) => report.filtered += members.len(),
                Err(Unrendered::TimedOut | Unrendered::ReadsViewer) => {
                    tracing::error!(event = %event.id, "rendering timed out");
                    report.failed += members.len();
                    report
                        .failed_keys
                        .extend(members.iter().map(|s| s.key.clone()));
                }
            }
        }
        frames
    }

    /// Sorts render groups into what runs alone and unions of one subscriber's documents of
    /// the same shape.
    fn render_jobs(
        &self,
        admitted: &[&Subscription],
        groups: Vec<(GroupKey<'_>, Vec<usize>)>,
    ) -> Vec<RenderJob> {
        let documents = &self.inner.documents;
        let limits = &self.config().limits;
        if !self.config().merge_renderings {
            return groups
                .into_iter()
                .map(|(_, m)| RenderJob::Alone(m))
                .collect();
        }
        let mut jobs = Vec::new();
        let mut shaped = Vec::new();
        for ((_, _, _, viewer), members) in groups {
            match documents.shape(limits, admitted[members[0]].into()) {
                Some(shape) => shaped.push((viewer, shape, members)),
                None => jobs.push(RenderJob::Alone(members)),
            }
        }
        let mut families: HashMap<_, Vec<(Arc<graphql::Shape>, Vec<usize>)>> = HashMap::new();
        for (viewer, shape, members) in &shaped {
            families
                .entry((*viewer, shape.merge_key()))
                .or_default()
                .push((shape.clone(), members.clone()));
        }
        for family in families.into_values() {
            if family.len() == 1 {
                jobs.extend(
                    family
                        .into_iter()
                        .map(|(_, members)| RenderJob::Alone(members)),
                );
                continue;
            }
            let mut family = family.into_iter();
            let Some((shape, members)) = family.next() else {
                continue;
            };
            let mut union = (graphql::Union::new(&shape, limits), vec![members]);
            for (shape, members) in family {
                if union.0.add(&shape) {
                    union.1.push(members);
                } else {
                    jobs.push(RenderJob::from(union));
                    union = (graphql::Union::new(&shape, limits), vec![members]);
                }
            }
            jobs.push(RenderJob::from(union));
        }
        jobs
    }

    /// Renders one job: the payload for each of its groups, or `None` for the groups a union
    /// could not render for.
    async fn render_job(
        &self,
        admitted: &[&Subscription],
        event: &Arc<Event>,
        job: RenderJob,
    ) -> Vec<(Vec<usize>, Option<Rendered>)> {
        match job {
            RenderJob::Alone(members) => {
                let first = admitted[members[0]];
                let rendered = self.render_alone(first, viewer(first), event).await;
                vec![(members, Some(rendered))]
            }
            RenderJob::Merged(union, groups) => {
                let viewer = viewer(admitted[groups[0][0]]);
                debug_assert_eq!(union.members(), groups.len());
                match self.render_union(viewer, event, &union).await {
                    Some(rendered) => groups
                        .into_iter()
                        .zip(rendered.into_iter().map(Some))
                        .collect(),
                    None => groups.into_iter().map(|g| (g, None)).collect(),
                }
            }
        }
    }

    /// The members of shared renderings that asked for the viewer, rendered per user,
    /// counted in `report.public_fallbacks`.
    async fn render_per_viewer(
        &self,
        admitted: &[&Subscription],
        event: &Arc<Event>,
        groups: Vec<(Vec<usize>, Rendered)>,
        report: &mut DeliveryReport,
    ) -> Vec<(Vec<usize>, Rendered)> {
        let mut by_user: HashMap<(&UserId, usize), Vec<usize>> = HashMap::new();
        for (group, (members, _)) in groups.iter().enumerate() {
            let first = admitted[members[0]];
            tracing::warn!(
                event = %event.id,
                operation = first.operation_name.as_deref().unwrap_or_default(),
                subscribers = members.len(),
                "a subscription declared the same for every viewer read the viewer; rendered per user"
            );
            report.public_fallbacks += members.len();
            for &member in members {
                by_user
                    .entry((&admitted[member].principal, group))
                    .or_default()
                    .push(member);
            }
        }
        let concurrency = self.config().render_concurrency.max(1);
        let by_user: Vec<Vec<usize>> = by_user.into_values().collect();
        stream::iter(by_user)
            .map(|members| async move {
                let first = admitted[members[0]];
                let rendered = self
                    .render_alone(first, Some(&first.principal), event)
                    .await;
                (members, rendered)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
    }

    async fn render_alone(
        &self,
        subscription: &Subscription,
        viewer: Viewer<'_>,
        event: &Arc<Event>,
    ) -> Rendered {
        let execution = graphql::execute(
            self.inner.executor.as_ref(),
            &self.inner.documents,
            &self.config().limits,
            subscription.into(),
            event,
            |r| self.render_data(viewer, r),
        );
        let response = tokio::time::timeout(self.config().render_timeout, execution)
            .await
            .map_err(|_| Unrendered::TimedOut)?;
        match response {
            Some(response) if viewer.is_none() && graphql::reads_viewer(&response) => {
                Err(Unrendered::ReadsViewer)
            }
            response => Ok(response.map(|r| graphql::payload(&r))),
        }
    }

    /// The request data of a rendering for `viewer`: the user and the outbox, or for no
    /// viewer neither (only the mark that says so).
    fn render_data(
        &self,
        viewer: Viewer<'_>,
        request: async_graphql::Request,
    ) -> async_graphql::Request {
        match viewer {
            Some(user) => self.request_data(user.clone(), request),
            None => request.data(graphql::PublicRendering),
        }
    }

    /// The union's payload for each of its members, or `None` when they must be rendered
    /// one by one: the union was refused, timed out, its result holds an error, or a
    /// member's field is missing from it.
    async fn render_union(
        &self,
        viewer: Viewer<'_>,
        event: &Arc<Event>,
        union: &graphql::Union,
    ) -> Option<Vec<Rendered>> {
        let documents = &self.inner.documents;
        let limits = &self.config().limits;
        let text = union.document();
        let spec = graphql::Spec {
            document: &text,
            operation_name: Some(graphql::UNION_OPERATION),
            variables: union.variables(),
        };
        if !documents.admit_union(limits, spec) {
            return None;
        }
        let execution = graphql::execute(
            self.inner.executor.as_ref(),
            documents,
            limits,
            spec,
            event,
            |r| self.render_data(viewer, r),
        );
        let response = match tokio::time::timeout(self.config().render_timeout, execution).await {
            Err(_) => return None,
            Ok(None) => return Some(vec![Ok(None); union.members()]),
            Ok(Some(response)) if response.errors.is_empty() => response,
            Ok(Some(response)) => {
                // Errors of no field (the schema's validation, its own limits) come back at
                // every event: the union is not tried again.
                if response.data == async_graphql::Value::Null
                    && response.errors.iter().all(|e| e.path.is_empty())
                {
                    documents.refuse_union(spec);
                }
                return None;
            }
        };
        (0..union.members())
            .map(|member| {
                let payload = union.payload(member, &response.data, &response.extensions)?;
                Some(Ok(Some(payload)))
            })
            .collect()
    }
}
