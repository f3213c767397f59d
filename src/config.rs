//! Proxy specs and the YAML config file (docs/reference.md#yaml-config-file).
//!
//! Unknown keys, unknown toxic types, out-of-range values and missing
//! attributes are errors reported as `FILE:LINE:COL: message`.
//!
//! (Over 600 lines only with its unit tests, which pin the exact
//! `FILE:LINE:COL` of each error; the code ends near line 470.)

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use crate::protocols::ProtocolSetting;
use crate::toxics::ToxicSpec;

/// Default `max_frame_bytes`: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: u64 = 16 * 1024 * 1024;
/// Default `max_message_bytes`: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 64 * 1024 * 1024;

/// A config or spec error (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// `extensions`: what happens to `Sec-WebSocket-Extensions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtensionsMode {
    /// Remove the header: both sides speak uncompressed frames.
    #[default]
    Strip,
    /// Forward it and relay compressed frames untouched.
    Pass,
}

/// `host`: what happens to the `Host` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostMode {
    /// Forward it unchanged.
    #[default]
    Keep,
    /// Rewrite it to the upstream's authority.
    Upstream,
}

/// `tls`: the listener speaks `wss://` (docs/reference.md#tls-on-the-listener).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSetting {
    /// A certificate made at start for `localhost`, `127.0.0.1` and the
    /// listen host; its PEM is served at `GET /proxies/{p}/certificate`.
    SelfSigned,
    /// PEM files: the certificate chain and its private key.
    Files {
        /// The certificate chain (PEM).
        cert: String,
        /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
        key: String,
    },
}

impl Serialize for TlsSetting {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        match self {
            TlsSetting::SelfSigned => serializer.serialize_str("self-signed"),
            TlsSetting::Files { cert, key } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("cert", cert)?;
                map.serialize_entry("key", key)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for TlsSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Files {
            cert: String,
            key: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Files(Files),
        }
        const EXPECTED: &str = "tls must be `self-signed` or {cert: FILE, key: FILE} (PEM files)";
        match Raw::deserialize(deserializer).map_err(|_| serde::de::Error::custom(EXPECTED))? {
            Raw::Word(w) if w == "self-signed" => Ok(TlsSetting::SelfSigned),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "tls {w:?} is invalid: {EXPECTED}"
            ))),
            Raw::Files(f) => Ok(TlsSetting::Files {
                cert: f.cert,
                key: f.key,
            }),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_max_frame() -> u64 {
    DEFAULT_MAX_FRAME_BYTES
}
fn default_max_message() -> u64 {
    DEFAULT_MAX_MESSAGE_BYTES
}

/// One proxy, as in YAML and in the admin API's JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    /// Unique name.
    pub name: String,
    /// Listen address (`host:port`, port 0 picks one).
    pub listen: String,
    /// Upstream target: `host:port`, `ws://host:port[/prefix]`, `wss://...`.
    pub upstream: String,
    /// Disabled proxies have no listener.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `strip` (default) or `pass`.
    #[serde(default)]
    pub extensions: ExtensionsMode,
    /// `keep` (default) or `upstream`.
    #[serde(default)]
    pub host: HostMode,
    /// Largest frame payload accepted.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: u64,
    /// Largest message payload accepted.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: u64,
    /// The application protocol: `auto` (detected per connection) or a
    /// profile name.
    #[serde(default)]
    pub protocol: ProtocolSetting,
    /// TLS on the listener (`wss://`); none: plain `ws://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSetting>,
    /// Toxics.
    #[serde(default)]
    pub toxics: Vec<ToxicSpec>,
}

impl ProxySpec {
    /// A proxy with defaults.
    pub fn new(name: &str, listen: &str, upstream: &str) -> ProxySpec {
        ProxySpec {
            name: name.to_string(),
            listen: listen.to_string(),
            upstream: upstream.to_string(),
            enabled: true,
            extensions: ExtensionsMode::Strip,
            host: HostMode::Keep,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            protocol: ProtocolSetting::Auto,
            tls: None,
            toxics: Vec::new(),
        }
    }

    /// Checks the fields that serde cannot (addresses, limits, names).
    pub fn validate(&self) -> Result<(), String> {
        self.check().map_err(|(_, message)| message)
    }

