//! `wsfault load`: the validating load client (docs/reference.md#wsfault-load).
//!
//! Library use (the demo and the benchmarks):
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use wsfault::load::{self, LoadConfig, Mode, Progress};
//!
//! let mut cfg = LoadConfig::new("ws://127.0.0.1:9000/", 50, 20.0, Duration::from_secs(10));
//! cfg.mode = Mode::Resume;
//! cfg.reconnect = true;
//! cfg.progress = Progress::Off;
//! let live = cfg.live.clone(); // poll live.snapshot() while it runs
//! let report = load::run(cfg).await?;
//! println!("{}", load::render_table(&report));
//! # let _ = live; Ok(()) }
//! ```
//!
//! Modules, top down: `slot` (one logical connection: reconnect loop with
//! backoff) runs `echo_check` (echo-mode sessions and their ordering
//! checks), `resume` (resume-mode sessions, driving the pure
//! `resume_state` machine) or `script_session` (script mode: the user's
//! service, checked by the pure `script_check`); `session` holds what they
//! all need (run context, per-slot tally, connect/close, the writer task).
//! [`script`] (the `--script` file) and [`template`] (its message
//! templates), [`scenario`] (YAML phases), [`slo`] (SLO expressions),
//! [`report`] (JSON report, table, JUnit, baseline) and [`live`] (live
//! counters) sit below them. The resume protocol's messages are
//! [`crate::resume_wire`]'s.

mod echo_check;
pub mod live;
pub mod merge;
pub mod report;
mod resume;
mod resume_state;
pub mod scenario;
pub mod script;
mod script_check;
mod script_session;
mod session;
pub mod slo;
mod slot;
pub mod template;

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

pub use live::{LiveSnapshot, LiveStats};
pub use report::{render_table, Report};
pub use scenario::Phase;
pub use slo::{Slo, SloResult};

use session::{Ctx, SlotResult};

/// What the client sends and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Binary messages to any echo server; echoes checked per connection.
    #[default]
    Echo,
    /// The resume protocol of `wsfault echo` (docs/reference.md#wsfault-echo-and-the-resume-protocol): exactly-once, in order, across reconnects.
    Resume,
    /// Any service, driven and checked as a `--script` file says (docs/reference.md#script-mode).
    Script,
}

impl Mode {
    /// `echo` or `resume`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Resume => "resume",
            Mode::Script => "script",
        }
    }
}

/// How progress is shown while a load test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// A live line (indicatif) when stderr is a terminal, plain lines every second otherwise.
    #[default]
    Auto,
    /// Plain lines on stderr every second.
    Plain,
    /// Nothing (watch [`LoadConfig::live`] instead).
    Off,
}

/// A load-test configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag (or field) has a bad value.
    #[error("{flag}: {message}")]
    Invalid {
        /// The flag, e.g. `--url`.
        flag: &'static str,
        /// What is wrong and what would be valid.
        message: String,
    },
    /// The scenario file is bad.
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    /// The script file is bad.
    #[error(transparent)]
    Script(#[from] script::ScriptError),
    /// An SLO expression does not parse.
    #[error(transparent)]
    Slo(#[from] slo::SloParseError),
}

/// Everything a load test needs. Build it with [`LoadConfig::new`] (or from
/// flags with `cmd::load::load_config`) and adjust the public fields.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The WebSocket URL.
    pub url: String,
    /// Phases run in order (at least one).
    pub phases: Vec<Phase>,
    /// The connection target at t = 0, from which the first phase ramps
    /// linearly (0 for a scenario; the phase's own target for plain flags).
    pub initial_connections: u32,
    /// Open at most this many connections per second.
    pub ramp_rate: Option<f64>,
    /// Bytes per message.
    pub message_bytes: usize,
    /// Echo or resume.
    pub mode: Mode,
    /// Reconnect after disconnects.
    pub reconnect: bool,
    /// Extra upgrade headers.
    pub headers: Vec<(String, String)>,
    /// Requested subprotocol.
    pub subprotocol: Option<String>,
    /// SLOs; when empty, `loss==0`, `dup==0`, `reorder==0`, `corrupt==0` apply.
    pub slos: Vec<Slo>,
    /// An earlier report to compare with.
    pub baseline: Option<Report>,
    /// Largest acceptable regression against the baseline, percent.
    pub max_regression_pct: f64,
    /// How long to wait for outstanding echoes after sending stops
    /// (`None`: 2 s in echo mode, 5 s in resume mode).
    pub drain: Option<Duration>,
    /// Resume mode: resend a message (and resync) when its echo is this
    /// late; a `hello` without an answer is sent again after twice this.
    pub resend_after: Duration,
    /// Connection handshakes in flight at once.
    pub max_concurrent_handshakes: usize,
    /// How progress is shown.
    pub progress: Progress,
    /// Live counters; clone the `Arc` before [`run`] to watch them.
    pub live: Arc<LiveStats>,
    /// Cancel to end the run early (it still drains and reports).
    pub cancel: CancellationToken,
    /// Script mode: the session script.
    pub script: Option<script::Script>,
}

