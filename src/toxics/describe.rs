//! Every toxic type described from its own parser (`GET /toxic-types`).
//!
//! No list is kept by hand: [`describe`] runs a type's `parse` on
//! [`Attributes`] in probe mode, where every accessor notes the attribute it
//! reads (name, kind, range or choices, default, required). A parser that
//! fails because an attribute is missing names it; the probe then gives that
//! attribute a sample value from its own range and runs again, until the
//! parser accepts. Along the way:
//!
//! * an attribute whose absence fails the parser is `required`, unless
//!   another optional attribute would satisfy the parser instead (inject's
//!   `payload` or `payload_base64`): then each of them has `one_of`;
//! * two optional attributes that the parser refuses together have each
//!   other in `excludes`;
//! * the parser runs with samples from the bottom and from the top of every
//!   range; an attribute whose range or default changes with them depends on
//!   other attributes (slicer's `size_variation`, rate_limit's `burst`).
//!
//! So a new type is described as soon as it is in the registry.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use super::api::{ParseFn, ToxicDef};
use super::attrs::{AttrError, AttrInfo, AttrKind, Attributes, Probe};

/// One toxic type as `GET /toxic-types` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeInfo {
    /// The type's name (`type` in a toxic).
    #[serde(rename = "type")]
    pub name: String,
    /// Whether it acts on messages, so `match.message` and `count` apply.
    pub acts_on_messages: bool,
    /// Whether it acts only on the upgrade request.
    pub handshake_only: bool,
    /// Its attributes, in the order the parser reads them.
    pub attributes: Vec<AttrInfo>,
    /// Why the type could not be described (never expected: a unit test
    /// describes every registered type).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Most probe rounds for one type (each supplies one more attribute).
const MAX_ROUNDS: usize = 32;

/// Runs `parse` in probe mode with samples for `supply`.
fn run(
    kind: &str,
    parse: ParseFn,
    supply: &BTreeSet<String>,
    high: bool,
) -> (Result<Arc<dyn ToxicDef>, AttrError>, Vec<AttrInfo>) {
    let probe = Probe {
        supply: supply.clone(),
        high,
        seen: Vec::new(),
    };
    let mut attrs = Attributes::probing(kind, probe);
    let result = parse(&mut attrs);
    let seen = attrs.into_probe().map(|p| p.seen).unwrap_or_default();
    (result, seen)
}

/// `supply` plus `extra`.
fn with(supply: &BTreeSet<String>, extra: &[&str]) -> BTreeSet<String> {
    let mut out = supply.clone();
    out.extend(extra.iter().map(|s| s.to_string()));
    out
}

/// The field a failed run names, when it is a value that is not there.
fn missing_field(err: &AttrError) -> Option<&str> {
    err.field.as_deref().filter(|_| !err.unknown_key)
}

/// Optional with no default: absent means "off" (candidates for groups of
/// alternatives and for exclusions).
fn is_switch(info: &AttrInfo) -> bool {
    !info.required && info.default.is_none()
}

/// Widens `into` with a range or default seen in another run; flags a
/// difference as depending on other attributes.
fn merge(into: &mut AttrInfo, other: &AttrInfo) {
    if into.kind != other.kind {
        into.depends_on_others = true;
        match (&mut into.kind, &other.kind) {
            (AttrKind::Integer { min, max }, AttrKind::Integer { min: m, max: x }) => {
                *min = (*min).min(*m);
                *max = (*max).max(*x);
            }
            (AttrKind::Number { min, max }, AttrKind::Number { min: m, max: x }) => {
                *min = min.min(*m);
                *max = max.max(*x);
            }
            _ => {}
        }
    }
    if into.default != other.default {
        into.depends_on_others = true;
        into.default = None;
    }
}

