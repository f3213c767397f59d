//! `wsfault echo`: the reference WebSocket backend (docs/reference.md#wsfault-echo-and-the-resume-protocol).
//!
//! Two behaviours share one port:
//!
//! * **Plain echo** — every data message comes back with its opcode and
//!   payload unchanged; pings are answered (tungstenite does it), closes are
//!   answered.
//! * **Resume protocol** — a connection whose first text message is a JSON
//!   `{"type":"hello","session":..,"ack":N}` speaks the sequenced, resumable
//!   stream: `welcome` with `next`, replay of retained messages with
//!   `seq > ack`, `msg` deduplicated by `cseq` per session, `echo` with a
//!   per-session increasing `seq`. Sessions live in a shared map, keep the
//!   last [`RETAINED_MESSAGES`] echoes and are dropped after
//!   [`SESSION_IDLE`] without a connection. A new `hello` for a session takes
//!   it over from the connection that held it. The messages are
//!   [`crate::resume_wire`]'s types, shared with the load client.
//!
//! [`serve`] takes an already-bound listener so tests, the demo and the
//! benchmarks run the real server in-process on `127.0.0.1:0`.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::resume_wire::{Body, ClientMsg, ServerMsg, WireError};
pub use crate::resume_wire::{MAX_FRAME_BYTES, MAX_MESSAGE_BYTES};

/// Messages retained per resume session for replay (docs/reference.md#resume-protocol: at least 10 000).
pub const RETAINED_MESSAGES: usize = 10_000;
/// A resume session without a live connection is dropped after this long.
pub const SESSION_IDLE: Duration = Duration::from_secs(300);

/// Messages handled back to back before the write buffer is flushed.
const BATCH: usize = 64;
/// Upper bound on out-of-order `cseq`s remembered per session.
const MAX_CSEQ_HOLES: usize = 65_536;

/// Tunables of the echo server beyond the command-line flags.
#[derive(Debug, Clone)]
pub struct EchoOptions {
    /// Live connections accepted at once; more are refused with HTTP 503.
    pub max_connections: Option<usize>,
    /// Echoes retained per resume session for replay.
    pub retain: usize,
    /// A resume session without a live connection is dropped after this long.
    pub session_idle: Duration,
    /// Time allowed for the HTTP upgrade of one connection.
    pub handshake_timeout: Duration,
}

impl Default for EchoOptions {
    fn default() -> Self {
        EchoOptions {
            max_connections: None,
            retain: RETAINED_MESSAGES,
            session_idle: SESSION_IDLE,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves the echo backend on `listener` until `shutdown` resolves.
///
/// Live connections are then closed with 1001 (going away); the function
/// waits up to 2 s for them to finish.
pub async fn serve(
    listener: TcpListener,
    max_connections: Option<usize>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let opts = EchoOptions {
        max_connections,
        ..EchoOptions::default()
    };
    serve_with(listener, opts, shutdown).await
}

/// [`serve`] with every tunable of [`EchoOptions`].
pub async fn serve_with(
    listener: TcpListener,
    opts: EchoOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        sessions: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(0),
        opts: opts.clone(),
    });
    let limiter = opts.max_connections.map(|n| Arc::new(Semaphore::new(n)));
    let cancel = CancellationToken::new();
    // Every connection task holds a clone of `done_tx`; `recv` returns None
    // once they are all gone.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    tokio::spawn(janitor(shared.clone(), cancel.clone()));
    tokio::pin!(shutdown);
    let mut accept_errors: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning.
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(error = %err, count = accept_errors, "accept failed; backing off");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let conn_id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let permit = match &limiter {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tracing::debug!(conn_id, %peer, "refusing connection: --max-connections reached");
                    tokio::spawn(refuse(stream));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let span = tracing::info_span!("echo", conn_id, %peer);
        let conn = Conn {
            id: conn_id,
            shared: shared.clone(),
            cancel: cancel.clone(),
            takeover: CancellationToken::new(),
            session: None,
            _done: done_tx.clone(),
            _permit: permit,
        };
        tokio::spawn(conn.run(stream).instrument(span));
    }
    drop(listener);
    cancel.cancel();
    drop(done_tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), done_rx.recv()).await;
    Ok(())
}