impl LoadConfig {
    /// A constant load: `connections` connections sending `rate` messages
    /// per second each for `duration`, echo mode, 64-byte messages.
    pub fn new(url: impl Into<String>, connections: u32, rate: f64, duration: Duration) -> Self {
        LoadConfig {
            url: url.into(),
            phases: vec![Phase {
                name: "load".into(),
                duration,
                connections,
                rate,
            }],
            initial_connections: connections,
            ramp_rate: None,
            message_bytes: 64,
            mode: Mode::Echo,
            reconnect: false,
            headers: Vec::new(),
            subprotocol: None,
            slos: Vec::new(),
            baseline: None,
            max_regression_pct: 10.0,
            drain: None,
            resend_after: Duration::from_secs(1),
            max_concurrent_handshakes: 256,
            progress: Progress::Auto,
            live: Arc::new(LiveStats::new()),
            cancel: CancellationToken::new(),
            script: None,
        }
    }

    /// Checks the values that [`run`] relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.url.trim();
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(invalid(
                "--url",
                format!("`{}` must start with ws:// or wss://", self.url),
            ));
        }
        if url.starts_with("wss://") {
            return Err(invalid(
                "--url",
                format!(
                    "`{}`: wss:// is not supported by this build (use ws://)",
                    self.url
                ),
            ));
        }
        // A script's URL may have placeholders (`?from={{last_seq}}`): the
        // URL it renders to must be valid.
        let rendered;
        let url = if self.mode == Mode::Script && url.contains("{{") {
            let t = template::Template::parse(url).map_err(|err| {
                invalid(
                    "--url",
                    format!("`{}`: {} (at byte {})", self.url, err.message, err.offset),
                )
            })?;
            rendered = t.render(&template::Vars::default(), &mut String::new());
            rendered.as_str()
        } else {
            url
        };
        url.into_client_request()
            .map_err(|err| invalid("--url", format!("`{}` is not a valid URL: {err}", self.url)))?;
        if self.mode == Mode::Script && self.script.is_none() {
            return Err(invalid(
                "--mode",
                "script mode needs --script FILE (docs/reference.md#script-mode)".into(),
            ));
        }
        if self.phases.is_empty() {
            return Err(invalid("--scenario", "no phases".into()));
        }
        for p in &self.phases {
            if !(p.rate.is_finite() && p.rate >= 0.0) {
                return Err(invalid("--rate", format!("`{}` must be 0 or more", p.rate)));
            }
        }
        if let Some(r) = self.ramp_rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(invalid(
                    "--ramp-rate",
                    format!("`{r}` must be a positive number of connections per second"),
                ));
            }
        }
        if self.message_bytes > crate::resume_wire::MAX_MESSAGE_BYTES {
            return Err(invalid(
                "--message-bytes",
                format!(
                    "`{}` is larger than the {} byte message limit",
                    self.message_bytes,
                    crate::resume_wire::MAX_MESSAGE_BYTES
                ),
            ));
        }
        for (k, v) in &self.headers {
            HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| invalid("--header", format!("`{k}` is not a valid header name")))?;
            HeaderValue::from_str(v).map_err(|_| {
                invalid(
                    "--header",
                    format!("the value of `{k}` is not a valid header value"),
                )
            })?;
        }
        if let Some(p) = &self.subprotocol {
            HeaderValue::from_str(p).map_err(|_| {
                invalid(
                    "--subprotocol",
                    format!("`{p}` is not a valid protocol name"),
                )
            })?;
        }
        Ok(())
    }

    /// The total duration of all phases.
    pub fn total_duration(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    fn drain(&self) -> Duration {
        self.drain.unwrap_or(match self.mode {
            Mode::Echo => Duration::from_secs(2),
            Mode::Resume => Duration::from_secs(5),
            Mode::Script => {
                let reply = self.script.as_ref().and_then(|s| s.reply.as_ref());
                reply.map_or(Duration::from_secs(1), |r| {
                    r.timeout + Duration::from_secs(1)
                })
            }
        })
    }
}

