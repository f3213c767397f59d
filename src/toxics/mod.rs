//! Toxics: the faults, one file per type, registered in [`REGISTRY`].
//!
//! A toxic has three layers:
//! * [`ToxicSpec`]: what the user wrote (YAML or the admin API's JSON).
//! * [`ToxicDef`]: the validated attributes of one type, shared by every
//!   connection (built by the type's `parse` function from [`Attributes`]).
//! * [`ToxicState`]: one instance per connection and stream, holding the
//!   toxic's state (its RNG, counters, held frames...).
//!
//! The relay link passes each frame through the chain of active instances;
//! an instance turns one frame into zero or more [`Output`]s, each with a
//! release time. Activation (toxicity, `match`, `schedule`) is handled here,
//! once for all types, by [`ActiveToxic`].
//!
//! Adding a fault = one new file with a `parse` function + one line in
//! [`REGISTRY`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::frame::{Frame, Opcode};

mod attrs;
pub mod message_match;
pub use crate::vocab::{CutMode, StreamDir};
pub use attrs::{AttrError, Attributes};

mod bandwidth;
mod close;
mod drop_connection;
mod drop_control;
mod duplicate;
mod fragment;
mod handshake_delay;
mod idle_timeout;
mod latency;
mod limit_data;
mod message_loss;
mod rate_limit;
mod reject_handshake;
mod reset_peer;
mod slicer;
mod slow_close;
mod stall;
mod timeout;

/// A type's parser: validated attributes → a shared definition.
pub type ParseFn = fn(&mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError>;

/// Every toxic type, by name. One line per type.
pub const REGISTRY: &[(&str, ParseFn)] = &[
    ("latency", latency::parse),
    ("bandwidth", bandwidth::parse),
    ("slow_close", slow_close::parse),
    ("timeout", timeout::parse),
    ("reset_peer", reset_peer::parse),
    ("limit_data", limit_data::parse),
    ("slicer", slicer::parse),
    ("fragment", fragment::parse),
    ("message_loss", message_loss::parse),
    ("drop_connection", drop_connection::parse),
    ("idle_timeout", idle_timeout::parse),
    ("stall", stall::parse),
    ("close", close::parse),
    ("drop_control", drop_control::parse),
    ("duplicate", duplicate::parse),
    ("rate_limit", rate_limit::parse),
    ("reject_handshake", reject_handshake::parse),
    ("handshake_delay", handshake_delay::parse),
];

/// The names of all toxic types, for error messages.
pub fn type_names() -> String {
    REGISTRY
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `match`: only connections whose upgrade request matches are affected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// A glob on the request path (`*` any run of characters, `?` one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Header name → exact value (names are case-insensitive).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub header: BTreeMap<String, String>,
    /// The negotiated subprotocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subprotocol: Option<String>,
}

/// `schedule`: the toxic is active in windows, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Delay before the first window.
    #[serde(default)]
    pub start_after: u64,
    /// Window length (absent or 0: open-ended).
    #[serde(default)]
    pub duration: u64,
    /// Window period (absent or 0: a single window).
    #[serde(default)]
    pub period: u64,
}

impl ScheduleSpec {
    /// Whether the window is open `elapsed` after the timer origin.
    pub fn is_active(&self, elapsed: Duration) -> bool {
        let ms = elapsed.as_millis() as u64;
        if ms < self.start_after {
            return false;
        }
        let since = ms - self.start_after;
        let pos = if self.period > 0 {
            since % self.period
        } else {
            since
        };
        self.duration == 0 || pos < self.duration
    }

    /// Checks the fields against each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.period > 0 && self.duration > self.period {
            return Err(format!(
                "schedule.duration {} is longer than schedule.period {}: valid range is 0..={}",
                self.duration, self.period, self.period
            ));
        }
        Ok(())
    }
}

fn default_toxicity() -> f64 {
    1.0
}

/// A toxic as the user writes it (Toxiproxy's JSON, plus `match` and `schedule`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToxicSpec {
    /// Unique per proxy; defaults to `<type>_<stream>`.
    #[serde(default)]
    pub name: String,
    /// One of [`REGISTRY`]'s names.
    #[serde(rename = "type")]
    pub kind: String,
    /// Which stream it acts on.
    #[serde(default)]
    pub stream: StreamDir,
    /// Share of connections affected, drawn once per connection and stream.
    #[serde(default = "default_toxicity")]
    pub toxicity: f64,
    /// Type-specific attributes.
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Only matching connections are affected.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matcher: Option<MatchSpec>,
    /// Active windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
}

