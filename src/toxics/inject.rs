//! `inject`: a message the other end never sent is delivered to the
//! stream's receiver (masked with a fresh key when the receiver is the
//! server), between messages, never inside a fragmented one.
//!
//! Decisions the contract leaves open (documented in docs/reference.md):
//! * `after_messages: N` injects after every N data messages of the stream
//!   (right after the last frame of messages N, 2N, 3N, ...); `every_ms: T`
//!   injects every T ms, counted from arming. One of the two is required.
//!   `limit` caps the total number of injections (absent: unlimited; 0
//!   makes the toxic inert).
//! * Control frames are not counted as messages. With `match.message` or
//!   `count`, only the messages the toxic is shown are counted.
//! * An `every_ms` injection that falls inside a fragmented message waits
//!   for its end (control frames are allowed there by RFC 6455, but the
//!   contract keeps every injection between messages). Ticks missed while
//!   waiting collapse into that one injection; later ones keep their phase.
//! * `opcode` defaults to `text` with `payload` (a string) and to `binary`
//!   with `payload_base64` (standard alphabet, with padding). A base64
//!   payload sent as `text` is not checked for UTF-8. Pings and pongs carry
//!   at most 125 bytes.
//! * The injected message is a single frame with RSV bits clear (valid with
//!   or without permessage-deflate). One action per injection.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;

use super::api::{ms, DeadlineCx, InstanceCx, Item, MessageTracker, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use crate::frame::{Frame, Opcode};

/// Largest `after_messages`.
const MAX_AFTER_MESSAGES: u64 = u64::MAX >> 1;
/// Largest `every_ms` (one day).
const MAX_EVERY_MS: u64 = 86_400_000;

#[derive(Debug)]
struct Inject {
    payload: Arc<[u8]>,
    opcode: Opcode,
    after_messages: Option<u64>,
    every_ms: Option<u64>,
    limit: Option<u64>,
}

/// Parses `payload` or `payload_base64` (one is required), `opcode`
/// (`text`|`binary`|`ping`|`pong`), `after_messages` (1..=2^63−1) or
/// `every_ms` (1..=86400000) (one is required) and `limit` (none =
/// unlimited; 0..=2^63−1).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let text = attrs.opt_string("payload")?;
    let encoded = attrs.opt_string("payload_base64")?;
    let (payload, field, default_opcode) =
        match (text, encoded) {
            (Some(_), Some(_)) => {
                return Err(AttrError::new(
                    "payload_base64",
                    "inject takes payload or payload_base64, not both",
                ))
            }
            (None, None) => return Err(AttrError::new(
                "payload",
                "inject attribute payload is missing: give payload (a string) or payload_base64",
            )),
            (Some(text), None) => (text.into_bytes(), "payload", "text"),
            (None, Some(encoded)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&encoded)
                    .map_err(|e| {
                        AttrError::new(
                            "payload_base64",
                            format!(
                                "inject attribute payload_base64={encoded:?} is invalid: \
                             expected standard base64 ({e})"
                            ),
                        )
                    })?;
                (bytes, "payload_base64", "binary")
            }
        };
    let opcode = match attrs
        .choice_or(
            "opcode",
            &["text", "binary", "ping", "pong"],
            default_opcode,
        )?
        .as_str()
    {
        "binary" => Opcode::Binary,
        "ping" => Opcode::Ping,
        "pong" => Opcode::Pong,
        _ => Opcode::Text,
    };
    if opcode.is_control() && payload.len() > 125 {
        return Err(AttrError::new(
            field,
            format!(
                "inject attribute {field} is {} bytes long: valid range for a {} is 0..=125 bytes",
                payload.len(),
                opcode.label()
            ),
        ));
    }
    let after_messages = attrs.opt_u64("after_messages", 1..=MAX_AFTER_MESSAGES)?;
    let every_ms = attrs.opt_u64("every_ms", 1..=MAX_EVERY_MS)?;
    match (after_messages, every_ms) {
        (Some(_), Some(_)) => {
            return Err(AttrError::new(
                "every_ms",
                "inject takes after_messages or every_ms, not both",
            ))
        }
        (None, None) => {
            return Err(AttrError::new(
                "after_messages",
                format!(
                    "inject attribute after_messages is missing: give after_messages \
                     (integers 1..={MAX_AFTER_MESSAGES}) or every_ms (integers 1..={MAX_EVERY_MS})"
                ),
            ))
        }
        _ => {}
    }
    let limit = attrs.opt_u64("limit", 0..=u64::MAX >> 1)?;
    Ok(Arc::new(Inject {
        payload: payload.into(),
        opcode,
        after_messages,
        every_ms,
        limit,
    }))
}

