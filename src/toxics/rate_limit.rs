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
        .ok_or_else(|| AttrError("rate_limit attribute messages_per_second is missing: valid range is 0.001..=10000000".into()))?;
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
        if frame.header.opcode.is_control() {
            cx.emit(Item::Frame(frame));
            return;
        }
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