/// Answers a connection over the limit with `503 Service Unavailable`.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = "too many connections (--max-connections reached)\n";
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        // Read the request head first so closing does not turn into an RST
        // that would hide the response from the client.
        let mut buf = [0u8; 4096];
        let mut tail = [0u8; 4];
        let mut total = 0usize;
        'read: loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                tail = [tail[1], tail[2], tail[3], b];
                if &tail == b"\r\n\r\n" {
                    break 'read;
                }
            }
            total += n;
            if total > 16 * 1024 {
                break;
            }
        }
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Give the client a moment to read before the socket goes away.
        let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// Drops resume sessions that have had no connection for `session_idle`.
async fn janitor(shared: Arc<Shared>, cancel: CancellationToken) {
    let idle = shared.opts.session_idle;
    let period = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let mut sessions = shared.lock_sessions();
        let before = sessions.len();
        sessions.retain(|_, s| s.owner.is_some() || s.last_active.elapsed() < idle);
        let dropped = before - sessions.len();
        if dropped > 0 {
            tracing::debug!(dropped, "dropped idle resume sessions");
        }
    }
}

/// The WebSocket limits of the echo server.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .read_buffer_size(32 * 1024)
        .write_buffer_size(64 * 1024)
}

struct Shared {
    sessions: Mutex<HashMap<String, Session>>,
    next_conn: AtomicU64,
    opts: EchoOptions,
}

impl Shared {
    fn lock_sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // in a way that matters more than losing the server; keep serving.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One resume session.
struct Session {
    next_seq: u64,
    retained: VecDeque<(u64, Utf8Bytes)>,
    cseqs: CseqSet,
    /// The connection that holds the session, and how to kick it out.
    owner: Option<(u64, CancellationToken)>,
    last_active: Instant,
}

impl Session {
    fn new() -> Self {
        Session {
            next_seq: 1,
            retained: VecDeque::new(),
            cseqs: CseqSet::default(),
            owner: None,
            last_active: Instant::now(),
        }
    }
}

/// The set of `cseq`s a session has seen: everything below `low`, plus `above`.
#[derive(Default)]
struct CseqSet {
    low: u64,
    above: BTreeSet<u64>,
}

impl CseqSet {
    /// Records `cseq`; true when it was new.
    fn insert(&mut self, cseq: u64) -> bool {
        if cseq < self.low || !self.above.insert(cseq) {
            return false;
        }
        while self.above.remove(&self.low) {
            self.low += 1;
        }
        if self.above.len() > MAX_CSEQ_HOLES {
            // A client leaving huge holes: forget the oldest holes.
            if let Some(first) = self.above.pop_first() {
                self.low = first + 1;
                while self.above.remove(&self.low) {
                    self.low += 1;
                }
            }
        }
        true
    }
}

/// The first text message of a connection, when it is a resume `hello`
/// (the rest of the connection then speaks the resume protocol).
fn parse_hello(text: &str) -> Option<(Option<Cow<'_, str>>, u64)> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return None;
    }
    match ClientMsg::parse(trimmed) {
        Ok(ClientMsg::Hello { session, ack }) => Some((session, ack)),
        _ => None,
    }
}

/// Why a connection loop ended.
enum End {
    Peer,
    Shutdown,
    TakenOver,
}

type WsResult = Result<(), tokio_tungstenite::tungstenite::Error>;

