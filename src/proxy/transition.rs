//! What a typed change does to one proxy's settings: pure transitions from
//! the current [`ProxySettings`] to the next (and what must happen to the
//! listener), without sockets or locks. The registry runs them under its
//! change lock and adds the side effects.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::change::{ProxyPatch, RegistryError, ToxicPatch};
use super::shared::ProxySettings;
use super::tls_listener::ListenerTls;
use crate::config::ProxySpec;
use crate::toxics::{ToxicEntry, ToxicSpec};
use crate::vocab::UpstreamTarget;

/// Hands out toxic versions: a new one for every validated toxic, so links
/// tell an updated toxic from the one it replaces.
#[derive(Debug)]
pub struct Versions(AtomicU64);

impl Default for Versions {
    fn default() -> Versions {
        Versions(AtomicU64::new(1))
    }
}

impl Versions {
    /// The next version.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// What a change does to a proxy's listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerPlan {
    /// Leave it as it is.
    Keep,
    /// Stop it and end the proxy's connections (disable).
    Stop,
    /// Bind the new `listen` (enable).
    Start,
    /// Stop, end the connections, bind the new `listen` (rebind).
    Restart,
}

impl ListenerPlan {
    fn for_change(was_enabled: bool, enabled: bool, rebind: bool) -> ListenerPlan {
        match (was_enabled, enabled) {
            (true, false) => ListenerPlan::Stop,
            (false, true) => ListenerPlan::Start,
            (true, true) if rebind => ListenerPlan::Restart,
            _ => ListenerPlan::Keep,
        }
    }
}

/// Whether `listen` names the bound address (`HOST:0` matches any port on HOST).
pub fn listen_matches(listen: &str, bound: Option<SocketAddr>) -> bool {
    match (listen.parse::<SocketAddr>(), bound) {
        (Ok(want), Some(bound)) => want == bound || (want.port() == 0 && want.ip() == bound.ip()),
        _ => false,
    }
}

/// Validates toxic specs (names filled in); 409 on a name given twice.
fn validate_toxics(
    specs: &[ToxicSpec],
    versions: &Versions,
) -> Result<Vec<Arc<ToxicEntry>>, RegistryError> {
    let mut out: Vec<Arc<ToxicEntry>> = Vec::new();
    for spec in specs {
        let entry = validate_toxic(spec.clone(), versions)?;
        if out.iter().any(|t| t.spec.name == entry.spec.name) {
            return Err(RegistryError::Conflict(format!(
                "toxic already exists: {}",
                entry.spec.name
            )));
        }
        out.push(Arc::new(entry));
    }
    Ok(out)
}

fn validate_toxic(spec: ToxicSpec, versions: &Versions) -> Result<ToxicEntry, RegistryError> {
    spec.validate(versions.next())
        .map_err(|e| RegistryError::BadRequest(e.to_string()))
}

fn not_found(toxic: &str) -> RegistryError {
    RegistryError::NotFound(format!("toxic not found: {toxic}"))
}

impl ProxySettings {
    /// Settings of a new proxy: the spec checked, its toxics validated
    /// (default names filled in), the upstream parsed.
    pub fn from_spec(mut spec: ProxySpec, versions: &Versions) -> Result<Self, RegistryError> {
        spec.validate().map_err(RegistryError::BadRequest)?;
        let toxics = validate_toxics(&spec.toxics, versions)?;
        spec.toxics = toxics.iter().map(|t| t.spec.clone()).collect();
        let upstream = UpstreamTarget::parse(&spec.upstream).map_err(RegistryError::BadRequest)?;
        let tls = match &spec.tls {
            Some(setting) => Some(Arc::new(
                ListenerTls::load(setting, &spec.listen).map_err(RegistryError::BadRequest)?,
            )),
            None => None,
        };
        Ok(ProxySettings {
            upstream,
            toxics,
            tls,
            max_frame_bytes: spec.max_frame_bytes,
            max_message_bytes: spec.max_message_bytes,
            spec,
        })
    }

