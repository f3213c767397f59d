//! The pure checks of script mode (no socket, no clock: time comes in as an
//! argument), driven by [`super::script_session`]:
//!
//! - [`ReplyCheck`]: one answer per sent message, matched by an id; none
//!   within the timeout is lost, a second is duplicated; latency is send →
//!   answer.
//! - [`SequenceCheck`]: server-pushed sequence numbers per key, each the
//!   previous + 1; a gap is lost until it is filled (then reordered), a
//!   repeat is duplicated; the state can outlive a connection (`resume`).
//!
//! Ids are kept as 64-bit hashes, so that matching allocates nothing.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher as _;
use std::time::{Duration, Instant};

use super::report::MessageCounts;

/// Hashes message ids (fixed keys: the same id always hashes the same).
#[derive(Debug, Clone, Default)]
pub(crate) struct IdHasher(
    std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>,
);

impl IdHasher {
    pub fn hash(&self, id: &str) -> u64 {
        self.0.hash_one(id)
    }
}

/// What an answer turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The first answer to a pending message, with its latency.
    First { latency: Duration },
    /// A second (or later) answer to a message.
    Duplicate,
    /// An id this connection never sent (another connection's, or one
    /// already counted lost).
    Unknown,
}

/// Request/answer matching on one connection.
#[derive(Debug)]
pub(crate) struct ReplyCheck {
    timeout: Duration,
    /// Sent and not answered yet: id hash → send time.
    pending: HashMap<u64, Instant>,
    /// Sent order, for expiry (entries already answered are skipped).
    order: VecDeque<(Instant, u64)>,
    /// Answered ids, remembered for twice the timeout to tell duplicates.
    answered: HashSet<u64>,
    answered_order: VecDeque<(Instant, u64)>,
}

impl ReplyCheck {
    pub fn new(timeout: Duration) -> Self {
        ReplyCheck {
            timeout,
            pending: HashMap::new(),
            order: VecDeque::new(),
            answered: HashSet::new(),
            answered_order: VecDeque::new(),
        }
    }

    /// A message with id `id` was sent at `now`. Returns false when that id
    /// is still pending (the script's ids are not unique); it is not tracked
    /// again.
    pub fn sent(&mut self, id: u64, now: Instant) -> bool {
        if self.pending.contains_key(&id) {
            return false;
        }
        self.answered.remove(&id);
        self.pending.insert(id, now);
        self.order.push_back((now, id));
        true
    }

    /// A server message carried id `id` at `now`.
    pub fn answer(&mut self, id: u64, now: Instant) -> Answer {
        if let Some(sent) = self.pending.remove(&id) {
            self.answered.insert(id);
            self.answered_order.push_back((now, id));
            return Answer::First {
                latency: now.saturating_duration_since(sent),
            };
        }
        if self.answered.contains(&id) {
            Answer::Duplicate
        } else {
            Answer::Unknown
        }
    }

    /// Messages whose answer is overdue at `now`: counted lost (returned)
    /// and forgotten; old answered ids are forgotten too.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let mut lost = 0;
        while let Some(&(at, id)) = self.order.front() {
            if now.saturating_duration_since(at) < self.timeout {
                break;
            }
            self.order.pop_front();
            if self.pending.get(&id) == Some(&at) {
                self.pending.remove(&id);
                lost += 1;
            }
        }
        let keep = self.timeout * 2;
        while let Some(&(at, id)) = self.answered_order.front() {
            if now.saturating_duration_since(at) < keep {
                break;
            }
            self.answered_order.pop_front();
            self.answered.remove(&id);
        }
        lost
    }

    /// The connection ended: the answers still pending can no longer come
    /// (their fate is unknown). Returns how many there were.
    pub fn cut(&mut self) -> u64 {
        let n = self.pending.len() as u64;
        self.pending.clear();
        self.order.clear();
        self.answered.clear();
        self.answered_order.clear();
        n
    }

    /// Whether no answer is outstanding.
    pub fn settled(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The largest gap tracked number by number; a bigger jump counts its
/// numbers lost at once (they can no longer turn into reordered ones).
const MAX_TRACKED_GAP: u64 = 100_000;

/// What one sequence number turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqOutcome {
    /// The next one expected.
    InOrder,
    /// Later than expected: `missing` numbers were skipped (lost until they come).
    Gap { missing: u64 },
    /// A skipped number arrived after all: reordered.
    Filled,
    /// Seen before.
    Duplicate,
}

/// One key's sequence.
#[derive(Debug, Clone, Default)]
struct Track {
    /// The next number expected (`None` before the first, when the first
    /// value is not fixed).
    next: Option<u64>,
    /// Numbers skipped by a gap and not seen since.
    missing: BTreeSet<u64>,
    /// Numbers skipped by a gap too large to track, already counted lost.
    lost_untracked: u64,
}

