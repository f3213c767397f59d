//! `drop_connection`: the connection ends with no close frame — RST, FIN,
//! or silence with TCP left open (`mode`), after `after_messages` messages
//! or `after_ms` ms, with `probability`.
//!
//! With `after_messages` (default 0) the first N messages pass; before each
//! later message the drop happens with `probability` (so `probability:
//! 0.02` drops about every 50 messages). With `after_ms` the drop is decided
//! once when the timer fires.

use std::sync::Arc;
use std::time::Instant;

use rand::RngExt;

use super::api::{
    ms, DeadlineCx, EndAction, InstanceCx, Item, MessageTracker, ToxicCx, ToxicDef, ToxicState,
};
use super::attrs::{AttrError, Attributes};
use crate::frame::Frame;
use crate::vocab::CutMode;

#[derive(Debug)]
struct DropConnection {
    after_messages: Option<u64>,
    after_ms: Option<u64>,
    probability: f64,
    mode: CutMode,
}

/// Parses `after_messages` or `after_ms`, `probability` (default 1), `mode`
/// (`reset`|`fin`|`blackhole`, default reset).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let after_messages = attrs.opt_u64("after_messages", 0..=u64::MAX >> 1)?;
    let after_ms = attrs.opt_u64("after_ms", 0..=86_400_000)?;
    if after_messages.is_some() && after_ms.is_some() {
        return Err(AttrError::new(
            "after_ms",
            "drop_connection takes after_messages or after_ms, not both",
        ));
    }
    let probability = attrs.probability_or("probability", 1.0)?;
    let mode = match attrs
        .choice_or("mode", &["reset", "fin", "blackhole"], "reset")?
        .as_str()
    {
        "fin" => CutMode::Fin,
        "blackhole" => CutMode::Blackhole,
        _ => CutMode::Reset,
    };
    Ok(Arc::new(DropConnection {
        after_messages,
        after_ms,
        probability,
        mode,
    }))
}

impl ToxicDef for DropConnection {
    fn instantiate(&self, cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            timer: self.after_ms.map(|t| cx.armed_at + ms(t)),
            after_messages: if self.after_ms.is_some() {
                None
            } else {
                Some(self.after_messages.unwrap_or(0))
            },
            seen: 0,
            probability: self.probability,
            mode: self.mode,
            tracker: MessageTracker::default(),
            done: false,
        })
    }
    fn is_inert(&self) -> bool {
        self.probability <= 0.0
    }
}

struct State {
    timer: Option<Instant>,
    after_messages: Option<u64>,
    seen: u64,
    probability: f64,
    mode: CutMode,
    tracker: MessageTracker,
    done: bool,
}

