//! The relay: one link per direction of a connection.
//!
//! A link reads frames from one socket and writes them to the other. With
//! no toxic applying to the connection it scans complete frames in its read
//! buffer and writes that byte range verbatim (no per-frame allocation, one
//! write per read). With toxics, frames are split off the buffer, passed
//! through the toxic chain and queued with release times; the queue is
//! bounded, so a slow writer stops the reader (TCP backpressure reaches the
//! sender).
//!
//! This file is the link's loop: what to wait for, the read, and per read
//! batch the choice of path (pass-through or toxic) and the FIN. The jobs
//! it composes live below it; imports only point down:
//!
//! ```text
//! mod.rs    the loop, the two paths, EOF
//!   ├─▶ close.rs   closing handshake, deferred and proxy closes, toxic ends,
//!   │              commands, the link's last act (FIN, RST, drain, blackhole)
//!   ├─▶ chain.rs   the toxic chain: refresh between messages, steps, timers
//!   ├─▶ held.rs    the held-frame queue: release times, bounded, one write per release
//!   ├─▶ scan.rs    the one frame-header loop: limits, masking, counting
//!   ├─▶ io.rs      socket reads and writes, the read-buffer pool
//!   └─▶ link.rs    what a link is and how it ends
//! ```
//!
//! (close → held, io, scan, link; chain → held, link; held → io, link;
//! scan → link; io and link use no other file of the relay.)

mod chain;
mod close;
mod held;
mod io;
mod link;
mod scan;

pub use link::Link;

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use prometheus::local::LocalHistogram;

use crate::frame::{Frame, Opcode};
use crate::metrics::UNCLASSIFIED;
use crate::protocols::Kind;
use crate::proxy::conn::LinkCommand;
use crate::toxics::{Item, Output};
use crate::vocab::StreamDir;
use chain::Toxics;
use close::{protocol_close, toxic_end, Closing, Mode};
use held::{earliest, precise_sleep_until, Held};
use io::{is_reset, pool, read_some, write_all};
use link::End;
use scan::{FrameScan, ScanCx, Stop, Tally};

/// Why waiting stopped.
enum ReadOutcome {
    Data,
    Eof,
    Reset,
    Command,
}

/// A running link: what it was given, plus one part per job.
struct State {
    link: Link,
    /// The read buffer (from the pool while it holds bytes).
    buf: BytesMut,
    scan: FrameScan,
    toxics: Toxics,
    held: Held,
    close: Closing,
    /// `wsfault_relay_delay_seconds` of this stream, flushed per batch.
    delay: LocalHistogram,
    /// Frames of a fragmented message held until its last one, while a
    /// toxic on the stream matches on payloads.
    gathering: Vec<Frame>,
    /// The kind of the data message under way, while the link classifies.
    message_kind: Option<Kind>,
    /// Data read when a pause began is waiting in `buf` for its end.
    unprocessed: bool,
}

