//! What a toxic type implements, and what it sees while it works.
//!
//! A type's file provides a [`ParseFn`] (attributes → [`ToxicDef`]); the
//! definition makes one [`ToxicState`] per connection and stream; the state
//! turns each incoming frame into zero or more [`Output`]s through a
//! [`ToxicCx`]. Time comes only from the context (`cx.now`, `cx.ready_at`,
//! [`InstanceCx::armed_at`]), never from the wall clock, so a toxic can be
//! driven with a fixed clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::RngExt;

use super::attrs::{AttrError, Attributes};
use super::matching::ConnFacts;
use crate::frame::{Frame, Opcode};
use crate::vocab::{Activity, CutMode};

/// A type's parser: validated attributes → a shared definition.
pub type ParseFn = fn(&mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError>;

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
    /// Not written before this instant (order is kept, but see `overtake`).
    pub not_before: Instant,
    /// What to write.
    pub item: Item,
    /// A toxic's `match.message`/`count` passed this frame by: once due, it
    /// may be written before frames held longer by that toxic, as long as
    /// whole messages stay whole (non-matching messages are not delayed).
    pub overtake: bool,
}

impl Output {
    /// An item released no earlier than `not_before`, in order.
    pub fn at(not_before: Instant, item: Item) -> Output {
        Output {
            not_before,
            item,
            overtake: false,
        }
    }
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
    pub activity: &'a Activity,
    /// Connection facts.
    pub facts: &'a ConnFacts,
}

impl ToxicCx<'_> {
    /// Emits an item released no earlier than `not_before`.
    pub fn emit_at(&mut self, item: Item, not_before: Instant) {
        self.out.push(Output::at(not_before, item));
    }
    /// Emits an item as soon as it is ready.
    pub fn emit(&mut self, item: Item) {
        let at = self.ready_at;
        self.emit_at(item, at);
    }
    /// Emits a control frame as it is (toxics acting on messages leave
    /// them alone); gives a data frame back.
    pub fn data_frame(&mut self, frame: Frame) -> Option<Frame> {
        if frame.header.opcode.is_control() {
            self.emit(Item::Frame(frame));
            return None;
        }
        Some(frame)
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
    /// The toxic has `match.message`: a toxic that would otherwise fire on
    /// a timer (`close` with no `after_*`) fires on the first matching
    /// message instead.
    pub message_triggered: bool,
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
    /// Whether the toxic acts on messages, so `match.message` and `count`
    /// make sense for it (false for byte-, time- and handshake-level types).
    fn acts_on_messages(&self) -> bool {
        true
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
    /// The toxic stops acting on this stream for now (its `schedule`
    /// window closed), between messages: emit whatever it holds back, as
    /// whole messages, so nothing waits for the next window. It may be
    /// shown frames again when a window opens.
    fn on_stop(&mut self, _cx: &mut ToxicCx<'_>) {}
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
    pub activity: &'a Activity,
    /// A data message this toxic is not shown (let pass by `match.message` or
    /// `count`, or skipped as compressed) is mid-way: a deadline that would
    /// emit data frames must wait for its end (the link asks again after
    /// every frame).
    pub unseen_message: bool,
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
    /// [`observe`](Self::observe) with one draw from `rng` per message:
    /// `(Some(draw) on a message's first frame, ends_message)`, so draw k
    /// decides message k.
    pub fn draw(&mut self, frame: &Frame, rng: &mut SmallRng) -> (Option<f64>, bool) {
        let (starts, ends) = self.observe(frame);
        (starts.then(|| rng.random::<f64>()), ends)
    }
    /// Whether the stream is between messages.
    pub fn at_boundary(&self) -> bool {
        !self.in_message
    }
}

/// Milliseconds as a duration.
pub fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: Opcode) -> Frame {
        Frame::build(fin, 0, opcode, b"x", None)
    }

    #[test]
    fn message_tracker_sees_fragmented_messages_through_pings() {
        let mut t = MessageTracker::default();
        assert!(t.at_boundary());
        assert_eq!(t.observe(&frame(false, Opcode::Text)), (true, false));
        assert!(!t.at_boundary());
        assert_eq!(t.observe(&frame(true, Opcode::Ping)), (false, false));
        assert_eq!(
            t.observe(&frame(false, Opcode::Continuation)),
            (false, false)
        );
        assert_eq!(t.observe(&frame(true, Opcode::Continuation)), (false, true));
        assert!(t.at_boundary());
        assert_eq!(t.observe(&frame(true, Opcode::Binary)), (true, true));
    }
}
