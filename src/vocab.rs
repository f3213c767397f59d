//! The shared vocabulary of the data path, below both `toxics` and `proxy`:
//! stream direction, how a connection is cut, the activity clock and the
//! upstream target a proxy forwards to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Direction of a stream, Toxiproxy's naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StreamDir {
    /// Client → server.
    Upstream,
    /// Server → client (Toxiproxy's default).
    #[default]
    Downstream,
}

impl StreamDir {
    /// Label and JSON value.
    pub fn label(self) -> &'static str {
        match self {
            StreamDir::Upstream => "upstream",
            StreamDir::Downstream => "downstream",
        }
    }
    /// 0 for upstream, 1 for downstream.
    pub fn index(self) -> usize {
        match self {
            StreamDir::Upstream => 0,
            StreamDir::Downstream => 1,
        }
    }
    /// Parses a stream name, with a message naming the valid choices.
    pub fn parse(value: &str) -> Result<StreamDir, String> {
        match value {
            "upstream" => Ok(StreamDir::Upstream),
            "downstream" => Ok(StreamDir::Downstream),
            other => Err(format!(
                "invalid stream {other:?}: valid choices are upstream, downstream"
            )),
        }
    }
}

/// How a connection is ended without a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// TCP RST on both sides.
    Reset,
    /// TCP FIN on both sides.
    Fin,
    /// Nothing more is forwarded; both TCP connections stay open.
    Blackhole,
}

/// When data last crossed the connection, in either direction.
#[derive(Debug)]
pub struct Activity {
    opened_at: Instant,
    last_data_ms: AtomicU64,
    last_any_ms: AtomicU64,
}

impl Activity {
    /// A clock that starts now.
    pub fn new(opened_at: Instant) -> Activity {
        Activity {
            opened_at,
            last_data_ms: AtomicU64::new(0),
            last_any_ms: AtomicU64::new(0),
        }
    }

    /// Records traffic at `now` (`data`: at least one data frame).
    pub fn touch(&self, now: Instant, data: bool) {
        let ms = now.saturating_duration_since(self.opened_at).as_millis() as u64;
        self.last_any_ms.fetch_max(ms, Ordering::Relaxed);
        if data {
            self.last_data_ms.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// The last instant a data frame (or, with `control`, any frame) passed.
    pub fn last(&self, control: bool) -> Instant {
        let ms = if control {
            self.last_any_ms.load(Ordering::Relaxed)
        } else {
            self.last_data_ms.load(Ordering::Relaxed)
        };
        self.opened_at + Duration::from_millis(ms)
    }
}

/// Where a proxy forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// `host:port`.
    pub authority: String,
    /// `wss://` target.
    pub tls: bool,
    /// Path prefix, without a trailing slash ("" for none).
    pub prefix: String,
}

impl UpstreamTarget {
    /// Parses `host:port`, `ws://host:port[/prefix]` or `wss://host:port[/prefix]`.
    pub fn parse(text: &str) -> Result<UpstreamTarget, String> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("ws://") {
            (false, rest)
        } else if let Some(rest) = text.strip_prefix("wss://") {
            (true, rest)
        } else if text.contains("://") {
            return Err(format!(
                "upstream {text:?} has an unsupported scheme: valid forms are host:port, ws://host:port[/prefix], wss://host:port[/prefix]"
            ));
        } else {
            (false, text)
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        let authority = if port_ok {
            authority.to_string()
        } else if !authority.is_empty() && !authority.contains(':') && text.contains("://") {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        } else {
            return Err(format!(
                "upstream {text:?} is invalid: valid forms are host:port, ws://host:port[/prefix], wss://host:port[/prefix]"
            ));
        };
        Ok(UpstreamTarget {
            authority,
            tls,
            prefix: prefix.to_string(),
        })
    }

    /// Joins the prefix and the client's path and query.
    pub fn join(&self, path_and_query: &str) -> String {
        if self.prefix.is_empty() {
            return path_and_query.to_string();
        }
        if path_and_query.is_empty() || path_and_query == "/" {
            return format!("{}/", self.prefix);
        }
        if path_and_query.starts_with('?') {
            return format!("{}{}", self.prefix, path_and_query);
        }
        format!("{}{}", self.prefix, path_and_query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_targets_and_prefix_join() {
        let t = UpstreamTarget::parse("ws://backend:9000/prefix/").expect("valid");
        assert_eq!(t.authority, "backend:9000");
        assert_eq!(t.join("/chat?x=1"), "/prefix/chat?x=1");
        assert_eq!(
            UpstreamTarget::parse("ws://h:1/prefix")
                .expect("valid")
                .join("/chat?x=1"),
            "/prefix/chat?x=1"
        );
        assert_eq!(
            UpstreamTarget::parse("h:1").expect("valid").join("/a?b"),
            "/a?b"
        );
        assert!(UpstreamTarget::parse("http://h:1").is_err());
        let t = UpstreamTarget::parse("wss://example.com/ws").expect("valid");
        assert_eq!(
            (t.authority.as_str(), t.tls, t.prefix.as_str()),
            ("example.com:443", true, "/ws")
        );
        assert!(UpstreamTarget::parse("nope").is_err());
    }
}
