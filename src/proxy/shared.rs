//! One proxy's state as its listener, its connections and the admin API
//! see it: the settings snapshot the links re-read between frames, the
//! live connections, the bound address.
//!
//! Only the registry ([`super::registry`]) stores new settings, under its
//! change lock; everything here is read without waiting.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::conn::ConnShared;
use crate::config::ProxySpec;
use crate::metrics::ProxyMetrics;
use crate::toxics::ToxicEntry;
use crate::views::ProxyView;
use crate::vocab::UpstreamTarget;

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
    /// The listener's TLS, when the spec asks for it.
    pub tls: Option<Arc<super::tls_listener::ListenerTls>>,
}

impl ProxySettings {
    /// The proxy as the admin API shows it.
    pub fn view(&self) -> ProxyView {
        let spec = &self.spec;
        ProxyView {
            name: spec.name.clone(),
            listen: spec.listen.clone(),
            upstream: spec.upstream.clone(),
            enabled: spec.enabled,
            toxics: self.toxics.iter().map(|t| t.spec.clone()).collect(),
            extensions: spec.extensions,
            host: spec.host,
            max_frame_bytes: spec.max_frame_bytes,
            max_message_bytes: spec.max_message_bytes,
            protocol: spec.protocol,
            tls: spec.tls.clone(),
        }
    }
}

/// One proxy's state shared by its listener, its connections and the API.
pub struct ProxyShared {
    /// Name (also a metric label).
    pub name: String,
    /// `--seed`.
    pub seed: Option<u64>,
    /// Pre-resolved metric handles.
    pub metrics: ProxyMetrics,
    /// Current settings, read without waiting; stored only by the
    /// registry, under its change lock (hence not public: outside the
    /// crate, read them through [`ProxyShared::settings`]).
    pub(crate) settings: ArcSwap<ProxySettings>,
    generation: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<ConnShared>>>,
    next_ordinal: AtomicU64,
    bound: Mutex<Option<SocketAddr>>,
    /// Upper bound of concurrent connections (from the open-file limit).
    pub max_connections: usize,
}

impl ProxyShared {
    /// A proxy with these settings, no connections and no listener yet.
    pub(super) fn new(
        settings: ProxySettings,
        seed: Option<u64>,
        metrics: ProxyMetrics,
        max_connections: usize,
    ) -> ProxyShared {
        ProxyShared {
            name: settings.spec.name.clone(),
            seed,
            metrics,
            settings: ArcSwap::from_pointee(settings),
            generation: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
            next_ordinal: AtomicU64::new(0),
            bound: Mutex::new(None),
            max_connections,
        }
    }

    /// The current settings (a snapshot: later changes do not alter it).
    pub fn settings(&self) -> Arc<ProxySettings> {
        self.settings.load_full()
    }

    /// Bumped on every change of settings; links compare it between frames.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Publishes new settings (the registry calls this under its change lock).
    pub(super) fn store(&self, settings: ProxySettings) {
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

    /// Records the address of the running listener (`None` once stopped).
    pub(super) fn set_bound(&self, addr: Option<SocketAddr>) {
        if let Ok(mut bound) = self.bound.lock() {
            *bound = addr;
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
        *self.bound.lock().ok()?
    }
}
