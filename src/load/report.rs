//! The load test's result: the JSON report (`--report`), the human table on
//! stdout, the JUnit XML (`--junit`) and the comparison with a baseline.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The result of a load test. Serialized as the `--report` JSON; every field
/// has a default so older or partial reports load as baselines.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// The verdict: every SLO and baseline check held and a connection succeeded.
    pub pass: bool,
    /// `echo` or `resume`.
    pub mode: String,
    /// The URL that was tested.
    pub url: String,
    /// How long messages were sent, in seconds (the drain period excluded).
    pub duration_s: f64,
    /// Connection counts.
    pub connections: ConnectionCounts,
    /// Message counts.
    pub messages: MessageCounts,
    /// Round-trip latency percentiles, milliseconds (HDR histogram).
    pub latency_ms: LatencyMs,
    /// Echoed messages per second over `duration_s`.
    pub throughput_mps: f64,
    /// Time to reconnect percentiles, milliseconds (HDR histogram).
    pub reconnect_ms: ReconnectMs,
    /// Errors: count, share and the most frequent messages.
    pub errors: Errors,
    /// Every SLO with its measured value.
    pub slo: Vec<SloResult>,
    /// The comparison with `--baseline`, if one was given.
    pub baseline: Vec<BaselineCheck>,
    /// Why the verdict failed, one line each (empty on a pass).
    pub failures: Vec<String>,
    /// Script mode: the script, its protocol and the checks that ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<ScriptSummary>,
    /// The latency and reconnect HDR histograms, for `wsfault report merge`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histograms: Option<Histograms>,
}

/// The HDR histograms behind a report's percentiles (µs), each the base64
/// of hdrhistogram's V2 serialization: merging adds them, so merged
/// percentiles are exact over all workers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Histograms {
    /// Round-trip (or send → answer) latency.
    pub latency: String,
    /// Time to reconnect.
    pub reconnect: String,
}

/// Encodes a histogram as base64 of its V2 serialization.
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    use base64::Engine as _;
    let mut bytes = Vec::new();
    use hdrhistogram::serialization::Serializer as _;
    match hdrhistogram::serialization::V2Serializer::new().serialize(h, &mut bytes) {
        Ok(_) => base64::engine::general_purpose::STANDARD.encode(bytes),
        Err(_) => String::new(),
    }
}

/// Decodes what [`encode_histogram`] wrote.
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("not an HDR V2 histogram: {e:?}"))
}

fn ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

/// The most frequent first, then by message; at most 10.
pub(crate) fn sort_samples(samples: &mut Vec<ErrorSample>) {
    samples.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.message.cmp(&b.message))
    });
    samples.truncate(10);
}

impl Report {
    /// `errors.count` as a percentage of connection attempts + messages sent.
    pub fn error_percent(&self) -> f64 {
        let ops = self.connections.attempted + self.messages.sent;
        if ops == 0 {
            0.0
        } else {
            round3(self.errors.count as f64 * 100.0 / ops as f64)
        }
    }

    /// Fills `latency_ms`, `reconnect_ms` and `histograms` from the histograms (µs).
    pub fn set_histograms(&mut self, latency: &Histogram<u64>, reconnect: &Histogram<u64>) {
        let q = |h: &Histogram<u64>, quantile: f64| {
            if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(quantile))
            }
        };
        let max = |h: &Histogram<u64>| if h.is_empty() { 0.0 } else { ms(h.max()) };
        self.latency_ms = LatencyMs {
            p50: q(latency, 0.5),
            p90: q(latency, 0.9),
            p95: q(latency, 0.95),
            p99: q(latency, 0.99),
            p999: q(latency, 0.999),
            max: max(latency),
            mean: if latency.is_empty() {
                0.0
            } else {
                round3(latency.mean() / 1000.0)
            },
        };
        self.reconnect_ms = ReconnectMs {
            p50: q(reconnect, 0.5),
            p99: q(reconnect, 0.99),
            max: max(reconnect),
        };
        self.histograms = Some(Histograms {
            latency: encode_histogram(latency),
            reconnect: encode_histogram(reconnect),
        });
    }
}

/// What a script-mode run checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScriptSummary {
    /// The script file.
    pub file: String,
    /// The protocol whose heartbeats were answered.
    pub protocol: String,
    /// The checks that ran (reply, sequence), in words.
    pub checks: Vec<String>,
    /// Server heartbeats the client answered.
    pub heartbeats_answered: u64,
}

/// The outcome of one SLO, as written in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloResult {
    /// The expression as written.
    pub expr: String,
    /// The measured value, in the expression's unit.
    pub value: f64,
    /// Whether the SLO held.
    pub pass: bool,
}

/// Rounds to three decimals (for readable JSON).
pub(crate) fn round3(v: f64) -> f64 {
    if v.is_finite() {
        (v * 1000.0).round() / 1000.0
    } else {
        v
    }
}

