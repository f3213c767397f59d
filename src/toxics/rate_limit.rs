//! `rate_limit`: data messages beyond `messages_per_second` (a token bucket
//! of size `burst`, starting full) are delayed, dropped, or the sender gets
//! close 1008 and the other side 1001 (`action`).
//!
//! The bucket is a GCRA on the link's clock, written here rather than taken
//! from `governor`: the `delay` action must reserve capacity at a future
//! instant (the delayed message's release time), which governor's
//! check-now API does not offer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::api::{
    CloseSpec, EndAction, InstanceCx, Item, MessageTracker, ToxicCx, ToxicDef, ToxicState,
};
use super::attrs::{AttrError, Attributes};
use crate::frame::Frame;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Delay,
    Drop,
    Close,
}

#[derive(Debug)]
struct RateLimit {
    per_second: f64,
    burst: u64,
    action: Action,
}

/// Parses `messages_per_second` (> 0, required), `burst` (≥ 1, default =
/// messages_per_second) and `action` (`delay`|`drop`|`close`, default delay).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let per_second = attrs
        .opt_f64("messages_per_second", 0.001..=10_000_000.0)?
        .ok_or_else(|| AttrError::new("messages_per_second", "rate_limit attribute messages_per_second is missing: valid range is 0.001..=10000000"))?;
    let burst = attrs.u64_or("burst", 1..=100_000_000, per_second.ceil().max(1.0) as u64)?;
    let action = match attrs
        .choice_or("action", &["delay", "drop", "close"], "delay")?
        .as_str()
    {
        "drop" => Action::Drop,
        "close" => Action::Close,
        _ => Action::Delay,
    };
    Ok(Arc::new(RateLimit {
        per_second,
        burst,
        action,
    }))
}