/// A toxic that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("toxic {toxic:?}: {message}")]
pub struct ToxicError {
    /// The toxic's name (or type when unnamed).
    pub toxic: String,
    /// What is wrong, naming the field, the value and the valid choices.
    pub message: String,
    /// The field at fault, as a dotted path (`type`, `toxicity`,
    /// `schedule.duration`, `attributes.probability`), so that a config file
    /// can point at it.
    pub field: Option<String>,
    /// Whether `field` is a key that should not be there (rather than a bad
    /// or missing value).
    pub unknown_key: bool,
}

/// A validated toxic, ready to be instantiated on connections.
#[derive(Debug)]
pub struct ToxicEntry {
    /// The spec, with the name filled in.
    pub spec: ToxicSpec,
    /// The type's shared definition.
    pub def: Arc<dyn ToxicDef>,
    /// When it was added or last updated (timer origin).
    pub added_at: Instant,
    /// Unique id of this version (a new one on every update).
    pub version: u64,
}

impl ToxicSpec {
    /// Fills the default name and validates everything (type, attributes,
    /// toxicity, schedule).
    pub fn validate(mut self, version: u64) -> Result<ToxicEntry, ToxicError> {
        if self.name.is_empty() {
            self.name = format!("{}_{}", self.kind, self.stream.label());
        }
        let err = |field: &str, message: String| ToxicError {
            toxic: self.name.clone(),
            message,
            field: Some(field.to_string()),
            unknown_key: false,
        };
        let attr_err = |e: AttrError| ToxicError {
            toxic: self.name.clone(),
            message: e.message,
            field: Some(
                e.field
                    .map_or("attributes".into(), |f| format!("attributes.{f}")),
            ),
            unknown_key: e.unknown_key,
        };
        let Some((_, parse)) = REGISTRY.iter().find(|(name, _)| *name == self.kind) else {
            return Err(err(
                "type",
                format!(
                    "unknown type {:?}: valid types are {}",
                    self.kind,
                    type_names()
                ),
            ));
        };
        if !(0.0..=1.0).contains(&self.toxicity) || self.toxicity.is_nan() {
            return Err(err(
                "toxicity",
                format!(
                    "toxicity {} is out of range: valid range is 0..=1",
                    self.toxicity
                ),
            ));
        }
        if let Some(schedule) = &self.schedule {
            schedule
                .validate()
                .map_err(|m| err("schedule.duration", m))?;
        }
        let mut attrs = Attributes::new(&self.kind, self.attributes.clone());
        let def = parse(&mut attrs).map_err(attr_err)?;
        attrs.finish().map_err(attr_err)?;
        Ok(ToxicEntry {
            spec: self,
            def,
            added_at: Instant::now(),
            version,
        })
    }
}

/// What a handshake-time toxic decides for one upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeAction {
    /// Forward the upgrade.
    Continue,
    /// Wait, then forward.
    Delay(Duration),
    /// Answer with this status and body instead of forwarding.
    Reject {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
}

/// A close frame to send: code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseSpec {
    /// Close code.
    pub code: u16,
    /// Close reason.
    pub reason: String,
}

/// How a toxic ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndAction {
    /// No close frame.
    Cut(CutMode),
    /// Close frames to both sides, then both TCP connections end.
    Close {
        /// Sent to the receiving side of this stream (this link's writer).
        to_receiver: CloseSpec,
        /// Sent to the sending side of this stream.
        to_sender: CloseSpec,
    },
}

/// One item in a link's queue.
#[derive(Debug, Clone)]
pub enum Item {
    /// A whole frame.
    Frame(Frame),
    /// Raw bytes (a partial frame, for `limit_data`).
    Raw(bytes::Bytes),
    /// The sender's FIN, to be passed on.
    Eof,
    /// End the connection.
    End(EndAction),
}

