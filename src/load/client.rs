//! One logical connection ("slot") of the load client: connect, send at the
//! configured rate, check every echo, reconnect with backoff.
//!
//! * Echo mode: a writer task sends binary messages
//!   `"WSF1" | slot u32 | seq u64 | send time µs u64 | pattern` (big endian,
//!   padded to `--message-bytes`); the slot task reads and checks that
//!   echoes come back in order, once and unchanged.
//! * Resume mode: the §7 protocol, with a client-side reorder buffer, gap
//!   resync by `hello`, resend of unacknowledged `msg`s after a reconnect or
//!   a timeout, and exactly-once accounting by `seq` and `cseq`.
//!
//! Latencies go into per-slot HDR histograms (merged at the end); live
//! counters are pushed to [`LiveStats`] as deltas a few times a second.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use rand::RngExt as _;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::live::{new_histogram, LiveStats};
use super::Mode;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const MAGIC: &[u8; 4] = b"WSF1";
/// Bytes of the echo-mode header (magic, slot, seq, send time).
pub(crate) const HEADER_BYTES: usize = 24;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Resume mode: the longest wait between resends of one `msg`.
const MAX_RESEND_DELAY: Duration = Duration::from_secs(4);
/// Resume mode: messages queued for the writer before new sends are skipped.
const MAX_QUEUED: usize = 1024;
/// Resume mode: replays that must skip a seq before it is given up on.
const GAP_MISSES_TO_GIVE_UP: u32 = 5;
const LIVE_PUSH: Duration = Duration::from_millis(500);
const MAX_ERROR_KINDS: usize = 50;

/// State shared by every slot of one run.
pub(crate) struct Ctx {
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub subprotocol: Option<HeaderValue>,
    pub mode: Mode,
    pub reconnect: bool,
    pub message_bytes: usize,
    pub drain: Duration,
    pub resend_after: Duration,
    pub start: Instant,
    /// Current messages per second per connection (f64 bits).
    pub rate_bits: AtomicU64,
    pub live: Arc<LiveStats>,
    /// Stop sending (end of the run); slots drain then close.
    pub stop: CancellationToken,
    /// Give up everything now (end of the drain period).
    pub hard_stop: CancellationToken,
    pub handshakes: Semaphore,
    pub errors: Mutex<HashMap<String, u64>>,
    pub run_id: u64,
    pub latency: LatencyShards,
}

impl Ctx {
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate_bits.load(Ordering::Relaxed))
    }

    pub fn set_rate(&self, rate: f64) {
        self.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
    }

    fn now_us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_micros() as u64
    }

    /// Counts an error message; logs the first occurrence of each kind.
    pub fn record_error(&self, message: String) {
        let mut errors = self
            .errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(n) = errors.get_mut(&message) {
            *n += 1;
        } else if errors.len() < MAX_ERROR_KINDS {
            tracing::warn!("{message}");
            errors.insert(message, 1);
        } else {
            *errors.entry("(other errors)".to_string()).or_insert(0) += 1;
        }
    }
}

/// What one slot measured.
pub(crate) struct SlotResult {
    pub reconnect_us: Vec<u64>,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
    pub resent: u64,
    pub protocol_errors: u64,
    pub attempted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub reconnects: u64,
    pub disconnects: u64,
}

impl SlotResult {
    pub(crate) fn empty() -> Self {
        SlotResult {
            reconnect_us: Vec::new(),
            sent: 0,
            received: 0,
            lost: 0,
            duplicated: 0,
            reordered: 0,
            corrupted: 0,
            resent: 0,
            protocol_errors: 0,
            attempted: 0,
            succeeded: 0,
            failed: 0,
            reconnects: 0,
            disconnects: 0,
        }
    }
}

/// Latency samples a slot buffers before flushing them into the shared
/// histograms (one lock per this many messages, never one per message).
const SAMPLE_BATCH: usize = 256;