impl ToxicDef for Inject {
    fn instantiate(&self, cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            payload: self.payload.clone(),
            opcode: self.opcode,
            after_messages: self.after_messages,
            every_ms: self.every_ms,
            next_at: self.every_ms.map(|t| cx.armed_at + ms(t)),
            left: self.limit,
            seen: 0,
            tracker: MessageTracker::default(),
        })
    }
    fn is_inert(&self) -> bool {
        self.limit == Some(0)
    }
}

struct State {
    payload: Arc<[u8]>,
    opcode: Opcode,
    after_messages: Option<u64>,
    every_ms: Option<u64>,
    /// `every_ms`: when the next injection is due.
    next_at: Option<Instant>,
    /// Injections left (`None`: unlimited).
    left: Option<u64>,
    /// Data messages passed.
    seen: u64,
    tracker: MessageTracker,
}

impl State {
    fn exhausted(&self) -> bool {
        self.left == Some(0)
    }

    /// Emits the injected message, released no earlier than `at`.
    fn inject(&mut self, at: Instant, cx: &mut ToxicCx<'_>) {
        if let Some(left) = self.left.as_mut() {
            *left = left.saturating_sub(1);
        }
        cx.act();
        let mask = cx.new_mask();
        let frame = Frame::build(true, 0, self.opcode, &self.payload, mask);
        cx.emit_at(Item::Frame(frame), at);
    }

