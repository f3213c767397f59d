//! Typed, validated access to a toxic's `attributes` map.
//!
//! Every accessor names the attribute, the bad value and the valid range in
//! its error; [`Attributes::finish`] rejects keys no accessor asked for.
//!
//! The accessors also describe the attributes: in probe mode
//! ([`Attributes::probing`]) each call notes its attribute's name, kind,
//! range or choices, default and whether it is required ([`AttrInfo`]), and
//! gives the attributes it is told to a sample value from their own range,
//! so running a type's parser tells what it accepts (`describe.rs` builds
//! `GET /toxic-types` that way, with no list kept by hand).

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use serde::Serialize;
use serde_json::{json, Map, Value};

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

/// The kind of value an attribute takes, with its valid range or choices.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttrKind {
    /// An unsigned integer in `min..=max`.
    Integer {
        /// Smallest valid value.
        min: u64,
        /// Largest valid value.
        max: u64,
    },
    /// A number in `min..=max`.
    Number {
        /// Smallest valid value.
        min: f64,
        /// Largest valid value.
        max: f64,
    },
    /// `true` or `false`.
    Boolean,
    /// A string.
    String,
    /// One of `choices`.
    Choice {
        /// The valid values.
        choices: Vec<String>,
    },
    /// A list of `choices` (or a single one as a string).
    Choices {
        /// The valid list items.
        choices: Vec<String>,
    },
    /// Any JSON value (an attribute only checked for presence).
    Any,
}

impl AttrKind {
    /// A valid value: the bottom of the range (or the first choice), or the
    /// top of it when `high`.
    pub(super) fn sample(&self, high: bool) -> Value {
        let pick = |choices: &[String]| {
            let choice = if high {
                choices.last()
            } else {
                choices.first()
            };
            choice.cloned().unwrap_or_default()
        };
        match self {
            AttrKind::Integer { min, max } => json!(if high { max } else { min }),
            AttrKind::Number { min, max } => json!(if high { max } else { min }),
            AttrKind::Boolean => json!(high),
            AttrKind::String | AttrKind::Any => json!(""),
            AttrKind::Choice { choices } => json!(pick(choices)),
            AttrKind::Choices { choices } if high => json!(choices),
            AttrKind::Choices { choices } => json!([pick(choices)]),
        }
    }
}

/// One attribute of a toxic type, as `GET /toxic-types` describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttrInfo {
    /// The attribute's key.
    pub name: String,
    /// Its kind, range or choices.
    #[serde(flatten)]
    pub kind: AttrKind,
    /// Whether the type cannot do without it.
    pub required: bool,
    /// The value taken when it is absent (`None`: absent means "off", or
    /// the default depends on other attributes).
    pub default: Option<Value>,
    /// One of these attributes (this one among them) must be given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub one_of: Vec<String>,
    /// Attributes that may not be given together with this one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// Its range or default depends on the values of other attributes (the
    /// range shown is the widest one).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub depends_on_others: bool,
}

/// Probe mode: what a parser asked for, and which attributes to give a
/// sample value.
#[derive(Debug, Default)]
pub(super) struct Probe {
    /// Attributes that get a sample value when the parser asks for them.
    pub supply: BTreeSet<String>,
    /// Samples from the top of their range (else the bottom).
    pub high: bool,
    /// The attributes asked for, in order.
    pub seen: Vec<AttrInfo>,
}

/// The attributes of one toxic, consumed by its type's `parse`.
#[derive(Debug)]
pub struct Attributes {
    kind: String,
    map: Map<String, Value>,
    asked: BTreeSet<String>,
    probe: Option<Probe>,
}

impl Attributes {
    /// Wraps the attribute map of a toxic of type `kind`.
    pub fn new(kind: &str, map: Map<String, Value>) -> Attributes {
        Attributes {
            kind: kind.to_string(),
            map,
            asked: BTreeSet::new(),
            probe: None,
        }
    }