/// Connection counts of a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionCounts {
    /// Connection attempts (first connections and reconnections).
    pub attempted: u64,
    /// Attempts that completed the upgrade (and, in resume mode, got a welcome).
    pub succeeded: u64,
    /// Attempts that failed (refused, timed out, upgrade refused, not resumable).
    pub failed: u64,
    /// Successful reconnections after a disconnect.
    pub reconnects: u64,
    /// Connections that ended before the client closed them.
    pub disconnects: u64,
    /// The most connections open at once.
    pub peak_active: u64,
}

/// Message counts of a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessageCounts {
    /// Distinct messages sent (resends after a reconnect not counted).
    pub sent: u64,
    /// Distinct messages echoed back.
    pub received: u64,
    /// Sent but never echoed by the end (after the drain period).
    pub lost: u64,
    /// Echoed more than once.
    pub duplicated: u64,
    /// Echoed after a later message (what remains out of order after resume).
    pub reordered: u64,
    /// Echoed with a changed payload, or not a message of ours at all.
    pub corrupted: u64,
    /// Resume mode: messages sent again (after a reconnect or a timeout).
    pub resent: u64,
    /// Script mode: sent messages whose answer was still due when their
    /// connection ended (their fate is unknown, so they are not lost).
    pub unconfirmed: u64,
}

impl MessageCounts {
    /// Adds every count of `other` (merging connections and slots).
    pub(crate) fn add(&mut self, other: &MessageCounts) {
        self.sent += other.sent;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.corrupted += other.corrupted;
        self.resent += other.resent;
        self.unconfirmed += other.unconfirmed;
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean (for reference only; SLOs use percentiles).
    pub mean: f64,
}

/// Reconnect-time percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReconnectMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// Errors seen by the client.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Errors {
    /// Failed connection attempts + abnormal disconnects + corrupted
    /// messages + protocol errors.
    pub count: u64,
    /// `count` as a percentage of (connection attempts + messages sent).
    pub percent: f64,
    /// The most frequent error messages.
    pub samples: Vec<ErrorSample>,
}

/// One distinct error message and how often it was seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorSample {
    /// The message.
    pub message: String,
    /// Occurrences.
    pub count: u64,
}

/// One metric compared with the baseline report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BaselineCheck {
    /// `throughput_mps`, `latency_ms.p50` or `latency_ms.p99`.
    pub metric: String,
    /// The baseline's value.
    pub baseline: f64,
    /// This run's value.
    pub current: f64,
    /// How much worse this run is, in percent (negative: better).
    pub regression_pct: f64,
    /// Whether the regression is within `--max-regression`.
    pub pass: bool,
}

/// Compares a report with a baseline: throughput lower, or p50/p99 latency
/// higher, by more than `max_regression_pct` percent fails.
pub fn compare_baseline(
    baseline: &Report,
    current: &Report,
    max_regression_pct: f64,
) -> Vec<BaselineCheck> {
    let check = |metric: &str, base: f64, cur: f64, higher_is_worse: bool| {
        let regression = if base > 0.0 {
            if higher_is_worse {
                (cur - base) / base * 100.0
            } else {
                (base - cur) / base * 100.0
            }
        } else {
            0.0
        };
        BaselineCheck {
            metric: metric.to_string(),
            baseline: base,
            current: cur,
            regression_pct: round3(regression),
            pass: regression <= max_regression_pct + 1e-9,
        }
    };
    vec![
        check(
            "throughput_mps",
            baseline.throughput_mps,
            current.throughput_mps,
            false,
        ),
        check(
            "latency_ms.p50",
            baseline.latency_ms.p50,
            current.latency_ms.p50,
            true,
        ),
        check(
            "latency_ms.p99",
            baseline.latency_ms.p99,
            current.latency_ms.p99,
            true,
        ),
    ]
}

