//! Resume mode's client logic as a pure state machine: no socket, no clock.
//!
//! [`ResumeState`] lives as long as its slot, across reconnects. Its inputs
//! are the events of a connection — [`connected`](ResumeState::connected),
//! a `welcome` ([`on_welcome`](ResumeState::on_welcome)), an `echo`
//! ([`on_echo`](ResumeState::on_echo)), the 100 ms timer
//! ([`tick`](ResumeState::tick)), "send a new message"
//! ([`send_new`](ResumeState::send_new)) — each with the time it happened.
//! Its outputs are [`Action`]s pushed onto a caller's vector (send a `hello`
//! with this `ack`, send `msg` K, record a latency) and the message counts
//! of the report. `super::resume` drives it from a socket; the tests below
//! drive it from scripts.
//!
//! Echoes are delivered in `seq` order; one that arrives ahead of a gap
//! waits in a buffer, and the gap is asked for with a `hello` whose `ack`
//! is the end of the gap-free prefix. Hellos in flight are queued; a
//! welcome answers the oldest, and its replay window `(ack, next)` tells
//! replayed copies from duplicates. Messages wait in `unacked` until their
//! echo is delivered, and are resent after a reconnect or when late.
//!
//! The file is over 600 lines because of its tests: the scripted server
//! sequences sit beside the machine they pin down.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::report::MessageCounts;
use crate::resume_wire::Body;

/// Replays that must skip a seq before it is given up on.
pub(crate) const GAP_MISSES_TO_GIVE_UP: u32 = 5;
/// The longest wait between resends of one `msg`.
pub(crate) const MAX_RESEND_DELAY: Duration = Duration::from_secs(4);
/// Messages resent by one [`ResumeState::tick`] at most.
pub(crate) const MAX_RESENDS_PER_TICK: usize = 1024;
/// How many delivered seqs remember their cseq (see `seq_cseq`).
const SEQ_MEMORY: usize = 100_000;
/// How many skipped seqs are remembered.
const MAX_REMEMBERED: usize = 100_000;

/// What the machine asks its driver to do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send `{"type":"hello","session":…,"ack":ack}`.
    Hello {
        /// The end of the gap-free prefix of delivered seqs.
        ack: u64,
    },
    /// Send `{"type":"msg","cseq":cseq,"body":…}` (see [`ResumeState::write_body`]).
    Msg {
        /// The message.
        cseq: u64,
    },
    /// A message's first echo was delivered: record its round trip.
    Latency {
        /// Microseconds from its last (re)send to its delivery.
        us: u64,
    },
}

/// A message waiting for its echo.
struct Pending {
    sent_at: Instant,
    tries: u8,
}

/// An echo that arrived ahead of a gap.
struct Buffered {
    cseq: u64,
    body_ok: bool,
}

/// A `hello` sent on the current connection and not yet answered.
struct HelloSent {
    ack: u64,
    at: Instant,
}

/// The replay announced by the last welcome: seqs in `(ack, next)`.
#[derive(Clone, Copy)]
struct Window {
    ack: u64,
    next: u64,
    /// The highest replayed seq seen so far (the replay comes in order).
    last: u64,
    /// Whether this replay was already found to skip `expected`.
    missed: bool,
}

/// What belongs to one connection.
#[derive(Default)]
struct Conn {
    /// A welcome arrived on this connection.
    ready: bool,
    /// Hellos awaiting their welcome, oldest first. The server answers in
    /// order, so a welcome belongs to the oldest; a hello presumed lost stays
    /// queued (its replay may still come) until it is pruned.
    hellos: VecDeque<HelloSent>,
    window: Option<Window>,
}

/// One slot's resume-protocol client state (see the module docs).
pub(crate) struct ResumeState {
    session: String,
    slot: u32,
    body_len: usize,
    resend_after: Duration,
    hello_timeout: Duration,
    next_cseq: u64,
    unacked: BTreeMap<u64, Pending>,
    delivered: BitSet,
    /// The next seq to deliver.
    expected: u64,
    buffer: BTreeMap<u64, Buffered>,
    /// Seqs given up on; a late arrival counts as reordered.
    skipped: BTreeSet<u64>,
    /// The cseq each delivered seq carried (the most recent ones), so that a
    /// copy of a seq is told from a different message under the same seq.
    seq_cseq: BTreeMap<u64, u64>,
    gap_since: Option<Instant>,
    /// Replays that skipped the current `expected`.
    gap_misses: u32,
    conn: Conn,
    counts: MessageCounts,
    /// A body, built to check an echo against.
    scratch: String,
}