    /// Empty attributes of type `kind` in probe mode: accessors note what
    /// they ask for and give the attributes in `probe.supply` a sample value.
    pub(super) fn probing(kind: &str, probe: Probe) -> Attributes {
        Attributes {
            probe: Some(probe),
            ..Attributes::new(kind, Map::new())
        }
    }

    /// What the parser asked for (probe mode only).
    pub(super) fn into_probe(self) -> Option<Probe> {
        self.probe
    }

    /// Probe mode: notes attribute `name` of `kind` (the first note of a
    /// name wins) and gives it a sample value if it is to be supplied.
    fn note(&mut self, name: &str, kind: AttrKind) {
        let Some(probe) = &mut self.probe else {
            return;
        };
        if probe.supply.contains(name) && !self.map.contains_key(name) {
            self.map.insert(name.to_string(), kind.sample(probe.high));
        }
        if !probe.seen.iter().any(|a| a.name == name) {
            probe.seen.push(AttrInfo {
                name: name.to_string(),
                kind,
                required: false,
                default: None,
                one_of: Vec::new(),
                excludes: Vec::new(),
                depends_on_others: false,
            });
        }
    }

    /// Probe mode: notes what an absent `name` means (`Some(default)`) or
    /// that it is required (`None`).
    fn note_absent(&mut self, name: &str, default: Option<Value>) {
        let Some(probe) = &mut self.probe else {
            return;
        };
        if let Some(info) = probe.seen.iter_mut().find(|a| a.name == name) {
            match default {
                Some(value) => info.default = Some(value),
                None => info.required = true,
            }
        }
    }

    fn get(&mut self, name: &str) -> Option<&Value> {
        self.note(name, AttrKind::Any);
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
        let (min, max) = (*range.start(), *range.end());
        self.note(name, AttrKind::Integer { min, max });
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
        let value = self.opt_u64(name, range)?;
        self.note_absent(name, None);
        value.ok_or_else(|| self.missing(name, &text))
    }

    /// An unsigned integer in `range`, `default` when absent.
    pub fn u64_or(
        &mut self,
        name: &str,
        range: RangeInclusive<u64>,
        default: u64,
    ) -> Result<u64, AttrError> {
        let value = self.opt_u64(name, range)?;
        self.note_absent(name, Some(json!(default)));
        Ok(value.unwrap_or(default))
    }

    /// An optional number in `range`.
    pub fn opt_f64(
        &mut self,
        name: &str,
        range: RangeInclusive<f64>,
    ) -> Result<Option<f64>, AttrError> {
        let (min, max) = (*range.start(), *range.end());
        self.note(name, AttrKind::Number { min, max });
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
        let value = self.opt_f64(name, 0.0..=1.0)?;
        self.note_absent(name, Some(json!(default)));
        Ok(value.unwrap_or(default))
    }

    /// A required probability in 0..=1.
    pub fn probability(&mut self, name: &str) -> Result<f64, AttrError> {
        let value = self.opt_f64(name, 0.0..=1.0)?;
        self.note_absent(name, None);
        value.ok_or_else(|| self.missing(name, "0..=1"))
    }

    /// A boolean, `default` when absent.
    pub fn bool_or(&mut self, name: &str, default: bool) -> Result<bool, AttrError> {
        self.note(name, AttrKind::Boolean);
        self.note_absent(name, Some(json!(default)));
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
        self.note(name, AttrKind::String);
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
        if self.probe.is_some() {
            let choices = choices.iter().map(|c| c.to_string()).collect();
            self.note(name, AttrKind::Choice { choices });
            self.note_absent(name, Some(json!(default)));
        }
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
        if self.probe.is_some() {
            let choices = choices.iter().map(|c| c.to_string()).collect();
            self.note(name, AttrKind::Choices { choices });
            self.note_absent(name, Some(json!(default)));
        }
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

    /// A string, `default` when absent.
    pub fn string_or(&mut self, name: &str, default: &str) -> Result<String, AttrError> {
        let value = self.opt_string(name)?;
        self.note_absent(name, Some(json!(default)));
        Ok(value.unwrap_or_else(|| default.to_string()))
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
