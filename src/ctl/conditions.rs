//! `match` and `count` as `wsfault ctl toxic add|update` flags give them.
//!
//! [`Conditions`] holds only what the command line named. `toxic add` turns
//! it into the toxic's `match` and `count`; `toxic update` lays it over the
//! toxic's current ones, field by field, the way `-a K=V` is laid over the
//! attributes ([`Conditions::apply_match`], [`Conditions::apply_count`]).
//! [`check_locally`] refuses, before any request, what the server would
//! refuse in `match.message` or `count` (a bad regex or pointer, a `count` on
//! a toxic type that does not act on messages).

use crate::error::UsageError;
use crate::toxics::message_match::{CountSpec, MessageMatchSpec};
use crate::toxics::{MatchSpec, ToxicSpec};

/// The `match` and `count` fields a command line set.
///
/// In `matcher`, a field left `None` (or a `header` map without the name)
/// was not given; `matcher.message` is `Some` only when a message flag was.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    /// `--match-path`, `--match-header`, `--match-subprotocol` and the
    /// message flags (`--kind`, `--opcode`, `--contains`, `--regex`,
    /// `--json-pointer` with `--json-equals` or `--json-exists`).
    pub matcher: MatchSpec,
    /// `--count-after`.
    pub count_after: Option<u64>,
    /// `--count-every`.
    pub count_every: Option<u64>,
    /// `--count-limit`.
    pub count_limit: Option<u64>,
}

impl Conditions {
    /// Whether no match or count flag was given.
    pub fn is_empty(&self) -> bool {
        !self.has_match() && !self.has_count()
    }

    /// Whether some match flag (connection or message) was given.
    pub fn has_match(&self) -> bool {
        self.matcher != MatchSpec::default()
    }

    /// Whether some count flag was given.
    pub fn has_count(&self) -> bool {
        self.count_after.is_some() || self.count_every.is_some() || self.count_limit.is_some()
    }

    /// `current` with the given match fields set and the others kept: a
    /// header replaces the one of the same name (names compare
    /// case-insensitively), `--json-*` replace the whole `json` test.
    /// Without match flags, `current` unchanged.
    pub fn apply_match(&self, current: Option<MatchSpec>) -> Option<MatchSpec> {
        if !self.has_match() {
            return current;
        }
        let given = &self.matcher;
        let mut out = current.unwrap_or_default();
        set(&mut out.path, &given.path);
        set(&mut out.subprotocol, &given.subprotocol);
        for (name, value) in &given.header {
            out.header.retain(|old, _| !old.eq_ignore_ascii_case(name));
            out.header.insert(name.clone(), value.clone());
        }
        if let Some(flags) = &given.message {
            let mut message = out.message.take().unwrap_or_default();
            set(&mut message.kind, &flags.kind);
            set(&mut message.opcode, &flags.opcode);
            set(&mut message.contains, &flags.contains);
            set(&mut message.regex, &flags.regex);
            set(&mut message.json, &flags.json);
            out.message = Some(message);
        }
        Some(out)
    }

    /// `current` with the given count fields set and the others kept (a new
    /// count starts from the defaults: after 0, every 1, no limit). Without
    /// count flags, `current` unchanged.
    pub fn apply_count(&self, current: Option<CountSpec>) -> Option<CountSpec> {
        if !self.has_count() {
            return current;
        }
        let mut out = current.unwrap_or(CountSpec {
            after: 0,
            every: 1,
            limit: None,
        });
        if let Some(after) = self.count_after {
            out.after = after;
        }
        if let Some(every) = self.count_every {
            out.every = every;
        }
        if self.count_limit.is_some() {
            out.limit = self.count_limit;
        }
        Some(out)
    }
}

fn set<T: Clone>(field: &mut Option<T>, given: &Option<T>) {
    if given.is_some() {
        field.clone_from(given);
    }
}

/// Refuses, as a [`UsageError`] (exit 2), a `match.message` or `count` the
/// server would refuse with a 400: one that does not compile (the same
/// [`MessageMatchSpec::compile`] as the server's), or one on a toxic type of
/// this build that does not act on messages. Other problems (an unknown
/// type, a bad attribute) are left to the server, which may be another
/// version or Toxiproxy.
pub fn check_locally(spec: &ToxicSpec) -> Result<(), UsageError> {
    let message = spec.matcher.as_ref().and_then(|m| m.message.as_ref());
    if message.is_none() && spec.count.is_none() {
        return Ok(());
    }
    if let Some(message) = message {
        compile(message)?;
    }
    if let Some(count) = &spec.count {
        count
            .validate()
            .map_err(|err| UsageError(err.to_string()))?;
    }
    if crate::toxics::REGISTRY
        .iter()
        .all(|(name, _)| *name != spec.kind)
    {
        return Ok(());
    }
    match spec.clone().validate(0) {
        Err(err)
            if err
                .field
                .as_deref()
                .is_some_and(|f| f.starts_with("match.message") || f.starts_with("count")) =>
        {
            Err(UsageError(err.to_string()))
        }
        _ => Ok(()),
    }
}