/// Describes the type `kind` from its parser.
pub fn describe(kind: &str, parse: ParseFn) -> Result<TypeInfo, String> {
    let mut supply = BTreeSet::new();
    let mut groups: Vec<Vec<String>> = Vec::new();
    let def = loop {
        if supply.len() > MAX_ROUNDS {
            return Err(format!(
                "{kind}: the parser still fails after {MAX_ROUNDS} attributes were given"
            ));
        }
        let (result, seen) = run(kind, parse, &supply, false);
        let err = match result {
            Ok(def) => break def,
            Err(err) => err,
        };
        let field = missing_field(&err)
            .filter(|f| !supply.contains(*f) && seen.iter().any(|a| a.name == *f))
            .ok_or_else(|| format!("{kind}: the parser refuses sample values: {}", err.message))?
            .to_string();
        // Other optional attributes that would satisfy the parser instead.
        let mut group = vec![field.clone()];
        for other in seen.iter().filter(|a| a.name != field && is_switch(a)) {
            if supply.contains(&other.name) {
                continue;
            }
            let (result, _) = run(kind, parse, &with(&supply, &[&other.name]), false);
            let instead = match &result {
                Ok(_) => true,
                Err(e) => missing_field(e).is_some_and(|f| f != field && f != other.name),
            };
            if instead {
                group.push(other.name.clone());
            }
        }
        groups.push(group);
        supply.insert(field);
    };

    // Runs to merge: bottom and top samples, and each alternative of a group
    // in place of the one supplied.
    let mut supplies = vec![(supply.clone(), false), (supply.clone(), true)];
    for group in &groups {
        for alternative in group.iter().skip(1) {
            let mut s = supply.clone();
            s.remove(&group[0]);
            s.insert(alternative.clone());
            supplies.push((s, false));
        }
    }
    let mut attributes: Vec<AttrInfo> = Vec::new();
    for (s, high) in &supplies {
        let (result, seen) = run(kind, parse, s, *high);
        if let Err(e) = result {
            return Err(format!(
                "{kind}: the parser refuses {} samples: {}",
                if *high { "top-of-range" } else { "alternative" },
                e.message
            ));
        }
        for info in seen {
            match attributes.iter_mut().find(|a| a.name == info.name) {
                Some(known) => merge(known, &info),
                None => attributes.push(info),
            }
        }
    }

    for group in &groups {
        for info in attributes.iter_mut().filter(|a| group.contains(&a.name)) {
            if group.len() == 1 {
                info.required = true;
            } else {
                info.one_of = group.clone();
            }
        }
    }

    // Exclusions: two switches the parser refuses together (each one's
    // group left to the pair, so an alternative is not taken for a clash).
    let switches: Vec<String> = attributes
        .iter()
        .filter(|a| is_switch(a))
        .map(|a| a.name.clone())
        .collect();
    let group_of = |name: &str| -> Vec<String> {
        groups
            .iter()
            .find(|g| g.iter().any(|n| n == name))
            .cloned()
            .unwrap_or_default()
    };
    let mut pairs = Vec::new();
    for (i, a) in switches.iter().enumerate() {
        for b in &switches[i + 1..] {
            let mut s = supply.clone();
            for name in group_of(a).iter().chain(group_of(b).iter()) {
                s.remove(name);
            }
            let (result, _) = run(kind, parse, &with(&s, &[a, b]), false);
            if let Err(e) = result {
                if missing_field(&e).is_some_and(|f| f == a || f == b) {
                    pairs.push((a.clone(), b.clone()));
                }
            }
        }
    }
    for (a, b) in pairs {
        for info in attributes.iter_mut() {
            if info.name == a {
                info.excludes.push(b.clone());
            } else if info.name == b {
                info.excludes.push(a.clone());
            }
        }
    }

    Ok(TypeInfo {
        name: kind.to_string(),
        acts_on_messages: def.acts_on_messages(),
        handshake_only: def.handshake_only(),
        attributes,
        error: None,
    })
}

