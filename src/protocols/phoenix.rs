//! `phoenix`: Phoenix channels (`/socket/websocket?vsn=…`). Serializer 2.0
//! sends arrays `[join_ref, ref, topic, event, payload]`; 1.0 sends objects
//! `{"topic", "event", "payload", "ref"}`. The heartbeat is event
//! `heartbeat` on topic `phoenix`, answered by a `phx_reply` on that topic.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::{Handshake, Kind, Profile};
use crate::frame::Opcode;

/// Phoenix channels.
#[derive(Debug)]
pub struct Phoenix;

/// A serializer 2.0 message: only topic and event are kept.
#[derive(Deserialize)]
struct V2<'a>(
    IgnoredAny,
    IgnoredAny,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    IgnoredAny,
);

/// A serializer 1.0 message.
#[derive(Deserialize)]
struct V1<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
}

impl Profile for Phoenix {
    fn name(&self) -> &'static str {
        "phoenix"
    }

    fn claims_handshake(&self, handshake: &Handshake<'_>) -> bool {
        let (path, query) = handshake
            .path_and_query
            .split_once('?')
            .unwrap_or((handshake.path_and_query, ""));
        path.ends_with("/websocket") && query.split('&').any(|pair| pair.starts_with("vsn="))
    }

    fn classify(&self, opcode: Opcode, payload: &[u8], _fin: bool) -> Kind {
        if opcode == Opcode::Binary {
            return Kind::Data;
        }
        let (topic, event) = match payload.first() {
            Some(b'[') => match serde_json::from_slice::<V2<'_>>(payload) {
                Ok(V2(_, _, topic, event, _)) => (topic, event),
                Err(_) => return Kind::Data,
            },
            Some(b'{') => match serde_json::from_slice::<V1<'_>>(payload) {
                Ok(m) => (m.topic, m.event),
                Err(_) => return Kind::Data,
            },
            _ => return Kind::Data,
        };
        match (topic.as_ref(), event.as_ref()) {
            ("phoenix", "heartbeat" | "phx_reply") => Kind::Heartbeat,
            (_, "phx_join") => Kind::Handshake,
            (_, "phx_leave" | "phx_close") => Kind::Close,
            _ => Kind::Data,
        }
    }

    /// phoenix.js sends a heartbeat on the `phoenix` topic every 30 s
    /// (serializer 2.0 array form).
    fn client_heartbeat(&self) -> Option<(std::time::Duration, &'static str)> {
        Some((
            std::time::Duration::from_secs(30),
            r#"[null,"hb","phoenix","heartbeat",{}]"#,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Kind {
        Phoenix.classify(Opcode::Text, text.as_bytes(), true)
    }

    #[test]
    fn serializer_2_arrays() {
        // As phoenix.js 1.7 sends them with serializer 2.0.0.
        assert_eq!(
            kind(r#"[null,"3","phoenix","heartbeat",{}]"#),
            Kind::Heartbeat
        );
        assert_eq!(
            kind(r#"[null,"3","phoenix","phx_reply",{"status":"ok","response":{}}]"#),
            Kind::Heartbeat
        );
        assert_eq!(
            kind(r#"["1","1","room:lobby","phx_join",{}]"#),
            Kind::Handshake
        );
        assert_eq!(
            kind(r#"["1","1","room:lobby","phx_reply",{"status":"ok","response":{}}]"#),
            Kind::Data
        );
        assert_eq!(
            kind(r#"["1","5","room:lobby","new_msg",{"body":"hi"}]"#),
            Kind::Data
        );
        assert_eq!(
            kind(r#"["1","6","room:lobby","phx_leave",{}]"#),
            Kind::Close
        );
        assert_eq!(
            kind(r#"["1",null,"room:lobby","phx_close",{}]"#),
            Kind::Close
        );
    }

    #[test]
    fn serializer_1_objects() {
        assert_eq!(
            kind(r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}"#),
            Kind::Heartbeat
        );
        assert_eq!(
            kind(r#"{"topic":"room:1","event":"phx_join","payload":{},"ref":"2","join_ref":"2"}"#),
            Kind::Handshake
        );
        assert_eq!(
            kind(r#"{"topic":"room:1","event":"shout","payload":{},"ref":null}"#),
            Kind::Data
        );
        assert_eq!(kind("garbage"), Kind::Data);
    }

    #[test]
    fn claims_websocket_path_with_vsn() {
        let hs = |p| Handshake {
            path_and_query: p,
            subprotocol: None,
        };
        assert!(Phoenix.claims_handshake(&hs("/socket/websocket?vsn=2.0.0")));
        assert!(Phoenix.claims_handshake(&hs("/live/websocket?_csrf=x&vsn=2.0.0")));
        assert!(!Phoenix.claims_handshake(&hs("/socket/websocket")));
        assert!(!Phoenix.claims_handshake(&hs("/socket/longpoll?vsn=2.0.0")));
    }
}
