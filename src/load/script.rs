//! `--script FILE`: the session script of script mode
//! (docs/reference.md#script-mode) — what to send after each upgrade, what
//! to send at `--rate`, and how the service's own ids and sequence numbers
//! are checked.
//!
//! ```yaml
//! url: ws://127.0.0.1:5000/socket.io/?EIO=4&transport=websocket
//! protocol: socketio
//! open:
//!   - expect: '^0\{'
//!   - send: '40'
//!   - expect: '^40'
//!   - send: '420["join",{"room":"r{{conn}}","from":{{last_seq}}}]'
//! send: '42{{n}}["chat",{"id":"{{conn}}-{{n}}","body":"{{pad 64}}"}]'
//! reply: {id: '^4[23]\d*\[(?:"chat",)?\{"id":"([^"]+)"', timeout: 5s}
//! sequence: {seq: '"seq":(\d+)', key: '"room":"([^"]+)"', resume: true, first: 1}
//! ```
//!
//! Everything is checked when the file loads: an unknown key, a bad regex,
//! a regex without the capture group it needs, an unknown template
//! placeholder or a `reply.id` that cannot find the id in what `send`
//! renders is an error naming `FILE:LINE:COL` and the valid choices.

use std::path::Path;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::script_check::IdHasher;
use super::template::{Template, Vars};
use crate::config::{line_col, yaml_error};
use crate::protocols::{self, Handshake, Profile, ProtocolSetting};

/// How long an `expect` step waits by default.
pub const DEFAULT_EXPECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may take by default before the message is lost.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A loaded, checked script.
#[derive(Debug, Clone)]
pub struct Script {
    /// The file, for messages.
    pub path: String,
    /// The URL (`--url` overrides it).
    pub url: Option<String>,
    /// Extra upgrade headers.
    pub headers: Vec<(String, String)>,
    /// The subprotocol to ask for.
    pub subprotocol: Option<String>,
    /// Whose heartbeats to answer (`auto`: decided from the URL and subprotocol).
    pub protocol: ProtocolSetting,
    /// Steps after each upgrade, in order.
    pub open: Vec<Step>,
    /// The message sent at `--rate`.
    pub send: Option<Template>,
    /// Request/answer matching.
    pub reply: Option<ReplySpec>,
    /// Server-pushed sequence numbers.
    pub sequence: Option<SequenceSpec>,
}

/// One `open` step.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send a rendered template.
    Send(Template),
    /// Wait for a server message matching `pattern` (a connection error
    /// after `timeout`).
    Expect {
        /// What the message must match.
        pattern: Regex,
        /// How long to wait.
        timeout: Duration,
    },
}

/// `reply:`: the answer to each sent message.
#[derive(Debug, Clone)]
pub struct ReplySpec {
    /// Its first group is the id, in sent and in server messages alike.
    pub id: Regex,
    /// No answer within this is a lost message.
    pub timeout: Duration,
}

/// `sequence:`: server-pushed numbers.
#[derive(Debug, Clone)]
pub struct SequenceSpec {
    /// Its first group is the number.
    pub seq: Regex,
    /// Its first group is the key numbers are counted per (none: per connection).
    pub key: Option<Regex>,
    /// Whether the count continues across reconnects.
    pub resume: bool,
    /// The first number of each key (none: whatever comes first).
    pub first: Option<u64>,
}

impl Script {
    /// The checks this script runs, for the report and the table.
    pub fn checks(&self) -> Vec<String> {
        let mut checks = Vec::new();
        if let Some(r) = &self.reply {
            checks.push(format!(
                "reply: one answer per sent message within {}",
                humantime::format_duration(r.timeout)
            ));
        }
        if let Some(s) = &self.sequence {
            checks.push(format!(
                "sequence: +1 per {}{}",
                if s.key.is_some() { "key" } else { "connection" },
                if s.resume {
                    ", continued across reconnects"
                } else {
                    ", restarted on reconnect"
                }
            ));
        }
        checks
    }
}

/// A script with what is derived from it once per run.
#[derive(Debug)]
pub(crate) struct ScriptRun {
    /// The script.
    pub script: Script,
    /// Whose heartbeats the client answers.
    pub profile: &'static dyn Profile,
    /// Hashes reply ids.
    pub ids: IdHasher,
    /// The URL when it has placeholders (e.g. `?from={{last_seq}}`),
    /// rendered for each connection.
    pub url: Option<Template>,
    /// Some template uses `{{now_ms}}` (the clock is read only then).
    pub uses_now: bool,
    /// Some template uses `{{uuid}}` (random bits are drawn only then).
    pub uses_uuid: bool,
}

