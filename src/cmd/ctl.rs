//! `wsfault ctl`: flags → a [`Verb`], the requests, the output on stdout.
//!
//! ```text
//! wsfault ctl [--admin URL] [--token T] [--json] <command>
//!   list                                  every proxy, one line each
//!   inspect P                             one proxy and its toxics
//!   create P -l ADDR -u TARGET            add a proxy
//!   toggle P                              enable ↔ disable
//!   delete P                              remove a proxy
//!   toxic add P -t TYPE [-n NAME] [-s STREAM] [--toxicity F] -a K=V ... [MATCH] [COUNT]
//!   toxic update P -n NAME [-a K=V ...] [--toxicity F] [MATCH] [COUNT]
//!   toxic remove P -n NAME
//!   connections P                         live connections of a proxy
//!   reset                                 enable every proxy, remove every toxic
//!
//! MATCH: --match-path GLOB  --match-header K=V ...  --match-subprotocol P
//!        --kind KIND  --opcode OPCODE  --contains S  --regex RE
//!        --json-pointer PTR (--json-equals JSON | --json-exists BOOL)
//! COUNT: --count-after N  --count-every N  --count-limit N
//! ```
//!
//! The MATCH and COUNT flags ([`ConditionArgs`]) set the toxic's `match`
//! and `count`; on `toxic update` each sets its own field and the others
//! keep their values ([`crate::ctl::conditions`]).
//!
//! Exit status: 0 on success, 1 when the server refuses (its
//! `{"error": ...}` message is printed) or cannot be reached, 2 on bad usage
//! (a bad `--admin` URL, a bad `-a K=V`, a bad match or count flag, a
//! `match.message` or `count` on a toxic type that does not act on messages).
//!
//! The hidden verb `health` (`GET /healthz`, exit 0 iff 200) is what the
//! Docker image's `HEALTHCHECK` and the compose healthchecks run.
//!
//! (Long because it is every ctl flag with its help text, one cohesive
//! clap tree, plus its unit tests from line ~520.)

use std::time::Duration;

use anyhow::Context as _;
use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use serde_json::{Map, Value};

use crate::ctl::{execute, AdminClient, Conditions, NewToxic, Verb, DEFAULT_ADMIN};
use crate::protocols::Kind;
use crate::toxics::message_match::{DataOpcode, JsonMatchSpec, MessageMatchSpec};
use crate::toxics::MatchSpec;
use crate::vocab::StreamDir;

/// Flags of `wsfault ctl`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Talk to a running proxy's admin API (like toxiproxy-cli)",
    after_help = "Attribute values (-a K=V) are parsed as JSON when they parse \
                  (numbers, true/false, lists such as '[\"ping\",\"pong\"]'), \
                  otherwise taken as a string.\n\nExamples:\n  \
                  wsfault ctl list\n  \
                  wsfault ctl toxic add chat -t latency -a latency=300 -a jitter=100\n  \
                  wsfault ctl toxic update chat -n latency_downstream -a latency=50\n  \
                  wsfault ctl toxic add chat -t message_loss -a probability=1 --kind heartbeat --count-after 10 --count-limit 5\n  \
                  wsfault ctl toxic add chat -t drop_connection -s upstream --json-pointer /type --json-equals subscribe\n  \
                  wsfault ctl toxic update chat -n message_loss_downstream --count-limit 2\n  \
                  wsfault ctl toxic remove chat -n latency_downstream\n  \
                  wsfault ctl toggle chat"
)]
pub struct CtlArgs {
    /// Base URL of the admin API.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "WSFAULT_ADMIN",
        default_value = DEFAULT_ADMIN
    )]
    pub admin: String,
    /// Bearer token for an admin API started with --admin-token.
    #[arg(
        long,
        global = true,
        value_name = "T",
        env = "WSFAULT_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on a request after this long (e.g. 5s, 500ms).
    #[arg(long, global = true, value_name = "D", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The verbs of `wsfault ctl`.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// List every proxy: name, listen, upstream, enabled, number of toxics.
    #[command(visible_alias = "ls")]
    List,
    /// Show one proxy and its toxics.
    #[command(visible_alias = "i")]
    Inspect {
        /// Proxy name.
        proxy: String,
    },
    /// Create a proxy (enabled).
    #[command(visible_alias = "c")]
    Create {
        /// Proxy name.
        proxy: String,
        /// Address to listen on, e.g. 0.0.0.0:8080 (port 0 picks a free one).
        #[arg(short = 'l', long, value_name = "ADDR")]
        listen: String,
        /// Upstream: host:port, ws://host:port[/prefix] or wss://host:port[/prefix].
        #[arg(short = 'u', long, value_name = "TARGET")]
        upstream: String,
    },
    /// Enable a disabled proxy, disable an enabled one.
    #[command(visible_alias = "tog")]
    Toggle {
        /// Proxy name.
        proxy: String,
    },
    /// Delete a proxy (its connections are closed).
    #[command(visible_alias = "d")]
    Delete {
        /// Proxy name.
        proxy: String,
    },
    /// Add, update or remove toxics.
    #[command(subcommand, visible_alias = "t")]
    Toxic(ToxicCommand),
    /// List the live connections of a proxy.
    Connections {
        /// Proxy name.
        proxy: String,
    },
    /// Enable every proxy and remove every toxic.
    Reset,
    /// Exit 0 iff GET /healthz answers 200 (for container healthchecks).
    #[command(hide = true)]
    Health,
}

