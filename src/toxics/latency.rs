//! `latency`: each frame waits latency ± jitter ms; order within the stream kept.

use std::sync::Arc;

use rand::RngExt;

use super::api::{ms, InstanceCx, Item, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use crate::frame::Frame;

#[derive(Debug)]
struct Latency {
    latency: u64,
    jitter: u64,
}

/// Parses `latency` (ms, required) and `jitter` (ms, default 0).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let latency = attrs.u64("latency", 0..=3_600_000)?;
    let jitter = attrs.u64_or("jitter", 0..=3_600_000, 0)?;
    Ok(Arc::new(Latency { latency, jitter }))
}

impl ToxicDef for Latency {
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            latency: self.latency,
            jitter: self.jitter,
        })
    }
    fn is_inert(&self) -> bool {
        self.latency == 0 && self.jitter == 0
    }
}

struct State {
    latency: u64,
    jitter: u64,
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        let delay = if self.jitter == 0 {
            self.latency
        } else {
            let low = self.latency.saturating_sub(self.jitter);
            cx.rng.random_range(low..=self.latency + self.jitter)
        };
        cx.act();
        let at = cx.ready_at + ms(delay);
        cx.emit_at(Item::Frame(frame), at);
    }
}
