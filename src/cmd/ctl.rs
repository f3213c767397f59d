//! `wsfault ctl`: flags → a [`Verb`], the requests, the output on stdout.
//!
//! ```text
//! wsfault ctl [--admin URL] [--token T] [--json] <command>
//!   list                                  every proxy, one line each
//!   inspect P                             one proxy and its toxics
//!   create P -l ADDR -u TARGET            add a proxy
//!   toggle P                              enable ↔ disable
//!   delete P                              remove a proxy
//!   toxic add P -t TYPE [-n NAME] [-s STREAM] [--toxicity F] -a K=V ...
//!   toxic update P -n NAME [-a K=V ...] [--toxicity F]
//!   toxic remove P -n NAME
//!   connections P                         live connections of a proxy
//!   reset                                 enable every proxy, remove every toxic
//! ```
//!
//! Exit status: 0 on success, 1 when the server refuses (its
//! `{"error": ...}` message is printed) or cannot be reached, 2 on bad usage
//! (a bad `--admin` URL, a bad `-a K=V`).
//!
//! The hidden verb `health` (`GET /healthz`, exit 0 iff 200) is what the
//! Docker image's `HEALTHCHECK` and the compose healthchecks run.

use std::time::Duration;

use anyhow::Context as _;
use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use serde_json::{Map, Value};

use crate::ctl::{execute, AdminClient, NewToxic, Verb, DEFAULT_ADMIN};
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
    },
    /// Change the attributes or toxicity of a toxic (other attributes are kept).
    #[command(visible_alias = "u")]
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
        }) => Verb::ToxicAdd {
            proxy,
            toxic: NewToxic {
                kind,
                name,
                stream,
                toxicity,
                attributes: attribute_map(attributes),
            },
        },
        CtlCommand::Toxic(ToxicCommand::Update {
            proxy,
            name,
            toxicity,
            attributes,
        }) => Verb::ToxicUpdate {
            proxy,
            name,
            toxicity,
            attributes: attribute_map(attributes),
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
        let cli = crate::cmd::Cli::try_parse_from([
            "wsfault",
            "ctl",
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
        ])
        .expect("valid command line");
        let crate::cmd::Command::Ctl(args) = cli.command else {
            panic!("ctl");
        };
        let Verb::ToxicAdd { proxy, toxic } = verb(args.command) else {
            panic!("toxic add");
        };
        assert_eq!(proxy, "chat");
        assert_eq!(toxic.stream, Some(StreamDir::Upstream));
        assert_eq!(toxic.attributes["latency"], json!(2), "the last -a wins");
    }
}