    /// The proxy fields patched, and what must happen to the listener.
    /// `bound` is the running listener's address: a `listen` that names
    /// it (or `HOST:0` on its host) keeps it and reports the real address.
    pub fn patched(
        &self,
        patch: &ProxyPatch,
        bound: Option<SocketAddr>,
    ) -> Result<(Self, ListenerPlan), RegistryError> {
        let old = &self.spec;
        let mut spec = patch.apply(old)?;
        spec.validate().map_err(RegistryError::BadRequest)?;
        let rebind = spec.listen != old.listen && !listen_matches(&spec.listen, bound);
        if let (false, Some(bound)) = (rebind, bound) {
            spec.listen = bound.to_string();
        }
        let plan = ListenerPlan::for_change(old.enabled, spec.enabled, rebind);
        let next = ProxySettings {
            upstream: UpstreamTarget::parse(&spec.upstream).map_err(RegistryError::BadRequest)?,
            toxics: self.toxics.clone(),
            max_frame_bytes: spec.max_frame_bytes,
            max_message_bytes: spec.max_message_bytes,
            tls: if spec.tls == old.tls {
                self.tls.clone()
            } else {
                match &spec.tls {
                    Some(setting) => Some(Arc::new(
                        ListenerTls::load(setting, &spec.listen)
                            .map_err(RegistryError::BadRequest)?,
                    )),
                    None => None,
                }
            },
            spec,
        };
        Ok((next, plan))
    }

    /// These settings with `toxics` as the toxic list.
    pub fn with_toxics(&self, toxics: Vec<Arc<ToxicEntry>>) -> Self {
        let mut next = self.clone();
        next.spec.toxics = toxics.iter().map(|t| t.spec.clone()).collect();
        next.toxics = toxics;
        next
    }

    /// A toxic added at the end of the list; also returns it as stored.
    pub fn with_toxic_added(
        &self,
        toxic: ToxicSpec,
        versions: &Versions,
    ) -> Result<(Self, ToxicSpec), RegistryError> {
        let entry = validate_toxic(toxic, versions)?;
        if self.toxics.iter().any(|t| t.spec.name == entry.spec.name) {
            return Err(RegistryError::Conflict(format!(
                "toxic already exists: {}",
                entry.spec.name
            )));
        }
        let stored = entry.spec.clone();
        let mut toxics = self.toxics.clone();
        toxics.push(Arc::new(entry));
        Ok((self.with_toxics(toxics), stored))
    }

    /// The toxic `name` patched in place (a new version, a new timer
    /// origin); also returns it as stored.
    pub fn with_toxic_updated(
        &self,
        name: &str,
        patch: &ToxicPatch,
        versions: &Versions,
    ) -> Result<(Self, ToxicSpec), RegistryError> {
        let index = self
            .toxics
            .iter()
            .position(|t| t.spec.name == name)
            .ok_or_else(|| not_found(name))?;
        let spec = patch.apply(&self.toxics[index].spec)?;
        let entry = validate_toxic(spec, versions)?;
        let stored = entry.spec.clone();
        let mut toxics = self.toxics.clone();
        toxics[index] = Arc::new(entry);
        Ok((self.with_toxics(toxics), stored))
    }

    /// The toxic `name` removed.
    pub fn without_toxic(&self, name: &str) -> Result<Self, RegistryError> {
        let mut toxics = self.toxics.clone();
        toxics.retain(|t| t.spec.name != name);
        if toxics.len() == self.toxics.len() {
            return Err(not_found(name));
        }
        Ok(self.with_toxics(toxics))
    }

