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
    let body = attrs
        .opt_string("body")?
        .unwrap_or_else(|| "wsfault: handshake rejected\n".to_string());
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
