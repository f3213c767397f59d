//! The activation layer and the chain: how the relay runs toxics.
//!
//! [`ActiveToxic`] wraps one toxic's state on one connection and stream and
//! decides, once for all types, whether it acts: toxicity (drawn once),
//! `match` (see [`matching`](super::matching)), `schedule` (re-checked
//! between messages) and the compressed-message skip. [`run_chain`] and
//! [`run_deadline`] pass items through a link's chain in order;
//! [`handshake_actions`] does the same for the upgrade.
//!
//! (The file is long because its unit tests sit beside the logic: the code
//! ends near line 440, the rest drives the chain on a fixed clock.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::RngExt;

use super::api::{
    DeadlineCx, HandshakeAction, InstanceCx, Item, MessageTracker, Output, ToxicCx, ToxicState,
};
use super::matching::ConnFacts;
use super::message_match::{CountState, MessageFacts, MessageMatcher, Verdict};
use super::rng::toxic_rng;
use super::spec::ToxicEntry;
use crate::frame::Frame;
use crate::protocols::Profile;
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
    /// The schedule window closed: the state is told ([`ToxicState::on_stop`])
    /// at the next chance, so what it holds back is released.
    stopping: bool,
    tracker: MessageTracker,
    /// Inside a compressed message that this payload-changing toxic skips.
    skipping: bool,
    /// `match.message` / `count` tallies on this connection and stream.
    count_state: CountState,
    /// Inside a data message that `match.message` / `count` passed by.
    bypassing: bool,
    /// The end of the last pause counted as an action.
    last_pause_end: Option<Instant>,
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
        let message_triggered = entry.selector.as_ref().is_some_and(|s| s.matcher.is_some());
        let state = entry.def.instantiate(&InstanceCx {
            armed_at,
            message_triggered,
        });
        ActiveToxic {
            actions: metrics.toxic_actions(&entry.spec.name, &entry.spec.kind),
            skips: metrics.toxic_skips(&entry.spec.name, &entry.spec.kind),
            entry,
            state,
            rng,
            applies: drawn && matched && !inert,
            armed_at,
            active: false,
            stopping: false,
            tracker: MessageTracker::default(),
            skipping: false,
            count_state: CountState::default(),
            bypassing: false,
            last_pause_end: None,
        }
    }

    /// Whether this instance asks for message kinds (`match.message.kind`).
    pub fn needs_kind(&self) -> bool {
        self.applies && self.matcher().is_some_and(|m| m.needs_kind())
    }

    /// Whether this instance asks for whole payloads (`contains`, `regex`,
    /// `json`): the link then gathers fragmented messages.
    pub fn needs_payload(&self) -> bool {
        self.applies && self.matcher().is_some_and(|m| m.needs_payload())
    }

    fn matcher(&self) -> Option<&MessageMatcher> {
        self.entry.selector.as_ref()?.matcher.as_ref()
    }

    /// Decides whether the message (or control frame) that `frame` starts
    /// goes to this toxic: `match.message`, then `count`.
    fn selects(&mut self, frame: &Frame, base: &ChainCx<'_>) -> bool {
        let Some(selector) = &self.entry.selector else {
            return true;
        };
        let control = frame.header.opcode.is_control();
        let Some(matcher) = &selector.matcher else {
            // `count` alone counts data messages; control frames pass to the
            // toxic as they would without it.
            return control
                || selector
                    .count
                    .as_ref()
                    .is_none_or(|c| c.decide(&mut self.count_state));
        };
        let reads_kind = matcher.needs_kind() && base.profile.reads_payload();
        let plain = (reads_kind || matcher.needs_payload()).then(|| frame.plain_payload());
        let kind = matcher.needs_kind().then(|| {
            crate::protocols::classify(
                base.profile,
                frame.header.opcode,
                plain.as_deref().unwrap_or_default(),
                frame.header.fin,
            )
        });
        let payload = if !matcher.needs_payload() {
            None
        } else if frame.header.fin || control {
            plain.as_deref()
        } else {
            base.message_payload
        };
        let facts = MessageFacts {
            opcode: frame.header.opcode,
            kind,
            payload,
            compressed: base.facts.compressed && frame.header.rsv1(),
        };
        match matcher.evaluate(&facts) {
            Verdict::Match => selector
                .count
                .as_ref()
                .is_none_or(|c| c.decide(&mut self.count_state)),
            Verdict::NoMatch => false,
            Verdict::SkippedCompressed => {
                self.skips.inc();
                false
            }
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
        let active = self.applies
            && self
                .entry
                .spec
                .schedule
                .as_ref()
                .is_none_or(|s| s.is_active(now.saturating_duration_since(self.armed_at)));
        self.stopping |= self.active && !active;
        self.active = active;
    }

    /// The toxic is being removed or replaced: what its state still holds
    /// (a `reorder`'s message) is handed out, as when its window closes.
    pub fn release_on_removal(&mut self, base: &ChainCx<'_>, out: &mut Vec<Output>) {
        if !self.active {
            return;
        }
        let mut cx = Self::make_cx(&mut self.rng, out, base, base.now);
        self.state.on_stop(&mut cx);
        Self::count(&self.actions, &self.skips, &cx);
    }

    /// Tells the state its window closed, if it did since the last call:
    /// what it releases goes out now, before anything else.
    fn stop_if_due(&mut self, base: &ChainCx<'_>, out: &mut Vec<Output>) {
        if !std::mem::take(&mut self.stopping) {
            return;
        }
        let mut cx = Self::make_cx(&mut self.rng, out, base, base.now);
        self.state.on_stop(&mut cx);
        Self::count(&self.actions, &self.skips, &cx);
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
        self.stop_if_due(base, out);
        let Output {
            not_before,
            item,
            overtake,
        } = input;
        match item {
            Item::Frame(frame) => {
                let (starts, _) = self.tracker.observe(&frame);
                if self.active && self.entry.selector.is_some() {
                    let control = frame.header.opcode.is_control();
                    if starts {
                        self.bypassing = !self.selects(&frame, base);
                    }
                    let passes = if control {
                        !self.selects(&frame, base)
                    } else {
                        self.bypassing
                    };
                    if passes {
                        // Untouched, and not delayed by this toxic.
                        out.push(Output {
                            not_before,
                            item: Item::Frame(frame),
                            overtake: true,
                        });
                        return;
                    }
                }
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
                        overtake,
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
                overtake,
            }),
        }
    }

    /// The instance's next deadline, when active.
    pub fn next_deadline(&mut self, now: Instant, activity: &Activity) -> Option<Instant> {
        if !self.applies {
            return None;
        }
        self.refresh_active(now);
        if self.stopping {
            return Some(now);
        }
        if !self.active {
            // Wake up when the schedule may open.
            return self
                .entry
                .spec
                .schedule
                .as_ref()
                .map(|_| now + Duration::from_millis(50));
        }
        // Mid-way through a data message the state is not shown?
        let unseen_message = !self.tracker.at_boundary() && (self.bypassing || self.skipping);
        self.state.next_deadline(&DeadlineCx {
            now,
            activity,
            unseen_message,
        })
    }

    /// Runs the deadline handler (and [`ToxicState::on_stop`] first when
    /// the schedule window closed).
    pub fn on_deadline(&mut self, base: &ChainCx<'_>, out: &mut Vec<Output>) {
        self.stop_if_due(base, out);
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
        if until <= now {
            return None;
        }
        // Each pause window is one action (a `stall`), counted once.
        if self.last_pause_end != Some(until) {
            self.last_pause_end = Some(until);
            self.actions.inc();
        }
        Some(until)
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
    /// The connection's protocol profile (for `match.message.kind`).
    pub profile: &'a dyn Profile,
    /// The whole unmasked payload of the message being passed, when the
    /// link gathered it for a payload matcher.
    pub message_payload: Option<&'a [u8]>,
}