/// `wsfault ctl toxic ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ToxicCommand {
    /// Add a toxic to a proxy.
    #[command(visible_alias = "a")]
    Add {
        /// Proxy name.
        proxy: String,
        /// Toxic type (latency, message_loss, fragment, idle_timeout, ...).
        #[arg(short = 't', long = "type", value_name = "TYPE")]
        kind: String,
        /// Toxic name (default: TYPE_STREAM).
        #[arg(short = 'n', long, value_name = "NAME")]
        name: Option<String>,
        /// Stream it acts on (default: downstream).
        #[arg(short = 's', long, value_name = "STREAM", value_parser = stream_parser())]
        stream: Option<StreamDir>,
        /// Share of connections affected, 0..=1 (default 1).
        #[arg(long, value_name = "F", value_parser = parse_toxicity)]
        toxicity: Option<f64>,
        /// An attribute, K=V; repeat for several.
        #[arg(short = 'a', long = "attribute", value_name = "K=V", value_parser = parse_attribute)]
        attributes: Vec<(String, Value)>,
        /// `match` and `count`.
        #[command(flatten)]
        conditions: Box<ConditionArgs>,
    },
    /// Change the attributes, toxicity, match or count of a toxic (what is
    /// not named is kept).
    #[command(
        visible_alias = "u",
        long_about = "Change the attributes, toxicity, match or count of a toxic.\n\n\
                      Each flag sets its own field; what is not named keeps its value: \
                      -a K=V sets one attribute, --count-limit 2 changes only the limit \
                      of the current count (after and every are kept), --kind data only \
                      the kind of match.message, --match-header K=V only that header. \
                      The --json-* flags replace the whole json test. To drop a match or \
                      a count, remove the toxic and add it again."
    )]
    Update {
        /// Proxy name.
        proxy: String,
        /// Toxic name.
        #[arg(short = 'n', long, value_name = "NAME")]
        name: String,
        /// New toxicity, 0..=1.
        #[arg(long, value_name = "F", value_parser = parse_toxicity)]
        toxicity: Option<f64>,
        /// An attribute to set, K=V; repeat for several.
        #[arg(short = 'a', long = "attribute", value_name = "K=V", value_parser = parse_attribute)]
        attributes: Vec<(String, Value)>,
        /// `match` and `count` fields to set.
        #[command(flatten)]
        conditions: Box<ConditionArgs>,
    },
    /// Remove a toxic from a proxy.
    #[command(visible_aliases = ["r", "delete"])]
    Remove {
        /// Proxy name.
        proxy: String,
        /// Toxic name.
        #[arg(short = 'n', long, value_name = "NAME")]
        name: String,
    },
}

