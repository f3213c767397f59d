//! SLO expressions (`--slo`): `METRIC OP VALUE[UNIT]`, e.g. `p99<100ms`.
//!
//! | metric | meaning | units |
//! |---|---|---|
//! | `p50` `p90` `p95` `p99` `p999` `max` | message round-trip latency | `us` `ms` (default) `s` |
//! | `reconnect_p50` `reconnect_p99` `reconnect_max` | time to reconnect | `us` `ms` (default) `s` |
//! | `loss` `dup` `reorder` `corrupt` | messages lost / duplicated / reordered / corrupted | a count, or `%` of messages sent |
//! | `errors` | connection failures + abnormal disconnects + corrupted/protocol errors | a count, or `%` of (connection attempts + messages sent) |
//! | `connect_success` | successful connection attempts | always a percentage (`%` optional) |
//! | `reconnects` | reconnections | a count |
//! | `throughput` | echoed messages per second | msg/s |
//!
//! Operators: `<`, `<=`, `>`, `>=`, `==`.

// The report holds SLO results, so it sits below this module: SLOs read a
// report, the report never reads SLOs.
pub use super::report::SloResult;
use super::report::{compare_baseline, round3, Report};

/// Every metric name an SLO may use.
pub const METRIC_NAMES: &[&str] = &[
    "p50",
    "p90",
    "p95",
    "p99",
    "p999",
    "max",
    "loss",
    "dup",
    "reorder",
    "corrupt",
    "errors",
    "connect_success",
    "reconnect_p50",
    "reconnect_p99",
    "reconnect_max",
    "reconnects",
    "throughput",
];

/// A metric an SLO constrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Latency percentile (quantile 0..1 in thousandths, e.g. 990 for p99) or max (1000).
    Latency(u16),
    /// Reconnect-time percentile (in thousandths) or max (1000).
    Reconnect(u16),
    /// Lost messages.
    Loss,
    /// Duplicated messages.
    Dup,
    /// Reordered messages.
    Reorder,
    /// Corrupted messages.
    Corrupt,
    /// Errors (see the module docs).
    Errors,
    /// Share of successful connection attempts.
    ConnectSuccess,
    /// Number of reconnections.
    Reconnects,
    /// Echoed messages per second.
    Throughput,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
}

impl Op {
    fn holds(self, value: f64, threshold: f64) -> bool {
        const EPS: f64 = 1e-9;
        match self {
            Op::Lt => value < threshold,
            Op::Le => value <= threshold + EPS,
            Op::Gt => value > threshold,
            Op::Ge => value + EPS >= threshold,
            Op::Eq => (value - threshold).abs() <= EPS,
        }
    }
}

/// The unit an SLO's value is expressed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A plain number (ms for time metrics).
    None,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
    /// Percent.
    Percent,
}

/// A parsed SLO expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// The expression as written.
    pub expr: String,
    /// The metric it constrains.
    pub metric: Metric,
    /// The comparison.
    pub op: Op,
    /// The threshold, in `unit`.
    pub threshold: f64,
    /// The unit of `threshold` (and of the measured value in the report).
    pub unit: Unit,
}

/// An SLO expression that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("--slo: cannot parse `{expr}`: {reason}. Expected METRIC OP VALUE[UNIT] such as p99<100ms, loss==0 or errors<1%; valid metrics: {metrics}; operators: < <= > >= ==; units: us ms s %")]
pub struct SloParseError {
    /// The expression.
    pub expr: String,
    /// What is wrong with it.
    pub reason: String,
    /// The valid metric names, comma-separated.
    pub metrics: String,
}

