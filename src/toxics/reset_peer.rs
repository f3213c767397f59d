//! `reset_peer`: after `timeout` ms both TCP connections are reset (RST).

use std::sync::Arc;
use std::time::Instant;

use super::api::{ms, DeadlineCx, EndAction, InstanceCx, Item, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use crate::vocab::CutMode;

#[derive(Debug)]
struct ResetPeer {
    timeout: u64,
}

/// Parses `timeout` (ms, default 0 = at the first chance).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let timeout = attrs.u64_or("timeout", 0..=86_400_000, 0)?;
    Ok(Arc::new(ResetPeer { timeout }))
}

impl ToxicDef for ResetPeer {
    fn instantiate(&self, cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            at: cx.armed_at + ms(self.timeout),
            fired: false,
        })
    }
}

struct State {
    at: Instant,
    fired: bool,
}

impl ToxicState for State {
    fn next_deadline(&self, _cx: &DeadlineCx<'_>) -> Option<Instant> {
        (!self.fired).then_some(self.at)
    }

    fn on_deadline(&mut self, cx: &mut ToxicCx<'_>) {
        if self.fired || self.at > cx.now {
            return;
        }
        self.fired = true;
        cx.act();
        cx.emit(Item::End(EndAction::Cut(CutMode::Reset)));
    }
}
