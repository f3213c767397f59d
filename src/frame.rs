//! The WebSocket frame codec of the relay (RFC 6455 §5.2).
//!
//! The proxy forwards frames verbatim, so this codec keeps every header bit
//! as it came (FIN, RSV1-3, opcode, mask key) and leaves masked payloads
//! masked. Only frames the proxy builds itself are encoded from parts.
//! [`parse_header`] is the zero-copy scanner used on the pass-through path;
//! [`FrameCodec`] is the `tokio_util` codec used when toxics need owned frames.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest header: 2 bytes + 8 bytes of extended length + 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// A frame opcode (RFC 6455 §5.2). Reserved opcodes are a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// 0x0: continues a fragmented data message.
    Continuation,
    /// 0x1: a UTF-8 text message (or its first fragment).
    Text,
    /// 0x2: a binary message (or its first fragment).
    Binary,
    /// 0x8: connection close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl Opcode {
    /// All opcodes, in the order used by per-opcode metric arrays.
    pub const ALL: [Opcode; 6] = [
        Opcode::Text,
        Opcode::Binary,
        Opcode::Continuation,
        Opcode::Ping,
        Opcode::Pong,
        Opcode::Close,
    ];

    /// Decodes the 4-bit opcode field.
    pub fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    /// The 4-bit opcode field.
    pub fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Control frames: close, ping, pong.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }

    /// Data frames: text, binary, continuation.
    pub fn is_data(self) -> bool {
        !self.is_control()
    }

    /// Index into [`Opcode::ALL`] (for metric arrays).
    pub fn index(self) -> usize {
        match self {
            Opcode::Text => 0,
            Opcode::Binary => 1,
            Opcode::Continuation => 2,
            Opcode::Ping => 3,
            Opcode::Pong => 4,
            Opcode::Close => 5,
        }
    }

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Opcode::Text => "text",
            Opcode::Binary => "binary",
            Opcode::Continuation => "continuation",
            Opcode::Ping => "ping",
            Opcode::Pong => "pong",
            Opcode::Close => "close",
        }
    }
}

/// Why a frame header is malformed. Each maps to close code 1002.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Opcode 3-7 or 0xB-0xF.
    #[error("reserved opcode {0:#x}")]
    BadOpcode(u8),
    /// Control frame with more than 125 payload bytes.
    #[error("control frame with {0} payload bytes (at most 125)")]
    ControlTooLong(u64),
    /// Control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// 64-bit length with the most significant bit set.
    #[error("invalid payload length")]
    BadLength,
}

/// A parsed frame header, exactly as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits (RSV1 = 0b100).
    pub rsv: u8,
    /// The opcode.
    pub opcode: Opcode,
    /// The masking key, when the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// Length of the header on the wire (2..=14).
    pub header_len: usize,
}

impl FrameHeader {
    /// Header plus payload length on the wire.
    pub fn wire_len(&self) -> u64 {
        self.header_len as u64 + self.payload_len
    }

    /// Whether RSV1 is set (per-message compression, when negotiated).
    pub fn rsv1(&self) -> bool {
        self.rsv & 0b100 != 0
    }

    /// Encodes this header into `out`, choosing the shortest length form.
    pub fn encode(&self, out: &mut impl BufMut) {
        let b0 = (u8::from(self.fin) << 7) | ((self.rsv & 0b111) << 4) | self.opcode.bits();
        out.put_u8(b0);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        if self.payload_len < 126 {
            out.put_u8(mask_bit | self.payload_len as u8);
        } else if self.payload_len <= u64::from(u16::MAX) {
            out.put_u8(mask_bit | 126);
            out.put_u16(self.payload_len as u16);
        } else {
            out.put_u8(mask_bit | 127);
            out.put_u64(self.payload_len);
        }
        if let Some(key) = self.mask {
            out.put_slice(&key);
        }
    }

    /// The encoded length of [`FrameHeader::encode`]'s output.
    pub fn encoded_len(payload_len: u64, masked: bool) -> usize {
        let len = if payload_len < 126 {
            2
        } else if payload_len <= u64::from(u16::MAX) {
            4
        } else {
            10
        };
        len + if masked { 4 } else { 0 }
    }
}

/// Parses one frame header at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. Does not look at the payload.
pub fn parse_header(buf: &[u8]) -> Result<Option<FrameHeader>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let fin = b0 & 0x80 != 0;
    let rsv = (b0 >> 4) & 0b111;
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(FrameError::BadOpcode(b0 & 0x0F))?;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    let (payload_len, mut pos) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(raw);
            if len >> 63 != 0 {
                return Err(FrameError::BadLength);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() {
        if payload_len > 125 {
            return Err(FrameError::ControlTooLong(payload_len));
        }
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
    }
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let key = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(key)
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        rsv,
        opcode,
        mask,
        payload_len,
        header_len: pos,
    }))
}