impl ScriptRun {
    /// Decides the profile: the script's, or (auto) the one that claims the
    /// URL and subprotocol, or the first `open` message.
    pub fn new(script: Script, url: &str, subprotocol: Option<&str>) -> ScriptRun {
        let profile = match script.protocol {
            ProtocolSetting::Fixed(p) => p,
            ProtocolSetting::Auto => {
                let path_and_query = url
                    .split_once("://")
                    .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                    .unwrap_or("/");
                protocols::detect_handshake(&Handshake {
                    path_and_query,
                    subprotocol,
                })
                .unwrap_or_else(|| {
                    let first = script.open.iter().find_map(|s| match s {
                        Step::Send(t) => Some(t.render(&Vars::default(), &mut String::new())),
                        Step::Expect { .. } => None,
                    });
                    first.map_or(protocols::NONE, |m| {
                        protocols::detect_first_message(m.as_bytes())
                    })
                })
            }
        };
        let url_template = url
            .contains("{{")
            .then(|| Template::parse(url).ok())
            .flatten();
        let uses = |f: fn(&Template) -> bool| {
            script.send.as_ref().is_some_and(f)
                || url_template.as_ref().is_some_and(f)
                || script
                    .open
                    .iter()
                    .any(|s| matches!(s, Step::Send(t) if f(t)))
        };
        let (uses_now, uses_uuid) = (uses(Template::uses_now), uses(Template::uses_uuid));
        ScriptRun {
            script,
            profile,
            ids: IdHasher::default(),
            url: url_template,
            uses_now,
            uses_uuid,
        }
    }
}

