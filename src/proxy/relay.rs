//! The relay: one link per direction of a connection.
//!
//! A link reads frames from one socket and writes them to the other. With
//! no toxic applying to the connection it scans complete frames in its read
//! buffer and writes that byte range verbatim (no per-frame allocation, one
//! write per read). With toxics, frames are decoded, passed through the
//! toxic chain and queued with release times; the queue is bounded, so a
//! slow writer stops the reader (TCP backpressure reaches the sender).

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use super::conn::{ConnShared, LinkCommand};
use super::ProxyShared;
use crate::frame::{close_code_of, parse_header, CodecError, FrameCodec, FrameHeader, Opcode};
use crate::metrics::CloseBy;
use crate::toxics::{
    run_chain, run_deadline, ActiveToxic, ChainCx, ConnFacts, CutMode, EndAction, Item, Output,
    StreamDir,
};

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 32 * 1024;
/// A link stops reading while this many bytes wait in its toxic queue.
const MAX_QUEUED_BYTES: usize = 1024 * 1024;
/// How long the proxy waits for close replies before ending both TCP connections.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long a link lives on after the other link ended, waiting for its EOF.
const PEER_DONE_GRACE: Duration = Duration::from_secs(5);

mod pool {
    //! A per-thread pool of read buffers, so idle connections hold none.
    use std::cell::RefCell;

    use bytes::BytesMut;

    const KEEP: usize = 64;
    const MAX_KEPT_CAPACITY: usize = 256 * 1024;

    thread_local! {
        static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    /// Takes a buffer with at least `min` spare bytes.
    pub fn take(min: usize) -> BytesMut {
        let mut buf = POOL
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| BytesMut::with_capacity(min));
        buf.reserve(min);
        buf
    }

    /// Returns an empty buffer to the pool.
    pub fn give(mut buf: BytesMut) {
        buf.clear();
        if buf.capacity() == 0 || buf.capacity() > MAX_KEPT_CAPACITY {
            return;
        }
        POOL.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < KEEP {
                pool.push(buf);
            }
        });
    }
}

/// Everything a link needs.
pub struct Link {
    /// The stream this link carries.
    pub stream: StreamDir,
    /// The socket it reads from.
    pub reader: Arc<TcpStream>,
    /// The socket it writes to.
    pub writer: Arc<TcpStream>,
    /// Bytes already read from `reader` during the upgrade.
    pub initial: Bytes,
    /// Shared connection state.
    pub conn: Arc<ConnShared>,
    /// The proxy's shared state (toxics, limits, metrics).
    pub proxy: Arc<ProxyShared>,
    /// Facts about the connection, for toxics.
    pub facts: Arc<ConnFacts>,
}

/// Why reading stopped.
enum ReadOutcome {
    Data,
    Eof,
    Reset,
    Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Relaying,
    /// A close frame was sent to our writer; we wait for the reader's close.
    Closing {
        deadline: Instant,
    },
    Blackhole,
    Done,
}

struct State {
    link: Link,
    buf: BytesMut,
    codec: FrameCodec,
    mode: Mode,
    /// Inside a fragmented data message, with this many payload bytes so far.
    in_message: bool,
    message_bytes: u64,
    generation: u64,
    chain: Vec<ActiveToxic>,
    dormant: Vec<ActiveToxic>,
    queue: VecDeque<(Output, Instant)>,
    queued_bytes: usize,
    scratch: Vec<Output>,
    out: BytesMut,
    delay: prometheus::local::LocalHistogram,
    writer_shut: bool,
    /// The other link ended at this instant.
    peer_done_at: Option<Instant>,
    /// A close frame to write once the reader's side has closed (or at the instant).
    pending_close: Option<(Bytes, Instant)>,
}

/// Runs a link until its direction ends.
pub async fn run(link: Link) {
    let delay = link.proxy.metrics.streams[link.stream.index()]
        .relay_delay
        .local();
    let codec = FrameCodec {
        max_frame_bytes: link.proxy.settings.load().max_frame_bytes,
    };
    let mut buf = BytesMut::new();
    if !link.initial.is_empty() {
        buf.extend_from_slice(&link.initial);
    }
    let mut state = State {
        link,
        buf,
        codec,
        mode: Mode::Relaying,
        in_message: false,
        message_bytes: 0,
        generation: u64::MAX,
        chain: Vec::new(),
        dormant: Vec::new(),
        queue: VecDeque::new(),
        queued_bytes: 0,
        scratch: Vec::new(),
        out: BytesMut::new(),
        delay,
        writer_shut: false,
        peer_done_at: None,
        pending_close: None,
    };
    state.refresh_toxics();
    if !state.buf.is_empty() {
        let now = Instant::now();
        if let Err(end) = state.process(now).await {
            state.finish(end).await;
            return;
        }
    }
    let end = state.main_loop().await;
    state.finish(end).await;
}