    /// [`ProxySpec::validate`], also naming the field at fault.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.name.is_empty() {
            return Err(("name", "proxy name is empty: a name is required".into()));
        }
        crate::vocab::UpstreamTarget::parse(&self.upstream)
            .map_err(|e| ("upstream", format!("proxy {:?}: {e}", self.name)))?;
        if self.listen.parse::<std::net::SocketAddr>().is_err() && !self.listen.contains(':') {
            return Err((
                "listen",
                format!(
                    "proxy {:?}: listen {:?} is not an address: expected host:port",
                    self.name, self.listen
                ),
            ));
        }
        if self.max_frame_bytes == 0 || self.max_message_bytes == 0 {
            let field = if self.max_frame_bytes == 0 {
                "max_frame_bytes"
            } else {
                "max_message_bytes"
            };
            return Err((
                field,
                format!(
                    "proxy {:?}: max_frame_bytes and max_message_bytes must be at least 1",
                    self.name
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    proxies: Vec<RawProxy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    name: String,
    listen: String,
    upstream: String,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    extensions: ExtensionsMode,
    #[serde(default)]
    host: HostMode,
    #[serde(default = "default_max_frame")]
    max_frame_bytes: u64,
    #[serde(default = "default_max_message")]
    max_message_bytes: u64,
    #[serde(default)]
    protocol: ProtocolSetting,
    #[serde(default)]
    tls: Option<TlsSetting>,
    #[serde(default)]
    toxics: Vec<ToxicSpec>,
}

/// A loaded config: proxies with validated toxics.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The proxies, in file order.
    pub proxies: Vec<ProxySpec>,
}

/// Reads and validates a YAML config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: cannot read config: {e}", path.display())))?;
    parse_str(&text, &path.display().to_string())
}

/// Parses and validates a YAML config; `origin` names the file in errors,
/// which point at the offending key or value.
pub fn parse_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    // A second, untyped pass records where every key and value sits, so that
    // errors found after deserializing can point at the field.
    let tree: Option<Spanned<Node>> = serde_saphyr::from_str(text).ok();
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|err| {
        let (mut at, message) = yaml_error(&err);
        if message.starts_with("missing field") {
            // serde-saphyr points at the mapping's last key: name the mapping.
            if let Some(map) = tree.as_ref().and_then(|t| mapping_with_key_at(t, at)) {
                at = map;
            }
        }
        ConfigError(format!("{origin}:{}: {message}", line_col(at)))
    })?;
    let at = |path: &[Step<'_>], key: bool| -> String {
        let loc = tree
            .as_ref()
            .map_or(Location::UNKNOWN, |t| locate(t, path, key));
        format!("{origin}:{}", line_col(loc))
    };
    let mut config = Config::default();
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in raw.proxies.into_iter().enumerate() {
        let proxy = [Step::Key("proxies"), Step::Index(i)];
        let mut spec = ProxySpec {
            name: p.name,
            listen: p.listen,
            upstream: p.upstream,
            enabled: p.enabled,
            extensions: p.extensions,
            host: p.host,
            max_frame_bytes: p.max_frame_bytes,
            max_message_bytes: p.max_message_bytes,
            protocol: p.protocol,
            tls: p.tls,
            toxics: Vec::new(),
        };
        spec.check().map_err(|(field, e)| {
            ConfigError(format!(
                "{}: {e}",
                at(&[&proxy[..], &[Step::Key(field)]].concat(), false)
            ))
        })?;
        if !names.insert(spec.name.clone()) {
            return Err(ConfigError(format!(
                "{}: duplicate proxy name {:?}: names must be unique",
                at(&[&proxy[..], &[Step::Key("name")]].concat(), false),
                spec.name
            )));
        }
        let mut toxic_names = std::collections::BTreeSet::new();
        for (j, toxic) in p.toxics.into_iter().enumerate() {
            let toxic_path = [&proxy[..], &[Step::Key("toxics"), Step::Index(j)]].concat();
            let entry = toxic.validate(0).map_err(|e| {
                let mut path = toxic_path.clone();
                if let Some(field) = &e.field {
                    path.extend(field.split('.').map(Step::Key));
                }
                ConfigError(format!(
                    "{}: proxy {:?}: {e}",
                    at(&path, e.unknown_key),
                    spec.name
                ))
            })?;
            if !toxic_names.insert(entry.spec.name.clone()) {
                return Err(ConfigError(format!(
                    "{}: proxy {:?}: duplicate toxic name {:?}: names must be unique per proxy",
                    at(&[&toxic_path[..], &[Step::Key("name")]].concat(), false),
                    spec.name,
                    entry.spec.name
                )));
            }
            spec.toxics.push(entry.spec);
        }
        config.proxies.push(spec);
    }
    Ok(config)
}

