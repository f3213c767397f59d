//! `close`: a close frame with `code` and `reason` is sent to the receiving
//! side of the stream (as if the other end had sent it), 1001 to the other
//! side, after `after_ms` ms or `after_messages` messages.

use std::sync::Arc;
use std::time::Instant;

use super::api::{
    ms, CloseSpec, DeadlineCx, EndAction, InstanceCx, Item, MessageTracker, ToxicCx, ToxicDef,
    ToxicState,
};
use super::attrs::{AttrError, Attributes};
use crate::frame::Frame;

#[derive(Debug)]
struct Close {
    code: u16,
    reason: String,
    after_ms: Option<u64>,
    after_messages: Option<u64>,
}

/// Parses `code` (1000..=4999, default 1000), `reason` (default empty),
/// `after_ms` or `after_messages` (neither: at once).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let code = attrs.u64_or("code", 1000..=4999, 1000)? as u16;
    let reason = attrs.string_or("reason", "")?;
    if reason.len() > 123 {
        return Err(AttrError::new(
            "reason",
            format!(
                "close attribute reason is {} bytes long: valid range is 0..=123 bytes",
                reason.len()
            ),
        ));
    }
    let after_ms = attrs.opt_u64("after_ms", 0..=86_400_000)?;
    let after_messages = attrs.opt_u64("after_messages", 0..=u64::MAX >> 1)?;
    if after_ms.is_some() && after_messages.is_some() {
        return Err(AttrError::new(
            "after_messages",
            "close takes after_ms or after_messages, not both",
        ));
    }
    Ok(Arc::new(Close {
        code,
        reason,
        after_ms,
        after_messages,
    }))
}

impl ToxicDef for Close {
    fn instantiate(&self, cx: &InstanceCx) -> Box<dyn ToxicState> {
        // With `match.message` and no `after_*`, the first matching message
        // fires it (the activation layer only shows it matching messages).
        let after_messages = match (self.after_ms, self.after_messages) {
            (None, None) if cx.message_triggered => Some(0),
            (_, n) => n,
        };
        let timer = match (self.after_ms, after_messages) {
            (Some(t), _) => Some(cx.armed_at + ms(t)),
            (None, None) => Some(cx.armed_at),
            (None, Some(_)) => None,
        };
        Box::new(State {
            code: self.code,
            reason: self.reason.clone(),
            timer,
            after_messages,
            seen: 0,
            tracker: MessageTracker::default(),
            done: false,
        })
    }
}

struct State {
    code: u16,
    reason: String,
    timer: Option<Instant>,
    after_messages: Option<u64>,
    seen: u64,
    tracker: MessageTracker,
    done: bool,
}

impl State {
    fn fire(&mut self, cx: &mut ToxicCx<'_>) {
        self.done = true;
        cx.act();
        cx.emit(Item::End(EndAction::Close {
            to_receiver: CloseSpec {
                code: self.code,
                reason: self.reason.clone(),
            },
            to_sender: CloseSpec {
                code: 1001,
                reason: "going away".into(),
            },
        }));
    }
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        if self.done {
            return;
        }
        let (starts, _) = self.tracker.observe(&frame);
        if starts {
            if self.after_messages.is_some_and(|n| self.seen >= n) {
                self.fire(cx);
                return;
            }
            self.seen += 1;
        }
        cx.emit(Item::Frame(frame));
    }

    fn next_deadline(&self, _cx: &DeadlineCx<'_>) -> Option<Instant> {
        if self.done {
            None
        } else {
            self.timer
        }
    }

    fn on_deadline(&mut self, cx: &mut ToxicCx<'_>) {
        if !self.done && self.timer.is_some_and(|t| t <= cx.now) {
            self.fire(cx);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::toxics::api::ms;
    use crate::toxics::testkit::{at, parse_error, ping, text, Kit};

    #[test]
    fn after_2_messages_the_3rd_becomes_the_close() {
        let mut kit = Kit::new(
            "close",
            json!({"after_messages": 2, "code": 4000, "reason": "bye"}),
            1,
        );
        assert_eq!(kit.next_deadline(0), None, "no timer");
        let out = kit.frame(0, text("0"));
        assert_eq!(kit.log(&out), [at(0, "text:0")]);
        let out = kit.frame(1, ping("p"));
        assert_eq!(kit.log(&out), [at(1, "ping:p")], "pings are not messages");
        let out = kit.frame(2, text("1"));
        assert_eq!(kit.log(&out), [at(2, "text:1")]);
        let out = kit.frame(3, text("2"));
        assert_eq!(
            kit.log(&out),
            [at(3, "close:4000 'bye' / 1001 'going away'")]
        );
        assert!(
            kit.frame(4, text("3")).is_empty(),
            "nothing after the close"
        );
        assert_eq!(kit.actions, 1);
    }

    #[test]
    fn after_ms_closes_exactly_at_the_timer() {
        let mut kit = Kit::new("close", json!({"after_ms": 200}), 1);
        assert_eq!(kit.next_deadline(0), Some(ms(200)));
        assert_eq!(kit.frame(100, text("a")).len(), 1, "messages pass");
        assert!(kit.deadline(199).is_empty());
        let out = kit.deadline(200);
        assert_eq!(
            kit.log(&out),
            [at(200, "close:1000 '' / 1001 'going away'")]
        );
        assert_eq!(kit.next_deadline(200), None, "fires once");
        assert!(kit.deadline(300).is_empty());
    }

    #[test]
    fn without_a_trigger_it_closes_at_once() {
        let mut kit = Kit::new("close", json!({"code": 1001}), 1);
        assert_eq!(kit.next_deadline(0), Some(ms(0)));
        let out = kit.deadline(0);
        assert_eq!(kit.log(&out), [at(0, "close:1001 '' / 1001 'going away'")]);
    }

    #[test]
    fn parse_errors_name_the_field_and_range() {
        assert_eq!(
            parse_error("close", json!({"reason": "x".repeat(124)})),
            "close attribute reason is 124 bytes long: valid range is 0..=123 bytes"
        );
        assert_eq!(
            parse_error("close", json!({"after_ms": 1, "after_messages": 1})),
            "close takes after_ms or after_messages, not both"
        );
        assert_eq!(
            parse_error("close", json!({"code": 999})),
            "close attribute code=999 is invalid: valid range is integers 1000..=4999"
        );
    }
}