    /// `every_ms`: injects when the tick is due, then moves to the first
    /// tick after now (ticks missed meanwhile collapse into this one).
    fn tick(&mut self, cx: &mut ToxicCx<'_>) {
        let (Some(due), Some(every)) = (self.next_at, self.every_ms) else {
            return;
        };
        if due > cx.now || self.exhausted() {
            return;
        }
        let at = cx.ready_at.max(due);
        self.inject(at, cx);
        let behind = cx.now.duration_since(due).as_millis() / u128::from(every);
        let steps = u64::try_from(behind).unwrap_or(u64::MAX >> 1);
        self.next_at = Some(due + ms(every.saturating_mul(steps.saturating_add(1))));
    }
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        let Some(frame) = cx.data_frame(frame) else {
            return;
        };
        let (_, ends) = self.tracker.observe(&frame);
        cx.emit(Item::Frame(frame));
        if !ends || self.exhausted() {
            return;
        }
        if let Some(n) = self.after_messages {
            self.seen += 1;
            if self.seen.is_multiple_of(n) {
                self.inject(cx.ready_at, cx);
            }
        }
        // An every_ms tick that fell inside this message.
        self.tick(cx);
    }

    fn next_deadline(&self, cx: &DeadlineCx<'_>) -> Option<Instant> {
        if self.exhausted() || !self.tracker.at_boundary() || cx.unseen_message {
            return None;
        }
        self.next_at
    }

    fn on_deadline(&mut self, cx: &mut ToxicCx<'_>) {
        if self.tracker.at_boundary() {
            self.tick(cx);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::frame::Opcode;
    use crate::toxics::ms;
    use crate::toxics::testkit::{at, def, frame, frames, parse_error, ping, text, Kit};

    #[test]
    fn after_2_messages_limit_3_injects_after_messages_2_4_6() {
        let mut kit = Kit::new(
            "inject",
            json!({"payload": "x", "after_messages": 2, "limit": 3}),
            1,
        );
        let mut got = Vec::new();
        for i in 1..=10u64 {
            assert_eq!(kit.frame(i, ping("p")).len(), 1, "pings do not count");
            let out = kit.frame(i, text(&i.to_string()));
            got.extend(kit.log(&out));
        }
        let expected: Vec<_> = (1..=10u64)
            .flat_map(|i| {
                let mut v = vec![at(i, &format!("text:{i}"))];
                if i % 2 == 0 && i <= 6 {
                    v.push(at(i, "text:x"));
                }
                v
            })
            .collect();
        assert_eq!(got, expected);
        assert_eq!(kit.actions, 3);
        assert_eq!(kit.next_deadline(10), None, "no timer");
    }

    #[test]
    fn never_inside_a_fragmented_message() {
        let mut kit = Kit::new("inject", json!({"payload": "x", "after_messages": 1}), 1);
        let out = kit.frame(0, frame(false, Opcode::Text, "a1"));
        assert_eq!(kit.log(&out), [at(0, "text+:a1")]);
        let out = kit.frame(1, ping("p"));
        assert_eq!(kit.log(&out), [at(1, "ping:p")]);
        let out = kit.frame(2, frame(false, Opcode::Continuation, "a2"));
        assert_eq!(kit.log(&out), [at(2, "cont+:a2")]);
        let out = kit.frame(3, frame(true, Opcode::Continuation, "a3"));
        assert_eq!(kit.log(&out), [at(3, "cont:a3"), at(3, "text:x")]);
        // Released after the message it follows, when that one was held.
        let out = kit.frame_ready(kit.t(4), kit.t(90), text("b"));
        assert_eq!(kit.log(&out), [at(90, "text:b"), at(90, "text:x")]);
        assert_eq!(kit.actions, 2);
    }

    #[test]
    fn every_ms_deadlines_are_exact_and_wait_for_the_end_of_a_message() {
        let mut kit = Kit::new(
            "inject",
            json!({"payload": "tick", "every_ms": 100, "limit": 4}),
            1,
        );
        assert_eq!(kit.next_deadline(0), Some(ms(100)));
        assert!(kit.deadline(99).is_empty(), "not yet");
        let out = kit.deadline(100);
        assert_eq!(kit.log(&out), [at(100, "text:tick")]);
        assert_eq!(kit.next_deadline(100), Some(ms(200)));
        // Tick 200 falls inside a fragmented message: it waits for its end.
        let out = kit.frame(150, frame(false, Opcode::Binary, "a1"));
        assert_eq!(kit.log(&out), [at(150, "binary+:a1")]);
        assert_eq!(kit.next_deadline(150), None);
        assert!(kit.deadline(200).is_empty());
        let out = kit.frame(230, frame(true, Opcode::Continuation, "a2"));
        assert_eq!(kit.log(&out), [at(230, "cont:a2"), at(230, "text:tick")]);
        assert_eq!(kit.next_deadline(230), Some(ms(300)), "the phase is kept");
        // Ticks missed (300, 400) collapse into one; the next is at 500.
        let out = kit.deadline(450);
        assert_eq!(kit.log(&out), [at(450, "text:tick")]);
        assert_eq!(kit.next_deadline(450), Some(ms(500)));
        let out = kit.deadline(500);
        assert_eq!(kit.log(&out), [at(500, "text:tick")]);
        assert_eq!(kit.next_deadline(500), None, "limit 4 reached");
        assert!(kit.deadline(600).is_empty());
        assert_eq!(kit.actions, 4);
    }

    #[test]
    fn every_ms_waits_for_a_message_the_toxic_is_not_shown() {
        let mut kit = Kit::new("inject", json!({"payload": "t", "every_ms": 50}), 1);
        kit.unseen_message = true;
        assert_eq!(kit.next_deadline(60), None);
        kit.unseen_message = false;
        assert_eq!(kit.next_deadline(70), Some(ms(50)));
        let out = kit.deadline(70);
        assert_eq!(kit.log(&out), [at(70, "text:t")]);
        assert_eq!(kit.next_deadline(70), Some(ms(100)));
    }

    #[test]
    fn towards_the_server_each_injection_gets_a_fresh_mask() {
        let mut kit = Kit::new(
            "inject",
            json!({"payload": "hello", "opcode": "ping", "after_messages": 1}),
            4,
        );
        kit.to_server = true;
        let key = [7, 7, 7, 7];
        let client = crate::frame::Frame::build(true, 0, Opcode::Text, b"a", Some(key));
        let first = kit.frame(0, client.clone());
        let second = kit.frame(1, client.clone());
        assert_eq!(kit.log(&first), [at(0, "text:a"), at(0, "ping:hello")]);
        let masks: Vec<_> = [&first, &second]
            .iter()
            .map(|out| {
                frames(out)[1]
                    .header
                    .mask
                    .expect("masked toward the server")
            })
            .collect();
        assert_ne!(masks[0], masks[1], "a new key each time");
        assert!(masks.iter().all(|m| *m != key));
        assert_eq!(
            frames(&first)[0],
            &client,
            "the client's frame is untouched"
        );
        // Toward the client: unmasked.
        let mut kit = Kit::new("inject", json!({"payload": "hi", "after_messages": 1}), 4);
        let out = kit.frame(0, text("a"));
        assert_eq!(frames(&out)[1].header.mask, None);
    }

    #[test]
    fn payload_base64_defaults_to_binary() {
        let mut kit = Kit::new(
            "inject",
            json!({"payload_base64": "AAEC/w==", "after_messages": 1}),
            1,
        );
        let out = kit.frame(0, text("a"));
        let f = frames(&out)[1];
        assert_eq!(f.header.opcode, Opcode::Binary);
        assert_eq!(&f.plain_payload()[..], [0, 1, 2, 255]);
        let mut kit = Kit::new(
            "inject",
            json!({"payload_base64": "aGk=", "opcode": "text", "after_messages": 1}),
            1,
        );
        let out = kit.frame(0, text("a"));
        assert_eq!(kit.log(&out), [at(0, "text:a"), at(0, "text:hi")]);
    }

    #[test]
    fn limit_zero_is_inert() {
        assert!(def("inject", json!({"payload": "x", "every_ms": 5, "limit": 0})).is_inert());
        assert!(!def("inject", json!({"payload": "x", "every_ms": 5})).is_inert());
        assert!(!def("inject", json!({"payload": "x", "every_ms": 5})).changes_payload());
    }

    #[test]
    fn parse_errors_name_the_field() {
        let long = "x".repeat(126);
        let cases = [
            (
                json!({"after_messages": 1}),
                "inject attribute payload is missing: give payload (a string) or payload_base64",
            ),
            (
                json!({"payload": "a", "payload_base64": "YQ==", "after_messages": 1}),
                "inject takes payload or payload_base64, not both",
            ),
            (
                json!({"payload_base64": "%%", "after_messages": 1}),
                "inject attribute payload_base64=\"%%\" is invalid: expected standard base64 (Invalid symbol 37, offset 0.)",
            ),
            (
                json!({"payload": "a", "opcode": "close", "after_messages": 1}),
                "inject attribute opcode=\"close\" is invalid: valid choices are text, binary, ping, pong",
            ),
            (
                json!({"payload": long, "opcode": "pong", "after_messages": 1}),
                "inject attribute payload is 126 bytes long: valid range for a pong is 0..=125 bytes",
            ),
            (
                json!({"payload": "a"}),
                "inject attribute after_messages is missing: give after_messages (integers 1..=9223372036854775807) or every_ms (integers 1..=86400000)",
            ),
            (
                json!({"payload": "a", "after_messages": 1, "every_ms": 5}),
                "inject takes after_messages or every_ms, not both",
            ),
            (
                json!({"payload": "a", "after_messages": 0}),
                "inject attribute after_messages=0 is invalid: valid range is integers 1..=9223372036854775807",
            ),
            (
                json!({"payload": "a", "every_ms": 5, "limit": -1}),
                "inject attribute limit=-1 is invalid: valid range is integers 0..=9223372036854775807",
            ),
        ];
        for (attrs, message) in cases {
            assert_eq!(parse_error("inject", attrs), message);
        }
    }
}