/// Runs `input` through every toxic of `chain` in order, appending to `out`.
pub fn run_chain(
    chain: &mut [ActiveToxic],
    input: Output,
    base: &ChainCx<'_>,
    out: &mut Vec<Output>,
) {
    // One toxic (the common case): straight into `out`, no allocation.
    if let [only] = chain {
        only.process(input, base, out);
        return;
    }
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::*;
    use crate::frame::{Frame, Opcode};
    use crate::toxics::api::ms;
    use crate::toxics::testkit::{
        actions_of, active, entry, facts, frame, metrics, ping, show, text,
    };

    /// Runs `frame` through `chain` at `now_ms` after `base`; returns
    /// (release ms after base, description).
    fn pass(
        chain: &mut [ActiveToxic],
        base: Instant,
        now_ms: u64,
        facts: &ConnFacts,
        frame: Frame,
    ) -> Vec<(u128, String)> {
        pass_as(crate::protocols::NONE, chain, base, now_ms, facts, frame)
    }

    /// [`pass`] on a connection of protocol `profile`.
    fn pass_as(
        profile: &dyn Profile,
        chain: &mut [ActiveToxic],
        base: Instant,
        now_ms: u64,
        facts: &ConnFacts,
        frame: Frame,
    ) -> Vec<(u128, String)> {
        let activity = Activity::new(base);
        let cx = cx_at(base, now_ms, &activity, facts, profile);
        let mut out = Vec::new();
        let input = Output::at(cx.now, Item::Frame(frame));
        run_chain(chain, input, &cx, &mut out);
        released(base, &out)
    }

    /// The chain context of a downstream link at `now_ms` after `base`.
    fn cx_at<'a>(
        base: Instant,
        now_ms: u64,
        activity: &'a Activity,
        facts: &'a ConnFacts,
        profile: &'a dyn Profile,
    ) -> ChainCx<'a> {
        ChainCx {
            now: base + ms(now_ms),
            to_server: false,
            activity,
            facts,
            profile,
            message_payload: None,
        }
    }

    /// What `out` releases: (release ms after base, description).
    fn released(base: Instant, out: &[Output]) -> Vec<(u128, String)> {
        out.iter()
            .map(|o| (o.not_before.duration_since(base).as_millis(), show(&o.item)))
            .collect()
    }

    /// One downstream toxic from `spec` on connection 0 of seed 1, with the
    /// time it was added, the connection's facts and its metrics.
    struct One {
        base: Instant,
        e: Arc<ToxicEntry>,
        f: ConnFacts,
        m: crate::metrics::ProxyMetrics,
        chain: [ActiveToxic; 1],
    }

    fn one(spec: serde_json::Value) -> One {
        let base = Instant::now();
        let e = entry(spec, base);
        let f = facts(base);
        let m = metrics();
        let chain = [active(e.clone(), &f, 1, 0, &m)];
        One {
            base,
            e,
            f,
            m,
            chain,
        }
    }

    /// The error validating `spec` gives; `why` says why it must fail.
    fn refused(spec: serde_json::Value, why: &str) -> crate::toxics::ToxicError {
        serde_json::from_value::<crate::toxics::ToxicSpec>(spec)
            .expect("spec")
            .validate(0)
            .expect_err(why)
    }

    #[test]
    fn toxicity_is_drawn_once_per_connection_from_the_seed() {
        let base = Instant::now();
        let e = entry(
            json!({"type": "message_loss", "toxicity": 0.5, "attributes": {"probability": 1.0}}),
            base,
        );
        let m = metrics();
        let applies: Vec<u64> = (0..30)
            .filter(|ordinal| active(e.clone(), &facts(base), 6, *ordinal, &m).applies())
            .collect();
        assert_eq!(applies, [1, 2, 3, 7, 8, 11, 20, 22, 25, 29]);
    }

    #[test]
    fn schedule_opens_between_messages_only() {
        let One {
            base,
            e,
            f,
            m,
            mut chain,
        } = one(
            json!({"type": "latency", "attributes": {"latency": 100}, "schedule": {"start_after": 100}}),
        );
        assert_eq!(
            pass(&mut chain, base, 50, &f, text("a")),
            [(50, "text:a".into())]
        );
        // A message that started before the window passes whole, untouched.
        assert_eq!(
            pass(&mut chain, base, 90, &f, frame(false, Opcode::Text, "b")),
            [(90, "text+:b".into())]
        );
        assert_eq!(
            pass(
                &mut chain,
                base,
                150,
                &f,
                frame(true, Opcode::Continuation, "c")
            ),
            [(150, "cont:c".into())]
        );
        assert_eq!(
            pass(&mut chain, base, 160, &f, text("d")),
            [(260, "text:d".into())]
        );
        assert_eq!(actions_of(&m, &e), 1);
        // While closed, the link is woken to look again 50 ms later.
        let mut closed = active(e, &f, 1, 0, &m);
        assert_eq!(
            closed.next_deadline(base + ms(10), &Activity::new(base)),
            Some(base + ms(60))
        );
    }

    #[test]
    fn payload_changing_toxics_skip_compressed_messages_and_count_the_skip() {
        let base = Instant::now();
        let mut f = facts(base);
        f.compressed = true;
        let e = entry(
            json!({"type": "message_loss", "attributes": {"probability": 1.0}}),
            base,
        );
        let m = metrics();
        let mut chain = [active(e.clone(), &f, 1, 0, &m)];
        let compressed = Frame::build(true, 0b100, Opcode::Text, b"z", None);
        assert_eq!(
            pass(&mut chain, base, 0, &f, compressed),
            [(0, "text:z".into())]
        );
        assert!(pass(&mut chain, base, 1, &f, text("plain")).is_empty());
        assert_eq!(m.toxic_skips(&e.spec.name, &e.spec.kind).get(), 1);
        assert_eq!(actions_of(&m, &e), 1);
        // A toxic that leaves payloads alone acts on compressed messages.
        let slow = entry(
            json!({"type": "latency", "attributes": {"latency": 100}}),
            base,
        );
        let mut chain = [active(slow.clone(), &f, 1, 0, &m)];
        let compressed = Frame::build(true, 0b100, Opcode::Text, b"z", None);
        assert_eq!(
            pass(&mut chain, base, 0, &f, compressed),
            [(100, "text:z".into())]
        );
        assert_eq!(m.toxic_skips(&slow.spec.name, &slow.spec.kind).get(), 0);
    }

    #[test]
    fn the_chain_applies_toxics_in_order() {
        let base = Instant::now();
        let f = facts(base);
        let m = metrics();
        let mut chain = [
            active(
                entry(
                    json!({"type": "latency", "attributes": {"latency": 100}}),
                    base,
                ),
                &f,
                1,
                0,
                &m,
            ),
            active(
                entry(
                    json!({"type": "fragment", "attributes": {"max_frame_bytes": 2}}),
                    base,
                ),
                &f,
                1,
                0,
                &m,
            ),
        ];
        assert_eq!(
            pass(&mut chain, base, 5, &f, text("abcde")),
            [
                (105, "text+:ab".into()),
                (105, "cont+:cd".into()),
                (105, "cont:e".into())
            ]
        );
    }

    #[test]
    fn a_deadline_passes_through_the_rest_of_the_chain() {
        let base = Instant::now();
        let f = facts(base);
        let m = metrics();
        let activity = Activity::new(base);
        let mut chain = [
            active(
                entry(
                    json!({"type": "reset_peer", "attributes": {"timeout": 50}}),
                    base,
                ),
                &f,
                1,
                0,
                &m,
            ),
            active(
                entry(
                    json!({"type": "latency", "attributes": {"latency": 100}}),
                    base,
                ),
                &f,
                1,
                0,
                &m,
            ),
        ];
        assert_eq!(chain[0].next_deadline(base, &activity), Some(base + ms(50)));
        let now = base + ms(50);
        // The link refreshes activation before it runs a deadline.
        assert_eq!(chain[0].next_deadline(now, &activity), Some(now));
        assert_eq!(
            fire(&mut chain, base, 50, &f),
            [(50, "cut:Reset".to_string())]
        );
    }

    #[test]
    fn handshake_schedules_count_from_the_toxic_being_added() {
        let added = Instant::now();
        let e = entry(
            json!({"type": "reject_handshake", "schedule": {"start_after": 100}}),
            added,
        );
        let f = facts(added);
        let entries = [e];
        let before = handshake_actions_at(added + ms(99), &entries, &f, Some(1), "p", 0);
        assert!(before.is_empty());
        let after = handshake_actions_at(added + ms(100), &entries, &f, Some(1), "p", 0);
        assert_eq!(after.len(), 1);
        assert_eq!(
            after[0].1,
            HandshakeAction::Reject {
                status: 503,
                body: "wsfault: handshake rejected\n".into()
            }
        );
    }

    #[test]
    fn json_match_and_count_act_on_matching_messages_13_16_19_22_25() {
        let One {
            base,
            e,
            f,
            m,
            mut chain,
        } = one(
            json!({"type": "message_loss", "attributes": {"probability": 1.0},
                   "match": {"message": {"json": {"pointer": "/type", "equals": "next"}}},
                   "count": {"after": 10, "every": 3, "limit": 5}}),
        );
        let mut lost = Vec::new();
        for n in 1..=30u64 {
            let next = format!(r#"{{"id":"1","type":"next","payload":{{"seq":{n}}}}}"#);
            if pass(&mut chain, base, n, &f, text(&next)).is_empty() {
                lost.push(n);
            }
            // Other messages neither match nor move the count.
            let ka = pass(&mut chain, base, n, &f, text(r#"{"type":"ka"}"#));
            assert_eq!(ka, [(u128::from(n), r#"text:{"type":"ka"}"#.into())]);
        }
        assert_eq!(lost, [13, 16, 19, 22, 25]);
        assert_eq!(actions_of(&m, &e), 5);
    }

    #[test]
    fn messages_of_another_kind_pass_undelayed() {
        let One {
            base, f, mut chain, ..
        } = one(json!({"type": "latency", "attributes": {"latency": 500},
                       "match": {"message": {"kind": "heartbeat"}}}));
        let socketio = crate::protocols::by_name("socketio").expect("registered");
        assert!(chain[0].needs_kind() && !chain[0].needs_payload());
        assert_eq!(
            pass_as(socketio, &mut chain, base, 10, &f, text("2")),
            [(510, "text:2".into())]
        );
        assert_eq!(
            pass_as(socketio, &mut chain, base, 20, &f, text(r#"42["chat"]"#)),
            [(20, r#"text:42["chat"]"#.into())]
        );
        // WebSocket pings are heartbeats under every profile.
        assert_eq!(
            pass_as(socketio, &mut chain, base, 30, &f, ping("p")),
            [(530, "ping:p".into())]
        );
        // Under `none`, a text "2" is data.
        assert_eq!(
            pass(&mut chain, base, 40, &f, text("2")),
            [(40, "text:2".into())]
        );
    }

    #[test]
    fn a_fragmented_message_is_passed_by_whole() {
        let One {
            base, f, mut chain, ..
        } = one(json!({"type": "latency", "attributes": {"latency": 100},
                   "match": {"message": {"opcode": "binary"}}}));
        assert_eq!(
            pass(&mut chain, base, 0, &f, frame(false, Opcode::Text, "a")),
            [(0, "text+:a".into())]
        );
        assert_eq!(
            pass(
                &mut chain,
                base,
                1,
                &f,
                frame(true, Opcode::Continuation, "b")
            ),
            [(1, "cont:b".into())]
        );
        assert_eq!(
            pass(&mut chain, base, 2, &f, frame(true, Opcode::Binary, "c")),
            [(102, "binary:c".into())]
        );
    }

    #[test]
    fn close_with_a_message_match_fires_on_the_first_matching_message() {
        let One {
            base, f, mut chain, ..
        } = one(json!({"type": "close", "attributes": {"code": 4000},
                   "match": {"message": {"contains": "subscribe"}}}));
        let activity = Activity::new(base);
        // No timer: it does not fire at once.
        assert_eq!(chain[0].next_deadline(base + ms(10), &activity), None);
        assert_eq!(
            pass(&mut chain, base, 10, &f, text("hello")),
            [(10, "text:hello".into())]
        );
        let fired = pass(&mut chain, base, 20, &f, text(r#"{"type":"subscribe"}"#));
        assert_eq!(fired.len(), 1);
        assert!(fired[0].1.starts_with("close:4000"), "{fired:?}");
    }

    #[test]
    fn message_selection_is_refused_where_it_makes_no_sense() {
        let stall = refused(
            json!(
            {"type": "stall", "attributes": {"duration": 100},
             "match": {"message": {"kind": "data"}}}),
            "stall does not act on messages",
        );
        assert_eq!(stall.field.as_deref(), Some("match.message"));
        assert!(stall.message.contains("stall"), "{stall}");
        let count = refused(
            json!(
            {"type": "bandwidth", "attributes": {"rate": 1}, "count": {"every": 2}}),
            "bandwidth does not act on messages",
        );
        assert_eq!(count.field.as_deref(), Some("count"));
        let regex = refused(
            json!(
            {"type": "message_loss", "attributes": {"probability": 1},
             "match": {"message": {"regex": "("}}}),
            "bad regex",
        );
        assert_eq!(regex.field.as_deref(), Some("match.message.regex"));
        let every = refused(
            json!(
            {"type": "duplicate", "count": {"every": 0}}),
            "every 0",
        );
        assert_eq!(every.field.as_deref(), Some("count.every"));
    }

    /// Runs toxic 0's deadline at `now_ms`, as the link does.
    fn fire(
        chain: &mut [ActiveToxic],
        base: Instant,
        now_ms: u64,
        f: &ConnFacts,
    ) -> Vec<(u128, String)> {
        let activity = Activity::new(base);
        let cx = cx_at(base, now_ms, &activity, f, crate::protocols::NONE);
        let mut out = Vec::new();
        run_deadline(chain, 0, &cx, &mut out);
        released(base, &out)
    }

    #[test]
    fn a_closing_schedule_window_releases_what_the_toxic_holds() {
        let One {
            base,
            e,
            f,
            m,
            mut chain,
        } = one(json!({"type": "reorder", "schedule": {"duration": 100}}));
        let activity = Activity::new(base);
        // Released before the first message after the window.
        assert!(pass(&mut chain, base, 10, &f, text("a")).is_empty());
        assert_eq!(
            pass(&mut chain, base, 150, &f, text("b")),
            [(150, "text:a".into()), (150, "text:b".into())]
        );
        // Or at once, through the deadline, when nothing comes.
        let mut chain = [active(e.clone(), &f, 1, 1, &m)];
        assert!(pass(&mut chain, base, 10, &f, text("a")).is_empty());
        let now = base + ms(120);
        assert_eq!(chain[0].next_deadline(now, &activity), Some(now));
        assert_eq!(fire(&mut chain, base, 120, &f), [(120, "text:a".into())]);
        assert_eq!(
            chain[0].next_deadline(now, &activity),
            Some(now + ms(50)),
            "nothing left: back to looking for the window"
        );
        assert_eq!(actions_of(&m, &e), 2);
    }

    #[test]
    fn deadlines_wait_for_the_end_of_a_message_the_toxic_is_not_shown() {
        let One {
            base,
            e,
            f,
            m,
            mut chain,
        } = one(
            json!({"type": "inject", "attributes": {"payload": "x", "every_ms": 50},
                       "match": {"message": {"opcode": "text"}}}),
        );
        let activity = Activity::new(base);
        assert_eq!(
            pass(&mut chain, base, 40, &f, frame(false, Opcode::Binary, "b1")),
            [(40, "binary+:b1".into())]
        );
        assert_eq!(chain[0].next_deadline(base + ms(60), &activity), None);
        assert_eq!(
            pass(
                &mut chain,
                base,
                70,
                &f,
                frame(true, Opcode::Continuation, "b2")
            ),
            [(70, "cont:b2".into())]
        );
        assert_eq!(
            chain[0].next_deadline(base + ms(70), &activity),
            Some(base + ms(50))
        );
        assert_eq!(fire(&mut chain, base, 70, &f), [(70, "text:x".into())]);
        assert_eq!(actions_of(&m, &e), 1);
    }

    #[test]
    fn each_stall_window_counts_one_action() {
        let base = Instant::now();
        let e = entry(
            json!({"type": "stall", "attributes": {"duration": 100, "every": 1000}}),
            base,
        );
        let f = facts(base);
        let m = metrics();
        let mut stall = active(e.clone(), &f, 1, 0, &m);
        assert_eq!(stall.paused_until(base + ms(10)), Some(base + ms(100)));
        assert_eq!(stall.paused_until(base + ms(50)), Some(base + ms(100)));
        assert_eq!(actions_of(&m, &e), 1);
        assert_eq!(stall.paused_until(base + ms(500)), None);
        assert_eq!(stall.paused_until(base + ms(1010)), Some(base + ms(1100)));
        assert_eq!(actions_of(&m, &e), 2);
    }
}