/// `--help` heading of the connection matchers.
const CONNECTION_HEADING: &str = "Connection matchers (match: which upgrade requests)";
/// `--help` heading of the message matchers.
const MESSAGE_HEADING: &str = "Message matchers (match.message: every given one must match)";
/// `--help` heading of the count flags.
const COUNT_HEADING: &str = "Count (count: per connection and stream, over matching messages)";

/// The `match` and `count` flags of `toxic add` and `toxic update`
/// (docs/reference.md#wsfault-ctl): connection matchers, message matchers
/// and the count, each under its own heading in `--help`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConditionArgs {
    /// Only connections whose request path (without the query) matches this
    /// glob: * any run of characters, ? one; e.g. '/chat/*'.
    #[arg(long, value_name = "GLOB", help_heading = CONNECTION_HEADING)]
    pub match_path: Option<String>,
    /// Only connections whose upgrade request has this header with exactly
    /// this value (the name is case-insensitive); repeat for several.
    #[arg(long, value_name = "K=V", value_parser = parse_header, help_heading = CONNECTION_HEADING)]
    pub match_header: Vec<(String, String)>,
    /// Only connections that negotiated this subprotocol.
    #[arg(long, value_name = "P", help_heading = CONNECTION_HEADING)]
    pub match_subprotocol: Option<String>,
    /// Only messages of this kind under the connection's protocol profile.
    #[arg(long = "kind", value_name = "KIND", value_parser = kind_parser(), help_heading = MESSAGE_HEADING)]
    pub message_kind: Option<Kind>,
    /// Only text or only binary messages.
    #[arg(long, value_name = "OPCODE", value_parser = opcode_parser(), help_heading = MESSAGE_HEADING)]
    pub opcode: Option<DataOpcode>,
    /// Only messages whose payload contains this text.
    #[arg(long, value_name = "S", help_heading = MESSAGE_HEADING)]
    pub contains: Option<String>,
    /// Only text messages in which this regex (Rust syntax) finds a match;
    /// checked before anything is sent.
    #[arg(long, value_name = "RE", value_parser = parse_regex, help_heading = MESSAGE_HEADING)]
    pub regex: Option<String>,
    /// Only text messages that are JSON, tested at this RFC 6901 pointer
    /// (e.g. /type, /payload/id); needs --json-equals or --json-exists.
    #[arg(long, value_name = "PTR", value_parser = parse_pointer, requires = "json_test", help_heading = MESSAGE_HEADING)]
    pub json_pointer: Option<String>,
    /// The value at --json-pointer equals this JSON value ('"next"', 3,
    /// true, null, '{"a":1}'); text that is not JSON is taken as a string,
    /// so --json-equals next is "next".
    #[arg(long, value_name = "JSON", value_parser = parse_json_value, requires = "json_pointer", group = "json_test", help_heading = MESSAGE_HEADING)]
    pub json_equals: Option<Value>,
    /// true: the pointer must resolve; false: it must not.
    #[arg(long, value_name = "BOOL", value_parser = bool_parser(), requires = "json_pointer", group = "json_test", help_heading = MESSAGE_HEADING)]
    pub json_exists: Option<bool>,
    /// The first N matching messages pass untouched (default 0).
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true, help_heading = COUNT_HEADING)]
    pub count_after: Option<u64>,
    /// Of the later matching messages, numbered from 1, act on every Nth
    /// (default 1: each).
    #[arg(long, value_name = "N", value_parser = parse_every, allow_negative_numbers = true, help_heading = COUNT_HEADING)]
    pub count_every: Option<u64>,
    /// Act at most N times (default: no limit).
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true, help_heading = COUNT_HEADING)]
    pub count_limit: Option<u64>,
}