/// How a link ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The reader sent FIN: pass it on.
    Eof,
    /// Abrupt reset seen on either side: reset both.
    Reset,
    /// A cut requested by a toxic or the admin API.
    Cut(CutMode),
    /// The closing handshake finished (or timed out).
    Closed,
    /// The other link is gone and this one had no more to do.
    PeerGone,
}

impl State {
    fn stream(&self) -> StreamDir {
        self.link.stream
    }

    fn to_server(&self) -> bool {
        self.link.stream == StreamDir::Upstream
    }

    fn other(&self) -> StreamDir {
        match self.link.stream {
            StreamDir::Upstream => StreamDir::Downstream,
            StreamDir::Downstream => StreamDir::Upstream,
        }
    }

    fn sender_label(&self) -> CloseBy {
        match self.link.stream {
            StreamDir::Upstream => CloseBy::Client,
            StreamDir::Downstream => CloseBy::Upstream,
        }
    }

    /// Rebuilds the toxic chain when the proxy's toxics changed. Instances of
    /// unchanged toxics keep their state; removed toxics release held items.
    fn refresh_toxics(&mut self) {
        let generation = self.link.proxy.generation();
        if generation == self.generation || self.in_message {
            return;
        }
        self.generation = generation;
        let settings = self.link.proxy.settings.load();
        self.codec.max_frame_bytes = settings.max_frame_bytes;
        let mut old: Vec<ActiveToxic> =
            self.chain.drain(..).chain(self.dormant.drain(..)).collect();
        let mut removed = false;
        for entry in settings.toxics.iter() {
            if entry.spec.stream != self.link.stream || entry.def.handshake_only() {
                continue;
            }
            let instance = match old.iter().position(|t| t.entry.version == entry.version) {
                Some(i) => old.swap_remove(i),
                None => ActiveToxic::new(
                    entry.clone(),
                    &self.link.facts,
                    self.link.proxy.seed,
                    &self.link.proxy.name,
                    self.link.conn.id,
                    &self.link.proxy.metrics,
                ),
            };
            if instance.applies() {
                self.chain.push(instance);
            } else {
                self.dormant.push(instance);
            }
        }
        removed |= !old.is_empty();
        if removed {
            let now = Instant::now();
            for (output, _) in self.queue.iter_mut() {
                output.not_before = output.not_before.min(now);
            }
        }
    }

