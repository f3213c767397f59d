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
    fn acts_on_messages(&self) -> bool {
        false
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::toxics::api::ms;
    use crate::toxics::testkit::{at, parse_error, text, Kit};

    #[test]
    fn frames_pass_until_the_reset_exactly_at_the_timeout() {
        let mut kit = Kit::new("reset_peer", json!({"timeout": 250}), 1);
        let out = kit.frame(0, text("a"));
        assert_eq!(kit.log(&out), [at(0, "text:a")]);
        assert_eq!(kit.next_deadline(0), Some(ms(250)));
        assert!(kit.deadline(249).is_empty(), "not due yet");
        let out = kit.deadline(250);
        assert_eq!(kit.log(&out), [at(250, "cut:Reset")]);
        assert_eq!(kit.next_deadline(250), None, "fires once");
        assert!(kit.deadline(1000).is_empty());
        assert_eq!(kit.actions, 1);
    }

    #[test]
    fn without_timeout_it_resets_at_the_first_chance() {
        let mut kit = Kit::new("reset_peer", json!({}), 1);
        assert_eq!(kit.next_deadline(0), Some(ms(0)));
        let out = kit.deadline(0);
        assert_eq!(kit.log(&out), [at(0, "cut:Reset")]);
    }

    #[test]
    fn timeout_must_be_a_whole_number() {
        assert_eq!(
            parse_error("reset_peer", json!({"timeout": 1.5})),
            "reset_peer attribute timeout=1.5 is invalid: valid range is integers 0..=86400000"
        );
    }
}
