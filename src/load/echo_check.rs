//! Echo mode: one connection against any echo server.
//!
//! A writer task sends binary messages
//! `"WSF1" | slot u32 | seq u64 | send time µs u64 | pattern` (big endian,
//! padded to `--message-bytes`); the session reads the echoes and hands each
//! to [`EchoCheck`], a pure per-connection checker (no socket, no clock:
//! the time comes in as an argument) that tells echoes in order from
//! reordered, duplicated and corrupted ones.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::report::MessageCounts;
use super::session::Ctx;
use super::session::{
    describe_close, describe_ws_error, end_session, initial_jitter, SessionEnd, Tally, Ws,
    LIVE_PUSH,
};

const MAGIC: &[u8; 4] = b"WSF1";
/// Bytes of the echo-mode header (magic, slot, seq, send time).
pub(crate) const HEADER_BYTES: usize = 24;
/// How long a draining connection stays open after its last echo, so that
/// late duplicates are counted.
const ECHO_LINGER: Duration = Duration::from_millis(300);

/// The per-connection checks of echo mode.
///
/// Sequence numbers continue across the reconnects of a slot; a connection
/// expects echoes of `first_seq..first_seq + sent`, in that order.
pub(crate) struct EchoCheck {
    slot: u32,
    first_seq: u64,
    msg_len: usize,
    /// The next seq expected in order.
    expected: u64,
    /// Seqs skipped over by a later echo; one arriving now is reordered.
    missing: BTreeSet<u64>,
    /// `received`, `duplicated`, `reordered`, `corrupted` of this connection.
    pub counts: MessageCounts,
}

impl EchoCheck {
    pub fn new(slot: u32, first_seq: u64, message_bytes: usize) -> Self {
        EchoCheck {
            slot,
            first_seq,
            msg_len: message_bytes.max(HEADER_BYTES),
            expected: first_seq,
            missing: BTreeSet::new(),
            counts: MessageCounts::default(),
        }
    }

    /// Checks one binary echo that arrived at `now_us` (run clock), when
    /// `sent` messages have gone out on this connection. Returns the
    /// round-trip latency (µs) of a first echo; `None` for a duplicate or a
    /// message that is not one of ours.
    pub fn on_binary(&mut self, data: &[u8], now_us: u64, sent: u64) -> Option<u64> {
        let c = &mut self.counts;
        let Some((slot, seq, send_us)) = decode_header(data) else {
            c.corrupted += 1;
            return None;
        };
        if slot != self.slot || seq < self.first_seq || seq >= self.first_seq + sent {
            c.corrupted += 1;
            return None;
        }
        if data.len() != self.msg_len || !pattern_ok(data, seq) {
            c.corrupted += 1;
        }
        if seq == self.expected {
            self.expected += 1;
        } else if seq > self.expected {
            self.missing.extend(self.expected..seq);
            self.expected = seq + 1;
        } else if self.missing.remove(&seq) {
            c.reordered += 1;
        } else {
            c.duplicated += 1;
            return None;
        }
        c.received += 1;
        Some(now_us.saturating_sub(send_us))
    }

    /// A text message: echo mode only sends binary ones.
    pub fn on_text(&mut self) {
        self.counts.corrupted += 1;
    }
}

struct WriterShared {
    /// Messages handed to the socket so far on this connection.
    sent: AtomicU64,
    /// The writer has stopped.
    done: AtomicBool,
}

