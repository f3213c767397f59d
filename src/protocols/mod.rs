//! Protocol profiles: what an application protocol on top of WebSocket calls
//! its heartbeats, handshakes, closes and data, so that a toxic's
//! `match.message.kind` means the same thing under Socket.IO, GraphQL over
//! WebSocket, STOMP, SignalR, Phoenix or plain WebSocket
//! (docs/reference.md#protocol-profiles).
//!
//! One file per profile and one line in [`PROFILES`]: a profile claims a
//! connection from its handshake (path, subprotocol) or from the first
//! client message, and sorts a message into a [`Kind`] from its first frame.
//! Classification is pure and lazy: the relay asks for a kind only when a
//! toxic on the stream matches on kinds, so other connections never look at
//! payloads.

mod graphql_ws;
mod none;
mod phoenix;
mod signalr;
mod socketio;
mod stomp;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::frame::Opcode;

/// What a message is for, the same words under every profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Application payload.
    Data,
    /// Keep-alive traffic (WebSocket ping/pong, Engine.IO `2`/`3`, …).
    Heartbeat,
    /// Session set-up (Socket.IO `0{…}`/`40`, `connection_init`, `CONNECT`, …).
    Handshake,
    /// Session tear-down (WebSocket close, `41`, `DISCONNECT`, …).
    Close,
}

impl Kind {
    /// Every kind, in metric-label order.
    pub const ALL: [Kind; 4] = [Kind::Data, Kind::Heartbeat, Kind::Handshake, Kind::Close];

    /// The label and YAML/JSON value.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Data => "data",
            Kind::Heartbeat => "heartbeat",
            Kind::Handshake => "handshake",
            Kind::Close => "close",
        }
    }

    /// Position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Parses a kind name, with a message naming the valid choices.
    pub fn parse(value: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.label() == value)
            .ok_or_else(|| {
                format!(
                    "invalid kind {value:?}: valid choices are data, heartbeat, handshake, close"
                )
            })
    }
}

impl<'de> Deserialize<'de> for Kind {
    /// Through [`Kind::parse`], so a bad value is reported as
    /// `match.message.kind "ping" is invalid: valid choices are …`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Kind::parse(&text).map_err(|_| {
            serde::de::Error::custom(format!(
                "match.message.kind {text:?} is invalid: valid choices are data, heartbeat, handshake, close"
            ))
        })
    }
}

/// What a profile sees of the upgrade to claim a connection.
#[derive(Debug, Clone, Copy)]
pub struct Handshake<'a> {
    /// Request path and query, as the client sent them.
    pub path_and_query: &'a str,
    /// The subprotocol the server chose (or, before its answer, the
    /// client's first offer).
    pub subprotocol: Option<&'a str>,
}

/// One application protocol. Implementations are unit structs registered in
/// [`PROFILES`].
pub trait Profile: Sync + fmt::Debug {
    /// The name used in config, the API and `/connections`.
    fn name(&self) -> &'static str;

    /// Claims the connection from its upgrade request and answer.
    fn claims_handshake(&self, handshake: &Handshake<'_>) -> bool;

    /// Claims the connection from its first client → server data message
    /// (unmasked first frame), when no profile claimed the handshake.
    fn claims_first_message(&self, _payload: &[u8]) -> bool {
        false
    }

    /// Whether [`Profile::classify`] looks at payloads (false only for
    /// `none`, whose data messages are all data): callers skip unmasking.
    fn reads_payload(&self) -> bool {
        true
    }

    /// The kind of a data message (text or binary) from its first frame's
    /// unmasked payload; `fin` is false when more fragments follow.
    fn classify(&self, opcode: Opcode, payload: &[u8], fin: bool) -> Kind;

    /// What this protocol's own client answers to a server heartbeat
    /// message (Engine.IO `2` → `3`, graphql-ws ping → pong, …), for the
    /// load client's script mode; `None`: no answer.
    fn answer_heartbeat(&self, _server_message: &str) -> Option<&'static str> {
        None
    }

    /// How long the service waits for the answer to its heartbeat, when a
    /// server message announces it (Engine.IO's open packet carries
    /// `pingTimeout`); lets the load client tell the service's heartbeat
    /// timeout from other closes.
    fn heartbeat_timeout(&self, _server_message: &str) -> Option<std::time::Duration> {
        None
    }

    /// A heartbeat this protocol's client sends on its own, and how often
    /// (SignalR every 15 s, Phoenix every 30 s); `None`: it only answers.
    fn client_heartbeat(&self) -> Option<(std::time::Duration, &'static str)> {
        None
    }
}

