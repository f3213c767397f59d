//! Prometheus metrics (docs/reference.md#metrics).
//!
//! One [`Metrics`] per running server, each with its own registry (so tests
//! can run many servers in one process). Label values are resolved once per
//! proxy ([`ProxyMetrics`]) and per toxic instance; the relay only touches
//! pre-resolved counters, and only once per read batch.

use std::collections::BTreeMap;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use serde::Serialize;

use crate::frame::Opcode;
use crate::vocab::StreamDir;

/// Histogram buckets of `wsfault_relay_delay_seconds`, in seconds.
pub const RELAY_DELAY_BUCKETS: [f64; 13] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `reason` values of `wsfault_handshake_failures_total`; each proxy
/// exposes all of them from the start (at 0), so that the family is always
/// present and `increase()` sees the first failure.
pub const HANDSHAKE_FAILURE_REASONS: [&str; 8] = [
    "capacity",
    "upstream_unreachable",
    "upstream_timeout",
    "upstream_error",
    "upstream_refused",
    "rejected_by_toxic",
    "upgrade_failed",
    "tls",
];

/// Who ended a connection with a close frame (the `by` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseBy {
    /// The WebSocket client sent the close frame.
    Client,
    /// The upstream server sent the close frame.
    Upstream,
    /// A toxic injected the close frame.
    Toxic,
    /// The proxy itself closed (protocol error, limits, shutdown).
    Proxy,
}

impl CloseBy {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            CloseBy::Client => "client",
            CloseBy::Upstream => "upstream",
            CloseBy::Toxic => "toxic",
            CloseBy::Proxy => "proxy",
        }
    }
}

