//! `stall`: the proxy stops reading this stream for `duration` ms (every
//! `every` ms, 0 = once), so the sender's buffers fill; the other stream
//! keeps flowing.

use std::sync::Arc;
use std::time::Instant;

use super::api::{ms, DeadlineCx, InstanceCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};

#[derive(Debug)]
struct Stall {
    duration: u64,
    every: u64,
}

/// Parses `duration` (ms, required) and `every` (ms, default 0 = once;
/// otherwise at least `duration`).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let duration = attrs.u64("duration", 1..=86_400_000)?;
    let every = attrs.u64_or("every", 0..=86_400_000, 0)?;
    if every != 0 && every < duration {
        return Err(AttrError(format!(
            "stall attribute every={every} is invalid: valid range is 0 (once) or {duration}..=86400000 (at least duration)"
        )));
    }
    Ok(Arc::new(Stall { duration, every }))
}

impl ToxicDef for Stall {
    fn instantiate(&self, cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            armed_at: cx.armed_at,
            duration: self.duration,
            every: self.every,
        })
    }
}

struct State {
    armed_at: Instant,
    duration: u64,
    every: u64,
}

impl ToxicState for State {
    /// With `every`, wakes the link when the next pause starts, so that it
    /// stops reading then rather than at the next frame after it.
    fn next_deadline(&self, cx: &DeadlineCx<'_>) -> Option<Instant> {
        if self.every == 0 {
            return None;
        }
        let elapsed = cx.now.saturating_duration_since(self.armed_at).as_millis() as u64;
        Some(self.armed_at + ms((elapsed / self.every + 1) * self.every))
    }

    fn paused_until(&mut self, now: Instant) -> Option<Instant> {
        let elapsed = now.saturating_duration_since(self.armed_at).as_millis() as u64;
        let window_start = if self.every == 0 {
            0
        } else {
            elapsed - elapsed % self.every
        };
        let end = window_start + self.duration;
        (elapsed < end).then(|| self.armed_at + ms(end))
    }
}
