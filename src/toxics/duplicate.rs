//! `duplicate`: a data message is delivered twice, with `probability`.

use std::sync::Arc;

use super::api::{InstanceCx, Item, MessageTracker, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use crate::frame::Frame;

#[derive(Debug)]
struct Duplicate {
    probability: f64,
}

/// Parses `probability` (0..=1, default 1).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let probability = attrs.probability_or("probability", 1.0)?;
    Ok(Arc::new(Duplicate { probability }))
}

impl ToxicDef for Duplicate {
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            probability: self.probability,
            tracker: MessageTracker::default(),
            copying: false,
            copy: Vec::new(),
        })
    }
    fn changes_payload(&self) -> bool {
        true
    }
    fn is_inert(&self) -> bool {
        self.probability <= 0.0
    }
}

struct State {
    probability: f64,
    tracker: MessageTracker,
    copying: bool,
    copy: Vec<Frame>,
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        let Some(frame) = cx.data_frame(frame) else {
            return;
        };
        let (draw, ends) = self.tracker.draw(&frame, cx.rng);
        if let Some(draw) = draw {
            self.copying = draw < self.probability;
            self.copy.clear();
        }
        if self.copying {
            self.copy.push(frame.clone());
        }
        cx.emit(Item::Frame(frame));
        if ends && self.copying {
            cx.act();
            for f in self.copy.drain(..) {
                cx.emit(Item::Frame(f));
            }
            self.copying = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::frame::Opcode;
    use crate::toxics::testkit::{at, def, frame, parse_error, ping, text, Kit};

    #[test]
    fn a_message_is_delivered_twice_right_after_itself() {
        let mut kit = Kit::new("duplicate", json!({}), 1);
        let out = kit.frame(5, text("a"));
        assert_eq!(kit.log(&out), [at(5, "text:a"), at(5, "text:a")]);
        assert_eq!(kit.actions, 1);
    }

    #[test]
    fn a_fragmented_message_is_repeated_whole_after_its_last_fragment() {
        let mut kit = Kit::new("duplicate", json!({}), 1);
        let out = kit.frame(0, frame(false, Opcode::Text, "a"));
        assert_eq!(kit.log(&out), [at(0, "text+:a")]);
        let out = kit.frame(1, ping("p"));
        assert_eq!(kit.log(&out), [at(1, "ping:p")], "pings pass once");
        let out = kit.frame(2, frame(true, Opcode::Continuation, "b"));
        assert_eq!(
            kit.log(&out),
            [at(2, "cont:b"), at(2, "text+:a"), at(2, "cont:b")]
        );
        assert_eq!(kit.actions, 1);
    }

    #[test]
    fn probability_half_seed_2_duplicates_exactly_these() {
        let mut kit = Kit::new("duplicate", json!({"probability": 0.5}), 2);
        let mut doubled = Vec::new();
        for i in 0..20 {
            assert_eq!(kit.frame(0, ping("p")).len(), 1, "pings draw nothing");
            match kit.frame(0, text(&i.to_string())).len() {
                1 => {}
                2 => doubled.push(i),
                n => panic!("message {i} delivered {n} times"),
            }
        }
        assert_eq!(doubled, [3, 4, 6, 8, 15, 17, 18, 19]);
        assert_eq!(kit.actions, doubled.len() as u64);
    }

    #[test]
    fn probability_zero_is_inert_and_payload_changing() {
        assert!(def("duplicate", json!({"probability": 0})).is_inert());
        assert!(def("duplicate", json!({})).changes_payload());
        assert_eq!(
            parse_error("duplicate", json!({"probability": -0.1})),
            "duplicate attribute probability=-0.1 is invalid: valid range is 0..=1"
        );
    }
}
