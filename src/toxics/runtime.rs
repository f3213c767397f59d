//! The activation layer and the chain: how the relay runs toxics.
//!
//! [`ActiveToxic`] wraps one toxic's state on one connection and stream and
//! decides, once for all types, whether it acts: toxicity (drawn once),
//! `match` (see [`matching`](super::matching)), `schedule` (re-checked
//! between messages) and the compressed-message skip. [`run_chain`] and
//! [`run_deadline`] pass items through a link's chain in order;
//! [`handshake_actions`] does the same for the upgrade.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::RngExt;

use super::api::{
    DeadlineCx, HandshakeAction, InstanceCx, Item, MessageTracker, Output, ToxicCx, ToxicState,
};
use super::matching::ConnFacts;
use super::rng::toxic_rng;
use super::spec::ToxicEntry;
use crate::vocab::Activity;

/// A toxic instance on one link, with its activation state.
pub struct ActiveToxic {
    /// The entry it was built from.
    pub entry: Arc<ToxicEntry>,
    state: Box<dyn ToxicState>,
    rng: SmallRng,
    /// Drawn once: toxicity and `match`.
    applies: bool,
    armed_at: Instant,
    /// Activation, only changed between messages.
    active: bool,
    tracker: MessageTracker,
    /// Inside a compressed message that this payload-changing toxic skips.
    skipping: bool,
    actions: prometheus::IntCounter,
    skips: prometheus::IntCounter,
}

impl ActiveToxic {
    /// Instantiates `entry` for one connection and stream.
    pub fn new(
        entry: Arc<ToxicEntry>,
        facts: &ConnFacts,
        seed: Option<u64>,
        proxy: &str,
        ordinal: u64,
        metrics: &crate::metrics::ProxyMetrics,
    ) -> ActiveToxic {
        let mut rng = toxic_rng(seed, proxy, ordinal, entry.spec.stream, &entry.spec.name);
        let drawn = entry.spec.toxicity >= 1.0 || rng.random::<f64>() < entry.spec.toxicity;
        let matched = entry.spec.matcher.as_ref().is_none_or(|m| m.matches(facts));
        let armed_at = entry.added_at.max(facts.opened_at);
        let inert = entry.def.is_inert();
        let state = entry.def.instantiate(&InstanceCx { armed_at });
        ActiveToxic {
            actions: metrics.toxic_actions(&entry.spec.name, &entry.spec.kind),
            skips: metrics.toxic_skips(&entry.spec.name, &entry.spec.kind),
            entry,
            state,
            rng,
            applies: drawn && matched && !inert,
            armed_at,
            active: false,
            tracker: MessageTracker::default(),
            skipping: false,
        }
    }

    /// Whether this instance can ever act on this connection.
    pub fn applies(&self) -> bool {
        self.applies
    }

    fn refresh_active(&mut self, now: Instant) {
        if !self.tracker.at_boundary() {
            return;
        }
        self.active = self.applies
            && self
                .entry
                .spec
                .schedule
                .as_ref()
                .is_none_or(|s| s.is_active(now.saturating_duration_since(self.armed_at)));
    }

