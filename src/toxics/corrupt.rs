//! `corrupt`: with `probability`, the payload of a data message is changed
//! while its frames stay well-formed (lengths, masking, FIN and opcodes
//! stay valid):
//! * `flip` XORs `bytes` distinct payload bytes with nonzero random values;
//! * `utf8` makes a text message invalid UTF-8 (one byte becomes 0xFF);
//!   binary messages pass untouched and are not counted;
//! * `truncate` keeps the first half of the payload.
//!
//! Decisions the contract leaves open (documented in docs/reference.md):
//! * `mode` defaults to `flip` and `probability` to 1: adding the toxic
//!   corrupts. `bytes` only matters to `flip`.
//! * Every data message costs exactly one draw of the toxic's RNG, whatever
//!   the mode and the payload: draw k decides message k (as in
//!   `message_loss`), and the positions and values come from a generator
//!   seeded by that draw.
//! * A fragmented message is decided once, at its first frame. `flip`
//!   changes `bytes` positions of the whole message, taken from its
//!   earliest fragments; `utf8` changes its first fragment (an empty one
//!   gets a single 0xFF byte); `truncate` keeps the first half of every
//!   fragment.
//! * `truncate` on a text message cuts at a character boundary (and drops
//!   the continuation bytes of a character cut off in the previous
//!   fragment), so valid UTF-8 stays valid: the message gets shorter, not
//!   garbled (`utf8` is for that).
//! * A payload that is empty cannot be flipped or truncated: the message
//!   passes and is not counted. One action per changed message.
//! * Masked frames (client to server) keep their masking key; the changed
//!   payload is masked with it.
//! * Compressed messages (`extensions: pass`) are left alone and counted as
//!   skips.

use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::api::{InstanceCx, Item, MessageTracker, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use crate::frame::{Frame, Opcode};

/// Byte that never occurs in valid UTF-8.
const NOT_UTF8: u8 = 0xFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Flip,
    Utf8,
    Truncate,
}

#[derive(Debug)]
struct Corrupt {
    mode: Mode,
    probability: f64,
    bytes: usize,
}

/// Parses `mode` (`flip`|`utf8`|`truncate`, default flip), `probability`
/// (default 1; 0..=1) and `bytes` (default 1; 1..=4294967295).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let mode = match attrs
        .choice_or("mode", &["flip", "utf8", "truncate"], "flip")?
        .as_str()
    {
        "utf8" => Mode::Utf8,
        "truncate" => Mode::Truncate,
        _ => Mode::Flip,
    };
    let probability = attrs.probability_or("probability", 1.0)?;
    let bytes = attrs.u64_or("bytes", 1..=u64::from(u32::MAX), 1)?;
    Ok(Arc::new(Corrupt {
        mode,
        probability,
        bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
    }))
}

impl ToxicDef for Corrupt {
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            mode: self.mode,
            probability: self.probability,
            bytes: self.bytes,
            tracker: MessageTracker::default(),
            damage: None,
        })
    }
    fn changes_payload(&self) -> bool {
        true
    }
    fn is_inert(&self) -> bool {
        self.probability <= 0.0
    }
}

/// How the message now passing is being corrupted.
struct Damage {
    /// Positions and values, seeded by the message's draw.
    rng: SmallRng,
    /// The message is text (for `utf8` and `truncate`).
    text: bool,
    /// `flip`: positions still to change.
    flips_left: usize,
    /// The next frame is the message's first.
    first: bool,
    /// The action was counted.
    counted: bool,
}

struct State {
    mode: Mode,
    probability: f64,
    bytes: usize,
    tracker: MessageTracker,
    damage: Option<Damage>,
}

