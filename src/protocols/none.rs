//! `none`: plain WebSocket. Every text or binary message is data; only
//! control frames are heartbeats and closes.

use super::{Handshake, Kind, Profile};
use crate::frame::Opcode;

/// Plain WebSocket.
#[derive(Debug)]
pub struct NoProfile;

impl Profile for NoProfile {
    fn name(&self) -> &'static str {
        "none"
    }

    fn claims_handshake(&self, _handshake: &Handshake<'_>) -> bool {
        false
    }

    fn reads_payload(&self) -> bool {
        false
    }

    fn classify(&self, _opcode: Opcode, _payload: &[u8], _fin: bool) -> Kind {
        Kind::Data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_data_message_is_data() {
        assert_eq!(NoProfile.classify(Opcode::Text, b"2", true), Kind::Data);
        assert_eq!(NoProfile.classify(Opcode::Binary, b"\n", true), Kind::Data);
    }
}
