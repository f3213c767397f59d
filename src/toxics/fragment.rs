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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::INTERLEAVED_PING;
    use crate::frame::{Frame, Opcode};
    use crate::toxics::testkit::{at, frame, frames, parse_error, ping, text, Kit};

    #[test]
    fn splits_into_frames_of_exactly_max_frame_bytes() {
        let mut kit = Kit::new("fragment", json!({"max_frame_bytes": 4}), 1);
        let out = kit.frame(7, text("abcdefghij"));
        assert_eq!(
            kit.log(&out),
            [at(7, "text+:abcd"), at(7, "cont+:efgh"), at(7, "cont:ij")]
        );
        assert_eq!(kit.actions, 1);
        // An exact multiple leaves no empty tail.
        let out = kit.frame(8, text("abcdefgh"));
        assert_eq!(kit.log(&out), [at(8, "text+:abcd"), at(8, "cont:efgh")]);
    }

    /// What `abcdefghij` becomes with `max_frame_bytes: 4` and
    /// `interleave_ping`.
    fn abcdefghij_by_4_with_pings() -> [(std::time::Duration, String); 5] {
        [
            at(0, "text+:abcd"),
            at(0, "ping:wsfault"),
            at(0, "cont+:efgh"),
            at(0, "ping:wsfault"),
            at(0, "cont:ij"),
        ]
    }

    #[test]
    fn interleaves_a_ping_between_fragments_not_after_the_last() {
        let mut kit = Kit::new(
            "fragment",
            json!({"max_frame_bytes": 4, "interleave_ping": true}),
            1,
        );
        let out = kit.frame(0, text("abcdefghij"));
        assert_eq!(kit.log(&out), abcdefghij_by_4_with_pings());
        assert_eq!(INTERLEAVED_PING, b"wsfault");
    }

    #[test]
    fn rsv_bits_stay_on_the_first_fragment_and_fin_on_the_last() {
        let mut kit = Kit::new("fragment", json!({"max_frame_bytes": 2}), 1);
        let out = kit.frame(0, Frame::build(true, 0b100, Opcode::Binary, b"abcde", None));
        let got: Vec<(bool, u8, Opcode)> = frames(&out)
            .iter()
            .map(|f| (f.header.fin, f.header.rsv, f.header.opcode))
            .collect();
        assert_eq!(
            got,
            [
                (false, 0b100, Opcode::Binary),
                (false, 0, Opcode::Continuation),
                (true, 0, Opcode::Continuation),
            ]
        );
    }

    #[test]
    fn fragments_of_an_already_fragmented_message_keep_its_shape() {
        let mut kit = Kit::new("fragment", json!({"max_frame_bytes": 3}), 1);
        let out = kit.frame(0, frame(false, Opcode::Text, "abcdef"));
        assert_eq!(kit.log(&out), [at(0, "text+:abc"), at(0, "cont+:def")]);
        let out = kit.frame(1, frame(true, Opcode::Continuation, "ghijk"));
        assert_eq!(kit.log(&out), [at(1, "cont+:ghi"), at(1, "cont:jk")]);
    }

    #[test]
    fn small_and_control_frames_pass_untouched() {
        let mut kit = Kit::new("fragment", json!({"max_frame_bytes": 4}), 1);
        let masked = Frame::build(true, 0, Opcode::Text, b"abcd", Some([9, 9, 9, 9]));
        let out = kit.frame(0, masked.clone());
        assert_eq!(frames(&out), [&masked], "the very same frame, mask kept");
        let out = kit.frame(0, ping("abcdefgh"));
        assert_eq!(kit.log(&out), [at(0, "ping:abcdefgh")]);
        assert_eq!(kit.actions, 0);
    }

    #[test]
    fn towards_the_server_every_built_frame_gets_a_fresh_mask() {
        let mut kit = Kit::new(
            "fragment",
            json!({"max_frame_bytes": 4, "interleave_ping": true}),
            1,
        );
        kit.to_server = true;
        let client_key = [1, 2, 3, 4];
        let out = kit.frame(
            0,
            Frame::build(true, 0, Opcode::Text, b"abcdefghij", Some(client_key)),
        );
        assert_eq!(
            kit.log(&out),
            abcdefghij_by_4_with_pings(),
            "payloads unmask to the original"
        );
        let keys: Vec<[u8; 4]> = frames(&out)
            .iter()
            .map(|f| f.header.mask.expect("masked towards the server"))
            .collect();
        assert!(keys.iter().all(|k| *k != client_key), "{keys:?}");
        let mut distinct = keys.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), keys.len(), "a new key per frame: {keys:?}");
    }

    #[test]
    fn towards_the_client_built_frames_are_unmasked() {
        let mut kit = Kit::new("fragment", json!({"max_frame_bytes": 4}), 1);
        let out = kit.frame(0, text("abcdefghij"));
        assert!(frames(&out).iter().all(|f| f.header.mask.is_none()));
    }

    #[test]
    fn parse_errors_name_field_value_and_choices() {
        assert_eq!(
            parse_error("fragment", json!({"max_frame_bytes": 0})),
            "fragment attribute max_frame_bytes=0 is invalid: valid range is integers 1..=4294967295"
        );
        assert_eq!(
            parse_error(
                "fragment",
                json!({"max_frame_bytes": 4, "interleave_ping": "yes"})
            ),
            "fragment attribute interleave_ping=\"yes\" is invalid: valid choices are true, false"
        );
    }
}
