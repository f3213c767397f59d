//! How a link closes: the closing handshake (a close frame written after
//! what is held, then the reader's reply awaited for up to a second), the
//! deferred close of a protocol failure (sent once the sender has
//! answered), the proxy's own closes (protocol errors, limits) and a
//! toxic's end, the commands other links, toxics and the admin API post,
//! and the last act of a link: FIN, RST, drain or blackhole, then telling
//! the other link.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prometheus::local::LocalHistogram;
use tokio_util::codec::Decoder;

use super::held::{earliest, Gate, Held};
use super::io::{pool, read_some, shutdown_write, write_all, READ_CHUNK};
use super::link::{End, Link};
use super::scan::Violation;
use crate::frame::{FrameCodec, Opcode};
use crate::metrics::CloseBy;
use crate::proxy::conn::LinkCommand;
use crate::toxics::{CutMode, EndAction, StreamDir};

/// How long the proxy waits for close replies before ending both TCP connections.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long a link lives on after the other link ended, waiting for its EOF.
const PEER_DONE_GRACE: Duration = Duration::from_secs(5);

/// Where a link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Frames flow.
    Relaying,
    /// A close frame was sent to our writer; we wait for the reader's close.
    Closing {
        /// When the link gives up waiting.
        deadline: Instant,
    },
    /// Reading into the void (a blackhole cut).
    Blackhole,
    /// Finished.
    Done,
}

/// A link's closing state.
#[derive(Debug)]
pub(super) struct Closing {
    mode: Mode,
    /// The writer's side was shut: nothing more is written.
    writer_shut: bool,
    /// The other link ended at this instant.
    peer_done_at: Option<Instant>,
    /// A close frame to write once the reader's side has closed (or at the instant).
    pending_close: Option<(Bytes, Instant)>,
}

impl Closing {
    /// A link that relays.
    pub(super) fn new() -> Closing {
        Closing {
            mode: Mode::Relaying,
            writer_shut: false,
            peer_done_at: None,
            pending_close: None,
        }
    }

    /// Where the link stands.
    #[inline]
    pub(super) fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether released frames are written (see [`Gate`]).
    #[inline]
    pub(super) fn gate(&self) -> Gate {
        Gate {
            relaying: self.mode == Mode::Relaying,
            writer_shut: self.writer_shut,
        }
    }

    /// Whether a deferred close waits for the reader's close (or EOF).
    #[inline]
    pub(super) fn has_pending_close(&self) -> bool {
        self.pending_close.is_some()
    }

    /// The end due at `now`: the closing handshake timed out, or the other
    /// link ended more than the grace period ago (noted on the first look).
    #[inline]
    pub(super) fn expired(&mut self, now: Instant, link: &Link) -> Option<End> {
        if let Mode::Closing { deadline } = self.mode {
            if now >= deadline {
                return Some(End::Closed);
            }
        }
        if self.peer_done_at.is_none() && link.conn.peer_gone(link.stream) {
            self.peer_done_at = Some(now);
        }
        if let Some(at) = self.peer_done_at {
            if now >= at + PEER_DONE_GRACE {
                return Some(End::PeerGone);
            }
        }
        None
    }

    /// Whether the deferred close's wait ran out by `now`.
    #[inline]
    pub(super) fn pending_close_due(&self, now: Instant) -> bool {
        self.pending_close
            .as_ref()
            .is_some_and(|(_, at)| *at <= now)
    }

