//! `timeout`: nothing passes (TCP stays open); after `timeout` ms (0 = never)
//! both sides are cut abruptly.

use std::sync::Arc;
use std::time::Instant;

use super::api::{ms, DeadlineCx, EndAction, InstanceCx, Item, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use crate::frame::Frame;
use crate::vocab::CutMode;

#[derive(Debug)]
struct Timeout {
    timeout: u64,
}

/// Parses `timeout` (ms, required; 0 = never cut).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let timeout = attrs.u64("timeout", 0..=86_400_000)?;
    Ok(Arc::new(Timeout { timeout }))
}

impl ToxicDef for Timeout {
    fn instantiate(&self, cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            cut_at: (self.timeout > 0).then(|| cx.armed_at + ms(self.timeout)),
            fired: false,
        })
    }
}

struct State {
    cut_at: Option<Instant>,
    fired: bool,
}

impl ToxicState for State {
    fn on_frame(&mut self, _frame: Frame, cx: &mut ToxicCx<'_>) {
        // Swallowed: a blackhole.
        cx.act();
    }

    fn next_deadline(&self, _cx: &DeadlineCx<'_>) -> Option<Instant> {
        if self.fired {
            None
        } else {
            self.cut_at
        }
    }

    fn on_deadline(&mut self, cx: &mut ToxicCx<'_>) {
        if self.fired || self.cut_at.is_none_or(|t| t > cx.now) {
            return;
        }
        self.fired = true;
        cx.act();
        cx.emit(Item::End(EndAction::Cut(CutMode::Fin)));
    }
}