/// All metric families of one server.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    connections_active: IntGaugeVec,
    connections_total: IntCounterVec,
    handshake_failures: IntCounterVec,
    frames: IntCounterVec,
    messages: IntCounterVec,
    bytes: IntCounterVec,
    toxic_actions: IntCounterVec,
    toxic_skips: IntCounterVec,
    closes: IntCounterVec,
    relay_delay: HistogramVec,
    config_reloads: IntCounterVec,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|err| panic!("static metric definition {name}: {err}"));
    registry
        .register(Box::new(vec.clone()))
        .unwrap_or_else(|err| panic!("registering {name}: {err}"));
    vec
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the metric families (and the process collector on Linux).
    pub fn new() -> Metrics {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            // A failure here only loses the process metrics, never the product's.
            let _ = registry.register(Box::new(process));
        }
        let connections_active = IntGaugeVec::new(
            Opts::new(
                "wsfault_connections_active",
                "WebSocket connections open through the proxy.",
            ),
            &["proxy"],
        )
        .unwrap_or_else(|err| panic!("static metric definition: {err}"));
        registry
            .register(Box::new(connections_active.clone()))
            .unwrap_or_else(|err| panic!("registering wsfault_connections_active: {err}"));
        let relay_delay = HistogramVec::new(
            HistogramOpts::new(
                "wsfault_relay_delay_seconds",
                "Time from reading a frame to writing it, toxics included.",
            )
            .buckets(RELAY_DELAY_BUCKETS.to_vec()),
            &["proxy", "stream"],
        )
        .unwrap_or_else(|err| panic!("static metric definition: {err}"));
        registry
            .register(Box::new(relay_delay.clone()))
            .unwrap_or_else(|err| panic!("registering wsfault_relay_delay_seconds: {err}"));
        Metrics {
            connections_total: counter_vec(
                &registry,
                "wsfault_connections_total",
                "WebSocket connections accepted and upgraded.",
                &["proxy"],
            ),
            handshake_failures: counter_vec(
                &registry,
                "wsfault_handshake_failures_total",
                "Upgrades that did not become a relayed connection.",
                &["proxy", "reason"],
            ),
            frames: counter_vec(
                &registry,
                "wsfault_frames_total",
                "Frames read by the proxy.",
                &["proxy", "stream", "opcode"],
            ),
            messages: counter_vec(
                &registry,
                "wsfault_messages_total",
                "Complete data messages read by the proxy, by kind under the connection's protocol profile.",
                &["proxy", "stream", "kind"],
            ),
            bytes: counter_vec(
                &registry,
                "wsfault_bytes_total",
                "Wire bytes of frames read by the proxy.",
                &["proxy", "stream"],
            ),
            toxic_actions: counter_vec(
                &registry,
                "wsfault_toxic_actions_total",
                "Actions taken by toxics (a frame delayed, a message dropped, a connection cut...).",
                &["proxy", "toxic", "type"],
            ),
            toxic_skips: counter_vec(
                &registry,
                "wsfault_toxic_skips_total",
                "Compressed messages that payload-changing toxics left untouched.",
                &["proxy", "toxic", "type"],
            ),
            closes: counter_vec(
                &registry,
                "wsfault_closes_total",
                "Close frames seen or sent, by close code and by who sent them.",
                &["proxy", "code", "by"],
            ),
            config_reloads: {
                let vec = counter_vec(
                    &registry,
                    "wsfault_config_reloads_total",
                    "Config file reloads (SIGHUP or a change on disk), by result: ok, error.",
                    &["result"],
                );
                for result in ["ok", "error"] {
                    vec.with_label_values(&[result]);
                }
                vec
            },
            connections_active,
            relay_delay,
            registry,
        }
    }

    /// Counts a config reload: `ok` or `error`.
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The counters of every proxy, by name, as `GET /stats` shows them
    /// (the web console's chart polls it and plots the differences).
    pub fn stats(&self) -> BTreeMap<String, ProxyStats> {
        let mut out: BTreeMap<String, ProxyStats> = BTreeMap::new();
        let mut each = |families: Vec<prometheus::proto::MetricFamily>,
                        gauge: bool,
                        add: &mut dyn FnMut(&mut ProxyStats, &Labels, f64)| {
            for family in families {
                for metric in family.get_metric() {
                    let labels = Labels(
                        metric
                            .get_label()
                            .iter()
                            .map(|l| (l.name().to_string(), l.value().to_string()))
                            .collect(),
                    );
                    let value = if gauge {
                        metric.get_gauge().value()
                    } else {
                        metric.get_counter().value()
                    };
                    let proxy = labels.get("proxy").to_string();
                    add(out.entry(proxy).or_default(), &labels, value);
                }
            }
        };
        each(self.connections_active.collect(), true, &mut |s, _, v| {
            s.connections_active = v as u64;
        });
        each(self.connections_total.collect(), false, &mut |s, _, v| {
            s.connections_total = v as u64;
        });
        each(self.messages.collect(), false, &mut |s, l, v| {
            s.messages.add(l.get("stream"), v);
        });
        each(self.frames.collect(), false, &mut |s, l, v| {
            s.frames.add(l.get("stream"), v);
        });
        each(self.bytes.collect(), false, &mut |s, l, v| {
            s.bytes.add(l.get("stream"), v);
        });
        each(self.toxic_actions.collect(), false, &mut |s, l, v| {
            s.toxic_actions += v as u64;
            *s.toxic_actions_by_toxic
                .entry(l.get("toxic").to_string())
                .or_default() += v as u64;
        });
        out
    }

    /// Resolves the per-proxy handles used on the relay's hot path.
    pub fn for_proxy(&self, proxy: &str) -> ProxyMetrics {
        let per_stream = |stream: StreamDir| StreamMetrics {
            frames: Opcode::ALL.map(|op| {
                self.frames
                    .with_label_values(&[proxy, stream.label(), op.label()])
            }),
            messages: MESSAGE_KINDS.map(|kind| {
                self.messages
                    .with_label_values(&[proxy, stream.label(), kind])
            }),
            bytes: self.bytes.with_label_values(&[proxy, stream.label()]),
            relay_delay: self.relay_delay.with_label_values(&[proxy, stream.label()]),
        };
        for reason in HANDSHAKE_FAILURE_REASONS {
            self.handshake_failures.with_label_values(&[proxy, reason]);
        }
        ProxyMetrics {
            proxy: proxy.to_string(),
            connections_active: self.connections_active.with_label_values(&[proxy]),
            connections_total: self.connections_total.with_label_values(&[proxy]),
            streams: [
                per_stream(StreamDir::Upstream),
                per_stream(StreamDir::Downstream),
            ],
            metrics: self.clone(),
        }
    }
}

