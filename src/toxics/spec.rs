//! What the user writes (YAML or the admin API's JSON) and its validation.
//!
//! [`ToxicSpec::validate_in`] checks a spec against a registry of types and
//! turns it into a [`ToxicEntry`]; `ToxicSpec::validate` (in `mod.rs`, next
//! to the registry) calls it with [`REGISTRY`](super::REGISTRY).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::api::{ParseFn, ToxicDef};
use super::attrs::{AttrError, Attributes};
use super::matching::MatchSpec;
use super::message_match::{CountSpec, MessageMatcher};
use crate::vocab::StreamDir;

/// `schedule`: the toxic is active in windows, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Delay before the first window.
    #[serde(default)]
    pub start_after: u64,
    /// Window length (absent or 0: open-ended).
    #[serde(default)]
    pub duration: u64,
    /// Window period (absent or 0: a single window).
    #[serde(default)]
    pub period: u64,
}

impl ScheduleSpec {
    /// Whether the window is open `elapsed` after the timer origin.
    pub fn is_active(&self, elapsed: Duration) -> bool {
        let ms = elapsed.as_millis() as u64;
        if ms < self.start_after {
            return false;
        }
        let since = ms - self.start_after;
        let pos = if self.period > 0 {
            since % self.period
        } else {
            since
        };
        self.duration == 0 || pos < self.duration
    }

    /// Checks the fields against each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.period > 0 && self.duration > self.period {
            return Err(format!(
                "schedule.duration {} is longer than schedule.period {}: valid range is 0..={}",
                self.duration, self.period, self.period
            ));
        }
        Ok(())
    }
}

fn default_toxicity() -> f64 {
    1.0
}

/// A toxic as the user writes it (Toxiproxy's JSON, plus `match` and `schedule`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToxicSpec {
    /// Unique per proxy; defaults to `<type>_<stream>`.
    #[serde(default)]
    pub name: String,
    /// One of [`REGISTRY`](super::REGISTRY)'s names.
    #[serde(rename = "type")]
    pub kind: String,
    /// Which stream it acts on.
    #[serde(default)]
    pub stream: StreamDir,
    /// Share of connections affected, drawn once per connection and stream.
    #[serde(default = "default_toxicity")]
    pub toxicity: f64,
    /// Type-specific attributes.
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Only matching connections are affected.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matcher: Option<MatchSpec>,
    /// Active windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// Which of the matching messages are acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<CountSpec>,
}

/// A toxic that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("toxic {toxic:?}: {message}")]
pub struct ToxicError {
    /// The toxic's name (or type when unnamed).
    pub toxic: String,
    /// What is wrong, naming the field, the value and the valid choices.
    pub message: String,
    /// The field at fault, as a dotted path (`type`, `toxicity`,
    /// `schedule.duration`, `attributes.probability`), so that a config file
    /// can point at it.
    pub field: Option<String>,
    /// Whether `field` is a key that should not be there (rather than a bad
    /// or missing value).
    pub unknown_key: bool,
}

/// A validated toxic, ready to be instantiated on connections.
#[derive(Debug)]
pub struct ToxicEntry {
    /// The spec, with the name filled in.
    pub spec: ToxicSpec,
    /// The type's shared definition.
    pub def: Arc<dyn ToxicDef>,
    /// When it was added or last updated (timer origin).
    pub added_at: Instant,
    /// Unique id of this version (a new one on every update).
    pub version: u64,
    /// `match.message` and `count`, compiled; `None` when the toxic acts
    /// on every message.
    pub selector: Option<Selector>,
}

/// The compiled `match.message` and `count` of one toxic.
#[derive(Debug, Clone)]
pub struct Selector {
    /// Which messages match (absent: every data message).
    pub matcher: Option<MessageMatcher>,
    /// Which of the matching messages are acted on.
    pub count: Option<CountSpec>,
}