impl Slo {
    /// Parses `METRIC OP VALUE[UNIT]`.
    pub fn parse(expr: &str) -> Result<Slo, SloParseError> {
        let fail = |reason: String| SloParseError {
            expr: expr.to_string(),
            reason,
            metrics: METRIC_NAMES.join(", "),
        };
        let s = expr.trim();
        let name_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let name = &s[..name_end];
        if name.is_empty() {
            return Err(fail("no metric name".into()));
        }
        let metric =
            metric_from_name(name).ok_or_else(|| fail(format!("unknown metric `{name}`")))?;
        let rest = s[name_end..].trim_start();
        let (op, rest) = if let Some(r) = rest.strip_prefix("<=") {
            (Op::Le, r)
        } else if let Some(r) = rest.strip_prefix(">=") {
            (Op::Ge, r)
        } else if let Some(r) = rest.strip_prefix("==") {
            (Op::Eq, r)
        } else if let Some(r) = rest.strip_prefix('<') {
            (Op::Lt, r)
        } else if let Some(r) = rest.strip_prefix('>') {
            (Op::Gt, r)
        } else {
            return Err(fail(format!("expected an operator after `{name}`")));
        };
        let rest = rest.trim();
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..num_end];
        let threshold: f64 = number
            .parse()
            .map_err(|_| fail(format!("`{number}` is not a number")))?;
        let unit = match rest[num_end..].trim() {
            "" => Unit::None,
            "us" | "µs" => Unit::Us,
            "ms" => Unit::Ms,
            "s" => Unit::S,
            "%" => Unit::Percent,
            other => return Err(fail(format!("unknown unit `{other}`"))),
        };
        let unit_ok = match metric {
            Metric::Latency(_) | Metric::Reconnect(_) => unit != Unit::Percent,
            Metric::Loss | Metric::Dup | Metric::Reorder | Metric::Corrupt | Metric::Errors => {
                matches!(unit, Unit::None | Unit::Percent)
            }
            Metric::ConnectSuccess => matches!(unit, Unit::None | Unit::Percent),
            Metric::Reconnects | Metric::Throughput => unit == Unit::None,
        };
        if !unit_ok {
            return Err(fail(format!("metric `{name}` does not take this unit")));
        }
        Ok(Slo {
            expr: expr.trim().to_string(),
            metric,
            op,
            threshold,
            unit,
        })
    }

    /// The measured value of this SLO's metric in the report, in its unit.
    pub fn measure(&self, r: &Report) -> f64 {
        let time = |ms: f64| match self.unit {
            Unit::Us => ms * 1000.0,
            Unit::S => ms / 1000.0,
            _ => ms,
        };
        let count = |n: u64, of: u64| {
            if self.unit == Unit::Percent {
                if of == 0 {
                    0.0
                } else {
                    n as f64 * 100.0 / of as f64
                }
            } else {
                n as f64
            }
        };
        let m = &r.messages;
        match self.metric {
            Metric::Latency(q) => time(match q {
                500 => r.latency_ms.p50,
                900 => r.latency_ms.p90,
                950 => r.latency_ms.p95,
                990 => r.latency_ms.p99,
                999 => r.latency_ms.p999,
                _ => r.latency_ms.max,
            }),
            Metric::Reconnect(q) => time(match q {
                500 => r.reconnect_ms.p50,
                990 => r.reconnect_ms.p99,
                _ => r.reconnect_ms.max,
            }),
            Metric::Loss => count(m.lost, m.sent),
            Metric::Dup => count(m.duplicated, m.sent),
            Metric::Reorder => count(m.reordered, m.sent),
            Metric::Corrupt => count(m.corrupted, m.sent),
            Metric::Errors => {
                if self.unit == Unit::Percent {
                    r.errors.percent
                } else {
                    r.errors.count as f64
                }
            }
            Metric::ConnectSuccess => {
                let c = &r.connections;
                if c.attempted == 0 {
                    0.0
                } else {
                    c.succeeded as f64 * 100.0 / c.attempted as f64
                }
            }
            Metric::Reconnects => r.connections.reconnects as f64,
            Metric::Throughput => r.throughput_mps,
        }
    }

    /// Evaluates the SLO against a report.
    pub fn evaluate(&self, r: &Report) -> SloResult {
        let value = self.measure(r);
        SloResult {
            expr: self.expr.clone(),
            value: round3(value),
            pass: value.is_finite() && self.op.holds(value, self.threshold),
        }
    }
}

