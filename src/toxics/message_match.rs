//! Message-level targeting shared by every toxic (docs/reference.md#match-message-and-count):
//! `match.message` picks messages by kind, opcode or payload, `count`
//! picks the Nth matching ones. The specs are what YAML and the API carry
//! (read back as written); [`MessageMatcher`] is the compiled form a link
//! evaluates once per message, before any toxic sees it.

use memchr::memmem;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::frame::Opcode;
use crate::protocols::Kind;

/// The data opcodes a matcher can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataOpcode {
    /// Text messages.
    Text,
    /// Binary messages.
    Binary,
}

impl<'de> Deserialize<'de> for DataOpcode {
    /// A bad value names the field and the valid choices.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        match text.as_ref() {
            "text" => Ok(DataOpcode::Text),
            "binary" => Ok(DataOpcode::Binary),
            other => Err(serde::de::Error::custom(format!(
                "match.message.opcode {other:?} is invalid: valid choices are text, binary"
            ))),
        }
    }
}

/// `match.message.json`: an RFC 6901 pointer and what must be there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonMatchSpec {
    /// RFC 6901 pointer such as `/type` or `/payload/data/id`.
    pub pointer: String,
    /// The value at the pointer must equal this JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    /// `true`: the pointer must resolve; `false`: it must not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

/// `match.message`: every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageMatchSpec {
    /// The message's kind under the connection's protocol profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// `text` or `binary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opcode: Option<DataOpcode>,
    /// A substring of the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// A Rust regex, searched in text payloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// A JSON pointer test on text payloads that parse as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<JsonMatchSpec>,
}

/// `count`: which of the matching messages are acted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountSpec {
    /// The first `after` matching messages pass.
    #[serde(default)]
    pub after: u64,
    /// Of the rest, numbered from 1, those whose number is a multiple of
    /// `every` are acted on.
    #[serde(default = "one")]
    pub every: u64,
    /// At most this many actions (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

fn one() -> u64 {
    1
}

/// A spec that cannot be compiled: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct MatchError {
    /// The offending field, e.g. `match.message.regex`.
    pub field: &'static str,
    /// What is wrong, with the parser's message or the valid choices.
    pub message: String,
}

impl CountSpec {
    /// Checks `every >= 1`.
    pub fn validate(&self) -> Result<(), MatchError> {
        if self.every == 0 {
            return Err(MatchError {
                field: "count.every",
                message: "0 is out of range: every must be 1 or more".into(),
            });
        }
        Ok(())
    }

    /// Decides for the next matching message, advancing `state`.
    pub fn decide(&self, state: &mut CountState) -> bool {
        state.seen += 1;
        if state.seen <= self.after {
            return false;
        }
        let number = state.seen - self.after;
        if !number.is_multiple_of(self.every.max(1)) {
            return false;
        }
        if self.limit.is_some_and(|limit| state.acted >= limit) {
            return false;
        }
        state.acted += 1;
        true
    }
}

/// Per connection and stream: matching messages seen and acted on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountState {
    /// Matching messages seen so far.
    pub seen: u64,
    /// Of those, acted on.
    pub acted: u64,
}

/// What a link knows of a message when it asks a matcher.
#[derive(Debug, Clone, Copy)]
pub struct MessageFacts<'a> {
    /// The first frame's opcode.
    pub opcode: Opcode,
    /// The kind, when some matcher on the stream asked for kinds.
    pub kind: Option<Kind>,
    /// The whole unmasked payload, when some matcher asked for payloads
    /// and the message could be gathered.
    pub payload: Option<&'a [u8]>,
    /// The message is compressed (RSV1 under `extensions: pass`).
    pub compressed: bool,
}

/// How a payload test came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every given field matched.
    Match,
    /// Some field did not match.
    NoMatch,
    /// A payload field could not look at a compressed message.
    SkippedCompressed,
}

/// The compiled form of a [`MessageMatchSpec`].
#[derive(Debug, Clone)]
pub struct MessageMatcher {
    kind: Option<Kind>,
    opcode: Option<DataOpcode>,
    contains: Option<memmem::Finder<'static>>,
    regex: Option<regex::Regex>,
    json: Option<JsonMatchSpec>,
}

