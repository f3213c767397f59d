//! Typed changes to the proxy registry.
//!
//! The admin API turns JSON into a [`Change`] (with a [`ProxyPatch`] or a
//! [`ToxicPatch`] for updates); [`super::Server::apply`] runs it under the
//! registry's change lock. [`super::transition`] computes what a change
//! does to a proxy's settings; the registry adds the side effects
//! (listeners, connections) and publishes the result.

use serde::Deserialize;

use crate::config::{ExtensionsMode, HostMode, ProxySpec};
use crate::protocols::ProtocolSetting;
use crate::toxics::message_match::CountSpec;
use crate::toxics::{MatchSpec, ScheduleSpec, ToxicSpec};
use crate::views::ProxyView;
use crate::vocab::StreamDir;

/// Errors of registry operations (mapped to HTTP statuses by the admin API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 500 (e.g. the listen address is taken).
    #[error("{0}")]
    Internal(String),
}

impl RegistryError {
    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            RegistryError::BadRequest(_) => 400,
            RegistryError::NotFound(_) => 404,
            RegistryError::Conflict(_) => 409,
            RegistryError::Internal(_) => 500,
        }
    }
}

/// One change to the registry; [`super::Server::apply`] runs each one
/// atomically (no other change runs meanwhile, binds included).
#[derive(Debug, Clone)]
pub enum Change {
    /// Create a proxy (409 if the name exists) and bind it when enabled.
    CreateProxy(ProxySpec),
    /// Create missing proxies and update existing ones in place; a
    /// non-empty toxic list replaces the proxy's toxics.
    Populate(Vec<ProxySpec>),
    /// Update fields of a proxy: `enabled: false` disables it, a new
    /// `listen` rebinds.
    UpdateProxy {
        /// Proxy name.
        proxy: String,
        /// The fields to change.
        patch: ProxyPatch,
    },
    /// Delete a proxy: its listener stops and its connections end.
    DeleteProxy(String),
    /// Make the proxies of a reloaded config file match it: create the new
    /// ones, update the others in place (fields, `listen` rebound without
    /// ending live connections, toxics exactly as listed, unchanged ones
    /// kept as they are), and delete `forget` (proxies of the previous file
    /// that the new one no longer has). Everything is checked first.
    ApplyConfig {
        /// The file's proxies.
        proxies: Vec<ProxySpec>,
        /// Proxies to delete.
        forget: Vec<String>,
    },
    /// Enable every proxy and remove every toxic.
    Reset,
    /// Add a toxic (409 if the name exists).
    AddToxic {
        /// Proxy name.
        proxy: String,
        /// The toxic.
        toxic: ToxicSpec,
    },
    /// Update a toxic.
    UpdateToxic {
        /// Proxy name.
        proxy: String,
        /// Toxic name.
        toxic: String,
        /// The fields to change.
        patch: ToxicPatch,
    },
    /// Remove a toxic; frames it holds are released in order.
    RemoveToxic {
        /// Proxy name.
        proxy: String,
        /// Toxic name.
        toxic: String,
    },
}

/// What a change left behind, read under the same lock that made it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The proxy as it now is (create, update).
    Proxy(ProxyView),
    /// The proxies as they now are (populate).
    Proxies(Vec<ProxyView>),
    /// The toxic as it now is (add, update).
    Toxic(Box<ToxicSpec>),
    /// Nothing to show (delete, remove, reset).
    Done,
}

/// The fields a proxy update may set; absent fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyPatch {
    /// Must equal the proxy's name when given.
    pub name: Option<String>,
    /// New listen address (rebinds unless it names the bound one).
    pub listen: Option<String>,
    /// New upstream target.
    pub upstream: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// `strip` or `pass`.
    pub extensions: Option<ExtensionsMode>,
    /// `keep` or `upstream`.
    pub host: Option<HostMode>,
    /// Frame limit.
    pub max_frame_bytes: Option<u64>,
    /// Message limit.
    pub max_message_bytes: Option<u64>,
    /// `auto` or a protocol profile.
    pub protocol: Option<ProtocolSetting>,
    /// TLS on the listener (new connections use it).
    pub tls: Option<crate::config::TlsSetting>,
}

