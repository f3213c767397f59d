//! What every connection of a slot shares, whatever its mode: the run's
//! context ([`Ctx`]), the slot's [`Tally`] (results, latency samples, live
//! counter pushes, the drain deadline), opening a WebSocket ([`connect`]),
//! closing one, and the one-line descriptions of what went wrong.
//!
//! The sessions themselves are in [`super::echo_check`],
//! [`super::resume`] and [`super::script_session`]; the reconnect loop that
//! runs them is [`super::slot`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::live::{new_histogram, LiveStats};
use super::report::MessageCounts;
use super::Mode;
use crate::resume_wire::{MAX_FRAME_BYTES, MAX_MESSAGE_BYTES};

/// The client's WebSocket.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a slot pushes its counters to [`LiveStats`].
pub(crate) const LIVE_PUSH: Duration = Duration::from_millis(500);
const MAX_ERROR_KINDS: usize = 50;
/// Latency samples a slot buffers before flushing them into the shared
/// histograms (one lock per this many messages, never one per message).
const SAMPLE_BATCH: usize = 256;

/// State shared by every slot of one run.
pub(crate) struct Ctx {
    /// Script mode: the script and what is derived from it.
    pub script: Option<Arc<super::script::ScriptRun>>,
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

    /// Microseconds since the start of the run.
    pub fn now_us(&self, now: Instant) -> u64 {
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
#[derive(Default)]
pub(crate) struct SlotResult {
    pub reconnect_us: Vec<u64>,
    pub msgs: MessageCounts,
    pub protocol_errors: u64,
    pub attempted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub reconnects: u64,
    pub disconnects: u64,
    /// Script mode: server heartbeats answered.
    pub heartbeats: u64,
}

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

/// How one connection ended.
pub(crate) enum SessionEnd {
    /// The client closed it at the end of the run (or of the slot).
    Finished,
    /// It never became usable (resume: no welcome).
    Failed(String),
    /// It was usable and then ended without the client asking.
    Dropped(String),
}

/// One slot's bookkeeping around its [`SlotResult`], handed to each session.
pub(crate) struct Tally {
    pub ctx: Arc<Ctx>,
    pub id: u32,
    /// Cancelled when this slot should stop (end of run, or fewer slots).
    pub stop: CancellationToken,
    pub res: SlotResult,
    /// Latencies (µs) not yet flushed to the shared histograms.
    samples: Vec<u64>,
    /// When the last connection went down (for time-to-reconnect).
    pub down_since: Option<Instant>,
    /// Set when `stop` is first seen: drain until then.
    pub drain_deadline: Option<Instant>,
    pushed: Pushed,
    pub last_push: Instant,
}

#[derive(Default)]
struct Pushed {
    sent: u64,
    received: u64,
    errors: u64,
}

impl Tally {
    pub fn new(ctx: Arc<Ctx>, id: u32, stop: CancellationToken) -> Self {
        Tally {
            ctx,
            id,
            stop,
            res: SlotResult::default(),
            samples: Vec::with_capacity(SAMPLE_BATCH),
            down_since: None,
            drain_deadline: None,
            pushed: Pushed::default(),
            last_push: Instant::now(),
        }
    }

    pub fn start_drain(&mut self) {
        if self.drain_deadline.is_none() {
            self.drain_deadline = Some(Instant::now() + self.ctx.drain);
        }
    }

    pub fn draining(&self) -> bool {
        self.drain_deadline.is_some()
    }

    pub fn draining_over(&self) -> bool {
        self.drain_deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The connection is usable: count it, and the reconnect time if any.
    pub fn usable(&mut self) {
        self.res.succeeded += 1;
        LiveStats::add(&self.ctx.live.succeeded, 1);
        self.ctx.live.conn_up();
        if let Some(down) = self.down_since.take() {
            self.res.reconnects += 1;
            LiveStats::add(&self.ctx.live.reconnects, 1);
            self.res
                .reconnect_us
                .push(down.elapsed().as_micros() as u64);
        }
    }

    pub fn record_latency(&mut self, us: u64) {
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

    /// Pushes counter deltas (and recent latencies) to the live stats;
    /// `extra` holds the counts a session has not folded into `res` yet.
    pub fn push_live(&mut self, extra: &MessageCounts) {
        self.last_push = Instant::now();
        let live = &self.ctx.live;
        let r = &self.res;
        let sent = r.msgs.sent + extra.sent;
        LiveStats::add(&live.sent, sent.saturating_sub(self.pushed.sent));
        self.pushed.sent = self.pushed.sent.max(sent);
        let received = r.msgs.received + extra.received;
        LiveStats::add(
            &live.received,
            received.saturating_sub(self.pushed.received),
        );
        self.pushed.received = self.pushed.received.max(received);
        let errors =
            r.failed + r.disconnects + r.protocol_errors + r.msgs.corrupted + extra.corrupted;
        LiveStats::add(&live.errors, errors.saturating_sub(self.pushed.errors));
        self.pushed.errors = self.pushed.errors.max(errors);
        self.flush_samples();
    }

    /// Counts a protocol error (resume mode) with its message.
    pub fn protocol_error(&mut self, message: String) {
        self.res.protocol_errors += 1;
        self.ctx.record_error(message);
    }
}

/// The client's WebSocket limits (as the echo server's).
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
}

/// Opens one connection to `url` (the run's, or a script slot's rendered
/// one); the error is a one-line, user-facing message.
pub(crate) async fn connect(ctx: &Ctx, url: &str) -> Result<Ws, String> {
    let _permit = ctx
        .handshakes
        .acquire()
        .await
        .map_err(|_| "the load client is shutting down".to_string())?;
    let mut req = url
        .into_client_request()
        .map_err(|err| format!("--url {url}: {err}"))?;
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
            url,
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
                url,
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ))
        }
        Ok(Err(err)) => Err(format!("cannot connect to {}: {err}", url)),
    }
}