/// An item with its release time.
#[derive(Debug, Clone)]
pub struct Output {
    /// Not written before this instant (order is kept regardless).
    pub not_before: Instant,
    /// What to write.
    pub item: Item,
}

/// Connection facts a toxic may look at.
#[derive(Debug, Clone)]
pub struct ConnFacts {
    /// When the connection was opened.
    pub opened_at: Instant,
    /// Request path (with query).
    pub path: String,
    /// Negotiated subprotocol, if any.
    pub subprotocol: Option<String>,
    /// Request headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// Whether permessage-deflate was negotiated (extensions: pass).
    pub compressed: bool,
}

impl MatchSpec {
    /// Whether the connection's upgrade request matches.
    pub fn matches(&self, facts: &ConnFacts) -> bool {
        if let Some(glob) = &self.path {
            let path = facts.path.split('?').next().unwrap_or("");
            if !glob_match(glob.as_bytes(), path.as_bytes()) {
                return false;
            }
        }
        for (name, value) in &self.header {
            let name = name.to_ascii_lowercase();
            if !facts.headers.iter().any(|(n, v)| *n == name && v == value) {
                return false;
            }
        }
        if let Some(sub) = &self.subprotocol {
            if facts.subprotocol.as_deref() != Some(sub.as_str()) {
                return false;
            }
        }
        true
    }
}

/// `*` and `?` glob on bytes.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// Everything a toxic instance sees while handling one item.
pub struct ToxicCx<'a> {
    /// Now (read once per batch).
    pub now: Instant,
    /// When the incoming item may be released at the earliest.
    pub ready_at: Instant,
    /// This instance's RNG (seeded per connection, stream and toxic).
    pub rng: &'a mut SmallRng,
    /// Where outputs go, in order.
    pub out: &'a mut Vec<Output>,
    /// Whether frames written by this link go to the server (must be masked).
    pub to_server: bool,
    /// Actions taken (added to `wsfault_toxic_actions_total`).
    pub actions: u64,
    /// Messages left untouched because they were compressed.
    pub skips: u64,
    /// The connection's shared activity clock.
    pub activity: &'a crate::vocab::Activity,
    /// Connection facts.
    pub facts: &'a ConnFacts,
}

impl ToxicCx<'_> {
    /// Emits an item released no earlier than `not_before`.
    pub fn emit_at(&mut self, item: Item, not_before: Instant) {
        self.out.push(Output { not_before, item });
    }
    /// Emits an item as soon as it is ready.
    pub fn emit(&mut self, item: Item) {
        let at = self.ready_at;
        self.emit_at(item, at);
    }
    /// Counts one action.
    pub fn act(&mut self) {
        self.actions += 1;
    }
    /// A fresh masking key when writing to the server, else `None`.
    pub fn new_mask(&mut self) -> Option<[u8; 4]> {
        if self.to_server {
            Some(self.rng.random::<[u8; 4]>())
        } else {
            None
        }
    }
}

/// Per-connection facts given to [`ToxicDef::instantiate`].
pub struct InstanceCx {
    /// Timer origin: the later of the toxic being added and the connection opening.
    pub armed_at: Instant,
}

/// The validated, shared definition of a toxic of one type.
pub trait ToxicDef: Send + Sync + std::fmt::Debug {
    /// Creates the state for one connection and stream.
    fn instantiate(&self, cx: &InstanceCx) -> Box<dyn ToxicState>;
    /// Decision at upgrade time (`reject_handshake`, `handshake_delay`).
    fn on_handshake(&self, _rng: &mut SmallRng) -> HandshakeAction {
        HandshakeAction::Continue
    }
    /// Whether the toxic rewrites payloads (then compressed messages are skipped).
    fn changes_payload(&self) -> bool {
        false
    }
    /// Whether the toxic only acts on the upgrade (then links ignore it).
    fn handshake_only(&self) -> bool {
        false
    }
    /// Whether these attributes can never act (probability 0, zero delay):
    /// such a toxic stays off the relay, which keeps its fast path.
    fn is_inert(&self) -> bool {
        false
    }
}

