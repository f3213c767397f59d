//! `duplicate`: a data message is delivered twice, with `probability`.

use std::sync::Arc;

use rand::RngExt;

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
        if frame.header.opcode.is_control() {
            cx.emit(Item::Frame(frame));
            return;
        }
        let (starts, ends) = self.tracker.observe(&frame);
        if starts {
            let draw: f64 = cx.rng.random();
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
