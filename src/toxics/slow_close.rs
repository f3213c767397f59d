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
