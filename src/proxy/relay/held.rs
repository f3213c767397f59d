//! The held-frame queue: what the toxic chain put out, each item with its
//! release instant, written in order once due. It is bounded
//! ([`MAX_QUEUED_BYTES`]): a link stops reading while it is full, so a slow
//! writer (or a long hold) pushes back on the sender through TCP. Release
//! times are waited for on a timerfd ([`precise_sleep_until`]).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::BytesMut;
use prometheus::local::LocalHistogram;

use super::io::write_all;
use super::link::{End, Link};
use crate::toxics::{EndAction, Item, Output};

/// A link stops reading while this many bytes wait in its toxic queue.
const MAX_QUEUED_BYTES: usize = 1024 * 1024;

/// Waits until `deadline`, never less, with sub-millisecond precision.
/// tokio's timer rounds deadlines up to whole milliseconds (a held frame
/// would wait 0.5 ms too long on average); async-io's timer wakes on a
/// timerfd and is late by microseconds. Held frames' release times and the
/// toxics' own deadlines go through here.
pub(super) async fn precise_sleep_until(deadline: Instant) {
    async_io::Timer::at(deadline).await;
}

/// The earlier of two optional instants.
#[inline]
pub(super) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Whether released frames reach the writer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gate {
    /// Frames and raw bytes are written (false while closing or
    /// blackholing: they are dropped, but still leave the queue).
    pub relaying: bool,
    /// The writer's side was shut: nothing is written at all.
    pub writer_shut: bool,
}

/// The queue of one link.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// Items in write order, each with the instant its frame was read.
    queue: VecDeque<(Output, Instant)>,
    /// Wire bytes of the frames and raw bytes in `queue`.
    queued_bytes: usize,
    /// The bytes of one release, kept between releases.
    out: BytesMut,
    /// When each written frame was read, for the delay histogram (kept
    /// between releases).
    delays: Vec<Instant>,
    /// A data message was partly written (its FIN not yet): nothing may
    /// overtake into the middle of it.
    mid_message: bool,
}

impl Held {
    /// Whether nothing is held.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the queue has room, i.e. the link may read.
    #[inline]
    pub(super) fn has_room(&self) -> bool {
        self.queued_bytes < MAX_QUEUED_BYTES
    }

    /// When the first item is due.
    #[inline]
    pub(super) fn next_release(&self) -> Option<Instant> {
        self.queue.front().map(|(o, _)| o.not_before)
    }

    /// When the last item is due.
    pub(super) fn last_release(&self) -> Option<Instant> {
        self.queue.back().map(|(o, _)| o.not_before)
    }

    /// Queues one output of the chain; `read_at` is when its frame was read.
    pub(super) fn push(&mut self, output: Output, read_at: Instant) {
        let size = match &output.item {
            Item::Frame(f) => f.wire_len(),
            Item::Raw(b) => b.len(),
            _ => 0,
        };
        self.queued_bytes += size;
        self.queue.push_back((output, read_at));
    }

    /// Makes everything held due by `now` (a toxic that held it was removed).
    pub(super) fn expedite(&mut self, now: Instant) {
        for (output, _) in self.queue.iter_mut() {
            output.not_before = output.not_before.min(now);
        }
    }

    /// The next item that may be written before the (not yet due) front:
    /// a due frame a toxic's `match.message`/`count` passed by, either a
    /// control frame or, between messages, the first frame of a whole due
    /// message (its other frames follow as the front moves on). It only
    /// passes frames a toxic held (not passed by): one passed by that is not
    /// due yet — delayed by an earlier toxic of the chain, e.g. a latency
    /// with jitter — keeps everything behind it in order. Nothing passes an
    /// end item, and a message's frames never get split.
    fn overtaking(&mut self, now: Instant) -> Option<(Output, Instant)> {
        let mut open_message = self.mid_message;
        let mut found = None;
        for (i, (output, _)) in self.queue.iter().enumerate() {
            let Item::Frame(frame) = &output.item else {
                break;
            };
            if output.overtake && output.not_before > now {
                break;
            }
            let opcode = frame.header.opcode;
            let due = output.overtake && output.not_before <= now;
            if opcode.is_control() {
                if due {
                    found = Some(i);
                    break;
                }
                continue;
            }
            if !open_message && due && self.whole_and_due(i, now) {
                found = Some(i);
                break;
            }
            open_message = !frame.header.fin;
        }
        let i = found?;
        let (output, read_at) = self.queue.remove(i)?;
        if let Item::Frame(frame) = &output.item {
            if frame.header.opcode.is_data() && !frame.header.fin {
                // Its continuation frames jump the queue with it.
                let mut rest = Vec::new();
                let mut j = i;
                while j < self.queue.len() {
                    let is_part = matches!(&self.queue[j].0.item,
                        Item::Frame(f) if f.header.opcode == crate::frame::Opcode::Continuation);
                    if is_part {
                        if let Some(part) = self.queue.remove(j) {
                            let last = matches!(&part.0.item, Item::Frame(f) if f.header.fin);
                            rest.push(part);
                            if last {
                                break;
                            }
                        }
                    } else {
                        j += 1;
                    }
                }
                for (k, part) in rest.into_iter().enumerate() {
                    self.queue.insert(k, part);
                }
            }
        }
        Some((output, read_at))
    }

