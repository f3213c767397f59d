//! The registry of proxies: one atomic path for every change, lock-free reads.
//!
//! Every change — create, populate, update (enable, disable, rebind),
//! delete, reset, toxic add/update/remove — is a typed [`Change`] run by
//! [`Server::apply`] under one `tokio::sync::Mutex`, the change lock. Under
//! it a change reads the current settings, computes the next ones (the
//! pure part, in [`super::transition`]), binds or stops listeners (awaits
//! happen here, which is why the lock is tokio's), publishes the result
//! with one `ArcSwap` store per proxy, and reads back what it answers. So
//! concurrent API calls take effect one at a time, in some order, and each
//! answer describes what was there when the call took effect.
//!
//! The lock owns the running listeners: only a change can start or stop
//! one. Reads (`list`, `get`, `toxics`, the data path) load snapshots and
//! never wait for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::change::{Change, Outcome, ProxyPatch, RegistryError};
use super::listener::{self, Bound, Running};
use super::shared::{ProxySettings, ProxyShared};
use super::transition::{listen_matches, ListenerPlan, Versions};
use crate::config::ProxySpec;
use crate::metrics::{CloseBy, Metrics};
use crate::toxics::ToxicSpec;
use crate::views::{ConnectionView, ProxyView, StreamView};
use crate::vocab::{CutMode, StreamDir};

/// The set of proxies of one running `wsfault proxy`.
pub struct Server {
    proxies: RwLock<BTreeMap<String, Arc<ProxyShared>>>,
    /// Shared metrics.
    pub metrics: Metrics,
    /// `--seed`.
    pub seed: Option<u64>,
    versions: Versions,
    /// Per-proxy cap on concurrent connections.
    pub max_connections: usize,
    /// The change lock; it holds the running listeners, by proxy name.
    changes: tokio::sync::Mutex<HashMap<String, Running>>,
}

