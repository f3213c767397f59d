//! `stomp`: STOMP 1.0–1.2 over WebSocket (`v10.stomp`, `v11.stomp`,
//! `v12.stomp`). A frame is a command line, headers, a blank line and a
//! body ending in NUL; a heart-beat is a bare end of line.

use super::{first_line, Handshake, Kind, Profile};
use crate::frame::Opcode;

/// STOMP.
#[derive(Debug)]
pub struct Stomp;

impl Profile for Stomp {
    fn name(&self) -> &'static str {
        "stomp"
    }

    fn claims_handshake(&self, handshake: &Handshake<'_>) -> bool {
        matches!(
            handshake.subprotocol,
            Some("v10.stomp" | "v11.stomp" | "v12.stomp")
        )
    }

    fn classify(&self, _opcode: Opcode, payload: &[u8], _fin: bool) -> Kind {
        if !payload.is_empty() && payload.iter().all(|b| matches!(b, b'\n' | b'\r')) {
            return Kind::Heartbeat;
        }
        match first_line(payload) {
            b"CONNECT" | b"STOMP" | b"CONNECTED" => Kind::Handshake,
            b"DISCONNECT" | b"ERROR" => Kind::Close,
            _ => Kind::Data,
        }
    }

    /// A server heart-beat (an EOL) is answered with one, which keeps the
    /// client's side of a negotiated `heart-beat` alive too.
    fn answer_heartbeat(&self, server_message: &str) -> Option<&'static str> {
        (!server_message.is_empty() && server_message.bytes().all(|b| matches!(b, b'\n' | b'\r')))
            .then_some("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_answers_eol_heartbeats() {
        assert_eq!(Stomp.answer_heartbeat("\n"), Some("\n"));
        assert_eq!(Stomp.answer_heartbeat("\r\n"), Some("\n"));
        assert_eq!(Stomp.answer_heartbeat(""), None);
        assert_eq!(Stomp.answer_heartbeat("MESSAGE\n\n\0"), None);
    }

    fn kind(frame: &[u8]) -> Kind {
        Stomp.classify(Opcode::Text, frame, true)
    }

    #[test]
    fn stomp_1_2_frames() {
        // Frames from the STOMP 1.2 specification.
        assert_eq!(
            kind(b"CONNECT\naccept-version:1.2\nhost:stomp.github.org\n\n\x00"),
            Kind::Handshake
        );
        assert_eq!(
            kind(b"STOMP\r\naccept-version:1.2\r\nhost:stomp.github.org\r\n\r\n\x00"),
            Kind::Handshake
        );
        assert_eq!(
            kind(b"CONNECTED\nversion:1.2\nheart-beat:10000,10000\n\n\x00"),
            Kind::Handshake
        );
        assert_eq!(kind(b"\n"), Kind::Heartbeat);
        assert_eq!(kind(b"\r\n"), Kind::Heartbeat);
        assert_eq!(
            kind(b"SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\n\x00"),
            Kind::Data
        );
        assert_eq!(
            kind(b"MESSAGE\nsubscription:0\nmessage-id:007\ndestination:/queue/a\n\nhello\x00"),
            Kind::Data
        );
        assert_eq!(
            kind(b"SUBSCRIBE\nid:0\ndestination:/queue/foo\n\n\x00"),
            Kind::Data
        );
        assert_eq!(kind(b"DISCONNECT\nreceipt:77\n\n\x00"), Kind::Close);
        assert_eq!(
            kind(b"ERROR\nmessage:malformed frame received\n\n\x00"),
            Kind::Close
        );
        assert_eq!(kind(b""), Kind::Data);
    }
}