impl Track {
    fn on_seq(&mut self, seq: u64) -> SeqOutcome {
        let next = *self.next.get_or_insert(seq);
        if seq == next {
            self.next = Some(seq.saturating_add(1));
            SeqOutcome::InOrder
        } else if seq > next {
            let missing = seq - next;
            if missing <= MAX_TRACKED_GAP {
                self.missing.extend(next..seq);
            } else {
                self.lost_untracked += missing;
            }
            self.next = Some(seq.saturating_add(1));
            SeqOutcome::Gap { missing }
        } else if self.missing.remove(&seq) {
            SeqOutcome::Filled
        } else {
            SeqOutcome::Duplicate
        }
    }

    /// The last number before the first hole: where a resume starts.
    fn last_in_order(&self) -> u64 {
        match (self.missing.first(), self.next) {
            (Some(first_missing), _) => first_missing.saturating_sub(1),
            (None, Some(next)) => next.saturating_sub(1),
            (None, None) => 0,
        }
    }

    fn lost(&self) -> u64 {
        self.missing.len() as u64 + self.lost_untracked
    }
}

/// Sequence numbers per key, on one connection or (with `resume`) across
/// the reconnects of a slot.
#[derive(Debug, Clone)]
pub(crate) struct SequenceCheck {
    /// The number each key must start at (`None`: whatever comes first).
    first: Option<u64>,
    tracks: HashMap<String, Track>,
    /// The key seen last (for `{{last_seq}}`).
    last_key: Option<String>,
    /// Lost numbers of tracks that were reset (a new sequence after a
    /// reconnect without resume).
    lost_closed: u64,
}

impl SequenceCheck {
    pub fn new(first: Option<u64>) -> Self {
        SequenceCheck {
            first,
            tracks: HashMap::new(),
            last_key: None,
            lost_closed: 0,
        }
    }

    /// Number `seq` arrived for `key` (`""` when there is no key). Counts it
    /// into `counts` (received, duplicated, reordered).
    pub fn on_seq(&mut self, key: &str, seq: u64, counts: &mut MessageCounts) -> SeqOutcome {
        if self.last_key.as_deref() != Some(key) {
            self.last_key = Some(key.to_string());
        }
        let track = match self.tracks.get_mut(key) {
            Some(t) => t,
            None => self.tracks.entry(key.to_string()).or_insert(Track {
                next: self.first,
                ..Track::default()
            }),
        };
        let outcome = track.on_seq(seq);
        match outcome {
            SeqOutcome::InOrder | SeqOutcome::Gap { .. } => counts.received += 1,
            SeqOutcome::Filled => {
                counts.received += 1;
                counts.reordered += 1;
            }
            SeqOutcome::Duplicate => counts.duplicated += 1,
        }
        outcome
    }

    /// `{{last_seq}}`: the last in-order number of the key seen last (0 at first).
    pub fn last_seq(&self) -> u64 {
        self.last_key
            .as_deref()
            .and_then(|k| self.tracks.get(k))
            .map_or(0, Track::last_in_order)
    }

    /// Numbers still missing now (lost unless they come).
    pub fn lost(&self) -> u64 {
        self.lost_closed + self.tracks.values().map(Track::lost).sum::<u64>()
    }