/// Shared latency histograms (µs), sharded by slot to keep locks uncontended.
pub(crate) struct LatencyShards {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl LatencyShards {
    pub fn new(n: usize) -> Self {
        LatencyShards {
            shards: (0..n.max(1)).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }

    fn record(&self, slot: u32, samples: &[u64]) {
        let shard = &self.shards[slot as usize % self.shards.len()];
        let mut h = shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for &us in samples {
            let _ = h.record(us);
        }
    }

    /// Every shard merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut total = new_histogram();
        for shard in &self.shards {
            let h = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let _ = total.add(&*h);
        }
        total
    }
}

/// Per-slot bookkeeping around [`SlotResult`].
struct Slot {
    ctx: Arc<Ctx>,
    id: u32,
    stop: CancellationToken,
    res: SlotResult,
    /// Latencies (µs) not yet flushed to the shared histograms.
    samples: Vec<u64>,
    /// When the last connection went down (for time-to-reconnect).
    down_since: Option<Instant>,
    /// Set when `stop` is first seen: drain until then.
    drain_deadline: Option<Instant>,
    pushed: Pushed,
    last_push: Instant,
    backoff_attempt: u32,
}

#[derive(Default)]
struct Pushed {
    sent: u64,
    received: u64,
    errors: u64,
}

/// How one connection ended.
enum SessionEnd {
    /// The client closed it at the end of the run (or of the slot).
    Finished,
    /// It never became usable (resume: no welcome).
    Failed(String),
    /// It was usable and then ended without the client asking.
    Dropped(String),
}

/// Runs one slot until the run (or the slot) is stopped and drained.
pub(crate) async fn run_slot(ctx: Arc<Ctx>, id: u32, stop: CancellationToken) -> SlotResult {
    let mut slot = Slot {
        samples: Vec::with_capacity(SAMPLE_BATCH),
        res: SlotResult::empty(),
        down_since: None,
        drain_deadline: None,
        pushed: Pushed::default(),
        last_push: Instant::now(),
        backoff_attempt: 0,
        ctx,
        id,
        stop,
    };
    let mut resume = (slot.ctx.mode == Mode::Resume).then(|| ResumeState::new(&slot.ctx, id));
    let mut echo_seq: u64 = 0;
    loop {
        if slot.ctx.hard_stop.is_cancelled() || slot.draining_over() {
            break;
        }
        if slot.stop.is_cancelled() {
            slot.start_drain();
            // Only a resume slot with unacknowledged messages reconnects to drain.
            let pending = resume.as_ref().is_some_and(|r| !r.unacked.is_empty());
            if !pending || !slot.ctx.reconnect {
                break;
            }
        }
        slot.res.attempted += 1;
        LiveStats::add(&slot.ctx.live.attempted, 1);
        let ctx = slot.ctx.clone();
        let connected = tokio::select! {
            r = connect(&ctx) => r,
            _ = ctx.hard_stop.cancelled() => break,
        };
        let end = match connected {
            Err(message) => SessionEnd::Failed(message),
            Ok(ws) => match resume.as_mut() {
                None => slot.echo_session(ws, &mut echo_seq).await,
                Some(state) => slot.resume_session(ws, state).await,
            },
        };
        match end {
            SessionEnd::Finished => break,
            SessionEnd::Failed(message) => {
                slot.res.failed += 1;
                LiveStats::add(&slot.ctx.live.failed, 1);
                slot.ctx.record_error(message);
            }
            SessionEnd::Dropped(message) => {
                slot.res.disconnects += 1;
                LiveStats::add(&slot.ctx.live.disconnects, 1);
                slot.ctx.record_error(message);
                slot.down_since.get_or_insert_with(Instant::now);
            }
        }
        slot.push_live(0, 0);
        if !slot.ctx.reconnect {
            break;
        }
        if !slot.backoff().await {
            break;
        }
    }
    if let Some(state) = resume {
        state.finish(&mut slot);
    }
    slot.push_live(0, 0);
    slot.res
}

impl Slot {
    fn start_drain(&mut self) {
        if self.drain_deadline.is_none() {
            self.drain_deadline = Some(Instant::now() + self.ctx.drain);
        }
    }