/// A script that cannot be used: `FILE:LINE:COL: what is wrong`.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The file could not be read.
    #[error("--script {path}: cannot read the file: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The content is not a valid script.
    #[error("--script {path}:{at}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// `LINE:COL` of the offending key or value.
        at: String,
        /// What is wrong, with the valid choices.
        message: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawScript {
    url: Option<String>,
    headers: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    subprotocol: Option<String>,
    protocol: Option<Spanned<String>>,
    open: Vec<Spanned<RawStep>>,
    send: Option<Spanned<String>>,
    reply: Option<Spanned<RawReply>>,
    sequence: Option<Spanned<RawSequence>>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawStep {
    send: Option<Spanned<String>>,
    expect: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReply {
    id: Spanned<String>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSequence {
    seq: Spanned<String>,
    #[serde(default)]
    key: Option<Spanned<String>>,
    #[serde(default)]
    resume: bool,
    #[serde(default)]
    first: Option<u64>,
}

const TOP_KEYS: &str = "url, headers, subprotocol, protocol, open, send, reply, sequence";

/// Reads and checks a script file.
pub fn load_script(path: &Path) -> Result<Script, ScriptError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_script(&text, &shown)
}

/// Parses and checks script YAML; `path` names the file in errors.
pub fn parse_script(text: &str, path: &str) -> Result<Script, ScriptError> {
    let invalid = |at: Location, message: String| ScriptError::Invalid {
        path: path.to_string(),
        at: line_col(at),
        message,
    };
    let raw: RawScript = serde_saphyr::from_str(text).map_err(|err| {
        let (at, message) = yaml_error(&err);
        let hint = if message.contains("unknown field") || message.contains("missing field") {
            String::new()
        } else {
            format!(" (a script is a mapping with keys {TOP_KEYS})")
        };
        invalid(at, format!("{message}{hint}"))
    })?;
    let regex = |field: &str, s: &Spanned<String>, groups: bool| -> Result<Regex, ScriptError> {
        let re = Regex::new(&s.value).map_err(|err| {
            let detail = match &err {
                regex::Error::Syntax(text) => text
                    .lines()
                    .rfind(|l| l.starts_with("error:"))
                    .unwrap_or(text)
                    .to_string(),
                other => other.to_string(),
            };
            invalid(
                s.referenced,
                format!("`{field}`: `{}` is not a valid regex: {detail}", s.value),
            )
        })?;
        if groups && re.captures_len() < 2 {
            return Err(invalid(
                s.referenced,
                format!(
                    "`{field}`: `{}` has no capture group: put what to take in parentheses, e.g. '\"id\":\"([^\"]+)\"'",
                    s.value
                ),
            ));
        }
        Ok(re)
    };
    let template = |field: &str, s: &Spanned<String>| -> Result<Template, ScriptError> {
        Template::parse(&s.value).map_err(|err| {
            invalid(
                s.referenced,
                format!(
                    "`{field}`: {} (at byte {} of the template)",
                    err.message, err.offset
                ),
            )
        })
    };
    let duration = |field: &str, s: &Spanned<String>| -> Result<Duration, ScriptError> {
        match humantime::parse_duration(s.value.trim()) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(invalid(
                s.referenced,
                format!("`{field}`: `{}` must be longer than zero", s.value),
            )),
            Err(err) => Err(invalid(
                s.referenced,
                format!(
                    "`{field}`: `{}` is not a duration ({err}; e.g. 5s, 500ms)",
                    s.value
                ),
            )),
        }
    };

    let protocol = match &raw.protocol {
        None => ProtocolSetting::Auto,
        Some(p) => ProtocolSetting::parse(p.value.trim()).map_err(|_| {
            invalid(
                p.referenced,
                format!(
                    "`protocol`: `{}` is not a protocol: valid choices are {}",
                    p.value,
                    protocols::setting_names()
                ),
            )
        })?,
    };

    let mut open = Vec::with_capacity(raw.open.len());
    for (i, step) in raw.open.iter().enumerate() {
        let s = &step.value;
        let field = format!("open[{i}]");
        match (&s.send, &s.expect) {
            (Some(send), None) => {
                if let Some(t) = &s.timeout {
                    return Err(invalid(
                        t.referenced,
                        format!("`{field}.timeout`: only an `expect` step has a timeout"),
                    ));
                }
                open.push(Step::Send(template(&format!("{field}.send"), send)?));
            }
            (None, Some(expect)) => {
                let timeout = match &s.timeout {
                    Some(t) => duration(&format!("{field}.timeout"), t)?,
                    None => DEFAULT_EXPECT_TIMEOUT,
                };
                open.push(Step::Expect {
                    pattern: regex(&format!("{field}.expect"), expect, false)?,
                    timeout,
                });
            }
            _ => {
                return Err(invalid(
                    step.referenced,
                    format!("`{field}`: a step has exactly one of `send` (a template) or `expect` (a regex, with an optional `timeout`)"),
                ))
            }
        }
    }

    let send = match &raw.send {
        Some(s) => Some(template("send", s)?),
        None => None,
    };

    let reply = match &raw.reply {
        None => None,
        Some(r) => {
            let id = regex("reply.id", &r.value.id, true)?;
            let Some(send_template) = &send else {
                return Err(invalid(
                    r.referenced,
                    "`reply` needs `send`: answers are matched to the messages sent at --rate"
                        .into(),
                ));
            };
            let sample = send_template.render(
                &Vars {
                    conn: 0,
                    n: 1,
                    ..Vars::default()
                },
                &mut String::new(),
            );
            if id.captures(&sample).and_then(|c| c.get(1)).is_none() {
                let shown: String = sample.chars().take(120).collect();
                return Err(invalid(
                    r.value.id.referenced,
                    format!(
                        "`reply.id`: `{}` finds no id in the message `send` renders (`{shown}`): the same regex is applied to sent and received messages",
                        r.value.id.value
                    ),
                ));
            }
            let timeout = match &r.value.timeout {
                Some(t) => duration("reply.timeout", t)?,
                None => DEFAULT_REPLY_TIMEOUT,
            };
            Some(ReplySpec { id, timeout })
        }
    };

    let sequence = match &raw.sequence {
        None => None,
        Some(s) => Some(SequenceSpec {
            seq: regex("sequence.seq", &s.value.seq, true)?,
            key: match &s.value.key {
                Some(k) => Some(regex("sequence.key", k, true)?),
                None => None,
            },
            resume: s.value.resume,
            first: s.value.first,
        }),
    };

    Ok(Script {
        path: path.to_string(),
        url: raw.url.map(|u| u.trim().to_string()),
        headers: raw
            .headers
            .map(|h| h.value.into_iter().collect())
            .unwrap_or_default(),
        subprotocol: raw.subprotocol,
        protocol,
        open,
        send,
        reply,
        sequence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = r#"
url: ws://127.0.0.1:5000/socket.io/?EIO=4&transport=websocket
headers: {x-tenant: a}
protocol: socketio
open:
  - expect: '^0\{'
  - send: '40'
  - {expect: '^40', timeout: 2s}
  - send: '420["join",{"room":"r{{conn}}","from":{{last_seq}}}]'
send: '42{{n}}["chat",{"id":"{{conn}}-{{n}}","body":"{{pad 8}}"}]'
reply: {id: '^4[23]\d*\[(?:"chat",)?\{"id":"([^"]+)"', timeout: 3s}
sequence: {seq: '"seq":(\d+)', key: '"room":"([^"]+)"', resume: true, first: 1}
"#;

    fn err(text: &str) -> String {
        parse_script(text, "s.yaml").unwrap_err().to_string()
    }

    #[test]
    fn a_full_script_loads() {
        let s = parse_script(CHAT, "chat.yaml").unwrap();
        assert_eq!(
            s.url.as_deref(),
            Some("ws://127.0.0.1:5000/socket.io/?EIO=4&transport=websocket")
        );
        assert_eq!(s.headers, [("x-tenant".to_string(), "a".to_string())]);
        assert_eq!(s.protocol.name(), "socketio");
        assert_eq!(s.open.len(), 4);
        assert!(
            matches!(&s.open[2], Step::Expect { timeout, .. } if *timeout == Duration::from_secs(2))
        );
        assert!(
            matches!(&s.open[0], Step::Expect { timeout, .. } if *timeout == DEFAULT_EXPECT_TIMEOUT)
        );
        let reply = s.reply.as_ref().unwrap();
        assert_eq!(reply.timeout, Duration::from_secs(3));
        let ack = r#"431[{"id":"0-1"}]"#;
        assert_eq!(&reply.id.captures(ack).unwrap()[1], "0-1");
        let broadcast = r#"42["chat",{"room":"r0","id":"0-1","body":"x","seq":1}]"#;
        assert!(reply.id.captures(broadcast).is_none());
        let seq = s.sequence.as_ref().unwrap();
        assert!(seq.resume);
        assert_eq!(seq.first, Some(1));
        assert_eq!(s.checks().len(), 2);
    }

    #[test]
    fn a_minimal_script_loads() {
        let s = parse_script("sequence: {seq: '\"seq\":(\\d+)'}\n", "feed.yaml").unwrap();
        assert!(s.send.is_none() && s.reply.is_none() && s.open.is_empty());
        assert!(s.protocol.is_auto());
        assert_eq!(
            s.checks(),
            ["sequence: +1 per connection, restarted on reconnect"]
        );
    }

    #[test]
    fn bad_yaml_names_the_place() {
        let e = err("send: [unclosed\n");
        assert!(e.starts_with("--script s.yaml:"), "{e}");
        assert!(e.contains(TOP_KEYS) || e.contains("2:"), "{e}");
    }

    #[test]
    fn an_unknown_key_names_the_valid_ones() {
        let e = err("url: ws://x/\nsend: a\nrepyl: {id: '(x)'}\n");
        assert!(
            e.starts_with("--script s.yaml:3:1: unknown field `repyl`"),
            "{e}"
        );
        assert!(e.contains("expected one of url, headers"), "{e}");
        let e = err("sequence: {seq: '(\\d+)', resum: true}\n");
        assert!(e.contains("unknown field `resum`"), "{e}");
        assert!(e.contains("resume"), "{e}");
    }

    #[test]
    fn a_bad_regex_names_the_field_and_place() {
        let e = err("send: 'x {{n}}'\nreply: {id: 'x (\\d+'}\n");
        assert!(e.starts_with("--script s.yaml:2:"), "{e}");
        assert!(
            e.contains("`reply.id`") && e.contains("not a valid regex"),
            "{e}"
        );
        let e = err("open:\n  - expect: '[a'\n");
        assert!(e.starts_with("--script s.yaml:2:"), "{e}");
        assert!(e.contains("`open[0].expect`"), "{e}");
    }

    #[test]
    fn a_regex_without_its_group_is_refused() {
        let e = err("sequence: {seq: '\"seq\":\\d+'}\n");
        assert!(e.starts_with("--script s.yaml:1:"), "{e}");
        assert!(
            e.contains("`sequence.seq`") && e.contains("no capture group"),
            "{e}"
        );
        let e = err("send: 'a'\nreply: {id: 'a'}\n");
        assert!(
            e.contains("`reply.id`") && e.contains("no capture group"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_template_names_the_valid_ones() {
        let e = err("url: ws://x/\nsend: '{\"id\":{{count}}}'\n");
        assert!(e.starts_with("--script s.yaml:2:7:"), "{e}");
        assert!(e.contains("unknown placeholder `{{count}}`"), "{e}");
        assert!(e.contains("{{pad N}}"), "{e}");
        let e = err("open:\n  - send: '{{nn}}'\n");
        assert!(e.contains("`open[0].send`"), "{e}");
    }

    #[test]
    fn other_mistakes_are_explained() {
        let e = err("protocol: socket.io\n");
        assert!(e.starts_with("--script s.yaml:1:11:"), "{e}");
        assert!(e.contains("socketio, graphql-ws"), "{e}");
        let e = err("open:\n  - {send: a, expect: b}\n");
        assert!(e.contains("exactly one of `send`"), "{e}");
        let e = err("open:\n  - {send: a, timeout: 1s}\n");
        assert!(e.contains("only an `expect` step"), "{e}");
        let e = err("open:\n  - {expect: a, timeout: soon}\n");
        assert!(
            e.contains("`open[0].timeout`") && e.contains("not a duration"),
            "{e}"
        );
        let e = err("reply: {id: '(x)'}\n");
        assert!(e.contains("`reply` needs `send`"), "{e}");
        let e = err("send: '{\"n\":{{n}}}'\nreply: {id: '\"id\":(\\d+)'}\n");
        assert!(
            e.contains("finds no id in the message `send` renders"),
            "{e}"
        );
    }
}
