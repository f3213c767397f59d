//! Test kit: drives one toxic type with a fixed clock and a seeded RNG.
//!
//! Time is a base [`Instant`] plus explicit offsets (nothing sleeps and
//! nothing reads the wall clock after the base is taken), so tests assert
//! exact decisions and release times:
//!
//! ```ignore
//! let mut kit = Kit::new("latency", json!({"latency": 100}), 7);
//! let out = kit.frame(30, text("a"));
//! assert_eq!(kit.log(&out), [at(130, "text:a")]);
//! ```
//!
//! [`Kit`] holds a type's [`ToxicState`] (instantiated with `armed_at` =
//! base) and calls it the way [`ActiveToxic`] does; [`entry`] and
//! [`active`] build the activation layer for tests of `runtime.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::Value;

use super::api::{DeadlineCx, EndAction, InstanceCx, Item, Output, ToxicCx, ToxicDef, ToxicState};
use super::attrs::Attributes;
use super::matching::ConnFacts;
use super::runtime::ActiveToxic;
use super::spec::{ToxicEntry, ToxicSpec};
use super::REGISTRY;
use crate::frame::{Frame, Opcode};
use crate::vocab::Activity;

/// Parses `attrs` as a toxic of type `kind` (unknown keys rejected too);
/// the error is the message a user would see.
pub(crate) fn parse(kind: &str, attrs: Value) -> Result<Arc<dyn ToxicDef>, String> {
    let (_, parse) = REGISTRY
        .iter()
        .find(|(name, _)| *name == kind)
        .unwrap_or_else(|| panic!("no toxic type {kind}"));
    let map = attrs
        .as_object()
        .cloned()
        .expect("attributes are an object");
    let mut attrs = Attributes::new(kind, map);
    let def = parse(&mut attrs).map_err(|e| e.to_string())?;
    attrs.finish().map_err(|e| e.to_string())?;
    Ok(def)
}

/// The definition of a valid toxic; panics with the message when invalid.
pub(crate) fn def(kind: &str, attrs: Value) -> Arc<dyn ToxicDef> {
    parse(kind, attrs).unwrap_or_else(|e| panic!("{kind} should parse: {e}"))
}

/// The error message of an invalid toxic; panics when it parses.
pub(crate) fn parse_error(kind: &str, attrs: Value) -> String {
    match parse(kind, attrs) {
        Ok(def) => panic!("{kind} should be rejected, got {def:?}"),
        Err(e) => e,
    }
}

/// A seeded RNG, the same for the same seed.
pub(crate) fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// A final text frame, unmasked.
pub(crate) fn text(s: &str) -> Frame {
    Frame::build(true, 0, Opcode::Text, s.as_bytes(), None)
}

/// A frame with the given FIN bit and opcode, unmasked.
pub(crate) fn frame(fin: bool, opcode: Opcode, payload: &str) -> Frame {
    Frame::build(fin, 0, opcode, payload.as_bytes(), None)
}

/// A ping, unmasked.
pub(crate) fn ping(payload: &str) -> Frame {
    frame(true, Opcode::Ping, payload)
}

/// An expected log line: released `ms` after the base, described as `what`.
pub(crate) fn at(ms: u64, what: &str) -> (Duration, String) {
    (Duration::from_millis(ms), what.to_string())
}

/// Describes an item: `text:abc` (final), `text+:ab` (more fragments
/// follow), `cont:c`, `ping:x`, `close-frame:1000`, `raw:6`, `eof`, `cut:Reset`,
/// `close:4000 'bye' / 1001 'going away'` (to the receiver / to the sender).
pub(crate) fn show(item: &Item) -> String {
    match item {
        Item::Frame(f) if f.header.opcode == Opcode::Close => {
            format!("close-frame:{}", f.close_code())
        }
        Item::Frame(f) => {
            let op = match f.header.opcode {
                Opcode::Continuation => "cont",
                Opcode::Text => "text",
                Opcode::Binary => "binary",
                Opcode::Close => "close",
                Opcode::Ping => "ping",
                Opcode::Pong => "pong",
            };
            let more = if f.header.fin { "" } else { "+" };
            format!("{op}{more}:{}", String::from_utf8_lossy(&f.plain_payload()))
        }
        Item::Raw(bytes) => format!("raw:{}", bytes.len()),
        Item::Eof => "eof".into(),
        Item::End(EndAction::Cut(mode)) => format!("cut:{mode:?}"),
        Item::End(EndAction::Close {
            to_receiver,
            to_sender,
        }) => format!(
            "close:{} '{}' / {} '{}'",
            to_receiver.code, to_receiver.reason, to_sender.code, to_sender.reason
        ),
    }
}