/// The per-connection, per-stream state of a toxic.
pub trait ToxicState: Send {
    /// Handles one frame: emit zero or more outputs through `cx`.
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        cx.emit(Item::Frame(frame));
    }
    /// Handles the sender's FIN.
    fn on_eof(&mut self, cx: &mut ToxicCx<'_>) {
        cx.emit(Item::Eof);
    }
    /// The next instant [`ToxicState::on_deadline`] should run.
    fn next_deadline(&self, _cx: &DeadlineCx<'_>) -> Option<Instant> {
        None
    }
    /// A deadline passed (the toxic re-checks whether it is due).
    fn on_deadline(&mut self, _cx: &mut ToxicCx<'_>) {}
    /// While `Some(t)` with `t` in the future, the link does not read.
    fn paused_until(&mut self, _now: Instant) -> Option<Instant> {
        None
    }
}

/// What [`ToxicState::next_deadline`] may look at.
pub struct DeadlineCx<'a> {
    /// Now.
    pub now: Instant,
    /// The connection's shared activity clock.
    pub activity: &'a crate::vocab::Activity,
}

/// Tracks data-message boundaries across frames.
#[derive(Debug, Default, Clone, Copy)]
pub struct MessageTracker {
    in_message: bool,
}

impl MessageTracker {
    /// Feeds a frame; returns `(starts_message, ends_message)` for data frames.
    pub fn observe(&mut self, frame: &Frame) -> (bool, bool) {
        let op = frame.header.opcode;
        if op.is_control() {
            return (false, false);
        }
        let starts = op != Opcode::Continuation || !self.in_message;
        self.in_message = !frame.header.fin;
        (starts, frame.header.fin)
    }
    /// Whether the stream is between messages.
    pub fn at_boundary(&self) -> bool {
        !self.in_message
    }
}

/// Mixes numbers into a 64-bit seed (splitmix64), stable across builds.
pub fn mix_seed(parts: &[u64]) -> u64 {
    let mut state: u64 = 0x243F_6A88_85A3_08D3;
    for part in parts {
        state ^= *part;
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        state = z ^ (z >> 31);
    }
    state
}

/// Hashes a string for [`mix_seed`] (FNV-1a).
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The RNG of one toxic on one connection and stream.
pub fn toxic_rng(
    seed: Option<u64>,
    proxy: &str,
    ordinal: u64,
    stream: StreamDir,
    toxic: &str,
) -> SmallRng {
    match seed {
        Some(seed) => SmallRng::seed_from_u64(mix_seed(&[
            seed,
            hash_str(proxy),
            ordinal,
            stream.index() as u64,
            hash_str(toxic),
        ])),
        None => SmallRng::from_rng(&mut rand::rng()),
    }
}

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
    pub fn next_deadline(
        &mut self,
        now: Instant,
        activity: &crate::vocab::Activity,
    ) -> Option<Instant> {
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
    pub activity: &'a crate::vocab::Activity,
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

/// Draws a handshake decision from every handshake toxic that applies.
pub fn handshake_actions(
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
        let scheduled =
            entry.spec.schedule.as_ref().is_none_or(|s| {
                s.is_active(Instant::now().saturating_duration_since(entry.added_at))
            });
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

/// Milliseconds as a duration.
pub fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match(b"/chat*", b"/chat/room"));
        assert!(glob_match(b"/c?at", b"/chat"));
        assert!(!glob_match(b"/chat*", b"/other"));
        assert!(glob_match(b"*", b""));
    }

    #[test]
    fn schedule_windows() {
        let s = ScheduleSpec {
            start_after: 100,
            duration: 50,
            period: 200,
        };
        assert!(!s.is_active(ms(99)));
        assert!(s.is_active(ms(100)));
        assert!(!s.is_active(ms(150)));
        assert!(s.is_active(ms(300)));
    }

    #[test]
    fn every_registered_type_rejects_unknown_attributes() {
        for (name, _) in REGISTRY {
            let mut attrs = serde_json::Map::new();
            attrs.insert("bogus".into(), serde_json::json!(1));
            let spec = ToxicSpec {
                name: String::new(),
                kind: name.to_string(),
                stream: StreamDir::Downstream,
                toxicity: 1.0,
                attributes: attrs,
                matcher: None,
                schedule: None,
            };
            let err = spec.validate(0).expect_err(name);
            assert!(
                err.message.contains("bogus") || err.message.contains("missing"),
                "{name}: {}",
                err.message
            );
        }
    }
}
