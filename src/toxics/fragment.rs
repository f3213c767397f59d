//! `fragment`: each data frame is split into frames of at most
//! `max_frame_bytes` payload bytes; optionally a ping between fragments.

use std::sync::Arc;

use super::api::{InstanceCx, Item, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use crate::frame::{Frame, Opcode};

/// Payload of the pings `fragment` and `slicer` insert.
pub const INTERLEAVED_PING: &[u8] = b"wsfault";

#[derive(Debug)]
struct Fragment {
    max_frame_bytes: u64,
    interleave_ping: bool,
}

/// Parses `max_frame_bytes` (required, at least 1) and `interleave_ping` (default false).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let max_frame_bytes = attrs.u64("max_frame_bytes", 1..=u64::from(u32::MAX))?;
    let interleave_ping = attrs.bool_or("interleave_ping", false)?;
    Ok(Arc::new(Fragment {
        max_frame_bytes,
        interleave_ping,
    }))
}

impl ToxicDef for Fragment {
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            max: self.max_frame_bytes as usize,
            ping: self.interleave_ping,
        })
    }
}

struct State {
    max: usize,
    ping: bool,
}

/// Splits a data frame at the given chunk sizes (summing to its payload
/// length), emitting each piece `spacing(i)` after the frame is ready.
pub fn split_frame(
    frame: Frame,
    sizes: &[usize],
    ping: bool,
    spacing: impl Fn(usize) -> std::time::Duration,
    cx: &mut ToxicCx<'_>,
) {
    let plain = frame.plain_payload();
    let mut offset = 0;
    let last = sizes.len().saturating_sub(1);
    for (i, size) in sizes.iter().enumerate() {
        let end = (offset + size).min(plain.len());
        let opcode = if i == 0 {
            frame.header.opcode
        } else {
            Opcode::Continuation
        };
        let rsv = if i == 0 { frame.header.rsv } else { 0 };
        let fin = i == last && frame.header.fin;
        let mask = cx.new_mask();
        let piece = Frame::build(fin, rsv, opcode, &plain[offset..end], mask);
        let at = cx.ready_at + spacing(i);
        cx.emit_at(Item::Frame(piece), at);
        if ping && i != last {
            let mask = cx.new_mask();
            cx.emit_at(
                Item::Frame(Frame::build(true, 0, Opcode::Ping, INTERLEAVED_PING, mask)),
                at,
            );
        }
        offset = end;
    }
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        let len = frame.payload.len();
        if !frame.header.opcode.is_data() || len <= self.max {
            cx.emit(Item::Frame(frame));
            return;
        }
        let mut sizes = vec![self.max; len / self.max];
        if !len.is_multiple_of(self.max) {
            sizes.push(len % self.max);
        }
        cx.act();
        split_frame(frame, &sizes, self.ping, |_| std::time::Duration::ZERO, cx);
    }
}