/// Every profile, by name. One line per profile; `none` last (it claims
/// nothing and classifies every data message as data).
pub const PROFILES: &[&dyn Profile] = &[
    &socketio::SocketIo,
    &graphql_ws::GraphqlWs,
    &stomp::Stomp,
    &signalr::SignalR,
    &phoenix::Phoenix,
    &none::NoProfile,
];

/// The profile that claims nothing (plain WebSocket).
pub const NONE: &dyn Profile = &none::NoProfile;

/// The kind of any frame that starts a message: control frames keep their
/// WebSocket meaning under every profile; data frames ask the profile.
pub fn classify(profile: &dyn Profile, opcode: Opcode, payload: &[u8], fin: bool) -> Kind {
    match opcode {
        Opcode::Ping | Opcode::Pong => Kind::Heartbeat,
        Opcode::Close => Kind::Close,
        Opcode::Text | Opcode::Binary | Opcode::Continuation => {
            profile.classify(opcode, payload, fin)
        }
    }
}

/// Looks a profile up by name.
pub fn by_name(name: &str) -> Option<&'static dyn Profile> {
    PROFILES.iter().copied().find(|p| p.name() == name)
}

/// Profile names for error messages: `auto, none, socketio, …`.
pub fn setting_names() -> String {
    let mut names = vec!["auto"];
    names.push("none");
    names.extend(PROFILES.iter().map(|p| p.name()).filter(|n| *n != "none"));
    names.join(", ")
}

/// Auto-detection at the handshake: the first profile that claims it, or
/// `None` when the first client message must decide.
pub fn detect_handshake(handshake: &Handshake<'_>) -> Option<&'static dyn Profile> {
    PROFILES
        .iter()
        .copied()
        .find(|p| p.claims_handshake(handshake))
}

/// Auto-detection on the first client message, after no profile claimed the
/// handshake: the claiming profile or [`NONE`].
pub fn detect_first_message(payload: &[u8]) -> &'static dyn Profile {
    PROFILES
        .iter()
        .copied()
        .find(|p| p.claims_first_message(payload))
        .unwrap_or(NONE)
}

/// A connection's profile, decided at the handshake or on the first client
/// message; lock-free, read by both links and the admin API.
#[derive(Debug)]
pub struct ProfileSlot(std::sync::atomic::AtomicU8);

impl ProfileSlot {
    const PENDING: u8 = u8::MAX;

    /// A slot holding `profile`, or waiting for the first client message
    /// when `None`.
    pub fn new(profile: Option<&'static dyn Profile>) -> ProfileSlot {
        let slot = ProfileSlot(std::sync::atomic::AtomicU8::new(Self::PENDING));
        if let Some(p) = profile {
            slot.set(p);
        }
        slot
    }

    /// Whether the first client message still has to decide.
    pub fn is_pending(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire) == Self::PENDING
    }

    /// Decides the profile (once; later calls keep the first decision).
    pub fn set(&self, profile: &'static dyn Profile) {
        let index = PROFILES
            .iter()
            .position(|p| p.name() == profile.name())
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(Self::PENDING);
        let _ = self.0.compare_exchange(
            Self::PENDING,
            index,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        );
    }

    /// The profile; [`NONE`] while undecided.
    pub fn get(&self) -> &'static dyn Profile {
        let index = self.0.load(std::sync::atomic::Ordering::Acquire);
        PROFILES.get(usize::from(index)).copied().unwrap_or(NONE)
    }
}

/// Decides a connection's profile at the handshake: the proxy's setting,
/// or auto-detection (`None`: the first client message decides).
pub fn at_handshake(
    setting: ProtocolSetting,
    handshake: &Handshake<'_>,
) -> Option<&'static dyn Profile> {
    match setting {
        ProtocolSetting::Fixed(profile) => Some(profile),
        ProtocolSetting::Auto => detect_handshake(handshake),
    }
}

/// A proxy's `protocol` setting.
#[derive(Debug, Clone, Copy, Default)]
pub enum ProtocolSetting {
    /// Decide per connection (the default).
    #[default]
    Auto,
    /// Always this profile (`none` included).
    Fixed(&'static dyn Profile),
}

impl PartialEq for ProtocolSetting {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl ProtocolSetting {
    /// The setting's name.
    pub fn name(&self) -> &'static str {
        match self {
            ProtocolSetting::Auto => "auto",
            ProtocolSetting::Fixed(p) => p.name(),
        }
    }

    /// Parses `auto` or a profile name, with the valid choices on error.
    pub fn parse(value: &str) -> Result<ProtocolSetting, String> {
        if value == "auto" {
            return Ok(ProtocolSetting::Auto);
        }
        by_name(value).map(ProtocolSetting::Fixed).ok_or_else(|| {
            format!(
                "invalid protocol {value:?}: valid choices are {}",
                setting_names()
            )
        })
    }

