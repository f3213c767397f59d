//! The proxy: a registry of named proxies, each with a listener, live
//! connections and a toxic list that links re-read between frames.
//!
//! * [`listener`]: the accept loop (bounded, no busy loop on EMFILE).
//! * [`handshake`]: hyper on both sides of the upgrade, plain HTTP pass-through.
//! * [`relay`]: the two links of a connection.
//! * [`conn`]: state shared by the links of one connection.
//! * [`workers`]: one single-threaded runtime per core that connections live on.

pub mod conn;
pub mod handshake;
pub mod listener;
pub mod relay;
pub mod tls;
pub mod workers;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::ProxySpec;
use crate::metrics::{Metrics, ProxyMetrics};
use crate::toxics::{CutMode, StreamDir, ToxicEntry, ToxicSpec};
use conn::ConnShared;

pub use crate::vocab::UpstreamTarget;

/// A consistent snapshot of a proxy's settings, read by links between frames.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// The spec (with `listen` set to the bound address once bound).
    pub spec: ProxySpec,
    /// Parsed upstream.
    pub upstream: UpstreamTarget,
    /// Validated toxics, in order.
    pub toxics: Vec<Arc<ToxicEntry>>,
    /// Copied from the spec for the hot path.
    pub max_frame_bytes: u64,
    /// Copied from the spec for the hot path.
    pub max_message_bytes: u64,
}

/// One proxy's state shared by its listener, its connections and the API.
pub struct ProxyShared {
    /// Name (also a metric label).
    pub name: String,
    /// `--seed`.
    pub seed: Option<u64>,
    /// Pre-resolved metric handles.
    pub metrics: ProxyMetrics,
    /// Current settings.
    pub settings: ArcSwap<ProxySettings>,
    generation: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<ConnShared>>>,
    next_ordinal: AtomicU64,
    listener: Mutex<Option<listener::Running>>,
    /// Upper bound of concurrent connections (from the open-file limit).
    pub max_connections: usize,
}

impl ProxyShared {
    /// Bumped on every change of settings; links compare it between frames.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn store(&self, settings: ProxySettings) {
        self.settings.store(Arc::new(settings));
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Wake idle links, so that timers of toxics added to a silent
        // connection start and frames held by a removed toxic go at once.
        if let Ok(conns) = self.conns.lock() {
            for conn in conns.values() {
                conn.wake_links();
            }
        }
    }

    /// The next connection ordinal.
    pub fn next_ordinal(&self) -> u64 {
        self.next_ordinal.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a live connection.
    pub fn register(&self, conn: Arc<ConnShared>) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.insert(conn.id, conn);
        }
        self.metrics.connections_active.inc();
        self.metrics.connections_total.inc();
    }

    /// Forgets a connection that ended.
    pub fn unregister(&self, id: u64) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(&id);
        }
        self.metrics.connections_active.dec();
    }

    /// Live connections.
    pub fn connections(&self) -> Vec<Arc<ConnShared>> {
        let mut list: Vec<_> = self
            .conns
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        list.sort_by_key(|c| c.id);
        list
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// The bound listen address, when enabled.
    pub fn bound_addr(&self) -> Option<SocketAddr> {
        self.listener.lock().ok()?.as_ref().map(|l| l.addr)
    }
}

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

pub use crate::views::{ConnectionView, ProxyView, StreamView};

/// The set of proxies of one running `wsfault proxy`.
pub struct Server {
    proxies: RwLock<BTreeMap<String, Arc<ProxyShared>>>,
    /// Shared metrics.
    pub metrics: Metrics,
    /// `--seed`.
    pub seed: Option<u64>,
    toxic_version: AtomicU64,
    /// Per-proxy cap on concurrent connections.
    pub max_connections: usize,
    /// Serialises create/update/delete so binds and maps stay consistent.
    admin_lock: tokio::sync::Mutex<()>,
}