pub(crate) fn invalid(flag: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid { flag, message }
}

/// Runs a load test to the end (all phases, then the drain) and returns its
/// report, verdict included. Errors only for an invalid configuration.
pub async fn run(cfg: LoadConfig) -> anyhow::Result<Report> {
    cfg.validate()?;
    let live = cfg.live.clone();
    let start = Instant::now();
    *live
        .started
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(start);
    live.running.store(true, Ordering::Relaxed);
    let headers = cfg
        .headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                HeaderName::from_bytes(k.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect();
    let script = cfg.script.clone().map(|s| {
        Arc::new(script::ScriptRun::new(
            s,
            cfg.url.trim(),
            cfg.subprotocol.as_deref(),
        ))
    });
    let script_summary = script.as_ref().map(|s| report::ScriptSummary {
        file: s.script.path.clone(),
        protocol: s.profile.name().to_string(),
        checks: s.script.checks(),
        heartbeats_answered: 0,
    });
    let ctx = Arc::new(Ctx {
        script,
        url: cfg.url.trim().to_string(),
        headers,
        subprotocol: cfg
            .subprotocol
            .as_deref()
            .and_then(|p| HeaderValue::from_str(p).ok()),
        mode: cfg.mode,
        reconnect: cfg.reconnect,
        message_bytes: cfg.message_bytes,
        drain: cfg.drain(),
        resend_after: cfg.resend_after,
        start,
        rate_bits: AtomicU64::new(cfg.phases[0].rate.to_bits()),
        live: live.clone(),
        stop: CancellationToken::new(),
        hard_stop: CancellationToken::new(),
        handshakes: Semaphore::new(cfg.max_concurrent_handshakes.max(1)),
        errors: Mutex::new(HashMap::new()),
        run_id: rand::random::<u64>(),
        latency: session::LatencyShards::new(32),
    });
    let progress_done = CancellationToken::new();
    let phase_names: Vec<String> = cfg.phases.iter().map(|p| p.name.clone()).collect();
    let progress = tokio::spawn(progress_task(
        live.clone(),
        cfg.progress,
        phase_names,
        progress_done.clone(),
    ));

    let mut agg = Aggregate::new();
    let mut set: JoinSet<SlotResult> = JoinSet::new();
    let mut slots: Vec<CancellationToken> = Vec::new();
    let mut next_slot: u32 = 0;
    let mut ramp_budget = 1.0f64;
    let mut last = start;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = Instant::now();
        let Some(at) = scenario::schedule_at(&cfg.phases, cfg.initial_connections, now - start)
        else {
            break;
        };
        ctx.set_rate(at.rate);
        live.phase.store(at.phase, Ordering::Relaxed);
        let target = at.target.round().max(0.0) as usize;
        live.target.store(target as u64, Ordering::Relaxed);
        if let Some(r) = cfg.ramp_rate {
            let dt = now.duration_since(last).as_secs_f64();
            ramp_budget = (ramp_budget + r * dt).min((r * 0.1).max(1.0));
        }
        last = now;
        while slots.len() < target && (cfg.ramp_rate.is_none() || ramp_budget >= 1.0) {
            let token = ctx.stop.child_token();
            set.spawn(slot::run_slot(ctx.clone(), next_slot, token.clone()));
            slots.push(token);
            next_slot = next_slot.wrapping_add(1);
            ramp_budget -= 1.0;
        }
        while slots.len() > target {
            if let Some(token) = slots.pop() {
                token.cancel();
            }
        }
        while let Some(done) = set.try_join_next() {
            if let Ok(res) = done {
                agg.add(res);
            }
        }
        tokio::select! {
            _ = ticker.tick() => {}
            _ = cfg.cancel.cancelled() => break,
        }
    }
    let duration = start.elapsed();
    ctx.stop.cancel();
    let drain = ctx.drain;
    let hard = ctx.hard_stop.clone();
    let hard_timer = tokio::spawn(async move {
        tokio::time::sleep(drain + Duration::from_secs(1)).await;
        hard.cancel();
    });
    let deadline = tokio::time::Instant::now() + drain + Duration::from_secs(5);
    loop {
        tokio::select! {
            joined = set.join_next() => match joined {
                Some(Ok(res)) => agg.add(res),
                Some(Err(_)) => {}
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(remaining = set.len(), "connections did not finish in time; abandoning them");
                set.abort_all();
                break;
            }
        }
    }
    hard_timer.abort();
    live.running.store(false, Ordering::Relaxed);
    progress_done.cancel();
    let _ = progress.await;

    let errors = ctx
        .errors
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    agg.latency = ctx.latency.merged();
    let heartbeats = agg.totals.heartbeats;
    let mut report = build_report(
        &cfg,
        agg,
        duration,
        errors,
        live.peak_active.load(Ordering::Relaxed),
    );
    report.script = script_summary.map(|mut s| {
        s.heartbeats_answered = heartbeats;
        s
    });
    Ok(report)
}

