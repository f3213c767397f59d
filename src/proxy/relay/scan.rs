//! The relay's one frame scan: the loop over the frame headers of a read
//! buffer, used by both paths of a link.
//!
//! For each header it checks, in this order: well-formed, payload within
//! `max_frame_bytes`, the whole frame read (else it reserves room for it
//! and stops), masked when the client sent it, the message within
//! `max_message_bytes`; then it stops at a close frame while the proxy
//! waits for the peer's close reply, and counts the frame (its close code
//! too). The pass-through path leaves the frames in the buffer and writes
//! the scanned prefix in one go ([`FrameScan::in_place`], no allocation);
//! the toxic path has each frame split off the buffer and handed to it
//! ([`FrameScan::taking`]). The scan only reports a violation; the caller
//! starts the proxy's close.

use std::sync::atomic::Ordering;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::BytesMut;

use super::link::Link;
use crate::frame::{close_code_of, parse_header, Frame, FrameHeader, Opcode};
use crate::metrics::{CloseBy, ProxyMetrics};
use crate::proxy::ProxySettings;

/// A frame that breaks the protocol or a limit: the proxy closes the
/// connection with `code` to the frame's sender (1001 to the other side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Violation {
    /// The close code for the sender.
    pub code: u16,
    /// The close reason (and log message).
    pub reason: &'static str,
}

const MALFORMED: Violation = Violation {
    code: 1002,
    reason: "malformed frame",
};
const FRAME_TOO_BIG: Violation = Violation {
    code: 1009,
    reason: "frame too big",
};
const UNMASKED: Violation = Violation {
    code: 1002,
    reason: "unmasked client frame",
};
const MESSAGE_TOO_BIG: Violation = Violation {
    code: 1009,
    reason: "message too big",
};

/// Why a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// The buffer holds no further complete frame.
    NeedMore,
    /// A close frame arrived while the proxy waits for the peer's reply to
    /// its own close: it and what follows are left in the buffer, uncounted.
    CloseReply,
    /// A frame broke the protocol or a limit; it and what follows are left
    /// in the buffer, uncounted.
    Violation(Violation),
}

/// The outcome of one scan.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scanned {
    /// Bytes of whole frames scanned and left at the front of the buffer
    /// ([`FrameScan::in_place`]; always 0 for [`FrameScan::taking`]).
    pub end: usize,
    /// Why the scan stopped.
    pub stop: Stop,
}

/// What one batch's frames are checked against and reported to.
pub(super) struct ScanCx<'a> {
    settings: &'a ArcSwap<ProxySettings>,
    must_be_masked: bool,
    stop_at_close: bool,
    metrics: &'a ProxyMetrics,
    sender: CloseBy,
}

impl<'a> ScanCx<'a> {
    /// The context of `link`'s reads; `stop_at_close` while the proxy waits
    /// for the reader's close reply (a deferred close is pending).
    #[inline]
    pub(super) fn new(link: &'a Link, stop_at_close: bool) -> ScanCx<'a> {
        ScanCx {
            settings: &link.proxy.settings,
            must_be_masked: link.to_server(),
            stop_at_close,
            metrics: &link.proxy.metrics,
            sender: link.sender_label(),
        }
    }
}

/// What a batch's frames add to the metrics, counted during the scan and
/// added once per batch ([`Tally::account`]).
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Frames per opcode, indexed by [`Opcode::index`].
    frames: [u64; 6],
    /// Data frames with FIN (whole messages), by `MESSAGE_KINDS` slot.
    messages: [u64; 5],
    /// The slot messages are counted in until [`Tally::reclassify`].
    slot: usize,
    /// Wire bytes.
    bytes: u64,
    /// Whether a data frame was among them (the activity clock's `data`).
    data: bool,
}

impl Tally {
    #[inline]
    fn count(&mut self, header: &FrameHeader, wire_len: usize) {
        self.frames[header.opcode.index()] += 1;
        self.bytes += wire_len as u64;
        if header.opcode.is_data() {
            self.data = true;
            if header.fin {
                self.messages[self.slot] += 1;
            }
        }
    }

    /// A tally whose messages count as `slot` of `MESSAGE_KINDS` (data on
    /// a plain connection, unclassified under an application profile).
    pub(super) fn new(slot: usize) -> Tally {
        Tally {
            slot,
            ..Tally::default()
        }
    }

    /// Moves messages the link classified from the default slot to their
    /// kinds (`kinds[i]`: messages of `Kind::ALL[i]`).
    pub(super) fn reclassify(&mut self, kinds: &[u64; 4]) {
        for (i, n) in kinds.iter().enumerate() {
            let moved = (*n).min(self.messages[self.slot]);
            self.messages[self.slot] -= moved;
            self.messages[i] += moved;
        }
    }

    /// Whether no frame was counted.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Frames counted.
    #[inline]
    pub(super) fn frame_count(&self) -> u64 {
        self.frames.iter().sum()
    }