impl ResumeState {
    /// State for one slot: `message_bytes` sizes the bodies, `resend_after`
    /// is how late an echo may be before its message is resent.
    pub fn new(session: String, slot: u32, message_bytes: usize, resend_after: Duration) -> Self {
        ResumeState {
            session,
            slot,
            body_len: message_bytes.saturating_sub(40).max(16),
            resend_after,
            hello_timeout: (resend_after * 2).max(Duration::from_secs(2)),
            next_cseq: 1,
            unacked: BTreeMap::new(),
            delivered: BitSet::default(),
            expected: 1,
            buffer: BTreeMap::new(),
            skipped: BTreeSet::new(),
            seq_cseq: BTreeMap::new(),
            gap_since: None,
            gap_misses: 0,
            conn: Conn::default(),
            counts: MessageCounts::default(),
            scratch: String::new(),
        }
    }

    /// The session id sent in every `hello`.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Writes the body of message `cseq` into `buf` (replacing its content):
    /// `"<slot>:<cseq>:"` padded with `x`, so it is checked without storing it.
    pub fn write_body(&self, cseq: u64, buf: &mut String) {
        buf.clear();
        let _ = write!(buf, "{}:{}:", self.slot, cseq);
        let pad = self.body_len.saturating_sub(buf.len());
        buf.extend(std::iter::repeat_n('x', pad));
    }

    /// The counts so far (`lost` only after [`finish`](Self::finish)).
    pub fn counts(&self) -> &MessageCounts {
        &self.counts
    }

    /// Whether every message sent has been delivered.
    pub fn settled(&self) -> bool {
        self.unacked.is_empty()
    }

    /// A new connection is open: say hello.
    pub fn connected(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.conn = Conn::default();
        self.send_hello(now, out);
    }

    /// A `welcome`. Returns true when it is the connection's first, which
    /// makes the connection usable and resends every unacknowledged message.
    pub fn on_welcome(&mut self, next: u64, now: Instant, out: &mut Vec<Action>) -> bool {
        // A welcome we cannot match (its hello was pruned): tolerate the
        // whole replay.
        let ack = self.conn.hellos.pop_front().map(|h| h.ack).unwrap_or(0);
        self.conn.window = Some(Window {
            ack,
            next,
            last: ack,
            missed: false,
        });
        if self.conn.ready {
            return false;
        }
        self.conn.ready = true;
        for (&cseq, p) in self.unacked.iter_mut() {
            out.push(Action::Msg { cseq });
            p.sent_at = now;
            p.tries = 0;
            self.counts.resent += 1;
        }
        true
    }

    /// Sends a new message; returns its cseq.
    pub fn send_new(&mut self, now: Instant, out: &mut Vec<Action>) -> u64 {
        let cseq = self.next_cseq;
        self.next_cseq += 1;
        self.unacked.insert(
            cseq,
            Pending {
                sent_at: now,
                tries: 0,
            },
        );
        self.counts.sent += 1;
        out.push(Action::Msg { cseq });
        cseq
    }

