//! The two GraphQL-over-WebSocket subprotocols, as data.
//!
//! Client messages are parsed with async-graphql's [`ClientMessage`], which already accepts
//! both dialects (`subscribe`/`start`, `complete`/`stop`). Server messages are built here:
//! async-graphql keeps its server side inside a per-connection stream, which cannot survive
//! between Lambda invocations.

use async_graphql::http::ClientMessage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A negotiated subprotocol, stored with the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// `graphql-transport-ws`: the `graphql-ws` npm client, Apollo's GraphQLWsLink.
    #[serde(rename = "graphql-transport-ws")]
    GraphqlTransportWs,
    /// `graphql-ws`: the legacy `subscriptions-transport-ws` protocol.
    #[serde(rename = "graphql-ws")]
    GraphqlWs,
}

/// Close codes of `graphql-transport-ws` (the legacy protocol reuses them: its clients only
/// look at whether the socket closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// The socket is closed normally.
    Normal = 1000,
    /// The broker failed on its side.
    InternalError = 4500,
    /// The client sent a message the protocol does not allow.
    BadRequest = 4400,
    /// An operation came before `connection_init` was acknowledged, or the token was refused.
    Unauthorized = 4401,
    /// The connection's authority ended (its token expired) or a hook refused it.
    Forbidden = 4403,
    /// No `connection_init` came within the time allowed.
    InitTimeout = 4408,
    /// A `subscribe` reused the id of an operation still running on the connection.
    SubscriberAlreadyExists = 4409,
    /// A second `connection_init` on the same connection, or one that would give its user
    /// more sockets than [`crate::BrokerConfig::max_sockets_per_user`].
    TooManyInitRequests = 4429,
}

impl CloseCode {
    /// The numeric close code sent in the close frame.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The close code with number `code`, `None` for one the protocol does not define.
    pub fn from_code(code: u16) -> Option<Self> {
        [
            Self::Normal,
            Self::InternalError,
            Self::BadRequest,
            Self::Unauthorized,
            Self::Forbidden,
            Self::InitTimeout,
            Self::SubscriberAlreadyExists,
            Self::TooManyInitRequests,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}

/// Why the protocol negotiation at `$connect` failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("none of the offered subprotocols is supported: {offered}")]
pub struct UnsupportedProtocol {
    /// The `Sec-WebSocket-Protocol` header as the client sent it.
    pub offered: String,
}

impl Protocol {
    /// Every subprotocol the broker speaks, the preferred first.
    pub const ALL: [Protocol; 2] = [Protocol::GraphqlTransportWs, Protocol::GraphqlWs];

    /// The subprotocol's name as in `Sec-WebSocket-Protocol`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::GraphqlTransportWs => "graphql-transport-ws",
            Protocol::GraphqlWs => "graphql-ws",
        }
    }

    /// Picks the subprotocol from a `Sec-WebSocket-Protocol` request header.
    ///
    /// `Ok(None)` when the client offered none: the connection then speaks
    /// `graphql-transport-ws` and no header is echoed (echoing one the client did not offer
    /// makes browsers drop the socket). The modern protocol wins when both are offered.
    pub fn negotiate(header: Option<&str>) -> Result<Option<Protocol>, UnsupportedProtocol> {
        let Some(header) = header.filter(|h| !h.trim().is_empty()) else {
            return Ok(None);
        };
        let offered: Vec<&str> = header.split(',').map(str::trim).collect();
        Self::ALL
            .into_iter()
            .find(|p| offered.contains(&p.name()))
            .map(Some)
            .ok_or_else(|| UnsupportedProtocol {
                offered: header.to_owned(),
            })
    }

    /// `connection_ack`. The legacy protocol also has a server keep-alive, `ka`, which this
    /// broker never sends: a `subscriptions-transport-ws` client that saw one starts a 30 s
    /// timer and drops the socket unless another `ka` follows, and a stateless server has
    /// no clock to send them by.
    pub fn ack(self) -> String {
        json!({"type": "connection_ack"}).to_string()
    }

    /// A result for operation `id`. `payload` is a serialized GraphQL response.
    pub fn next(self, id: &str, payload: &str) -> String {
        let kind = match self {
            Protocol::GraphqlTransportWs => "next",
            Protocol::GraphqlWs => "data",
        };
        // The payload is already JSON: splice it in instead of parsing it again, so one
        // rendered event can be sent to many subscribers at the cost of a string copy.
        format!(
            r#"{{"id":{},"type":"{kind}","payload":{payload}}}"#,
            Value::from(id)
        )
    }

    /// `complete`: operation `id` has ended and sends nothing more.
    pub fn complete(self, id: &str) -> String {
        json!({"id": id, "type": "complete"}).to_string()
    }