    /// Adds the counts to the proxy's pre-resolved metrics, the
    /// connection's counters and its activity clock.
    pub(super) fn account(&self, link: &Link, now: Instant) {
        let m = &link.proxy.metrics.streams[link.stream.index()];
        let mut total = 0;
        for (i, n) in self.frames.iter().enumerate() {
            if *n > 0 {
                m.frames[i].inc_by(*n);
                total += n;
            }
        }
        for (counter, n) in m.messages.iter().zip(self.messages) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        m.bytes.inc_by(self.bytes);
        let counters = &link.conn.counters[link.stream.index()];
        counters.frames.fetch_add(total, Ordering::Relaxed);
        counters.bytes.fetch_add(self.bytes, Ordering::Relaxed);
        link.conn.activity.touch(now, self.data);
    }
}

/// A link's scanning state between batches: the frame limit and where the
/// current data message stands.
#[derive(Debug)]
pub(super) struct FrameScan {
    /// Largest payload accepted in one frame (from the settings at the last
    /// toxic refresh).
    pub max_frame_bytes: u64,
    /// Inside a fragmented data message.
    in_message: bool,
    /// Payload bytes of the current data message so far.
    message_bytes: u64,
}

impl FrameScan {
    /// A scan outside any message.
    pub(super) fn new(max_frame_bytes: u64) -> FrameScan {
        FrameScan {
            max_frame_bytes,
            in_message: false,
            message_bytes: 0,
        }
    }

    /// Whether the last frame scanned left a fragmented data message open.
    #[inline]
    pub(super) fn in_message(&self) -> bool {
        self.in_message
    }

    /// Scans the whole frames at the front of `buf` and leaves them there:
    /// `buf[..end]` is ready to be written verbatim.
    #[inline]
    pub(super) fn in_place(
        &mut self,
        buf: &mut BytesMut,
        cx: &ScanCx<'_>,
        tally: &mut Tally,
    ) -> Scanned {
        self.scan(buf, cx, tally, None::<fn(Frame, &mut FrameScan)>)
    }

    /// Scans the whole frames at the front of `buf`, splitting each off and
    /// handing it to `take` (with this scan, whose frame limit `take` may
    /// change between messages).
    #[inline]
    pub(super) fn taking(
        &mut self,
        buf: &mut BytesMut,
        cx: &ScanCx<'_>,
        tally: &mut Tally,
        take: impl FnMut(Frame, &mut FrameScan),
    ) -> Scanned {
        self.scan(buf, cx, tally, Some(take))
    }

    /// The frame-header loop, the relay's only one.
    #[inline]
    fn scan<F: FnMut(Frame, &mut FrameScan)>(
        &mut self,
        buf: &mut BytesMut,
        cx: &ScanCx<'_>,
        tally: &mut Tally,
        mut take: Option<F>,
    ) -> Scanned {
        // Stays 0 when frames are taken: each is split off the front.
        let mut offset = 0usize;
        let stop = loop {
            let header = match parse_header(&buf[offset..]) {
                Ok(Some(h)) => h,
                Ok(None) => break Stop::NeedMore,
                Err(_) => break Stop::Violation(MALFORMED),
            };
            if header.payload_len > self.max_frame_bytes {
                break Stop::Violation(FRAME_TOO_BIG);
            }
            let total = header.wire_len() as usize;
            let available = buf.len() - offset;
            if available < total {
                buf.reserve(total - available);
                break Stop::NeedMore;
            }
            if let Err(violation) = self.check_header(&header, cx) {
                break Stop::Violation(violation);
            }
            if header.opcode == Opcode::Close && cx.stop_at_close {
                break Stop::CloseReply;
            }
            tally.count(&header, total);
            if header.opcode == Opcode::Close {
                let payload = &buf[offset + header.header_len..offset + total];
                cx.metrics
                    .close(close_code_of(payload, header.mask), cx.sender);
            }
            match take.as_mut() {
                None => offset += total,
                Some(take) => match Frame::split_from(header, buf) {
                    Some(frame) => take(frame, self),
                    // Not reached: the whole frame is in the buffer.
                    None => break Stop::NeedMore,
                },
            }
        };
        Scanned { end: offset, stop }
    }

    /// Checks one header against the masking rule, the message limit and
    /// the message state, and moves the message state on.
    #[inline]
    fn check_header(&mut self, header: &FrameHeader, cx: &ScanCx<'_>) -> Result<(), Violation> {
        let settings = cx.settings.load();
        if cx.must_be_masked && header.mask.is_none() {
            return Err(UNMASKED);
        }
        if header.opcode.is_data() {
            let starts = header.opcode != Opcode::Continuation;
            if starts {
                self.message_bytes = 0;
            }
            self.message_bytes += header.payload_len;
            if self.message_bytes > settings.max_message_bytes {
                return Err(MESSAGE_TOO_BIG);
            }
            self.in_message = !header.fin;
        }
        Ok(())
    }
}