    /// The earliest of this state's own deadlines.
    #[inline]
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let mut wake = match self.mode {
            Mode::Closing { deadline } => Some(deadline),
            _ => None,
        };
        if let Some((_, at)) = &self.pending_close {
            wake = earliest(wake, Some(*at));
        }
        if let Some(at) = self.peer_done_at {
            wake = earliest(wake, Some(at + PEER_DONE_GRACE));
        }
        wake
    }

    /// Acts on a command from the connection's mailbox.
    pub(super) async fn on_command(
        &mut self,
        command: LinkCommand,
        held: &mut Held,
        link: &Link,
        delay: &mut LocalHistogram,
    ) -> Option<End> {
        match command {
            LinkCommand::Cut(mode) => Some(End::Cut(mode)),
            LinkCommand::CloseAfterPeer(frame) if self.mode == Mode::Relaying => {
                self.pending_close = Some((frame, Instant::now() + CLOSE_WAIT));
                None
            }
            LinkCommand::Close(frame) | LinkCommand::CloseAfterPeer(frame) => {
                if self.mode == Mode::Relaying || self.mode == Mode::Blackhole {
                    return self.write_close(frame, false, held, link, delay).await;
                }
                None
            }
        }
    }

    /// Writes the deferred close frame, if any (see [`Closing::write_close`]).
    pub(super) async fn send_pending_close(
        &mut self,
        peer_replied: bool,
        held: &mut Held,
        link: &Link,
        delay: &mut LocalHistogram,
    ) -> Option<End> {
        let (frame, _) = self.pending_close.take()?;
        self.write_close(frame, peer_replied, held, link, delay)
            .await
    }

    /// Writes a close frame after whatever is held, then waits for the
    /// reader's close — or, with `peer_replied`, is done at once.
    async fn write_close(
        &mut self,
        frame: Bytes,
        peer_replied: bool,
        held: &mut Held,
        link: &Link,
        delay: &mut LocalHistogram,
    ) -> Option<End> {
        let far = Instant::now() + Duration::from_secs(3600);
        let _ = held
            .release_due(far, self.gate(), link, delay, |action| {
                toxic_end(link, action)
            })
            .await;
        if !self.writer_shut
            && write_all(&link.writer, &frame, &link.conn, link.stream)
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

    /// While closing: look for the reader's close reply, drop everything else.
    pub(super) fn process_closing(
        &mut self,
        buf: &mut BytesMut,
        max_frame_bytes: u64,
    ) -> Result<(), End> {
        let mut codec = FrameCodec { max_frame_bytes };
        loop {
            match codec.decode(buf) {
                Ok(Some(frame)) => {
                    if frame.header.opcode == Opcode::Close {
                        self.mode = Mode::Done;
                        buf.clear();
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(_) => {
                    buf.clear();
                    return Err(End::Closed);
                }
            }
        }
    }

    /// Ends the link: pass on FIN or RST, drain, tell the other link. The
    /// read buffer goes back to the pool.
    pub(super) async fn finish(&mut self, end: End, link: &Link, buf: &mut BytesMut) {
        let conn = &link.conn;
        match end {
            End::Eof | End::PeerGone | End::Closed => {
                shutdown_write(&link.writer);
            }
            End::Reset => {
                let _ = link.writer.set_zero_linger();
                let _ = link.reader.set_zero_linger();
                conn.cut(CutMode::Reset);
            }
            End::Cut(CutMode::Reset) => {
                let _ = link.writer.set_zero_linger();
                let _ = link.reader.set_zero_linger();
            }
            End::Cut(CutMode::Fin) => {
                shutdown_write(&link.writer);
                shutdown_write(&link.reader);
                // Drain so that close() does not turn the FIN into a RST.
                let mut sink = pool::take(READ_CHUNK);
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    loop {
                        sink.clear();
                        match read_some(&link.reader, &mut sink).await {
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
                let mut sink = pool::take(READ_CHUNK);
                loop {
                    sink.clear();
                    tokio::select! {
                        r = read_some(&link.reader, &mut sink) => match r {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        },
                        _ = conn.wait(link.stream) => match conn.take(link.stream) {
                            Some(LinkCommand::Cut(CutMode::Reset)) => {
                                let _ = link.writer.set_zero_linger();
                                let _ = link.reader.set_zero_linger();
                                break;
                            }
                            Some(LinkCommand::Cut(CutMode::Fin)) => break,
                            _ => {}
                        }
                    }
                }
                pool::give(sink);
                // The sender left: let the other side go too.
                shutdown_write(&link.writer);
                conn.post(link.other(), LinkCommand::Cut(CutMode::Fin));
            }
        }
        self.writer_shut = true;
        if !buf.is_empty() || buf.capacity() > 0 {
            pool::give(std::mem::take(buf));
        }
        self.mode = Mode::Done;
        tracing::debug!(
            conn_id = conn.id,
            stream = link.stream.label(),
            ?end,
            "link ended"
        );
        // Tell the other link; it gets a grace period to finish.
        conn.peer_done(link.other());
    }
}

/// The proxy's own close for a frame that broke the protocol or a limit:
/// `violation.code` to the sender of this stream once it has answered,
/// 1001 to the other side at once (through both links' mailboxes). The
/// link goes on until the handshake is over.
pub(super) fn protocol_close(link: &Link, violation: Violation) {
    let metrics = &link.proxy.metrics;
    metrics.close(violation.code, CloseBy::Proxy);
    metrics.close(1001, CloseBy::Proxy);
    tracing::info!(
        conn_id = link.conn.id,
        proxy = %link.proxy.name,
        stream = link.stream.label(),
        code = violation.code,
        reason = violation.reason,
        "closing connection"
    );
    link.conn
        .fail_from(link.stream, violation.code, violation.reason);
}

/// A toxic's end, released from the held queue: a cut of both links, or
/// close frames to both sides (then [`End::Closed`]: the link goes on until
/// the handshake is over).
pub(super) fn toxic_end(link: &Link, action: EndAction) -> End {
    match action {
        EndAction::Cut(mode) => {
            link.conn.cut(mode);
            End::Cut(mode)
        }
        EndAction::Close {
            to_receiver,
            to_sender,
        } => {
            let metrics = &link.proxy.metrics;
            metrics.close(to_receiver.code, CloseBy::Toxic);
            metrics.close(to_sender.code, CloseBy::Toxic);
            let (to_client, to_server) = match link.stream {
                StreamDir::Downstream => (to_receiver, to_sender),
                StreamDir::Upstream => (to_sender, to_receiver),
            };
            link.conn.close_both(
                (to_client.code, &to_client.reason),
                (to_server.code, &to_server.reason),
            );
            End::Closed
        }
    }
}