    /// Operation errors (validation, authorization) for operation `id`.
    pub fn error(self, id: &str, errors: Vec<Value>) -> String {
        match self {
            Protocol::GraphqlTransportWs => {
                json!({"id": id, "type": "error", "payload": errors}).to_string()
            }
            // subscriptions-transport-ws expects a single error object.
            Protocol::GraphqlWs => {
                let first = errors
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| json!({"message": "unknown error"}));
                json!({"id": id, "type": "error", "payload": first}).to_string()
            }
        }
    }

    /// Reply to a client `ping` (graphql-transport-ws only; on the legacy protocol, which has
    /// none, a `ping` is a bad message).
    pub fn pong(self, payload: Option<Value>) -> Option<String> {
        match self {
            Protocol::GraphqlTransportWs => Some(match payload {
                Some(p) => json!({"type": "pong", "payload": p}).to_string(),
                None => json!({"type": "pong"}).to_string(),
            }),
            Protocol::GraphqlWs => None,
        }
    }

    /// The legacy protocol reports a refused `connection_init` as a message before closing.
    pub fn connection_error(self, message: &str) -> Option<String> {
        match self {
            Protocol::GraphqlTransportWs => None,
            Protocol::GraphqlWs => Some(
                json!({"type": "connection_error", "payload": {"message": message}}).to_string(),
            ),
        }
    }
}

impl Protocol {
    /// The message types this subprotocol's clients send. async-graphql's parser reads
    /// both dialects alike; a message of the other one is a bad message here.
    pub fn client_message_types(self) -> &'static [&'static str] {
        match self {
            Protocol::GraphqlTransportWs => {
                &["connection_init", "ping", "pong", "subscribe", "complete"]
            }
            Protocol::GraphqlWs => &["connection_init", "start", "stop", "connection_terminate"],
        }
    }
}

/// Parses one text frame of a `protocol` connection. `Err` carries the reason for a 4400
/// close: not JSON, no `type`, a type `protocol` does not have (the other subprotocol's
/// included), or fields that do not fit the type.
pub fn parse_client_message(protocol: Protocol, text: &str) -> Result<ClientMessage, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or("message has no \"type\"")?
        .to_owned();
    if !protocol.client_message_types().contains(&kind.as_str()) {
        return Err(format!(
            "\"{kind}\" is not a message of {}",
            protocol.name()
        ));
    }
    serde_json::from_value(value).map_err(|e| format!("invalid \"{kind}\" message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_the_modern_protocol_and_rejects_unknown_ones() {
        assert_eq!(Protocol::negotiate(None), Ok(None));
        assert_eq!(
            Protocol::negotiate(Some("graphql-ws")),
            Ok(Some(Protocol::GraphqlWs))
        );
        assert_eq!(
            Protocol::negotiate(Some("graphql-ws, graphql-transport-ws")),
            Ok(Some(Protocol::GraphqlTransportWs))
        );
        assert!(Protocol::negotiate(Some("mqtt")).is_err());
    }

    #[test]
    fn next_frames_embed_the_payload_verbatim() {
        let frame = Protocol::GraphqlTransportWs.next("a\"1", r#"{"data":{"x":1}}"#);
        let value: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            value,
            json!({"id": "a\"1", "type": "next", "payload": {"data": {"x": 1}}})
        );
        let legacy: Value =
            serde_json::from_str(&Protocol::GraphqlWs.next("1", r#"{"data":null}"#)).unwrap();
        assert_eq!(legacy["type"], "data");
    }

    #[test]
    fn bad_messages_are_described() {
        use Protocol::*;
        let reason = |text: &str| {
            parse_client_message(GraphqlTransportWs, text)
                .err()
                .unwrap_or_default()
        };
        assert!(reason("{").contains("invalid JSON"));
        assert!(reason("{}").contains("type"));
        assert!(reason(r#"{"type":"subscribe","id":"1"}"#).contains("subscribe"));
        assert!(parse_client_message(GraphqlTransportWs, r#"{"type":"bogus"}"#).is_err());
        assert!(parse_client_message(GraphqlTransportWs, r#"{"type":"ping"}"#).is_ok());
    }

    #[test]
    fn a_message_of_the_other_subprotocol_is_refused() {
        use Protocol::*;
        let query = r#""payload":{"query":"{ a }"}"#;
        for other in [
            format!(r#"{{"type":"start","id":"1",{query}}}"#),
            r#"{"type":"stop","id":"1"}"#.to_owned(),
            r#"{"type":"connection_terminate"}"#.to_owned(),
        ] {
            let reason = parse_client_message(GraphqlTransportWs, &other)
                .err()
                .unwrap_or_default();
            assert!(
                reason.contains("not a message of graphql-transport-ws"),
                "{reason}"
            );
            assert!(parse_client_message(GraphqlWs, &other).is_ok(), "{other}");
        }
        for other in [
            format!(r#"{{"type":"subscribe","id":"1",{query}}}"#),
            r#"{"type":"complete","id":"1"}"#.to_owned(),
            r#"{"type":"ping"}"#.to_owned(),
            r#"{"type":"pong"}"#.to_owned(),
        ] {
            let reason = parse_client_message(GraphqlWs, &other)
                .err()
                .unwrap_or_default();
            assert!(reason.contains("not a message of graphql-ws"), "{reason}");
            assert!(
                parse_client_message(GraphqlTransportWs, &other).is_ok(),
                "{other}"
            );
        }
    }
}