impl ProxyPatch {
    /// The fields `populate` applies in place to a proxy that keeps its
    /// listen address and upstream.
    pub fn in_place(spec: &ProxySpec) -> ProxyPatch {
        ProxyPatch {
            enabled: Some(spec.enabled),
            extensions: Some(spec.extensions),
            host: Some(spec.host),
            max_frame_bytes: Some(spec.max_frame_bytes),
            max_message_bytes: Some(spec.max_message_bytes),
            protocol: Some(spec.protocol),
            tls: spec.tls.clone(),
            ..ProxyPatch::default()
        }
    }

    /// `current` with the given fields replaced (not yet validated).
    pub fn apply(&self, current: &ProxySpec) -> Result<ProxySpec, RegistryError> {
        same_name(
            self.name.as_deref(),
            &current.name,
            "rename by deleting and creating",
        )?;
        let mut spec = current.clone();
        set(&mut spec.listen, &self.listen);
        set(&mut spec.upstream, &self.upstream);
        set(&mut spec.enabled, &self.enabled);
        set(&mut spec.extensions, &self.extensions);
        set(&mut spec.host, &self.host);
        set(&mut spec.max_frame_bytes, &self.max_frame_bytes);
        set(&mut spec.max_message_bytes, &self.max_message_bytes);
        set(&mut spec.protocol, &self.protocol);
        if self.tls.is_some() {
            spec.tls = self.tls.clone();
        }
        Ok(spec)
    }
}

/// Refuses a patch whose `name` is given and differs from `current`; `how`
/// says how to rename instead.
fn same_name(given: Option<&str>, current: &str, how: &str) -> Result<(), RegistryError> {
    match given.filter(|n| *n != current) {
        Some(name) => Err(RegistryError::BadRequest(format!(
            "name {} cannot be changed: {how}",
            serde_json::Value::from(name)
        ))),
        None => Ok(()),
    }
}

/// The fields a toxic update may set: `attributes` are merged into the
/// existing ones (as in Toxiproxy), the other given fields replace theirs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToxicPatch {
    /// Must equal the toxic's name when given.
    pub name: Option<String>,
    /// New type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// New stream.
    pub stream: Option<StreamDir>,
    /// New toxicity.
    pub toxicity: Option<f64>,
    /// Attributes to set; the others keep their value.
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// New `match`.
    #[serde(rename = "match")]
    pub matcher: Option<MatchSpec>,
    /// New `schedule`.
    pub schedule: Option<ScheduleSpec>,
    /// New `count`.
    pub count: Option<CountSpec>,
}

impl ToxicPatch {
    /// `current` with the patch applied (not yet validated).
    pub fn apply(&self, current: &ToxicSpec) -> Result<ToxicSpec, RegistryError> {
        same_name(
            self.name.as_deref(),
            &current.name,
            "remove and add the toxic instead",
        )?;
        let mut spec = current.clone();
        set(&mut spec.kind, &self.kind);
        set(&mut spec.stream, &self.stream);
        set(&mut spec.toxicity, &self.toxicity);
        for (key, value) in &self.attributes {
            spec.attributes.insert(key.clone(), value.clone());
        }
        if self.matcher.is_some() {
            spec.matcher = self.matcher.clone();
        }
        if self.schedule.is_some() {
            spec.schedule = self.schedule.clone();
        }
        if self.count.is_some() {
            spec.count = self.count.clone();
        }
        Ok(spec)
    }
}

fn set<T: Clone>(field: &mut T, value: &Option<T>) {
    if let Some(value) = value {
        *field = value.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_toxic_patch_replaces_match_and_count_when_given() {
        let current: ToxicSpec = serde_json::from_value(json!({
            "name": "n", "type": "latency", "attributes": {"latency": 1},
            "match": {"path": "/a"}, "count": {"after": 1, "every": 2}
        }))
        .expect("valid test input");
        let keep: ToxicPatch = serde_json::from_value(json!({"toxicity": 0.5})).expect("patch");
        let kept = keep.apply(&current).expect("applies");
        assert_eq!(
            (kept.matcher, kept.count),
            (current.matcher.clone(), current.count.clone())
        );
        let patch: ToxicPatch = serde_json::from_value(json!({
            "match": {"message": {"kind": "heartbeat"}}, "count": {"limit": 5}
        }))
        .expect("patch");
        let patched = patch.apply(&current).expect("applies");
        assert_eq!(
            serde_json::to_value(&patched).expect("json")["match"],
            json!({"message": {"kind": "heartbeat"}})
        );
        assert_eq!(
            patched.count,
            Some(CountSpec {
                after: 0,
                every: 1,
                limit: Some(5)
            })
        );
    }
}