    /// Whether this is `auto`.
    pub fn is_auto(&self) -> bool {
        matches!(self, ProtocolSetting::Auto)
    }
}

impl Serialize for ProtocolSetting {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ProtocolSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        ProtocolSetting::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Splits a payload into its first line (without the EOL) — STOMP commands
/// and similar line protocols.
pub(crate) fn first_line(payload: &[u8]) -> &[u8] {
    let end = memchr_byte(b'\n', payload).unwrap_or(payload.len());
    let line = &payload[..end];
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Position of `needle` in `haystack`.
pub(crate) fn memchr_byte(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs<'a>(path: &'a str, sub: Option<&'a str>) -> Handshake<'a> {
        Handshake {
            path_and_query: path,
            subprotocol: sub,
        }
    }

    fn detected(path: &str, sub: Option<&str>) -> Option<&'static str> {
        detect_handshake(&hs(path, sub)).map(|p| p.name())
    }

    #[test]
    fn auto_detection_follows_the_handshake_rules() {
        assert_eq!(
            detected("/graphql", Some("graphql-transport-ws")),
            Some("graphql-ws")
        );
        assert_eq!(detected("/graphql", Some("graphql-ws")), Some("graphql-ws"));
        assert_eq!(detected("/ws", Some("v12.stomp")), Some("stomp"));
        assert_eq!(detected("/ws", Some("v10.stomp")), Some("stomp"));
        assert_eq!(detected("/ws", Some("v11.stomp")), Some("stomp"));
        assert_eq!(
            detected("/socket.io/?EIO=4&transport=websocket", None),
            Some("socketio")
        );
        assert_eq!(detected("/live/websocket?vsn=2.0.0", None), Some("phoenix"));
        assert_eq!(detected("/live/websocket", None), None);
        assert_eq!(detected("/chat", None), None);
        assert_eq!(detected("/chat", Some("chat.v2")), None);
    }

    #[test]
    fn first_message_detects_signalr_or_none() {
        assert_eq!(
            detect_first_message(b"{\"protocol\":\"json\",\"version\":1}\x1e").name(),
            "signalr"
        );
        assert_eq!(
            detect_first_message(b"{\"protocol\":\"json\"}").name(),
            "none"
        );
        assert_eq!(detect_first_message(b"hello").name(), "none");
    }

    #[test]
    fn control_frames_keep_their_kind_under_every_profile() {
        for p in PROFILES {
            assert_eq!(classify(*p, Opcode::Ping, b"2", true), Kind::Heartbeat);
            assert_eq!(classify(*p, Opcode::Pong, b"", true), Kind::Heartbeat);
            assert_eq!(classify(*p, Opcode::Close, b"\x03\xe8", true), Kind::Close);
        }
    }

    #[test]
    fn settings_parse_and_name_the_choices() {
        assert!(ProtocolSetting::parse("auto").is_ok_and(|s| s.is_auto()));
        assert_eq!(
            ProtocolSetting::parse("stomp").map(|s| s.name()),
            Ok("stomp")
        );
        assert_eq!(ProtocolSetting::parse("none").map(|s| s.name()), Ok("none"));
        let err = ProtocolSetting::parse("mqtt").err().unwrap_or_default();
        assert!(
            err.contains("\"mqtt\"")
                && err.contains("auto, none, socketio, graphql-ws, stomp, signalr, phoenix"),
            "{err}"
        );
        let json: ProtocolSetting = serde_json::from_str("\"phoenix\"").expect("valid");
        assert_eq!(serde_json::to_string(&json).expect("json"), "\"phoenix\"");
    }

    #[test]
    fn slot_decides_once() {
        let slot = ProfileSlot::new(None);
        assert!(slot.is_pending());
        assert_eq!(slot.get().name(), "none");
        slot.set(detect_first_message(
            b"{\"protocol\":\"json\",\"version\":1}\x1e",
        ));
        slot.set(NONE);
        assert!(!slot.is_pending());
        assert_eq!(slot.get().name(), "signalr");
        let fixed = ProtocolSetting::parse("stomp").expect("valid");
        let p = at_handshake(fixed, &hs("/socket.io/", None)).map(|p| p.name());
        assert_eq!(p, Some("stomp"));
        let auto = at_handshake(ProtocolSetting::Auto, &hs("/socket.io/?EIO=4", None));
        assert_eq!(auto.map(|p| p.name()), Some("socketio"));
    }

    #[test]
    fn kinds_parse() {
        assert_eq!(Kind::parse("heartbeat"), Ok(Kind::Heartbeat));
        assert!(Kind::parse("ping").is_err_and(|e| e.contains("data, heartbeat")));
    }
}
