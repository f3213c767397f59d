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
use serde_saphyr::{Location, Spanned};

use crate::config::{line_col, yaml_error};

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
    #[error("--scenario {path}:{at}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// `LINE:COL` of the offending key or value.
        at: String,
        /// What is wrong, naming the phase and field.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    phases: Option<Spanned<Vec<Spanned<RawPhase>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    duration: Option<Spanned<RawDuration>>,
    #[serde(default)]
    connections: Option<Spanned<f64>>,
    #[serde(default)]
    rate: Option<Spanned<f64>>,
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
    let invalid = |at: Location, message: String| ScenarioError::Invalid {
        path: path.to_string(),
        at: line_col(at),
        message,
    };
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|err| {
        let (at, message) = yaml_error(&err);
        invalid(
            at,
            format!(
                "{message} (expected `phases:` with items {{name, duration, connections, rate}})"
            ),
        )
    })?;
    let raw_phases = raw.phases.ok_or_else(|| {
        invalid(
            Location::UNKNOWN,
            "missing field `phases` (a list of {name, duration, connections, rate})".into(),
        )
    })?;
    if raw_phases.value.is_empty() {
        return Err(invalid(
            raw_phases.referenced,
            "field `phases` is empty: give at least one phase".into(),
        ));
    }
    let mut phases = Vec::with_capacity(raw_phases.value.len());
    for (i, phase) in raw_phases.value.into_iter().enumerate() {
        let (p, phase_at) = (phase.value, phase.referenced);
        let name = p.name.unwrap_or_else(|| format!("phase{}", i + 1));
        let at = format!("phase {} (`{name}`)", i + 1);
        let duration = match p.duration {
            None => {
                return Err(invalid(
                    phase_at,
                    format!("{at}: missing field `duration` (e.g. 30s, 500ms, 2m)"),
                ))
            }
            Some(d) => match d.value {
                RawDuration::Seconds(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
                RawDuration::Seconds(s) => {
                    return Err(invalid(
                        d.referenced,
                        format!(
                            "{at}: field `duration`: `{s}` must be a positive duration (e.g. 30s)"
                        ),
                    ))
                }
                RawDuration::Text(t) => match humantime::parse_duration(t.trim()) {
                    Ok(v) if !v.is_zero() => v,
                    Ok(_) => {
                        return Err(invalid(
                            d.referenced,
                            format!("{at}: field `duration`: `{t}` must be longer than zero"),
                        ))
                    }
                    Err(err) => {
                        return Err(invalid(
                            d.referenced,
                            format!(
                                "{at}: field `duration`: `{t}` is not a duration ({err}; e.g. 30s, 500ms, 2m)"
                            ),
                        ))
                    }
                },
            },
        };
        let connections = match p.connections {
            None => {
                return Err(invalid(
                    phase_at,
                    format!(
                        "{at}: missing field `connections` (the connection target at the end of the phase)"
                    ),
                ))
            }
            Some(c)
                if c.value.is_finite()
                    && c.value >= 0.0
                    && c.value.fract() == 0.0
                    && c.value <= 1_000_000.0 =>
            {
                c.value as u32
            }
            Some(c) => {
                return Err(invalid(
                    c.referenced,
                    format!(
                        "{at}: field `connections`: `{}` must be a whole number from 0 to 1000000",
                        c.value
                    ),
                ))
            }
        };
        let rate = match p.rate {
            None => default_rate,
            Some(r) if r.value.is_finite() && r.value >= 0.0 => r.value,
            Some(r) => {
                return Err(invalid(
                    r.referenced,
                    format!(
                    "{at}: field `rate`: `{}` must be a number of messages per second, 0 or more",
                    r.value
                ),
                ))
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

    fn error(yaml: &str) -> String {
        parse_scenario(yaml, "f.yaml", 1.0)
            .expect_err("invalid test input")
            .to_string()
    }

    #[test]
    fn errors_point_at_the_field() {
        // Flow style: the value inside the braces.
        let err = error("phases:\n  - {name: a, duration: 3x, connections: 1}\n");
        assert!(
            err.starts_with("--scenario f.yaml:2:25: phase 1 (`a`): field `duration`: `3x`"),
            "{err}"
        );
        // Block style, the bad field three lines into the second phase.
        let err = error(
            "phases:\n  - {name: a, duration: 1s, connections: 1}\n  - name: b\n    duration: 1s\n    rate: 2\n    connections: -4\n",
        );
        assert!(
            err.starts_with("--scenario f.yaml:6:18: phase 2 (`b`): field `connections`: `-4`"),
            "{err}"
        );
        let err =
            error("phases:\n  - name: b\n    duration: 1s\n    rate: -1\n    connections: 4\n");
        assert!(
            err.starts_with("--scenario f.yaml:4:11: phase 1 (`b`): field `rate`"),
            "{err}"
        );
        // A missing field names the phase; an unknown key is reported at the key.
        let err = error("phases:\n  - name: b\n    duration: 1s\n");
        assert!(
            err.starts_with("--scenario f.yaml:2:5: phase 1 (`b`): missing field `connections`"),
            "{err}"
        );
        let err = error("phases:\n  - name: b\n    duration: 1s\n    colour: red\n");
        assert!(
            err.starts_with("--scenario f.yaml:4:5: unknown field `colour`"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        let err = error("# none\nphases: []\n");
        assert!(
            err.starts_with("--scenario f.yaml:2:9: field `phases` is empty"),
            "{err}"
        );
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