/// The label pairs of one sample.
struct Labels(Vec<(String, String)>);

impl Labels {
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// One counter per stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StreamCounts {
    /// Client → server.
    pub upstream: u64,
    /// Server → client.
    pub downstream: u64,
}

impl StreamCounts {
    fn add(&mut self, stream: &str, value: f64) {
        match stream {
            "upstream" => self.upstream += value as u64,
            "downstream" => self.downstream += value as u64,
            _ => {}
        }
    }
}

/// The counters of one proxy, summed over their other labels (`GET /stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProxyStats {
    /// `wsfault_connections_active`.
    pub connections_active: u64,
    /// `wsfault_connections_total`.
    pub connections_total: u64,
    /// `wsfault_messages_total`, every kind.
    pub messages: StreamCounts,
    /// `wsfault_frames_total`, every opcode.
    pub frames: StreamCounts,
    /// `wsfault_bytes_total`.
    pub bytes: StreamCounts,
    /// `wsfault_toxic_actions_total`, every toxic.
    pub toxic_actions: u64,
    /// `wsfault_toxic_actions_total` by toxic name.
    pub toxic_actions_by_toxic: BTreeMap<String, u64>,
}

/// The `kind` label values of `wsfault_messages_total`: the four kinds in
/// [`Kind::index`](crate::protocols::Kind::index) order, then `unclassified` for messages of an
/// application profile on a stream where no toxic asked for kinds (they are
/// not looked into, to keep the relay's fast path).
pub const MESSAGE_KINDS: [&str; 5] = ["data", "heartbeat", "handshake", "close", "unclassified"];

/// Index of `unclassified` in [`MESSAGE_KINDS`].
pub const UNCLASSIFIED: usize = 4;

/// Pre-resolved counters of one stream of one proxy.
#[derive(Clone)]
pub struct StreamMetrics {
    /// `wsfault_frames_total`, indexed by [`Opcode::index`].
    pub frames: [IntCounter; 6],
    /// `wsfault_messages_total`, indexed like [`MESSAGE_KINDS`].
    pub messages: [IntCounter; 5],
    /// `wsfault_bytes_total`.
    pub bytes: IntCounter,
    /// `wsfault_relay_delay_seconds`.
    pub relay_delay: Histogram,
}

/// Pre-resolved metric handles of one proxy.
#[derive(Clone)]
pub struct ProxyMetrics {
    proxy: String,
    /// `wsfault_connections_active`.
    pub connections_active: IntGauge,
    /// `wsfault_connections_total`.
    pub connections_total: IntCounter,
    /// Per stream, indexed by [`StreamDir::index`].
    pub streams: [StreamMetrics; 2],
    metrics: Metrics,
}

impl ProxyMetrics {
    /// Counts a close frame (resolved per close, which is rare).
    pub fn close(&self, code: u16, by: CloseBy) {
        self.metrics
            .closes
            .with_label_values(&[&self.proxy, &code.to_string(), by.label()])
            .inc();
    }

    /// Counts a failed upgrade.
    pub fn handshake_failure(&self, reason: &str) {
        self.metrics
            .handshake_failures
            .with_label_values(&[&self.proxy, reason])
            .inc();
    }

    /// The action counter of one toxic (resolved once per toxic instance).
    pub fn toxic_actions(&self, toxic: &str, kind: &str) -> IntCounter {
        self.metrics
            .toxic_actions
            .with_label_values(&[&self.proxy, toxic, kind])
    }

    /// The skip counter of one toxic (resolved once per toxic instance).
    pub fn toxic_skips(&self, toxic: &str, kind: &str) -> IntCounter {
        self.metrics
            .toxic_skips
            .with_label_values(&[&self.proxy, toxic, kind])
    }
}