/// XORs `data` with the masking key, starting `offset` bytes into the key stream.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[(offset + i) & 3];
    }
}

/// One whole frame: its header and its payload as on the wire (still masked
/// when the header carries a mask key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header as received (or as built).
    pub header: FrameHeader,
    /// The payload bytes as on the wire.
    pub payload: Bytes,
}

impl Frame {
    /// Builds a new frame; masks the payload with `mask` when given.
    pub fn build(fin: bool, rsv: u8, opcode: Opcode, plain: &[u8], mask: Option<[u8; 4]>) -> Frame {
        let mut payload = BytesMut::from(plain);
        if let Some(key) = mask {
            apply_mask(&mut payload, key, 0);
        }
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: plain.len() as u64,
            header_len: FrameHeader::encoded_len(plain.len() as u64, mask.is_some()),
        };
        Frame {
            header,
            payload: payload.freeze(),
        }
    }

    /// A close frame with `code` and `reason` (reason cut to fit 125 bytes).
    pub fn close(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Frame {
        let mut body = Vec::with_capacity(2 + reason.len());
        body.extend_from_slice(&code.to_be_bytes());
        let mut cut = reason.len().min(123);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        body.extend_from_slice(&reason.as_bytes()[..cut]);
        Frame::build(true, 0, Opcode::Close, &body, mask)
    }

    /// The payload with the mask removed.
    pub fn plain_payload(&self) -> Bytes {
        match self.header.mask {
            None => self.payload.clone(),
            Some(key) => {
                let mut data = BytesMut::from(&self.payload[..]);
                apply_mask(&mut data, key, 0);
                data.freeze()
            }
        }
    }

    /// Re-masks (or unmasks, with `None`) the frame under a new key.
    pub fn with_mask(&self, mask: Option<[u8; 4]>) -> Frame {
        let plain = self.plain_payload();
        Frame::build(
            self.header.fin,
            self.header.rsv,
            self.header.opcode,
            &plain,
            mask,
        )
    }

    /// Bytes on the wire: header plus payload.
    pub fn wire_len(&self) -> usize {
        self.header.header_len + self.payload.len()
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.wire_len());
        self.header.encode(out);
        out.extend_from_slice(&self.payload);
    }

    /// The close code carried by a close frame (1005 when it has none).
    pub fn close_code(&self) -> u16 {
        close_code_of(&self.payload, self.header.mask)
    }

    /// Takes the frame whose already parsed `header` starts `src` off the
    /// front of `src`; `None` (and `src` untouched) when `src` holds less
    /// than the whole frame. Payloads below 4 KiB are copied out: a
    /// split-off `Bytes` would keep the whole read buffer (32 KiB) alive for
    /// as long as a toxic holds the frame, and the next read would allocate
    /// a new one. Longer payloads share the buffer.
    pub fn split_from(header: FrameHeader, src: &mut BytesMut) -> Option<Frame> {
        if (src.len() as u64) < header.wire_len() {
            return None;
        }
        src.advance(header.header_len);
        let len = header.payload_len as usize;
        let payload = if len < COPY_PAYLOADS_BELOW {
            let payload = Bytes::copy_from_slice(&src[..len]);
            src.advance(len);
            payload
        } else {
            src.split_to(len).freeze()
        };
        Some(Frame { header, payload })
    }
}

/// Reads the close code from a (possibly masked) close payload; 1005 if absent.
pub fn close_code_of(payload: &[u8], mask: Option<[u8; 4]>) -> u16 {
    if payload.len() < 2 {
        return 1005;
    }
    let mut code = [payload[0], payload[1]];
    if let Some(key) = mask {
        apply_mask(&mut code, key, 0);
    }
    u16::from_be_bytes(code)
}

/// A `tokio_util` codec of verbatim frames, bounded by `max_frame_bytes`.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    /// Largest payload accepted in one frame.
    pub max_frame_bytes: u64,
}

/// Errors of [`FrameCodec`].
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A malformed header (close 1002).
    #[error("malformed frame: {0}")]
    Malformed(#[from] FrameError),
    /// A frame larger than the limit (close 1009).
    #[error("frame of {len} payload bytes exceeds max_frame_bytes {max}")]
    TooBig {
        /// The frame's payload length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Payloads shorter than this are copied out of the read buffer when
/// decoded; longer ones share it.
const COPY_PAYLOADS_BELOW: usize = 4096;

impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let Some(header) = parse_header(src)? else {
            return Ok(None);
        };
        if header.payload_len > self.max_frame_bytes {
            return Err(CodecError::TooBig {
                len: header.payload_len,
                max: self.max_frame_bytes,
            });
        }
        let total = header.wire_len() as usize;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        Ok(Frame::split_from(header, src))
    }
}

impl tokio_util::codec::Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        frame.encode(dst);
        Ok(())
    }
}

