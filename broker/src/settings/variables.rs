//! The declarations: every variable, grouped by what it is about, and [`ALL`] in the
//! README's order.

use std::net::SocketAddr;
use std::path::PathBuf;

use jsonwebtoken::Algorithm;

use super::{Blank, Fallback, Place, Setting, TUNED_IN_CODE, Template, Var};
use super::{DEVELOPMENT_SECRET, parse_algorithms, parsed, path, text, trimmed};
use crate::domain::DeliveryMode;

// ---------------------------------------------------------------- authentication

/// The HS256 secret tokens are signed with.
pub const JWT_SECRET: Var<String> = Var {
    setting: Setting {
        name: "JWT_SECRET",
        meaning: "HS256 secret tokens are signed with (at least 32 bytes on AWS)",
        fallback: Fallback::Local {
            lambda: "required unless `JWT_JWKS_URL` is set",
            local: DEVELOPMENT_SECRET,
        },
        place: Place::Both(Template::Sets),
        // A secret of spaces is a secret: only an empty value falls back.
        blank: Blank::EmptyOnly,
    },
    parse: text,
};

/// The `iss` every token must carry.
pub const JWT_ISSUER: Var<String> = Var {
    setting: Setting {
        name: "JWT_ISSUER",
        meaning: "the `iss` every token must carry",
        fallback: Fallback::None("not checked"),
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: text,
};

/// The `aud` every token must carry.
pub const JWT_AUDIENCE: Var<String> = Var {
    setting: Setting {
        name: "JWT_AUDIENCE",
        meaning: "the `aud` every token must carry",
        fallback: Fallback::None("not checked"),
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: text,
};

/// Seconds of clock skew tolerated: a token's authority ends this long after its `exp`, on
/// every path (at most 300).
pub const JWT_LEEWAY_SECS: Var<u64> = Var {
    setting: Setting {
        name: "JWT_LEEWAY_SECS",
        meaning: "seconds of clock skew tolerated between the token's issuer and the broker: a token is accepted until `exp` plus this (and from `nbf` minus this), and a socket is closed with 4403 then, on HTTP and WebSocket alike (0 to 300)",
        fallback: Fallback::Value("5"),
        place: Place::Both(Template::Default(TUNED_IN_CODE)),
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: u64| n.min(300)),
};

/// An identity provider's key set; when set, `JWT_SECRET` is not used.
pub const JWT_JWKS_URL: Var<String> = Var {
    setting: Setting {
        name: "JWT_JWKS_URL",
        meaning: "an identity provider's key set; when set, `JWT_SECRET` is not used",
        fallback: Fallback::None("unset: `JWT_SECRET` signs"),
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: trimmed,
};

/// The algorithms accepted from the key set: asymmetric ones, comma-separated.
pub const JWT_ALGORITHMS: Var<Vec<Algorithm>> = Var {
    setting: Setting {
        name: "JWT_ALGORITHMS",
        meaning: "the algorithms accepted from the key set, comma-separated",
        fallback: Fallback::Value("RS256"),
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: parse_algorithms,
};

// ---------------------------------------------------------------- the broker's tunables

/// Where a published event goes: `stream` or `direct`.
pub const DELIVERY_MODE: Var<DeliveryMode> = Var {
    setting: Setting {
        name: "DELIVERY_MODE",
        meaning: "`stream` (the stream publisher delivers) or `direct` (the resolver does)",
        fallback: Fallback::Value("stream"),
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: parsed,
};

/// Subscribers above which an event is split into fan-out pages.
pub const FANOUT_THRESHOLD: Var<usize> = Var {
    setting: Setting {
        name: "FANOUT_THRESHOLD",
        meaning: "subscribers above which an event is split into fan-out pages",
        fallback: Fallback::Value("100"),
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: parsed,
};

/// Subscriptions per fan-out page (at least 1).
pub const FANOUT_PAGE_SIZE: Var<usize> = Var {
    setting: Setting {
        name: "FANOUT_PAGE_SIZE",
        meaning: "subscriptions per fan-out page (at least 1)",
        fallback: Fallback::Value("50"),
        place: Place::Both(Template::Default(TUNED_IN_CODE)),
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: usize| n.max(1)),
};

/// Buckets a topic's subscribers are spread over; 0 is refused.
pub const FANOUT_GROUPS: Var<usize> = Var {
    setting: Setting {
        name: "FANOUT_GROUPS",
        meaning: "buckets a topic's subscribers are spread over, one FIFO group each (0 refused)",
        fallback: Fallback::Value("32"),
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: |value| match parsed(value)? {
        0 => Err("at least one group is needed".to_owned()),
        n => Ok(n),
    },
};

/// How long a fan-out page can be in the ordered queue.
pub const FANOUT_PAGE_LIFETIME_SECS: Var<u64> = Var {
    setting: Setting {
        name: "FANOUT_PAGE_LIFETIME_SECS",
        meaning: "how long a fan-out page can be in the ordered queue (retention + visibility)",
        fallback: Fallback::Value("86580"),
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: parsed,
};

/// The ordered queue's `maxReceiveCount` (at least 1).
pub const FANOUT_MAX_RECEIVES: Var<u32> = Var {
    setting: Setting {
        name: "FANOUT_MAX_RECEIVES",
        meaning: "the ordered queue's `maxReceiveCount` (at least 1)",
        fallback: Fallback::None("unset: a failed page's mark expires with its lifetime"),
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: u32| n.max(1)),
};

/// Posts in flight per delivery (at least 1).
pub const POST_CONCURRENCY: Var<usize> = Var {
    setting: Setting {
        name: "POST_CONCURRENCY",
        meaning: "posts in flight per delivery (at least 1)",
        fallback: Fallback::Value("64"),
        place: Place::Both(Template::Default(
            "API Gateway's account throttle bounds it, not the stack; lower it when throttled",
        )),
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: usize| n.max(1)),
};

/// Posts of deliveries in flight at once in one process (at least 1).
pub const MAX_POSTS_IN_FLIGHT: Var<usize> = Var {
    setting: Setting {
        name: "MAX_POSTS_IN_FLIGHT",
        meaning: "posts of deliveries in flight at once in one process, across every delivery running (at least 1)",
        fallback: Fallback::Value("1024"),
        place: Place::Both(Template::Default(
            "a Lambda instance runs at most 16 deliveries of 64 posts at once, so it never waits on it",
        )),
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: usize| n.max(1)),
};

/// How frames are posted to connections: `signed` or `sdk`.
pub const MANAGEMENT_POST: Var<&'static str> = Var {
    setting: Setting {
        name: "MANAGEMENT_POST",
        meaning: "how frames are posted: `signed` or `sdk`",
        fallback: Fallback::Value("signed"),
        place: Place::Both(Template::Default(
            "`signed` is the faster of two equivalent clients; `sdk` is for comparison",
        )),
        blank: Blank::Unset,
    },
    parse: |value| match value.trim().to_ascii_lowercase().as_str() {
        "signed" => Ok("signed"),
        "sdk" => Ok("sdk"),
        _ => Err("expected signed or sdk".to_owned()),
    },
};

/// How long events stay in the log (at least 1 s).
pub const EVENT_RETENTION_SECS: Var<u64> = Var {
    setting: Setting {
        name: "EVENT_RETENTION_SECS",
        meaning: "how long events stay in the log: the window a resume reaches (at least 1)",
        fallback: Fallback::Value("86400"),
        place: Place::Both(Template::Default(
            "events are written to expire after this default, so a longer one reaches nothing more",
        )),
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: u64| n.max(1)),
};

/// How long after a resume began the log is read once more; the broker raises it to
/// [`crate::MIN_RESUME_SETTLE_MS`] (`Broker::new`).
pub const RESUME_SETTLE_MS: Var<u64> = Var {
    setting: Setting {
        name: "RESUME_SETTLE_MS",
        meaning: "how long after a resume began the log is read once more (the broker raises it to 100)",
        fallback: Fallback::Value("2000"),
        place: Place::Both(Template::Default(
            "raise it only when publishes time out (the `PublishTimeouts` metric)",
        )),
        blank: Blank::Unset,
    },
    parse: parsed,
};

/// The most events one resume replays (at least 1).
pub const MAX_REPLAY_EVENTS: Var<usize> = Var {
    setting: Setting {
        name: "MAX_REPLAY_EVENTS",
        meaning: "the most events one resume replays (at least 1)",
        fallback: Fallback::Value("10000"),
        place: Place::Both(Template::Default(TUNED_IN_CODE)),
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: usize| n.max(1)),
};

// ---------------------------------------------------------------- limits per user

/// Why the template leaves a per-user limit to its default.
const PER_USER_DEFAULT: &str = "the default suits a multi-tenant service; set it on the \
                                functions to tune a deployment (0 turns the limit off)";

/// Sockets one user holds at once, across every process (0: unlimited).
pub const MAX_SOCKETS_PER_USER: Var<u64> = Var {
    setting: Setting {
        name: "MAX_SOCKETS_PER_USER",
        meaning: "sockets one user holds at once, across every process; one more is refused with 429 at `$connect` or closed with 4429 at `connection_init` (0: unlimited)",
        fallback: Fallback::Value("20"),
        place: Place::Both(Template::Default(PER_USER_DEFAULT)),
        blank: Blank::Unset,
    },
    parse: parsed,
};

/// Subscriptions one user holds at once over all of their sockets (0: unlimited).
pub const MAX_SUBSCRIPTIONS_PER_USER: Var<u64> = Var {
    setting: Setting {
        name: "MAX_SUBSCRIPTIONS_PER_USER",
        meaning: "subscriptions one user holds at once over all of their sockets; one more gets an `error` with `RATE_LIMITED` (0: unlimited)",
        fallback: Fallback::Value("200"),
        place: Place::Both(Template::Default(PER_USER_DEFAULT)),
        blank: Blank::Unset,
    },
    parse: parsed,
};

/// Events one user publishes through resolvers per [`PUBLISH_RATE_WINDOW_MS`] (0: unlimited).
pub const PUBLISH_RATE_MAX: Var<u64> = Var {
    setting: Setting {
        name: "PUBLISH_RATE_MAX",
        meaning: "events one user publishes through resolvers per `PUBLISH_RATE_WINDOW_MS`; one more fails the mutation with `RATE_LIMITED` (0: unlimited)",
        fallback: Fallback::Value("40"),
        place: Place::Both(Template::Default(PER_USER_DEFAULT)),
        blank: Blank::Unset,
    },
    parse: parsed,
};

/// The window of [`PUBLISH_RATE_MAX`], in milliseconds (at least 1).
pub const PUBLISH_RATE_WINDOW_MS: Var<u64> = Var {
    setting: Setting {
        name: "PUBLISH_RATE_WINDOW_MS",
        meaning: "the window of `PUBLISH_RATE_MAX`, in milliseconds (at least 1)",
        fallback: Fallback::Value("2000"),
        place: Place::Both(Template::Default(PER_USER_DEFAULT)),
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: u64| n.max(1)),
};

/// Resumes (`subscribe` with `resumeFrom`) one user makes per [`REPLAY_RATE_WINDOW_SECS`]
/// (0: unlimited).
pub const REPLAY_RATE_MAX: Var<u64> = Var {
    setting: Setting {
        name: "REPLAY_RATE_MAX",
        meaning: "resumes (`subscribe` with `resumeFrom`) one user makes per `REPLAY_RATE_WINDOW_SECS`; one more gets an `error` with `RATE_LIMITED` before the log is read (0: unlimited)",
        fallback: Fallback::Value("10"),
        place: Place::Both(Template::Default(PER_USER_DEFAULT)),
        blank: Blank::Unset,
    },
    parse: parsed,
};

/// The window of [`REPLAY_RATE_MAX`], in seconds (at least 1).
pub const REPLAY_RATE_WINDOW_SECS: Var<u64> = Var {
    setting: Setting {
        name: "REPLAY_RATE_WINDOW_SECS",
        meaning: "the window of `REPLAY_RATE_MAX`, in seconds (at least 1)",
        fallback: Fallback::Value("60"),
        place: Place::Both(Template::Default(PER_USER_DEFAULT)),
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: u64| n.max(1)),
};

/// Bytes of one HTTP request body or query string (1 KiB to 6 MiB).
pub const MAX_REQUEST_BYTES: Var<usize> = Var {
    setting: Setting {
        name: "MAX_REQUEST_BYTES",
        meaning: "bytes of one HTTP request body or query string (1024 to 6 MiB)",
        fallback: Fallback::Value("131072"),
        place: Place::Both(Template::Default(
            "its default is API Gateway's WebSocket message limit, so both APIs refuse alike",
        )),
        blank: Blank::Unset,
    },
    // At most what one Lambda invocation can carry.
    parse: |value| parsed(value).map(|n: usize| n.clamp(1024, 6 * 1024 * 1024)),
};

/// Bytes of one GraphQL document (at least 64).
pub const MAX_DOCUMENT_BYTES: Var<usize> = Var {
    setting: Setting {
        name: "MAX_DOCUMENT_BYTES",
        meaning: "bytes of one GraphQL document (at least 64)",
        fallback: Fallback::Value("32768"),
        place: Place::Both(Template::Default(TUNED_IN_CODE)),
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: usize| n.max(64)),
};

/// Fields one GraphQL document may select (at least 1).
pub const MAX_FIELDS: Var<u64> = Var {
    setting: Setting {
        name: "MAX_FIELDS",
        meaning: "fields one GraphQL document may select (at least 1)",
        fallback: Fallback::Value("1000"),
        place: Place::Both(Template::Default(TUNED_IN_CODE)),
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: u64| n.max(1)),
};

/// Depth of one GraphQL document (at least 1).
pub const MAX_DEPTH: Var<usize> = Var {
    setting: Setting {
        name: "MAX_DEPTH",
        meaning: "depth of one GraphQL document (at least 1)",
        fallback: Fallback::Value("16"),
        place: Place::Both(Template::Default(TUNED_IN_CODE)),
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: usize| n.max(1)),
};

/// Subscriptions one connection may hold at once.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: Var<usize> = Var {
    setting: Setting {
        name: "MAX_SUBSCRIPTIONS_PER_CONNECTION",
        meaning: "subscriptions one connection may hold at once",
        fallback: Fallback::Value("100"),
        place: Place::Both(Template::Default("its default is AppSync's limit")),
        blank: Blank::Unset,
    },
    parse: parsed,
};

/// Seconds after `$connect` a `connection_init` may arrive (at least 1).
pub const INIT_TIMEOUT_SECS: Var<u64> = Var {
    setting: Setting {
        name: "INIT_TIMEOUT_SECS",
        meaning: "seconds after `$connect` a `connection_init` may arrive (at least 1)",
        fallback: Fallback::Value("30"),
        place: Place::Both(Template::Default(TUNED_IN_CODE)),
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: u64| n.max(1)),
};

/// Milliseconds rendering one event for one group of subscribers may take (at least 1).
pub const RENDER_TIMEOUT_MS: Var<u64> = Var {
    setting: Setting {
        name: "RENDER_TIMEOUT_MS",
        meaning: "milliseconds rendering one event for one group may take (at least 1)",
        fallback: Fallback::Value("5000"),
        place: Place::Both(Template::Default(TUNED_IN_CODE)),
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: u64| n.max(1)),
};

/// Whether documents that differ only in their selection share one execution.
pub const MERGE_RENDERINGS: Var<bool> = Var {
    setting: Setting {
        name: "MERGE_RENDERINGS",
        meaning: "whether documents that differ only in their selection share one execution",
        fallback: Fallback::Value("true"),
        place: Place::Both(Template::Default(
            "it depends on the app's resolvers, not on the deployment",
        )),
        blank: Blank::Unset,
    },
    parse: parsed,
};

// ---------------------------------------------------------------- AWS resources

/// The table of connections.
pub const CONNECTIONS_TABLE: Var<String> = Var {
    setting: Setting {
        name: "CONNECTIONS_TABLE",
        meaning: "the table of connections",
        fallback: Fallback::Local {
            lambda: "required",
            local: "broker-connections",
        },
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: trimmed,
};

/// The table of subscriptions.
pub const SUBSCRIPTIONS_TABLE: Var<String> = Var {
    setting: Setting {
        name: "SUBSCRIPTIONS_TABLE",
        meaning: "the table of subscriptions",
        fallback: Fallback::Local {
            lambda: "required",
            local: "broker-subscriptions",
        },
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: trimmed,
};

/// The event log's table.
pub const EVENTS_TABLE: Var<String> = Var {
    setting: Setting {
        name: "EVENTS_TABLE",
        meaning: "the event log's table",
        fallback: Fallback::Local {
            lambda: "required",
            local: "broker-events",
        },
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: trimmed,
};

/// One variable per table of the app ([`crate::TableSpec::env_var`]): its deployed name.
/// Read with [`Var::get_named`]; `{name}` in the local default is the table's name.
pub const APP_TABLE: Var<String> = Var {
    setting: Setting {
        name: "{NAME}_TABLE",
        meaning: "one per table of the app: its deployed name",
        fallback: Fallback::Local {
            lambda: "required",
            local: "broker-{name}",
        },
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: trimmed,
};

/// The Management API endpoint the functions post to.
pub const MANAGEMENT_ENDPOINT: Var<String> = Var {
    setting: Setting {
        name: "MANAGEMENT_ENDPOINT",
        meaning: "the WebSocket API's Management API endpoint",
        fallback: Fallback::None("required"),
        place: Place::Lambda(Template::Sets),
        blank: Blank::Unset,
    },
    parse: trimmed,
};

/// The SQS queue large fan-outs are split into.
pub const FANOUT_QUEUE_URL: Var<String> = Var {
    setting: Setting {
        name: "FANOUT_QUEUE_URL",
        meaning: "the SQS queue large fan-outs are split into (`broker-local`: or `create`)",
        fallback: Fallback::None("unset: large fan-outs are delivered inline"),
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: trimmed,
};

/// The region of the AWS clients.
pub const AWS_REGION: Var<String> = Var {
    setting: Setting {
        name: "AWS_REGION",
        meaning: "the region of the AWS clients",
        fallback: Fallback::None("`AWS_DEFAULT_REGION`"),
        place: Place::Both(Template::Default(
            "the Lambda runtime sets it to the function's region",
        )),
        blank: Blank::Unset,
    },
    parse: trimmed,
};

/// The region of the AWS clients when `AWS_REGION` is unset.
pub const AWS_DEFAULT_REGION: Var<String> = Var {
    setting: Setting {
        name: "AWS_DEFAULT_REGION",
        meaning: "the region of the AWS clients when `AWS_REGION` is unset",
        fallback: Fallback::Value("us-east-1"),
        place: Place::Both(Template::Default(
            "`AWS_REGION`, which the Lambda runtime sets, comes first",
        )),
        blank: Blank::Unset,
    },
    parse: trimmed,
};

// ---------------------------------------------------------------- operations

/// The CloudWatch namespace of the delivery metrics.
pub const METRICS_NAMESPACE: Var<String> = Var {
    setting: Setting {
        name: "METRICS_NAMESPACE",
        meaning: "the CloudWatch namespace of the delivery metrics",
        fallback: Fallback::Value("RealtimeGraphQL"),
        place: Place::Lambda(Template::Sets),
        blank: Blank::Unset,
    },
    parse: text,
};

/// The log filter. tracing-subscriber's `EnvFilter` reads it itself (its syntax is
/// tracing-subscriber's): declared here so it is documented and set like the others.
pub const RUST_LOG: Var<String> = Var {
    setting: Setting {
        name: "RUST_LOG",
        meaning: "the log filter (tracing-subscriber's `EnvFilter` syntax)",
        fallback: Fallback::Value("info"),
        place: Place::Both(Template::Sets),
        blank: Blank::Unset,
    },
    parse: text,
};

// ---------------------------------------------------------------- broker-local

/// The app `broker-local` serves (`--app`).
pub const BROKER_APP: Var<String> = Var {
    setting: Setting {
        name: "BROKER_APP",
        meaning: "the app `broker-local` serves (`--app`)",
        fallback: Fallback::None("the first the binary serves"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: trimmed,
};

/// Where `broker-local` keeps its state (`--store`): `file:PATH` or `memory`.
pub const BROKER_STORE: Var<String> = Var {
    setting: Setting {
        name: "BROKER_STORE",
        meaning: "where `broker-local` keeps its state (`--store`): `file:PATH` or `memory`",
        fallback: Fallback::None("`file:$BROKER_DATA_DIR/{app}.redb`"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: text,
};

/// The folder of `broker-local`'s default database file (`--data-dir`).
pub const BROKER_DATA_DIR: Var<PathBuf> = Var {
    setting: Setting {
        name: "BROKER_DATA_DIR",
        meaning: "the folder of `broker-local`'s default database file (`--data-dir`)",
        fallback: Fallback::Value(".broker-local"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: path,
};

/// `broker-local`'s address (`--listen`).
pub const BROKER_LISTEN: Var<SocketAddr> = Var {
    setting: Setting {
        name: "BROKER_LISTEN",
        meaning: "`broker-local`'s address (`--listen`)",
        fallback: Fallback::Value("127.0.0.1:4000"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: parsed,
};

/// DynamoDB (e.g. a moto server) for `broker-local`'s state (`--dynamodb-endpoint`).
pub const DYNAMODB_ENDPOINT: Var<String> = Var {
    setting: Setting {
        name: "DYNAMODB_ENDPOINT",
        meaning: "DynamoDB for `broker-local`'s state, e.g. a moto server (`--dynamodb-endpoint`)",
        fallback: Fallback::None("unset: `BROKER_STORE`"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: trimmed,
};

/// Milliseconds between two polls of an empty stream; 0 waits for the next append.
pub const STREAM_POLL_INTERVAL_MS: Var<u64> = Var {
    setting: Setting {
        name: "STREAM_POLL_INTERVAL_MS",
        meaning: "`broker-local`'s stream polling (Lambda polls every 250 ms; 0: at once)",
        fallback: Fallback::Value("250"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: parsed,
};

/// Origins whose pages may call `broker-local`'s `/graphql` from a browser.
pub const CORS_ALLOWED_ORIGINS: Var<String> = Var {
    setting: Setting {
        name: "CORS_ALLOWED_ORIGINS",
        meaning: "origins whose pages may call `/graphql` from a browser, comma-separated",
        fallback: Fallback::Value("*"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: text,
};

/// The built web app `broker-local` serves at `/`.
pub const BROKER_WEB_DIR: Var<PathBuf> = Var {
    setting: Setting {
        name: "BROKER_WEB_DIR",
        meaning: "the built web app `broker-local` serves at `/`",
        fallback: Fallback::None("`web/dist` of this source tree"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: path,
};

/// Seconds a socket may send nothing before it is closed (at least 1).
pub const SOCKET_IDLE_TIMEOUT_SECS: Var<u64> = Var {
    setting: Setting {
        name: "SOCKET_IDLE_TIMEOUT_SECS",
        meaning: "seconds a socket may send nothing before it is closed with 1001 (at least 1)",
        fallback: Fallback::Value("600"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: u64| n.max(1)),
};

/// Seconds after which every socket is closed (at least 1).
pub const SOCKET_MAX_DURATION_SECS: Var<u64> = Var {
    setting: Setting {
        name: "SOCKET_MAX_DURATION_SECS",
        meaning: "seconds after which every socket is closed with 1001 (at least 1)",
        fallback: Fallback::Value("7200"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: u64| n.max(1)),
};

/// Frames queued for one socket (at least 1).
pub const SOCKET_OUTBOX_FRAMES: Var<usize> = Var {
    setting: Setting {
        name: "SOCKET_OUTBOX_FRAMES",
        meaning: "frames queued for one socket; while it is full, posts to it wait for room (at least 1)",
        fallback: Fallback::Value("64"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: usize| n.max(1)),
};

/// How long a socket's queue may stay full before the socket is closed with 1013.
pub const SOCKET_FULL_TIMEOUT_MS: Var<u64> = Var {
    setting: Setting {
        name: "SOCKET_FULL_TIMEOUT_MS",
        meaning: "how long a socket's queue may stay full before it is closed with 1013 (at most 4000)",
        fallback: Fallback::Value("1000"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: u64| n.min(4_000)),
};

/// Open TCP connections (at least 1).
pub const MAX_CONNECTIONS: Var<usize> = Var {
    setting: Setting {
        name: "MAX_CONNECTIONS",
        meaning: "open TCP connections; more are refused at once (at least 1)",
        fallback: Fallback::Value("20000"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: usize| n.max(1)),
};

/// Seconds a request's headers may take to arrive (at least 1).
pub const HTTP_HEADER_TIMEOUT_SECS: Var<u64> = Var {
    setting: Setting {
        name: "HTTP_HEADER_TIMEOUT_SECS",
        meaning: "seconds a request's headers may take to arrive (at least 1)",
        fallback: Fallback::Value("10"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: |value| parsed(value).map(|n: u64| n.max(1)),
};

/// WebSockets one client address holds before their `connection_init` is accepted (0:
/// unlimited).
pub const MAX_UNINITIALISED_PER_ADDRESS: Var<usize> = Var {
    setting: Setting {
        name: "MAX_UNINITIALISED_PER_ADDRESS",
        meaning: "WebSockets one client address holds before their `connection_init` is accepted; one more upgrade gets 429 (0: unlimited; behind a proxy every client has the proxy's address)",
        fallback: Fallback::Value("20"),
        place: Place::Local,
        blank: Blank::Unset,
    },
    parse: parsed,
};

/// Every variable, in the README's order.
pub const ALL: &[&Setting] = &[
    &JWT_SECRET.setting,
    &JWT_ISSUER.setting,
    &JWT_AUDIENCE.setting,
    &JWT_LEEWAY_SECS.setting,
    &JWT_JWKS_URL.setting,
    &JWT_ALGORITHMS.setting,
    &DELIVERY_MODE.setting,
    &FANOUT_THRESHOLD.setting,
    &FANOUT_PAGE_SIZE.setting,
    &FANOUT_GROUPS.setting,
    &FANOUT_PAGE_LIFETIME_SECS.setting,
    &FANOUT_MAX_RECEIVES.setting,
    &POST_CONCURRENCY.setting,
    &MAX_POSTS_IN_FLIGHT.setting,
    &MANAGEMENT_POST.setting,
    &EVENT_RETENTION_SECS.setting,
    &RESUME_SETTLE_MS.setting,
    &MAX_REPLAY_EVENTS.setting,
    &MAX_SOCKETS_PER_USER.setting,
    &MAX_SUBSCRIPTIONS_PER_USER.setting,
    &PUBLISH_RATE_MAX.setting,
    &PUBLISH_RATE_WINDOW_MS.setting,
    &REPLAY_RATE_MAX.setting,
    &REPLAY_RATE_WINDOW_SECS.setting,
    &MAX_REQUEST_BYTES.setting,
    &MAX_DOCUMENT_BYTES.setting,
    &MAX_FIELDS.setting,
    &MAX_DEPTH.setting,
    &MAX_SUBSCRIPTIONS_PER_CONNECTION.setting,
    &INIT_TIMEOUT_SECS.setting,
    &RENDER_TIMEOUT_MS.setting,
    &MERGE_RENDERINGS.setting,
    &CONNECTIONS_TABLE.setting,
    &SUBSCRIPTIONS_TABLE.setting,
    &EVENTS_TABLE.setting,
    &APP_TABLE.setting,
    &MANAGEMENT_ENDPOINT.setting,
    &FANOUT_QUEUE_URL.setting,
    &AWS_REGION.setting,
    &AWS_DEFAULT_REGION.setting,
    &METRICS_NAMESPACE.setting,
    &RUST_LOG.setting,
    &BROKER_APP.setting,
    &BROKER_STORE.setting,
    &BROKER_DATA_DIR.setting,
    &BROKER_LISTEN.setting,
    &DYNAMODB_ENDPOINT.setting,
    &STREAM_POLL_INTERVAL_MS.setting,
    &CORS_ALLOWED_ORIGINS.setting,
    &BROKER_WEB_DIR.setting,
    &SOCKET_IDLE_TIMEOUT_SECS.setting,
    &SOCKET_MAX_DURATION_SECS.setting,
    &SOCKET_OUTBOX_FRAMES.setting,
    &SOCKET_FULL_TIMEOUT_MS.setting,
    &MAX_CONNECTIONS.setting,
    &HTTP_HEADER_TIMEOUT_SECS.setting,
    &MAX_UNINITIALISED_PER_ADDRESS.setting,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every declared default value reads with its variable's own parser; the `Default`
    /// impls build on them.
    #[test]
    fn every_default_value_parses() {
        fn check<T>(var: &Var<T>) {
            if let Fallback::Value(value) = var.fallback {
                assert!((var.parse)(value).is_ok(), "{}={value:?}", var.name);
            }
        }
        check(&JWT_ALGORITHMS);
        check(&JWT_LEEWAY_SECS);
        check(&DELIVERY_MODE);
        check(&FANOUT_THRESHOLD);
        check(&FANOUT_PAGE_SIZE);
        check(&FANOUT_GROUPS);
        check(&FANOUT_PAGE_LIFETIME_SECS);
        check(&POST_CONCURRENCY);
        check(&MAX_POSTS_IN_FLIGHT);
        check(&MANAGEMENT_POST);
        check(&EVENT_RETENTION_SECS);
        check(&RESUME_SETTLE_MS);
        check(&MAX_REPLAY_EVENTS);
        check(&MAX_SOCKETS_PER_USER);
        check(&MAX_SUBSCRIPTIONS_PER_USER);
        check(&PUBLISH_RATE_MAX);
        check(&PUBLISH_RATE_WINDOW_MS);
        check(&REPLAY_RATE_MAX);
        check(&REPLAY_RATE_WINDOW_SECS);
        check(&MAX_REQUEST_BYTES);
        check(&MAX_DOCUMENT_BYTES);
        check(&MAX_FIELDS);
        check(&MAX_DEPTH);
        check(&MAX_SUBSCRIPTIONS_PER_CONNECTION);
        check(&INIT_TIMEOUT_SECS);
        check(&RENDER_TIMEOUT_MS);
        check(&MERGE_RENDERINGS);
        check(&AWS_DEFAULT_REGION);
        check(&METRICS_NAMESPACE);
        check(&BROKER_DATA_DIR);
        check(&BROKER_LISTEN);
        check(&STREAM_POLL_INTERVAL_MS);
        check(&SOCKET_IDLE_TIMEOUT_SECS);
        check(&SOCKET_MAX_DURATION_SECS);
        check(&SOCKET_OUTBOX_FRAMES);
        check(&SOCKET_FULL_TIMEOUT_MS);
        check(&MAX_CONNECTIONS);
        check(&HTTP_HEADER_TIMEOUT_SECS);
        check(&MAX_UNINITIALISED_PER_ADDRESS);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = ALL.iter().map(|s| s.name).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    #[test]
    fn the_retention_default_is_the_events_lifetime() {
        assert_eq!(
            EVENT_RETENTION_SECS.default_value(),
            crate::domain::EVENT_LIFETIME_SECS
        );
    }

    #[test]
    fn the_leeway_default_is_the_verifiers() {
        assert_eq!(
            JWT_LEEWAY_SECS.default_value(),
            crate::auth::DEFAULT_LEEWAY_SECS
        );
    }

    #[test]
    fn clamps_and_refusals_are_the_parsers() {
        assert_eq!((FANOUT_PAGE_SIZE.parse)(" 0 "), Ok(1));
        assert_eq!((MAX_REQUEST_BYTES.parse)("1"), Ok(1024));
        assert_eq!((MAX_REQUEST_BYTES.parse)("999999999"), Ok(6 * 1024 * 1024));
        assert_eq!((MAX_DOCUMENT_BYTES.parse)("1"), Ok(64));
        assert!((FANOUT_GROUPS.parse)("0").is_err());
        assert!((FANOUT_THRESHOLD.parse)("many").is_err());
        assert_eq!((MANAGEMENT_POST.parse)(" SDK "), Ok("sdk"));
    }
}
