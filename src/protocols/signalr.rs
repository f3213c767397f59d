//! `signalr`: ASP.NET Core SignalR's JSON hub protocol. Records are JSON
//! objects ending in the record separator 0x1E, several per frame; the
//! handshake request `{"protocol":"json","version":1}` and its `{}` answer
//! have no `type`; type 6 is a ping, type 7 a close.

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::{Handshake, Kind, Profile};
use crate::frame::Opcode;

/// The record separator ending every record.
const RS: u8 = 0x1e;

/// SignalR (JSON hub protocol).
#[derive(Debug)]
pub struct SignalR;

/// The fields that decide a record's kind.
#[derive(Deserialize)]
struct Record {
    #[serde(rename = "type")]
    kind: Option<u64>,
    protocol: Option<IgnoredAny>,
}

impl Profile for SignalR {
    fn name(&self) -> &'static str {
        "signalr"
    }

    fn claims_handshake(&self, _handshake: &Handshake<'_>) -> bool {
        false
    }

    fn claims_first_message(&self, payload: &[u8]) -> bool {
        let Some(record) = payload.strip_suffix(&[RS]) else {
            return false;
        };
        /// The handshake request: both fields must be there.
        #[derive(Deserialize)]
        struct Request {
            #[serde(rename = "protocol")]
            _protocol: IgnoredAny,
            #[serde(rename = "version")]
            _version: IgnoredAny,
        }
        serde_json::from_slice::<Request>(record).is_ok()
    }

    fn classify(&self, opcode: Opcode, payload: &[u8], _fin: bool) -> Kind {
        if opcode == Opcode::Binary {
            return Kind::Data;
        }
        let mut kinds = payload
            .split(|b| *b == RS)
            .filter(|r| !r.is_empty())
            .map(|record| match serde_json::from_slice::<Record>(record) {
                Ok(Record { kind: Some(6), .. }) => Kind::Heartbeat,
                Ok(Record { kind: Some(7), .. }) => Kind::Close,
                Ok(Record {
                    kind: None,
                    protocol: Some(_),
                    ..
                }) => Kind::Handshake,
                // the handshake answer: `{}` or `{"error":…}`
                Ok(Record {
                    kind: None,
                    protocol: None,
                    ..
                }) => Kind::Handshake,
                _ => Kind::Data,
            });
        let Some(first) = kinds.next() else {
            return Kind::Data;
        };
        // A frame is a heartbeat only when every record in it is one.
        if kinds.all(|k| k == first) {
            first
        } else {
            Kind::Data
        }
    }

    /// A SignalR client pings the server every 15 s (the server's
    /// keep-alive timeout is 30 s); it does not answer the server's pings.
    fn client_heartbeat(&self) -> Option<(std::time::Duration, &'static str)> {
        Some((std::time::Duration::from_secs(15), "{\"type\":6}\u{1e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Kind {
        SignalR.classify(Opcode::Text, text.as_bytes(), true)
    }

    #[test]
    fn hub_protocol_records() {
        // From the SignalR HubProtocol.md (JSON encoding).
        assert_eq!(
            kind("{\"protocol\":\"json\",\"version\":1}\x1e"),
            Kind::Handshake
        );
        assert_eq!(kind("{}\x1e"), Kind::Handshake);
        assert_eq!(kind("{\"type\":6}\x1e"), Kind::Heartbeat);
        assert_eq!(kind("{\"type\":6}\x1e{\"type\":6}\x1e"), Kind::Heartbeat);
        assert_eq!(
            kind("{\"type\":7,\"error\":\"Connection closed with an error.\",\"allowReconnect\":true}\x1e"),
            Kind::Close
        );
        assert_eq!(
            kind("{\"type\":1,\"invocationId\":\"123\",\"target\":\"Send\",\"arguments\":[42,\"Test Message\"]}\x1e"),
            Kind::Data
        );
        assert_eq!(
            kind("{\"type\":3,\"invocationId\":\"123\",\"result\":42}\x1e"),
            Kind::Data
        );
        assert_eq!(
            kind("{\"type\":6}\x1e{\"type\":1,\"target\":\"x\",\"arguments\":[]}\x1e"),
            Kind::Data
        );
        assert_eq!(SignalR.classify(Opcode::Binary, b"\x01", true), Kind::Data);
    }

    #[test]
    fn claims_only_the_handshake_request() {
        assert!(SignalR.claims_first_message(b"{\"protocol\":\"json\",\"version\":1}\x1e"));
        assert!(!SignalR.claims_first_message(b"{\"protocol\":\"json\",\"version\":1}"));
        assert!(!SignalR.claims_first_message(b"{\"type\":6}\x1e"));
    }
}