impl MessageMatchSpec {
    /// Compiles the spec; a bad regex or pointer names the field and the
    /// parser's message.
    pub fn compile(&self) -> Result<MessageMatcher, MatchError> {
        let regex = match &self.regex {
            Some(text) => Some(regex::Regex::new(text).map_err(|err| MatchError {
                field: "match.message.regex",
                message: format!("{text:?} is not a valid regex: {}", one_line(&err)),
            })?),
            None => None,
        };
        if let Some(json) = &self.json {
            if !(json.pointer.is_empty() || json.pointer.starts_with('/')) {
                return Err(MatchError {
                    field: "match.message.json.pointer",
                    message: format!(
                        "{:?} is not an RFC 6901 JSON pointer: it must be empty or start with '/', e.g. /type",
                        json.pointer
                    ),
                });
            }
            if json.equals.is_none() && json.exists.is_none() {
                return Err(MatchError {
                    field: "match.message.json",
                    message: "needs `equals: VALUE` or `exists: true|false` beside `pointer`"
                        .into(),
                });
            }
        }
        Ok(MessageMatcher {
            kind: self.kind,
            opcode: self.opcode,
            contains: self
                .contains
                .as_ref()
                .map(|s| memmem::Finder::new(s.as_bytes()).into_owned()),
            regex,
            json: self.json.clone(),
        })
    }
}

/// The regex crate's message on one line: its last line says what is wrong
/// ("unclosed group"), the lines above draw a caret under the pattern.
fn one_line(err: &regex::Error) -> String {
    let text = err.to_string();
    let what = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(&text)
        .trim();
    what.strip_prefix("error: ").unwrap_or(what).to_string()
}

impl MessageMatcher {
    /// Whether the link must classify messages for this matcher.
    pub fn needs_kind(&self) -> bool {
        self.kind.is_some()
    }

    /// Whether the link must gather the whole payload for this matcher.
    pub fn needs_payload(&self) -> bool {
        self.contains.is_some() || self.regex.is_some() || self.json.is_some()
    }

    /// Evaluates the matcher; the cheap fields (opcode, kind) first, so a
    /// message they rule out is never looked into.
    pub fn evaluate(&self, facts: &MessageFacts<'_>) -> Verdict {
        if let Some(want) = self.opcode {
            let is = match facts.opcode {
                Opcode::Text => DataOpcode::Text,
                Opcode::Binary => DataOpcode::Binary,
                _ => return Verdict::NoMatch,
            };
            if is != want {
                return Verdict::NoMatch;
            }
        }
        if let Some(want) = self.kind {
            if facts.kind != Some(want) {
                return Verdict::NoMatch;
            }
        }
        if !self.needs_payload() {
            return Verdict::Match;
        }
        if facts.compressed {
            return Verdict::SkippedCompressed;
        }
        let Some(payload) = facts.payload else {
            return Verdict::NoMatch;
        };
        if let Some(finder) = &self.contains {
            if finder.find(payload).is_none() {
                return Verdict::NoMatch;
            }
        }
        if self.regex.is_some() || self.json.is_some() {
            if facts.opcode != Opcode::Text {
                return Verdict::NoMatch;
            }
            let Ok(text) = std::str::from_utf8(payload) else {
                return Verdict::NoMatch;
            };
            if let Some(regex) = &self.regex {
                if !regex.is_match(text) {
                    return Verdict::NoMatch;
                }
            }
            if let Some(json) = &self.json {
                let Ok(value) = serde_json::from_str::<Value>(text) else {
                    return Verdict::NoMatch;
                };
                let found = value.pointer(&json.pointer);
                if let Some(exists) = json.exists {
                    if found.is_some() != exists {
                        return Verdict::NoMatch;
                    }
                }
                if let Some(equals) = &json.equals {
                    if found != Some(equals) {
                        return Verdict::NoMatch;
                    }
                }
            }
        }
        Verdict::Match
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> MessageMatchSpec {
        serde_json::from_str(yaml).expect("valid spec")
    }

    fn text(payload: &str) -> MessageFacts<'_> {
        MessageFacts {
            opcode: Opcode::Text,
            kind: Some(Kind::Data),
            payload: Some(payload.as_bytes()),
            compressed: false,
        }
    }

    #[test]
    fn count_acts_on_13_16_19_22_25() {
        let count = CountSpec {
            after: 10,
            every: 3,
            limit: Some(5),
        };
        let mut state = CountState::default();
        let acted: Vec<u64> = (1..=40).filter(|_| count.decide(&mut state)).collect();
        assert_eq!(acted, vec![13, 16, 19, 22, 25]);
        assert_eq!(state, CountState { seen: 40, acted: 5 });
    }

    #[test]
    fn count_defaults_act_on_every_message() {
        let count: CountSpec = serde_json::from_str("{}").expect("valid");
        assert_eq!((count.after, count.every, count.limit), (0, 1, None));
        let mut state = CountState::default();
        assert!((0..5).all(|_| count.decide(&mut state)));
        let zero = CountSpec {
            after: 0,
            every: 0,
            limit: None,
        };
        assert_eq!(zero.validate().map_err(|e| e.field), Err("count.every"));
    }