struct Conn {
    id: u64,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    /// Cancelled when another connection takes over our resume session.
    takeover: CancellationToken,
    /// The resume session this connection holds, if it is in resume mode.
    session: Option<String>,
    _done: mpsc::Sender<()>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Conn {
    async fn run(mut self, stream: TcpStream) {
        // The `Err` type is tungstenite's; we never return it.
        #[allow(clippy::result_large_err)]
        let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
            // Agree to the first subprotocol offered, so clients that insist
            // on one (`wsfault load --subprotocol`) can talk to us.
            let first = req
                .headers()
                .get_all("sec-websocket-protocol")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .find(|p| !p.is_empty());
            if let Some(proto) = first.and_then(|p| HeaderValue::from_str(p).ok()) {
                resp.headers_mut().insert("sec-websocket-protocol", proto);
            }
            Ok(resp)
        };
        let handshake =
            tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config()));
        let mut ws = match tokio::time::timeout(self.shared.opts.handshake_timeout, handshake).await
        {
            Ok(Ok(ws)) => ws,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("handshake timed out");
                return;
            }
        };
        tracing::debug!("connected");
        let end = self.serve_ws(&mut ws).await;
        match end {
            Ok(End::Peer) => tracing::debug!("connection ended"),
            Ok(End::Shutdown) => {
                close_and_drain(&mut ws, CloseCode::Away, "server shutting down").await
            }
            Ok(End::TakenOver) => {
                close_and_drain(
                    &mut ws,
                    CloseCode::Normal,
                    "session resumed on another connection",
                )
                .await
            }
            Err(err) => {
                tracing::debug!(error = %err, "connection ended with an error");
                fail_connection(&mut ws, &err).await;
            }
        }
        self.release_session();
    }

    async fn serve_ws(
        &mut self,
        ws: &mut WebSocketStream<TcpStream>,
    ) -> Result<End, tokio_tungstenite::tungstenite::Error> {
        let mut decided = false;
        let mut ready: Option<Option<Result<Message, _>>> = None;
        let mut batch = 0usize;
        loop {
            let item = match ready.take() {
                Some(item) => item,
                None => {
                    ws.flush().await?;
                    batch = 0;
                    let takeover = self.takeover.clone();
                    tokio::select! {
                        item = ws.next() => item,
                        _ = self.cancel.cancelled() => return Ok(End::Shutdown),
                        _ = takeover.cancelled(), if self.session.is_some() => return Ok(End::TakenOver),
                    }
                }
            };
            let msg = match item {
                None => return Ok(End::Peer),
                Some(Err(err)) => {
                    // Echoes of the messages before the bad frame still go out.
                    let _ = ws.flush().await;
                    return Err(err);
                }
                Some(Ok(msg)) => msg,
            };
            match msg {
                Message::Text(text) => {
                    if !decided {
                        decided = true;
                        if let Some((session, ack)) = parse_hello(text.as_str()) {
                            self.on_hello(ws, session, ack).await?;
                        } else {
                            ws.feed(Message::Text(text)).await?;
                        }
                    } else if self.session.is_some() {
                        if !self.on_resume_text(ws, text).await? {
                            return Ok(End::TakenOver);
                        }
                    } else {
                        ws.feed(Message::Text(text)).await?;
                    }
                }
                Message::Binary(data) => {
                    decided = true;
                    ws.feed(Message::Binary(data)).await?;
                }
                // tungstenite queues the pong / close reply itself; they go
                // out with the next flush.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(_) => {}
            }
            batch += 1;
            if batch < BATCH {
                ready = ws.next().now_or_never();
            }
        }
    }

    /// Resume mode: a text message after the first hello. Returns false when
    /// the session was taken over by another connection.
    async fn on_resume_text(
        &mut self,
        ws: &mut WebSocketStream<TcpStream>,
        text: Utf8Bytes,
    ) -> Result<bool, tokio_tungstenite::tungstenite::Error> {
        match ClientMsg::parse(text.as_str()) {
            Ok(ClientMsg::Hello { session, ack }) => {
                self.on_hello(ws, session, ack).await?;
                Ok(true)
            }
            Ok(ClientMsg::Msg { cseq, body }) => {
                match self.assign(cseq, body) {
                    Assigned::Echo(text) => ws.feed(Message::Text(text)).await?,
                    Assigned::Duplicate => {}
                    Assigned::NotOwner => return Ok(false),
                }
                Ok(true)
            }
            Err(err) => {
                let why = match err {
                    WireError::Json(err) => format!("not a resume-protocol message: {err}"),
                    missing @ WireError::Missing { .. } => missing.to_string(),
                    WireError::UnknownType(other) => {
                        format!("unknown message type `{other}` (expected hello or msg)")
                    }
                };
                let reply = ServerMsg::Error { error: why.into() };
                ws.feed(Message::Text(reply.to_text().into())).await?;
                Ok(true)
            }
        }
    }

    /// Takes over (or creates) the session, sends `welcome` and the replay.
    async fn on_hello(
        &mut self,
        ws: &mut WebSocketStream<TcpStream>,
        session: Option<Cow<'_, str>>,
        ack: u64,
    ) -> WsResult {
        let session_id = match session {
            Some(s) if !s.is_empty() => s.into_owned(),
            _ => format!("echo-{}-{}", self.id, rand::random::<u32>()),
        };
        if self.session.as_deref() != Some(session_id.as_str()) {
            self.release_session();
        }
        let (next, replay) = {
            let mut sessions = self.shared.lock_sessions();
            let session = sessions
                .entry(session_id.clone())
                .or_insert_with(Session::new);
            if let Some((old, token)) = session.owner.replace((self.id, self.takeover.clone())) {
                if old != self.id {
                    token.cancel();
                }
            }
            session.last_active = Instant::now();
            let start = session.retained.partition_point(|(seq, _)| *seq <= ack);
            let replay: Vec<Utf8Bytes> = session
                .retained
                .range(start..)
                .map(|(_, text)| text.clone())
                .collect();
            (session.next_seq, replay)
        };
        tracing::debug!(session = %session_id, ack, next, replay = replay.len(), "resume hello");
        let welcome = ServerMsg::Welcome {
            session: Some(Cow::Borrowed(&session_id)),
            next,
        }
        .to_text();
        self.session = Some(session_id);
        ws.feed(Message::Text(welcome.into())).await?;
        for text in replay {
            ws.feed(Message::Text(text)).await?;
        }
        Ok(())
    }

    fn assign(&self, cseq: u64, body: Option<Body<'_>>) -> Assigned {
        let Some(session_id) = self.session.as_deref() else {
            return Assigned::NotOwner;
        };
        let mut sessions = self.shared.lock_sessions();
        let Some(session) = sessions.get_mut(session_id) else {
            return Assigned::NotOwner;
        };
        if session.owner.as_ref().map(|(id, _)| *id) != Some(self.id) {
            return Assigned::NotOwner;
        }
        session.last_active = Instant::now();
        if !session.cseqs.insert(cseq) {
            return Assigned::Duplicate;
        }
        let seq = session.next_seq;
        session.next_seq += 1;
        let text: Utf8Bytes = ServerMsg::Echo { seq, cseq, body }.to_text().into();
        session.retained.push_back((seq, text.clone()));
        while session.retained.len() > self.shared.opts.retain.max(1) {
            session.retained.pop_front();
        }
        Assigned::Echo(text)
    }

    /// Gives the session back (if we still hold it) so it can idle out.
    fn release_session(&mut self) {
        let Some(session_id) = self.session.take() else {
            return;
        };
        let mut sessions = self.shared.lock_sessions();
        if let Some(session) = sessions.get_mut(&session_id) {
            if session.owner.as_ref().map(|(id, _)| *id) == Some(self.id) {
                session.owner = None;
                session.last_active = Instant::now();
            }
        }
    }
}

enum Assigned {
    Echo(Utf8Bytes),
    Duplicate,
    NotOwner,
}

/// Sends a close frame and waits (briefly) for the peer's reply.
async fn close_and_drain(ws: &mut WebSocketStream<TcpStream>, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if ws.close(Some(frame)).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// _Fail the WebSocket Connection_ (RFC 6455 §7.1.7): after a protocol
/// error tungstenite stops writing, so the close frame (1002 protocol error,
/// 1007 bad UTF-8, 1009 too big) is written raw before the TCP close.
async fn fail_connection(
    ws: &mut WebSocketStream<TcpStream>,
    err: &tokio_tungstenite::tungstenite::Error,
) {
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::Error;
    let code: u16 = match err {
        Error::Protocol(_) => 1002,
        Error::Utf8(_) => 1007,
        Error::Capacity(_) => 1009,
        _ => return,
    };
    let [hi, lo] = code.to_be_bytes();
    let tcp = ws.get_mut();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = tcp.write_all(&[0x88, 0x02, hi, lo]).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}