/// The fuzz target's body: decodes every frame of `data` and checks that
/// each re-encodes to the exact bytes it was read from. Never panics on any
/// input unless the codec is wrong (used by `fuzz/` and the corpus test).
pub fn fuzz_decode(data: &[u8]) {
    use tokio_util::codec::Decoder;
    let mut codec = FrameCodec {
        max_frame_bytes: 1 << 20,
    };
    let mut buf = BytesMut::from(data);
    let mut offset = 0usize;
    loop {
        let before = buf.len();
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => {
                let used = before - buf.len();
                let mut wire = BytesMut::new();
                frame.encode(&mut wire);
                let original = &data[offset..offset + used];
                // Re-encoding picks the shortest length form; compare semantically
                // when the sender used a longer one.
                if wire[..] != original[..] {
                    let reparsed = parse_header(original)
                        .ok()
                        .flatten()
                        .map(|h| (h.fin, h.rsv, h.opcode, h.mask, h.payload_len));
                    let header = frame.header;
                    assert_eq!(
                        reparsed,
                        Some((
                            header.fin,
                            header.rsv,
                            header.opcode,
                            header.mask,
                            header.payload_len
                        ))
                    );
                    assert_eq!(&original[header.header_len..], &frame.payload[..]);
                }
                assert_eq!(frame.plain_payload().len() as u64, frame.header.payload_len);
                offset += used;
            }
            Ok(None) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::Decoder;

    #[test]
    fn round_trip_keeps_every_bit() {
        for len in [0usize, 1, 125, 126, 65535, 65536] {
            let data = vec![7u8; len];
            let frame = Frame::build(false, 0b101, Opcode::Binary, &data, Some([1, 2, 3, 4]));
            let mut wire = BytesMut::new();
            frame.encode(&mut wire);
            assert_eq!(wire.len(), frame.wire_len());
            let mut codec = FrameCodec {
                max_frame_bytes: 1 << 20,
            };
            let decoded = codec.decode(&mut wire).expect("valid").expect("complete");
            assert_eq!(decoded, frame);
            assert_eq!(&decoded.plain_payload()[..], &data[..]);
        }
    }

    #[test]
    fn small_payloads_do_not_share_the_read_buffer() {
        // A held small frame must not keep the whole read buffer alive.
        for (len, shares) in [(64usize, false), (COPY_PAYLOADS_BELOW, true)] {
            let frame = Frame::build(true, 0, Opcode::Binary, &vec![1u8; len], None);
            let mut wire = BytesMut::with_capacity(64 * 1024);
            frame.encode(&mut wire);
            let start = wire.as_ptr() as usize;
            let range = start..start + wire.capacity();
            let mut codec = FrameCodec {
                max_frame_bytes: 1 << 20,
            };
            let decoded = codec.decode(&mut wire).expect("valid").expect("complete");
            assert_eq!(decoded, frame);
            assert_eq!(
                range.contains(&(decoded.payload.as_ptr() as usize)),
                shares,
                "{len}-byte payload"
            );
        }
    }

    #[test]
    fn split_from_takes_one_whole_frame_or_nothing() {
        let first = Frame::build(true, 0, Opcode::Text, b"one", Some([1, 2, 3, 4]));
        let second = Frame::build(true, 0, Opcode::Binary, &[7u8; 300], None);
        let mut wire = BytesMut::new();
        first.encode(&mut wire);
        second.encode(&mut wire);
        let header = parse_header(&wire).expect("valid").expect("complete");
        assert_eq!(Frame::split_from(header, &mut wire), Some(first));
        let header = parse_header(&wire).expect("valid").expect("complete");
        let mut short = BytesMut::from(&wire[..wire.len() - 1]);
        assert_eq!(Frame::split_from(header, &mut short), None);
        assert_eq!(short.len(), wire.len() - 1, "a short buffer is left as is");
        assert_eq!(Frame::split_from(header, &mut wire), Some(second));
        assert!(wire.is_empty());
    }

    #[test]
    fn rejects_malformed_headers() {
        assert_eq!(parse_header(&[0x83, 0]), Err(FrameError::BadOpcode(3)));
        assert_eq!(parse_header(&[0x09, 0]), Err(FrameError::FragmentedControl));
        assert_eq!(
            parse_header(&[0x89, 126, 0, 200]),
            Err(FrameError::ControlTooLong(200))
        );
        let mut long = vec![0x82, 127];
        long.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse_header(&long), Err(FrameError::BadLength));
        assert_eq!(parse_header(&[0x82]), Ok(None));
        assert_eq!(parse_header(&[0x82, 0x80, 1]), Ok(None));
    }

    #[test]
    fn close_code_is_read_through_the_mask() {
        let frame = Frame::close(4001, "bye", Some([9, 8, 7, 6]));
        assert_eq!(frame.close_code(), 4001);
        assert_eq!(
            Frame::build(true, 0, Opcode::Close, &[], None).close_code(),
            1005
        );
    }
}