    async fn main_loop(&mut self) -> End {
        loop {
            if let Some(command) = self.link.conn.take(self.stream()) {
                if let Some(end) = self.on_command(command).await {
                    return end;
                }
            }
            if self.mode == Mode::Done {
                return End::Closed;
            }
            // Pick up toxics added or removed while no frame arrived.
            self.refresh_toxics();
            let now = Instant::now();
            if let Mode::Closing { deadline } = self.mode {
                if now >= deadline {
                    return End::Closed;
                }
            }
            if self.peer_done_at.is_none() && self.link.conn.peer_gone(self.stream()) {
                self.peer_done_at = Some(now);
            }
            if let Some(at) = self.peer_done_at {
                if now >= at + PEER_DONE_GRACE {
                    return End::PeerGone;
                }
            }
            if self
                .pending_close
                .as_ref()
                .is_some_and(|(_, at)| *at <= now)
            {
                if let Some(end) = self.send_pending_close(false).await {
                    return end;
                }
            }
            if let Err(end) = self.release_due(now).await {
                return end;
            }
            if let Err(end) = self.run_deadlines(now).await {
                return end;
            }
            // What to wait for.
            let mut wake: Option<Instant> = self.queue.front().map(|(o, _)| o.not_before);
            let mut min_with = |t: Option<Instant>| {
                if let Some(t) = t {
                    wake = Some(wake.map_or(t, |w| w.min(t)));
                }
            };
            let mut paused = false;
            for toxic in self.chain.iter_mut() {
                min_with(toxic.next_deadline(now, &self.link.conn.activity));
                if let Some(until) = toxic.paused_until(now) {
                    paused = true;
                    min_with(Some(until));
                }
            }
            if let Mode::Closing { deadline } = self.mode {
                min_with(Some(deadline));
            }
            if let Some((_, at)) = &self.pending_close {
                min_with(Some(*at));
            }
            if let Some(at) = self.peer_done_at {
                min_with(Some(at + PEER_DONE_GRACE));
            }
            let may_read = !paused && self.queued_bytes < MAX_QUEUED_BYTES;
            let outcome = {
                let reader = self.link.reader.clone();
                let conn = self.link.conn.clone();
                let stream = self.stream();
                let sleep = async {
                    match wake {
                        Some(t) => precise_sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                // Reading first: when data is ready, the wake-up futures
                // below are never polled. Commands, toxic changes and
                // deadlines are checked at the top of every turn, and
                // commands again before the data read is processed, so none
                // of them waits behind a busy socket.
                tokio::select! {
                    biased;
                    result = read_some(&reader, &mut self.buf), if may_read => match result {
                        Ok(0) => ReadOutcome::Eof,
                        Ok(_) => ReadOutcome::Data,
                        Err(err) if is_reset(&err) => ReadOutcome::Reset,
                        Err(_) => ReadOutcome::Reset,
                    },
                    _ = conn.wait(stream) => ReadOutcome::Command,
                    _ = sleep => ReadOutcome::Command,
                }
            };
            match outcome {
                ReadOutcome::Command => continue,
                ReadOutcome::Reset => return End::Reset,
                ReadOutcome::Eof => {
                    if let Err(end) = self.on_eof().await {
                        return end;
                    }
                    if self.queue.is_empty() {
                        return End::Eof;
                    }
                }
                ReadOutcome::Data => {
                    // A command posted while we waited goes first (e.g. the
                    // deferred close must be in place before the peer's
                    // close reply, which may be in this very read).
                    if let Some(command) = self.link.conn.take(self.stream()) {
                        if let Some(end) = self.on_command(command).await {
                            return end;
                        }
                    }
                    let now = Instant::now();
                    if let Err(end) = self.process(now).await {
                        return end;
                    }
                    if self.buf.is_empty() {
                        pool::give(std::mem::take(&mut self.buf));
                    }
                }
            }
        }
    }

    async fn on_command(&mut self, command: LinkCommand) -> Option<End> {
        match command {
            LinkCommand::Cut(mode) => Some(End::Cut(mode)),
            LinkCommand::CloseAfterPeer(frame) if self.mode == Mode::Relaying => {
                self.pending_close = Some((frame, Instant::now() + CLOSE_WAIT));
                None
            }
            LinkCommand::Close(frame) | LinkCommand::CloseAfterPeer(frame) => {
                if self.mode == Mode::Relaying || self.mode == Mode::Blackhole {
                    return self.write_close(frame, false).await;
                }
                None
            }
        }
    }

    /// Writes the deferred close frame, if any (see [`Self::write_close`]).
    async fn send_pending_close(&mut self, peer_replied: bool) -> Option<End> {
        let (frame, _) = self.pending_close.take()?;
        self.write_close(frame, peer_replied).await
    }

    /// Writes a close frame after whatever is queued, then waits for the
    /// reader's close — or, with `peer_replied`, is done at once.
    async fn write_close(&mut self, frame: Bytes, peer_replied: bool) -> Option<End> {
        let far = Instant::now() + Duration::from_secs(3600);
        let _ = self.release_due(far).await;
        if !self.writer_shut
            && write_all(&self.link.writer, &frame, &self.link.conn, self.stream())
                .await
                .is_err()
        {
            return Some(End::Reset);
        }
        self.mode = if peer_replied {
            Mode::Done
        } else {
            Mode::Closing {
                deadline: Instant::now() + CLOSE_WAIT,
            }
        };
        None
    }

    async fn on_eof(&mut self) -> Result<(), End> {
        if self.pending_close.is_some() {
            if let Some(end) = self.send_pending_close(true).await {
                return Err(end);
            }
            return Err(End::Eof);
        }
        if self.chain.is_empty() {
            // Pass-through: the FIN follows whatever is queued.
            if self.queue.is_empty() {
                return Ok(());
            }
        }
        let now = Instant::now();
        let ready = self
            .queue
            .back()
            .map_or(now, |(o, _)| o.not_before.max(now));
        self.chain_step(now, |chain, base, out| {
            let eof = Output {
                not_before: ready,
                item: Item::Eof,
            };
            run_chain(chain, eof, base, out);
        });
        // Stop reading: drain the queue and finish.
        let far = Instant::now() + Duration::from_secs(3600);
        loop {
            let next = self.queue.front().map(|(o, _)| o.not_before);
            match next {
                None => return Err(End::Eof),
                Some(t) => {
                    tokio::select! {
                        _ = precise_sleep_until(t) => {}
                        _ = self.link.conn.wait(self.stream()) => {
                            if let Some(command) = self.link.conn.take(self.stream()) {
                                if let Some(end) = self.on_command(command).await {
                                    return Err(end);
                                }
                            }
                        }
                    }
                    self.release_due(Instant::now().min(far)).await?;
                }
            }
        }
    }

    /// Runs one step of the toxic chain (an item through it, or a toxic's
    /// timer) and queues what comes out.
    fn chain_step(
        &mut self,
        now: Instant,
        step: impl FnOnce(&mut [ActiveToxic], &ChainCx<'_>, &mut Vec<Output>),
    ) {
        let conn = self.link.conn.clone();
        let facts = self.link.facts.clone();
        let base = ChainCx {
            now,
            to_server: self.to_server(),
            activity: &conn.activity,
            facts: &facts,
            profile: crate::protocols::NONE,
            message_payload: None,
        };
        let mut outputs = std::mem::take(&mut self.scratch);
        step(&mut self.chain, &base, &mut outputs);
        for output in outputs.drain(..) {
            self.enqueue(output, now);
        }
        self.scratch = outputs;
    }

    fn enqueue(&mut self, output: Output, read_at: Instant) {
        let size = match &output.item {
            Item::Frame(f) => f.wire_len(),
            Item::Raw(b) => b.len(),
            _ => 0,
        };
        self.queued_bytes += size;
        self.queue.push_back((output, read_at));
    }

    /// Writes every queued item whose release time has come, in order.
    async fn release_due(&mut self, now: Instant) -> Result<(), End> {
        let mut end = None;
        let mut written: u64 = 0;
        self.out.clear();
        let mut delays: Vec<Instant> = Vec::new();
        while let Some((front, _)) = self.queue.front() {
            if front.not_before > now {
                break;
            }
            let Some((output, read_at)) = self.queue.pop_front() else {
                break;
            };
            match output.item {
                Item::Frame(frame) => {
                    self.queued_bytes -= frame.wire_len();
                    if matches!(self.mode, Mode::Relaying) {
                        frame.encode(&mut self.out);
                        written += 1;
                        delays.push(read_at);
                    }
                }
                Item::Raw(bytes) => {
                    self.queued_bytes -= bytes.len();
                    if matches!(self.mode, Mode::Relaying) {
                        self.out.extend_from_slice(&bytes);
                    }
                }
                Item::Eof => {
                    end = Some(End::Eof);
                    break;
                }
                Item::End(action) => {
                    end = Some(self.toxic_end(action));
                    break;
                }
            }
        }
        if !self.out.is_empty() && !self.writer_shut {
            let out = std::mem::take(&mut self.out);
            let result = write_all(&self.link.writer, &out, &self.link.conn, self.stream()).await;
            self.out = out;
            self.out.clear();
            if result.is_err() {
                return Err(End::Reset);
            }
            let done = Instant::now();
            for read_at in delays {
                self.delay
                    .observe(done.saturating_duration_since(read_at).as_secs_f64());
            }
            if written > 0 {
                self.delay.flush();
            }
        }
        match end {
            Some(End::Closed) => {
                // A toxic close: both links got their close command.
                Ok(())
            }
            Some(end) => Err(end),
            None => Ok(()),
        }
    }

    fn toxic_end(&mut self, action: EndAction) -> End {
        match action {
            EndAction::Cut(mode) => {
                self.link.conn.cut(mode);
                End::Cut(mode)
            }
            EndAction::Close {
                to_receiver,
                to_sender,
            } => {
                let metrics = &self.link.proxy.metrics;
                metrics.close(to_receiver.code, CloseBy::Toxic);
                metrics.close(to_sender.code, CloseBy::Toxic);
                let (to_client, to_server) = match self.stream() {
                    StreamDir::Downstream => (to_receiver, to_sender),
                    StreamDir::Upstream => (to_sender, to_receiver),
                };
                self.link.conn.close_both(
                    (to_client.code, &to_client.reason),
                    (to_server.code, &to_server.reason),
                );
                End::Closed
            }
        }
    }

    async fn run_deadlines(&mut self, now: Instant) -> Result<(), End> {
        if self.chain.is_empty() || self.mode != Mode::Relaying {
            return Ok(());
        }
        let conn = self.link.conn.clone();
        let mut fired = false;
        for i in 0..self.chain.len() {
            let due = self.chain[i]
                .next_deadline(now, &conn.activity)
                .is_some_and(|t| t <= now);
            if due {
                self.chain_step(now, |chain, base, out| run_deadline(chain, i, base, out));
                fired = true;
            }
        }
        if fired {
            self.release_due(now).await?;
        }
        Ok(())
    }

    /// Handles everything complete in the read buffer.
    async fn process(&mut self, now: Instant) -> Result<(), End> {
        self.refresh_toxics();
        match self.mode {
            Mode::Blackhole => {
                self.buf.clear();
                return Ok(());
            }
            Mode::Closing { .. } => return self.process_closing(),
            Mode::Relaying | Mode::Done => {}
        }
        if self.chain.is_empty() && self.queue.is_empty() {
            self.process_fast(now).await
        } else {
            self.process_toxic(now).await
        }
    }

    /// While closing: look for the reader's close reply, drop everything else.
    fn process_closing(&mut self) -> Result<(), End> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    if frame.header.opcode == Opcode::Close {
                        self.mode = Mode::Done;
                        self.buf.clear();
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(_) => {
                    self.buf.clear();
                    return Err(End::Closed);
                }
            }
        }
    }

    /// Checks one header against the limits and the message state. On a
    /// violation, starts the proxy's close and returns the end.
    fn check_header(&mut self, header: &FrameHeader) -> Result<(), End> {
        let settings = self.link.proxy.settings.load();
        if self.stream() == StreamDir::Upstream && header.mask.is_none() {
            return Err(self.protocol_close(1002, "unmasked client frame"));
        }
        if header.opcode.is_data() {
            let starts = header.opcode != Opcode::Continuation;
            if starts {
                self.message_bytes = 0;
            }
            self.message_bytes += header.payload_len;
            if self.message_bytes > settings.max_message_bytes {
                return Err(self.protocol_close(1009, "message too big"));
            }
            self.in_message = !header.fin;
        }
        Ok(())
    }

    /// Close `sender_code` to the sender of this stream, 1001 to the other side.
    fn protocol_close(&mut self, sender_code: u16, reason: &str) -> End {
        let metrics = &self.link.proxy.metrics;
        metrics.close(sender_code, CloseBy::Proxy);
        metrics.close(1001, CloseBy::Proxy);
        tracing::info!(
            conn_id = self.link.conn.id,
            proxy = %self.link.proxy.name,
            stream = self.stream().label(),
            code = sender_code,
            reason,
            "closing connection"
        );
        self.link.conn.fail_from(self.stream(), sender_code, reason);
        End::Closed
    }

    /// Pass-through: write the complete frames of the buffer as they are.
    async fn process_fast(&mut self, now: Instant) -> Result<(), End> {
        let mut offset = 0usize;
        let mut frames = [0u64; 6];
        let mut messages = 0u64;
        let mut data = false;
        let mut protocol_end = None;
        let mut peer_close = None;
        loop {
            let header = match parse_header(&self.buf[offset..]) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(_) => {
                    protocol_end = Some(self.protocol_close(1002, "malformed frame"));
                    break;
                }
            };
            if header.payload_len > self.codec.max_frame_bytes {
                protocol_end = Some(self.protocol_close(1009, "frame too big"));
                break;
            }
            let total = header.wire_len() as usize;
            if self.buf.len() - offset < total {
                self.buf.reserve(total - (self.buf.len() - offset));
                break;
            }
            if let Err(end) = self.check_header(&header) {
                protocol_end = Some(end);
                break;
            }
            if header.opcode == Opcode::Close && self.pending_close.is_some() {
                // The peer answered the proxy's 1001: the deferred close
                // goes out instead of this reply.
                peer_close = Some(total);
                break;
            }
            frames[header.opcode.index()] += 1;
            if header.opcode.is_data() {
                data = true;
                if header.fin {
                    messages += 1;
                }
            } else if header.opcode == Opcode::Close {
                let start = offset + header.header_len;
                let code = close_code_of(&self.buf[start..offset + total], header.mask);
                self.link.proxy.metrics.close(code, self.sender_label());
            }
            offset += total;
        }
        if offset > 0 {
            self.account(&frames, messages, offset as u64, data, now);
            // Written from the buffer itself, then skipped: no allocation.
            if write_all(
                &self.link.writer,
                &self.buf[..offset],
                &self.link.conn,
                self.stream(),
            )
            .await
            .is_err()
            {
                return Err(End::Reset);
            }
            self.buf.advance(offset);
            let delay = Instant::now().saturating_duration_since(now).as_secs_f64();
            for _ in 0..frames.iter().sum::<u64>() {
                self.delay.observe(delay);
            }
            self.delay.flush();
        }
        if protocol_end.is_some() {
            self.buf.clear();
        }
        if peer_close.is_some() {
            self.buf.clear();
            if let Some(end) = self.send_pending_close(true).await {
                return Err(end);
            }
        }
        match protocol_end {
            Some(End::Closed) => Ok(()),
            Some(end) => Err(end),
            None => Ok(()),
        }
    }

