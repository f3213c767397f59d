//! Per-connection shared state: the two links' mailboxes, the activity
//! clock (for `idle_timeout`), live counters for the connections endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use crate::protocols::{Profile, ProfileSlot};
pub use crate::vocab::Activity;
use crate::vocab::{CutMode, StreamDir};

/// A request to one link, from the other link, a toxic, the admin API or shutdown.
#[derive(Debug, Clone)]
pub enum LinkCommand {
    /// Write this close frame (already encoded, masked as needed) to the
    /// link's writer, then wait for the closing handshake.
    Close(Bytes),
    /// Keep relaying until the reader's side closes (or a second passes),
    /// then write this close frame instead of forwarding that side's close.
    /// Used when the other side sent a malformed frame: its earlier messages
    /// still get their answers before it is told 1002.
    CloseAfterPeer(Bytes),
    /// End the connection without a close frame.
    Cut(CutMode),
}

/// Traffic counters of one stream, for `GET /proxies/{p}/connections`.
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Frames read.
    pub frames: AtomicU64,
    /// Wire bytes read.
    pub bytes: AtomicU64,
}

/// State shared by the two links of one connection and the registry.
#[derive(Debug)]
pub struct ConnShared {
    /// Ordinal within the proxy (order of acceptance, from 0); also the id.
    pub id: u64,
    /// The client's address.
    pub client: SocketAddr,
    /// Request path and query.
    pub path: String,
    /// Negotiated subprotocol.
    pub subprotocol: Option<String>,
    /// The application protocol profile (decided at the handshake, or on
    /// the first client message).
    pub profile: ProfileSlot,
    /// When the upgrade completed.
    pub opened_at: Instant,
    /// Activity clock.
    pub activity: Activity,
    /// Per stream counters, indexed by [`StreamDir::index`].
    pub counters: [StreamCounters; 2],
    mailbox: [Mutex<Option<LinkCommand>>; 2],
    /// `has_mail[i]`: a command may be waiting in `mailbox[i]` (checked
    /// without the lock on every turn of the relay loop).
    has_mail: [AtomicBool; 2],
    signal: [LinkSignal; 2],
    /// Set once the connection is closing (no second close is started).
    closing: AtomicBool,
    /// `peer_gone[i]`: the link other than `i` has ended.
    peer_gone: [AtomicBool; 2],
}

impl ConnShared {
    /// New shared state.
    pub fn new(
        id: u64,
        client: SocketAddr,
        path: String,
        subprotocol: Option<String>,
        profile: Option<&'static dyn Profile>,
    ) -> ConnShared {
        let opened_at = Instant::now();
        ConnShared {
            id,
            client,
            path,
            subprotocol,
            profile: ProfileSlot::new(profile),
            opened_at,
            activity: Activity::new(opened_at),
            counters: Default::default(),
            mailbox: Default::default(),
            has_mail: Default::default(),
            signal: Default::default(),
            closing: AtomicBool::new(false),
            peer_gone: Default::default(),
        }
    }

    /// Posts a command to the link of `stream` (the last one wins, but a
    /// `Cut` is never replaced by a `Close`).
    pub fn post(&self, stream: StreamDir, command: LinkCommand) {
        let i = stream.index();
        if let Ok(mut slot) = self.mailbox[i].lock() {
            if !matches!(*slot, Some(LinkCommand::Cut(_))) {
                *slot = Some(command);
            }
        }
        self.has_mail[i].store(true, Ordering::Release);
        self.signal[i].raise();
    }

    /// Takes the pending command of the link of `stream`.
    pub fn take(&self, stream: StreamDir) -> Option<LinkCommand> {
        let i = stream.index();
        // A plain load first: the common case (no mail) writes nothing.
        if !self.has_mail[i].load(Ordering::Acquire)
            || !self.has_mail[i].swap(false, Ordering::AcqRel)
        {
            return None;
        }
        self.mailbox[i].lock().ok()?.take()
    }

    /// Waits until a command is posted for the link of `stream`.
    /// A raise that came while the link was busy is kept, so the next wait
    /// returns at once (like a `Notify` permit).
    pub async fn wait(&self, stream: StreamDir) {
        let signal = &self.signal[stream.index()];
        std::future::poll_fn(|cx| signal.poll_wait(cx)).await;
    }

