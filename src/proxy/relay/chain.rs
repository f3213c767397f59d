//! A link's toxic chain: which of its proxy's toxics apply to this
//! connection and stream (rebuilt between messages when the proxy's toxics
//! change), running an item or a toxic's timer through the chain into the
//! held-frame queue, and the toxics' own deadlines and pauses.

use std::time::Instant;

use super::held::{earliest, Held};
use super::link::Link;
use crate::toxics::{run_chain, run_deadline, ActiveToxic, ChainCx, Output};
use crate::vocab::Activity;

/// What a refresh changed, for the caller to apply.
#[derive(Debug)]
pub(super) struct Refreshed {
    /// The settings' frame limit, to be used from the next frame.
    pub max_frame_bytes: u64,
    /// A toxic went away: what it held is due at once.
    pub removed: bool,
    /// What the removed toxics still held, to be queued.
    pub released: Vec<Output>,
}

/// The instances of the proxy's toxics for one link.
pub(super) struct Toxics {
    /// The proxy's settings generation the instances were built from.
    generation: u64,
    /// Instances that apply, in order.
    chain: Vec<ActiveToxic>,
    /// Instances that never act on this connection (toxicity, `match`),
    /// kept so that they keep their draw across refreshes.
    dormant: Vec<ActiveToxic>,
    /// Outputs of one step, kept between steps.
    scratch: Vec<Output>,
    /// Some instance matches on message kinds (the link classifies).
    needs_kind: bool,
    /// Some instance matches on payloads (the link gathers fragmented
    /// messages before they enter the chain).
    needs_payload: bool,
}

impl Toxics {
    /// No instances yet: the first [`Toxics::refresh`] builds them.
    pub(super) fn new() -> Toxics {
        Toxics {
            generation: u64::MAX,
            chain: Vec::new(),
            dormant: Vec::new(),
            scratch: Vec::new(),
            needs_kind: false,
            needs_payload: false,
        }
    }

    /// Whether some toxic of the chain matches on message kinds.
    #[inline]
    pub(super) fn needs_kind(&self) -> bool {
        self.needs_kind
    }

    /// Whether some toxic of the chain matches on whole payloads.
    #[inline]
    pub(super) fn needs_payload(&self) -> bool {
        self.needs_payload
    }

    /// Whether no toxic applies (the pass-through case).
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }

    /// Rebuilds the chain when the proxy's toxics changed, unless a data
    /// message is under way. Instances of unchanged toxics keep their state.
    #[inline]
    pub(super) fn refresh(&mut self, link: &Link, in_message: bool) -> Option<Refreshed> {
        let generation = link.proxy.generation();
        if generation == self.generation || in_message {
            return None;
        }
        Some(self.rebuild(generation, link))
    }

    fn rebuild(&mut self, generation: u64, link: &Link) -> Refreshed {
        self.generation = generation;
        let settings = link.proxy.settings.load();
        let mut old: Vec<ActiveToxic> =
            self.chain.drain(..).chain(self.dormant.drain(..)).collect();
        for entry in settings.toxics.iter() {
            if entry.spec.stream != link.stream || entry.def.handshake_only() {
                continue;
            }
            let instance = match old.iter().position(|t| t.entry.version == entry.version) {
                Some(i) => old.swap_remove(i),
                None => ActiveToxic::new(
                    entry.clone(),
                    &link.facts,
                    link.proxy.seed,
                    &link.proxy.name,
                    link.conn.id,
                    &link.proxy.metrics,
                ),
            };
            if instance.applies() {
                self.chain.push(instance);
            } else {
                self.dormant.push(instance);
            }
        }
        self.needs_kind = self.chain.iter().any(ActiveToxic::needs_kind);
        self.needs_payload = self.chain.iter().any(ActiveToxic::needs_payload);
        // What a removed or replaced instance still holds (a `reorder`'s
        // message) goes out before it is dropped.
        let mut released = Vec::new();
        let base = ChainCx {
            now: Instant::now(),
            to_server: link.to_server(),
            activity: &link.conn.activity,
            facts: &link.facts,
            profile: link.conn.profile.get(),
            message_payload: None,
        };
        for toxic in old.iter_mut() {
            toxic.release_on_removal(&base, &mut released);
        }
        Refreshed {
            max_frame_bytes: settings.max_frame_bytes,
            removed: !old.is_empty(),
            released,
        }
    }

    /// Passes one item through the chain, queueing what comes out in
    /// `held`; `message_payload` is the whole unmasked payload of a gathered
    /// message the item belongs to.
    pub(super) fn pass(
        &mut self,
        now: Instant,
        link: &Link,
        held: &mut Held,
        message_payload: Option<&[u8]>,
        input: Output,
    ) {
        self.step(now, link, held, message_payload, |chain, base, out| {
            run_chain(chain, input, base, out)
        });
    }

    /// Runs one step of the chain (an item through it, or a toxic's timer)
    /// and queues what comes out in `held`.
    fn step(
        &mut self,
        now: Instant,
        link: &Link,
        held: &mut Held,
        message_payload: Option<&[u8]>,
        step: impl FnOnce(&mut [ActiveToxic], &ChainCx<'_>, &mut Vec<Output>),
    ) {
        let base = ChainCx {
            now,
            to_server: link.to_server(),
            activity: &link.conn.activity,
            facts: &link.facts,
            profile: link.conn.profile.get(),
            message_payload,
        };
        let mut outputs = std::mem::take(&mut self.scratch);
        step(&mut self.chain, &base, &mut outputs);
        for output in outputs.drain(..) {
            held.push(output, now);
        }
        self.scratch = outputs;
    }

    /// Runs the timers of the toxics whose deadline has come; whether any did.
    pub(super) fn fire_due(&mut self, now: Instant, link: &Link, held: &mut Held) -> bool {
        let mut fired = false;
        for i in 0..self.chain.len() {
            let due = self.chain[i]
                .next_deadline(now, &link.conn.activity)
                .is_some_and(|t| t <= now);
            if due {
                self.step(now, link, held, None, |chain, base, out| {
                    run_deadline(chain, i, base, out)
                });
                fired = true;
            }
        }
        fired
    }

    /// The earliest toxic deadline or end of a pause, and whether a toxic
    /// pauses reading now.
    #[inline]
    pub(super) fn next_wake(
        &mut self,
        now: Instant,
        activity: &Activity,
    ) -> (Option<Instant>, bool) {
        let mut wake: Option<Instant> = None;
        let mut paused = false;
        for toxic in self.chain.iter_mut() {
            wake = earliest(wake, toxic.next_deadline(now, activity));
            if let Some(until) = toxic.paused_until(now) {
                paused = true;
                wake = earliest(wake, Some(until));
            }
        }
        (wake, paused)
    }
}