impl State {
    fn drop_now(&mut self, cx: &mut ToxicCx<'_>) {
        self.done = true;
        cx.act();
        cx.emit(Item::End(EndAction::Cut(self.mode)));
    }
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        if self.done {
            return;
        }
        let (starts, _) = self.tracker.observe(&frame);
        if starts {
            if let Some(n) = self.after_messages {
                if self.seen >= n {
                    let draw: f64 = cx.rng.random();
                    if draw < self.probability {
                        self.drop_now(cx);
                        return;
                    }
                }
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
        let Some(at) = self.timer else { return };
        if self.done || at > cx.now {
            return;
        }
        self.timer = None;
        let draw: f64 = cx.rng.random();
        if draw < self.probability {
            self.drop_now(cx);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::frame::Opcode;
    use crate::toxics::api::ms;
    use crate::toxics::testkit::{at, def, frame, parse_error, ping, text, Kit};

    #[test]
    fn after_3_messages_the_4th_is_not_delivered_and_tcp_is_reset() {
        let mut kit = Kit::new("drop_connection", json!({"after_messages": 3}), 1);
        for i in 0..3 {
            let out = kit.frame(i, text(&i.to_string()));
            assert_eq!(kit.log(&out), [at(i, &format!("text:{i}"))]);
        }
        let out = kit.frame(3, text("3"));
        assert_eq!(kit.log(&out), [at(3, "cut:Reset")]);
        assert!(kit.frame(4, text("4")).is_empty(), "nothing after the cut");
        assert_eq!(kit.actions, 1);
    }

    #[test]
    fn fragments_and_pings_are_not_messages() {
        let mut kit = Kit::new("drop_connection", json!({"after_messages": 1}), 1);
        let out = kit.frame(0, frame(false, Opcode::Text, "a"));
        assert_eq!(kit.log(&out), [at(0, "text+:a")]);
        let out = kit.frame(1, ping("p"));
        assert_eq!(kit.log(&out), [at(1, "ping:p")]);
        let out = kit.frame(2, frame(true, Opcode::Continuation, "b"));
        assert_eq!(kit.log(&out), [at(2, "cont:b")]);
        let out = kit.frame(3, text("second"));
        assert_eq!(kit.log(&out), [at(3, "cut:Reset")]);
    }

    #[test]
    fn mode_picks_fin_or_blackhole() {
        for (mode, end) in [
            ("fin", "cut:Fin"),
            ("blackhole", "cut:Blackhole"),
            ("reset", "cut:Reset"),
        ] {
            let mut kit = Kit::new("drop_connection", json!({"mode": mode}), 1);
            let out = kit.frame(0, text("a"));
            assert_eq!(kit.log(&out), [at(0, end)], "mode {mode}");
        }
    }

    #[test]
    fn with_probability_each_later_message_draws_seeded() {
        // Seed 4, probability 0.25: the draws before messages 0..=3 pass,
        // the one before message 4 drops the connection.
        let mut kit = Kit::new("drop_connection", json!({"probability": 0.25}), 4);
        let log: Vec<_> = (0..6)
            .map(|i| {
                let out = kit.frame(i, text("m"));
                kit.log(&out)
            })
            .collect();
        assert_eq!(
            log,
            [
                vec![at(0, "text:m")],
                vec![at(1, "text:m")],
                vec![at(2, "text:m")],
                vec![at(3, "text:m")],
                vec![at(4, "cut:Reset")],
                vec![],
            ]
        );
        assert_eq!(kit.actions, 1);
    }

    #[test]
    fn after_ms_cuts_exactly_at_the_timer_and_lets_messages_pass() {
        let mut kit = Kit::new(
            "drop_connection",
            json!({"after_ms": 500, "mode": "fin"}),
            1,
        );
        for i in 0..10 {
            assert_eq!(kit.frame(i * 10, text("m")).len(), 1, "messages pass");
        }
        assert_eq!(kit.next_deadline(100), Some(ms(500)));
        assert!(kit.deadline(499).is_empty(), "not due yet");
        let out = kit.deadline(500);
        assert_eq!(kit.log(&out), [at(500, "cut:Fin")]);
        assert_eq!(kit.next_deadline(500), None);
    }

    #[test]
    fn after_ms_with_probability_decides_once_per_connection() {
        let fired: Vec<bool> = (1..=8)
            .map(|seed| {
                let mut kit = Kit::new(
                    "drop_connection",
                    json!({"after_ms": 100, "probability": 0.5}),
                    seed,
                );
                let out = kit.deadline(100);
                // Decided once: no later deadline, whatever the draw.
                assert_eq!(kit.next_deadline(100), None);
                assert!(kit.deadline(200).is_empty());
                !out.is_empty()
            })
            .collect();
        assert_eq!(fired, [false, false, true, false, true, false, true, true]);
    }

    #[test]
    fn probability_zero_is_inert() {
        assert!(def("drop_connection", json!({"probability": 0})).is_inert());
        assert!(!def("drop_connection", json!({"probability": 0.1})).is_inert());
    }

    #[test]
    fn parse_errors_name_the_fields_and_choices() {
        assert_eq!(
            parse_error(
                "drop_connection",
                json!({"after_messages": 1, "after_ms": 1})
            ),
            "drop_connection takes after_messages or after_ms, not both"
        );
        assert_eq!(
            parse_error("drop_connection", json!({"mode": "kill"})),
            "drop_connection attribute mode=\"kill\" is invalid: valid choices are reset, fin, blackhole"
        );
    }
}