impl ToxicDef for RateLimit {
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        let interval = Duration::from_secs_f64(1.0 / self.per_second);
        Box::new(State {
            interval,
            tolerance: interval * (self.burst.saturating_sub(1)) as u32,
            tat: None,
            action: self.action,
            tracker: MessageTracker::default(),
            current: Decision::Pass,
            done: false,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    Pass,
    DelayUntil(Instant),
    Drop,
}

struct State {
    interval: Duration,
    tolerance: Duration,
    /// Theoretical arrival time of the next conforming message.
    tat: Option<Instant>,
    action: Action,
    tracker: MessageTracker,
    current: Decision,
    done: bool,
}

impl State {
    /// GCRA: when may a message arriving at `at` go?
    fn conforming_at(&self, at: Instant) -> Instant {
        let tat = self.tat.unwrap_or(at).max(at);
        if tat <= at + self.tolerance {
            at
        } else {
            tat - self.tolerance
        }
    }

    fn consume(&mut self, at: Instant) {
        let tat = self.tat.unwrap_or(at).max(at);
        self.tat = Some(tat + self.interval);
    }
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        if self.done {
            return;
        }
        let Some(frame) = cx.data_frame(frame) else {
            return;
        };
        let (starts, _) = self.tracker.observe(&frame);
        if starts {
            let arrival = cx.ready_at;
            let allowed = self.conforming_at(arrival);
            self.current = if allowed <= arrival {
                self.consume(arrival);
                Decision::Pass
            } else {
                cx.act();
                match self.action {
                    Action::Delay => {
                        self.consume(allowed);
                        Decision::DelayUntil(allowed)
                    }
                    Action::Drop => Decision::Drop,
                    Action::Close => {
                        self.done = true;
                        cx.emit(Item::End(EndAction::Close {
                            to_receiver: CloseSpec {
                                code: 1001,
                                reason: "going away".into(),
                            },
                            to_sender: CloseSpec {
                                code: 1008,
                                reason: "rate limit exceeded".into(),
                            },
                        }));
                        return;
                    }
                }
            };
        }
        match self.current {
            Decision::Pass => cx.emit(Item::Frame(frame)),
            Decision::DelayUntil(at) => cx.emit_at(Item::Frame(frame), at),
            Decision::Drop => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::frame::Opcode;
    use crate::toxics::testkit::{at, frame, parse_error, ping, text, Kit};

    #[test]
    fn delay_releases_the_excess_at_exact_bucket_instants() {
        // 2/s, burst 2: interval 500 ms, two tokens at the start.
        let mut kit = Kit::new(
            "rate_limit",
            json!({"messages_per_second": 2, "burst": 2}),
            1,
        );
        let mut log = Vec::new();
        for i in 0..4 {
            let out = kit.frame(0, text(&i.to_string()));
            log.extend(kit.log(&out));
        }
        let out = kit.frame(1200, text("4"));
        log.extend(kit.log(&out));
        assert_eq!(
            log,
            [
                at(0, "text:0"),
                at(0, "text:1"),
                at(500, "text:2"),
                at(1000, "text:3"),
                at(1500, "text:4"),
            ]
        );
        assert_eq!(kit.actions, 3, "one action per delayed message");
    }

    #[test]
    fn a_delayed_message_holds_all_its_fragments_but_not_pings() {
        let mut kit = Kit::new(
            "rate_limit",
            json!({"messages_per_second": 2, "burst": 1}),
            1,
        );
        assert_eq!(kit.frame(0, text("first")).len(), 1);
        let mut log = Vec::new();
        for f in [
            frame(false, Opcode::Text, "a"),
            ping("p"),
            frame(true, Opcode::Continuation, "b"),
        ] {
            let out = kit.frame(10, f);
            log.extend(kit.log(&out));
        }
        assert_eq!(
            log,
            [at(500, "text+:a"), at(10, "ping:p"), at(500, "cont:b")]
        );
    }

    #[test]
    fn drop_discards_until_a_token_is_back() {
        let mut kit = Kit::new(
            "rate_limit",
            json!({"messages_per_second": 2, "burst": 2, "action": "drop"}),
            1,
        );
        let passed: Vec<u64> = [0, 0, 0, 400, 500, 600, 1000]
            .into_iter()
            .filter(|t| !kit.frame(*t, text("m")).is_empty())
            .collect();
        assert_eq!(passed, [0, 0, 500, 1000]);
        assert_eq!(kit.actions, 3);
    }

    #[test]
    fn close_sends_1008_to_the_sender_and_1001_to_the_receiver() {
        let mut kit = Kit::new(
            "rate_limit",
            json!({"messages_per_second": 1, "action": "close"}),
            1,
        );
        assert_eq!(kit.frame(0, text("a")).len(), 1);
        let out = kit.frame(10, text("b"));
        assert_eq!(
            kit.log(&out),
            [at(
                10,
                "close:1001 'going away' / 1008 'rate limit exceeded'"
            )]
        );
        assert!(
            kit.frame(2000, text("c")).is_empty(),
            "nothing after the close"
        );
    }

    #[test]
    fn burst_defaults_to_the_rate_rounded_up() {
        // 2.5/s: burst 3, interval 400 ms.
        let mut kit = Kit::new("rate_limit", json!({"messages_per_second": 2.5}), 1);
        let times: Vec<_> = (0..5)
            .flat_map(|_| {
                let out = kit.frame(0, text("m"));
                kit.times(&out)
            })
            .collect();
        assert_eq!(times, [0, 0, 0, 400, 800].map(crate::toxics::api::ms));
    }

    #[test]
    fn parse_errors_name_field_value_and_choices() {
        assert_eq!(
            parse_error("rate_limit", json!({"messages_per_second": 0})),
            "rate_limit attribute messages_per_second=0 is invalid: valid range is 0.001..=10000000"
        );
        assert_eq!(
            parse_error("rate_limit", json!({})),
            "rate_limit attribute messages_per_second is missing: valid range is 0.001..=10000000"
        );
        assert_eq!(
            parse_error("rate_limit", json!({"messages_per_second": 1, "action": "queue"})),
            "rate_limit attribute action=\"queue\" is invalid: valid choices are delay, drop, close"
        );
    }
}