    fn account(&self, frames: &[u64; 6], messages: u64, bytes: u64, data: bool, now: Instant) {
        let m = &self.link.proxy.metrics.streams[self.stream().index()];
        let mut total = 0;
        for (i, n) in frames.iter().enumerate() {
            if *n > 0 {
                m.frames[i].inc_by(*n);
                total += n;
            }
        }
        if messages > 0 {
            m.messages.inc_by(messages);
        }
        m.bytes.inc_by(bytes);
        let counters = &self.link.conn.counters[self.stream().index()];
        counters
            .frames
            .fetch_add(total, std::sync::atomic::Ordering::Relaxed);
        counters
            .bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        self.link.conn.activity.touch(now, data);
    }

    /// Toxic path: decode frames, run them through the chain, queue outputs.
    async fn process_toxic(&mut self, now: Instant) -> Result<(), End> {
        let mut frames = [0u64; 6];
        let mut messages = 0u64;
        let mut bytes = 0u64;
        let mut data = false;
        let mut protocol_end = None;
        loop {
            let header = match parse_header(&self.buf) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(_) => {
                    protocol_end = Some(self.protocol_close(1002, "malformed frame"));
                    break;
                }
            };
            if self.buf.len() < header.wire_len() as usize {
                if header.payload_len > self.codec.max_frame_bytes {
                    protocol_end = Some(self.protocol_close(1009, "frame too big"));
                }
                break;
            }
            if let Err(end) = self.check_header(&header) {
                protocol_end = Some(end);
                break;
            }
            let frame = match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(CodecError::TooBig { .. }) => {
                    protocol_end = Some(self.protocol_close(1009, "frame too big"));
                    break;
                }
                Err(_) => {
                    protocol_end = Some(self.protocol_close(1002, "malformed frame"));
                    break;
                }
            };
            if header.opcode == Opcode::Close && self.pending_close.is_some() {
                // The peer answered the proxy's 1001 (see process_fast).
                self.buf.clear();
                if bytes > 0 {
                    self.account(&frames, messages, bytes, data, now);
                }
                if let Some(end) = self.send_pending_close(true).await {
                    return Err(end);
                }
                return Ok(());
            }
            frames[header.opcode.index()] += 1;
            bytes += header.wire_len();
            if header.opcode.is_data() {
                data = true;
                if header.fin {
                    messages += 1;
                }
            } else if header.opcode == Opcode::Close {
                self.link
                    .proxy
                    .metrics
                    .close(frame.close_code(), self.sender_label());
            }
            self.chain_step(now, |chain, base, out| {
                let input = Output {
                    not_before: now,
                    item: Item::Frame(frame),
                };
                run_chain(chain, input, base, out);
            });
            if !self.in_message {
                self.refresh_toxics();
            }
        }
        if bytes > 0 {
            self.account(&frames, messages, bytes, data, now);
        }
        if protocol_end.is_some() {
            self.buf.clear();
        }
        self.release_due(now).await?;
        match protocol_end {
            Some(End::Closed) => Ok(()),
            Some(end) => Err(end),
            None => Ok(()),
        }
    }

    /// Ends the link: pass on FIN or RST, drain, tell the other link.
    async fn finish(&mut self, end: End) {
        let conn = self.link.conn.clone();
        match end {
            End::Eof | End::PeerGone | End::Closed => {
                shutdown_write(&self.link.writer);
            }
            End::Reset => {
                let _ = self.link.writer.set_zero_linger();
                let _ = self.link.reader.set_zero_linger();
                conn.cut(CutMode::Reset);
            }
            End::Cut(CutMode::Reset) => {
                let _ = self.link.writer.set_zero_linger();
                let _ = self.link.reader.set_zero_linger();
            }
            End::Cut(CutMode::Fin) => {
                shutdown_write(&self.link.writer);
                shutdown_write(&self.link.reader);
                // Drain so that close() does not turn the FIN into a RST.
                let reader = self.link.reader.clone();
                let mut sink = pool::take(READ_CHUNK);
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    loop {
                        sink.clear();
                        match read_some(&reader, &mut sink).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                })
                .await;
                pool::give(sink);
            }
            End::Cut(CutMode::Blackhole) => {
                self.mode = Mode::Blackhole;
                // Read into the void until the sender gives up.
                let reader = self.link.reader.clone();
                let mut sink = pool::take(READ_CHUNK);
                loop {
                    sink.clear();
                    tokio::select! {
                        r = read_some(&reader, &mut sink) => match r {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        },
                        _ = conn.wait(self.stream()) => match conn.take(self.stream()) {
                            Some(LinkCommand::Cut(CutMode::Reset)) => {
                                let _ = self.link.writer.set_zero_linger();
                                let _ = self.link.reader.set_zero_linger();
                                break;
                            }
                            Some(LinkCommand::Cut(CutMode::Fin)) => break,
                            _ => {}
                        }
                    }
                }
                pool::give(sink);
                // The sender left: let the other side go too.
                shutdown_write(&self.link.writer);
                conn.post(self.other(), LinkCommand::Cut(CutMode::Fin));
            }
        }
        self.writer_shut = true;
        if !self.buf.is_empty() || self.buf.capacity() > 0 {
            pool::give(std::mem::take(&mut self.buf));
        }
        self.mode = Mode::Done;
        tracing::debug!(
            conn_id = conn.id,
            stream = self.stream().label(),
            ?end,
            "link ended"
        );
        // Tell the other link; it gets a grace period to finish.
        conn.peer_done(self.other());
    }
}

