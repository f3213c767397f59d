//! Live progress of a running load test.
//!
//! [`LiveStats`] is shared (`Arc`) between the connection tasks, which add
//! their deltas with relaxed atomics every few hundred milliseconds (never
//! per message), and whoever watches: the progress line of `wsfault load`,
//! or the demo, which passes its own `Arc<LiveStats>` in
//! [`LoadConfig::live`](super::LoadConfig::live) and calls
//! [`LiveStats::snapshot`] whenever it wants.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// An auto-resizing histogram of microseconds with 3 significant figures
/// (the live window, the per-slot latency shards).
pub(crate) fn new_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::<u64>::new(3).expect("hdrhistogram accepts 3 significant figures")
}

/// Counters of a running load test (all cumulative since the start, except
/// `active`, `target` and the per-second rates).
#[derive(Debug, Default)]
pub struct LiveStats {
    pub(crate) active: AtomicU64,
    pub(crate) peak_active: AtomicU64,
    pub(crate) target: AtomicU64,
    pub(crate) attempted: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) phase: AtomicUsize,
    pub(crate) running: AtomicBool,
    /// Received messages per second over the last second (f64 bits).
    pub(crate) rate_mps: AtomicU64,
    /// p99 latency over the last second, microseconds.
    pub(crate) p99_us: AtomicU64,
    pub(crate) started: Mutex<Option<Instant>>,
    /// Latencies of the current second, added by connections in batches.
    pub(crate) window: Mutex<Option<Histogram<u64>>>,
}

/// A copy of [`LiveStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveSnapshot {
    /// Time since the load test started.
    pub elapsed: Duration,
    /// Whether the test is still running (sending or draining).
    pub running: bool,
    /// Index of the current scenario phase.
    pub phase: usize,
    /// Connections open now.
    pub active: u64,
    /// The connection target now.
    pub target: u64,
    /// Connection attempts so far.
    pub attempted: u64,
    /// Successful connection attempts so far.
    pub succeeded: u64,
    /// Failed connection attempts so far.
    pub failed: u64,
    /// Reconnections so far.
    pub reconnects: u64,
    /// Abnormal disconnects so far.
    pub disconnects: u64,
    /// Messages sent so far.
    pub sent: u64,
    /// Messages echoed back so far.
    pub received: u64,
    /// Errors so far (failed attempts, disconnects, corrupted/protocol errors).
    pub errors: u64,
    /// Echoed messages per second over the last second.
    pub rate_mps: f64,
    /// p99 round-trip latency over the last second, milliseconds.
    pub p99_ms: f64,
}

impl LiveStats {
    /// A fresh set of counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every counter (cheap; call as often as you like).
    pub fn snapshot(&self) -> LiveSnapshot {
        let started = *self
            .started
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        LiveSnapshot {
            elapsed: started.map(|s| s.elapsed()).unwrap_or_default(),
            running: self.running.load(Ordering::Relaxed),
            phase: self.phase.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            target: self.target.load(Ordering::Relaxed),
            attempted: self.attempted.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            rate_mps: f64::from_bits(self.rate_mps.load(Ordering::Relaxed)),
            p99_ms: self.p99_us.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn conn_up(&self) {
        let now = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_active.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn conn_down(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Adds a batch of latencies (µs) to the current one-second window.
    pub(crate) fn record_window(&self, samples: &[u64]) {
        if samples.is_empty() {
            return;
        }
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let w = window.get_or_insert_with(new_histogram);
        for &us in samples {
            let _ = w.record(us);
        }
    }

    /// Closes the current one-second window: publishes its p99 and rate.
    pub(crate) fn roll_window(&self, received_delta: u64, period: Duration) {
        let window = self
            .window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let p99 = window
            .as_ref()
            .filter(|w| !w.is_empty())
            .map(|w| w.value_at_quantile(0.99))
            .unwrap_or(0);
        self.p99_us.store(p99, Ordering::Relaxed);
        let rate = received_delta as f64 / period.as_secs_f64().max(1e-3);
        self.rate_mps.store(rate.to_bits(), Ordering::Relaxed);
    }
}

impl LiveSnapshot {
    /// One progress line: connections, msg/s, p99, errors, reconnects.
    pub fn line(&self, phase_name: &str) -> String {
        format!(
            "[{:>6.1}s] {phase_name} conns {}/{} | {:.0} msg/s | p99 {:.2} ms | sent {} recv {} | errors {} | reconnects {}",
            self.elapsed.as_secs_f64(),
            self.active,
            self.target,
            self.rate_mps,
            self.p99_ms,
            self.sent,
            self.received,
            self.errors,
            self.reconnects
        )
    }
}
