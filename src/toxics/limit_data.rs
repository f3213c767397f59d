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
    fn acts_on_messages(&self) -> bool {
        false
    }
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

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use serde_json::json;

    use crate::frame::{Frame, Opcode};
    use crate::toxics::api::Item;
    use crate::toxics::testkit::{at, parse_error, text, Kit};

    fn wire(frame: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        out.to_vec()
    }

    #[test]
    fn cuts_after_exactly_n_wire_bytes_mid_frame() {
        // Each frame: 2 header bytes + 10 payload bytes = 12 wire bytes.
        let mut kit = Kit::new("limit_data", json!({"bytes": 30}), 1);
        let out = kit.frame(0, text("0123456789"));
        assert_eq!(kit.log(&out), [at(0, "text:0123456789")]);
        let out = kit.frame(1, text("abcdefghij"));
        assert_eq!(kit.log(&out), [at(1, "text:abcdefghij")]);
        // 24 bytes gone, 6 left: the third frame is cut after its 6th byte.
        let third = text("ABCDEFGHIJ");
        let out = kit.frame(2, third.clone());
        assert_eq!(kit.log(&out), [at(2, "raw:6"), at(2, "cut:Fin")]);
        match &out[0].item {
            Item::Raw(bytes) => assert_eq!(&bytes[..], &wire(&third)[..6]),
            other => panic!("expected raw bytes, got {other:?}"),
        }
        assert!(
            kit.frame(3, text("more")).is_empty(),
            "nothing after the cut"
        );
        assert_eq!(kit.actions, 1);
    }

    #[test]
    fn masked_frames_count_their_mask_key() {
        // 2 header + 4 mask + 10 payload = 16 wire bytes; the cut lands
        // inside the payload, after 6 of its bytes.
        let mut kit = Kit::new("limit_data", json!({"bytes": 12}), 1);
        let masked = Frame::build(true, 0, Opcode::Binary, b"0123456789", Some([1, 2, 3, 4]));
        let out = kit.frame(0, masked.clone());
        assert_eq!(kit.log(&out), [at(0, "raw:12"), at(0, "cut:Fin")]);
        match &out[0].item {
            Item::Raw(bytes) => assert_eq!(&bytes[..], &wire(&masked)[..12]),
            other => panic!("expected raw bytes, got {other:?}"),
        }
    }

    #[test]
    fn a_limit_on_a_frame_boundary_sends_that_frame_whole_then_cuts() {
        let mut kit = Kit::new("limit_data", json!({"bytes": 24}), 1);
        let out = kit.frame(0, text("0123456789"));
        assert_eq!(kit.log(&out), [at(0, "text:0123456789")]);
        let out = kit.frame(1, text("abcdefghij"));
        assert_eq!(kit.log(&out), [at(1, "raw:12"), at(1, "cut:Fin")]);
    }

    #[test]
    fn zero_bytes_cuts_before_the_first_byte() {
        let mut kit = Kit::new("limit_data", json!({"bytes": 0}), 1);
        let out = kit.frame(0, text("a"));
        assert_eq!(kit.log(&out), [at(0, "cut:Fin")]);
    }

    #[test]
    fn bytes_is_required_and_not_negative() {
        assert_eq!(
            parse_error("limit_data", json!({})),
            "limit_data attribute bytes is missing: valid range is integers 0..=9223372036854775807"
        );
        assert_eq!(
            parse_error("limit_data", json!({"bytes": -1})),
            "limit_data attribute bytes=-1 is invalid: valid range is integers 0..=9223372036854775807"
        );
    }
}
