//! `message_loss`: each data message is dropped with `probability`; TCP
//! stays up, the receiver sees a silent gap.

use std::sync::Arc;

use rand::RngExt;

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
        if frame.header.opcode.is_control() {
            cx.emit(Item::Frame(frame));
            return;
        }
        let (starts, _) = self.tracker.observe(&frame);
        if starts {
            // One draw per message, so the k-th draw decides message k.
            let draw: f64 = cx.rng.random();
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