    /// Enabled, without toxics (`POST /reset`).
    pub fn reset(&self) -> Self {
        let mut next = self.with_toxics(Vec::new());
        next.spec.enabled = true;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(toxics: serde_json::Value) -> ProxySettings {
        settings_with(toxics, &Versions::default())
    }

    fn settings_with(toxics: serde_json::Value, versions: &Versions) -> ProxySettings {
        let mut spec = ProxySpec::new("p", "127.0.0.1:0", "127.0.0.1:9");
        spec.toxics = serde_json::from_value(toxics).expect("toxics");
        ProxySettings::from_spec(spec, versions).expect("valid")
    }

    fn toxic(value: serde_json::Value) -> ToxicSpec {
        serde_json::from_value(value).expect("toxic")
    }

    fn names(s: &ProxySettings) -> Vec<&str> {
        // The spec's list and the validated list never disagree.
        let specs: Vec<&str> = s.spec.toxics.iter().map(|t| t.name.as_str()).collect();
        let entries: Vec<&str> = s.toxics.iter().map(|t| t.spec.name.as_str()).collect();
        assert_eq!(specs, entries);
        entries
    }

    fn status<T: std::fmt::Debug>(result: Result<T, RegistryError>) -> u16 {
        result.expect_err("an error").status()
    }

    #[test]
    fn a_new_proxy_gets_default_toxic_names_and_refuses_duplicates() {
        let s = settings(json!([{"type": "latency", "attributes": {"latency": 5}}]));
        assert_eq!(names(&s), ["latency_downstream"]);
        let mut spec = ProxySpec::new("p", "127.0.0.1:0", "127.0.0.1:9");
        spec.toxics = vec![
            toxic(json!({"type": "latency", "attributes": {"latency": 5}})),
            toxic(json!({"type": "latency", "attributes": {"latency": 6}})),
        ];
        let versions = Versions::default();
        assert_eq!(
            status(ProxySettings::from_spec(spec.clone(), &versions)),
            409
        );
        spec.toxics.clear();
        spec.max_frame_bytes = 0;
        assert_eq!(status(ProxySettings::from_spec(spec, &versions)), 400);
    }

    #[test]
    fn toxics_are_added_at_the_end_once_per_name() {
        let versions = Versions::default();
        let s0 = settings(json!([]));
        let (s1, stored) = s0
            .with_toxic_added(
                toxic(json!({"name": "a", "type": "latency", "attributes": {"latency": 1}})),
                &versions,
            )
            .expect("add a");
        assert_eq!(stored.name, "a");
        let (s2, _) = s1
            .with_toxic_added(
                toxic(json!({"type": "message_loss", "attributes": {"probability": 0}})),
                &versions,
            )
            .expect("add unnamed");
        assert_eq!(names(&s2), ["a", "message_loss_downstream"]);
        assert!(names(&s0).is_empty(), "the current settings are untouched");
        let again = toxic(json!({"name": "a", "type": "latency", "attributes": {"latency": 2}}));
        assert_eq!(status(s2.with_toxic_added(again, &versions)), 409);
        let bad = toxic(json!({"name": "b", "type": "latency", "attributes": {}}));
        assert_eq!(status(s2.with_toxic_added(bad, &versions)), 400);
    }

    #[test]
    fn a_toxic_update_merges_attributes_and_replaces_the_rest() {
        let versions = Versions::default();
        let s0 = settings_with(
            json!([
                {"name": "a", "type": "latency", "attributes": {"latency": 300}},
                {"name": "b", "type": "latency", "attributes": {"latency": 1}}
            ]),
            &versions,
        );
        let patch: ToxicPatch = serde_json::from_value(json!({
            "toxicity": 0.5, "attributes": {"jitter": 10}, "schedule": {"duration": 5, "period": 10}
        }))
        .expect("patch");
        let (s1, stored) = s0
            .with_toxic_updated("a", &patch, &versions)
            .expect("update");
        assert_eq!(
            stored.attributes,
            *json!({"latency": 300, "jitter": 10})
                .as_object()
                .expect("map")
        );
        assert_eq!(stored.toxicity, 0.5);
        assert_eq!(stored.schedule.as_ref().map(|s| s.period), Some(10));
        assert_eq!(names(&s1), ["a", "b"], "the order is kept");
        assert_eq!(s1.toxics[0].spec, stored);
        assert_ne!(s1.toxics[0].version, s0.toxics[0].version, "a new version");
        assert_eq!(s1.toxics[1].version, s0.toxics[1].version, "b untouched");
        assert_eq!(
            s0.toxics[0].spec.toxicity, 1.0,
            "the current settings are untouched"
        );

        let same_name: ToxicPatch = serde_json::from_value(json!({"name": "a"})).expect("patch");
        assert!(s1.with_toxic_updated("a", &same_name, &versions).is_ok());
        let rename: ToxicPatch = serde_json::from_value(json!({"name": "z"})).expect("patch");
        let err = s1
            .with_toxic_updated("a", &rename, &versions)
            .expect_err("rename");
        assert_eq!(
            err.to_string(),
            r#"name "z" cannot be changed: remove and add the toxic instead"#
        );
        assert_eq!(
            status(s1.with_toxic_updated("nope", &same_name, &versions)),
            404
        );
        let invalid: ToxicPatch = serde_json::from_value(json!({"toxicity": 2.0})).expect("patch");
        assert_eq!(status(s1.with_toxic_updated("a", &invalid, &versions)), 400);
        assert!(serde_json::from_value::<ToxicPatch>(json!({"bogus": 1})).is_err());
    }

    #[test]
    fn a_removed_toxic_is_gone_and_a_second_remove_is_404() {
        let s0 = settings(json!([
            {"name": "a", "type": "latency", "attributes": {"latency": 1}},
            {"name": "b", "type": "latency", "attributes": {"latency": 1}}
        ]));
        let s1 = s0.without_toxic("a").expect("remove");
        assert_eq!(names(&s1), ["b"]);
        assert_eq!(status(s1.without_toxic("a")), 404);
        let reset = s1.reset();
        assert!(names(&reset).is_empty());
        assert!(reset.spec.enabled);
    }

    #[test]
    fn a_proxy_patch_says_what_happens_to_the_listener() {
        let bound: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        let mut s =
            settings(json!([{"name": "a", "type": "latency", "attributes": {"latency": 1}}]));
        s.spec.listen = bound.to_string();
        let patch =
            |v: serde_json::Value| -> ProxyPatch { serde_json::from_value(v).expect("patch") };
        let plan = |s: &ProxySettings, v, bound| s.patched(&patch(v), bound).map(|(_, p)| p);

        assert_eq!(
            plan(&s, json!({"enabled": false}), Some(bound)),
            Ok(ListenerPlan::Stop)
        );
        assert_eq!(
            plan(&s, json!({"listen": "127.0.0.1:4001"}), Some(bound)),
            Ok(ListenerPlan::Restart)
        );
        // HOST:0 on the bound host keeps the port and reports it.
        let (next, p) = s
            .patched(&patch(json!({"listen": "127.0.0.1:0"})), Some(bound))
            .expect("ok");
        assert_eq!(
            (p, next.spec.listen.as_str()),
            (ListenerPlan::Keep, "127.0.0.1:4000")
        );
        let (next, p) = s
            .patched(
                &patch(json!({"upstream": "ws://h:1/x", "max_frame_bytes": 7})),
                Some(bound),
            )
            .expect("ok");
        assert_eq!(p, ListenerPlan::Keep);
        assert_eq!(
            (next.upstream.prefix.as_str(), next.max_frame_bytes),
            ("/x", 7)
        );
        assert_eq!(names(&next), ["a"], "toxics are kept");

        let mut off = s.clone();
        off.spec.enabled = false;
        assert_eq!(
            plan(&off, json!({"enabled": true}), None),
            Ok(ListenerPlan::Start)
        );
        assert_eq!(
            plan(&off, json!({"listen": "127.0.0.1:4001"}), None),
            Ok(ListenerPlan::Keep)
        );

        let err = s
            .patched(&patch(json!({"name": "q"})), Some(bound))
            .expect_err("rename");
        assert_eq!(
            err.to_string(),
            r#"name "q" cannot be changed: rename by deleting and creating"#
        );
        assert_eq!(
            status(s.patched(&patch(json!({"upstream": "http://h:1"})), None)),
            400
        );
        assert!(serde_json::from_value::<ProxyPatch>(json!({"toxics": []})).is_err());
    }

    #[test]
    fn populate_in_place_leaves_listen_and_upstream_alone() {
        let mut wanted = ProxySpec::new("p", "0.0.0.0:1", "other:2");
        wanted.enabled = false;
        wanted.max_message_bytes = 9;
        let s = settings(json!([]));
        let (next, plan) = s.patched(&ProxyPatch::in_place(&wanted), None).expect("ok");
        assert_eq!(
            (next.spec.listen.as_str(), next.spec.upstream.as_str()),
            ("127.0.0.1:0", "127.0.0.1:9")
        );
        assert_eq!((next.spec.enabled, next.max_message_bytes), (false, 9));
        assert_eq!(plan, ListenerPlan::Stop);
    }
}