/// The names of a registry's types, comma-separated, for error messages.
pub fn names_of(registry: &[(&str, ParseFn)]) -> String {
    registry
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

impl ToxicSpec {
    /// Fills the default name and validates everything (type, attributes,
    /// toxicity, schedule) against the types of `registry`.
    pub fn validate_in(
        mut self,
        version: u64,
        registry: &[(&str, ParseFn)],
    ) -> Result<ToxicEntry, ToxicError> {
        if self.name.is_empty() {
            self.name = format!("{}_{}", self.kind, self.stream.label());
        }
        let err = |field: &str, message: String| ToxicError {
            toxic: self.name.clone(),
            message,
            field: Some(field.to_string()),
            unknown_key: false,
        };
        let attr_err = |e: AttrError| ToxicError {
            toxic: self.name.clone(),
            message: e.message,
            field: Some(
                e.field
                    .map_or("attributes".into(), |f| format!("attributes.{f}")),
            ),
            unknown_key: e.unknown_key,
        };
        let Some((_, parse)) = registry.iter().find(|(name, _)| *name == self.kind) else {
            return Err(err(
                "type",
                format!(
                    "unknown type {:?}: valid types are {}",
                    self.kind,
                    names_of(registry)
                ),
            ));
        };
        if !(0.0..=1.0).contains(&self.toxicity) || self.toxicity.is_nan() {
            return Err(err(
                "toxicity",
                format!(
                    "toxicity {} is out of range: valid range is 0..=1",
                    self.toxicity
                ),
            ));
        }
        if let Some(schedule) = &self.schedule {
            schedule
                .validate()
                .map_err(|m| err("schedule.duration", m))?;
        }
        let mut attrs = Attributes::new(&self.kind, self.attributes.clone());
        let def = parse(&mut attrs).map_err(attr_err)?;
        attrs.finish().map_err(attr_err)?;
        let message = self.matcher.as_ref().and_then(|m| m.message.as_ref());
        if !def.acts_on_messages() && (message.is_some() || self.count.is_some()) {
            let field = if message.is_some() {
                "match.message"
            } else {
                "count"
            };
            // The key itself should not be there: point at it.
            return Err(ToxicError {
                unknown_key: true,
                ..err(
                    field,
                    format!(
                        "{field} is not allowed on a {} toxic: it does not act on messages (timeout, reset_peer, limit_data, bandwidth, slow_close, stall, idle_timeout and the handshake toxics act on bytes, time or the upgrade)",
                        self.kind
                    ),
                )
            });
        }
        let matcher = match message {
            Some(spec) => Some(spec.compile().map_err(|e| err(e.field, e.to_string()))?),
            None => None,
        };
        if let Some(count) = &self.count {
            count.validate().map_err(|e| err(e.field, e.to_string()))?;
        }
        let selector = (matcher.is_some() || self.count.is_some()).then(|| Selector {
            matcher,
            count: self.count.clone(),
        });
        Ok(ToxicEntry {
            spec: self,
            def,
            added_at: Instant::now(),
            version,
            selector,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toxics::api::ms;
    use crate::toxics::REGISTRY;

    fn spec(kind: &str, attributes: serde_json::Value) -> ToxicSpec {
        ToxicSpec {
            name: String::new(),
            kind: kind.into(),
            stream: StreamDir::Downstream,
            toxicity: 1.0,
            attributes: attributes.as_object().cloned().unwrap_or_default(),
            matcher: None,
            schedule: None,
            count: None,
        }
    }

    #[test]
    fn schedule_windows() {
        let s = ScheduleSpec {
            start_after: 100,
            duration: 50,
            period: 200,
        };
        assert!(!s.is_active(ms(99)));
        assert!(s.is_active(ms(100)));
        assert!(s.is_active(ms(149)));
        assert!(!s.is_active(ms(150)));
        assert!(!s.is_active(ms(299)));
        assert!(s.is_active(ms(300)));
    }

    #[test]
    fn schedule_without_period_is_one_window_and_without_duration_open_ended() {
        let once = ScheduleSpec {
            start_after: 10,
            duration: 20,
            period: 0,
        };
        assert!(once.is_active(ms(29)));
        assert!(!once.is_active(ms(30)));
        assert!(!once.is_active(ms(10_010)));
        let open = ScheduleSpec {
            start_after: 10,
            duration: 0,
            period: 0,
        };
        assert!(!open.is_active(ms(9)));
        assert!(open.is_active(ms(86_400_000)));
    }

    #[test]
    fn schedule_longer_than_its_period_is_rejected() {
        let s = ScheduleSpec {
            start_after: 0,
            duration: 300,
            period: 200,
        };
        let message = s.validate().expect_err("duration > period");
        assert_eq!(
            message,
            "schedule.duration 300 is longer than schedule.period 200: valid range is 0..=200"
        );
    }

    #[test]
    fn unnamed_toxic_is_named_type_and_stream() {
        let entry = spec("latency", serde_json::json!({"latency": 5}))
            .validate_in(3, REGISTRY)
            .expect("valid");
        assert_eq!(entry.spec.name, "latency_downstream");
        assert_eq!(entry.version, 3);
    }

    #[test]
    fn unknown_type_names_the_valid_types() {
        let err = spec("nope", serde_json::json!({}))
            .validate_in(0, REGISTRY)
            .expect_err("unknown");
        assert_eq!(err.toxic, "nope_downstream");
        assert!(
            err.message
                .starts_with("unknown type \"nope\": valid types are latency, bandwidth,"),
            "{}",
            err.message
        );
        assert!(err.message.ends_with("handshake_delay"), "{}", err.message);
    }

    #[test]
    fn toxicity_out_of_range_is_rejected() {
        for bad in [-0.1, 1.5, f64::NAN] {
            let mut s = spec("latency", serde_json::json!({"latency": 5}));
            s.toxicity = bad;
            let err = s.validate_in(0, REGISTRY).expect_err("toxicity");
            assert!(
                err.message.contains("valid range is 0..=1"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn every_registered_type_rejects_unknown_attributes() {
        for (name, _) in REGISTRY {
            let err = spec(name, serde_json::json!({"bogus": 1}))
                .validate_in(0, REGISTRY)
                .expect_err(name);
            assert!(
                err.message.contains("bogus") || err.message.contains("missing"),
                "{name}: {}",
                err.message
            );
        }
    }
}