impl ConditionArgs {
    /// The fields these flags set, as [`Conditions`].
    pub fn conditions(self) -> Conditions {
        let json = self.json_pointer.map(|pointer| JsonMatchSpec {
            pointer,
            equals: self.json_equals,
            exists: self.json_exists,
        });
        let message = MessageMatchSpec {
            kind: self.message_kind,
            opcode: self.opcode,
            contains: self.contains,
            regex: self.regex,
            json,
        };
        Conditions {
            matcher: MatchSpec {
                path: self.match_path,
                header: header_map(self.match_header),
                subprotocol: self.match_subprotocol,
                message: (message != MessageMatchSpec::default()).then_some(message),
            },
            count_after: self.count_after,
            count_every: self.count_every,
            count_limit: self.count_limit,
        }
    }
}

/// Runs `wsfault ctl`: sends the request(s) and prints a table or JSON on stdout.
pub async fn run_command(args: CtlArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.admin, args.token.clone(), args.timeout)?;
    let output = execute(&client, &verb(args.command), args.json).await?;
    if !output.is_empty() {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(output.as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot write to stdout")?;
    }
    Ok(())
}

/// The library's [`Verb`] for a parsed command line.
fn verb(command: CtlCommand) -> Verb {
    match command {
        CtlCommand::List => Verb::List,
        CtlCommand::Inspect { proxy } => Verb::Inspect { proxy },
        CtlCommand::Create {
            proxy,
            listen,
            upstream,
        } => Verb::Create {
            proxy,
            listen,
            upstream,
        },
        CtlCommand::Toggle { proxy } => Verb::Toggle { proxy },
        CtlCommand::Delete { proxy } => Verb::Delete { proxy },
        CtlCommand::Toxic(ToxicCommand::Add {
            proxy,
            kind,
            name,
            stream,
            toxicity,
            attributes,
            conditions,
        }) => {
            let conditions = conditions.conditions();
            Verb::ToxicAdd {
                proxy,
                toxic: NewToxic {
                    kind,
                    name,
                    stream,
                    toxicity,
                    attributes: attribute_map(attributes),
                    matcher: conditions.apply_match(None),
                    count: conditions.apply_count(None),
                },
            }
        }
        CtlCommand::Toxic(ToxicCommand::Update {
            proxy,
            name,
            toxicity,
            attributes,
            conditions,
        }) => Verb::ToxicUpdate {
            proxy,
            name,
            toxicity,
            attributes: attribute_map(attributes),
            conditions: conditions.conditions(),
        },
        CtlCommand::Toxic(ToxicCommand::Remove { proxy, name }) => {
            Verb::ToxicRemove { proxy, name }
        }
        CtlCommand::Connections { proxy } => Verb::Connections { proxy },
        CtlCommand::Reset => Verb::Reset,
        CtlCommand::Health => Verb::Health,
    }
}

/// `-a K=V` in order; a repeated K keeps its last value.
fn attribute_map(attributes: Vec<(String, Value)>) -> Map<String, Value> {
    attributes.into_iter().collect()
}

/// `-s`: `upstream` or `downstream`.
fn stream_parser() -> impl clap::builder::TypedValueParser<Value = StreamDir> {
    PossibleValuesParser::new([StreamDir::Upstream.label(), StreamDir::Downstream.label()]).map(
        |stream| match stream.as_str() {
            "upstream" => StreamDir::Upstream,
            _ => StreamDir::Downstream,
        },
    )
}

