//! The wire between `wsfault echo` and `wsfault load`: the resume protocol's
//! JSON messages (docs/reference.md#resume-protocol) and the
//! WebSocket limits both ends apply.
//!
//! One serde enum per direction: [`ClientMsg`] (`hello`, `msg`) and
//! [`ServerMsg`] (`welcome`, `echo`, `error`), internally tagged by `type`,
//! so `{"type":"msg","cseq":3,"body":"…"}` is `ClientMsg::Msg`. Both sides
//! serialize and parse through these types; nothing builds or picks apart
//! the JSON by hand.
//!
//! The echo server and the load client handle thousands of messages a
//! second, so parsing borrows from the frame: the `type` tag and a string
//! [`Body`] are `&str` slices of the received text unless they contain
//! escapes. Only a non-string body (any JSON is allowed) becomes a
//! [`serde_json::Value`].

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest message (payload bytes) the echo server and the load client
/// accept: the proxy's default (`config::DEFAULT_MAX_MESSAGE_BYTES`).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Largest frame (payload bytes) the echo server and the load client
/// accept: the proxy's default (`config::DEFAULT_MAX_FRAME_BYTES`).
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// A message that is not a valid resume-protocol message for its reader.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not JSON, not an object, no `type`, or a field of the wrong type.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A message lacks a field its type needs (`msg` without `cseq`).
    #[error("{kind} without {field}")]
    Missing {
        /// The message type.
        kind: &'static str,
        /// The missing field(s).
        field: &'static str,
    },
    /// A `type` this side does not understand.
    #[error("unknown message type `{0}`")]
    UnknownType(String),
}

/// The `body` of a `msg` / `echo`: any JSON value, passed through unchanged.
///
/// A JSON string without escapes borrows from the received text, so
/// checking or echoing it allocates nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Body<'a> {
    /// A JSON string.
    Text(Cow<'a, str>),
    /// Any other JSON value (number, object, array, boolean, null).
    Json(serde_json::Value),
}

impl Body<'_> {
    /// The string, when the body is a JSON string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Body::Text(s) => Some(s),
            Body::Json(_) => None,
        }
    }
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Body::Text(s) => serializer.serialize_str(s),
            Body::Json(v) => v.serialize(serializer),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Body<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BodyVisitor(PhantomData))
    }
}

struct BodyVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for BodyVisitor<'a> {
    type Value = Body<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Body::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Body::Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Body::Text(Cow::Owned(v)))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Body::Json(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Body::Json(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Body::Json(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Body::Json(v.into()))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Body::Json(serde_json::Value::Null))
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Body::Json(serde_json::Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        serde_json::Value::deserialize(SeqAccessDeserializer::new(seq)).map(Body::Json)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        serde_json::Value::deserialize(MapAccessDeserializer::new(map)).map(Body::Json)
    }
}

/// What the client sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMsg<'a> {
    /// `{"type":"hello","session":"<id>","ack":N}`: join (or take over) the
    /// session and get every retained echo with `seq > ack` replayed.
    Hello {
        /// The session; absent or empty: the server makes one up.
        #[serde(skip_serializing_if = "Option::is_none")]
        session: Option<Cow<'a, str>>,
        /// The highest `seq` processed in order (absent on the wire reads as 0).
        ack: u64,
    },
    /// `{"type":"msg","cseq":K,"body":<any JSON>}`: one message, deduplicated
    /// by `cseq` per session.
    Msg {
        /// The client's sequence number of the message.
        cseq: u64,
        /// The payload (absent on the wire reads as `None`, sent as `null`).
        body: Option<Body<'a>>,
    },
}

/// Every field a client message may carry; checked per type by
/// [`ClientMsg::parse`].
#[derive(Deserialize)]
struct ClientWire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    session: Option<Cow<'a, str>>,
    #[serde(default)]
    ack: Option<u64>,
    #[serde(default)]
    cseq: Option<u64>,
    #[serde(default, borrow)]
    body: Option<Body<'a>>,
}

impl<'a> TryFrom<ClientWire<'a>> for ClientMsg<'a> {
    type Error = WireError;

    fn try_from(w: ClientWire<'a>) -> Result<Self, WireError> {
        match &*w.kind {
            "hello" => Ok(ClientMsg::Hello {
                session: w.session,
                ack: w.ack.unwrap_or(0),
            }),
            "msg" => match w.cseq {
                Some(cseq) => Ok(ClientMsg::Msg { cseq, body: w.body }),
                None => Err(WireError::Missing {
                    kind: "msg",
                    field: "cseq",
                }),
            },
            _ => Err(WireError::UnknownType(w.kind.into_owned())),
        }
    }
}