/// Runs a link until its direction ends.
pub async fn run(link: Link) {
    let delay = link.proxy.metrics.streams[link.stream.index()]
        .relay_delay
        .local();
    let scan = FrameScan::new(link.proxy.settings.load().max_frame_bytes);
    let mut buf = BytesMut::new();
    if !link.initial.is_empty() {
        buf.extend_from_slice(&link.initial);
    }
    let mut state = State {
        link,
        buf,
        scan,
        toxics: Toxics::new(),
        held: Held::default(),
        close: Closing::new(),
        delay,
        gathering: Vec::new(),
        message_kind: None,
        unprocessed: false,
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

/// Rebuilds the toxic chain when the proxy's toxics changed (not inside a
/// message): the settings' frame limit goes to the scan, and what removed
/// toxics held is due at once.
#[inline]
fn refresh(toxics: &mut Toxics, link: &Link, scan: &mut FrameScan, held: &mut Held) {
    if let Some(refreshed) = toxics.refresh(link, scan.in_message()) {
        scan.max_frame_bytes = refreshed.max_frame_bytes;
        if refreshed.removed {
            let now = Instant::now();
            held.expedite(now);
            for output in refreshed.released {
                held.push(output, now);
            }
        }
    }
}

impl State {
    fn refresh_toxics(&mut self) {
        refresh(&mut self.toxics, &self.link, &mut self.scan, &mut self.held);
    }

    async fn main_loop(&mut self) -> End {
        loop {
            if let Some(command) = self.link.conn.take(self.link.stream) {
                if let Some(end) = self.on_command(command).await {
                    return end;
                }
            }
            if self.close.mode() == Mode::Done {
                return End::Closed;
            }
            // Pick up toxics added or removed while no frame arrived.
            self.refresh_toxics();
            let now = Instant::now();
            if let Some(end) = self.close.expired(now, &self.link) {
                return end;
            }
            if self.close.pending_close_due(now) {
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
            let (toxic_wake, paused) = self.toxics.next_wake(now, &self.link.conn.activity);
            if self.unprocessed && !paused {
                // Data read just before a pause began (see below) goes on
                // now that the pause is over.
                self.unprocessed = false;
                if let Err(end) = self.process(now).await {
                    return end;
                }
                continue;
            }
            let wake = earliest(
                earliest(self.held.next_release(), toxic_wake),
                self.close.next_wake(),
            );
            let may_read = !paused && self.held.has_room();
            let outcome = {
                let reader = self.link.reader.clone();
                let conn = self.link.conn.clone();
                let stream = self.link.stream;
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
                    if self.held.is_empty() {
                        return End::Eof;
                    }
                }
                ReadOutcome::Data => {
                    // A command posted while we waited goes first (e.g. the
                    // deferred close must be in place before the peer's
                    // close reply, which may be in this very read).
                    if let Some(command) = self.link.conn.take(self.link.stream) {
                        if let Some(end) = self.on_command(command).await {
                            return end;
                        }
                    }
                    let now = Instant::now();
                    // A toxic that pauses this stream (`stall`) and was added
                    // while the link waited for this read holds the data too.
                    self.refresh_toxics();
                    if self.toxics.next_wake(now, &self.link.conn.activity).1 {
                        self.unprocessed = true;
                        continue;
                    }
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
        self.close
            .on_command(command, &mut self.held, &self.link, &mut self.delay)
            .await
    }

    async fn send_pending_close(&mut self, peer_replied: bool) -> Option<End> {
        self.close
            .send_pending_close(peer_replied, &mut self.held, &self.link, &mut self.delay)
            .await
    }

    /// Writes every held item due by `now` (see [`Held::release_due`]).
    async fn release_due(&mut self, now: Instant) -> Result<(), End> {
        let link = &self.link;
        self.held
            .release_due(now, self.close.gate(), link, &mut self.delay, |action| {
                toxic_end(link, action)
            })
            .await
    }

    /// Runs the toxics' timers that are due, then releases what they put out.
    async fn run_deadlines(&mut self, now: Instant) -> Result<(), End> {
        if self.toxics.is_empty() || self.close.mode() != Mode::Relaying {
            return Ok(());
        }
        if self.toxics.fire_due(now, &self.link, &mut self.held) {
            self.release_due(now).await?;
        }
        Ok(())
    }

    /// The reader sent FIN: with toxics (or held frames), pass it through
    /// the chain, stop reading and release the queue; then the link ends.
    async fn on_eof(&mut self) -> Result<(), End> {
        // A toxic added just before the FIN (e.g. `slow_close`) acts on it.
        self.refresh_toxics();
        if self.close.has_pending_close() {
            if let Some(end) = self.send_pending_close(true).await {
                return Err(end);
            }
            return Err(End::Eof);
        }
        if self.toxics.is_empty() && self.held.is_empty() {
            // Pass-through: the FIN follows at once.
            return Ok(());
        }
        let now = Instant::now();
        // A message cut short by the FIN goes on as far as it came.
        for part in std::mem::take(&mut self.gathering) {
            let input = Output::at(now, Item::Frame(part));
            self.toxics
                .pass(now, &self.link, &mut self.held, None, input);
        }
        let ready = self.held.last_release().map_or(now, |t| t.max(now));
        let eof = Output::at(ready, Item::Eof);
        self.toxics.pass(now, &self.link, &mut self.held, None, eof);
        // Stop reading: drain the queue and finish.
        let far = Instant::now() + Duration::from_secs(3600);
        loop {
            let Some(t) = self.held.next_release() else {
                return Err(End::Eof);
            };
            tokio::select! {
                _ = precise_sleep_until(t) => {}
                _ = self.link.conn.wait(self.link.stream) => {
                    if let Some(command) = self.link.conn.take(self.link.stream) {
                        if let Some(end) = self.on_command(command).await {
                            return Err(end);
                        }
                    }
                }
            }
            self.release_due(Instant::now().min(far)).await?;
        }
    }

    /// Under `protocol: auto`, a connection no profile claimed at the
    /// upgrade is decided by its first client frame (SignalR's handshake
    /// record). Once per connection; no allocation unless the frame ends in
    /// SignalR's record separator.
    fn detect_profile(&mut self) {
        let profile = &self.link.conn.profile;
        if self.link.stream != StreamDir::Upstream || !profile.is_pending() {
            return;
        }
        let Ok(Some(header)) = crate::frame::parse_header(&self.buf) else {
            return;
        };
        let end = header.header_len as u64 + header.payload_len;
        if (self.buf.len() as u64) < end {
            return;
        }
        if !header.opcode.is_data() || header.payload_len == 0 {
            profile.set(crate::protocols::NONE);
            return;
        }
        let last = (end - 1) as usize;
        let key_byte = header
            .mask
            .map_or(0, |k| k[(header.payload_len as usize - 1) % 4]);
        if self.buf[last] ^ key_byte != 0x1e {
            profile.set(crate::protocols::NONE);
            return;
        }
        let mut plain = self.buf[header.header_len..=last].to_vec();
        if let Some(key) = header.mask {
            crate::frame::apply_mask(&mut plain, key, 0);
        }
        profile.set(crate::protocols::detect_first_message(&plain));
    }

    /// The `wsfault_messages_total` kind slot of messages the link does not
    /// classify: `data` on a plain connection, `unclassified` under an
    /// application profile.
    fn default_kind_slot(&self) -> usize {
        if !self.link.conn.profile.get().reads_payload() {
            Kind::Data.index()
        } else {
            UNCLASSIFIED
        }
    }

    /// Handles everything complete in the read buffer.
    async fn process(&mut self, now: Instant) -> Result<(), End> {
        self.detect_profile();
        self.refresh_toxics();
        match self.close.mode() {
            Mode::Blackhole => {
                self.buf.clear();
                return Ok(());
            }
            Mode::Closing { .. } => {
                return self
                    .close
                    .process_closing(&mut self.buf, self.scan.max_frame_bytes)
            }
            Mode::Relaying | Mode::Done => {}
        }
        if self.toxics.is_empty() && self.held.is_empty() {
            self.process_fast(now).await
        } else {
            self.process_toxic(now).await
        }
    }

    /// Pass-through: write the complete frames of the buffer as they are.
    async fn process_fast(&mut self, now: Instant) -> Result<(), End> {
        let mut tally = Tally::new(self.default_kind_slot());
        let cx = ScanCx::new(&self.link, self.close.has_pending_close());
        let scanned = self.scan.in_place(&mut self.buf, &cx, &mut tally);
        if let Stop::Violation(violation) = scanned.stop {
            protocol_close(&self.link, violation);
        }
        let end = scanned.end;
        if end > 0 {
            tally.account(&self.link, now);
            // Written from the buffer itself, then skipped: no allocation.
            if write_all(
                &self.link.writer,
                &self.buf[..end],
                &self.link.conn,
                self.link.stream,
            )
            .await
            .is_err()
            {
                return Err(End::Reset);
            }
            self.buf.advance(end);
            let delay = Instant::now().saturating_duration_since(now).as_secs_f64();
            for _ in 0..tally.frame_count() {
                self.delay.observe(delay);
            }
            self.delay.flush();
        }
        match scanned.stop {
            Stop::NeedMore => Ok(()),
            Stop::Violation(_) => {
                self.buf.clear();
                Ok(())
            }
            Stop::CloseReply => {
                // The peer answered the proxy's 1001: the deferred close
                // goes out instead of this reply.
                self.buf.clear();
                match self.send_pending_close(true).await {
                    Some(end) => Err(end),
                    None => Ok(()),
                }
            }
        }
    }

    /// Toxic path: split frames off the buffer, run each through the chain
    /// (rebuilt between messages when the toxics changed), release what is due.
    async fn process_toxic(&mut self, now: Instant) -> Result<(), End> {
        let mut tally = Tally::new(self.default_kind_slot());
        let cx = ScanCx::new(&self.link, self.close.has_pending_close());
        let classify = self.toxics.needs_kind();
        let gather = self.toxics.needs_payload();
        let mut kinds = [0u64; 4];
        let (link, toxics, held) = (&self.link, &mut self.toxics, &mut self.held);
        let (gathering, message_kind) = (&mut self.gathering, &mut self.message_kind);
        let profile = link.conn.profile.get();
        let scanned = self
            .scan
            .taking(&mut self.buf, &cx, &mut tally, |frame, scan| {
                let opcode = frame.header.opcode;
                if classify && opcode.is_data() {
                    if opcode != Opcode::Continuation {
                        let plain = if profile.reads_payload() {
                            frame.plain_payload()
                        } else {
                            bytes::Bytes::new()
                        };
                        *message_kind = Some(crate::protocols::classify(
                            profile,
                            opcode,
                            &plain,
                            frame.header.fin,
                        ));
                    }
                    if frame.header.fin {
                        if let Some(kind) = message_kind.take() {
                            kinds[kind.index()] += 1;
                        }
                    }
                }
                if gather && opcode.is_data() && (!gathering.is_empty() || !frame.header.fin) {
                    // A fragmented message: held until its last frame, then
                    // passed frame by frame with its whole payload.
                    let last = frame.header.fin;
                    gathering.push(frame);
                    if !last {
                        return;
                    }
                    let mut payload = Vec::new();
                    for part in gathering.iter() {
                        payload.extend_from_slice(&part.plain_payload());
                    }
                    for part in gathering.drain(..) {
                        let input = Output::at(now, Item::Frame(part));
                        toxics.pass(now, link, held, Some(&payload), input);
                    }
                } else {
                    toxics.pass(now, link, held, None, Output::at(now, Item::Frame(frame)));
                }
                if !scan.in_message() {
                    refresh(toxics, link, scan, held);
                }
            });
        tally.reclassify(&kinds);
        match scanned.stop {
            Stop::NeedMore => {}
            Stop::Violation(violation) => protocol_close(&self.link, violation),
            Stop::CloseReply => {
                // The peer answered the proxy's 1001 (see process_fast).
                self.buf.clear();
                if !tally.is_empty() {
                    tally.account(&self.link, now);
                }
                return match self.send_pending_close(true).await {
                    Some(end) => Err(end),
                    None => Ok(()),
                };
            }
        }
        if !tally.is_empty() {
            tally.account(&self.link, now);
        }
        if matches!(scanned.stop, Stop::Violation(_)) {
            self.buf.clear();
        }
        self.release_due(now).await
    }

    /// Ends the link (see [`Closing::finish`]).
    async fn finish(&mut self, end: End) {
        self.close.finish(end, &self.link, &mut self.buf).await;
    }
}