/// A read error, for the error samples.
pub(crate) fn describe_ws_error(err: &WsError) -> String {
    match err {
        WsError::Io(io) => format!("connection error: {}", io.kind()),
        WsError::Protocol(p) => format!("protocol error: {p}"),
        WsError::Capacity(c) => format!("message too large: {c}"),
        other => format!("connection error: {other}"),
    }
}

/// A close frame's code and reason.
pub(crate) fn describe_close(frame: Option<&CloseFrame>) -> String {
    match frame {
        None => "no close code".to_string(),
        Some(f) if f.reason.is_empty() => format!("code {}", u16::from(f.code)),
        Some(f) => format!("code {}: {}", u16::from(f.code), f.reason.as_str()),
    }
}

/// The start of a message, for error samples.
pub(crate) fn snippet(msg: &Message) -> String {
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

/// The end of a session: when it finished, the writer's half `sink` (if the
/// writer gave it back) is joined to `stream` again and the connection is
/// closed gracefully; the slot's connection is counted down either way.
pub(crate) async fn end_session(
    tally: &Tally,
    end: &SessionEnd,
    sink: Option<SplitSink<Ws, Message>>,
    stream: SplitStream<Ws>,
) {
    if matches!(end, SessionEnd::Finished) {
        if let Some(sink) = sink {
            if let Ok(ws) = sink.reunite(stream) {
                close_gracefully(ws).await;
            }
        }
    }
    tally.ctx.live.conn_down();
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

/// The pause before sending starts on a new connection: up to one period,
/// so that connections opened together do not send in lockstep.
pub(crate) fn initial_jitter(rate: f64) -> Duration {
    use rand::RngExt as _;
    if rate > 0.0 {
        let period = (1.0 / rate).min(1.0);
        Duration::from_secs_f64(rand::rng().random_range(0.0..period))
    } else {
        Duration::ZERO
    }
}

/// Frames for a connection's writer task, which writes them in order and
/// flushes when it runs dry, so a slow socket never stalls the reader.
pub(crate) struct FrameQueue {
    tx: mpsc::UnboundedSender<Message>,
    queued: Arc<AtomicUsize>,
}

impl FrameQueue {
    /// Starts the writer task on `sink`. Dropping the queue ends the task,
    /// which then gives the sink back (`None` if writing failed).
    pub fn start(
        sink: SplitSink<Ws, Message>,
    ) -> (
        FrameQueue,
        tokio::task::JoinHandle<Option<SplitSink<Ws, Message>>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel::<Message>();
        let queued = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(write_frames(sink, rx, queued.clone()));
        (FrameQueue { tx, queued }, task)
    }

    /// Queues one frame.
    pub fn send(&self, msg: Message) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(msg).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Frames queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

async fn write_frames(
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