    /// Whether the data message starting at `i` has all its frames queued,
    /// due and passed by (control frames between them are left in place).
    fn whole_and_due(&self, i: usize, now: Instant) -> bool {
        for (output, _) in self.queue.iter().skip(i) {
            let Item::Frame(frame) = &output.item else {
                return false;
            };
            if frame.header.opcode.is_control() {
                continue;
            }
            if !(output.overtake && output.not_before <= now) {
                return false;
            }
            if frame.header.fin {
                return true;
            }
        }
        false
    }

    /// Writes every queued item whose release time has come, in order, in
    /// one write, and observes each frame's delay. Stops at an end item: a
    /// FIN ends the link with [`End::Eof`]; a toxic's end is handed to
    /// `on_end` before the write, and a resulting [`End::Closed`] (close
    /// frames are on their way to both links) lets the link go on.
    pub(super) async fn release_due(
        &mut self,
        now: Instant,
        gate: Gate,
        link: &Link,
        delay: &mut LocalHistogram,
        on_end: impl FnOnce(EndAction) -> End,
    ) -> Result<(), End> {
        let mut end = None;
        let mut written: u64 = 0;
        self.out.clear();
        let mut delays = std::mem::take(&mut self.delays);
        delays.clear();
        loop {
            let next = match self.queue.front() {
                Some((front, _)) if front.not_before <= now => self.queue.pop_front(),
                Some(_) => self.overtaking(now),
                None => None,
            };
            let Some((output, read_at)) = next else {
                break;
            };
            match output.item {
                Item::Frame(frame) => {
                    self.queued_bytes -= frame.wire_len();
                    if frame.header.opcode.is_data() {
                        self.mid_message = !frame.header.fin;
                    }
                    if gate.relaying {
                        frame.encode(&mut self.out);
                        written += 1;
                        delays.push(read_at);
                    }
                }
                Item::Raw(bytes) => {
                    self.queued_bytes -= bytes.len();
                    if gate.relaying {
                        self.out.extend_from_slice(&bytes);
                    }
                }
                Item::Eof => {
                    end = Some(End::Eof);
                    break;
                }
                Item::End(action) => {
                    end = Some(on_end(action));
                    break;
                }
            }
        }
        if !self.out.is_empty() && !gate.writer_shut {
            let out = std::mem::take(&mut self.out);
            let result = write_all(&link.writer, &out, &link.conn, link.stream).await;
            self.out = out;
            self.out.clear();
            if result.is_err() {
                return Err(End::Reset);
            }
            let done = Instant::now();
            for read_at in delays.drain(..) {
                delay.observe(done.saturating_duration_since(read_at).as_secs_f64());
            }
            if written > 0 {
                delay.flush();
            }
        }
        delays.clear();
        self.delays = delays;
        match end {
            // A toxic close: both links got their close command.
            Some(End::Closed) | None => Ok(()),
            Some(end) => Err(end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toxics::testkit::{ping, text};
    use std::time::Duration;

    fn item(frame: crate::frame::Frame, at: Instant, overtake: bool) -> (Output, Instant) {
        let mut output = Output::at(at, Item::Frame(frame));
        output.overtake = overtake;
        (output, at)
    }

    fn payload(o: &Output) -> String {
        match &o.item {
            Item::Frame(f) => String::from_utf8_lossy(&f.plain_payload()).into_owned(),
            _ => String::new(),
        }
    }

    #[test]
    fn passed_by_messages_overtake_held_ones_but_not_each_other() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut held = Held::default();
        // A heartbeat a toxic holds for 2 s; then data messages another toxic
        // (latency with jitter) delayed and the heartbeat toxic passed by.
        for (output, read_at) in [
            item(text("hb"), ms(2000), false),
            item(text("a"), ms(180), true),
            item(text("b"), ms(120), true),
        ] {
            held.push(output, read_at);
        }
        assert!(held.overtaking(ms(130)).is_none(), "b must not pass a");
        let first = held.overtaking(ms(190)).expect("a passes the heartbeat");
        assert_eq!(payload(&first.0), "a");
        let second = held.overtaking(ms(190)).expect("then b");
        assert_eq!(payload(&second.0), "b");
        assert!(held.overtaking(ms(190)).is_none(), "the heartbeat waits");
    }

    #[test]
    fn a_due_control_frame_passed_by_overtakes_a_held_message() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut held = Held::default();
        held.push(item(text("slow"), ms(1000), false).0, t0);
        held.push(item(ping("p"), ms(5), true).0, t0);
        let out = held.overtaking(ms(10)).expect("the ping passes");
        assert_eq!(payload(&out.0), "p");
    }
}