/// Runs one echo-mode connection until it ends or the slot has drained.
/// `seq_base` is the slot's next seq; it moves past what this connection sent.
pub(crate) async fn session(tally: &mut Tally, ws: Ws, seq_base: &mut u64) -> SessionEnd {
    tally.usable();
    let (sink, mut stream) = ws.split();
    let first_seq = *seq_base;
    let shared = Arc::new(WriterShared {
        sent: AtomicU64::new(0),
        done: AtomicBool::new(false),
    });
    let writer_stop = tally.stop.child_token();
    let writer_abort = CancellationToken::new();
    let writer = tokio::spawn(writer(
        tally.ctx.clone(),
        tally.id,
        sink,
        first_seq,
        shared.clone(),
        writer_stop.clone(),
        writer_abort.clone(),
    ));
    let mut check = EchoCheck::new(tally.id, first_seq, tally.ctx.message_bytes);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctx = tally.ctx.clone();
    let stop = tally.stop.clone();
    let mut settled: Option<Instant> = None;
    let end = loop {
        let draining = tally.draining();
        tokio::select! {
            biased;
            item = stream.next() => match item {
                Some(Ok(Message::Binary(data))) => {
                    let now_us = ctx.now_us(Instant::now());
                    let sent = shared.sent.load(Ordering::Acquire);
                    if let Some(us) = check.on_binary(&data, now_us, sent) {
                        tally.record_latency(us);
                    }
                }
                Some(Ok(Message::Text(_))) => check.on_text(),
                Some(Ok(Message::Close(frame))) => {
                    if draining {
                        break SessionEnd::Finished;
                    }
                    break SessionEnd::Dropped(format!("the server closed the connection ({})", describe_close(frame.as_ref())));
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => break SessionEnd::Dropped(describe_ws_error(&err)),
                None => break SessionEnd::Dropped("the connection ended without a close frame".into()),
            },
            _ = stop.cancelled(), if !draining => tally.start_drain(),
            _ = ctx.hard_stop.cancelled() => break SessionEnd::Finished,
            _ = tick.tick() => {
                if tally.draining_over() {
                    break SessionEnd::Finished;
                }
                if tally.last_push.elapsed() >= LIVE_PUSH {
                    let extra = MessageCounts {
                        sent: shared.sent.load(Ordering::Acquire),
                        ..check.counts.clone()
                    };
                    tally.push_live(&extra);
                }
            }
        }
        if tally.draining()
            && shared.done.load(Ordering::Acquire)
            && check.counts.received >= shared.sent.load(Ordering::Acquire)
        {
            // Everything is echoed; stay a moment for stray copies
            // (duplicates) so they are counted, then finish.
            let until = *settled.get_or_insert_with(|| Instant::now() + ECHO_LINGER);
            if Instant::now() >= until {
                break SessionEnd::Finished;
            }
        }
    };
    writer_stop.cancel();
    writer_abort.cancel();
    let sink = writer.await.ok();
    let sent = shared.sent.load(Ordering::Acquire);
    *seq_base += sent;
    let mut counts = check.counts;
    counts.sent = sent;
    counts.lost = sent.saturating_sub(counts.received);
    tally.res.msgs.add(&counts);
    end_session(tally, &end, sink, stream).await;
    end
}

async fn writer(
    ctx: Arc<Ctx>,
    slot: u32,
    mut sink: SplitSink<Ws, Message>,
    first_seq: u64,
    shared: Arc<WriterShared>,
    stop: CancellationToken,
    abort: CancellationToken,
) -> SplitSink<Ws, Message> {
    let mut seq = first_seq;
    let mut next = tokio::time::Instant::now() + initial_jitter(ctx.rate());
    loop {
        let rate = ctx.rate();
        if rate <= 0.0 || !rate.is_finite() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.cancelled() => break,
            }
            next = tokio::time::Instant::now();
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.cancelled() => break,
        }
        let now = Instant::now();
        let msg = encode_echo(slot, seq, ctx.now_us(now), ctx.message_bytes);
        let fed = tokio::select! {
            r = sink.feed(Message::Binary(msg)) => r,
            _ = stop.cancelled() => break,
        };
        if fed.is_err() {
            break;
        }
        seq += 1;
        shared.sent.store(seq - first_seq, Ordering::Release);
        // A message fed is counted as sent: its flush is cut short only by
        // the reader giving up (`abort`), never by the end of sending.
        let flushed = tokio::select! {
            r = sink.flush() => r,
            _ = abort.cancelled() => break,
        };
        if flushed.is_err() {
            break;
        }
        next += Duration::from_secs_f64(1.0 / rate);
        let now = tokio::time::Instant::now();
        if next + Duration::from_secs(1) < now {
            // Fell far behind (a stall): do not burst to catch up.
            next = now;
        }
    }
    tokio::select! {
        _ = sink.flush() => {}
        _ = abort.cancelled() => {}
    }
    shared.done.store(true, Ordering::Release);
    sink
}

/// Builds one echo-mode message: header, then a pattern derived from `seq`.
pub(crate) fn encode_echo(slot: u32, seq: u64, send_us: u64, len: usize) -> Bytes {
    let len = len.max(HEADER_BYTES);
    let mut buf = BytesMut::with_capacity(len);
    buf.put_slice(MAGIC);
    buf.put_u32(slot);
    buf.put_u64(seq);
    buf.put_u64(send_us);
    let key = seq as u8;
    for i in HEADER_BYTES..len {
        buf.put_u8((i as u8) ^ key);
    }
    buf.freeze()
}