/// The frames among outputs.
pub(crate) fn frames(out: &[Output]) -> Vec<&Frame> {
    out.iter()
        .filter_map(|o| match &o.item {
            Item::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

/// One toxic state on a fixed clock, with a seeded RNG.
pub(crate) struct Kit {
    /// Time zero; the state is armed at this instant.
    pub base: Instant,
    /// The connection's activity clock (opened at `base`).
    pub activity: Activity,
    /// Whether the link writes to the server (then built frames are masked).
    pub to_server: bool,
    /// Actions counted so far (`cx.act()`).
    pub actions: u64,
    /// What [`DeadlineCx::unseen_message`] says: a message the toxic is not
    /// shown is mid-way.
    pub unseen_message: bool,
    rng: SmallRng,
    facts: ConnFacts,
    state: Box<dyn ToxicState>,
}

impl Kit {
    /// A `kind` toxic with `attrs`, armed at the base, RNG seeded with `seed`.
    pub(crate) fn new(kind: &str, attrs: Value, seed: u64) -> Kit {
        let base = Instant::now();
        let state = def(kind, attrs).instantiate(&InstanceCx {
            armed_at: base,
            message_triggered: false,
        });
        Kit {
            base,
            activity: Activity::new(base),
            to_server: false,
            actions: 0,
            unseen_message: false,
            rng: rng(seed),
            facts: facts(base),
            state,
        }
    }

    /// The instant `ms` after the base.
    pub(crate) fn t(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    /// Outputs as (release time after the base, description).
    pub(crate) fn log(&self, out: &[Output]) -> Vec<(Duration, String)> {
        out.iter()
            .map(|o| (o.not_before.duration_since(self.base), show(&o.item)))
            .collect()
    }

    /// Release times of outputs, after the base.
    pub(crate) fn times(&self, out: &[Output]) -> Vec<Duration> {
        out.iter()
            .map(|o| o.not_before.duration_since(self.base))
            .collect()
    }

    fn call(
        &mut self,
        now: Instant,
        ready_at: Instant,
        f: impl FnOnce(&mut dyn ToxicState, &mut ToxicCx<'_>),
    ) -> Vec<Output> {
        let mut out = Vec::new();
        let mut cx = ToxicCx {
            now,
            ready_at,
            rng: &mut self.rng,
            out: &mut out,
            to_server: self.to_server,
            actions: 0,
            skips: 0,
            activity: &self.activity,
            facts: &self.facts,
        };
        f(self.state.as_mut(), &mut cx);
        self.actions += cx.actions;
        out
    }

    /// A frame arrives `ms` after the base, ready at once.
    pub(crate) fn frame(&mut self, ms: u64, frame: Frame) -> Vec<Output> {
        let now = self.t(ms);
        self.frame_ready(now, now, frame)
    }

    /// A frame handled at `now` that may not go before `ready_at` (an
    /// earlier toxic in the chain held it).
    pub(crate) fn frame_ready(&mut self, now: Instant, ready_at: Instant, f: Frame) -> Vec<Output> {
        self.call(now, ready_at, |state, cx| state.on_frame(f, cx))
    }

    /// The sender's FIN arrives `ms` after the base.
    pub(crate) fn eof(&mut self, ms: u64) -> Vec<Output> {
        let now = self.t(ms);
        self.call(now, now, |state, cx| state.on_eof(cx))
    }

    /// The next deadline the state asks for, seen `ms` after the base, as
    /// an offset from the base.
    pub(crate) fn next_deadline(&self, ms: u64) -> Option<Duration> {
        let cx = DeadlineCx {
            now: self.t(ms),
            activity: &self.activity,
            unseen_message: self.unseen_message,
        };
        self.state
            .next_deadline(&cx)
            .map(|t| t.duration_since(self.base))
    }

    /// Runs the deadline handler `ms` after the base.
    pub(crate) fn deadline(&mut self, ms: u64) -> Vec<Output> {
        let now = self.t(ms);
        self.call(now, now, |state, cx| state.on_deadline(cx))
    }

    /// The schedule window closes `ms` after the base ([`ToxicState::on_stop`]).
    pub(crate) fn stop(&mut self, ms: u64) -> Vec<Output> {
        let now = self.t(ms);
        self.call(now, now, |state, cx| state.on_stop(cx))
    }

    /// Until when reading is paused, asked `ms` after the base, as an
    /// offset from the base.
    pub(crate) fn paused_until(&mut self, ms: u64) -> Option<Duration> {
        let now = self.t(ms);
        self.state
            .paused_until(now)
            .map(|t| t.duration_since(self.base))
    }
}

/// Connection facts of a plain connection to `/` opened at `opened_at`.
pub(crate) fn facts(opened_at: Instant) -> ConnFacts {
    ConnFacts {
        opened_at,
        path: "/".into(),
        subprotocol: None,
        headers: Vec::new(),
        compressed: false,
    }
}

/// A validated downstream toxic from JSON (`type`, `attributes`,
/// `toxicity`, `match`, `schedule`...), added at `added_at`.
pub(crate) fn entry(spec: Value, added_at: Instant) -> Arc<ToxicEntry> {
    let spec: ToxicSpec = serde_json::from_value(spec).expect("spec JSON");
    let mut entry = spec.validate_in(0, REGISTRY).expect("valid toxic");
    entry.added_at = added_at;
    Arc::new(entry)
}

/// `entry` on connection `ordinal` of proxy `p` with `--seed seed`, with
/// its own metrics (read them back with [`actions_of`]).
pub(crate) fn active(
    entry: Arc<ToxicEntry>,
    facts: &ConnFacts,
    seed: u64,
    ordinal: u64,
    metrics: &crate::metrics::ProxyMetrics,
) -> ActiveToxic {
    ActiveToxic::new(entry, facts, Some(seed), "p", ordinal, metrics)
}

/// Fresh metrics of proxy `p`.
pub(crate) fn metrics() -> crate::metrics::ProxyMetrics {
    crate::metrics::Metrics::new().for_proxy("p")
}

/// The action count of a toxic in `metrics`.
pub(crate) fn actions_of(metrics: &crate::metrics::ProxyMetrics, entry: &ToxicEntry) -> u64 {
    metrics
        .toxic_actions(&entry.spec.name, &entry.spec.kind)
        .get()
}
