//! `reject_handshake`: the upgrade is answered with `status` and `body`
//! instead of being forwarded, with `probability`.

use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::RngExt;

use super::api::{HandshakeAction, InstanceCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};

#[derive(Debug)]
struct RejectHandshake {
    status: u16,
    body: String,
    probability: f64,
}

/// Parses `status` (200..=599 but not 101, default 503), `body` and `probability` (default 1).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let status = attrs.u64_or("status", 200..=599, 503)? as u16;
    let body = attrs.string_or("body", "wsfault: handshake rejected\n")?;
    let probability = attrs.probability_or("probability", 1.0)?;
    Ok(Arc::new(RejectHandshake {
        status,
        body,
        probability,
    }))
}

struct Inert;
impl ToxicState for Inert {}

impl ToxicDef for RejectHandshake {
    fn acts_on_messages(&self) -> bool {
        false
    }
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(Inert)
    }
    fn on_handshake(&self, rng: &mut SmallRng) -> HandshakeAction {
        let draw: f64 = rng.random();
        if draw < self.probability {
            HandshakeAction::Reject {
                status: self.status,
                body: self.body.clone(),
            }
        } else {
            HandshakeAction::Continue
        }
    }
    fn handshake_only(&self) -> bool {
        true
    }
    fn is_inert(&self) -> bool {
        self.probability <= 0.0
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::toxics::api::HandshakeAction;
    use crate::toxics::testkit::{at, def, parse_error, rng, text, Kit};

    #[test]
    fn answers_status_and_body_instead_of_forwarding() {
        let d = def(
            "reject_handshake",
            json!({"status": 429, "body": "slow down"}),
        );
        assert_eq!(
            d.on_handshake(&mut rng(1)),
            HandshakeAction::Reject {
                status: 429,
                body: "slow down".into()
            }
        );
        assert_eq!(
            def("reject_handshake", json!({})).on_handshake(&mut rng(1)),
            HandshakeAction::Reject {
                status: 503,
                body: "wsfault: handshake rejected\n".into()
            }
        );
        assert!(d.handshake_only());
    }

    #[test]
    fn probability_half_rejects_exactly_these_seeds() {
        let d = def("reject_handshake", json!({"probability": 0.5}));
        let rejected: Vec<u64> = (0..12)
            .filter(|seed| d.on_handshake(&mut rng(*seed)) != HandshakeAction::Continue)
            .collect();
        assert_eq!(rejected, [0, 3, 5, 7, 8, 10]);
    }

    #[test]
    fn on_the_relay_it_does_nothing() {
        let mut kit = Kit::new("reject_handshake", json!({}), 1);
        let out = kit.frame(0, text("a"));
        assert_eq!(kit.log(&out), [at(0, "text:a")]);
        assert!(def("reject_handshake", json!({"probability": 0})).is_inert());
    }

    #[test]
    fn status_101_is_not_a_rejection() {
        assert_eq!(
            parse_error("reject_handshake", json!({"status": 101})),
            "reject_handshake attribute status=101 is invalid: valid range is integers 200..=599"
        );
    }
}
