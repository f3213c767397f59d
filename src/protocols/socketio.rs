//! `socketio`: Socket.IO 5 over Engine.IO 4 (the `/socket.io/` path).
//!
//! An Engine.IO packet starts with its type digit: `0` open, `1` close,
//! `2` ping, `3` pong, `4` message, `5` upgrade, `6` noop. A message (`4`)
//! carries a Socket.IO packet whose type digit follows: `0` connect, `1`
//! disconnect, `2` event, `3` ack, `4` connect error, `5` binary event, `6`
//! binary ack. Binary frames are attachments of binary events: data.

use super::{Handshake, Kind, Profile};
use crate::frame::Opcode;

/// Socket.IO / Engine.IO.
#[derive(Debug)]
pub struct SocketIo;

impl Profile for SocketIo {
    fn name(&self) -> &'static str {
        "socketio"
    }

    fn claims_handshake(&self, handshake: &Handshake<'_>) -> bool {
        handshake.path_and_query.contains("/socket.io/")
    }

    fn classify(&self, opcode: Opcode, payload: &[u8], _fin: bool) -> Kind {
        if opcode == Opcode::Binary {
            return Kind::Data;
        }
        match payload.first() {
            // `2`, `3`, `2probe`, `3probe`
            Some(b'2' | b'3') => Kind::Heartbeat,
            // open; upgrade and noop belong to the transport upgrade
            Some(b'0' | b'5' | b'6') => Kind::Handshake,
            Some(b'1') => Kind::Close,
            Some(b'4') => match payload.get(1) {
                Some(b'0' | b'4') => Kind::Handshake,
                Some(b'1') => Kind::Close,
                _ => Kind::Data,
            },
            _ => Kind::Data,
        }
    }

    /// Engine.IO 4's open packet `0{..."pingTimeout":20000...}`.
    fn heartbeat_timeout(&self, server_message: &str) -> Option<std::time::Duration> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Open {
            ping_timeout: u64,
        }
        let open: Open = serde_json::from_str(server_message.strip_prefix('0')?).ok()?;
        Some(std::time::Duration::from_millis(open.ping_timeout))
    }

    /// Engine.IO 4: the server pings (`2`), the client pongs (`3`); the
    /// upgrade probe `2probe` is answered `3probe`.
    fn answer_heartbeat(&self, server_message: &str) -> Option<&'static str> {
        match server_message {
            "2" => Some("3"),
            "2probe" => Some("3probe"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_answers_pings_only() {
        assert_eq!(SocketIo.answer_heartbeat("2"), Some("3"));
        assert_eq!(SocketIo.answer_heartbeat("2probe"), Some("3probe"));
        assert_eq!(SocketIo.answer_heartbeat("3"), None);
        assert_eq!(SocketIo.answer_heartbeat("42[\"2\"]"), None);
        assert_eq!(SocketIo.client_heartbeat(), None);
        assert_eq!(
            SocketIo.heartbeat_timeout(
                r#"0{"sid":"a","upgrades":[],"pingTimeout":20000,"pingInterval":25000,"maxPayload":1000000}"#
            ),
            Some(std::time::Duration::from_secs(20))
        );
        assert_eq!(SocketIo.heartbeat_timeout("40"), None);
        assert_eq!(SocketIo.heartbeat_timeout("0{}"), None);
    }

    fn kind(text: &str) -> Kind {
        SocketIo.classify(Opcode::Text, text.as_bytes(), true)
    }

    #[test]
    fn engine_io_and_socket_io_packets() {
        // From the Engine.IO 4 and Socket.IO 5 protocol documents.
        assert_eq!(
            kind(
                r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
            ),
            Kind::Handshake
        );
        assert_eq!(kind("2"), Kind::Heartbeat);
        assert_eq!(kind("3"), Kind::Heartbeat);
        assert_eq!(kind("2probe"), Kind::Heartbeat);
        assert_eq!(kind("3probe"), Kind::Heartbeat);
        assert_eq!(kind("40"), Kind::Handshake);
        assert_eq!(kind(r#"40{"sid":"wZX3oN0bSVIhsaknAAAI"}"#), Kind::Handshake);
        assert_eq!(kind(r#"44{"message":"Not authorized"}"#), Kind::Handshake);
        assert_eq!(kind("41"), Kind::Close);
        assert_eq!(kind("41/admin,"), Kind::Close);
        assert_eq!(kind("1"), Kind::Close);
        assert_eq!(kind(r#"42["chat",{"id":"0-1"}]"#), Kind::Data);
        assert_eq!(kind(r#"4212["hello"]"#), Kind::Data);
        assert_eq!(kind(r#"43/admin,13["bar"]"#), Kind::Data);
        assert_eq!(
            kind(r#"451-["hello",{"_placeholder":true,"num":0}]"#),
            Kind::Data
        );
        assert_eq!(kind(r#"461-15[{"_placeholder":true,"num":0}]"#), Kind::Data);
        assert_eq!(kind("5"), Kind::Handshake);
        assert_eq!(
            SocketIo.classify(Opcode::Binary, b"\x01\x02", true),
            Kind::Data
        );
    }
}