/// Every slot's results, merged.
struct Aggregate {
    latency: Histogram<u64>,
    reconnect: Histogram<u64>,
    totals: SlotResult,
}

impl Aggregate {
    fn new() -> Self {
        Aggregate {
            latency: live::new_histogram(),
            reconnect: live::new_histogram(),
            totals: SlotResult::default(),
        }
    }

    fn add(&mut self, r: SlotResult) {
        for &us in &r.reconnect_us {
            let _ = self.reconnect.record(us.max(1));
        }
        let t = &mut self.totals;
        t.msgs.add(&r.msgs);
        t.protocol_errors += r.protocol_errors;
        t.attempted += r.attempted;
        t.succeeded += r.succeeded;
        t.failed += r.failed;
        t.reconnects += r.reconnects;
        t.disconnects += r.disconnects;
        t.heartbeats += r.heartbeats;
    }
}

fn build_report(
    cfg: &LoadConfig,
    agg: Aggregate,
    duration: Duration,
    errors: HashMap<String, u64>,
    peak_active: u64,
) -> Report {
    let t = &agg.totals;
    let duration_s = duration.as_secs_f64();
    let mut samples: Vec<report::ErrorSample> = errors
        .into_iter()
        .map(|(message, count)| report::ErrorSample { message, count })
        .collect();
    report::sort_samples(&mut samples);
    let mut r = Report {
        pass: false,
        mode: cfg.mode.as_str().to_string(),
        url: cfg.url.clone(),
        duration_s: report::round3(duration_s),
        connections: report::ConnectionCounts {
            attempted: t.attempted,
            succeeded: t.succeeded,
            failed: t.failed,
            reconnects: t.reconnects,
            disconnects: t.disconnects,
            peak_active,
        },
        messages: t.msgs.clone(),
        throughput_mps: report::round3(t.msgs.received as f64 / duration_s.max(1e-3)),
        errors: report::Errors {
            count: t.failed + t.disconnects + t.msgs.corrupted + t.protocol_errors,
            percent: 0.0,
            samples,
        },
        ..Report::default()
    };
    r.errors.percent = r.error_percent();
    r.set_histograms(&agg.latency, &agg.reconnect);
    let slos: Vec<Slo> = if cfg.slos.is_empty() {
        default_slos()
    } else {
        cfg.slos.clone()
    };
    slo::judge(&mut r, &slos, cfg.baseline.as_ref(), cfg.max_regression_pct);
    r
}

/// The SLOs that apply when none are given: nothing lost, duplicated,
/// reordered or corrupted.
pub fn default_slos() -> Vec<Slo> {
    ["loss==0", "dup==0", "reorder==0", "corrupt==0"]
        .iter()
        .filter_map(|e| Slo::parse(e).ok())
        .collect()
}

/// Once a second: roll the live latency window, show progress.
async fn progress_task(
    live: Arc<LiveStats>,
    mode: Progress,
    phases: Vec<String>,
    done: CancellationToken,
) {
    let terminal = std::io::stderr().is_terminal();
    let bar = (mode == Progress::Auto && terminal).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    });
    let plain = mode == Progress::Plain || (mode == Progress::Auto && !terminal);
    let period = Duration::from_secs(1);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut last_received = 0u64;
    let mut last_at = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = done.cancelled() => break,
        }
        let received = live.received.load(Ordering::Relaxed);
        let now = Instant::now();
        live.roll_window(received.saturating_sub(last_received), now - last_at);
        last_received = received;
        last_at = now;
        let snap = live.snapshot();
        let name = phases.get(snap.phase).map(String::as_str).unwrap_or("");
        let line = snap.line(name);
        if let Some(bar) = &bar {
            bar.set_message(line);
        } else if plain {
            eprintln!("{line}");
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
