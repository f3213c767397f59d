//! The admin API's JSON shapes, one name each: the proxy registry fills
//! them, the admin API serializes them and `ctl` reads them back.

use serde::{Deserialize, Serialize};

use crate::config::{ExtensionsMode, HostMode};
use crate::toxics::ToxicSpec;

/// A proxy as the admin API shows it (Toxiproxy's fields first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyView {
    /// Name.
    pub name: String,
    /// Listen address (the real one once bound).
    pub listen: String,
    /// Upstream target.
    pub upstream: String,
    /// Enabled.
    pub enabled: bool,
    /// Toxics.
    pub toxics: Vec<ToxicSpec>,
    /// `strip` or `pass`.
    pub extensions: ExtensionsMode,
    /// `keep` or `upstream`.
    pub host: HostMode,
    /// Frame limit.
    pub max_frame_bytes: u64,
    /// Message limit.
    pub max_message_bytes: u64,
}

/// One connection as `GET /proxies/{p}/connections` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionView {
    /// Connection id (ordinal within the proxy).
    pub id: u64,
    /// Client address.
    pub client: String,
    /// Request path and query.
    pub path: String,
    /// Negotiated subprotocol.
    pub subprotocol: Option<String>,
    /// Age in milliseconds.
    pub age_ms: u64,
    /// Client → server counters.
    pub upstream: StreamView,
    /// Server → client counters.
    pub downstream: StreamView,
}

/// Frame and byte counters of one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamView {
    /// Frames.
    pub frames: u64,
    /// Wire bytes.
    pub bytes: u64,
}