/// Waits until `deadline`, never less, with sub-millisecond precision.
/// tokio's timer rounds deadlines up to whole milliseconds (a held frame
/// would wait 0.5 ms too long on average); async-io's timer wakes on a
/// timerfd and is late by microseconds. Held frames' release times and the
/// toxics' own deadlines go through here.
async fn precise_sleep_until(deadline: Instant) {
    async_io::Timer::at(deadline).await;
}

fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

fn shutdown_write(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
}

/// Reads what is available into `buf` (taking a pooled buffer if needed).
async fn read_some(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            if buf.capacity() == 0 {
                *buf = pool::take(READ_CHUNK);
            } else {
                buf.reserve(READ_CHUNK);
            }
        }
        // A read that leaves spare room in the buffer drained the socket
        // (edge-triggered epoll): report WouldBlock to `try_io` so tokio
        // clears the readiness now, instead of paying one more read that
        // fails with EAGAIN at the end of every batch (what tokio's own
        // `poll_read` does).
        let spare = buf.capacity() - buf.len();
        let mut got = 0;
        let result = stream.try_io(tokio::io::Interest::READABLE, || {
            let n = stream.try_read_buf(buf)?;
            got = n;
            if n > 0 && n < spare {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        match result {
            Ok(n) => return Ok(n),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                if got > 0 {
                    return Ok(got);
                }
            }
            Err(err) => return Err(err),
        }
    }
}

/// Writes all of `data`; gives up only when the connection is being cut.
/// Other commands stay in the mailbox until the write is done.
async fn write_all(
    stream: &TcpStream,
    mut data: &[u8],
    conn: &ConnShared,
    link: StreamDir,
) -> io::Result<()> {
    let mut listening = true;
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(n) => {
                data = &data[n..];
                continue;
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
        tokio::select! {
            ready = stream.writable() => ready?,
            _ = conn.wait(link), if listening => listening = false,
            _ = tokio::time::sleep(Duration::from_millis(100)), if !listening => {}
        }
        if conn.is_cut_pending(link) {
            return Err(io::Error::other("connection cut"));
        }
    }
    Ok(())
}