/// Describes every type of `registry`, in its order (a type that cannot be
/// described is listed with its `error`).
pub fn describe_all(registry: &[(&str, ParseFn)]) -> Vec<TypeInfo> {
    registry
        .iter()
        .map(|(kind, parse)| {
            describe(kind, *parse).unwrap_or_else(|error| TypeInfo {
                name: kind.to_string(),
                acts_on_messages: false,
                handshake_only: false,
                attributes: Vec::new(),
                error: Some(error),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::toxics::{ToxicSpec, REGISTRY};

    fn info(kind: &str) -> TypeInfo {
        let (_, parse) = REGISTRY
            .iter()
            .find(|(name, _)| *name == kind)
            .expect("registered");
        describe(kind, *parse).expect("described")
    }

    /// The values worth trying for one attribute: its bounds, its default,
    /// each choice.
    fn values_of(a: &AttrInfo) -> Vec<Value> {
        let mut out: Vec<Value> = match &a.kind {
            AttrKind::Integer { min, max } => vec![json!(min), json!(max)],
            AttrKind::Number { min, max } => vec![json!(min), json!(max)],
            AttrKind::Boolean => vec![json!(true), json!(false)],
            // A string's format (base64, at most 123 bytes) is not
            // described; the sample is valid for every one.
            AttrKind::String | AttrKind::Any => vec![json!("")],
            AttrKind::Choice { choices } => choices.iter().map(|c| json!(c)).collect(),
            AttrKind::Choices { choices } => {
                let mut v: Vec<Value> = choices.iter().map(|c| json!([c])).collect();
                v.push(json!(choices));
                v
            }
        };
        out.extend(a.default.clone());
        out
    }

    /// A sample value from `a`'s range (bottom or top).
    fn sample(a: &AttrInfo, high: bool) -> Value {
        a.kind.sample(high)
    }

    #[test]
    fn every_registered_type_is_described() {
        let all = describe_all(REGISTRY);
        let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        let registered: Vec<&str> = REGISTRY.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, registered);
        for t in &all {
            assert_eq!(t.error, None, "{t:?}");
            assert!(!t.attributes.is_empty(), "{} has no attributes", t.name);
        }
    }

    #[test]
    fn every_described_attribute_is_accepted_by_its_parser() {
        for t in describe_all(REGISTRY) {
            // The least a toxic of this type needs: its required attributes
            // and the first of each group of alternatives.
            let needed: Vec<&AttrInfo> = t
                .attributes
                .iter()
                .filter(|a| a.required || a.one_of.first() == Some(&a.name))
                .collect();
            for a in &t.attributes {
                for value in values_of(a) {
                    // Others at the top of their range when this one
                    // depends on them (slicer: size_variation up to
                    // average_size - 1).
                    let mut attributes = Map::new();
                    for n in &needed {
                        let replaced = n.one_of.contains(&a.name) || a.excludes.contains(&n.name);
                        if n.name != a.name && !replaced {
                            attributes.insert(n.name.clone(), sample(n, a.depends_on_others));
                        }
                    }
                    attributes.insert(a.name.clone(), value.clone());
                    let spec = ToxicSpec {
                        name: String::new(),
                        kind: t.name.clone(),
                        stream: Default::default(),
                        toxicity: 1.0,
                        attributes: attributes.clone(),
                        matcher: None,
                        schedule: None,
                        count: None,
                    };
                    if let Err(e) = spec.validate(0) {
                        panic!(
                            "{} refuses its described attribute {}={value} (in {}): {}",
                            t.name,
                            a.name,
                            Value::Object(attributes),
                            e.message
                        );
                    }
                }
            }
            // And nothing beyond the description: an unknown key is refused.
            let mut attributes = Map::new();
            for a in t.attributes.iter().filter(|a| a.required) {
                attributes.insert(a.name.clone(), sample(a, false));
            }
            attributes.insert("no_such_attribute".into(), json!(1));
            let spec: ToxicSpec = serde_json::from_value(
                json!({"type": t.name, "attributes": Value::Object(attributes)}),
            )
            .expect("spec");
            assert!(
                spec.validate(0).is_err(),
                "{} took an unknown attribute",
                t.name
            );
        }
    }

    #[test]
    fn latency_is_described_with_ranges_and_defaults() {
        let t = serde_json::to_value(info("latency")).expect("json");
        assert_eq!(
            t,
            json!({
                "type": "latency", "acts_on_messages": true, "handshake_only": false,
                "attributes": [
                    {"name": "latency", "kind": "integer", "min": 0, "max": 3_600_000,
                     "required": true, "default": null},
                    {"name": "jitter", "kind": "integer", "min": 0, "max": 3_600_000,
                     "required": false, "default": 0}
                ]
            })
        );
    }

    #[test]
    fn alternatives_exclusions_and_dependencies_are_found() {
        let inject = info("inject");
        let by_name = |t: &TypeInfo, n: &str| {
            t.attributes
                .iter()
                .find(|a| a.name == n)
                .cloned()
                .unwrap_or_else(|| panic!("{} has no {n}: {t:?}", t.name))
        };
        let payload = by_name(&inject, "payload");
        assert_eq!(payload.one_of, ["payload", "payload_base64"]);
        assert_eq!(payload.excludes, ["payload_base64"]);
        assert!(!payload.required);
        let every = by_name(&inject, "every_ms");
        assert_eq!(every.one_of, ["after_messages", "every_ms"]);
        assert_eq!(every.excludes, ["after_messages"]);
        // The opcode's default follows the payload's field.
        let opcode = by_name(&inject, "opcode");
        assert!(opcode.depends_on_others && opcode.default.is_none());
        assert_eq!(
            opcode.kind,
            AttrKind::Choice {
                choices: vec!["text".into(), "binary".into(), "ping".into(), "pong".into()]
            }
        );
        assert!(!inject.handshake_only);

        let drop = info("drop_connection");
        assert_eq!(by_name(&drop, "after_ms").excludes, ["after_messages"]);
        assert!(drop.attributes.iter().all(|a| !a.required));

        let slicer = info("slicer");
        let variation = by_name(&slicer, "size_variation");
        assert!(variation.depends_on_others);
        assert_eq!(
            variation.kind,
            AttrKind::Integer {
                min: 0,
                max: u64::from(u32::MAX) - 1
            }
        );
        let rate = info("rate_limit");
        assert!(by_name(&rate, "messages_per_second").required);
        let burst = by_name(&rate, "burst");
        assert!(burst.depends_on_others && burst.default.is_none());

        let reject = info("reject_handshake");
        assert!(reject.handshake_only && !reject.acts_on_messages);
        assert_eq!(
            by_name(&reject, "body").default,
            Some(json!("wsfault: handshake rejected\n"))
        );
    }

    #[test]
    fn probing_leaves_normal_parsing_alone() {
        // Outside probe mode nothing is supplied or noted.
        let mut attrs = Attributes::new("latency", Map::new());
        let (_, parse) = REGISTRY[0];
        assert!(parse(&mut attrs).is_err());
        assert!(attrs.into_probe().is_none());
    }
}