/// Renders the human summary table printed on stdout at the end of a run.
pub fn render_table(r: &Report) -> String {
    let mut out = String::new();
    let verdict = if r.pass { "PASS" } else { "FAIL" };
    let _ = writeln!(
        out,
        "wsfault load: {verdict}  ({} mode, {:.1} s, {})",
        r.mode, r.duration_s, r.url
    );
    let c = &r.connections;
    let m = &r.messages;
    let l = &r.latency_ms;
    let rc = &r.reconnect_ms;
    let rows: Vec<(&str, String)> = vec![
        (
            "connections",
            format!(
                "attempted {}  succeeded {}  failed {}  reconnects {}  disconnects {}  peak {}",
                c.attempted, c.succeeded, c.failed, c.reconnects, c.disconnects, c.peak_active
            ),
        ),
        (
            "messages",
            format!(
                "sent {}  received {}  lost {}  duplicated {}  reordered {}  corrupted {}{}",
                m.sent,
                m.received,
                m.lost,
                m.duplicated,
                m.reordered,
                m.corrupted,
                if m.resent > 0 {
                    format!("  resent {}", m.resent)
                } else {
                    String::new()
                }
            ) + &if m.unconfirmed > 0 {
                format!("  unconfirmed {}", m.unconfirmed)
            } else {
                String::new()
            },
        ),
        (
            "latency ms",
            format!(
                "p50 {:.3}  p90 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                l.p50, l.p90, l.p95, l.p99, l.p999, l.max
            ),
        ),
        ("throughput", format!("{:.1} msg/s", r.throughput_mps)),
        (
            "reconnect ms",
            format!("p50 {:.1}  p99 {:.1}  max {:.1}", rc.p50, rc.p99, rc.max),
        ),
        (
            "errors",
            format!("{} ({:.3}%)", r.errors.count, r.errors.percent),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "  {k:<13}{v}");
    }
    if let Some(s) = &r.script {
        let _ = writeln!(
            out,
            "  {:<13}{} (protocol {}, {} heartbeats answered)",
            "script", s.file, s.protocol, s.heartbeats_answered
        );
        if s.checks.is_empty() {
            let _ = writeln!(
                out,
                "  {:<13}none (the script has no `reply` or `sequence`)",
                "checks"
            );
        }
        for (i, c) in s.checks.iter().enumerate() {
            let _ = writeln!(out, "  {:<13}{c}", if i == 0 { "checks" } else { "" });
        }
    }
    for s in r.errors.samples.iter().take(5) {
        let _ = writeln!(out, "  {:<13}{}x {}", "", s.count, s.message);
    }
    if !r.slo.is_empty() {
        let width = r.slo.iter().map(|s| s.expr.len()).max().unwrap_or(3).max(3);
        let _ = writeln!(out, "  {:<width$}  {:>12}  result", "SLO", "value");
        for s in &r.slo {
            let _ = writeln!(
                out,
                "  {:<width$}  {:>12}  {}",
                s.expr,
                format_value(s.value),
                if s.pass { "pass" } else { "FAIL" }
            );
        }
    }
    if !r.baseline.is_empty() {
        let _ = writeln!(
            out,
            "  {:<16}{:>12}{:>12}{:>11}  result",
            "baseline", "was", "now", "worse by"
        );
        for b in &r.baseline {
            let _ = writeln!(
                out,
                "  {:<16}{:>12}{:>12}{:>10.1}%  {}",
                b.metric,
                format_value(b.baseline),
                format_value(b.current),
                b.regression_pct,
                if b.pass { "pass" } else { "FAIL" }
            );
        }
    }
    for f in &r.failures {
        let _ = writeln!(out, "  FAIL: {f}");
    }
    out
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Renders the report as JUnit XML: one `<testcase>` per SLO and per
/// baseline check (or a single `verdict` case when there are none).
pub fn junit_xml(r: &Report) -> String {
    struct Case {
        name: String,
        class: &'static str,
        failure: Option<String>,
    }
    let mut cases: Vec<Case> = r
        .slo
        .iter()
        .map(|s| Case {
            name: s.expr.clone(),
            class: "wsfault.load.slo",
            failure: (!s.pass).then(|| format!("{} failed: measured {}", s.expr, s.value)),
        })
        .collect();
    cases.extend(r.baseline.iter().map(|b| Case {
        name: format!("baseline {}", b.metric),
        class: "wsfault.load.baseline",
        failure: (!b.pass).then(|| {
            format!(
                "{} regressed by {:.1}% (baseline {}, now {})",
                b.metric, b.regression_pct, b.baseline, b.current
            )
        }),
    }));
    if cases.is_empty() {
        cases.push(Case {
            name: "verdict".into(),
            class: "wsfault.load",
            failure: (!r.pass).then(|| r.failures.join("; ")),
        });
    }
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"wsfault load\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">",
        cases.len(),
        r.duration_s
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{:.3}\">",
        xml_escape(&format!("wsfault load {}", r.url)),
        cases.len(),
        r.duration_s
    );
    for c in &cases {
        match &c.failure {
            None => {
                let _ = writeln!(
                    out,
                    "    <testcase name=\"{}\" classname=\"{}\" time=\"0\"/>",
                    xml_escape(&c.name),
                    c.class
                );
            }
            Some(msg) => {
                let _ = writeln!(
                    out,
                    "    <testcase name=\"{}\" classname=\"{}\" time=\"0\">",
                    xml_escape(&c.name),
                    c.class
                );
                let _ = writeln!(
                    out,
                    "      <failure message=\"{}\" type=\"slo\">{}</failure>",
                    xml_escape(msg),
                    xml_escape(msg)
                );
                let _ = writeln!(out, "    </testcase>");
            }
        }
    }
    let _ = writeln!(
        out,
        "    <system-out>{}</system-out>",
        xml_escape(&render_table(r))
    );
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Escapes text for XML attributes and content; drops characters XML 1.0 forbids.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}