fn metric_from_name(name: &str) -> Option<Metric> {
    Some(match name {
        "p50" => Metric::Latency(500),
        "p90" => Metric::Latency(900),
        "p95" => Metric::Latency(950),
        "p99" => Metric::Latency(990),
        "p999" => Metric::Latency(999),
        "max" => Metric::Latency(1000),
        "reconnect_p50" => Metric::Reconnect(500),
        "reconnect_p99" => Metric::Reconnect(990),
        "reconnect_max" => Metric::Reconnect(1000),
        "loss" => Metric::Loss,
        "dup" => Metric::Dup,
        "reorder" => Metric::Reorder,
        "corrupt" => Metric::Corrupt,
        "errors" => Metric::Errors,
        "connect_success" => Metric::ConnectSuccess,
        "reconnects" => Metric::Reconnects,
        "throughput" => Metric::Throughput,
        _ => return None,
    })
}

/// Evaluates `slos` and the baseline, and sets `pass` and `failures`.
pub fn judge(
    report: &mut Report,
    slos: &[Slo],
    baseline: Option<&Report>,
    max_regression_pct: f64,
) {
    report.slo = slos.iter().map(|s| s.evaluate(report)).collect();
    report.baseline = baseline
        .map(|base| compare_baseline(base, report, max_regression_pct))
        .unwrap_or_default();
    let mut failures = Vec::new();
    if report.connections.succeeded == 0 {
        let why = report
            .errors
            .samples
            .first()
            .map(|s| format!(": {}", s.message))
            .unwrap_or_default();
        failures.push(format!("no connection succeeded{why}"));
    }
    for s in report.slo.iter().filter(|s| !s.pass) {
        failures.push(format!("SLO {} failed (measured {})", s.expr, s.value));
    }
    for b in report.baseline.iter().filter(|b| !b.pass) {
        failures.push(format!(
            "{} regressed by {:.1}% against the baseline (max {}%)",
            b.metric, b.regression_pct, max_regression_pct
        ));
    }
    report.pass = failures.is_empty();
    report.failures = failures;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_examples() {
        for e in [
            "p50<10ms",
            "p99<100ms",
            "loss==0",
            "reorder==0",
            "dup==0",
            "errors<1%",
            "connect_success>99%",
            "reconnect_p99<2s",
            "throughput>5000",
            "p99 <= 0.5 s",
            "p999>=10us",
        ] {
            Slo::parse(e).unwrap_or_else(|err| panic!("{e}: {err}"));
        }
        let s = Slo::parse("p99<100ms").expect("valid test input");
        assert_eq!(s.op, Op::Lt);
        assert_eq!(s.threshold, 100.0);
    }

    #[test]
    fn rejects_nonsense_with_the_metric_list() {
        for e in [
            "p98<1ms",
            "p99",
            "p99<abc",
            "p99<1%",
            "throughput>5ms",
            "loss=0",
            "",
            "p99<1parsec",
        ] {
            let err = Slo::parse(e).unwrap_err().to_string();
            assert!(err.contains("connect_success"), "{e}: {err}");
        }
    }

    #[test]
    fn evaluates_units() {
        let mut r = Report::default();
        r.latency_ms.p99 = 150.0;
        r.messages.sent = 200;
        r.messages.lost = 1;
        assert!(
            !Slo::parse("p99<100ms")
                .expect("valid test input")
                .evaluate(&r)
                .pass
        );
        assert!(
            Slo::parse("p99<0.2s")
                .expect("valid test input")
                .evaluate(&r)
                .pass
        );
        let loss = Slo::parse("loss<1%")
            .expect("valid test input")
            .evaluate(&r);
        assert!(loss.pass && (loss.value - 0.5).abs() < 1e-9);
        assert!(
            !Slo::parse("loss==0")
                .expect("valid test input")
                .evaluate(&r)
                .pass
        );
    }
}
