//! `reorder`: a data message is held back and delivered right after the
//! next `distance` data messages of its stream, or after `max_hold` ms if
//! they do not come. Nothing is lost; only the order changes.
//!
//! Decisions the contract leaves open (documented in docs/reference.md):
//! * `probability` defaults to 1: adding the toxic reorders.
//! * One message is held at a time. While one is held, the following
//!   messages pass (they are the ones it waits for), so with `distance: 1`
//!   and probability 1, `a b c d` arrive as `b a d c`. Every data message
//!   costs one RNG draw, held or not, so a seeded run decides message k
//!   with draw k.
//! * A fragmented message is held whole (control frames between its
//!   fragments pass at once) and counts as one message. A message counts
//!   once its last frame has passed, and the held message is released only
//!   between messages, never inside a fragmented one.
//! * `max_hold` counts from when the held message's first frame was ready.
//!   If it runs out while the held message is still arriving, the frames so
//!   far are released and the rest pass as they come. If it runs out while
//!   another fragmented message is mid-way, the release waits for that
//!   message's end.
//! * At the sender's FIN the held message goes out first. If the FIN cuts a
//!   passing fragmented message, the held message cannot follow it without
//!   breaking the frame sequence, so it is discarded along with it.
//! * When the `schedule` window closes, the held message is released.
//! * Compressed messages (`extensions: pass`) keep their place and are
//!   counted as skips: with context takeover, a compressed message can only
//!   be inflated after the ones before it.
//! * One action per held message, counted when it is held.

use std::sync::Arc;
use std::time::Instant;

use super::api::{ms, DeadlineCx, InstanceCx, Item, MessageTracker, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use crate::frame::Frame;

#[derive(Debug)]
struct Reorder {
    distance: u64,
    probability: f64,
    max_hold: u64,
}

/// Parses `distance` (messages, default 1; 1..=1000000), `probability`
/// (default 1; 0..=1) and `max_hold` (ms, default 1000; 1..=3600000).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let distance = attrs.u64_or("distance", 1..=1_000_000, 1)?;
    let probability = attrs.probability_or("probability", 1.0)?;
    let max_hold = attrs.u64_or("max_hold", 1..=3_600_000, 1000)?;
    Ok(Arc::new(Reorder {
        distance,
        probability,
        max_hold,
    }))
}

impl ToxicDef for Reorder {
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            distance: self.distance,
            probability: self.probability,
            max_hold: self.max_hold,
            tracker: MessageTracker::default(),
            held: None,
        })
    }
    /// Not the payload, but the order: compressed messages must keep their
    /// place (see the file's comment), so they are skipped like payload
    /// changes.
    fn changes_payload(&self) -> bool {
        true
    }
    fn is_inert(&self) -> bool {
        self.probability <= 0.0
    }
}

/// The message held back, with each frame's release time.
struct Held {
    frames: Vec<(Frame, Instant)>,
    /// Its last frame has arrived.
    complete: bool,
    /// Messages still to pass before it goes.
    left: u64,
    /// When it goes if they do not come.
    release_at: Instant,
}

struct State {
    distance: u64,
    probability: f64,
    max_hold: u64,
    tracker: MessageTracker,
    held: Option<Held>,
}

impl State {
    /// The held message is arriving (its frames are held as they come).
    fn receiving(&self) -> bool {
        self.held.as_ref().is_some_and(|h| !h.complete)
    }

    /// Whether the frames emitted so far end between messages, so the held
    /// message may go now.
    fn may_release(&self) -> bool {
        self.tracker.at_boundary() || self.receiving()
    }

