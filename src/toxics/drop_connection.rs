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
        return Err(AttrError(
            "drop_connection takes after_messages or after_ms, not both".into(),
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
