//! `slow_close`: the close frame and the FIN are held for `delay` ms.

use std::sync::Arc;

use super::api::{ms, InstanceCx, Item, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use crate::frame::{Frame, Opcode};

#[derive(Debug)]
struct SlowClose {
    delay: u64,
}

/// Parses `delay` (ms, required).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let delay = attrs.u64("delay", 0..=3_600_000)?;
    Ok(Arc::new(SlowClose { delay }))
}

impl ToxicDef for SlowClose {
    fn acts_on_messages(&self) -> bool {
        false
    }
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State { delay: self.delay })
    }
}

struct State {
    delay: u64,
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        if frame.header.opcode == Opcode::Close {
            cx.act();
            let at = cx.ready_at + ms(self.delay);
            cx.emit_at(Item::Frame(frame), at);
        } else {
            cx.emit(Item::Frame(frame));
        }
    }

    fn on_eof(&mut self, cx: &mut ToxicCx<'_>) {
        cx.act();
        let at = cx.ready_at + ms(self.delay);
        cx.emit_at(Item::Eof, at);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::frame::Frame;
    use crate::toxics::testkit::{at, parse_error, ping, text, Kit};

    #[test]
    fn only_the_close_frame_and_the_fin_are_held() {
        let mut kit = Kit::new("slow_close", json!({"delay": 300}), 1);
        let out = kit.frame(0, text("a"));
        assert_eq!(kit.log(&out), [at(0, "text:a")]);
        let out = kit.frame(5, ping("p"));
        assert_eq!(kit.log(&out), [at(5, "ping:p")]);
        let out = kit.frame(10, Frame::close(1000, "bye", None));
        assert_eq!(kit.log(&out), [at(310, "close-frame:1000")]);
        let out = kit.eof(20);
        assert_eq!(kit.log(&out), [at(320, "eof")]);
        assert_eq!(kit.actions, 2, "the close frame and the FIN");
    }

    #[test]
    fn delay_is_required() {
        assert_eq!(
            parse_error("slow_close", json!({})),
            "slow_close attribute delay is missing: valid range is integers 0..=3600000"
        );
    }
}