    fn make_cx<'a>(
        rng: &'a mut SmallRng,
        out: &'a mut Vec<Output>,
        base: &'a ChainCx<'a>,
        ready_at: Instant,
    ) -> ToxicCx<'a> {
        ToxicCx {
            now: base.now,
            ready_at,
            rng,
            out,
            to_server: base.to_server,
            actions: 0,
            skips: 0,
            activity: base.activity,
            facts: base.facts,
        }
    }

    fn count(actions: &prometheus::IntCounter, skips: &prometheus::IntCounter, cx: &ToxicCx<'_>) {
        if cx.actions > 0 {
            actions.inc_by(cx.actions);
        }
        if cx.skips > 0 {
            skips.inc_by(cx.skips);
        }
    }

    /// Passes one item through this toxic.
    pub fn process(&mut self, input: Output, base: &ChainCx<'_>, out: &mut Vec<Output>) {
        self.refresh_active(base.now);
        let Output { not_before, item } = input;
        match item {
            Item::Frame(frame) => {
                let (starts, _) = self.tracker.observe(&frame);
                if starts {
                    self.skipping = base.facts.compressed
                        && frame.header.rsv1()
                        && self.entry.def.changes_payload();
                    if self.skipping && self.active {
                        self.skips.inc();
                    }
                }
                let data_skip = self.skipping && frame.header.opcode.is_data();
                if !self.active || data_skip {
                    out.push(Output {
                        not_before,
                        item: Item::Frame(frame),
                    });
                    return;
                }
                let mut cx = Self::make_cx(&mut self.rng, out, base, not_before);
                self.state.on_frame(frame, &mut cx);
                Self::count(&self.actions, &self.skips, &cx);
            }
            Item::Eof if self.active => {
                let mut cx = Self::make_cx(&mut self.rng, out, base, not_before);
                self.state.on_eof(&mut cx);
                Self::count(&self.actions, &self.skips, &cx);
            }
            other => out.push(Output {
                not_before,
                item: other,
            }),
        }
    }

    /// The instance's next deadline, when active.
    pub fn next_deadline(&mut self, now: Instant, activity: &Activity) -> Option<Instant> {
        if !self.applies {
            return None;
        }
        self.refresh_active(now);
        if !self.active {
            // Wake up when the schedule may open.
            return self
                .entry
                .spec
                .schedule
                .as_ref()
                .map(|_| now + Duration::from_millis(50));
        }
        self.state.next_deadline(&DeadlineCx { now, activity })
    }

    /// Runs the deadline handler.
    pub fn on_deadline(&mut self, base: &ChainCx<'_>, out: &mut Vec<Output>) {
        if !self.active {
            return;
        }
        let mut cx = Self::make_cx(&mut self.rng, out, base, base.now);
        self.state.on_deadline(&mut cx);
        Self::count(&self.actions, &self.skips, &cx);
    }

    /// Until when reading is paused, if at all.
    pub fn paused_until(&mut self, now: Instant) -> Option<Instant> {
        if !self.applies {
            return None;
        }
        self.refresh_active(now);
        if !self.active {
            return None;
        }
        let until = self.state.paused_until(now)?;
        (until > now).then_some(until)
    }
}

/// Shared context of one pass through the chain.
pub struct ChainCx<'a> {
    /// Now.
    pub now: Instant,
    /// Whether the link writes to the server.
    pub to_server: bool,
    /// The connection's activity clock.
    pub activity: &'a Activity,
    /// Connection facts.
    pub facts: &'a ConnFacts,
}

/// Runs `input` through every toxic of `chain` in order, appending to `out`.
pub fn run_chain(
    chain: &mut [ActiveToxic],
    input: Output,
    base: &ChainCx<'_>,
    out: &mut Vec<Output>,
) {
    let mut current = vec![input];
    let mut next = Vec::new();
    for toxic in chain.iter_mut() {
        for item in current.drain(..) {
            toxic.process(item, base, &mut next);
        }
        std::mem::swap(&mut current, &mut next);
    }
    out.append(&mut current);
}

/// Runs the deadline of toxic `index` and passes its outputs through the rest of the chain.
pub fn run_deadline(
    chain: &mut [ActiveToxic],
    index: usize,
    base: &ChainCx<'_>,
    out: &mut Vec<Output>,
) {
    let mut produced = Vec::new();
    chain[index].on_deadline(base, &mut produced);
    for item in produced {
        run_chain(&mut chain[index + 1..], item, base, out);
    }
}

/// Draws a handshake decision from every handshake toxic that applies, now.
pub fn handshake_actions(
    entries: &[Arc<ToxicEntry>],
    facts: &ConnFacts,
    seed: Option<u64>,
    proxy: &str,
    ordinal: u64,
) -> Vec<(Arc<ToxicEntry>, HandshakeAction)> {
    handshake_actions_at(Instant::now(), entries, facts, seed, proxy, ordinal)
}

/// [`handshake_actions`] with the clock given: schedules are read at `now`.
pub fn handshake_actions_at(
    now: Instant,
    entries: &[Arc<ToxicEntry>],
    facts: &ConnFacts,
    seed: Option<u64>,
    proxy: &str,
    ordinal: u64,
) -> Vec<(Arc<ToxicEntry>, HandshakeAction)> {
    let mut actions = Vec::new();
    for entry in entries {
        let mut rng = toxic_rng(seed, proxy, ordinal, entry.spec.stream, &entry.spec.name);
        let drawn = entry.spec.toxicity >= 1.0 || rng.random::<f64>() < entry.spec.toxicity;
        let matched = entry.spec.matcher.as_ref().is_none_or(|m| m.matches(facts));
        // Handshake toxics act before the connection exists: their timer
        // counts from the toxic being added.
        let scheduled = entry
            .spec
            .schedule
            .as_ref()
            .is_none_or(|s| s.is_active(now.saturating_duration_since(entry.added_at)));
        if !(drawn && matched && scheduled) || entry.def.is_inert() {
            continue;
        }
        let action = entry.def.on_handshake(&mut rng);
        if action != HandshakeAction::Continue {
            actions.push((entry.clone(), action));
        }
    }
    actions
}
