//! `handshake_delay`: the upgrade waits `latency` ms before going upstream.

use std::sync::Arc;

use rand::rngs::SmallRng;

use super::api::{ms, HandshakeAction, InstanceCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};

#[derive(Debug)]
struct HandshakeDelay {
    latency: u64,
}

/// Parses `latency` (ms, required).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let latency = attrs.u64("latency", 0..=3_600_000)?;
    Ok(Arc::new(HandshakeDelay { latency }))
}

struct Inert;
impl ToxicState for Inert {}

impl ToxicDef for HandshakeDelay {
    fn acts_on_messages(&self) -> bool {
        false
    }
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(Inert)
    }
    fn on_handshake(&self, _rng: &mut SmallRng) -> HandshakeAction {
        HandshakeAction::Delay(ms(self.latency))
    }
    fn handshake_only(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::toxics::api::{ms, HandshakeAction};
    use crate::toxics::testkit::{def, parse_error, rng};

    #[test]
    fn the_upgrade_waits_exactly_latency() {
        let d = def("handshake_delay", json!({"latency": 250}));
        for seed in 0..4 {
            assert_eq!(
                d.on_handshake(&mut rng(seed)),
                HandshakeAction::Delay(ms(250))
            );
        }
        assert!(d.handshake_only());
        assert!(!d.is_inert());
    }

    #[test]
    fn latency_is_required() {
        assert_eq!(
            parse_error("handshake_delay", json!({})),
            "handshake_delay attribute latency is missing: valid range is integers 0..=3600000"
        );
    }
}