impl Server {
    /// A server with no proxies.
    pub fn new(seed: Option<u64>) -> Arc<Server> {
        Arc::new(Server {
            proxies: RwLock::new(BTreeMap::new()),
            metrics: Metrics::new(),
            seed,
            versions: Versions::default(),
            max_connections: listener::connection_capacity(),
            changes: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Runs one change atomically and returns what it left behind.
    ///
    /// Changes run one at a time (the change lock is held across binds and
    /// listener stops); readers never wait. On an error nothing changed,
    /// except where a listener could not bind: that proxy is left disabled
    /// (create: not created), as the 500 says, and populate and reset keep
    /// what they did to the other proxies. A change runs on a task of
    /// its own, so it completes even when the caller goes away (an admin
    /// client that hangs up mid-request cannot stop it half-way).
    pub async fn apply(self: &Arc<Self>, change: Change) -> Result<Outcome, RegistryError> {
        let server = self.clone();
        tokio::spawn(async move { server.apply_now(change).await })
            .await
            .unwrap_or_else(|e| Err(RegistryError::Internal(format!("change failed: {e}"))))
    }

    async fn apply_now(&self, change: Change) -> Result<Outcome, RegistryError> {
        let mut listeners = self.changes.lock().await;
        let mut locked = Locked {
            server: self,
            listeners: &mut listeners,
        };
        match change {
            Change::CreateProxy(spec) => locked.create(spec).await.map(Outcome::Proxy),
            Change::Populate(specs) => locked.populate(specs).await.map(Outcome::Proxies),
            Change::UpdateProxy { proxy, patch } => {
                locked.update(&proxy, &patch).await.map(Outcome::Proxy)
            }
            Change::DeleteProxy(proxy) => locked.delete(&proxy).await.map(|()| Outcome::Done),
            Change::Reset => locked.reset().await.map(|()| Outcome::Done),
            Change::AddToxic { proxy, toxic } => {
                let proxy = self.get_proxy(&proxy)?;
                let (next, stored) = proxy
                    .settings
                    .load()
                    .with_toxic_added(toxic, &self.versions)?;
                proxy.store(next);
                Ok(Outcome::Toxic(Box::new(stored)))
            }
            Change::UpdateToxic {
                proxy,
                toxic,
                patch,
            } => {
                let proxy = self.get_proxy(&proxy)?;
                let (next, stored) =
                    proxy
                        .settings
                        .load()
                        .with_toxic_updated(&toxic, &patch, &self.versions)?;
                proxy.store(next);
                Ok(Outcome::Toxic(Box::new(stored)))
            }
            Change::RemoveToxic { proxy, toxic } => {
                let proxy = self.get_proxy(&proxy)?;
                let next = proxy.settings.load().without_toxic(&toxic)?;
                proxy.store(next);
                Ok(Outcome::Done)
            }
        }
    }

    /// Creates a proxy (and binds it when enabled): [`Change::CreateProxy`].
    pub async fn create(self: &Arc<Self>, spec: ProxySpec) -> Result<ProxyView, RegistryError> {
        match self.apply(Change::CreateProxy(spec)).await? {
            Outcome::Proxy(view) => Ok(view),
            other => Err(unexpected(other)),
        }
    }

    /// Adds a toxic: [`Change::AddToxic`]; live connections pick it up from
    /// their next frame.
    pub async fn add_toxic(
        self: &Arc<Self>,
        proxy: &str,
        toxic: ToxicSpec,
    ) -> Result<ToxicSpec, RegistryError> {
        let change = Change::AddToxic {
            proxy: proxy.to_string(),
            toxic,
        };
        match self.apply(change).await? {
            Outcome::Toxic(toxic) => Ok(*toxic),
            other => Err(unexpected(other)),
        }
    }

    /// Removes a toxic: [`Change::RemoveToxic`].
    pub async fn remove_toxic(
        self: &Arc<Self>,
        proxy: &str,
        toxic: &str,
    ) -> Result<(), RegistryError> {
        let change = Change::RemoveToxic {
            proxy: proxy.to_string(),
            toxic: toxic.to_string(),
        };
        self.apply(change).await.map(|_| ())
    }

    fn get_proxy(&self, name: &str) -> Result<Arc<ProxyShared>, RegistryError> {
        self.proxies
            .read()
            .ok()
            .and_then(|p| p.get(name).cloned())
            .ok_or_else(|| RegistryError::NotFound(format!("proxy not found: {name}")))
    }

    fn all_proxies(&self) -> Vec<Arc<ProxyShared>> {
        self.proxies
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The running proxy named `name`.
    pub fn proxy(&self, name: &str) -> Option<Arc<ProxyShared>> {
        self.get_proxy(name).ok()
    }

    /// All proxies.
    pub fn list(&self) -> Vec<ProxyView> {
        self.all_proxies()
            .iter()
            .map(|p| p.settings.load().view())
            .collect()
    }

    /// One proxy.
    pub fn get(&self, name: &str) -> Result<ProxyView, RegistryError> {
        Ok(self.get_proxy(name)?.settings.load().view())
    }

    /// The toxics of a proxy.
    pub fn toxics(&self, proxy: &str) -> Result<Vec<ToxicSpec>, RegistryError> {
        Ok(self.get(proxy)?.toxics)
    }

    /// One toxic.
    pub fn toxic(&self, proxy: &str, toxic: &str) -> Result<ToxicSpec, RegistryError> {
        self.toxics(proxy)?
            .into_iter()
            .find(|t| t.name == toxic)
            .ok_or_else(|| RegistryError::NotFound(format!("toxic not found: {toxic}")))
    }

    /// The PEM certificate a proxy's TLS listener presents (`None`: plain `ws://`).
    pub fn certificate(&self, proxy: &str) -> Result<Option<String>, RegistryError> {
        let proxy = self.get_proxy(proxy)?;
        let settings = proxy.settings.load();
        Ok(settings.tls.as_ref().map(|t| t.cert_pem.clone()))
    }

    /// The live connections of a proxy.
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
                    protocol: c.profile.get().name().to_string(),
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
        if mode == "close" {
            if conn.close_both((1001, "going away"), (1001, "going away")) {
                proxy.metrics.close(1001, CloseBy::Proxy);
            }
        } else {
            conn.cut(CutMode::Reset);
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
        let proxies = self.all_proxies();
        {
            let mut listeners = self.changes.lock().await;
            let mut locked = Locked {
                server: self,
                listeners: &mut listeners,
            };
            for proxy in &proxies {
                locked.stop(proxy).await;
            }
        }
        for proxy in &proxies {
            for conn in proxy.connections() {
                if conn.close_both((1001, "going away"), (1001, "going away")) {
                    proxy.metrics.close(1001, CloseBy::Proxy);
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

fn unexpected(outcome: Outcome) -> RegistryError {
    RegistryError::Internal(format!("unexpected outcome {outcome:?}"))
}

/// Binds a proxy's listen address (the 500 names the proxy and address).
async fn bind(proxy: &str, listen: &str) -> Result<Bound, RegistryError> {
    listener::bind(listen).await.map_err(|e| {
        RegistryError::Internal(format!("proxy {proxy}: cannot listen on {listen}: {e}"))
    })
}

/// The server while a change holds its lock: the only place that stores
/// settings, binds, stops listeners or edits the proxy map.
struct Locked<'a> {
    server: &'a Server,
    listeners: &'a mut HashMap<String, Running>,
}

impl Locked<'_> {
    async fn create(&mut self, spec: ProxySpec) -> Result<ProxyView, RegistryError> {
        spec.validate().map_err(RegistryError::BadRequest)?;
        if self.server.proxy(&spec.name).is_some() {
            return Err(RegistryError::Conflict(format!(
                "proxy already exists: {}",
                spec.name
            )));
        }
        let settings = ProxySettings::from_spec(spec, &self.server.versions)?;
        self.insert(settings).await
    }

    /// Binds (when enabled), then makes the proxy visible.
    async fn insert(&mut self, mut settings: ProxySettings) -> Result<ProxyView, RegistryError> {
        let bound = if settings.spec.enabled {
            let bound = bind(&settings.spec.name, &settings.spec.listen).await?;
            settings.spec.listen = bound.addr.to_string();
            Some(bound)
        } else {
            None
        };
        let view = settings.view();
        let server = self.server;
        let proxy = Arc::new(ProxyShared::new(
            settings,
            server.seed,
            server.metrics.for_proxy(&view.name),
            server.max_connections,
        ));
        if let Some(bound) = bound {
            self.serve(&proxy, bound);
        }
        if let Ok(mut proxies) = server.proxies.write() {
            proxies.insert(view.name.clone(), proxy);
        }
        Ok(view)
    }

    async fn update(&mut self, name: &str, patch: &ProxyPatch) -> Result<ProxyView, RegistryError> {
        let proxy = self.server.get_proxy(name)?;
        let (next, plan) = proxy.settings.load().patched(patch, proxy.bound_addr())?;
        let stored = self.settle(&proxy, next.clone(), plan, next).await?;
        Ok(stored.view())
    }

    /// Publishes `next` and carries out `plan`; when the new listener
    /// cannot bind, `failed` is published disabled instead.
    async fn settle(
        &mut self,
        proxy: &Arc<ProxyShared>,
        mut next: ProxySettings,
        plan: ListenerPlan,
        mut failed: ProxySettings,
    ) -> Result<ProxySettings, RegistryError> {
        match plan {
            ListenerPlan::Keep => proxy.store(next.clone()),
            ListenerPlan::Stop => {
                proxy.store(next.clone());
                self.disable(proxy).await;
            }
            ListenerPlan::Start | ListenerPlan::Restart => {
                if plan == ListenerPlan::Restart {
                    self.disable(proxy).await;
                }
                match bind(&proxy.name, &next.spec.listen).await {
                    Ok(bound) => {
                        next.spec.listen = bound.addr.to_string();
                        proxy.store(next.clone());
                        self.serve(proxy, bound);
                    }
                    Err(err) => {
                        failed.spec.enabled = false;
                        proxy.store(failed);
                        return Err(err);
                    }
                }
            }
        }
        Ok(next)
    }

    async fn delete(&mut self, name: &str) -> Result<(), RegistryError> {
        let proxy = self.server.get_proxy(name)?;
        self.disable(&proxy).await;
        if let Ok(mut proxies) = self.server.proxies.write() {
            proxies.remove(name);
        }
        Ok(())
    }

    async fn populate(&mut self, specs: Vec<ProxySpec>) -> Result<Vec<ProxyView>, RegistryError> {
        // Every spec is checked before anything changes.
        let mut prepared = Vec::with_capacity(specs.len());
        for spec in specs {
            prepared.push(ProxySettings::from_spec(spec, &self.server.versions)?);
        }
        let mut out = Vec::with_capacity(prepared.len());
        for wanted in prepared {
            let name = wanted.spec.name.clone();
            let Some(existing) = self.server.proxy(&name) else {
                out.push(self.insert(wanted).await?);
                continue;
            };
            let current = existing.settings.load_full();
            let same_place = current.spec.upstream == wanted.spec.upstream
                && (current.spec.listen == wanted.spec.listen
                    || listen_matches(&wanted.spec.listen, existing.bound_addr()));
            if !same_place {
                self.delete(&name).await?;
                out.push(self.insert(wanted).await?);
                continue;
            }
            // Same listen and upstream: keep the listener and its
            // connections (no rebinding), apply the other fields. Toxics
            // given replace the proxy's list (an empty list keeps it, as in
            // Toxiproxy).
            let patch = ProxyPatch::in_place(&wanted.spec);
            let (fields, plan) = current.patched(&patch, existing.bound_addr())?;
            let next = if wanted.toxics.is_empty() || current.spec.toxics == wanted.spec.toxics {
                fields.clone()
            } else {
                fields.with_toxics(wanted.toxics.clone())
            };
            if plan == ListenerPlan::Keep && next.spec == current.spec {
                out.push(current.view());
                continue;
            }
            let stored = self.settle(&existing, next, plan, fields).await?;
            out.push(stored.view());
        }
        Ok(out)
    }

    async fn reset(&mut self) -> Result<(), RegistryError> {
        let mut first_error = None;
        for proxy in self.server.all_proxies() {
            let current = proxy.settings.load_full();
            let next = current.reset();
            let plan = if current.spec.enabled && proxy.bound_addr().is_some() {
                ListenerPlan::Keep
            } else {
                ListenerPlan::Start
            };
            // Keep going: one address in use must not leave the other
            // proxies disabled or toxic.
            if let Err(err) = self.settle(&proxy, next.clone(), plan, next).await {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn serve(&mut self, proxy: &Arc<ProxyShared>, bound: Bound) {
        let addr = bound.addr;
        let running = listener::serve(bound, proxy.clone());
        proxy.set_bound(Some(addr));
        if let Some(old) = self.listeners.insert(proxy.name.clone(), running) {
            // Not reached (a change stops a listener before binding anew);
            // never leak an accept loop.
            drop(old.stop());
        }
        let upstream = proxy.settings.load().spec.upstream.clone();
        tracing::info!(proxy = %proxy.name, listen = %addr, upstream = %upstream, "proxy listening");
    }

    async fn stop(&mut self, proxy: &ProxyShared) {
        proxy.set_bound(None);
        if let Some(running) = self.listeners.remove(&proxy.name) {
            running.stop().await;
        }
    }

    /// Stops the listener and cuts the connections of a proxy.
    async fn disable(&mut self, proxy: &ProxyShared) {
        self.stop(proxy).await;
        for conn in proxy.connections() {
            conn.cut(CutMode::Fin);
        }
    }
}
