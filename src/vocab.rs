//! The shared vocabulary of the data path, below both `toxics` and `proxy`:
//! stream direction, how a connection is cut, and the activity clock.

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