impl<'a> ClientMsg<'a> {
    /// Parses one text frame, borrowing from it where it can.
    pub fn parse(text: &'a str) -> Result<Self, WireError> {
        serde_json::from_str::<ClientWire<'a>>(text)?.try_into()
    }

    /// The JSON text of the message.
    pub fn to_text(&self) -> String {
        to_text(self)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ClientMsg<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ClientWire::deserialize(deserializer)?
            .try_into()
            .map_err(serde::de::Error::custom)
    }
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMsg<'a> {
    /// `{"type":"welcome","session":"<id>","next":M}`: the answer to a
    /// `hello`, followed by the replay (every retained echo with
    /// `seq > ack`, in order).
    Welcome {
        /// The session joined.
        #[serde(skip_serializing_if = "Option::is_none")]
        session: Option<Cow<'a, str>>,
        /// The `seq` the next new echo will get (absent on the wire reads as 1).
        next: u64,
    },
    /// `{"type":"echo","seq":S,"cseq":K,"body":<same>}`: a message, numbered
    /// by the server.
    Echo {
        /// The server's sequence number, from 1 per session.
        seq: u64,
        /// The `cseq` of the message echoed.
        cseq: u64,
        /// The message's body, unchanged (`None` is sent as `null`).
        body: Option<Body<'a>>,
    },
    /// `{"type":"error","error":"<why>"}`: invalid input; the connection stays open.
    Error {
        /// Why.
        error: Cow<'a, str>,
    },
}

/// Every field a server message may carry; checked per type by
/// [`ServerMsg::parse`].
#[derive(Deserialize)]
struct ServerWire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    session: Option<Cow<'a, str>>,
    #[serde(default)]
    next: Option<u64>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    cseq: Option<u64>,
    #[serde(default, borrow)]
    body: Option<Body<'a>>,
    #[serde(default)]
    error: Option<Cow<'a, str>>,
}

impl<'a> TryFrom<ServerWire<'a>> for ServerMsg<'a> {
    type Error = WireError;

    fn try_from(w: ServerWire<'a>) -> Result<Self, WireError> {
        match &*w.kind {
            "welcome" => Ok(ServerMsg::Welcome {
                session: w.session,
                next: w.next.unwrap_or(1),
            }),
            "echo" => match (w.seq, w.cseq) {
                (Some(seq), Some(cseq)) => Ok(ServerMsg::Echo {
                    seq,
                    cseq,
                    body: w.body,
                }),
                _ => Err(WireError::Missing {
                    kind: "echo",
                    field: "seq or cseq",
                }),
            },
            "error" => Ok(ServerMsg::Error {
                error: w.error.unwrap_or_default(),
            }),
            _ => Err(WireError::UnknownType(w.kind.into_owned())),
        }
    }
}

impl<'a> ServerMsg<'a> {
    /// Parses one text frame, borrowing from it where it can.
    pub fn parse(text: &'a str) -> Result<Self, WireError> {
        serde_json::from_str::<ServerWire<'a>>(text)?.try_into()
    }

    /// The JSON text of the message.
    pub fn to_text(&self) -> String {
        to_text(self)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ServerMsg<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ServerWire::deserialize(deserializer)?
            .try_into()
            .map_err(serde::de::Error::custom)
    }
}

