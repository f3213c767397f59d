//! Typed, validated access to a toxic's `attributes` map.
//!
//! Every accessor names the attribute, the bad value and the valid range in
//! its error; [`Attributes::finish`] rejects keys no accessor asked for.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use serde_json::{Map, Value};

/// An invalid attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AttrError {
    /// What is wrong, naming the attribute, the value and the valid range.
    pub message: String,
    /// The attribute at fault (its key in `attributes`), when there is one.
    pub field: Option<String>,
    /// Whether `field` is a key that should not be there (rather than a
    /// bad or missing value).
    pub unknown_key: bool,
}

impl AttrError {
    /// A bad or missing value of attribute `field`.
    pub fn new(field: &str, message: impl Into<String>) -> AttrError {
        AttrError {
            message: message.into(),
            field: Some(field.to_string()),
            unknown_key: false,
        }
    }
}

/// The attributes of one toxic, consumed by its type's `parse`.
#[derive(Debug)]
pub struct Attributes {
    kind: String,
    map: Map<String, Value>,
    asked: BTreeSet<String>,
}

impl Attributes {
    /// Wraps the attribute map of a toxic of type `kind`.
    pub fn new(kind: &str, map: Map<String, Value>) -> Attributes {
        Attributes {
            kind: kind.to_string(),
            map,
            asked: BTreeSet::new(),
        }
    }

    fn get(&mut self, name: &str) -> Option<&Value> {
        self.asked.insert(name.to_string());
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn missing(&self, name: &str, range: &str) -> AttrError {
        AttrError::new(
            name,
            format!(
                "{} attribute {name} is missing: valid range is {range}",
                self.kind
            ),
        )
    }

    /// An optional unsigned integer in `range`.
    pub fn opt_u64(
        &mut self,
        name: &str,
        range: RangeInclusive<u64>,
    ) -> Result<Option<u64>, AttrError> {
        let kind = self.kind.clone();
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        match parsed {
            Some(v) if range.contains(&v) => Ok(Some(v)),
            _ => Err(AttrError::new(
                name,
                format!(
                    "{kind} attribute {name}={value} is invalid: valid range is integers {}..={}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// A required unsigned integer in `range`.
    pub fn u64(&mut self, name: &str, range: RangeInclusive<u64>) -> Result<u64, AttrError> {
        let text = format!("integers {}..={}", range.start(), range.end());
        self.opt_u64(name, range)?
            .ok_or_else(|| self.missing(name, &text))
    }

    /// An unsigned integer in `range`, `default` when absent.
    pub fn u64_or(
        &mut self,
        name: &str,
        range: RangeInclusive<u64>,
        default: u64,
    ) -> Result<u64, AttrError> {
        Ok(self.opt_u64(name, range)?.unwrap_or(default))
    }

    /// An optional number in `range`.
    pub fn opt_f64(
        &mut self,
        name: &str,
        range: RangeInclusive<f64>,
    ) -> Result<Option<f64>, AttrError> {
        let kind = self.kind.clone();
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        match value.as_f64() {
            Some(v) if range.contains(&v) => Ok(Some(v)),
            _ => Err(AttrError::new(
                name,
                format!(
                    "{kind} attribute {name}={value} is invalid: valid range is {}..={}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// A probability in 0..=1, `default` when absent.
    pub fn probability_or(&mut self, name: &str, default: f64) -> Result<f64, AttrError> {
        Ok(self.opt_f64(name, 0.0..=1.0)?.unwrap_or(default))
    }

    /// A required probability in 0..=1.
    pub fn probability(&mut self, name: &str) -> Result<f64, AttrError> {
        self.opt_f64(name, 0.0..=1.0)?
            .ok_or_else(|| self.missing(name, "0..=1"))
    }

    /// A boolean, `default` when absent.
    pub fn bool_or(&mut self, name: &str, default: bool) -> Result<bool, AttrError> {
        let kind = self.kind.clone();
        match self.get(name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(AttrError::new(
                name,
                format!(
                    "{kind} attribute {name}={other} is invalid: valid choices are true, false"
                ),
            )),
        }
    }

    /// An optional string.
    pub fn opt_string(&mut self, name: &str) -> Result<Option<String>, AttrError> {
        let kind = self.kind.clone();
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(AttrError::new(
                name,
                format!("{kind} attribute {name}={other} is invalid: expected a string"),
            )),
        }
    }

    /// One of `choices`, `default` when absent.
    pub fn choice_or(
        &mut self,
        name: &str,
        choices: &[&str],
        default: &str,
    ) -> Result<String, AttrError> {
        let kind = self.kind.clone();
        match self.opt_string(name)? {
            None => Ok(default.to_string()),
            Some(s) if choices.contains(&s.as_str()) => Ok(s),
            Some(s) => Err(AttrError::new(
                name,
                format!(
                    "{kind} attribute {name}={s:?} is invalid: valid choices are {}",
                    choices.join(", ")
                ),
            )),
        }
    }

    /// A list of strings, each one of `choices`; `default` when absent.
    pub fn choices_or(
        &mut self,
        name: &str,
        choices: &[&str],
        default: &[&str],
    ) -> Result<Vec<String>, AttrError> {
        let kind = self.kind.clone();
        let bad = |v: &Value| {
            AttrError::new(
                name,
                format!(
                    "{kind} attribute {name}={v} is invalid: valid choices are lists of {}",
                    choices.join(", ")
                ),
            )
        };
        match self.get(name) {
            None => Ok(default.iter().map(|s| s.to_string()).collect()),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    match item.as_str() {
                        Some(s) if choices.contains(&s) => out.push(s.to_string()),
                        _ => return Err(bad(item)),
                    }
                }
                Ok(out)
            }
            Some(Value::String(s)) if choices.contains(&s.as_str()) => Ok(vec![s.clone()]),
            Some(other) => Err(bad(&other.clone())),
        }
    }

    /// Whether an attribute is present (and marks it as known).
    pub fn has(&mut self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Rejects attributes no accessor asked for.
    pub fn finish(self) -> Result<(), AttrError> {
        let unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.asked.contains(*k))
            .collect();
        if let Some(key) = unknown.first() {
            let known: Vec<&str> = self.asked.iter().map(String::as_str).collect();
            return Err(AttrError {
                message: format!(
                    "{} has no attribute {key}: valid attributes are {}",
                    self.kind,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
                field: Some(key.to_string()),
                unknown_key: true,
            });
        }
        Ok(())
    }
}