/// Reads `(slot, seq, send_us)` from an echo-mode message.
pub(crate) fn decode_header(data: &[u8]) -> Option<(u32, u64, u64)> {
    if data.len() < HEADER_BYTES || &data[..4] != MAGIC {
        return None;
    }
    let slot = u32::from_be_bytes(data[4..8].try_into().ok()?);
    let seq = u64::from_be_bytes(data[8..16].try_into().ok()?);
    let send_us = u64::from_be_bytes(data[16..24].try_into().ok()?);
    Some((slot, seq, send_us))
}

fn pattern_ok(data: &[u8], seq: u64) -> bool {
    let key = seq as u8;
    data.iter()
        .enumerate()
        .skip(HEADER_BYTES)
        .all(|(i, &b)| b == (i as u8) ^ key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_messages_round_trip() {
        let m = encode_echo(7, 42, 1234, 64);
        assert_eq!(m.len(), 64);
        assert_eq!(decode_header(&m), Some((7, 42, 1234)));
        assert!(pattern_ok(&m, 42));
        let mut bad = m.to_vec();
        bad[40] ^= 1;
        assert!(!pattern_ok(&bad, 42));
        assert_eq!(encode_echo(1, 1, 1, 3).len(), HEADER_BYTES);
    }

    /// (received, duplicated, reordered, corrupted)
    fn counts(c: &EchoCheck) -> (u64, u64, u64, u64) {
        let m = &c.counts;
        (m.received, m.duplicated, m.reordered, m.corrupted)
    }

    /// Feeds echoes of `seqs` (slot 3, sent at 100 µs, checked at 150 µs)
    /// to a connection whose first seq is 10 and that has sent 8.
    fn feed(seqs: &[u64]) -> (EchoCheck, Vec<Option<u64>>) {
        let mut c = EchoCheck::new(3, 10, 64);
        let lat = seqs
            .iter()
            .map(|&s| c.on_binary(&encode_echo(3, s, 100, 64), 150, 8))
            .collect();
        (c, lat)
    }

    #[test]
    fn in_order_echoes_count_once_with_their_latency() {
        let (c, lat) = feed(&[10, 11, 12]);
        assert_eq!(counts(&c), (3, 0, 0, 0));
        assert_eq!(lat, vec![Some(50); 3]);
    }

    #[test]
    fn a_swapped_pair_is_one_reorder() {
        let (c, lat) = feed(&[10, 12, 11, 13]);
        assert_eq!(counts(&c), (4, 0, 1, 0));
        assert!(lat.iter().all(Option::is_some));
    }

    #[test]
    fn a_repeat_is_a_duplicate_without_latency() {
        let (c, lat) = feed(&[10, 11, 11, 12, 10]);
        assert_eq!(counts(&c), (3, 2, 0, 0));
        assert_eq!(lat[2], None);
        assert_eq!(lat[4], None);
        // A reordered echo that then comes again is a duplicate too.
        let (c, _) = feed(&[10, 12, 11, 11]);
        assert_eq!(counts(&c), (3, 1, 1, 0));
    }

    #[test]
    fn a_missing_echo_is_not_received() {
        // The loss itself is sent - received, counted when the connection ends.
        let (c, _) = feed(&[10, 11, 13, 14]);
        assert_eq!(counts(&c), (4, 0, 0, 0));
    }

    #[test]
    fn foreign_and_changed_messages_are_corrupted() {
        let mut c = EchoCheck::new(3, 10, 64);
        // Another slot's, a seq never sent, a seq from an earlier connection.
        for m in [
            encode_echo(4, 10, 0, 64),
            encode_echo(3, 18, 0, 64),
            encode_echo(3, 9, 0, 64),
        ] {
            assert_eq!(c.on_binary(&m, 0, 8), None);
        }
        assert_eq!(c.on_binary(b"not ours at all", 0, 8), None);
        assert_eq!(counts(&c), (0, 0, 0, 4));
        // A changed payload or length is corrupted but still received.
        let mut bad = encode_echo(3, 10, 0, 64).to_vec();
        bad[50] ^= 0xff;
        assert!(c.on_binary(&bad, 0, 8).is_some());
        assert!(c.on_binary(&encode_echo(3, 11, 0, 65), 0, 8).is_some());
        c.on_text();
        assert_eq!(counts(&c), (2, 0, 0, 7));
    }
}
