//! `message_loss`: each data message is dropped with `probability`; TCP
//! stays up, the receiver sees a silent gap.

use std::sync::Arc;

use super::api::{InstanceCx, Item, MessageTracker, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use crate::frame::Frame;

#[derive(Debug)]
struct MessageLoss {
    probability: f64,
}

/// Parses `probability` (0..=1, required).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let probability = attrs.probability("probability")?;
    Ok(Arc::new(MessageLoss { probability }))
}

impl ToxicDef for MessageLoss {
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            probability: self.probability,
            tracker: MessageTracker::default(),
            dropping: false,
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
    dropping: bool,
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        let Some(frame) = cx.data_frame(frame) else {
            return;
        };
        // One draw per message, so the k-th draw decides message k.
        if let (Some(draw), _) = self.tracker.draw(&frame, cx.rng) {
            self.dropping = draw < self.probability;
            if self.dropping {
                cx.act();
            }
        }
        if !self.dropping {
            cx.emit(Item::Frame(frame));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::frame::Opcode;
    use crate::toxics::testkit::{def, frame, frames, parse_error, ping, text, Kit};

    /// Indices of the `n` single-frame messages that `kit` drops.
    fn dropped(kit: &mut Kit, n: usize) -> Vec<usize> {
        (0..n)
            .filter(|i| kit.frame(0, text(&i.to_string())).is_empty())
            .collect()
    }

    #[test]
    fn p_0_3_seed_1_drops_exactly_these_of_30() {
        let mut kit = Kit::new("message_loss", json!({"probability": 0.3}), 1);
        let got = dropped(&mut kit, 30);
        assert_eq!(got, [2, 4, 8, 9, 12, 14, 15, 20, 22, 24, 26]);
        assert_eq!(
            kit.actions,
            got.len() as u64,
            "one action per dropped message"
        );
        let mut other = Kit::new("message_loss", json!({"probability": 0.3}), 2);
        assert_ne!(dropped(&mut other, 30), got, "another seed, other drops");
    }

    #[test]
    fn control_frames_pass_and_draw_nothing() {
        let mut plain = Kit::new("message_loss", json!({"probability": 0.3}), 1);
        let expected = dropped(&mut plain, 30);
        let mut kit = Kit::new("message_loss", json!({"probability": 0.3}), 1);
        let mut got = Vec::new();
        for i in 0..30 {
            assert_eq!(frames(&kit.frame(0, ping("p"))).len(), 1, "ping passes");
            if kit.frame(0, text(&i.to_string())).is_empty() {
                got.push(i);
            }
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn a_fragmented_message_is_dropped_whole_on_one_draw() {
        let mut plain = Kit::new("message_loss", json!({"probability": 0.3}), 1);
        let expected = dropped(&mut plain, 20);
        let mut kit = Kit::new("message_loss", json!({"probability": 0.3}), 1);
        let mut got = Vec::new();
        for i in 0..20 {
            let parts = [
                kit.frame(0, frame(false, Opcode::Text, "a")).len(),
                kit.frame(0, ping("in between")).len(),
                kit.frame(0, frame(false, Opcode::Continuation, "b")).len(),
                kit.frame(0, frame(true, Opcode::Continuation, "c")).len(),
            ];
            match parts {
                [0, 1, 0, 0] => got.push(i),
                [1, 1, 1, 1] => {}
                other => panic!("message {i} half dropped: {other:?}"),
            }
        }
        assert_eq!(got, expected, "the k-th draw decides message k");
    }

    #[test]
    fn probability_one_drops_all_and_zero_is_inert() {
        let mut kit = Kit::new("message_loss", json!({"probability": 1.0}), 1);
        assert_eq!(dropped(&mut kit, 10), (0..10).collect::<Vec<_>>());
        assert!(def("message_loss", json!({"probability": 0.0})).is_inert());
        assert!(!def("message_loss", json!({"probability": 0.01})).is_inert());
        assert!(def("message_loss", json!({"probability": 0.5})).changes_payload());
    }

    #[test]
    fn probability_out_of_range_names_the_range() {
        assert_eq!(
            parse_error("message_loss", json!({"probability": 1.5})),
            "message_loss attribute probability=1.5 is invalid: valid range is 0..=1"
        );
        assert_eq!(
            parse_error("message_loss", json!({})),
            "message_loss attribute probability is missing: valid range is 0..=1"
        );
    }
}
