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
        return Err(AttrError::new("every", format!(
            "stall attribute every={every} is invalid: valid range is 0 (once) or {duration}..=86400000 (at least duration)"
        )));
    }
    Ok(Arc::new(Stall { duration, every }))
}

impl ToxicDef for Stall {
    fn acts_on_messages(&self) -> bool {
        false
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::toxics::api::ms;
    use crate::toxics::testkit::{at, parse_error, text, Kit};

    #[test]
    fn once_pauses_reading_for_duration_from_arming() {
        let mut kit = Kit::new("stall", json!({"duration": 100}), 1);
        assert_eq!(kit.paused_until(0), Some(ms(100)));
        assert_eq!(kit.paused_until(99), Some(ms(100)));
        assert_eq!(kit.paused_until(100), None);
        assert_eq!(kit.paused_until(10_000), None, "once");
        assert_eq!(kit.next_deadline(0), None);
        // Frames that were read pass untouched.
        let out = kit.frame(150, text("a"));
        assert_eq!(kit.log(&out), [at(150, "text:a")]);
    }

    #[test]
    fn every_repeats_the_pause_at_each_period() {
        let mut kit = Kit::new("stall", json!({"duration": 100, "every": 300}), 1);
        assert_eq!(kit.paused_until(0), Some(ms(100)));
        assert_eq!(kit.paused_until(150), None);
        assert_eq!(kit.paused_until(300), Some(ms(400)));
        assert_eq!(kit.paused_until(350), Some(ms(400)));
        assert_eq!(kit.paused_until(450), None);
        assert_eq!(kit.paused_until(610), Some(ms(700)));
        // Wakes the link when the next pause starts.
        assert_eq!(kit.next_deadline(0), Some(ms(300)));
        assert_eq!(kit.next_deadline(450), Some(ms(600)));
        assert_eq!(kit.next_deadline(600), Some(ms(900)));
    }

    #[test]
    fn every_shorter_than_duration_is_rejected() {
        assert_eq!(
            parse_error("stall", json!({"duration": 100, "every": 50})),
            "stall attribute every=50 is invalid: valid range is 0 (once) or 100..=86400000 (at least duration)"
        );
    }
}