/// [`MessageMatchSpec::compile`], its error as a [`UsageError`].
fn compile(message: &MessageMatchSpec) -> Result<(), UsageError> {
    message
        .compile()
        .map(drop)
        .map_err(|err| UsageError(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::Kind;
    use crate::toxics::message_match::{DataOpcode, JsonMatchSpec};
    use serde_json::json;

    fn current() -> (Option<MatchSpec>, Option<CountSpec>) {
        let spec: ToxicSpec = serde_json::from_value(json!({
            "type": "latency",
            "match": {"path": "/chat", "header": {"X-Tenant": "a", "x-b": "1"},
                      "message": {"kind": "heartbeat", "json": {"pointer": "/t", "exists": true}}},
            "count": {"after": 10, "every": 3, "limit": 5}
        }))
        .expect("valid test input");
        (spec.matcher, spec.count)
    }

    #[test]
    fn no_flags_keep_what_is_there() {
        let none = Conditions::default();
        assert!(none.is_empty());
        let (matcher, count) = current();
        assert_eq!(none.apply_match(matcher.clone()), matcher);
        assert_eq!(none.apply_count(count.clone()), count);
        assert_eq!(
            (none.apply_match(None), none.apply_count(None)),
            (None, None)
        );
    }

    #[test]
    fn a_count_flag_alone_merges_into_the_count() {
        let limit = Conditions {
            count_limit: Some(2),
            ..Conditions::default()
        };
        assert!(limit.has_count() && !limit.has_match());
        let (matcher, count) = current();
        assert_eq!(
            limit.apply_count(count),
            Some(CountSpec {
                after: 10,
                every: 3,
                limit: Some(2)
            })
        );
        assert_eq!(limit.apply_match(matcher.clone()), matcher);
        assert_eq!(
            limit.apply_count(None),
            Some(CountSpec {
                after: 0,
                every: 1,
                limit: Some(2)
            }),
            "a new count starts from the defaults"
        );
    }

    #[test]
    fn match_flags_set_their_fields_and_keep_the_others() {
        let flags = Conditions {
            matcher: MatchSpec {
                header: [("x-tenant".to_string(), "b".to_string())].into(),
                message: Some(MessageMatchSpec {
                    opcode: Some(DataOpcode::Text),
                    json: Some(JsonMatchSpec {
                        pointer: "/type".into(),
                        equals: Some(json!("next")),
                        exists: None,
                    }),
                    ..MessageMatchSpec::default()
                }),
                ..MatchSpec::default()
            },
            ..Conditions::default()
        };
        let merged = flags.apply_match(current().0).expect("a match");
        assert_eq!(
            serde_json::to_value(&merged).expect("json"),
            json!({"path": "/chat", "header": {"x-b": "1", "x-tenant": "b"},
                   "message": {"kind": "heartbeat", "opcode": "text",
                               "json": {"pointer": "/type", "equals": "next"}}}),
            "same-name header replaced whatever its case; json replaced whole; kind kept"
        );
        let fresh = flags.apply_match(None).expect("a match");
        assert_eq!(fresh.path, None);
        assert_eq!(
            fresh.message.and_then(|m| m.json).map(|j| j.pointer),
            Some("/type".to_string())
        );
    }

    fn spec(kind: &str, message: Option<MessageMatchSpec>, count: Option<CountSpec>) -> ToxicSpec {
        let attributes = match kind {
            "timeout" => json!({"timeout": 0}),
            "bandwidth" => json!({"rate": 10}),
            _ => json!({}),
        };
        ToxicSpec {
            name: String::new(),
            kind: kind.into(),
            stream: Default::default(),
            toxicity: 1.0,
            attributes: attributes.as_object().cloned().unwrap_or_default(),
            matcher: message.map(|message| MatchSpec {
                message: Some(message),
                ..MatchSpec::default()
            }),
            schedule: None,
            count,
        }
    }

    #[test]
    fn local_check_refuses_what_the_server_would() {
        let heartbeat = MessageMatchSpec {
            kind: Some(Kind::Heartbeat),
            ..MessageMatchSpec::default()
        };
        let count = CountSpec {
            after: 0,
            every: 1,
            limit: Some(1),
        };
        assert!(check_locally(&spec("message_loss", Some(heartbeat.clone()), None)).is_ok());
        let err = check_locally(&spec("timeout", None, Some(count.clone()))).expect_err("timeout");
        assert!(
            err.0.contains("count is not allowed on a timeout toxic"),
            "{}",
            err.0
        );
        let err = check_locally(&spec("bandwidth", Some(heartbeat), None)).expect_err("bandwidth");
        assert!(err.0.contains("match.message"), "{}", err.0);
        let bad = MessageMatchSpec {
            regex: Some("(open".into()),
            ..MessageMatchSpec::default()
        };
        let err = check_locally(&spec("some_future_type", Some(bad), None)).expect_err("regex");
        assert!(err.0.starts_with("match.message.regex: "), "{}", err.0);
        let zero = CountSpec { every: 0, ..count };
        let err = check_locally(&spec("duplicate", None, Some(zero))).expect_err("every 0");
        assert!(err.0.contains("count.every"), "{}", err.0);
        assert!(
            check_locally(&spec("some_future_type", None, Some(count))).is_ok(),
            "types this build does not know are left to the server"
        );
        assert!(
            check_locally(&spec("timeout", None, None)).is_ok(),
            "nothing to check"
        );
    }
}
