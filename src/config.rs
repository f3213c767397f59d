//! Proxy specs and the YAML config file (SPEC §4).
//!
//! Unknown keys, unknown toxic types, out-of-range values and missing
//! attributes are errors reported as `FILE:LINE:COL: message`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

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
            toxics: Vec::new(),
        }
    }

    /// Checks the fields that serde cannot (addresses, limits, names).
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("proxy name is empty: a name is required".into());
        }
        crate::vocab::UpstreamTarget::parse(&self.upstream)
            .map_err(|e| format!("proxy {:?}: {e}", self.name))?;
        if self.listen.parse::<std::net::SocketAddr>().is_err() && !self.listen.contains(':') {
            return Err(format!(
                "proxy {:?}: listen {:?} is not an address: expected host:port",
                self.name, self.listen
            ));
        }
        if self.max_frame_bytes == 0 || self.max_message_bytes == 0 {
            return Err(format!(
                "proxy {:?}: max_frame_bytes and max_message_bytes must be at least 1",
                self.name
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    proxies: Vec<Spanned<RawProxy>>,
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
    toxics: Vec<Spanned<ToxicSpec>>,
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

/// Parses and validates a YAML config; `origin` names the file in errors.
pub fn parse_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|err| {
        let (line, col) = err
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        ConfigError(format!(
            "{origin}:{line}:{col}: {}",
            first_line(&err.to_string())
        ))
    })?;
    let mut config = Config::default();
    let mut names = std::collections::BTreeSet::new();
    for proxy in raw.proxies {
        let at = |loc: &serde_saphyr::Location| format!("{origin}:{}:{}", loc.line(), loc.column());
        let where_proxy = at(&proxy.referenced);
        let p = proxy.value;
        let mut spec = ProxySpec {
            name: p.name,
            listen: p.listen,
            upstream: p.upstream,
            enabled: p.enabled,
            extensions: p.extensions,
            host: p.host,
            max_frame_bytes: p.max_frame_bytes,
            max_message_bytes: p.max_message_bytes,
            toxics: Vec::new(),
        };
        spec.validate()
            .map_err(|e| ConfigError(format!("{where_proxy}: {e}")))?;
        if !names.insert(spec.name.clone()) {
            return Err(ConfigError(format!(
                "{where_proxy}: duplicate proxy name {:?}: names must be unique",
                spec.name
            )));
        }
        let mut toxic_names = std::collections::BTreeSet::new();
        for toxic in p.toxics {
            let where_toxic = at(&toxic.referenced);
            let entry = toxic
                .value
                .validate(0)
                .map_err(|e| ConfigError(format!("{where_toxic}: proxy {:?}: {e}", spec.name)))?;
            if !toxic_names.insert(entry.spec.name.clone()) {
                return Err(ConfigError(format!(
                    "{where_toxic}: proxy {:?}: duplicate toxic name {:?}: names must be unique per proxy",
                    spec.name, entry.spec.name
                )));
            }
            spec.toxics.push(entry.spec);
        }
        config.proxies.push(spec);
    }
    Ok(config)
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let err = parse_str(
            "proxies:\n  - name: a\n    listen: 127.0.0.1:0\n    upstream: 127.0.0.1:1\n    bogus: 1\n",
            "f.yaml",
        )
        .expect_err("unknown key");
        assert!(err.0.starts_with("f.yaml:5:"), "{}", err.0);
        assert!(err.0.contains("bogus"), "{}", err.0);
    }

    #[test]
    fn toxic_errors_name_file_line_and_reason() {
        let err = parse_str(
            "proxies:\n  - name: a\n    listen: 127.0.0.1:0\n    upstream: 127.0.0.1:1\n    toxics:\n      - type: latency\n        attributes: {latency: -5}\n",
            "f.yaml",
        )
        .expect_err("bad attribute");
        assert!(err.0.starts_with("f.yaml:6:"), "{}", err.0);
        assert!(err.0.contains("latency"), "{}", err.0);
        let err = parse_str(
            "proxies:\n  - name: a\n    listen: 127.0.0.1:0\n    upstream: 127.0.0.1:1\n    toxics:\n      - type: nope\n",
            "f.yaml",
        )
        .expect_err("bad type");
        assert!(err.0.contains("valid types are"), "{}", err.0);
    }
}