impl Server {
    /// A server with no proxies.
    pub fn new(seed: Option<u64>) -> Arc<Server> {
        Arc::new(Server {
            proxies: RwLock::new(BTreeMap::new()),
            metrics: Metrics::new(),
            seed,
            toxic_version: AtomicU64::new(1),
            max_connections: listener::connection_capacity(),
            admin_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn get_proxy(&self, name: &str) -> Result<Arc<ProxyShared>, RegistryError> {
        self.proxies
            .read()
            .ok()
            .and_then(|p| p.get(name).cloned())
            .ok_or_else(|| RegistryError::NotFound(format!("proxy not found: {name}")))
    }

    /// The running proxy named `name`.
    pub fn proxy(&self, name: &str) -> Option<Arc<ProxyShared>> {
        self.get_proxy(name).ok()
    }

    fn validate_toxics(&self, specs: &[ToxicSpec]) -> Result<Vec<Arc<ToxicEntry>>, RegistryError> {
        let mut out: Vec<Arc<ToxicEntry>> = Vec::new();
        for spec in specs {
            let entry = spec
                .clone()
                .validate(self.toxic_version.fetch_add(1, Ordering::Relaxed))
                .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
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

    /// Creates a proxy (and binds it when enabled). 409 if the name exists.
    pub async fn create(self: &Arc<Self>, mut spec: ProxySpec) -> Result<ProxyView, RegistryError> {
        let _guard = self.admin_lock.lock().await;
        spec.validate().map_err(RegistryError::BadRequest)?;
        if self.proxy(&spec.name).is_some() {
            return Err(RegistryError::Conflict(format!(
                "proxy already exists: {}",
                spec.name
            )));
        }
        let toxics = self.validate_toxics(&spec.toxics)?;
        spec.toxics = toxics.iter().map(|t| t.spec.clone()).collect();
        let upstream = UpstreamTarget::parse(&spec.upstream).map_err(RegistryError::BadRequest)?;
        let proxy = Arc::new(ProxyShared {
            name: spec.name.clone(),
            seed: self.seed,
            metrics: self.metrics.for_proxy(&spec.name),
            settings: ArcSwap::from_pointee(ProxySettings {
                max_frame_bytes: spec.max_frame_bytes,
                max_message_bytes: spec.max_message_bytes,
                spec: spec.clone(),
                upstream,
                toxics,
            }),
            generation: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
            next_ordinal: AtomicU64::new(0),
            listener: Mutex::new(None),
            max_connections: self.max_connections,
        });
        if spec.enabled {
            self.start_listener(&proxy).await?;
        }
        if let Ok(mut proxies) = self.proxies.write() {
            proxies.insert(spec.name.clone(), proxy.clone());
        }
        Ok(view(&proxy))
    }

    async fn start_listener(
        self: &Arc<Self>,
        proxy: &Arc<ProxyShared>,
    ) -> Result<(), RegistryError> {
        let listen = proxy.settings.load().spec.listen.clone();
        let running = listener::start(&listen, proxy.clone()).await.map_err(|e| {
            RegistryError::Internal(format!(
                "proxy {}: cannot listen on {listen}: {e}",
                proxy.name
            ))
        })?;
        let addr = running.addr;
        if let Ok(mut slot) = proxy.listener.lock() {
            *slot = Some(running);
        }
        let mut settings = (**proxy.settings.load()).clone();
        settings.spec.listen = addr.to_string();
        proxy.store(settings);
        tracing::info!(proxy = %proxy.name, listen = %addr, upstream = %proxy.settings.load().spec.upstream, "proxy listening");
        Ok(())
    }

    async fn stop_listener(proxy: &ProxyShared) {
        let running = proxy.listener.lock().ok().and_then(|mut slot| slot.take());
        if let Some(running) = running {
            running.stop().await;
        }
    }

    /// Stops the listener and cuts the connections of a proxy.
    async fn disable(proxy: &ProxyShared) {
        Self::stop_listener(proxy).await;
        for conn in proxy.connections() {
            conn.cut(CutMode::Fin);
        }
    }

    /// Creates or updates every proxy of the list (idempotent).
    pub async fn populate(
        self: &Arc<Self>,
        specs: Vec<ProxySpec>,
    ) -> Result<Vec<ProxyView>, RegistryError> {
        for spec in &specs {
            spec.validate().map_err(RegistryError::BadRequest)?;
            self.validate_toxics(&spec.toxics)?;
        }
        let mut out = Vec::new();
        for spec in specs {
            match self.proxy(&spec.name) {
                None => out.push(self.create(spec).await?),
                Some(existing) => {
                    let current = existing.settings.load().spec.clone();
                    let same_place = current.upstream == spec.upstream
                        && (current.listen == spec.listen
                            || listen_matches(&spec.listen, existing.bound_addr()));
                    if !same_place {
                        self.delete(&spec.name).await?;
                        out.push(self.create(spec).await?);
                        continue;
                    }
                    // Same listen and upstream: keep the listener and its
                    // connections (no rebinding), apply the other fields.
                    if current.enabled != spec.enabled
                        || current.extensions != spec.extensions
                        || current.host != spec.host
                        || current.max_frame_bytes != spec.max_frame_bytes
                        || current.max_message_bytes != spec.max_message_bytes
                    {
                        let patch = serde_json::json!({
                            "enabled": spec.enabled,
                            "extensions": spec.extensions,
                            "host": spec.host,
                            "max_frame_bytes": spec.max_frame_bytes,
                            "max_message_bytes": spec.max_message_bytes,
                        });
                        self.update(&spec.name, &patch).await?;
                    }
                    // Toxics given in the body replace the proxy's list (an
                    // absent or empty list keeps it, as in Toxiproxy).
                    let toxics = self.validate_toxics(&spec.toxics)?;
                    let wanted: Vec<ToxicSpec> = toxics.iter().map(|t| t.spec.clone()).collect();
                    if !toxics.is_empty() && existing.settings.load().spec.toxics != wanted {
                        let mut settings = (**existing.settings.load()).clone();
                        settings.spec.toxics = wanted;
                        settings.toxics = toxics;
                        existing.store(settings);
                    }
                    out.push(view(&existing));
                }
            }
        }
        Ok(out)
    }

    /// All proxies.
    pub fn list(&self) -> Vec<ProxyView> {
        self.proxies
            .read()
            .map(|p| p.values().map(|proxy| view(proxy)).collect())
            .unwrap_or_default()
    }

    /// One proxy.
    pub fn get(&self, name: &str) -> Result<ProxyView, RegistryError> {
        Ok(view(&*self.get_proxy(name)?))
    }

    /// Updates `listen`, `upstream`, `enabled` (and our extra fields) from a JSON patch.
    pub async fn update(
        self: &Arc<Self>,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<ProxyView, RegistryError> {
        let _guard = self.admin_lock.lock().await;
        let proxy = self.get_proxy(name)?;
        let obj = patch
            .as_object()
            .ok_or_else(|| RegistryError::BadRequest("body must be a JSON object".into()))?;
        let mut settings = (**proxy.settings.load()).clone();
        let old = settings.spec.clone();
        let mut spec_json = serde_json::to_value(&settings.spec)
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        for (key, value) in obj {
            match key.as_str() {
                "name" => {
                    if value.as_str() != Some(name) {
                        return Err(RegistryError::BadRequest(format!(
                            "name {value} cannot be changed: rename by deleting and creating"
                        )));
                    }
                }
                "toxics" => {}
                "listen" | "upstream" | "enabled" | "extensions" | "host" | "max_frame_bytes" | "max_message_bytes" => {
                    spec_json[key] = value.clone();
                }
                other => {
                    return Err(RegistryError::BadRequest(format!(
                        "unknown field {other:?}: valid fields are name, listen, upstream, enabled, extensions, host, max_frame_bytes, max_message_bytes"
                    )))
                }
            }
        }
        let mut new_spec: ProxySpec = serde_json::from_value(spec_json)
            .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        new_spec.validate().map_err(RegistryError::BadRequest)?;
        let bound = proxy.bound_addr();
        let rebind = new_spec.listen != old.listen && !listen_matches(&new_spec.listen, bound);
        if let (false, Some(bound)) = (rebind, bound) {
            // `127.0.0.1:0` matches the port already bound: keep reporting the real address.
            new_spec.listen = bound.to_string();
        }
        settings.upstream =
            UpstreamTarget::parse(&new_spec.upstream).map_err(RegistryError::BadRequest)?;
        settings.max_frame_bytes = new_spec.max_frame_bytes;
        settings.max_message_bytes = new_spec.max_message_bytes;
        settings.spec = new_spec.clone();
        proxy.store(settings);
        if !new_spec.enabled && old.enabled {
            Self::disable(&proxy).await;
        } else if new_spec.enabled && (!old.enabled || rebind) {
            if old.enabled {
                Self::disable(&proxy).await;
            }
            if let Err(err) = self.start_listener(&proxy).await {
                let mut settings = (**proxy.settings.load()).clone();
                settings.spec.enabled = false;
                proxy.store(settings);
                return Err(err);
            }
        }
        Ok(view(&proxy))
    }

    /// Deletes a proxy: its listener stops and its connections end.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let _guard = self.admin_lock.lock().await;
        let proxy = self.get_proxy(name)?;
        Self::disable(&proxy).await;
        if let Ok(mut proxies) = self.proxies.write() {
            proxies.remove(name);
        }
        Ok(())
    }

    /// The toxics of a proxy.
    pub fn toxics(&self, proxy: &str) -> Result<Vec<ToxicSpec>, RegistryError> {
        Ok(view(&*self.get_proxy(proxy)?).toxics)
    }

    /// One toxic.
    pub fn toxic(&self, proxy: &str, toxic: &str) -> Result<ToxicSpec, RegistryError> {
        self.toxics(proxy)?
            .into_iter()
            .find(|t| t.name == toxic)
            .ok_or_else(|| RegistryError::NotFound(format!("toxic not found: {toxic}")))
    }

    /// Adds a toxic; live connections pick it up from their next frame.
    pub fn add_toxic(&self, proxy: &str, spec: ToxicSpec) -> Result<ToxicSpec, RegistryError> {
        let proxy = self.get_proxy(proxy)?;
        let entry = spec
            .validate(self.toxic_version.fetch_add(1, Ordering::Relaxed))
            .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        let mut settings = (**proxy.settings.load()).clone();
        if settings
            .toxics
            .iter()
            .any(|t| t.spec.name == entry.spec.name)
        {
            return Err(RegistryError::Conflict(format!(
                "toxic already exists: {}",
                entry.spec.name
            )));
        }
        let out = entry.spec.clone();
        settings.toxics.push(Arc::new(entry));
        settings.spec.toxics = settings.toxics.iter().map(|t| t.spec.clone()).collect();
        proxy.store(settings);
        Ok(out)
    }

    /// Updates a toxic from a JSON patch (`attributes` are merged, as in Toxiproxy).
    pub fn update_toxic(
        &self,
        proxy: &str,
        toxic: &str,
        patch: &serde_json::Value,
    ) -> Result<ToxicSpec, RegistryError> {
        let proxy = self.get_proxy(proxy)?;
        let mut settings = (**proxy.settings.load()).clone();
        let index = settings
            .toxics
            .iter()
            .position(|t| t.spec.name == toxic)
            .ok_or_else(|| RegistryError::NotFound(format!("toxic not found: {toxic}")))?;
        let obj = patch
            .as_object()
            .ok_or_else(|| RegistryError::BadRequest("body must be a JSON object".into()))?;
        let mut json = serde_json::to_value(&settings.toxics[index].spec)
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        for (key, value) in obj {
            match key.as_str() {
                "attributes" => {
                    let attrs = value.as_object().ok_or_else(|| {
                        RegistryError::BadRequest(format!(
                            "attributes {value} must be a JSON object"
                        ))
                    })?;
                    for (k, v) in attrs {
                        json["attributes"][k] = v.clone();
                    }
                }
                "name" if value.as_str() == Some(toxic) => {}
                "name" => {
                    return Err(RegistryError::BadRequest(format!(
                        "name {value} cannot be changed: remove and add the toxic instead"
                    )))
                }
                _ => json[key] = value.clone(),
            }
        }
        let spec: ToxicSpec =
            serde_json::from_value(json).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        let entry = spec
            .validate(self.toxic_version.fetch_add(1, Ordering::Relaxed))
            .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        let out = entry.spec.clone();
        settings.toxics[index] = Arc::new(entry);
        settings.spec.toxics = settings.toxics.iter().map(|t| t.spec.clone()).collect();
        proxy.store(settings);
        Ok(out)
    }

    /// Removes a toxic; frames it holds are released in order.
    pub fn remove_toxic(&self, proxy: &str, toxic: &str) -> Result<(), RegistryError> {
        let proxy = self.get_proxy(proxy)?;
        let mut settings = (**proxy.settings.load()).clone();
        let before = settings.toxics.len();
        settings.toxics.retain(|t| t.spec.name != toxic);
        if settings.toxics.len() == before {
            return Err(RegistryError::NotFound(format!("toxic not found: {toxic}")));
        }
        settings.spec.toxics = settings.toxics.iter().map(|t| t.spec.clone()).collect();
        proxy.store(settings);
        Ok(())
    }

    /// Enables every proxy and removes every toxic.
    pub async fn reset(self: &Arc<Self>) -> Result<(), RegistryError> {
        let _guard = self.admin_lock.lock().await;
        let proxies: Vec<Arc<ProxyShared>> = self
            .proxies
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        let mut first_error = None;
        for proxy in proxies {
            let mut settings = (**proxy.settings.load()).clone();
            settings.toxics.clear();
            settings.spec.toxics.clear();
            let was_enabled = settings.spec.enabled;
            settings.spec.enabled = true;
            proxy.store(settings);
            if !was_enabled || proxy.bound_addr().is_none() {
                // Keep going: one address in use must not leave the other
                // proxies disabled or toxic.
                if let Err(err) = self.start_listener(&proxy).await {
                    let mut settings = (**proxy.settings.load()).clone();
                    settings.spec.enabled = false;
                    proxy.store(settings);
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Live connections of a proxy.
    pub fn connections(&self, proxy: &str) -> Result<Vec<ConnectionView>, RegistryError> {
        let proxy = self.get_proxy(proxy)?;
        let now = Instant::now();
        Ok(proxy
            .connections()
            .iter()
            .map(|c| {
                let stream = |s: StreamDir| StreamView {
                    frames: c.counters[s.index()].frames.load(Ordering::Relaxed),
                    bytes: c.counters[s.index()].bytes.load(Ordering::Relaxed),
                };
                ConnectionView {
                    id: c.id,
                    client: c.client.to_string(),
                    path: c.path.clone(),
                    subprotocol: c.subprotocol.clone(),
                    age_ms: now.saturating_duration_since(c.opened_at).as_millis() as u64,
                    upstream: stream(StreamDir::Upstream),
                    downstream: stream(StreamDir::Downstream),
                }
            })
            .collect())
    }

    /// Ends one connection: `close` (1001 both ways) or `reset` (RST).
    pub fn end_connection(&self, proxy: &str, id: u64, mode: &str) -> Result<(), RegistryError> {
        if mode != "close" && mode != "reset" {
            return Err(RegistryError::BadRequest(format!(
                "invalid mode {mode:?}: valid choices are close, reset"
            )));
        }
        let proxy = self.get_proxy(proxy)?;
        let conn = proxy
            .connections()
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| RegistryError::NotFound(format!("connection not found: {id}")))?;
        match mode {
            "close" => {
                if conn.close_both((1001, "going away"), (1001, "going away")) {
                    proxy.metrics.close(1001, crate::metrics::CloseBy::Proxy);
                }
            }
            "reset" => conn.cut(CutMode::Reset),
            other => {
                return Err(RegistryError::BadRequest(format!(
                    "invalid mode {other:?}: valid choices are close, reset"
                )))
            }
        }
        Ok(())
    }

    /// Whether every enabled proxy has a bound listener.
    pub fn all_bound(&self) -> bool {
        self.proxies
            .read()
            .map(|p| {
                p.values().all(|proxy| {
                    !proxy.settings.load().spec.enabled || proxy.bound_addr().is_some()
                })
            })
            .unwrap_or(false)
    }

    /// Graceful stop: no new connections, 1001 to both sides of each live
    /// one, then wait (at most `grace`) for them to end.
    pub async fn shutdown(&self, grace: Duration) {
        let proxies: Vec<Arc<ProxyShared>> = self
            .proxies
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        for proxy in &proxies {
            Self::stop_listener(proxy).await;
            for conn in proxy.connections() {
                if conn.close_both((1001, "going away"), (1001, "going away")) {
                    proxy.metrics.close(1001, crate::metrics::CloseBy::Proxy);
                }
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && proxies.iter().any(|p| p.connection_count() > 0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for proxy in &proxies {
            for conn in proxy.connections() {
                conn.cut(CutMode::Fin);
            }
        }
    }
}

fn listen_matches(listen: &str, bound: Option<SocketAddr>) -> bool {
    match (listen.parse::<SocketAddr>(), bound) {
        (Ok(want), Some(bound)) => want == bound || (want.port() == 0 && want.ip() == bound.ip()),
        _ => false,
    }
}

fn view(proxy: &ProxyShared) -> ProxyView {
    let settings = proxy.settings.load();
    let spec = &settings.spec;
    ProxyView {
        name: spec.name.clone(),
        listen: spec.listen.clone(),
        upstream: spec.upstream.clone(),
        enabled: spec.enabled,
        toxics: settings.toxics.iter().map(|t| t.spec.clone()).collect(),
        extensions: spec.extensions,
        host: spec.host,
        max_frame_bytes: spec.max_frame_bytes,
        max_message_bytes: spec.max_message_bytes,
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
