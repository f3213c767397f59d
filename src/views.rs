//! The admin API's JSON shapes, one name each: the proxy registry fills
//! them, the admin API serializes them and `ctl` reads them back.
//!
//! Serializing is exact (the admin API's output); reading back is lenient,
//! because `ctl` may talk to a server that is not wsfault: a field that is
//! absent takes its default (real Toxiproxy has no `extensions`, `host` or
//! `max_*`), and the toxics of a proxy are read with [`toxic_from_json`],
//! which ignores fields a toxic does not know.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::config::{ExtensionsMode, HostMode};
use crate::protocols::ProtocolSetting;
use crate::toxics::ToxicSpec;

/// A proxy as the admin API shows it (Toxiproxy's fields first).
///
/// When read, every field may be absent and then takes its [`Default`]
/// value (empty, `false`, `strip`, `keep`, 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyView {
    /// Name.
    pub name: String,
    /// Listen address (the real one once bound).
    pub listen: String,
    /// Upstream target.
    pub upstream: String,
    /// Enabled.
    pub enabled: bool,
    /// Toxics (read with [`toxic_from_json`]).
    #[serde(deserialize_with = "lenient_toxics")]
    pub toxics: Vec<ToxicSpec>,
    /// `strip` or `pass`.
    pub extensions: ExtensionsMode,
    /// `keep` or `upstream`.
    pub host: HostMode,
    /// Frame limit (0 when the server does not say).
    pub max_frame_bytes: u64,
    /// Message limit (0 when the server does not say).
    pub max_message_bytes: u64,
    /// `auto` or a protocol profile.
    pub protocol: ProtocolSetting,
    /// TLS on the listener, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::config::TlsSetting>,
}

/// One connection as `GET /proxies/{p}/connections` shows it.
///
/// When read, every field may be absent and then takes its [`Default`] value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionView {
    /// Connection id (ordinal within the proxy).
    pub id: u64,
    /// Client address.
    pub client: String,
    /// Request path and query.
    pub path: String,
    /// Negotiated subprotocol.
    pub subprotocol: Option<String>,
    /// The detected (or configured) protocol profile.
    pub protocol: String,
    /// Age in milliseconds.
    pub age_ms: u64,
    /// Client → server counters.
    pub upstream: StreamView,
    /// Server → client counters.
    pub downstream: StreamView,
}

/// Frame and byte counters of one stream.
///
/// When read, an absent counter is 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamView {
    /// Frames.
    pub frames: u64,
    /// Wire bytes.
    pub bytes: u64,
}

/// The fields [`ToxicSpec`] knows, as the admin API writes them.
const TOXIC_FIELDS: [&str; 8] = [
    "name",
    "type",
    "stream",
    "toxicity",
    "attributes",
    "match",
    "schedule",
    "count",
];

/// Reads a toxic as an admin API shows it, leniently.
///
/// [`ToxicSpec`] is what a user writes and rejects unknown fields (a typo in
/// a config file or an API request must not pass silently); a server's
/// answer is read back with more tolerance: fields `ToxicSpec` does not know
/// are ignored and `null` values count as absent (so `toxicity: null` is 1).
/// The type is a plain string, so types this build does not know are read
/// as they are. Still required: `type`, and `stream` (when present) must be
/// `upstream` or `downstream`, as in Toxiproxy.
pub fn toxic_from_json(mut value: Value) -> Result<ToxicSpec, serde_json::Error> {
    if let Value::Object(fields) = &mut value {
        fields.retain(|key, field| !field.is_null() && TOXIC_FIELDS.contains(&key.as_str()));
    }
    serde_json::from_value(value)
}

/// `ProxyView::toxics` read with [`toxic_from_json`].
fn lenient_toxics<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<ToxicSpec>, D::Error> {
    let values = Option::<Vec<Value>>::deserialize(deserializer)?.unwrap_or_default();
    values
        .into_iter()
        .map(|value| toxic_from_json(value).map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn toxic_fields_cover_what_toxic_spec_writes() {
        let spec: ToxicSpec = serde_json::from_value(json!({
            "name": "n", "type": "latency", "stream": "upstream", "toxicity": 0.5,
            "attributes": {"latency": 1},
            "match": {"path": "/x"}, "schedule": {"duration": 1},
            "count": {"after": 2}
        }))
        .expect("valid test input");
        let Value::Object(written) = serde_json::to_value(&spec).expect("serializable") else {
            panic!("a toxic is a JSON object");
        };
        let mut keys: Vec<&str> = written.keys().map(String::as_str).collect();
        let mut known = TOXIC_FIELDS.to_vec();
        keys.sort_unstable();
        known.sort_unstable();
        assert_eq!(keys, known);
        assert_eq!(
            toxic_from_json(Value::Object(written)).expect("round trip"),
            spec
        );
    }

    #[test]
    fn a_toxiproxy_proxy_reads_with_defaults() {
        // As Toxiproxy 2.x writes it: no extensions, host or limits; a toxic
        // type wsfault does not have; an extra field.
        let proxy: ProxyView = serde_json::from_value(json!({
            "name": "redis", "listen": "[::]:26379", "upstream": "localhost:6379",
            "enabled": true,
            "toxics": [{"name": "slicer_downstream", "type": "slicer", "stream": "downstream",
                        "toxicity": 1, "attributes": {"average_size": 64, "delay": null},
                        "extra": {"any": ["json"]}}]
        }))
        .expect("lenient");
        assert_eq!(proxy.extensions, ExtensionsMode::Strip);
        assert_eq!(proxy.host, HostMode::Keep);
        assert_eq!((proxy.max_frame_bytes, proxy.max_message_bytes), (0, 0));
        let toxic = &proxy.toxics[0];
        assert_eq!((toxic.kind.as_str(), toxic.toxicity), ("slicer", 1.0));
        assert_eq!(toxic.attributes["delay"], Value::Null);
        assert!(toxic.matcher.is_none() && toxic.schedule.is_none());

        // Toxiproxy's create/update answers may leave out toxics entirely.
        let bare: ProxyView =
            serde_json::from_value(json!({"name": "a", "enabled": false, "toxics": null}))
                .expect("lenient");
        assert!(bare.toxics.is_empty() && bare.listen.is_empty());
    }

    #[test]
    fn lenient_toxics_still_need_a_type_and_a_known_stream() {
        let toxic = toxic_from_json(json!({"type": "latency", "toxicity": null, "stream": null}))
            .expect("nulls are absent");
        assert_eq!(toxic.toxicity, 1.0);
        assert!(toxic_from_json(json!({"name": "x"})).is_err());
        assert!(toxic_from_json(json!({"type": "latency", "stream": "sideways"})).is_err());
        assert!(toxic_from_json(json!([1, 2])).is_err());
        // Strict input parsing is unchanged.
        assert!(
            serde_json::from_value::<ToxicSpec>(json!({"type": "latency", "extra": 1})).is_err()
        );
    }

    #[test]
    fn connections_read_with_defaults() {
        let c: ConnectionView =
            serde_json::from_value(json!({"id": 7, "upstream": {"frames": 3}})).expect("lenient");
        assert_eq!((c.id, c.upstream.frames, c.upstream.bytes), (7, 3, 0));
        assert_eq!(c.downstream, StreamView::default());
    }
}