    /// An `echo` of message `cseq` under `seq`.
    pub fn on_echo(
        &mut self,
        seq: u64,
        cseq: u64,
        body: Option<&Body<'_>>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let body_ok = self.body_matches(cseq, body);
        if seq < self.expected {
            if self.replay_copy(seq) {
                return;
            }
            if self.skipped.remove(&seq) {
                self.counts.reordered += 1;
                self.deliver_seq(seq, cseq, body_ok, now, out);
            } else if self.seq_cseq.get(&seq) != Some(&cseq) {
                // Not a copy of what that seq carried: the server reused it.
                self.counts.duplicated += 1;
            }
            return;
        }
        let window_hit = match self.conn.window.as_mut() {
            Some(w) if seq > w.ack && seq < w.next => {
                w.last = w.last.max(seq);
                true
            }
            _ => false,
        };
        if seq == self.expected {
            self.deliver_seq(seq, cseq, body_ok, now, out);
            self.expected += 1;
            self.gap_misses = 0;
            self.drain_buffer(now, out);
            return;
        }
        if let Some(b) = self.buffer.get(&seq) {
            let provisional = self.conn.hellos.front().is_some_and(|h| seq > h.ack);
            if !window_hit && !provisional && b.cseq != cseq {
                self.counts.duplicated += 1;
            }
            return;
        }
        self.buffer.insert(seq, Buffered { cseq, body_ok });
        // Did the last welcome's replay pass over `expected`? Messages can be
        // lost on the way, so only after a few such replays is the server
        // taken not to have it, and the gap given up.
        if self.conn.hellos.is_empty() {
            if let Some(w) = self.conn.window.as_mut() {
                if !w.missed && w.ack < self.expected && self.expected < w.next {
                    w.missed = true;
                    self.gap_misses += 1;
                    if self.gap_misses >= GAP_MISSES_TO_GIVE_UP {
                        self.give_up(now, out);
                        return;
                    }
                    // Resync again after `resend_after` (tick).
                    self.gap_since = Some(now);
                    return;
                }
            }
        }
        if self.gap_since.is_none() {
            self.gap_since = Some(now);
            if self.may_send_hello(now) {
                self.send_hello(now, out);
            }
        }
    }

    /// The 100 ms timer: asks for a gap again, resends late messages.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.prune(now);
        if !self.may_send_hello(now) {
            return;
        }
        if !self.conn.ready {
            // The hello or its welcome was lost: ask again.
            self.send_hello(now, out);
            return;
        }
        let resend_after = self.resend_after;
        let gap_due = self
            .gap_since
            .is_some_and(|t| now.saturating_duration_since(t) >= resend_after);
        let late = |p: &Pending| {
            now.saturating_duration_since(p.sent_at) >= resend_delay(resend_after, p.tries)
        };
        if !gap_due && !self.unacked.values().any(late) {
            return;
        }
        self.send_hello(now, out);
        if gap_due {
            self.gap_since = Some(now);
        }
        let mut resent = 0;
        for (&cseq, p) in self.unacked.iter_mut() {
            if resent >= MAX_RESENDS_PER_TICK {
                break;
            }
            if late(p) {
                out.push(Action::Msg { cseq });
                p.sent_at = now;
                p.tries = p.tries.saturating_add(1);
                resent += 1;
            }
        }
        self.counts.resent += resent as u64;
    }

    /// The end of the slot: delivers what waited behind a gap, counts the
    /// lost, and returns the final counts.
    pub fn finish(&mut self, now: Instant, out: &mut Vec<Action>) -> MessageCounts {
        while !self.buffer.is_empty() {
            self.give_up(now, out);
        }
        let sent = self.next_cseq - 1;
        self.counts.lost += sent.saturating_sub(self.counts.received);
        self.counts.clone()
    }

    /// The `ack` of a hello: the last contiguous seq. A seq given up on
    /// stays asked for, so a late copy still arrives (and counts as reordered).
    fn ack(&self) -> u64 {
        let contiguous = self.expected - 1;
        match self.skipped.first() {
            Some(&s) => contiguous.min(s.saturating_sub(1)),
            None => contiguous,
        }
    }

    fn send_hello(&mut self, now: Instant, out: &mut Vec<Action>) {
        let ack = self.ack();
        out.push(Action::Hello { ack });
        self.conn.hellos.push_back(HelloSent { ack, at: now });
    }

    /// A new hello may go out: none pending, or the newest is overdue.
    fn may_send_hello(&self, now: Instant) -> bool {
        self.conn
            .hellos
            .back()
            .is_none_or(|h| now.saturating_duration_since(h.at) >= self.hello_timeout)
    }

    /// Forgets hellos that surely went unanswered.
    fn prune(&mut self, now: Instant) {
        let limit = self.hello_timeout * 2;
        while self
            .conn
            .hellos
            .front()
            .is_some_and(|h| now.saturating_duration_since(h.at) >= limit)
        {
            self.conn.hellos.pop_front();
        }
    }

    /// `seq` may be a replayed copy: a welcome window not yet past it, or
    /// the replay of a hello still unanswered.
    fn replay_copy(&mut self, seq: u64) -> bool {
        if let Some(w) = self.conn.window.as_mut() {
            if seq > w.ack && seq < w.next && seq > w.last {
                w.last = seq;
                return true;
            }
        }
        self.conn.hellos.front().is_some_and(|h| seq > h.ack)
    }

    fn drain_buffer(&mut self, now: Instant, out: &mut Vec<Action>) {
        while let Some(b) = self.buffer.remove(&self.expected) {
            self.deliver_seq(self.expected, b.cseq, b.body_ok, now, out);
            self.expected += 1;
        }
        self.gap_since = (!self.buffer.is_empty()).then_some(now);
    }

    /// Skips the missing seqs before the first buffered one.
    fn give_up(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some((&first, _)) = self.buffer.first_key_value() else {
            return;
        };
        for s in self.expected..first {
            if self.skipped.len() < MAX_REMEMBERED {
                self.skipped.insert(s);
            }
        }
        self.expected = self.expected.max(first);
        self.gap_misses = 0;
        self.drain_buffer(now, out);
    }

    /// Delivers the echo of `seq`, remembering which cseq it carried.
    fn deliver_seq(
        &mut self,
        seq: u64,
        cseq: u64,
        body_ok: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.seq_cseq.insert(seq, cseq);
        if self.seq_cseq.len() > SEQ_MEMORY {
            self.seq_cseq.pop_first();
        }
        self.deliver(cseq, body_ok, now, out);
    }

    /// Hands one echo to the "application": exactly-once accounting by cseq.
    fn deliver(&mut self, cseq: u64, body_ok: bool, now: Instant, out: &mut Vec<Action>) {
        if !body_ok {
            self.counts.corrupted += 1;
        }
        if cseq == 0 || cseq >= self.next_cseq {
            return;
        }
        if !self.delivered.insert(cseq) {
            self.counts.duplicated += 1;
            return;
        }
        self.counts.received += 1;
        if let Some(p) = self.unacked.remove(&cseq) {
            let us = now.saturating_duration_since(p.sent_at).as_micros() as u64;
            out.push(Action::Latency { us });
        }
    }

    /// Whether `body` is what message `cseq` carried.
    fn body_matches(&mut self, cseq: u64, body: Option<&Body<'_>>) -> bool {
        let Some(text) = body.and_then(Body::as_str) else {
            return false;
        };
        if cseq == 0 || cseq >= self.next_cseq {
            return false;
        }
        let mut want = std::mem::take(&mut self.scratch);
        self.write_body(cseq, &mut want);
        let ok = want == text;
        self.scratch = want;
        ok
    }
}