/// Whether `b` continues a UTF-8 character (0b10xx_xxxx).
fn continues(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// The first half of a payload; for text, whole characters only.
fn first_half(plain: &[u8], text: bool) -> &[u8] {
    if !text {
        return &plain[..plain.len() / 2];
    }
    // Bytes finishing a character begun in the previous fragment.
    let lo = plain.iter().take(3).take_while(|b| continues(**b)).count();
    let mut hi = plain.len() / 2;
    while hi > lo && continues(plain[hi]) {
        hi -= 1;
    }
    &plain[lo..hi.max(lo)]
}

impl Damage {
    /// The corrupted payload of one frame of the message, or `None` to leave it.
    fn apply(&mut self, mode: Mode, plain: &[u8]) -> Option<Vec<u8>> {
        let first = std::mem::replace(&mut self.first, false);
        match mode {
            Mode::Flip => {
                let n = self.flips_left.min(plain.len());
                if n == 0 {
                    return None;
                }
                self.flips_left -= n;
                let mut out = plain.to_vec();
                for pos in rand::seq::index::sample(&mut self.rng, plain.len(), n) {
                    out[pos] ^= self.rng.random_range(1..=u8::MAX);
                }
                Some(out)
            }
            Mode::Utf8 if first && self.text => {
                let mut out = plain.to_vec();
                if out.is_empty() {
                    out.push(NOT_UTF8);
                } else {
                    let pos = self.rng.random_range(0..out.len());
                    out[pos] = NOT_UTF8;
                }
                Some(out)
            }
            Mode::Utf8 => None,
            Mode::Truncate => {
                let kept = first_half(plain, self.text);
                (kept.len() < plain.len()).then(|| kept.to_vec())
            }
        }
    }
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        let Some(frame) = cx.data_frame(frame) else {
            return;
        };
        // One draw per message, whatever the mode: draw k decides message k.
        let (draw, ends) = self.tracker.draw(&frame, cx.rng);
        if let Some(draw) = draw {
            let text = frame.header.opcode == Opcode::Text;
            let acts = draw < self.probability && (self.mode != Mode::Utf8 || text);
            self.damage = acts.then(|| Damage {
                rng: SmallRng::seed_from_u64(draw.to_bits()),
                text,
                flips_left: self.bytes,
                first: true,
                counted: false,
            });
        }
        let changed = match self.damage.as_mut() {
            Some(damage) => damage.apply(self.mode, &frame.plain_payload()),
            None => None,
        };
        if let (Some(plain), Some(damage)) = (changed, self.damage.as_mut()) {
            if !std::mem::replace(&mut damage.counted, true) {
                cx.act();
            }
            let h = frame.header;
            cx.emit(Item::Frame(Frame::build(
                h.fin, h.rsv, h.opcode, &plain, h.mask,
            )));
        } else {
            cx.emit(Item::Frame(frame));
        }
        if ends {
            self.damage = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::first_half;
    use crate::frame::{Frame, Opcode};
    use crate::toxics::testkit::{at, def, frame, frames, parse_error, ping, text, Kit};

    /// Positions where `a` and `b` differ (same length).
    fn diff(a: &[u8], b: &[u8]) -> Vec<usize> {
        assert_eq!(a.len(), b.len(), "flip keeps the length");
        (0..a.len()).filter(|i| a[*i] != b[*i]).collect()
    }

    /// The unmasked payload of the single frame in `out`.
    fn only_payload(out: &[crate::toxics::Output]) -> Vec<u8> {
        let got = frames(out);
        assert_eq!(got.len(), 1, "one frame in, one frame out");
        got[0].plain_payload().to_vec()
    }

    const ORIGINAL: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

    #[test]
    fn flip_changes_exactly_bytes_positions() {
        let mut kit = Kit::new("corrupt", json!({"mode": "flip", "bytes": 3}), 5);
        let out = kit.frame(4, Frame::build(true, 0, Opcode::Binary, ORIGINAL, None));
        assert_eq!(kit.times(&out), [crate::toxics::ms(4)]);
        let got = only_payload(&out);
        let changed = diff(ORIGINAL, &got);
        assert_eq!(changed.len(), 3, "{changed:?}");
        assert_eq!(changed, [7, 20, 34], "seed 5 picks these");
        assert_eq!(kit.actions, 1);
        // Same seed, same positions and values.
        let mut again = Kit::new("corrupt", json!({"mode": "flip", "bytes": 3}), 5);
        let out2 = again.frame(4, Frame::build(true, 0, Opcode::Binary, ORIGINAL, None));
        assert_eq!(only_payload(&out2), got);
    }

    #[test]
    fn flip_never_changes_more_than_the_payload_and_skips_empty_ones() {
        let mut kit = Kit::new("corrupt", json!({"bytes": 10}), 1);
        let out = kit.frame(0, text("abc"));
        assert_eq!(diff(b"abc", &only_payload(&out)), [0, 1, 2]);
        let out = kit.frame(0, text(""));
        assert_eq!(kit.log(&out), [at(0, "text:")]);
        assert_eq!(kit.actions, 1, "the empty message is not counted");
    }

    #[test]
    fn masked_client_frames_stay_correctly_masked() {
        let mut kit = Kit::new("corrupt", json!({"bytes": 4}), 9);
        kit.to_server = true;
        let key = [0x11, 0x22, 0x33, 0x44];
        let out = kit.frame(0, Frame::build(true, 0, Opcode::Text, ORIGINAL, Some(key)));
        let got = frames(&out);
        assert_eq!(got[0].header.mask, Some(key), "the client's key is kept");
        assert_eq!(got[0].header.payload_len, ORIGINAL.len() as u64);
        let mut unmasked = got[0].payload.to_vec();
        crate::frame::apply_mask(&mut unmasked, key, 0);
        assert_eq!(
            diff(ORIGINAL, &unmasked).len(),
            4,
            "exactly 4 once unmasked"
        );
    }

    #[test]
    fn flip_spreads_over_the_earliest_fragments_of_a_message() {
        let mut kit = Kit::new("corrupt", json!({"bytes": 3}), 1);
        let out = kit.frame(0, frame(false, Opcode::Binary, "ab"));
        assert_eq!(diff(b"ab", &only_payload(&out)), [0, 1]);
        let out = kit.frame(0, ping("pp"));
        assert_eq!(kit.log(&out), [at(0, "ping:pp")], "control frames pass");
        let out = kit.frame(0, frame(false, Opcode::Continuation, "cdef"));
        assert_eq!(diff(b"cdef", &only_payload(&out)).len(), 1);
        let out = kit.frame(0, frame(true, Opcode::Continuation, "gh"));
        assert_eq!(kit.log(&out), [at(0, "cont:gh")], "all 3 already flipped");
        assert_eq!(kit.actions, 1, "one action per message");
    }

    #[test]
    fn utf8_makes_text_invalid_and_leaves_binary() {
        let mut kit = Kit::new("corrupt", json!({"mode": "utf8"}), 3);
        let out = kit.frame(0, text("hello"));
        let got = only_payload(&out);
        assert!(std::str::from_utf8(&got).is_err(), "{got:?}");
        assert_eq!(diff(b"hello", &got).len(), 1);
        let out = kit.frame(0, Frame::build(true, 0, Opcode::Binary, b"bin", None));
        assert_eq!(only_payload(&out), b"bin");
        let out = kit.frame(0, text(""));
        assert_eq!(only_payload(&out), [0xFF]);
        assert_eq!(kit.actions, 2, "binary is not counted");
        // A fragmented text message: its first fragment only.
        let out = kit.frame(0, frame(false, Opcode::Text, "ab"));
        assert!(std::str::from_utf8(&only_payload(&out)).is_err());
        let out = kit.frame(0, frame(true, Opcode::Continuation, "cd"));
        assert_eq!(kit.log(&out), [at(0, "cont:cd")]);
        assert_eq!(kit.actions, 3);
    }

    #[test]
    fn truncate_keeps_the_first_half() {
        let mut kit = Kit::new("corrupt", json!({"mode": "truncate"}), 1);
        let out = kit.frame(0, text("abcdefg"));
        assert_eq!(kit.log(&out), [at(0, "text:abc")]);
        assert_eq!(frames(&out)[0].header.payload_len, 3);
        let out = kit.frame(
            0,
            Frame::build(true, 0, Opcode::Binary, b"\xC3\xA9\xC3\xA9", None),
        );
        assert_eq!(only_payload(&out), b"\xC3\xA9");
        // Text is cut on a character boundary: "日本" is 6 bytes.
        let out = kit.frame(0, text("日本"));
        assert_eq!(kit.log(&out), [at(0, "text:日")]);
        let out = kit.frame(0, text("aé"));
        assert_eq!(kit.log(&out), [at(0, "text:a")]);
        // Masked: the length and the mask stay consistent.
        kit.to_server = true;
        let key = [1, 2, 3, 4];
        let out = kit.frame(0, Frame::build(true, 0, Opcode::Text, b"abcdef", Some(key)));
        let f = frames(&out)[0];
        assert_eq!((f.header.mask, f.header.payload_len), (Some(key), 3));
        assert_eq!(&f.plain_payload()[..], b"abc");
        assert_eq!(kit.actions, 5);
        let out = kit.frame(0, text(""));
        assert_eq!(kit.log(&out), [at(0, "text:")]);
        assert_eq!(kit.actions, 5, "nothing to cut");
    }

    #[test]
    fn truncate_halves_every_fragment_of_a_message_keeping_utf8_valid() {
        let mut kit = Kit::new("corrupt", json!({"mode": "truncate"}), 1);
        // "héllo wörld" cut across the é: fragment 2 starts with its tail.
        let out = kit.frame(0, Frame::build(false, 0, Opcode::Text, b"h\xC3", None));
        assert_eq!(only_payload(&out), b"h");
        let out = kit.frame(
            0,
            Frame::build(false, 0, Opcode::Continuation, b"\xA9llo w", None),
        );
        assert_eq!(only_payload(&out), b"ll");
        let out = kit.frame(
            0,
            Frame::build(true, 0, Opcode::Continuation, b"\xC3\xB6rld", None),
        );
        assert_eq!(only_payload(&out), b"\xC3\xB6");
        assert_eq!(kit.actions, 1);
        assert_eq!(first_half(b"\xE6\x97", true), b"");
    }

    #[test]
    fn probability_half_seed_2_corrupts_exactly_these() {
        // The same draws as duplicate's test (one per message).
        let mut kit = Kit::new("corrupt", json!({"probability": 0.5}), 2);
        let mut corrupted = Vec::new();
        for i in 0..20 {
            assert_eq!(kit.frame(0, ping("p")).len(), 1, "pings draw nothing");
            let payload = format!("message {i}");
            let out = kit.frame(0, text(&payload));
            if only_payload(&out) != payload.as_bytes() {
                corrupted.push(i);
            }
        }
        assert_eq!(corrupted, [3, 4, 6, 8, 15, 17, 18, 19]);
        assert_eq!(kit.actions, corrupted.len() as u64);
    }

    #[test]
    fn utf8_draws_for_binary_messages_too() {
        // Message k is decided by draw k, binary or not.
        let mut kit = Kit::new("corrupt", json!({"mode": "utf8", "probability": 0.5}), 2);
        let mut corrupted = Vec::new();
        for i in 0..20 {
            let out = if i % 2 == 0 {
                kit.frame(0, Frame::build(true, 0, Opcode::Binary, b"bin", None))
            } else {
                kit.frame(0, text("txt"))
            };
            if only_payload(&out) != b"bin" && only_payload(&out) != b"txt" {
                corrupted.push(i);
            }
        }
        assert_eq!(corrupted, [3, 15, 17, 19]);
    }

    #[test]
    fn inert_at_probability_zero_and_payload_changing() {
        assert!(def("corrupt", json!({"probability": 0})).is_inert());
        assert!(!def("corrupt", json!({})).is_inert());
        assert!(def("corrupt", json!({"mode": "truncate"})).changes_payload());
    }

    #[test]
    fn parse_errors_name_field_value_and_choices() {
        assert_eq!(
            parse_error("corrupt", json!({"mode": "scramble"})),
            "corrupt attribute mode=\"scramble\" is invalid: valid choices are flip, utf8, truncate"
        );
        assert_eq!(
            parse_error("corrupt", json!({"bytes": 0})),
            "corrupt attribute bytes=0 is invalid: valid range is integers 1..=4294967295"
        );
        assert_eq!(
            parse_error("corrupt", json!({"probability": -1})),
            "corrupt attribute probability=-1 is invalid: valid range is 0..=1"
        );
    }
}