    #[test]
    fn json_pointer_equals_and_exists() {
        let m = spec(r#"{"json":{"pointer":"/type","equals":"next"}}"#)
            .compile()
            .expect("compiles");
        assert!(m.needs_payload() && !m.needs_kind());
        assert_eq!(
            m.evaluate(&text(r#"{"id":"1","type":"next"}"#)),
            Verdict::Match
        );
        assert_eq!(
            m.evaluate(&text(r#"{"type":"complete"}"#)),
            Verdict::NoMatch
        );
        assert_eq!(m.evaluate(&text("42[\"next\"]")), Verdict::NoMatch);
        let exists = spec(r#"{"json":{"pointer":"/payload/data","exists":true}}"#)
            .compile()
            .expect("compiles");
        assert_eq!(
            exists.evaluate(&text(r#"{"payload":{"data":null}}"#)),
            Verdict::Match
        );
        assert_eq!(
            exists.evaluate(&text(r#"{"payload":{}}"#)),
            Verdict::NoMatch
        );
        let number = spec(r#"{"json":{"pointer":"/seq","equals":3}}"#)
            .compile()
            .expect("compiles");
        assert_eq!(number.evaluate(&text(r#"{"seq":3}"#)), Verdict::Match);
        assert_eq!(number.evaluate(&text(r#"{"seq":"3"}"#)), Verdict::NoMatch);
    }

    #[test]
    fn regex_contains_opcode_and_kind() {
        let m = spec(r#"{"regex":"\"type\":\"(next|error)\"","opcode":"text"}"#)
            .compile()
            .expect("compiles");
        assert_eq!(m.evaluate(&text(r#"{"type":"error"}"#)), Verdict::Match);
        assert_eq!(m.evaluate(&text(r#"{"type":"ping"}"#)), Verdict::NoMatch);
        let binary = MessageFacts {
            opcode: Opcode::Binary,
            ..text(r#"{"type":"error"}"#)
        };
        assert_eq!(m.evaluate(&binary), Verdict::NoMatch);
        let contains = spec(r#"{"contains":"typing"}"#)
            .compile()
            .expect("compiles");
        assert_eq!(contains.evaluate(&text("42[\"typing\"]")), Verdict::Match);
        assert_eq!(
            contains.evaluate(&MessageFacts {
                opcode: Opcode::Binary,
                ..text("xxtypingxx")
            }),
            Verdict::Match
        );
        assert_eq!(contains.evaluate(&text("42[\"chat\"]")), Verdict::NoMatch);
        let kind = spec(r#"{"kind":"heartbeat"}"#).compile().expect("compiles");
        assert!(kind.needs_kind() && !kind.needs_payload());
        let beat = MessageFacts {
            kind: Some(Kind::Heartbeat),
            payload: None,
            ..text("2")
        };
        assert_eq!(kind.evaluate(&beat), Verdict::Match);
        assert_eq!(kind.evaluate(&text("42[]")), Verdict::NoMatch);
    }

    #[test]
    fn compressed_and_invalid_utf8_never_match_payload_fields() {
        let m = spec(r#"{"contains":"a"}"#).compile().expect("compiles");
        let compressed = MessageFacts {
            compressed: true,
            ..text("a")
        };
        assert_eq!(m.evaluate(&compressed), Verdict::SkippedCompressed);
        let r = spec(r#"{"regex":"."}"#).compile().expect("compiles");
        let bad = MessageFacts {
            payload: Some(b"\xff\xfe"),
            ..text("")
        };
        assert_eq!(r.evaluate(&bad), Verdict::NoMatch);
    }

    #[test]
    fn bad_regex_and_pointer_name_the_field() {
        let err = spec(r#"{"regex":"(unclosed"}"#)
            .compile()
            .expect_err("error");
        assert_eq!(err.field, "match.message.regex");
        assert!(
            err.message.contains("(unclosed") && err.message.contains("unclosed group"),
            "{err}"
        );
        let err = spec(r#"{"json":{"pointer":"type","equals":"x"}}"#)
            .compile()
            .expect_err("error");
        assert_eq!(err.field, "match.message.json.pointer");
        assert!(serde_json::from_str::<MessageMatchSpec>(r#"{"kind":"ping"}"#).is_err());
        assert!(serde_json::from_str::<MessageMatchSpec>(r#"{"size":1}"#).is_err());
    }

    #[test]
    fn specs_read_back_as_written() {
        let written = r#"{"kind":"data","json":{"pointer":"/type","equals":"next"}}"#;
        let back = serde_json::to_string(&spec(written)).expect("json");
        assert_eq!(back, written);
        let count = r#"{"after":10,"every":3,"limit":5}"#;
        let c: CountSpec = serde_json::from_str(count).expect("valid");
        assert_eq!(serde_json::to_string(&c).expect("json"), count);
    }
}