    fn draining_over(&self) -> bool {
        self.drain_deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Sleeps for an exponential backoff with full jitter; false when the
    /// slot should stop instead.
    async fn backoff(&mut self) -> bool {
        let exp = BACKOFF_BASE.saturating_mul(1u32 << self.backoff_attempt.min(16));
        let ceiling = exp.min(BACKOFF_CAP);
        self.backoff_attempt = self.backoff_attempt.saturating_add(1);
        let delay = Duration::from_micros(
            rand::rng().random_range(0..=ceiling.as_micros().min(u128::from(u64::MAX)) as u64),
        );
        let until = tokio::time::Instant::now() + delay;
        let ctx = self.ctx.clone();
        let resume_draining = self.ctx.mode == Mode::Resume;
        tokio::select! {
            _ = tokio::time::sleep_until(until) => true,
            _ = ctx.hard_stop.cancelled() => false,
            _ = self.stop.cancelled(), if !resume_draining => false,
        }
    }

    /// The connection is usable: count it, and the reconnect time if any.
    fn usable(&mut self) {
        self.res.succeeded += 1;
        LiveStats::add(&self.ctx.live.succeeded, 1);
        self.ctx.live.conn_up();
        self.backoff_attempt = 0;
        if let Some(down) = self.down_since.take() {
            self.res.reconnects += 1;
            LiveStats::add(&self.ctx.live.reconnects, 1);
            self.res
                .reconnect_us
                .push(down.elapsed().as_micros() as u64);
        }
    }

    fn record_latency(&mut self, us: u64) {
        self.samples.push(us.max(1));
        if self.samples.len() >= SAMPLE_BATCH {
            self.flush_samples();
        }
    }

    fn flush_samples(&mut self) {
        if self.samples.is_empty() {
            return;
        }
        self.ctx.latency.record(self.id, &self.samples);
        self.ctx.live.record_window(&self.samples);
        self.samples.clear();
    }

    fn errors(&self) -> u64 {
        let r = &self.res;
        r.failed + r.disconnects + r.corrupted + r.protocol_errors
    }

    /// Pushes counter deltas (and recent latencies) to the live stats;
    /// `extra_*` are the current echo connection's counts not yet folded in.
    fn push_live(&mut self, extra_sent: u64, extra_received: u64) {
        self.last_push = Instant::now();
        let live = &self.ctx.live;
        let sent = self.res.sent + extra_sent;
        LiveStats::add(&live.sent, sent.saturating_sub(self.pushed.sent));
        self.pushed.sent = self.pushed.sent.max(sent);
        let received = self.res.received + extra_received;
        LiveStats::add(
            &live.received,
            received.saturating_sub(self.pushed.received),
        );
        self.pushed.received = self.pushed.received.max(received);
        let errors = self.errors();
        LiveStats::add(&live.errors, errors.saturating_sub(self.pushed.errors));
        self.pushed.errors = errors;
        self.flush_samples();
    }

    // ----------------------------------------------------------------- echo

    async fn echo_session(&mut self, ws: Ws, seq_base: &mut u64) -> SessionEnd {
        self.usable();
        let (sink, mut stream) = ws.split();
        let first_seq = *seq_base;
        let shared = Arc::new(EchoShared {
            sent: AtomicU64::new(0),
            done: AtomicBool::new(false),
        });
        let writer_stop = self.stop.child_token();
        let writer_abort = CancellationToken::new();
        let writer = tokio::spawn(echo_writer(
            self.ctx.clone(),
            self.id,
            sink,
            first_seq,
            shared.clone(),
            writer_stop.clone(),
            writer_abort.clone(),
        ));
        let mut check = EchoCheck {
            expected: first_seq,
            missing: BTreeSet::new(),
            received: 0,
        };
        let msg_len = self.ctx.message_bytes.max(HEADER_BYTES);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ctx = self.ctx.clone();
        let stop = self.stop.clone();
        let mut settled: Option<Instant> = None;
        let end = loop {
            let draining = self.drain_deadline.is_some();
            tokio::select! {
                biased;
                item = stream.next() => match item {
                    Some(Ok(Message::Binary(data))) => {
                        let now = Instant::now();
                        let sent = shared.sent.load(Ordering::Acquire);
                        self.on_echo_binary(&mut check, &data, now, first_seq, sent, msg_len);
                    }
                    Some(Ok(Message::Text(_))) => self.res.corrupted += 1,
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
                _ = stop.cancelled(), if !draining => self.start_drain(),
                _ = ctx.hard_stop.cancelled() => break SessionEnd::Finished,
                _ = tick.tick() => {
                    if self.draining_over() {
                        break SessionEnd::Finished;
                    }
                    if self.last_push.elapsed() >= LIVE_PUSH {
                        let extra = shared.sent.load(Ordering::Acquire);
                        self.push_live(extra, check.received);
                    }
                }
            }
            if self.drain_deadline.is_some()
                && shared.done.load(Ordering::Acquire)
                && check.received >= shared.sent.load(Ordering::Acquire)
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
        self.res.sent += sent;
        self.res.received += check.received;
        self.res.lost += sent.saturating_sub(check.received);
        if matches!(end, SessionEnd::Finished) {
            if let Some(sink) = sink {
                if let Ok(ws) = sink.reunite(stream) {
                    close_gracefully(ws).await;
                }
            }
        }
        self.ctx.live.conn_down();
        end
    }

    fn on_echo_binary(
        &mut self,
        check: &mut EchoCheck,
        data: &[u8],
        now: Instant,
        first_seq: u64,
        sent: u64,
        msg_len: usize,
    ) {
        let Some((slot, seq, send_us)) = decode_header(data) else {
            self.res.corrupted += 1;
            return;
        };
        if slot != self.id || seq < first_seq || seq >= first_seq + sent {
            self.res.corrupted += 1;
            return;
        }
        if data.len() != msg_len || !pattern_ok(data, seq) {
            self.res.corrupted += 1;
        }
        let latency = self.ctx.now_us(now).saturating_sub(send_us);
        if seq == check.expected {
            check.expected += 1;
        } else if seq > check.expected {
            check.missing.extend(check.expected..seq);
            check.expected = seq + 1;
        } else if check.missing.remove(&seq) {
            self.res.reordered += 1;
        } else {
            self.res.duplicated += 1;
            return;
        }
        check.received += 1;
        self.record_latency(latency);
    }

    // --------------------------------------------------------------- resume

    async fn resume_session(&mut self, ws: Ws, rs: &mut ResumeState) -> SessionEnd {
        let (sink, mut stream) = ws.split();
        let (tx, rx) = mpsc::unbounded_channel::<Message>();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = tokio::spawn(resume_writer(sink, rx, queued.clone()));
        let mut out = Outbox { tx, queued };
        let mut sock = SockState::new(self.ctx.resend_after);
        rs.send_hello(&mut out, &mut sock);

        // The first message must be the welcome.
        let welcome_deadline = tokio::time::Instant::now() + WELCOME_TIMEOUT;
        let first = loop {
            let retry = tokio::time::Instant::now() + sock.hello_timeout;
            tokio::select! {
                item = stream.next() => match item {
                    // Control frames may come first (an intermediary's
                    // interleaved pings); tungstenite answers pings itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    other => break Ok(other),
                },
                _ = tokio::time::sleep_until(retry.min(welcome_deadline)) => {
                    if tokio::time::Instant::now() >= welcome_deadline {
                        break Err(());
                    }
                    // The hello or the welcome may have been lost: ask again.
                    rs.send_hello(&mut out, &mut sock);
                }
                _ = self.ctx.hard_stop.cancelled() => {
                    writer.abort();
                    return SessionEnd::Finished;
                }
            }
        };
        let welcome_next = match first {
            Err(_) => {
                writer.abort();
                return SessionEnd::Failed(format!(
                    "resume mode: no welcome from {} within 10 s of the hello (does the server speak the resume protocol?)",
                    self.ctx.url
                ));
            }
            Ok(None) => {
                writer.abort();
                return SessionEnd::Failed(
                    "resume mode: the connection ended before the welcome".into(),
                );
            }
            Ok(Some(Err(err))) => {
                writer.abort();
                return SessionEnd::Failed(format!(
                    "resume mode: {} before the welcome",
                    describe_ws_error(&err)
                ));
            }
            Ok(Some(Ok(msg))) => match parse_server_msg(&msg) {
                Ok(m) if m.kind == "welcome" => m.next.unwrap_or(1),
                _ => {
                    writer.abort();
                    return SessionEnd::Failed(format!(
                        "resume mode: the server does not speak the resume protocol: expected a welcome, got {}",
                        snippet(&msg)
                    ));
                }
            },
        };
        self.usable();
        sock.on_welcome(welcome_next);
        // Resend everything not yet acknowledged, with the same cseq.
        let now = Instant::now();
        let resend: Vec<u64> = rs.unacked.keys().copied().collect();
        for cseq in resend {
            out.send(rs.msg_text(cseq));
            if let Some(p) = rs.unacked.get_mut(&cseq) {
                p.sent_at = now;
                p.tries = 0;
            }
            self.res.resent += 1;
        }

        let ctx = self.ctx.clone();
        let stop = self.stop.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_send = tokio::time::Instant::now() + initial_jitter(ctx.rate());
        let end = loop {
            let rate = ctx.rate();
            let draining = self.drain_deadline.is_some();
            let sending = !draining && rate > 0.0;
            tokio::select! {
                biased;
                item = stream.next() => match item {
                    Some(Ok(msg @ Message::Text(_))) => {
                        let now = Instant::now();
                        match parse_server_msg(&msg) {
                            Ok(m) => self.on_resume_msg(rs, &mut sock, &mut out, m, now),
                            Err(()) => {
                                self.res.protocol_errors += 1;
                                ctx.record_error(format!("resume mode: the server sent a message that is not resume-protocol JSON: {}", snippet(&msg)));
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        self.res.protocol_errors += 1;
                        ctx.record_error("resume mode: the server sent a binary message".into());
                    }
                    Some(Ok(Message::Close(frame))) => {
                        if draining && rs.unacked.is_empty() {
                            break SessionEnd::Finished;
                        }
                        break SessionEnd::Dropped(format!("the server closed the connection ({})", describe_close(frame.as_ref())));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => break SessionEnd::Dropped(describe_ws_error(&err)),
                    None => break SessionEnd::Dropped("the connection ended without a close frame".into()),
                },
                _ = tokio::time::sleep_until(next_send), if sending => {
                    let now = tokio::time::Instant::now();
                    if out.queued.load(Ordering::Relaxed) < MAX_QUEUED {
                        let cseq = rs.new_msg(now.into_std());
                        out.send(rs.msg_text(cseq));
                        self.res.sent += 1;
                    }
                    next_send += Duration::from_secs_f64(1.0 / rate);
                    if next_send + Duration::from_secs(1) < now {
                        next_send = now;
                    }
                }
                _ = stop.cancelled(), if !draining => self.start_drain(),
                _ = ctx.hard_stop.cancelled() => break SessionEnd::Finished,
                _ = tick.tick() => {
                    if self.draining_over() {
                        break SessionEnd::Finished;
                    }
                    if !sending {
                        next_send = tokio::time::Instant::now();
                    }
                    rs.housekeeping(&mut sock, &mut out, &mut self.res);
                    if self.last_push.elapsed() >= LIVE_PUSH {
                        self.push_live(0, 0);
                    }
                }
            }
            if self.drain_deadline.is_some() && rs.unacked.is_empty() {
                break SessionEnd::Finished;
            }
        };
        drop(out);
        let sink = writer.await.ok().flatten();
        if matches!(end, SessionEnd::Finished) {
            if let Some(sink) = sink {
                if let Ok(ws) = sink.reunite(stream) {
                    close_gracefully(ws).await;
                }
            }
        }
        self.ctx.live.conn_down();
        end
    }

    fn on_resume_msg(
        &mut self,
        rs: &mut ResumeState,
        sock: &mut SockState,
        out: &mut Outbox,
        m: ServerMsg,
        now: Instant,
    ) {
        match m.kind.as_str() {
            "echo" => {
                let (Some(seq), Some(cseq)) = (m.seq, m.cseq) else {
                    self.res.protocol_errors += 1;
                    self.ctx
                        .record_error("resume mode: an echo without seq or cseq".into());
                    return;
                };
                let body_ok = cseq >= 1
                    && cseq < rs.next_cseq
                    && m.body.as_ref().and_then(|b| b.as_str()) == Some(rs.body(cseq).as_str());
                if rs.on_echo(seq, cseq, body_ok, now, sock, self) {
                    rs.send_hello(out, sock);
                }
            }
            "welcome" => sock.on_welcome(m.next.unwrap_or(1)),
            "error" => {
                self.res.protocol_errors += 1;
                self.ctx.record_error(format!(
                    "resume mode: the server reported an error: {}",
                    m.error.unwrap_or_default()
                ));
            }
            other => {
                self.res.protocol_errors += 1;
                self.ctx.record_error(format!(
                    "resume mode: unexpected message type `{other}` from the server"
                ));
            }
        }
    }
}

// ------------------------------------------------------------------- echo

struct EchoShared {
    /// Messages handed to the socket so far on this connection.
    sent: AtomicU64,
    /// The writer has stopped.
    done: AtomicBool,
}

struct EchoCheck {
    expected: u64,
    missing: BTreeSet<u64>,
    /// Distinct echoes received on this connection.
    received: u64,
}

fn initial_jitter(rate: f64) -> Duration {
    if rate > 0.0 {
        let period = (1.0 / rate).min(1.0);
        Duration::from_secs_f64(rand::rng().random_range(0.0..period))
    } else {
        Duration::ZERO
    }
}

async fn echo_writer(
    ctx: Arc<Ctx>,
    slot: u32,
    mut sink: SplitSink<Ws, Message>,
    first_seq: u64,
    shared: Arc<EchoShared>,
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

// ----------------------------------------------------------------- resume

/// Messages to the writer task, with a count of those not yet written.
struct Outbox {
    tx: mpsc::UnboundedSender<Message>,
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    fn send(&mut self, text: String) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Message::Text(text.into())).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn resume_writer(
    mut sink: SplitSink<Ws, Message>,
    mut rx: mpsc::UnboundedReceiver<Message>,
    queued: Arc<AtomicUsize>,
) -> Option<SplitSink<Ws, Message>> {
    while let Some(msg) = rx.recv().await {
        queued.fetch_sub(1, Ordering::Relaxed);
        if sink.feed(msg).await.is_err() {
            return None;
        }
        if rx.is_empty() && sink.flush().await.is_err() {
            return None;
        }
    }
    let _ = sink.flush().await;
    Some(sink)
}

#[derive(Deserialize)]
struct ServerMsg {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    cseq: Option<u64>,
    #[serde(default)]
    body: Option<serde_json::Value>,
    #[serde(default)]
    next: Option<u64>,
    #[serde(default)]
    error: Option<String>,
}

fn parse_server_msg(msg: &Message) -> Result<ServerMsg, ()> {
    match msg {
        Message::Text(t) => serde_json::from_str(t.as_str()).map_err(|_| ()),
        _ => Err(()),
    }
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

/// Per-connection resume state.
struct SockState {
    /// Hellos awaiting their welcome, oldest first. The server answers in
    /// order, so a welcome belongs to the oldest; a hello presumed lost stays
    /// queued (its replay may still come) until it is pruned.
    hellos: VecDeque<HelloSent>,
    window: Option<Window>,
    hello_timeout: Duration,
}

impl SockState {
    fn new(resend_after: Duration) -> Self {
        SockState {
            hellos: VecDeque::new(),
            window: None,
            hello_timeout: (resend_after * 2).max(Duration::from_secs(2)),
        }
    }

    fn on_welcome(&mut self, next: u64) {
        // A welcome we cannot match (its hello was pruned): tolerate the
        // whole replay.
        let ack = self.hellos.pop_front().map(|h| h.ack).unwrap_or(0);
        self.window = Some(Window {
            ack,
            next,
            last: ack,
            missed: false,
        });
    }

    /// Forgets hellos that surely went unanswered.
    fn prune(&mut self, now: Instant) {
        let limit = self.hello_timeout * 2;
        while self
            .hellos
            .front()
            .is_some_and(|h| now.duration_since(h.at) >= limit)
        {
            self.hellos.pop_front();
        }
    }

    /// A new hello may go out: none pending, or the newest is overdue.
    fn may_send_hello(&self, now: Instant) -> bool {
        self.hellos
            .back()
            .is_none_or(|h| now.duration_since(h.at) >= self.hello_timeout)
    }

    /// `seq` may be a replayed copy: a welcome window not yet past it, or
    /// the replay of a hello still unanswered.
    fn replay_copy(&mut self, seq: u64) -> bool {
        if let Some(w) = self.window.as_mut() {
            if seq > w.ack && seq < w.next && seq > w.last {
                w.last = seq;
                return true;
            }
        }
        self.hellos.front().is_some_and(|h| seq > h.ack)
    }
}

struct Pending {
    sent_at: Instant,
    tries: u8,
}

/// Resume-mode state that lives across reconnects of one slot.
/// Echo mode: how long a draining connection stays open after its last
/// echo, so that late duplicates are counted.
const ECHO_LINGER: Duration = Duration::from_millis(300);

/// How many delivered seqs remember their cseq (see `ResumeState::seq_cseq`).
const SEQ_MEMORY: usize = 100_000;

struct ResumeState {
    session: String,
    slot: u32,
    body_len: usize,
    next_cseq: u64,
    unacked: BTreeMap<u64, Pending>,
    delivered: BitSet,
    /// The next seq to deliver.
    expected: u64,
    /// Echoes that arrived ahead of `expected`: seq → (cseq, body ok).
    buffer: BTreeMap<u64, (u64, bool)>,
    /// Seqs given up on (never replayed); a late arrival counts as reordered.
    skipped: BTreeSet<u64>,
    /// The cseq each delivered seq carried (the most recent ones), so that a
    /// byte-identical second copy — a transport duplicate, which the resume
    /// protocol discards by seq — is told from a server reusing a seq.
    seq_cseq: BTreeMap<u64, u64>,
    gap_since: Option<Instant>,
    /// Replays that skipped the current `expected`.
    gap_misses: u32,
    resend_after: Duration,
}

impl ResumeState {
    fn new(ctx: &Ctx, slot: u32) -> Self {
        ResumeState {
            session: format!("wsfault-load-{:016x}-{slot}", ctx.run_id),
            slot,
            body_len: ctx.message_bytes.saturating_sub(40).max(16),
            next_cseq: 1,
            unacked: BTreeMap::new(),
            delivered: BitSet::default(),
            expected: 1,
            buffer: BTreeMap::new(),
            skipped: BTreeSet::new(),
            seq_cseq: BTreeMap::new(),
            gap_since: None,
            gap_misses: 0,
            resend_after: ctx.resend_after,
        }
    }

    /// The body of message `cseq`: deterministic, so it is checked without storing it.
    fn body(&self, cseq: u64) -> String {
        let mut s = format!("{}:{}:", self.slot, cseq);
        while s.len() < self.body_len {
            s.push('x');
        }
        s
    }

    fn msg_text(&self, cseq: u64) -> String {
        format!(
            "{{\"type\":\"msg\",\"cseq\":{cseq},\"body\":\"{}\"}}",
            self.body(cseq)
        )
    }

    fn new_msg(&mut self, now: Instant) -> u64 {
        let cseq = self.next_cseq;
        self.next_cseq += 1;
        self.unacked.insert(
            cseq,
            Pending {
                sent_at: now,
                tries: 0,
            },
        );
        cseq
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

    fn send_hello(&mut self, out: &mut Outbox, sock: &mut SockState) {
        let ack = self.ack();
        out.send(format!(
            "{{\"type\":\"hello\",\"session\":\"{}\",\"ack\":{ack}}}",
            self.session
        ));
        sock.hellos.push_back(HelloSent {
            ack,
            at: Instant::now(),
        });
    }

    /// Handles one echo; true when a resync `hello` should be sent.
    fn on_echo(
        &mut self,
        seq: u64,
        cseq: u64,
        body_ok: bool,
        now: Instant,
        sock: &mut SockState,
        slot: &mut Slot,
    ) -> bool {
        if seq < self.expected {
            if sock.replay_copy(seq) {
                return false;
            }
            if self.skipped.remove(&seq) {
                slot.res.reordered += 1;
                self.deliver_seq(seq, cseq, body_ok, now, slot);
            } else if self.seq_cseq.get(&seq) != Some(&cseq) {
                // Not a copy of what that seq carried: the server reused it.
                slot.res.duplicated += 1;
            }
            return false;
        }
        let window_hit = match sock.window.as_mut() {
            Some(w) if seq > w.ack && seq < w.next => {
                w.last = w.last.max(seq);
                true
            }
            _ => false,
        };
        if seq == self.expected {
            self.deliver_seq(seq, cseq, body_ok, now, slot);
            self.expected += 1;
            self.gap_misses = 0;
            self.drain_buffer(now, slot);
            return false;
        }
        if let Some(&(buffered_cseq, _)) = self.buffer.get(&seq) {
            let provisional = sock.hellos.front().is_some_and(|h| seq > h.ack);
            if !window_hit && !provisional && buffered_cseq != cseq {
                slot.res.duplicated += 1;
            }
            return false;
        }
        self.buffer.insert(seq, (cseq, body_ok));
        // Did the last welcome's replay pass over `expected`? Messages can be
        // lost on the way, so only after a few such replays is the server
        // taken not to have it, and the gap given up.
        if sock.hellos.is_empty() {
            if let Some(w) = sock.window.as_mut() {
                if !w.missed && w.ack < self.expected && self.expected < w.next {
                    w.missed = true;
                    self.gap_misses += 1;
                    if self.gap_misses >= GAP_MISSES_TO_GIVE_UP {
                        self.give_up(now, slot);
                        return false;
                    }
                    // Resync again after `resend_after` (housekeeping).
                    self.gap_since = Some(now);
                    return false;
                }
            }
        }
        if self.gap_since.is_none() {
            self.gap_since = Some(now);
            return sock.may_send_hello(now);
        }
        false
    }

    fn drain_buffer(&mut self, now: Instant, slot: &mut Slot) {
        while let Some((cseq, ok)) = self.buffer.remove(&self.expected) {
            self.deliver_seq(self.expected, cseq, ok, now, slot);
            self.expected += 1;
        }
        self.gap_since = if self.buffer.is_empty() {
            None
        } else {
            Some(now)
        };
    }

    /// Skips the missing seqs before the first buffered one.
    fn give_up(&mut self, now: Instant, slot: &mut Slot) {
        let Some((&first, _)) = self.buffer.first_key_value() else {
            return;
        };
        if first > self.expected {
            for s in self.expected..first {
                if self.skipped.len() < 100_000 {
                    self.skipped.insert(s);
                }
            }
            self.expected = first;
        }
        self.gap_misses = 0;
        self.drain_buffer(now, slot);
    }

    /// Delivers the echo of `seq`, remembering which cseq it carried.
    fn deliver_seq(&mut self, seq: u64, cseq: u64, body_ok: bool, now: Instant, slot: &mut Slot) {
        self.seq_cseq.insert(seq, cseq);
        if self.seq_cseq.len() > SEQ_MEMORY {
            self.seq_cseq.pop_first();
        }
        self.deliver(cseq, body_ok, now, slot);
    }

    /// Hands one echo to the "application": exactly-once accounting by cseq.
    fn deliver(&mut self, cseq: u64, body_ok: bool, now: Instant, slot: &mut Slot) {
        if !body_ok {
            slot.res.corrupted += 1;
        }
        if cseq == 0 || cseq >= self.next_cseq {
            return;
        }
        if !self.delivered.insert(cseq) {
            slot.res.duplicated += 1;
            return;
        }
        slot.res.received += 1;
        if let Some(p) = self.unacked.remove(&cseq) {
            slot.record_latency(now.saturating_duration_since(p.sent_at).as_micros() as u64);
        }
    }

    /// How long a message waits for its echo before the `tries`-th resend:
    /// `resend_after`, doubling per try, at most [`MAX_RESEND_DELAY`].
    fn resend_delay(&self, tries: u8) -> Duration {
        self.resend_after
            .saturating_mul(1u32 << tries.min(2))
            .min(MAX_RESEND_DELAY.max(self.resend_after))
    }

    /// Every 100 ms: resync and resend what has waited too long.
    fn housekeeping(&mut self, sock: &mut SockState, out: &mut Outbox, res: &mut SlotResult) {
        let now = Instant::now();
        sock.prune(now);
        if !sock.may_send_hello(now) {
            return;
        }
        let stale: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, p)| now.duration_since(p.sent_at) >= self.resend_delay(p.tries))
            .map(|(c, _)| *c)
            .take(MAX_QUEUED)
            .collect();
        let gap_stale = self
            .gap_since
            .is_some_and(|t| now.duration_since(t) >= self.resend_after);
        if stale.is_empty() && !gap_stale {
            return;
        }
        self.send_hello(out, sock);
        if gap_stale {
            self.gap_since = Some(now);
        }
        for cseq in stale {
            out.send(self.msg_text(cseq));
            if let Some(p) = self.unacked.get_mut(&cseq) {
                p.sent_at = now;
                p.tries = p.tries.saturating_add(1);
            }
            res.resent += 1;
        }
    }

    /// End of the slot: deliver what waited behind a gap, count the lost.
    fn finish(mut self, slot: &mut Slot) {
        let now = Instant::now();
        while !self.buffer.is_empty() {
            self.give_up(now, slot);
        }
        let sent = self.next_cseq - 1;
        slot.res.lost += sent.saturating_sub(slot.res.received);
    }
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

// ------------------------------------------------------------------ common

/// The client's WebSocket limits (as the echo server's).
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(crate::resume_wire::MAX_MESSAGE_BYTES))
        .max_frame_size(Some(crate::resume_wire::MAX_FRAME_BYTES))
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
}

/// Opens one connection; the error is a one-line, user-facing message.
async fn connect(ctx: &Ctx) -> Result<Ws, String> {
    let _permit = ctx
        .handshakes
        .acquire()
        .await
        .map_err(|_| "the load client is shutting down".to_string())?;
    let mut req = ctx
        .url
        .as_str()
        .into_client_request()
        .map_err(|err| format!("--url {}: {err}", ctx.url))?;
    let headers = req.headers_mut();
    for (k, v) in &ctx.headers {
        headers.append(k.clone(), v.clone());
    }
    if let Some(p) = &ctx.subprotocol {
        headers.insert("sec-websocket-protocol", p.clone());
    }
    let attempt = tokio_tungstenite::connect_async_with_config(req, Some(client_config()), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => Err(format!(
            "connecting to {} timed out after {} s",
            ctx.url,
            CONNECT_TIMEOUT.as_secs()
        )),
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(WsError::Http(resp))) => {
            let status = resp.status();
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let body = body.trim();
            let mut body: String = body.chars().take(200).collect();
            if !body.is_empty() {
                body = format!(": {body}");
            }
            Err(format!(
                "upgrade refused by {}: HTTP {} {}{body}",
                ctx.url,
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ))
        }
        Ok(Err(err)) => Err(format!("cannot connect to {}: {err}", ctx.url)),
    }
}

fn describe_ws_error(err: &WsError) -> String {
    match err {
        WsError::Io(io) => format!("connection error: {}", io.kind()),
        WsError::Protocol(p) => format!("protocol error: {p}"),
        WsError::Capacity(c) => format!("message too large: {c}"),
        other => format!("connection error: {other}"),
    }
}

fn describe_close(frame: Option<&CloseFrame>) -> String {
    match frame {
        None => "no close code".to_string(),
        Some(f) if f.reason.is_empty() => format!("code {}", u16::from(f.code)),
        Some(f) => format!("code {}: {}", u16::from(f.code), f.reason.as_str()),
    }
}

fn snippet(msg: &Message) -> String {
    match msg {
        Message::Text(t) => {
            let s: String = t.as_str().chars().take(80).collect();
            format!("`{s}`")
        }
        Message::Binary(b) => format!("a binary message of {} bytes", b.len()),
        Message::Ping(_) => "a ping".into(),
        Message::Pong(_) => "a pong".into(),
        Message::Close(f) => format!("a close frame ({})", describe_close(f.as_ref())),
        Message::Frame(_) => "a raw frame".into(),
    }
}

/// Sends a close frame and waits briefly for the server's.
async fn close_gracefully(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if ws.close(None).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
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

    #[test]
    fn bitset() {
        let mut b = BitSet::default();
        assert!(b.insert(5));
        assert!(!b.insert(5));
        assert!(b.insert(1000));
    }
}