    /// A new sequence starts (reconnect without resume): what is missing
    /// now stays lost.
    pub fn restart(&mut self) {
        self.lost_closed += self.tracks.values().map(Track::lost).sum::<u64>();
        self.tracks.clear();
        self.last_key = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn replies_first_duplicate_unknown_and_lost() {
        let t0 = Instant::now();
        let h = IdHasher::default();
        let mut c = ReplyCheck::new(ms(1000));
        assert!(c.sent(h.hash("0-1"), t0));
        assert!(c.sent(h.hash("0-2"), t0 + ms(10)));
        assert!(c.sent(h.hash("0-3"), t0 + ms(20)));
        assert!(!c.sent(h.hash("0-3"), t0 + ms(21)), "same id twice");
        assert_eq!(
            c.answer(h.hash("0-2"), t0 + ms(60)),
            Answer::First { latency: ms(50) }
        );
        assert_eq!(c.answer(h.hash("0-2"), t0 + ms(70)), Answer::Duplicate);
        assert_eq!(c.answer(h.hash("1-2"), t0 + ms(70)), Answer::Unknown);
        assert_eq!(c.expire(t0 + ms(999)), 0);
        assert_eq!(c.expire(t0 + ms(1000)), 1, "0-1 is overdue");
        assert!(!c.settled());
        assert_eq!(
            c.answer(h.hash("0-3"), t0 + ms(1019)),
            Answer::First { latency: ms(999) }
        );
        assert!(c.settled());
        assert_eq!(c.expire(t0 + ms(5000)), 0, "answered ones are not lost");
        assert_eq!(
            c.answer(h.hash("0-1"), t0 + ms(5000)),
            Answer::Unknown,
            "late"
        );
        assert_eq!(
            c.answer(h.hash("0-2"), t0 + ms(5000)),
            Answer::Unknown,
            "answered ids are forgotten after twice the timeout"
        );
    }

    #[test]
    fn a_cut_connection_leaves_its_pending_answers_unknown() {
        let t0 = Instant::now();
        let mut c = ReplyCheck::new(ms(1000));
        c.sent(1, t0);
        c.sent(2, t0);
        c.answer(1, t0 + ms(5));
        assert_eq!(c.cut(), 1);
        assert!(c.settled());
        assert_eq!(c.expire(t0 + ms(10_000)), 0, "not also lost");
    }

    fn feed(c: &mut SequenceCheck, key: &str, seqs: &[u64]) -> (Vec<SeqOutcome>, MessageCounts) {
        let mut counts = MessageCounts::default();
        let out = seqs
            .iter()
            .map(|&s| c.on_seq(key, s, &mut counts))
            .collect();
        (out, counts)
    }

    #[test]
    fn sequence_gap_fill_duplicate() {
        let mut c = SequenceCheck::new(Some(1));
        let (out, counts) = feed(&mut c, "r0", &[1, 2, 4, 5, 3, 3, 2, 7]);
        assert_eq!(
            out,
            [
                SeqOutcome::InOrder,
                SeqOutcome::InOrder,
                SeqOutcome::Gap { missing: 1 },
                SeqOutcome::InOrder,
                SeqOutcome::Filled,
                SeqOutcome::Duplicate,
                SeqOutcome::Duplicate,
                SeqOutcome::Gap { missing: 1 },
            ]
        );
        assert_eq!(
            (counts.received, counts.reordered, counts.duplicated),
            (6, 1, 2)
        );
        assert_eq!(c.lost(), 1, "6 never came");
        assert_eq!(c.last_seq(), 5, "resume from before the hole");
    }

    #[test]
    fn sequence_first_value_catches_a_lost_first_message() {
        let mut fixed = SequenceCheck::new(Some(1));
        feed(&mut fixed, "", &[2, 3]);
        assert_eq!(fixed.lost(), 1);
        let mut free = SequenceCheck::new(None);
        feed(&mut free, "", &[2, 3]);
        assert_eq!(free.lost(), 0);
        assert_eq!(free.last_seq(), 3);
    }

    #[test]
    fn sequence_keys_are_independent_and_last_seq_follows_the_last_key() {
        let mut c = SequenceCheck::new(Some(1));
        assert_eq!(c.last_seq(), 0);
        let (_, counts) = feed(&mut c, "a", &[1, 2, 3]);
        feed(&mut c, "b", &[1]);
        assert_eq!(c.last_seq(), 1);
        feed(&mut c, "a", &[4]);
        assert_eq!(c.last_seq(), 4);
        assert_eq!(counts.received, 3);
        assert_eq!(c.lost(), 0);
    }

    #[test]
    fn resume_continues_restart_starts_over() {
        // resume: the same check goes on across a reconnect; a replay from
        // last_seq fills the hole without loss.
        let mut c = SequenceCheck::new(Some(1));
        feed(&mut c, "r", &[1, 2, 3, 5]);
        assert_eq!(c.last_seq(), 3);
        let (_, counts) = feed(&mut c, "r", &[4, 5, 6]);
        assert_eq!((counts.reordered, counts.duplicated), (1, 1));
        assert_eq!(c.lost(), 0);
        // no resume: a new sequence; the hole left behind stays lost.
        feed(&mut c, "r", &[8]);
        c.restart();
        assert_eq!(c.last_seq(), 0);
        let (out, _) = feed(&mut c, "r", &[1, 2]);
        assert_eq!(out, [SeqOutcome::InOrder, SeqOutcome::InOrder]);
        assert_eq!(c.lost(), 1);
    }

    #[test]
    fn a_huge_jump_is_counted_without_tracking_each_number() {
        let mut c = SequenceCheck::new(Some(1));
        feed(&mut c, "", &[1, 10_000_000]);
        assert_eq!(c.lost(), 9_999_998);
        let (out, _) = feed(&mut c, "", &[5]);
        assert_eq!(out, [SeqOutcome::Duplicate]);
    }
}