    /// Wakes both links so that they look at the proxy's settings again
    /// (toxics added, changed or removed).
    pub fn wake_links(&self) {
        for signal in &self.signal {
            signal.raise();
        }
    }

    /// Whether a cut is waiting in the mailbox of the link of `stream`.
    pub fn is_cut_pending(&self, stream: StreamDir) -> bool {
        self.mailbox[stream.index()]
            .lock()
            .map(|slot| matches!(*slot, Some(LinkCommand::Cut(_))))
            .unwrap_or(false)
    }

    /// Tells the link of `stream` that its peer link has ended.
    pub fn peer_done(&self, stream: StreamDir) {
        self.peer_gone[stream.index()].store(true, Ordering::Release);
        self.signal[stream.index()].raise();
    }

    /// Whether the peer of the link of `stream` has ended.
    pub fn peer_gone(&self, stream: StreamDir) -> bool {
        self.peer_gone[stream.index()].load(Ordering::Acquire)
    }

    /// Marks the connection as closing; false if it already was.
    pub fn start_closing(&self) -> bool {
        !self.closing.swap(true, Ordering::AcqRel)
    }

    /// Cuts both links without a close frame.
    pub fn cut(&self, mode: CutMode) {
        self.closing.store(true, Ordering::Release);
        self.post(StreamDir::Upstream, LinkCommand::Cut(mode));
        self.post(StreamDir::Downstream, LinkCommand::Cut(mode));
    }

    /// Fails the connection because `sender` broke the protocol: 1001 to the
    /// peer at once, `code` to the sender once the peer has answered (see
    /// [`LinkCommand::CloseAfterPeer`]).
    pub fn fail_from(&self, sender: StreamDir, code: u16, reason: &str) -> bool {
        if !self.start_closing() {
            return false;
        }
        let encode = |f: crate::frame::Frame| {
            let mut buf = bytes::BytesMut::new();
            f.encode(&mut buf);
            buf.freeze()
        };
        let (peer_mask, sender_mask) = match sender {
            StreamDir::Upstream => (Some(rand::random()), None),
            StreamDir::Downstream => (None, Some(rand::random())),
        };
        let other = match sender {
            StreamDir::Upstream => StreamDir::Downstream,
            StreamDir::Downstream => StreamDir::Upstream,
        };
        let to_peer = crate::frame::Frame::close(1001, "going away", peer_mask);
        let to_sender = crate::frame::Frame::close(code, reason, sender_mask);
        self.post(sender, LinkCommand::Close(encode(to_peer)));
        self.post(other, LinkCommand::CloseAfterPeer(encode(to_sender)));
        true
    }

    /// Sends close frames to both sides: `to_client` through the downstream
    /// link, `to_server` (masked) through the upstream link.
    pub fn close_both(&self, to_client: (u16, &str), to_server: (u16, &str)) -> bool {
        if !self.start_closing() {
            return false;
        }
        let client_frame = crate::frame::Frame::close(to_client.0, to_client.1, None);
        let server_frame =
            crate::frame::Frame::close(to_server.0, to_server.1, Some(rand::random()));
        let encode = |f: crate::frame::Frame| {
            let mut buf = bytes::BytesMut::new();
            f.encode(&mut buf);
            buf.freeze()
        };
        self.post(
            StreamDir::Downstream,
            LinkCommand::Close(encode(client_frame)),
        );
        self.post(
            StreamDir::Upstream,
            LinkCommand::Close(encode(server_frame)),
        );
        true
    }
}

/// Wakes one link's task: a flag plus that task's waker. Each link runs in
/// a task of its own, so one waker slot is enough, and waiting costs a few
/// atomic operations (a `tokio::sync::Notify` locks a waiter list each time
/// a waiting future is created or dropped: on every turn of the relay loop).
#[derive(Debug, Default)]
struct LinkSignal {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl LinkSignal {
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn poll_wait(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.raised.load(Ordering::Acquire) && self.raised.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.raised.swap(false, Ordering::AcqRel) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}