/// Parses `-a K=V`: V is JSON when it parses as JSON, else a string.
fn parse_attribute(arg: &str) -> Result<(String, Value), String> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err(format!("{arg:?} is not K=V (e.g. -a latency=300)"));
    };
    let key = key.trim();
    if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{arg:?} has an invalid attribute name {key:?}: expected K=V with a non-empty name"
        ));
    }
    let value =
        serde_json::from_str::<Value>(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

/// `--match-header K=V` in order; a repeated name (in any case) keeps its
/// last value.
fn header_map(headers: Vec<(String, String)>) -> std::collections::BTreeMap<String, String> {
    let mut map = std::collections::BTreeMap::new();
    for (name, value) in headers {
        map.retain(|old: &String, _| !old.eq_ignore_ascii_case(&name));
        map.insert(name, value);
    }
    map
}

/// Parses `--match-header K=V`: K a valid header name, V any text.
fn parse_header(arg: &str) -> Result<(String, String), String> {
    let Some((name, value)) = arg.split_once('=') else {
        return Err(format!(
            "{arg:?} is not K=V (e.g. --match-header x-tenant=blue)"
        ));
    };
    let name = name.trim();
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!(
            "{arg:?} has an invalid header name {name:?}: expected K=V with K a header name such as x-tenant"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// `--kind`: data, heartbeat, handshake or close.
fn kind_parser() -> impl clap::builder::TypedValueParser<Value = Kind> {
    PossibleValuesParser::new(Kind::ALL.map(Kind::label))
        .map(|kind| Kind::parse(&kind).unwrap_or(Kind::Data))
}

/// `--opcode`: text or binary.
fn opcode_parser() -> impl clap::builder::TypedValueParser<Value = DataOpcode> {
    PossibleValuesParser::new(["text", "binary"]).map(|opcode| match opcode.as_str() {
        "binary" => DataOpcode::Binary,
        _ => DataOpcode::Text,
    })
}

/// `--json-exists`: true or false.
fn bool_parser() -> impl clap::builder::TypedValueParser<Value = bool> {
    PossibleValuesParser::new(["true", "false"]).map(|value| value == "true")
}

/// Parses `--regex` with the server's own compile
/// ([`MessageMatchSpec::compile`]), so a bad one fails before any request.
fn parse_regex(arg: &str) -> Result<String, String> {
    MessageMatchSpec {
        regex: Some(arg.to_string()),
        ..MessageMatchSpec::default()
    }
    .compile()
    .map(|_| arg.to_string())
    .map_err(|err| err.message)
}

/// Parses `--json-pointer` with the server's own compile: empty or starting
/// with `/`.
fn parse_pointer(arg: &str) -> Result<String, String> {
    MessageMatchSpec {
        json: Some(JsonMatchSpec {
            pointer: arg.to_string(),
            equals: None,
            exists: Some(true),
        }),
        ..MessageMatchSpec::default()
    }
    .compile()
    .map(|_| arg.to_string())
    .map_err(|err| err.message)
}

/// Parses `--json-equals`: JSON when it parses as JSON, else a string.
fn parse_json_value(arg: &str) -> Result<Value, String> {
    Ok(serde_json::from_str::<Value>(arg).unwrap_or_else(|_| Value::String(arg.to_string())))
}

/// Parses `--count-after` and `--count-limit`: a whole number, 0 or more.
fn parse_count(arg: &str) -> Result<u64, String> {
    arg.trim()
        .parse::<u64>()
        .map_err(|_| format!("{arg:?} is not a count: expected a whole number, 0 or more"))
}

/// Parses `--count-every`: a whole number, 1 or more.
fn parse_every(arg: &str) -> Result<u64, String> {
    match arg.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{arg:?} is out of range: expected a whole number, 1 or more"
        )),
    }
}

/// Parses `--toxicity`: a number in 0..=1.
fn parse_toxicity(arg: &str) -> Result<f64, String> {
    match arg.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{arg:?} is not a toxicity: valid range is 0..=1")),
    }
}

