//! `--scenario FILE`: load phases from YAML.
//!
//! ```yaml
//! phases:
//!   - {name: ramp,  duration: 30s, connections: 500,  rate: 10}
//!   - {name: hold,  duration: 60s, connections: 500,  rate: 10}
//!   - {name: spike, duration: 10s, connections: 2000, rate: 20}
//! ```
//!
//! Phases run in order; `connections` is the target at the end of the phase,
//! reached linearly from the previous phase's (0 before the first). `rate`
//! (messages per second per connection) defaults to `--rate`; `duration`
//! is a humantime string (`30s`, `1m30s`, `500ms`) or a number of seconds.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One phase of a load scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// The phase's name, shown in progress lines.
    pub name: String,
    /// How long the phase lasts.
    #[serde(with = "duration_secs")]
    pub duration: Duration,
    /// The connection target at the end of the phase.
    pub connections: u32,
    /// Messages per second per connection during the phase.
    pub rate: f64,
}

mod duration_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("--scenario {path}: cannot read the file: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's content is not a valid scenario.
    #[error("--scenario {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, naming the phase and field.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    phases: Option<Vec<RawPhase>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    duration: Option<RawDuration>,
    #[serde(default)]
    connections: Option<f64>,
    #[serde(default)]
    rate: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(f64),
    Text(String),
}

/// Reads and validates a scenario file; `default_rate` fills phases without `rate`.
pub fn load_scenario(path: &Path, default_rate: f64) -> Result<Vec<Phase>, ScenarioError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_scenario(&text, &shown, default_rate)
}

/// Parses scenario YAML; `path` only names the file in error messages.
pub fn parse_scenario(
    text: &str,
    path: &str,
    default_rate: f64,
) -> Result<Vec<Phase>, ScenarioError> {
    let invalid = |message: String| ScenarioError::Invalid {
        path: path.to_string(),
        message,
    };
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|err| {
        invalid(format!(
            "{err} (expected `phases:` with items {{name, duration, connections, rate}})"
        ))
    })?;
    let raw_phases = raw.phases.ok_or_else(|| {
        invalid("missing field `phases` (a list of {name, duration, connections, rate})".into())
    })?;
    if raw_phases.is_empty() {
        return Err(invalid(
            "field `phases` is empty: give at least one phase".into(),
        ));
    }
    let mut phases = Vec::with_capacity(raw_phases.len());
    for (i, p) in raw_phases.into_iter().enumerate() {
        let name = p.name.unwrap_or_else(|| format!("phase{}", i + 1));
        let at = format!("phase {} (`{name}`)", i + 1);
        let duration = match p.duration {
            None => {
                return Err(invalid(format!(
                    "{at}: missing field `duration` (e.g. 30s, 500ms, 2m)"
                )))
            }
            Some(RawDuration::Seconds(s)) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
            Some(RawDuration::Seconds(s)) => {
                return Err(invalid(format!(
                    "{at}: field `duration`: `{s}` must be a positive duration (e.g. 30s)"
                )))
            }
            Some(RawDuration::Text(t)) => match humantime::parse_duration(t.trim()) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    return Err(invalid(format!(
                        "{at}: field `duration`: `{t}` must be longer than zero"
                    )))
                }
                Err(err) => {
                    return Err(invalid(format!(
                    "{at}: field `duration`: `{t}` is not a duration ({err}; e.g. 30s, 500ms, 2m)"
                )))
                }
            },
        };
        let connections = match p.connections {
            None => {
                return Err(invalid(format!(
                "{at}: missing field `connections` (the connection target at the end of the phase)"
            )))
            }
            Some(c) if c.is_finite() && c >= 0.0 && c.fract() == 0.0 && c <= 1_000_000.0 => {
                c as u32
            }
            Some(c) => {
                return Err(invalid(format!(
                    "{at}: field `connections`: `{c}` must be a whole number from 0 to 1000000"
                )))
            }
        };
        let rate = match p.rate {
            None => default_rate,
            Some(r) if r.is_finite() && r >= 0.0 => r,
            Some(r) => {
                return Err(invalid(format!(
                    "{at}: field `rate`: `{r}` must be a number of messages per second, 0 or more"
                )))
            }
        };
        phases.push(Phase {
            name,
            duration,
            connections,
            rate,
        });
    }
    Ok(phases)
}

/// Where a load test stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleAt {
    /// Index of the current phase.
    pub phase: usize,
    /// The connection target now (linearly interpolated within the phase).
    pub target: f64,
    /// Messages per second per connection now.
    pub rate: f64,
}

/// The schedule at `t` since the start; `initial` is the target at t = 0.
/// Returns `None` once every phase is over.
pub fn schedule_at(phases: &[Phase], initial: u32, t: Duration) -> Option<ScheduleAt> {
    let mut start = Duration::ZERO;
    let mut prev = f64::from(initial);
    for (i, phase) in phases.iter().enumerate() {
        let end = start + phase.duration;
        if t < end {
            let frac = (t - start).as_secs_f64() / phase.duration.as_secs_f64().max(1e-9);
            let target = prev + (f64::from(phase.connections) - prev) * frac;
            return Some(ScheduleAt {
                phase: i,
                target,
                rate: phase.rate,
            });
        }
        prev = f64::from(phase.connections);
        start = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example() {
        let yaml = "phases:\n  - {name: ramp,  duration: 30s, connections: 500,  rate: 10}\n  - {name: hold,  duration: 60s, connections: 500}\n";
        let phases = parse_scenario(yaml, "x.yaml", 7.0).expect("valid test input");
        assert_eq!(phases.len(), 2);
        assert_eq!(phases[0].duration, Duration::from_secs(30));
        assert_eq!(phases[1].rate, 7.0);
        let s = schedule_at(&phases, 0, Duration::from_secs(15)).expect("valid test input");
        assert!((s.target - 250.0).abs() < 1e-6);
        assert!(schedule_at(&phases, 0, Duration::from_secs(91)).is_none());
    }

    #[test]
    fn names_the_bad_field() {
        let err = parse_scenario(
            "phases:\n  - {name: a, duration: 3x, connections: 1}\n",
            "f.yaml",
            1.0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("f.yaml") && err.contains("duration") && err.contains("3x"),
            "{err}"
        );
        let err = parse_scenario("phases:\n  - {name: a, duration: 3s}\n", "f.yaml", 1.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("connections"), "{err}");
        let err = parse_scenario(
            "phases:\n  - {name: a, duration: 3s, connections: 1, bogus: 2}\n",
            "f.yaml",
            1.0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
