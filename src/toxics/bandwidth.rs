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
    fn acts_on_messages(&self) -> bool {
        false
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::frame::{Frame, Opcode};
    use crate::toxics::api::ms;
    use crate::toxics::testkit::{parse_error, Kit};

    fn payload(n: usize) -> Frame {
        Frame::build(true, 0, Opcode::Binary, &vec![7u8; n], None)
    }

    #[test]
    fn each_frame_waits_for_its_payload_to_drain_at_the_rate() {
        // 1 KB/s = 1000 payload bytes per second.
        let mut kit = Kit::new("bandwidth", json!({"rate": 1}), 1);
        let out = kit.frame(0, payload(500));
        assert_eq!(kit.times(&out), [ms(500)]);
        // Arrives while the first is still draining: queued behind it.
        let out = kit.frame(100, payload(250));
        assert_eq!(kit.times(&out), [ms(750)]);
        // After an idle gap no credit is banked: it costs its own time.
        let out = kit.frame(2_000, payload(200));
        assert_eq!(kit.times(&out), [ms(2_200)]);
        assert_eq!(kit.actions, 3);
    }

    #[test]
    fn the_rate_is_in_units_of_1000_bytes() {
        let mut kit = Kit::new("bandwidth", json!({"rate": 4}), 1);
        let out = kit.frame(10, payload(1_000));
        assert_eq!(kit.times(&out), [ms(260)]);
    }

    #[test]
    fn rate_zero_is_rejected_with_its_range() {
        assert_eq!(
            parse_error("bandwidth", json!({"rate": 0})),
            "bandwidth attribute rate=0 is invalid: valid range is integers 1..=100000000"
        );
        assert_eq!(
            parse_error("bandwidth", json!({})),
            "bandwidth attribute rate is missing: valid range is integers 1..=100000000"
        );
    }
}
