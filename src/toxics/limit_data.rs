//! `limit_data`: after exactly `bytes` wire bytes of the stream the
//! connection is cut abruptly, mid-frame if that is where the count ends.

use std::sync::Arc;

use bytes::BytesMut;

use super::api::{EndAction, InstanceCx, Item, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use crate::frame::Frame;
use crate::vocab::CutMode;

#[derive(Debug)]
struct LimitData {
    bytes: u64,
}

/// Parses `bytes` (required).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let bytes = attrs.u64("bytes", 0..=u64::MAX >> 1)?;
    Ok(Arc::new(LimitData { bytes }))
}

impl ToxicDef for LimitData {
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            left: self.bytes,
            done: false,
        })
    }
}

struct State {
    left: u64,
    done: bool,
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        if self.done {
            return;
        }
        let len = frame.wire_len() as u64;
        if len < self.left {
            self.left -= len;
            cx.emit(Item::Frame(frame));
            return;
        }
        // The limit ends inside (or exactly at the end of) this frame.
        let mut wire = BytesMut::with_capacity(frame.wire_len());
        frame.encode(&mut wire);
        let cut = self.left as usize;
        self.left = 0;
        self.done = true;
        if cut > 0 {
            cx.emit(Item::Raw(wire.split_to(cut).freeze()));
        }
        cx.act();
        cx.emit(Item::End(EndAction::Cut(CutMode::Fin)));
    }
}
