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
    fn acts_on_messages(&self) -> bool {
        false
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::toxics::api::ms;
    use crate::toxics::testkit::{at, parse_error, text, Kit};

    #[test]
    fn swallows_frames_then_cuts_with_fin_exactly_at_the_timeout() {
        let mut kit = Kit::new("timeout", json!({"timeout": 1000}), 1);
        assert!(kit.frame(0, text("a")).is_empty(), "blackholed");
        assert!(kit.frame(500, text("b")).is_empty(), "blackholed");
        assert_eq!(kit.next_deadline(600), Some(ms(1000)));
        assert!(kit.deadline(999).is_empty(), "not due yet");
        let out = kit.deadline(1000);
        assert_eq!(kit.log(&out), [at(1000, "cut:Fin")]);
        assert_eq!(kit.next_deadline(1000), None, "fires once");
        assert!(kit.deadline(5000).is_empty());
        assert_eq!(kit.actions, 3, "two frames swallowed, one cut");
    }

    #[test]
    fn timeout_zero_blackholes_forever() {
        let mut kit = Kit::new("timeout", json!({"timeout": 0}), 1);
        assert!(kit.frame(0, text("a")).is_empty());
        assert_eq!(kit.next_deadline(0), None);
        assert!(kit.deadline(86_400_000).is_empty());
    }

    #[test]
    fn timeout_above_a_day_is_rejected() {
        assert_eq!(
            parse_error("timeout", json!({"timeout": 86_400_001})),
            "timeout attribute timeout=86400001 is invalid: valid range is integers 0..=86400000"
        );
    }
}
