//! `match`: which traffic a toxic acts on.
//!
//! Matching happens in two stages, both once for all toxic types:
//! * **Connection** (here today): `match.path`, `match.header` and
//!   `match.subprotocol` look at the upgrade request ([`ConnFacts`]); the
//!   answer is drawn once per connection and stream, by
//!   [`ActiveToxic::new`](super::ActiveToxic::new) and
//!   [`handshake_actions`](super::handshake_actions).
//! * **Message**: `match.message` (`kind`, `opcode`, `contains`, `regex`,
//!   `json`) and `count` pick messages on a matching connection. The spec is
//!   the `message` field of [`MatchSpec`]; it is compiled once at validation
//!   ([`message_match`](super::message_match)) and asked per message by the
//!   activation layer ([`ActiveToxic`](super::ActiveToxic)) before a
//!   message's frames reach the toxic's state; a toxic file never matches by
//!   itself.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::message_match::MessageMatchSpec;

/// `match`: only connections whose upgrade request matches are affected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// A glob on the request path (`*` any run of characters, `?` one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Header name → exact value (names are case-insensitive).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub header: BTreeMap<String, String>,
    /// The negotiated subprotocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subprotocol: Option<String>,
    /// Which messages of a matching connection (kind, opcode, payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageMatchSpec>,
}

/// Connection facts a toxic may look at.
#[derive(Debug, Clone)]
pub struct ConnFacts {
    /// When the connection was opened.
    pub opened_at: Instant,
    /// Request path (with query).
    pub path: String,
    /// Negotiated subprotocol, if any.
    pub subprotocol: Option<String>,
    /// Request headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// Whether permessage-deflate was negotiated (extensions: pass).
    pub compressed: bool,
}

impl MatchSpec {
    /// Whether the connection's upgrade request matches.
    pub fn matches(&self, facts: &ConnFacts) -> bool {
        if let Some(glob) = &self.path {
            let path = facts.path.split('?').next().unwrap_or("");
            if !glob_match(glob.as_bytes(), path.as_bytes()) {
                return false;
            }
        }
        for (name, value) in &self.header {
            let name = name.to_ascii_lowercase();
            if !facts.headers.iter().any(|(n, v)| *n == name && v == value) {
                return false;
            }
        }
        if let Some(sub) = &self.subprotocol {
            if facts.subprotocol.as_deref() != Some(sub.as_str()) {
                return false;
            }
        }
        true
    }
}

/// `*` and `?` glob on bytes.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(path: &str, headers: &[(&str, &str)], subprotocol: Option<&str>) -> ConnFacts {
        ConnFacts {
            opened_at: Instant::now(),
            path: path.into(),
            subprotocol: subprotocol.map(String::from),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            compressed: false,
        }
    }

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match(b"/chat*", b"/chat/room"));
        assert!(glob_match(b"/c?at", b"/chat"));
        assert!(!glob_match(b"/chat*", b"/other"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"/a*b*c", b"/axxbyyc"));
        assert!(!glob_match(b"/a*b*c", b"/axxbyy"));
        assert!(!glob_match(b"/c?at", b"/cat"));
        assert!(
            !glob_match(b"/chat", b"/chat/room"),
            "no implicit prefix match"
        );
    }

    #[test]
    fn empty_match_takes_every_connection() {
        assert!(MatchSpec::default().matches(&facts("/x", &[], None)));
    }

    #[test]
    fn path_glob_ignores_the_query() {
        let m = MatchSpec {
            path: Some("/chat/*".into()),
            ..MatchSpec::default()
        };
        assert!(m.matches(&facts("/chat/room?token=1", &[], None)));
        assert!(!m.matches(&facts("/news?next=/chat/x", &[], None)));
    }

    #[test]
    fn header_names_are_case_insensitive_values_exact() {
        let m = MatchSpec {
            header: [("X-Tenant".to_string(), "blue".to_string())].into(),
            ..MatchSpec::default()
        };
        assert!(m.matches(&facts("/", &[("x-tenant", "blue")], None)));
        assert!(!m.matches(&facts("/", &[("x-tenant", "Blue")], None)));
        assert!(!m.matches(&facts("/", &[("x-other", "blue")], None)));
    }

    #[test]
    fn subprotocol_must_be_the_negotiated_one() {
        let m = MatchSpec {
            subprotocol: Some("graphql-ws".into()),
            ..MatchSpec::default()
        };
        assert!(m.matches(&facts("/", &[], Some("graphql-ws"))));
        assert!(!m.matches(&facts("/", &[], Some("mqtt"))));
        assert!(!m.matches(&facts("/", &[], None)));
    }

    #[test]
    fn every_given_field_must_match() {
        let m = MatchSpec {
            path: Some("/chat".into()),
            header: [("x-tenant".to_string(), "blue".to_string())].into(),
            subprotocol: None,
            message: None,
        };
        assert!(m.matches(&facts("/chat", &[("x-tenant", "blue")], None)));
        assert!(!m.matches(&facts("/chat", &[], None)));
        assert!(!m.matches(&facts("/other", &[("x-tenant", "blue")], None)));
    }
}
