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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::frame::{Frame, Opcode};
    use crate::toxics::testkit::{at, def, frame, parse_error, ping, text, Kit};

    #[test]
    fn by_default_pings_and_pongs_are_swallowed_and_nothing_else() {
        let mut kit = Kit::new("drop_control", json!({}), 1);
        assert!(kit.frame(0, ping("a")).is_empty());
        assert!(kit.frame(1, frame(true, Opcode::Pong, "a")).is_empty());
        let out = kit.frame(2, text("t"));
        assert_eq!(kit.log(&out), [at(2, "text:t")]);
        let out = kit.frame(3, Frame::close(1000, "", None));
        assert_eq!(kit.log(&out), [at(3, "close-frame:1000")]);
        assert_eq!(kit.actions, 2);
    }

    #[test]
    fn opcodes_picks_pings_or_pongs() {
        let mut kit = Kit::new("drop_control", json!({"opcodes": ["ping"]}), 1);
        assert!(kit.frame(0, ping("a")).is_empty());
        let out = kit.frame(1, frame(true, Opcode::Pong, "b"));
        assert_eq!(kit.log(&out), [at(1, "pong:b")]);
        // A single name is accepted as well as a list.
        let mut kit = Kit::new("drop_control", json!({"opcodes": "pong"}), 1);
        assert!(kit.frame(0, frame(true, Opcode::Pong, "b")).is_empty());
        assert_eq!(kit.frame(1, ping("a")).len(), 1);
    }

    #[test]
    fn probability_half_seed_3_swallows_exactly_these_pings() {
        let mut kit = Kit::new("drop_control", json!({"probability": 0.5}), 3);
        let mut swallowed = Vec::new();
        for i in 0..16 {
            // Data in between draws nothing.
            assert_eq!(kit.frame(0, text("t")).len(), 1);
            if kit.frame(0, ping(&i.to_string())).is_empty() {
                swallowed.push(i);
            }
        }
        assert_eq!(swallowed, [0, 5, 6, 9, 11, 12, 13, 14, 15]);
        assert_eq!(kit.actions, swallowed.len() as u64);
    }

    #[test]
    fn nothing_to_drop_is_inert() {
        assert!(def("drop_control", json!({"probability": 0})).is_inert());
        assert!(def("drop_control", json!({"opcodes": []})).is_inert());
        assert!(!def("drop_control", json!({"opcodes": ["pong"]})).is_inert());
    }

    #[test]
    fn opcodes_outside_the_choices_are_rejected() {
        assert_eq!(
            parse_error("drop_control", json!({"opcodes": ["ping", "pang"]})),
            "drop_control attribute opcodes=\"pang\" is invalid: valid choices are lists of ping, pong"
        );
    }
}