/// The position and the bare message of a serde-saphyr error (no source
/// snippet, no "at line L, column C" suffix).
pub(crate) fn yaml_error(err: &serde_saphyr::Error) -> (Location, String) {
    let at = err.location().unwrap_or(Location::UNKNOWN);
    let text = err.without_snippet().to_string();
    let suffix = format!(" at line {}, column {}", at.line(), at.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    (at, first_line(message))
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim()
        .to_string()
}

/// `LINE:COL` of a location, 1-based (`1:1` when unknown).
pub(crate) fn line_col(at: Location) -> String {
    if at == Location::UNKNOWN {
        "1:1".into()
    } else {
        format!("{}:{}", at.line(), at.column())
    }
}

/// Any YAML node, with where each key and value sits.
#[derive(Debug)]
enum Node {
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

/// A mapping key as text (keys that are not scalars read as empty).
#[derive(Debug)]
struct Key(String);

/// One step of a path into a [`Node`].
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Where the node at `path` sits: its value, or its key when `key` is set.
/// A path that stops early (a missing field) gives the deepest key or item
/// that exists.
fn locate(root: &Spanned<Node>, path: &[Step<'_>], key: bool) -> Location {
    let mut here = root;
    let mut best = root.referenced;
    for (i, step) in path.iter().enumerate() {
        match (&here.value, step) {
            (Node::Map(entries), Step::Key(name)) => {
                let Some((k, v)) = entries.iter().find(|(k, _)| k.value.0 == *name) else {
                    return best;
                };
                if key && i + 1 == path.len() {
                    return k.referenced;
                }
                best = k.referenced;
                here = v;
            }
            (Node::Seq(items), Step::Index(n)) => {
                let Some(item) = items.get(*n) else {
                    return best;
                };
                best = item.referenced;
                here = item;
            }
            _ => return best,
        }
    }
    here.referenced
}

/// The position of the mapping that has a key at `at`.
fn mapping_with_key_at(node: &Spanned<Node>, at: Location) -> Option<Location> {
    let same = |l: &Location| l.line() == at.line() && l.column() == at.column();
    match &node.value {
        Node::Map(entries) => {
            if entries.iter().any(|(k, _)| same(&k.referenced)) {
                return Some(node.referenced);
            }
            entries.iter().find_map(|(_, v)| mapping_with_key_at(v, at))
        }
        Node::Seq(items) => items.iter().find_map(|v| mapping_with_key_at(v, at)),
        Node::Scalar => None,
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i128<E>(self, _: i128) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u128<E>(self, _: u128) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_bytes<E>(self, _: &[u8]) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Node::Map(entries))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Key, E> {
                Ok(Key(String::new()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Key, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Key(String::new()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Key(String::new()))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "proxies:\n  - name: a\n    listen: 127.0.0.1:0\n    upstream: 127.0.0.1:1\n";

    /// The error for `HEAD` followed by `rest`.
    fn error(rest: &str) -> String {
        parse_str(&format!("{HEAD}{rest}"), "f.yaml")
            .expect_err("invalid test input")
            .0
    }

    fn assert_at(err: &str, at: &str, needle: &str) {
        assert!(
            err.starts_with(&format!("f.yaml:{at}: ")),
            "want {at}: {err}"
        );
        assert!(err.contains(needle), "want {needle:?}: {err}");
    }

    #[test]
    fn unknown_key_is_reported_at_the_key() {
        assert_at(&error("    bogus: 1\n"), "5:5", "bogus");
        let err = parse_str("# top\nproxies: []\nproxxies: []\n", "f.yaml").expect_err("bad key");
        assert_at(
            &err.0,
            "3:1",
            "unknown field `proxxies`, expected one of proxies",
        );
        // No snippet and no second "at line" in the message.
        assert!(
            !err.0.contains('\n') && !err.0.contains("line 3"),
            "{}",
            err.0
        );
    }

    #[test]
    fn bad_attribute_is_reported_at_its_value() {
        // `probability` three lines into the toxic.
        let err = error(
            "    toxics:\n      - type: message_loss\n        stream: upstream\n        attributes:\n          probability: 1.5\n",
        );
        assert_at(
            &err,
            "9:24",
            "probability=1.5 is invalid: valid range is 0..=1",
        );
        assert!(
            err.contains("proxy \"a\": toxic \"message_loss_upstream\""),
            "{err}"
        );
        // Flow style: the value inside the braces.
        let err = error("    toxics:\n      - type: latency\n        attributes: {latency: -5}\n");
        assert_at(&err, "7:31", "latency");
    }

    #[test]
    fn unknown_attribute_is_reported_at_its_key() {
        let err = error(
            "    toxics:\n      - type: latency\n        attributes: {latency: 300, bogus: 1}\n",
        );
        assert_at(&err, "7:36", "latency has no attribute bogus");
    }

    #[test]
    fn missing_attribute_is_reported_at_attributes_or_the_toxic() {
        let err = error("    toxics:\n      - type: latency\n        attributes: {jitter: 1}\n");
        assert_at(&err, "7:9", "latency attribute latency is missing");
        let err = error("    toxics:\n      - name: x\n        type: latency\n");
        assert_at(&err, "6:9", "latency attribute latency is missing");
    }

    #[test]
    fn toxic_fields_are_reported_at_their_values() {
        let err = error("    toxics:\n      - name: x\n        type: latencyy\n");
        assert_at(&err, "7:15", "valid types are");
        let err = error(
            "    toxics:\n      - type: latency\n        stream: sideways\n        attributes: {latency: 1}\n",
        );
        assert_at(
            &err,
            "7:17",
            "unknown variant `sideways`, expected one of upstream, downstream",
        );
        let err = error(
            "    toxics:\n      - type: latency\n        attributes: {latency: 1}\n        toxicity: 3\n",
        );
        assert_at(&err, "8:19", "toxicity 3 is out of range");
        let err = error(
            "    toxics:\n      - type: latency\n        attributes: {latency: 1}\n        schedule: {duration: 10, period: 5}\n",
        );
        assert_at(&err, "8:30", "schedule.duration 10 is longer");
        let err = error(
            "    toxics:\n      - type: latency\n        attributes: {latency: 1}\n        match: {path: 3, bogus: 1}\n",
        );
        assert_at(&err, "8:26", "unknown field `bogus`, expected one of path");
        let err = error(
            "    toxics:\n      - {name: x, type: latency, attributes: {latency: 1}}\n      - {name: x, type: latency, attributes: {latency: 2}}\n",
        );
        assert_at(&err, "7:16", "duplicate toxic name \"x\"");
    }

    #[test]
    fn proxy_fields_are_reported_at_their_values() {
        let err = parse_str(
            "proxies:\n  - name: a\n    listen: nowhere\n    upstream: 127.0.0.1:1\n",
            "f.yaml",
        )
        .expect_err("bad listen");
        assert_at(&err.0, "3:13", "listen \"nowhere\" is not an address");
        assert_at(
            &error("    max_message_bytes: 0\n"),
            "5:24",
            "must be at least 1",
        );
        let err = parse_str(
            "proxies:\n  - name: a\n    listen: 127.0.0.1:0\n    upstream: ftp://x\n",
            "f.yaml",
        )
        .expect_err("bad upstream");
        assert_at(&err.0, "4:15", "proxy \"a\"");
        let err = error("  - name: a\n    listen: 127.0.0.1:0\n    upstream: 127.0.0.1:1\n");
        assert_at(&err, "5:11", "duplicate proxy name");
        // A missing field names the mapping that lacks it.
        let err = parse_str("proxies:\n  - name: a\n    listen: 127.0.0.1:0\n", "f.yaml")
            .expect_err("no upstream");
        assert_at(&err.0, "2:5", "missing field `upstream`");
    }

    #[test]
    fn not_yaml_is_reported_where_the_parser_stopped() {
        let err = parse_str("proxies: [\n", "f.yaml").expect_err("not yaml");
        assert!(err.0.starts_with("f.yaml:1:"), "{}", err.0);
    }

    #[test]
    fn protocol_and_message_matchers_point_at_the_field() {
        assert_at(
            &error("    protocol: mqtt
"),
            "5:15",
            "invalid protocol \"mqtt\": valid choices are auto, none, socketio, graphql-ws, stomp, signalr, phoenix",
        );
        let err = error(
            "    toxics:\n      - type: message_loss\n        attributes: {probability: 1}\n        match:\n          message:\n            regex: '(open'\n",
        );
        assert_at(&err, "10:20", "match.message.regex");
        let err = error(
            "    toxics:\n      - type: stall\n        attributes: {duration: 10}\n        count: {every: 2}\n",
        );
        assert_at(&err, "8:9", "count is not allowed on a stall toxic");
        let err = error(
            "    toxics:\n      - type: message_loss\n        attributes: {probability: 1}\n        match: {message: {kind: ping}}\n",
        );
        assert!(err.contains("ping") && err.contains("heartbeat"), "{err}");
        let ok = parse_str(
            &format!("{HEAD}    protocol: socketio\n    toxics:\n      - type: message_loss\n        attributes: {{probability: 1}}\n        match: {{message: {{kind: heartbeat}}}}\n        count: {{after: 10, every: 3, limit: 5}}\n"),
            "f.yaml",
        )
        .expect("valid");
        assert_eq!(ok.proxies[0].protocol.name(), "socketio");
        assert_eq!(
            ok.proxies[0].toxics[0]
                .count
                .as_ref()
                .map(|c| (c.after, c.every, c.limit)),
            Some((10, 3, Some(5)))
        );
    }

    #[test]
    fn every_shipped_scenario_loads() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("faults");
        let mut loaded = 0;
        for dir in [root.clone(), root.join("apps")] {
            let entries = std::fs::read_dir(&dir).expect("faults/ is readable");
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    let config = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
                    assert!(!config.proxies.is_empty(), "{}", path.display());
                    loaded += 1;
                }
            }
        }
        assert!(loaded >= 20, "only {loaded} scenarios found");
    }
}