/// How long a message waits for its echo before its `tries`-th resend:
/// `resend_after`, doubling per try up to 4 ×, at most [`MAX_RESEND_DELAY`]
/// (or `resend_after` itself when that is longer).
fn resend_delay(resend_after: Duration, tries: u8) -> Duration {
    resend_after
        .saturating_mul(1u32 << tries.min(2))
        .min(MAX_RESEND_DELAY.max(resend_after))
}

/// A growable bit set indexed by cseq.
#[derive(Default)]
struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    /// Sets bit `i`; true when it was not set before.
    fn insert(&mut self, i: u64) -> bool {
        let w = (i / 64) as usize;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let mask = 1u64 << (i % 64);
        let was = self.words[w] & mask != 0;
        self.words[w] |= mask;
        !was
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    const RESEND: Duration = Duration::from_millis(300);

    /// A scripted client: the machine, a clock, and the actions not yet
    /// looked at.
    struct Script {
        rs: ResumeState,
        t0: Instant,
        now: Instant,
        out: Vec<Action>,
        /// cseq → the seq the "server" gave it (default: the same number).
        seqs: BTreeMap<u64, u64>,
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn hello(ack: u64) -> Action {
        Action::Hello { ack }
    }

    fn msg(cseq: u64) -> Action {
        Action::Msg { cseq }
    }

    fn latencies(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Latency { .. }))
            .count()
    }

    impl Script {
        /// Connected and welcomed (next 1) at 0 ms, then messages 1..=n
        /// sent at 1..=n ms.
        fn ready_with(n: u64) -> Script {
            let t0 = Instant::now();
            let mut s = Script {
                rs: ResumeState::new("s".into(), 3, 64, RESEND),
                t0,
                now: t0,
                out: Vec::new(),
                seqs: BTreeMap::new(),
            };
            assert_eq!(s.connect(), vec![hello(0)]);
            assert_eq!(s.welcome(1), vec![]);
            for k in 1..=n {
                s.at(k);
                let cseq = s.rs.send_new(s.now, &mut s.out);
                assert_eq!(cseq, k);
            }
            assert_eq!(s.take(), (1..=n).map(msg).collect::<Vec<_>>());
            s
        }

        /// Moves the clock to `t0 + t` ms.
        fn at(&mut self, t: u64) {
            self.now = self.t0 + ms(t);
        }

        fn take(&mut self) -> Vec<Action> {
            std::mem::take(&mut self.out)
        }

        fn connect(&mut self) -> Vec<Action> {
            self.rs.connected(self.now, &mut self.out);
            self.take()
        }

        fn welcome(&mut self, next: u64) -> Vec<Action> {
            self.rs.on_welcome(next, self.now, &mut self.out);
            self.take()
        }

        /// Echoes of these seqs, each with the cseq the server gave it and
        /// that message's body.
        fn echo(&mut self, seqs: &[u64]) -> Vec<Action> {
            for &seq in seqs {
                let cseq = self
                    .seqs
                    .iter()
                    .find(|(_, &s)| s == seq)
                    .map(|(&c, _)| c)
                    .unwrap_or(seq);
                self.echo_as(seq, cseq);
            }
            self.take()
        }

        /// One echo of `cseq` under `seq`, with `cseq`'s body.
        fn echo_as(&mut self, seq: u64, cseq: u64) {
            let mut b = String::new();
            self.rs.write_body(cseq, &mut b);
            let body = Body::Text(Cow::Owned(b));
            self.rs
                .on_echo(seq, cseq, Some(&body), self.now, &mut self.out);
        }

        fn tick(&mut self) -> Vec<Action> {
            self.rs.tick(self.now, &mut self.out);
            self.take()
        }

        /// Ticks on the 100 ms grid from now up to `until` ms; the actions
        /// of each tick that did something, with its time.
        fn ticks_until(&mut self, until: u64) -> Vec<(u64, Vec<Action>)> {
            let mut t = (self.now - self.t0).as_millis() as u64 / 100 * 100;
            let mut seen = Vec::new();
            while t + 100 <= until {
                t += 100;
                self.at(t);
                let a = self.tick();
                if !a.is_empty() {
                    seen.push((t, a));
                }
            }
            seen
        }

        /// (received, duplicated, reordered, corrupted, lost) after finish.
        fn finish(&mut self) -> (u64, u64, u64, u64, u64) {
            let c = self.rs.finish(self.now, &mut self.out);
            (c.received, c.duplicated, c.reordered, c.corrupted, c.lost)
        }
    }

    #[test]
    fn hello_welcome_send_and_deliver_in_order() {
        let mut s = Script::ready_with(3);
        s.at(10);
        assert_eq!(
            s.echo(&[1, 2, 3]),
            vec![
                Action::Latency { us: 9_000 },
                Action::Latency { us: 8_000 },
                Action::Latency { us: 7_000 },
            ]
        );
        assert!(s.rs.settled());
        assert_eq!(s.ticks_until(3000), vec![]);
        assert_eq!(s.finish(), (3, 0, 0, 0, 0));
        assert_eq!((s.rs.counts().sent, s.rs.counts().resent), (3, 0));
    }

    #[test]
    fn a_gap_is_asked_for_at_once_and_the_replay_fills_it() {
        let mut s = Script::ready_with(4);
        s.at(10);
        assert_eq!(latencies(&s.echo(&[1])), 1);
        // 2 was lost on the way: 3 shows the gap.
        assert_eq!(s.echo(&[3]), vec![hello(1)]);
        assert_eq!(s.echo(&[4]), vec![], "one hello per gap");
        s.at(12);
        assert_eq!(s.welcome(5), vec![]);
        // The replay: 2, then copies of 3 and 4.
        assert_eq!(latencies(&s.echo(&[2, 3, 4])), 3);
        assert!(s.rs.settled());
        assert_eq!(s.ticks_until(3000), vec![]);
        assert_eq!(s.finish(), (4, 0, 0, 0, 0));
    }

    #[test]
    fn a_lost_hello_is_asked_again_after_the_hello_timeout() {
        let mut s = Script::ready_with(3);
        s.at(10);
        s.echo(&[1]);
        assert_eq!(s.echo(&[3]), vec![hello(1)]);
        // That hello never arrives. Nothing goes out until the 2 s hello
        // timeout, not even the resends; then the hello and every message
        // not yet delivered (3 waits behind the gap).
        assert_eq!(
            s.ticks_until(2100),
            vec![(2100, vec![hello(1), msg(2), msg(3)])]
        );
        assert_eq!(s.rs.counts().resent, 2);
        s.at(2105);
        s.welcome(4);
        assert_eq!(latencies(&s.echo(&[2, 3])), 2);
        assert_eq!(s.finish(), (3, 0, 0, 0, 0));
    }

    #[test]
    fn a_lost_welcome_whose_replay_arrives_still_fills_the_gap() {
        let mut s = Script::ready_with(3);
        s.at(10);
        s.echo(&[1]);
        assert_eq!(s.echo(&[3]), vec![hello(1)]);
        // No welcome, but the replay comes.
        s.at(12);
        assert_eq!(latencies(&s.echo(&[2, 3])), 2);
        assert!(s.rs.settled());
        assert_eq!(s.ticks_until(5000), vec![]);
        assert_eq!(s.finish(), (3, 0, 0, 0, 0));
    }

    #[test]
    fn a_lost_first_welcome_is_asked_for_again() {
        let t0 = Instant::now();
        let mut rs = ResumeState::new("s".into(), 0, 64, RESEND);
        let mut out = Vec::new();
        rs.connected(t0, &mut out);
        assert_eq!(out, vec![hello(0)]);
        out.clear();
        rs.tick(t0 + ms(1900), &mut out);
        assert_eq!(out, vec![]);
        rs.tick(t0 + ms(2000), &mut out);
        assert_eq!(out, vec![hello(0)]);
        assert!(!rs.conn.ready);
        out.clear();
        assert!(rs.on_welcome(1, t0 + ms(2001), &mut out));
        assert!(rs.conn.ready);
        assert!(!rs.on_welcome(1, t0 + ms(2002), &mut out), "only the first");
        assert_eq!(out, vec![]);
    }

    #[test]
    fn a_lost_last_echo_is_recovered_by_its_resend_and_a_hello() {
        // No later echo shows a gap: message 3's late echo does.
        let mut s = Script::ready_with(3);
        s.at(10);
        s.echo(&[1, 2]);
        // Resent 300, then 600, then 1200 ms apart; the server ignores the
        // repeated cseq and replays seq 3, lost three times.
        let mut t = 0;
        for due in [400, 1000, 2200, 3400] {
            assert_eq!(s.ticks_until(due), vec![(due, vec![hello(2), msg(3)])]);
            t = due + 5;
            s.at(t);
            s.welcome(4);
        }
        assert_eq!(t, 3405);
        assert_eq!(s.echo(&[3]), vec![Action::Latency { us: 5_000 }]);
        assert_eq!(s.rs.counts().resent, 4);
        assert_eq!(s.finish(), (3, 0, 0, 0, 0));
    }

    #[test]
    fn a_lost_msg_is_resent_and_numbered_later() {
        let mut s = Script::ready_with(3);
        // cseq 2 never reached the server, so 3 became seq 2.
        s.seqs.insert(3, 2);
        s.seqs.insert(2, 3);
        s.at(10);
        assert_eq!(latencies(&s.echo(&[1, 2])), 2);
        assert_eq!(s.ticks_until(400), vec![(400, vec![hello(2), msg(2)])]);
        s.at(405);
        s.welcome(3);
        assert_eq!(latencies(&s.echo(&[3])), 1);
        assert_eq!(s.finish(), (3, 0, 0, 0, 0));
    }

    #[test]
    fn a_duplicate_ahead_of_a_gap_counts_once() {
        let mut s = Script::ready_with(4);
        s.at(10);
        s.echo(&[1]);
        assert_eq!(s.echo(&[3]), vec![hello(1)]);
        s.echo_as(3, 4); // a different message under seq 3
        s.echo_as(3, 4);
        s.at(20);
        s.welcome(5);
        s.echo(&[2, 3]);
        s.echo_as(3, 4);
        s.echo_as(4, 4);
        assert_eq!(s.finish(), (4, 1, 0, 0, 0));
    }

    #[test]
    fn a_reconnect_mid_replay_resends_and_resumes_from_the_prefix() {
        let mut s = Script::ready_with(6);
        s.at(10);
        s.echo(&[1]);
        assert_eq!(s.echo(&[4]), vec![hello(1)]);
        s.at(20);
        s.welcome(7);
        // The replay brings 2, then the connection drops before 3.
        assert_eq!(latencies(&s.echo(&[2])), 1);
        s.at(500);
        assert_eq!(s.connect(), vec![hello(2)]);
        assert!(!s.rs.conn.ready);
        assert_eq!(s.tick(), vec![], "nothing goes out before the welcome");
        s.at(510);
        // Every message not delivered goes again, 4 included (it waits
        // behind the gap).
        assert_eq!(s.welcome(7), vec![msg(3), msg(4), msg(5), msg(6)]);
        assert_eq!(s.rs.counts().resent, 4);
        // The replay (3..=6), then the server ignores the resent cseqs.
        assert_eq!(latencies(&s.echo(&[3, 4, 5, 6])), 4);
        assert!(s.rs.settled());
        assert_eq!(s.finish(), (6, 0, 0, 0, 0));
    }

    #[test]
    fn an_out_of_order_echo_is_delivered_in_order_when_the_gap_fills() {
        // The server sends 3 before 2: no loss, no reorder.
        let mut s = Script::ready_with(3);
        s.at(10);
        s.echo(&[1]);
        assert_eq!(s.echo(&[3]), vec![hello(1)]);
        assert_eq!(latencies(&s.echo(&[2])), 2);
        // The hello's welcome and replay are all copies.
        s.welcome(4);
        assert_eq!(s.echo(&[2, 3]), vec![]);
        assert_eq!(s.ticks_until(3000), vec![]);
        assert_eq!(s.finish(), (3, 0, 0, 0, 0));
    }

    #[test]
    fn what_never_comes_is_lost_and_what_waited_is_delivered_at_the_end() {
        let mut s = Script::ready_with(4);
        s.at(10);
        s.echo(&[1, 3]);
        assert_eq!(s.finish(), (2, 0, 0, 0, 2));
        assert_eq!(latencies(&s.take()), 1, "3 is delivered at the end");
    }

    #[test]
    fn a_changed_body_is_corrupted_but_delivered() {
        let mut s = Script::ready_with(2);
        s.at(10);
        let other = Body::Text(Cow::Borrowed("3:1:not-the-body"));
        s.rs.on_echo(1, 1, Some(&other), s.now, &mut s.out);
        s.rs.on_echo(2, 2, Some(&Body::Json(5.into())), s.now, &mut s.out);
        // An echo of a cseq never sent is corrupted and not delivered.
        s.echo_as(3, 9);
        assert_eq!(s.finish(), (2, 0, 0, 3, 0));
    }

    #[test]
    fn resends_back_off_to_four_times_resend_after() {
        let d = |t| resend_delay(RESEND, t);
        assert_eq!(
            [d(0), d(1), d(2), d(3), d(200)],
            [ms(300), ms(600), ms(1200), ms(1200), ms(1200)]
        );
        let d = |t| resend_delay(Duration::from_secs(3), t);
        assert_eq!([d(0), d(1), d(2)], [ms(3000), ms(4000), ms(4000)]);
        assert_eq!(resend_delay(Duration::from_secs(6), 3), ms(6000));
    }

    #[test]
    fn bodies_have_the_configured_size() {
        let rs = ResumeState::new("s".into(), 12, 100, RESEND);
        let mut b = String::new();
        rs.write_body(345, &mut b);
        assert_eq!(b.len(), 60);
        assert!(b.starts_with("12:345:xxx"));
        let rs = ResumeState::new("s".into(), 1, 10, RESEND);
        rs.write_body(7, &mut b);
        assert_eq!(b, "1:7:xxxxxxxxxxxx");
    }

    #[test]
    fn bitset() {
        let mut b = BitSet::default();
        assert!(b.insert(5));
        assert!(!b.insert(5));
        assert!(b.insert(1000));
    }
}