    /// Emits the held frames (all of them, or those so far when the held
    /// message is still arriving: the rest then pass as they come).
    fn release(&mut self, cx: &mut ToxicCx<'_>) {
        if let Some(held) = self.held.take() {
            for (frame, at) in held.frames {
                let at = at.max(cx.ready_at);
                cx.emit_at(Item::Frame(frame), at);
            }
        }
    }
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        let Some(frame) = cx.data_frame(frame) else {
            return;
        };
        // One draw per message, held or not: draw k decides message k.
        let (draw, ends) = self.tracker.draw(&frame, cx.rng);
        if let Some(draw) = draw {
            if self.held.is_none() && draw < self.probability {
                cx.act();
                self.held = Some(Held {
                    frames: Vec::new(),
                    complete: false,
                    left: self.distance,
                    release_at: cx.ready_at + ms(self.max_hold),
                });
            }
        }
        if let Some(held) = self.held.as_mut().filter(|h| !h.complete) {
            held.frames.push((frame, cx.ready_at));
            held.complete = ends;
            return;
        }
        cx.emit(Item::Frame(frame));
        if !ends {
            return;
        }
        let due = self.held.as_mut().is_some_and(|held| {
            held.left = held.left.saturating_sub(1);
            held.left == 0 || held.release_at <= cx.now
        });
        if due {
            self.release(cx);
        }
    }

    fn on_eof(&mut self, cx: &mut ToxicCx<'_>) {
        if self.may_release() {
            self.release(cx);
        } else {
            // The FIN cut a passing fragmented message: see the file's comment.
            self.held = None;
        }
        cx.emit(Item::Eof);
    }

    fn next_deadline(&self, cx: &DeadlineCx<'_>) -> Option<Instant> {
        let held = self.held.as_ref()?;
        (self.may_release() && !cx.unseen_message).then_some(held.release_at)
    }

    fn on_deadline(&mut self, cx: &mut ToxicCx<'_>) {
        let due = self.held.as_ref().is_some_and(|h| h.release_at <= cx.now);
        if due && self.may_release() {
            self.release(cx);
        }
    }

    fn on_stop(&mut self, cx: &mut ToxicCx<'_>) {
        if self.may_release() {
            self.release(cx);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::frame::Opcode;
    use crate::toxics::testkit::{at, def, frame, parse_error, ping, text, Kit};

    fn kit(attrs: serde_json::Value) -> Kit {
        Kit::new("reorder", attrs, 1)
    }

    #[test]
    fn distance_1_swaps_each_pair() {
        let mut kit = kit(json!({}));
        let mut got = Vec::new();
        for (i, s) in ["a", "b", "c", "d"].iter().enumerate() {
            let out = kit.frame(i as u64 * 10, text(s));
            got.extend(kit.log(&out));
        }
        assert_eq!(
            got,
            [
                at(10, "text:b"),
                at(10, "text:a"),
                at(30, "text:d"),
                at(30, "text:c"),
            ]
        );
        assert_eq!(kit.actions, 2, "one action per held message");
        assert_eq!(kit.next_deadline(30), None, "nothing held");
    }

    #[test]
    fn distance_2_waits_for_two_messages() {
        let mut kit = kit(json!({"distance": 2}));
        let mut got = Vec::new();
        for s in ["a", "b", "c", "d", "e", "f", "g"] {
            let out = kit.frame(0, text(s));
            got.extend(kit.log(&out).into_iter().map(|(_, w)| w));
        }
        assert_eq!(
            got,
            ["text:b", "text:c", "text:a", "text:e", "text:f", "text:d"]
        );
        assert_eq!(kit.actions, 3, "g is held");
        let out = kit.eof(5);
        assert_eq!(kit.log(&out), [at(5, "text:g"), at(5, "eof")]);
    }

    #[test]
    fn control_frames_pass_and_do_not_count() {
        let mut kit = kit(json!({}));
        assert!(kit.frame(0, text("a")).is_empty());
        let out = kit.frame(1, ping("p"));
        assert_eq!(kit.log(&out), [at(1, "ping:p")]);
        let out = kit.frame(2, text("b"));
        assert_eq!(kit.log(&out), [at(2, "text:b"), at(2, "text:a")]);
    }

    #[test]
    fn max_hold_releases_at_the_exact_instant() {
        let mut kit = kit(json!({"max_hold": 300}));
        assert!(kit.frame(10, text("a")).is_empty());
        assert_eq!(kit.next_deadline(10), Some(crate::toxics::ms(310)));
        assert!(kit.deadline(309).is_empty(), "not yet");
        let out = kit.deadline(310);
        assert_eq!(kit.log(&out), [at(310, "text:a")]);
        assert_eq!(kit.next_deadline(310), None);
        assert_eq!(kit.actions, 1);
        // Counted from when the frame was ready (an earlier toxic held it).
        let out = kit.frame_ready(kit.t(400), kit.t(450), text("b"));
        assert!(out.is_empty());
        assert_eq!(kit.next_deadline(400), Some(crate::toxics::ms(750)));
    }

    #[test]
    fn a_fragmented_message_is_held_whole() {
        let mut kit = kit(json!({}));
        assert!(kit.frame(0, frame(false, Opcode::Text, "a1")).is_empty());
        let out = kit.frame(1, ping("p"));
        assert_eq!(kit.log(&out), [at(1, "ping:p")], "pings pass at once");
        assert!(kit
            .frame(2, frame(false, Opcode::Continuation, "a2"))
            .is_empty());
        assert!(kit
            .frame(3, frame(true, Opcode::Continuation, "a3"))
            .is_empty());
        let out = kit.frame(4, text("b"));
        assert_eq!(
            kit.log(&out),
            [
                at(4, "text:b"),
                at(4, "text+:a1"),
                at(4, "cont+:a2"),
                at(4, "cont:a3"),
            ]
        );
        assert_eq!(kit.actions, 1);
    }

    #[test]
    fn never_released_inside_another_fragmented_message() {
        let mut kit = kit(json!({"max_hold": 100}));
        assert!(kit.frame(0, text("a")).is_empty());
        let out = kit.frame(10, frame(false, Opcode::Binary, "b1"));
        assert_eq!(kit.log(&out), [at(10, "binary+:b1")]);
        assert_eq!(kit.next_deadline(10), None, "b is mid-way");
        assert!(kit.deadline(150).is_empty());
        let out = kit.frame(200, frame(true, Opcode::Continuation, "b2"));
        assert_eq!(kit.log(&out), [at(200, "cont:b2"), at(200, "text:a")]);
    }

    #[test]
    fn max_hold_waits_for_the_end_of_a_message_the_toxic_is_not_shown() {
        let mut kit = kit(json!({"max_hold": 100}));
        assert!(kit.frame(0, text("a")).is_empty());
        kit.unseen_message = true;
        assert_eq!(kit.next_deadline(100), None);
        kit.unseen_message = false;
        assert_eq!(kit.next_deadline(120), Some(crate::toxics::ms(100)));
        let out = kit.deadline(120);
        assert_eq!(kit.log(&out), [at(120, "text:a")]);
    }

    #[test]
    fn max_hold_during_the_held_message_releases_what_came_and_passes_the_rest() {
        let mut kit = kit(json!({"max_hold": 100}));
        assert!(kit.frame(0, frame(false, Opcode::Text, "a1")).is_empty());
        assert_eq!(kit.next_deadline(50), Some(crate::toxics::ms(100)));
        let out = kit.deadline(100);
        assert_eq!(kit.log(&out), [at(100, "text+:a1")]);
        let out = kit.frame(120, frame(true, Opcode::Continuation, "a2"));
        assert_eq!(kit.log(&out), [at(120, "cont:a2")]);
        assert_eq!(kit.actions, 1);
    }

    #[test]
    fn eof_releases_the_held_message_first() {
        let mut kit = kit(json!({}));
        assert!(kit.frame(0, text("a")).is_empty());
        let out = kit.eof(7);
        assert_eq!(kit.log(&out), [at(7, "text:a"), at(7, "eof")]);
        // A FIN that cuts a passing fragmented message takes the held one
        // with it: it cannot follow without breaking the frame sequence.
        let mut kit = Kit::new("reorder", json!({}), 1);
        assert!(kit.frame(0, text("a")).is_empty());
        assert_eq!(kit.frame(1, frame(false, Opcode::Text, "b1")).len(), 1);
        let out = kit.eof(2);
        assert_eq!(kit.log(&out), [at(2, "eof")]);
    }

    #[test]
    fn a_closing_schedule_window_releases_the_held_message() {
        let mut kit = kit(json!({}));
        assert!(kit.frame(0, text("a")).is_empty());
        let out = kit.stop(40);
        assert_eq!(kit.log(&out), [at(40, "text:a")]);
        assert_eq!(kit.next_deadline(40), None);
        assert!(kit.stop(50).is_empty());
    }

    #[test]
    fn probability_half_seed_2_holds_exactly_these() {
        // The same draws as duplicate's test: below 0.5 at messages
        // 3, 4, 6, 8, 15, 17, 18, 19; 4 and 18 come while a message is
        // held, so they pass (and release it).
        let mut kit = Kit::new("reorder", json!({"probability": 0.5}), 2);
        let mut order = Vec::new();
        for i in 0..20 {
            assert_eq!(kit.frame(0, ping("p")).len(), 1, "pings draw nothing");
            let out = kit.frame(0, text(&i.to_string()));
            for (_, what) in kit.log(&out) {
                let n = what.trim_start_matches("text:").parse::<u32>();
                order.push(n.expect("a numbered text message"));
            }
        }
        assert_eq!(
            order,
            [0, 1, 2, 4, 3, 5, 7, 6, 9, 8, 10, 11, 12, 13, 14, 16, 15, 18, 17]
        );
        assert_eq!(kit.actions, 6, "3, 6, 8, 15, 17 and 19 held");
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..19).collect::<Vec<_>>(), "nothing lost");
    }

    #[test]
    fn inert_at_probability_zero_and_compressed_messages_keep_their_place() {
        assert!(def("reorder", json!({"probability": 0})).is_inert());
        assert!(!def("reorder", json!({})).is_inert());
        assert!(def("reorder", json!({})).changes_payload());
    }

    #[test]
    fn parse_errors_name_field_value_and_range() {
        assert_eq!(
            parse_error("reorder", json!({"distance": 0})),
            "reorder attribute distance=0 is invalid: valid range is integers 1..=1000000"
        );
        assert_eq!(
            parse_error("reorder", json!({"max_hold": 3600001})),
            "reorder attribute max_hold=3600001 is invalid: valid range is integers 1..=3600000"
        );
        assert_eq!(
            parse_error("reorder", json!({"probability": 2})),
            "reorder attribute probability=2 is invalid: valid range is 0..=1"
        );
        assert_eq!(
            parse_error("reorder", json!({"delay": 5})),
            "reorder has no attribute delay: valid attributes are distance, max_hold, probability"
        );
    }
}
