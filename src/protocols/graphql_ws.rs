//! `graphql-ws`: GraphQL over WebSocket, both the `graphql-transport-ws`
//! protocol and the legacy `graphql-ws` (subscriptions-transport-ws) one.
//! Every message is a JSON object with a top-level `type`.

use serde::Deserialize;

use super::{Handshake, Kind, Profile};
use crate::frame::Opcode;

/// GraphQL over WebSocket.
#[derive(Debug)]
pub struct GraphqlWs;

/// Just the `type` field; serde skips every other field without
/// allocating (no `flatten`, which would buffer them).
#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(borrow, rename = "type")]
    kind: std::borrow::Cow<'a, str>,
}

impl Profile for GraphqlWs {
    fn name(&self) -> &'static str {
        "graphql-ws"
    }

    fn claims_handshake(&self, handshake: &Handshake<'_>) -> bool {
        matches!(
            handshake.subprotocol,
            Some("graphql-transport-ws" | "graphql-ws")
        )
    }

    fn classify(&self, _opcode: Opcode, payload: &[u8], _fin: bool) -> Kind {
        let Ok(message) = serde_json::from_slice::<TypeOnly<'_>>(payload) else {
            return Kind::Data;
        };
        match message.kind.as_ref() {
            "ping" | "pong" | "ka" => Kind::Heartbeat,
            "connection_init" | "connection_ack" | "connection_error" => Kind::Handshake,
            "connection_terminate" => Kind::Close,
            _ => Kind::Data,
        }
    }

    /// `graphql-transport-ws`: a `ping` is answered with a `pong`; the
    /// legacy `ka` needs no answer.
    fn answer_heartbeat(&self, server_message: &str) -> Option<&'static str> {
        match serde_json::from_str::<TypeOnly<'_>>(server_message) {
            Ok(m) if m.kind == "ping" => Some(r#"{"type":"pong"}"#),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_answers_pings_with_pongs() {
        assert_eq!(
            GraphqlWs.answer_heartbeat(r#"{"type":"ping"}"#),
            Some(r#"{"type":"pong"}"#)
        );
        assert_eq!(
            GraphqlWs.answer_heartbeat(r#"{"type":"ping","payload":{}}"#),
            Some(r#"{"type":"pong"}"#)
        );
        assert_eq!(GraphqlWs.answer_heartbeat(r#"{"type":"pong"}"#), None);
        assert_eq!(GraphqlWs.answer_heartbeat(r#"{"type":"ka"}"#), None);
        assert_eq!(GraphqlWs.answer_heartbeat("ping"), None);
    }

    fn kind(text: &str) -> Kind {
        GraphqlWs.classify(Opcode::Text, text.as_bytes(), true)
    }

    #[test]
    fn transport_ws_messages() {
        // From graphql-ws's PROTOCOL.md.
        assert_eq!(
            kind(r#"{"type":"connection_init","payload":{}}"#),
            Kind::Handshake
        );
        assert_eq!(kind(r#"{"type":"connection_ack"}"#), Kind::Handshake);
        assert_eq!(kind(r#"{"type":"ping"}"#), Kind::Heartbeat);
        assert_eq!(
            kind(r#"{"type":"pong","payload":{"x":1}}"#),
            Kind::Heartbeat
        );
        assert_eq!(
            kind(r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { count }"}}"#),
            Kind::Data
        );
        assert_eq!(
            kind(r#"{"id":"1","payload":{"data":{"type":"ping"}},"type":"next"}"#),
            Kind::Data
        );
        assert_eq!(kind(r#"{"id":"1","type":"complete"}"#), Kind::Data);
        assert_eq!(
            kind(r#"{"id":"1","type":"error","payload":[]}"#),
            Kind::Data
        );
    }

    #[test]
    fn legacy_messages() {
        assert_eq!(kind(r#"{"type":"ka"}"#), Kind::Heartbeat);
        assert_eq!(kind(r#"{"type":"connection_terminate"}"#), Kind::Close);
        assert_eq!(
            kind(r#"{"id":"1","type":"start","payload":{}}"#),
            Kind::Data
        );
        assert_eq!(kind(r#"{"id":"1","type":"data","payload":{}}"#), Kind::Data);
        assert_eq!(kind(r#"{"id":"1","type":"stop"}"#), Kind::Data);
    }

    #[test]
    fn escaped_and_broken_json() {
        assert_eq!(kind(r#"{"type":"p\u0069ng"}"#), Kind::Heartbeat);
        assert_eq!(kind(r#"{"type":"ping""#), Kind::Data);
        assert_eq!(kind("not json"), Kind::Data);
    }
}
