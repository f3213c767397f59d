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
//! release time. Activation (toxicity, `match`, `schedule`) is handled once
//! for all types, by [`ActiveToxic`].
//!
//! Adding a fault = one new file with a `parse` function + one line in
//! [`REGISTRY`]. The framework's files, each importing only the ones above
//! it in this list:
//!
//! | file | holds |
//! |---|---|
//! | `attrs.rs` | [`Attributes`]: typed access to a toxic's attributes, errors naming field, value and valid range |
//! | `rng.rs` | [`toxic_rng`]: one seeded RNG per toxic, connection and stream |
//! | `matching.rs` | [`MatchSpec`], [`ConnFacts`]: which connections (and, later, messages) a toxic acts on |
//! | `api.rs` | what a type implements and sees: [`ToxicDef`], [`ToxicState`], [`ToxicCx`], [`Item`], [`Output`] |
//! | `describe.rs` | [`TypeInfo`]: each type's attributes, found by running its parser in probe mode (`GET /toxic-types`) |
//! | `spec.rs` | [`ToxicSpec`], [`ScheduleSpec`], [`ToxicError`], validation into a [`ToxicEntry`] |
//! | `runtime.rs` | [`ActiveToxic`], [`run_chain`], [`run_deadline`], [`handshake_actions`] |
//!
//! | `testkit.rs` | tests only: drives a type's state on a fixed clock with a seeded RNG |
//!
//! The type files (`latency.rs` ...) import from `api` and `attrs` only, and
//! each carries unit tests of its decisions beside its logic.

mod api;
mod attrs;
mod describe;
mod matching;
pub mod message_match;
mod rng;
mod runtime;
mod spec;

mod bandwidth;
mod close;
mod corrupt;
mod drop_connection;
mod drop_control;
mod duplicate;
mod fragment;
mod handshake_delay;
mod idle_timeout;
mod inject;
mod latency;
mod limit_data;
mod message_loss;
mod rate_limit;
mod reject_handshake;
mod reorder;
mod reset_peer;
mod slicer;
mod slow_close;
mod stall;
mod timeout;

pub use api::{
    ms, CloseSpec, DeadlineCx, EndAction, HandshakeAction, InstanceCx, Item, MessageTracker,
    Output, ParseFn, ToxicCx, ToxicDef, ToxicState,
};
pub use attrs::{AttrError, AttrInfo, AttrKind, Attributes};
pub use describe::{describe, TypeInfo};
pub use matching::{glob_match, ConnFacts, MatchSpec};
pub use rng::{hash_str, mix_seed, toxic_rng};
pub use runtime::{
    handshake_actions, handshake_actions_at, run_chain, run_deadline, ActiveToxic, ChainCx,
};
pub use spec::{ScheduleSpec, ToxicEntry, ToxicError, ToxicSpec};

pub use crate::vocab::{CutMode, StreamDir};

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
    ("reorder", reorder::parse),
    ("corrupt", corrupt::parse),
    ("inject", inject::parse),
    ("rate_limit", rate_limit::parse),
    ("reject_handshake", reject_handshake::parse),
    ("handshake_delay", handshake_delay::parse),
];

/// Every type of [`REGISTRY`] with its attributes, kinds, ranges, defaults
/// and what is required, read from the types' parsers (`GET /toxic-types`).
pub fn toxic_types() -> Vec<TypeInfo> {
    describe::describe_all(REGISTRY)
}

/// The names of all toxic types, for error messages.
pub fn type_names() -> String {
    spec::names_of(REGISTRY)
}

impl ToxicSpec {
    /// Fills the default name and validates everything (type, attributes,
    /// toxicity, schedule) against [`REGISTRY`]; see
    /// [`ToxicSpec::validate_in`].
    pub fn validate(self, version: u64) -> Result<ToxicEntry, ToxicError> {
        self.validate_in(version, REGISTRY)
    }
}

// Last in the file: tools that read sources stop at the first test item.
#[cfg(test)]
pub(crate) mod testkit;