/// Parses `--timeout`: a humantime duration (`5s`, `250ms`).
fn parse_duration(arg: &str) -> Result<Duration, String> {
    match humantime::parse_duration(arg) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("the timeout must be longer than 0".into()),
        Err(e) => Err(format!("{arg:?} is not a duration ({e}): e.g. 10s, 500ms")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use serde_json::json;

    #[test]
    fn attribute_values_are_json_when_they_parse() {
        assert_eq!(
            parse_attribute("latency=300"),
            Ok(("latency".into(), json!(300)))
        );
        assert_eq!(
            parse_attribute("probability=0.2"),
            Ok(("probability".into(), json!(0.2)))
        );
        assert_eq!(
            parse_attribute("interleave_ping=true"),
            Ok(("interleave_ping".into(), json!(true)))
        );
        assert_eq!(
            parse_attribute(r#"opcodes=["ping","pong"]"#),
            Ok(("opcodes".into(), json!(["ping", "pong"])))
        );
        assert_eq!(
            parse_attribute(r#"body="503""#),
            Ok(("body".into(), json!("503")))
        );
    }

    #[test]
    fn attribute_values_fall_back_to_strings() {
        assert_eq!(
            parse_attribute("mode=reset"),
            Ok(("mode".into(), json!("reset")))
        );
        assert_eq!(
            parse_attribute("reason=going away"),
            Ok(("reason".into(), json!("going away")))
        );
        assert_eq!(parse_attribute("body="), Ok(("body".into(), json!(""))));
        assert_eq!(
            parse_attribute("expr=a=b"),
            Ok(("expr".into(), json!("a=b")))
        );
        assert_eq!(parse_attribute("x=[1,"), Ok(("x".into(), json!("[1,"))));
    }

    #[test]
    fn bad_attributes_are_rejected() {
        assert!(parse_attribute("latency").unwrap_err().contains("K=V"));
        assert!(parse_attribute("=5").is_err());
        assert!(parse_attribute("a b=5").is_err());
    }

    #[test]
    fn toxicity_and_timeout_are_checked() {
        assert_eq!(parse_toxicity("0.5"), Ok(0.5));
        assert_eq!(parse_toxicity("1"), Ok(1.0));
        assert!(parse_toxicity("1.5").unwrap_err().contains("0..=1"));
        assert!(parse_toxicity("NaN").is_err());
        assert!(parse_toxicity("x").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn toxic_add_flags_become_a_new_toxic() {
        let Ok(Verb::ToxicAdd { proxy, toxic }) = parse(&[
            "toxic",
            "add",
            "chat",
            "-t",
            "latency",
            "-s",
            "upstream",
            "-a",
            "latency=1",
            "-a",
            "latency=2",
        ]) else {
            panic!("toxic add");
        };
        assert_eq!(proxy, "chat");
        assert_eq!(toxic.stream, Some(StreamDir::Upstream));
        assert_eq!(toxic.attributes["latency"], json!(2), "the last -a wins");
        assert_eq!((toxic.matcher, toxic.count), (None, None));
    }

    /// `wsfault ctl ARGS...` parsed into its [`Verb`], or clap's error.
    fn parse(args: &[&str]) -> Result<Verb, clap::Error> {
        let cli = crate::cmd::Cli::try_parse_from(["wsfault", "ctl"].iter().chain(args))?;
        let crate::cmd::Command::Ctl(args) = cli.command else {
            panic!("ctl");
        };
        Ok(verb(args.command))
    }

    #[test]
    fn match_and_count_flags_become_the_toxics_match_and_count() {
        let Ok(Verb::ToxicAdd { toxic, .. }) = parse(&[
            "toxic",
            "add",
            "chat",
            "-t",
            "message_loss",
            "--match-path",
            "/graphql*",
            "--match-header",
            "X-Tenant=a",
            "--match-header",
            "x-tenant=b",
            "--match-header",
            "x-empty=",
            "--match-subprotocol",
            "graphql-transport-ws",
            "--kind",
            "heartbeat",
            "--opcode",
            "text",
            "--contains",
            "ping",
            "--regex",
            r#""type":"(next|error)""#,
            "--json-pointer",
            "/type",
            "--json-equals",
            r#""next""#,
            "--count-after",
            "10",
            "--count-every",
            "3",
            "--count-limit",
            "5",
        ]) else {
            panic!("toxic add");
        };
        assert_eq!(
            serde_json::to_value(&toxic.matcher).expect("json"),
            json!({
                "path": "/graphql*",
                "header": {"x-empty": "", "x-tenant": "b"},
                "subprotocol": "graphql-transport-ws",
                "message": {"kind": "heartbeat", "opcode": "text", "contains": "ping",
                            "regex": r#""type":"(next|error)""#,
                            "json": {"pointer": "/type", "equals": "next"}}
            }),
            "a repeated header name, in any case, keeps its last value"
        );
        assert_eq!(
            serde_json::to_value(&toxic.count).expect("json"),
            json!({"after": 10, "every": 3, "limit": 5})
        );
    }

    #[test]
    fn json_equals_is_json_or_a_string_and_exists_is_a_bool() {
        let json_of = |args: &[&str]| {
            let mut all = vec!["toxic", "add", "chat", "-t", "duplicate"];
            all.extend_from_slice(args);
            let Ok(Verb::ToxicAdd { toxic, .. }) = parse(&all) else {
                panic!("toxic add {args:?}");
            };
            serde_json::to_value(toxic.matcher.and_then(|m| m.message)).expect("json")["json"]
                .clone()
        };
        for (given, equals) in [
            ("3", json!(3)),
            (r#""3""#, json!("3")),
            ("next", json!("next")),
            ("null", json!(null)),
            (r#"{"a":[1]}"#, json!({"a": [1]})),
        ] {
            assert_eq!(
                json_of(&["--json-pointer", "/x", "--json-equals", given]),
                json!({"pointer": "/x", "equals": equals}),
                "{given}"
            );
        }
        assert_eq!(
            json_of(&["--json-pointer", "", "--json-exists", "false"]),
            json!({"pointer": "", "exists": false})
        );
    }

    #[test]
    fn update_flags_carry_only_what_was_given() {
        let Ok(Verb::ToxicUpdate {
            conditions,
            attributes,
            toxicity,
            ..
        }) = parse(&[
            "toxic",
            "update",
            "chat",
            "-n",
            "beats",
            "--count-limit",
            "2",
        ])
        else {
            panic!("toxic update");
        };
        assert!(attributes.is_empty() && toxicity.is_none());
        assert_eq!(
            conditions,
            Conditions {
                count_limit: Some(2),
                ..Conditions::default()
            }
        );
        let Ok(Verb::ToxicUpdate { conditions, .. }) =
            parse(&["toxic", "u", "chat", "-n", "beats", "--kind", "data"])
        else {
            panic!("toxic update");
        };
        assert!(conditions.has_match() && !conditions.has_count());
        assert_eq!(
            conditions.matcher.message.and_then(|m| m.kind),
            Some(Kind::Data)
        );
    }

    #[test]
    fn bad_match_and_count_flags_name_the_flag_the_value_and_the_choices() {
        let add = |args: &[&str]| {
            let mut all = vec!["toxic", "add", "chat", "-t", "latency"];
            all.extend_from_slice(args);
            let err = parse(&all).expect_err("bad usage");
            assert_eq!(err.exit_code(), 2, "{args:?}");
            err.to_string()
        };
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["--kind", "ping"],
                &["'ping'", "--kind", "data, heartbeat, handshake, close"],
            ),
            (&["--opcode", "ping"], &["--opcode", "text, binary"]),
            (
                &["--regex", "(unclosed"],
                &["--regex", "not a valid regex", "unclosed group"],
            ),
            (
                &["--json-pointer", "type", "--json-equals", "1"],
                &["--json-pointer", "start with '/'"],
            ),
            (
                &["--json-pointer", "/type"],
                &["--json-equals", "--json-exists"],
            ),
            (&["--json-equals", "1"], &["--json-pointer"]),
            (
                &[
                    "--json-pointer",
                    "/a",
                    "--json-equals",
                    "1",
                    "--json-exists",
                    "true",
                ],
                &["cannot be used with"],
            ),
            (
                &["--json-pointer", "/a", "--json-exists", "yes"],
                &["'yes'", "true, false"],
            ),
            (&["--count-every", "0"], &["--count-every", "1 or more"]),
            (&["--count-after", "-1"], &["--count-after", "0 or more"]),
            (&["--count-limit", "many"], &["'many'", "whole number"]),
            (&["--match-header", "x-tenant"], &["--match-header", "K=V"]),
            (&["--match-header", "bad name=1"], &["invalid header name"]),
        ];
        for (args, needles) in cases {
            let err = add(args);
            assert!(needles.iter().all(|n| err.contains(n)), "{args:?}: {err}");
        }
    }
}
