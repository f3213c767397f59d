//! `drop_control`: pings and/or pongs are swallowed with `probability`, to
//! test heartbeat timeouts.

use std::sync::Arc;

use rand::RngExt;

use super::api::{InstanceCx, Item, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use crate::frame::{Frame, Opcode};

#[derive(Debug)]
struct DropControl {
    ping: bool,
    pong: bool,
    probability: f64,
}

/// Parses `opcodes` (list of `ping`, `pong`; default both) and `probability` (default 1).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let opcodes = attrs.choices_or("opcodes", &["ping", "pong"], &["ping", "pong"])?;
    let probability = attrs.probability_or("probability", 1.0)?;
    Ok(Arc::new(DropControl {
        ping: opcodes.iter().any(|o| o == "ping"),
        pong: opcodes.iter().any(|o| o == "pong"),
        probability,
    }))
}

impl ToxicDef for DropControl {
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            ping: self.ping,
            pong: self.pong,
            probability: self.probability,
        })
    }
    fn is_inert(&self) -> bool {
        self.probability <= 0.0 || !(self.ping || self.pong)
    }
}

struct State {
    ping: bool,
    pong: bool,
    probability: f64,
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        let targeted = match frame.header.opcode {
            Opcode::Ping => self.ping,
            Opcode::Pong => self.pong,
            _ => false,
        };
        if targeted {
            let draw: f64 = cx.rng.random();
            if draw < self.probability {
                cx.act();
                return;
            }
        }
        cx.emit(Item::Frame(frame));
    }
}
