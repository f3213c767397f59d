//! `bandwidth`: the stream's payload rate is capped at `rate` KB/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::api::{InstanceCx, Item, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use crate::frame::Frame;

#[derive(Debug)]
struct Bandwidth {
    rate_kb: u64,
}

/// Parses `rate` (KB/s, 1000 bytes, required, at least 1).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let rate_kb = attrs.u64("rate", 1..=100_000_000)?;
    Ok(Arc::new(Bandwidth { rate_kb }))
}

impl ToxicDef for Bandwidth {
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            bytes_per_sec: self.rate_kb as f64 * 1000.0,
            next_free: None,
        })
    }
}

struct State {
    bytes_per_sec: f64,
    next_free: Option<Instant>,
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        let start = self.next_free.map_or(cx.ready_at, |t| t.max(cx.ready_at));
        let cost = Duration::from_secs_f64(frame.payload.len() as f64 / self.bytes_per_sec);
        let release = start + cost;
        self.next_free = Some(release);
        cx.act();
        cx.emit_at(Item::Frame(frame), release);
    }
}