fn to_text<T: Serialize>(msg: &T) -> String {
    // Serializing these types cannot fail: every field is a string, a
    // number or a `serde_json::Value` (whose map keys are strings).
    #[allow(clippy::expect_used)]
    serde_json::to_string(msg).expect("resume-protocol messages always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Option<Body<'_>> {
        Some(Body::Text(Cow::Borrowed(s)))
    }

    #[test]
    fn client_messages_keep_their_wire_form() {
        let hello = ClientMsg::Hello {
            session: Some("wsfault-load-00ff-3".into()),
            ack: 17,
        };
        assert_eq!(
            hello.to_text(),
            r#"{"type":"hello","session":"wsfault-load-00ff-3","ack":17}"#
        );
        let msg = ClientMsg::Msg {
            cseq: 5,
            body: text("3:5:xx"),
        };
        assert_eq!(msg.to_text(), r#"{"type":"msg","cseq":5,"body":"3:5:xx"}"#);
        assert_eq!(ClientMsg::parse(&msg.to_text()).unwrap(), msg);
        assert_eq!(ClientMsg::parse(&hello.to_text()).unwrap(), hello);
    }

    #[test]
    fn server_messages_keep_their_wire_form() {
        let welcome = ServerMsg::Welcome {
            session: Some("s".into()),
            next: 4,
        };
        assert_eq!(
            welcome.to_text(),
            r#"{"type":"welcome","session":"s","next":4}"#
        );
        let echo = ServerMsg::Echo {
            seq: 9,
            cseq: 2,
            body: text("b"),
        };
        assert_eq!(
            echo.to_text(),
            r#"{"type":"echo","seq":9,"cseq":2,"body":"b"}"#
        );
        let error = ServerMsg::Error {
            error: "msg without cseq".into(),
        };
        assert_eq!(
            error.to_text(),
            r#"{"type":"error","error":"msg without cseq"}"#
        );
        for m in [welcome, echo, error] {
            assert_eq!(ServerMsg::parse(&m.to_text()).unwrap(), m);
        }
    }

    #[test]
    fn key_order_and_extra_fields_do_not_matter() {
        let m = ClientMsg::parse(r#"{"ack":3,"extra":[1],"session":"s","type":"hello"}"#).unwrap();
        assert_eq!(
            m,
            ClientMsg::Hello {
                session: Some("s".into()),
                ack: 3
            }
        );
        let m = ServerMsg::parse(r#"{"body":"x","cseq":2,"seq":1,"type":"echo"}"#).unwrap();
        assert_eq!(
            m,
            ServerMsg::Echo {
                seq: 1,
                cseq: 2,
                body: text("x")
            }
        );
    }

    #[test]
    fn defaults_for_absent_fields() {
        assert_eq!(
            ClientMsg::parse(r#"{"type":"hello"}"#).unwrap(),
            ClientMsg::Hello {
                session: None,
                ack: 0
            }
        );
        assert_eq!(
            ClientMsg::parse(r#"{"type":"msg","cseq":1}"#).unwrap(),
            ClientMsg::Msg {
                cseq: 1,
                body: None
            }
        );
        assert_eq!(
            ServerMsg::parse(r#"{"type":"welcome"}"#).unwrap(),
            ServerMsg::Welcome {
                session: None,
                next: 1
            }
        );
        // A body that is absent or null is echoed as null.
        let echo = ServerMsg::Echo {
            seq: 1,
            cseq: 1,
            body: None,
        };
        assert_eq!(
            echo.to_text(),
            r#"{"type":"echo","seq":1,"cseq":1,"body":null}"#
        );
    }

    #[test]
    fn string_bodies_borrow_and_any_json_passes_through() {
        let src = r#"{"type":"msg","cseq":1,"body":"plain"}"#;
        let Ok(ClientMsg::Msg {
            body: Some(Body::Text(Cow::Borrowed(b))),
            ..
        }) = ClientMsg::parse(src)
        else {
            panic!("a string body without escapes is borrowed");
        };
        assert_eq!(b, "plain");
        let escaped = ClientMsg::parse(r#"{"type":"msg","cseq":1,"body":"a\"b"}"#).unwrap();
        assert_eq!(
            escaped,
            ClientMsg::Msg {
                cseq: 1,
                body: Some(Body::Text(Cow::Owned("a\"b".into())))
            }
        );
        for body in [r#"{"k":[1,2.5,null,true]}"#, "[]", "-3", "1.5", "false"] {
            let src = format!(r#"{{"type":"msg","cseq":7,"body":{body}}}"#);
            let Ok(ClientMsg::Msg { cseq, body: b }) = ClientMsg::parse(&src) else {
                panic!("{src}");
            };
            let echo = ServerMsg::Echo {
                seq: 1,
                cseq,
                body: b,
            };
            let back: serde_json::Value = serde_json::from_str(&echo.to_text()).unwrap();
            let want: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(back["body"], want, "{body}");
        }
    }

    #[test]
    fn invalid_messages_say_why() {
        let err = |s: &str| ClientMsg::parse(s).unwrap_err().to_string();
        assert_eq!(err(r#"{"type":"msg"}"#), "msg without cseq");
        assert_eq!(err(r#"{"type":"nope"}"#), "unknown message type `nope`");
        assert!(
            err("not json").starts_with("expected"),
            "{}",
            err("not json")
        );
        assert!(err(r#"{"cseq":1}"#).contains("missing field `type`"));
        assert!(err(r#"{"type":"msg","cseq":"1"}"#).contains("invalid type"));
        let err = |s: &str| ServerMsg::parse(s).unwrap_err().to_string();
        assert_eq!(
            err(r#"{"type":"echo","seq":1}"#),
            "echo without seq or cseq"
        );
        assert_eq!(err(r#"{"type":"hello"}"#), "unknown message type `hello`");
        // The serde path says the same.
        let e = serde_json::from_str::<ClientMsg>(r#"{"type":"msg"}"#).unwrap_err();
        assert!(e.to_string().contains("msg without cseq"), "{e}");
        assert!(serde_json::from_str::<ServerMsg>(r#"{"type":"error","error":"x"}"#).is_ok());
    }
}
