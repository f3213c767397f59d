//! `wsfault ctl`: a command-line client of the admin API, with the verbs of
//! `toxiproxy-cli` (SPEC §9).
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
//! The HTTP client is a plain hyper 1 client connection over a tokio
//! `TcpStream`, one connection per request. Exit status: 0 on success, 1 when
//! the server refuses (its `{"error": ...}` message is printed) or cannot be
//! reached, 2 on bad usage (a bad `--admin` URL, a bad `-a K=V`).
//!
//! The hidden verb `health` (`GET /healthz`, exit 0 iff 200) is what the
//! Docker image's `HEALTHCHECK` and the compose healthchecks run.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::net::TcpStream;

use crate::error::{FailedError, UsageError};

/// Where `wsfault proxy` serves its admin API by default.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:8474";

/// Largest admin API response body the client accepts.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

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
        #[arg(short = 's', long, value_name = "STREAM", value_parser = ["upstream", "downstream"])]
        stream: Option<String>,
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
    let output = execute(&client, &args.command, args.json).await?;
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

/// Runs one verb and returns what to print.
async fn execute(client: &AdminClient, command: &CtlCommand, json: bool) -> anyhow::Result<String> {
    match command {
        CtlCommand::List => {
            let body = client.call(Method::GET, "/proxies", None).await?;
            if json {
                return Ok(pretty(&body));
            }
            let proxies = parse_proxy_map(&body)?;
            if proxies.is_empty() {
                return Ok(
                    "no proxies (create one with `wsfault ctl create NAME -l ADDR -u TARGET`)\n"
                        .into(),
                );
            }
            Ok(render_proxies(&proxies))
        }
        CtlCommand::Inspect { proxy } => {
            let body = client.call(Method::GET, &proxy_path(proxy), None).await?;
            if json {
                return Ok(pretty(&body));
            }
            Ok(render_proxy_detail(&parse_json::<ProxyView>(
                &body, "proxy",
            )?))
        }
        CtlCommand::Create {
            proxy,
            listen,
            upstream,
        } => {
            let request = serde_json::json!({
                "name": proxy, "listen": listen, "upstream": upstream, "enabled": true,
            });
            let body = client.call(Method::POST, "/proxies", Some(request)).await?;
            if json {
                return Ok(pretty(&body));
            }
            let created = parse_json::<ProxyView>(&body, "proxy")?;
            Ok(format!(
                "Created proxy {}.\n{}",
                created.name,
                render_proxies(std::slice::from_ref(&created))
            ))
        }
        CtlCommand::Toggle { proxy } => {
            let path = proxy_path(proxy);
            let current =
                parse_json::<ProxyView>(&client.call(Method::GET, &path, None).await?, "proxy")?;
            let request = serde_json::json!({ "enabled": !current.enabled });
            let body = client.call(Method::POST, &path, Some(request)).await?;
            if json {
                return Ok(pretty(&body));
            }
            let enabled = parse_json::<ProxyView>(&body, "proxy")
                .map(|p| p.enabled)
                .unwrap_or(!current.enabled);
            Ok(format!(
                "Proxy {proxy} is now {}.\n",
                if enabled { "enabled" } else { "disabled" }
            ))
        }
        CtlCommand::Delete { proxy } => {
            let body = client
                .call(Method::DELETE, &proxy_path(proxy), None)
                .await?;
            Ok(done(json, &body, format!("Deleted proxy {proxy}.\n")))
        }
        CtlCommand::Toxic(toxic) => execute_toxic(client, toxic, json).await,
        CtlCommand::Connections { proxy } => {
            let path = format!("{}/connections", proxy_path(proxy));
            let body = client.call(Method::GET, &path, None).await?;
            if json {
                return Ok(pretty(&body));
            }
            let connections = parse_json::<Vec<ConnectionView>>(&body, "connection list")?;
            if connections.is_empty() {
                return Ok(format!("no live connections on proxy {proxy}\n"));
            }
            Ok(render_connections(&connections))
        }
        CtlCommand::Reset => {
            let body = client.call(Method::POST, "/reset", None).await?;
            Ok(done(
                json,
                &body,
                "Reset: every proxy enabled, every toxic removed.\n".into(),
            ))
        }
        CtlCommand::Health => {
            let body = client.call(Method::GET, "/healthz", None).await?;
            Ok(if json { pretty(&body) } else { "ok\n".into() })
        }
    }
}

/// Runs one `toxic` verb.
async fn execute_toxic(
    client: &AdminClient,
    command: &ToxicCommand,
    json: bool,
) -> anyhow::Result<String> {
    match command {
        ToxicCommand::Add {
            proxy,
            kind,
            name,
            stream,
            toxicity,
            attributes,
        } => {
            let mut request = Map::new();
            if let Some(name) = name {
                request.insert("name".into(), Value::String(name.clone()));
            }
            request.insert("type".into(), Value::String(kind.clone()));
            if let Some(stream) = stream {
                request.insert("stream".into(), Value::String(stream.clone()));
            }
            if let Some(toxicity) = toxicity {
                request.insert("toxicity".into(), serde_json::json!(toxicity));
            }
            request.insert(
                "attributes".into(),
                Value::Object(attribute_map(attributes)),
            );
            let path = format!("{}/toxics", proxy_path(proxy));
            let body = client
                .call(Method::POST, &path, Some(Value::Object(request)))
                .await?;
            toxic_answer(&body, json, &format!("Added toxic {{}} to proxy {proxy}."))
        }
        ToxicCommand::Update {
            proxy,
            name,
            toxicity,
            attributes,
        } => {
            if attributes.is_empty() && toxicity.is_none() {
                return Err(UsageError(
                    "nothing to update: give at least one -a K=V or --toxicity F".into(),
                )
                .into());
            }
            let path = toxic_path(proxy, name);
            // Merge on the client side, so attributes not named on the command
            // line keep their values whether the server merges or replaces.
            let current =
                parse_json::<ToxicView>(&client.call(Method::GET, &path, None).await?, "toxic")?;
            let mut merged = current.attributes;
            merged.extend(attribute_map(attributes));
            let mut request = Map::new();
            request.insert("attributes".into(), Value::Object(merged));
            if let Some(toxicity) = toxicity {
                request.insert("toxicity".into(), serde_json::json!(toxicity));
            }
            let body = client
                .call(Method::POST, &path, Some(Value::Object(request)))
                .await?;
            toxic_answer(
                &body,
                json,
                &format!("Updated toxic {{}} on proxy {proxy}."),
            )
        }
        ToxicCommand::Remove { proxy, name } => {
            let body = client
                .call(Method::DELETE, &toxic_path(proxy, name), None)
                .await?;
            Ok(done(
                json,
                &body,
                format!("Removed toxic {name} from proxy {proxy}.\n"),
            ))
        }
    }
}

/// Output of a verb whose answer is usually an empty 204.
fn done(json: bool, body: &Bytes, text: String) -> String {
    if json {
        pretty(body)
    } else {
        text
    }
}

// ---------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------

/// Where the admin API is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AdminClient {
    /// The URL as the user gave it, for messages.
    display: String,
    /// Host to connect to (no IPv6 brackets).
    host: String,
    /// Port to connect to.
    port: u16,
    /// Value of the `Host` header.
    authority: String,
    /// Path prefix without a trailing slash ("" for none).
    prefix: String,
    token: Option<String>,
    timeout: Duration,
}

impl AdminClient {
    /// Parses `--admin`: `http://HOST[:PORT][/prefix]` or bare `HOST:PORT`.
    fn new(url: &str, token: Option<String>, timeout: Duration) -> anyhow::Result<AdminClient> {
        let bad = |why: &str| {
            UsageError(format!(
                "invalid --admin URL {url:?}: {why}; expected http://HOST:PORT, e.g. http://127.0.0.1:8474"
            ))
        };
        // An empty value (e.g. `WSFAULT_ADMIN=` in a compose file) means the default.
        let trimmed = match url.trim() {
            "" => DEFAULT_ADMIN,
            other => other,
        };
        let full = if trimmed.contains("://") {
            trimmed.to_string()
        } else {
            format!("http://{trimmed}")
        };
        let uri: http::Uri = full.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad("https is not supported by wsfault ctl, use http").into())
            }
            Some(other) => return Err(bad(&format!("scheme {other:?} is not http")).into()),
            None => return Err(bad("no scheme").into()),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user info is not supported, use --token").into());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host").into());
        }
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed").into());
        }
        let port_text = authority
            .as_str()
            .strip_prefix(authority.host())
            .unwrap_or_default();
        let port = match port_text.strip_prefix(':') {
            None if port_text.is_empty() => 80,
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(bad(&format!("port {text:?} is not in 1..=65535")).into()),
            },
            None => return Err(bad("not a URL").into()),
        };
        let prefix = uri.path().trim_end_matches('/').to_string();
        if let Some(token) = &token {
            if header::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                return Err(
                    UsageError("invalid --token: it must be printable ASCII".into()).into(),
                );
            }
        }
        Ok(AdminClient {
            display: format!("http://{}{}", authority.as_str(), prefix),
            host: host.to_string(),
            port,
            authority: authority.as_str().to_string(),
            prefix,
            token: token.filter(|t| !t.is_empty()),
            timeout,
        })
    }

    /// Sends one request; returns the body of a 2xx answer, or an error
    /// carrying the server's `{"error": ...}` message.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Bytes> {
        let what = format!("{method} {}{path}", self.display);
        let (status, bytes) = tokio::time::timeout(self.timeout, self.send(method, path, body))
            .await
            .map_err(|_| {
                FailedError(format!(
                    "no answer from the admin API at {} within {} ({what})",
                    self.display,
                    humantime::format_duration(self.timeout)
                ))
            })??;
        if status.is_success() {
            return Ok(bytes);
        }
        let mut message = format!("{what}: {}", error_message(status, &bytes));
        if status == StatusCode::UNAUTHORIZED {
            message.push_str(" (pass --token or set WSFAULT_ADMIN_TOKEN)");
        }
        Err(FailedError(message).into())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let unreachable = |err: &dyn std::fmt::Display| {
            FailedError(format!(
                "cannot reach the admin API at {}: {err}",
                self.display
            ))
        };
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unreachable(&e))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("wsfault-ctl/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = match body {
            Some(value) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(&value).context("cannot encode the request body")?)
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(payload))
            .map_err(|e| UsageError(format!("cannot build the request for {path:?}: {e}")))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| unreachable(&e))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    FailedError(format!(
                        "bad answer from the admin API at {}: {e}",
                        self.display
                    ))
                })?
                .to_bytes();
            Ok::<_, anyhow::Error>((status, bytes))
        }
        .await;
        driver.abort();
        result
    }
}

/// The message to show for an error answer: the server's `error` field when
/// the body is Toxiproxy's `{"error": ..., "status": N}`, else the body text.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    let reason = status.canonical_reason().unwrap_or("error");
    let detail = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => match map.get("error") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => Value::Object(map).to_string(),
        },
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let mut short: String = text.chars().take(300).collect();
            if short.len() < text.len() {
                short.push('…');
            }
            short
        }
    };
    if detail.is_empty() {
        format!("{} {reason}", status.as_u16())
    } else {
        format!("{} {reason}: {detail}", status.as_u16())
    }
}

/// Percent-encodes one path segment (anything but RFC 3986 unreserved characters).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn proxy_path(proxy: &str) -> String {
    format!("/proxies/{}", encode_segment(proxy))
}

fn toxic_path(proxy: &str, toxic: &str) -> String {
    format!("{}/toxics/{}", proxy_path(proxy), encode_segment(toxic))
}

// ---------------------------------------------------------------------------
// Argument parsing
// ---------------------------------------------------------------------------

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

fn attribute_map(attributes: &[(String, Value)]) -> Map<String, Value> {
    attributes.iter().cloned().collect()
}

// ---------------------------------------------------------------------------
// Views of the admin API's JSON (lenient: unknown fields are ignored)
// ---------------------------------------------------------------------------

/// A proxy as the admin API shows it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
struct ProxyView {
    name: String,
    listen: String,
    upstream: String,
    enabled: bool,
    toxics: Vec<ToxicView>,
}

/// A toxic as the admin API shows it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
struct ToxicView {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    stream: String,
    toxicity: Option<f64>,
    attributes: Map<String, Value>,
    #[serde(rename = "match")]
    matcher: Option<Value>,
    schedule: Option<Value>,
}

/// Frame and byte counts of one direction of a connection.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
struct DirectionView {
    frames: u64,
    bytes: u64,
}

/// A live connection as `GET /proxies/{p}/connections` shows it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
struct ConnectionView {
    id: Value,
    client: String,
    path: String,
    subprotocol: Option<String>,
    age_ms: u64,
    upstream: DirectionView,
    downstream: DirectionView,
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> anyhow::Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        FailedError(format!(
            "the admin API answered with an unexpected {what} JSON: {e}"
        ))
        .into()
    })
}

/// `GET /proxies` → proxies sorted by name.
fn parse_proxy_map(body: &[u8]) -> anyhow::Result<Vec<ProxyView>> {
    let map = parse_json::<std::collections::BTreeMap<String, ProxyView>>(body, "proxy list")?;
    Ok(map
        .into_iter()
        .map(|(key, mut proxy)| {
            if proxy.name.is_empty() {
                proxy.name = key;
            }
            proxy
        })
        .collect())
}

/// Pretty-prints a JSON body (or passes a non-JSON body through).
fn pretty(body: &[u8]) -> String {
    if body.iter().all(u8::is_ascii_whitespace) {
        return String::new();
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            let mut text =
                serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string());
            text.push('\n');
            text
        }
        Err(_) => {
            let mut text = String::from_utf8_lossy(body).into_owned();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text
        }
    }
}

// ---------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------

/// Renders rows under headers as left-aligned columns two spaces apart, with
/// no trailing spaces. Widths count characters, not bytes.
fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = row.get(i).map(String::as_str).unwrap_or("");
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn render_proxies(proxies: &[ProxyView]) -> String {
    let rows: Vec<Vec<String>> = proxies
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.listen.clone(),
                p.upstream.clone(),
                p.enabled.to_string(),
                p.toxics.len().to_string(),
            ]
        })
        .collect();
    render_table(&["NAME", "LISTEN", "UPSTREAM", "ENABLED", "TOXICS"], &rows)
}

fn render_proxy_detail(proxy: &ProxyView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Name:      {}", proxy.name);
    let _ = writeln!(out, "Listen:    {}", proxy.listen);
    let _ = writeln!(out, "Upstream:  {}", proxy.upstream);
    let _ = writeln!(out, "Enabled:   {}", proxy.enabled);
    out.push('\n');
    if proxy.toxics.is_empty() {
        out.push_str("no toxics\n");
    } else {
        out.push_str(&render_toxics(&proxy.toxics));
    }
    out
}

fn render_toxics(toxics: &[ToxicView]) -> String {
    let with_conditions = toxics
        .iter()
        .any(|t| t.matcher.is_some() || t.schedule.is_some());
    let mut headers = vec!["NAME", "TYPE", "STREAM", "TOXICITY", "ATTRIBUTES"];
    if with_conditions {
        headers.push("CONDITIONS");
    }
    let rows: Vec<Vec<String>> = toxics
        .iter()
        .map(|t| {
            let mut row = vec![
                t.name.clone(),
                t.kind.clone(),
                if t.stream.is_empty() {
                    "downstream".into()
                } else {
                    t.stream.clone()
                },
                format_number(t.toxicity.unwrap_or(1.0)),
                render_attributes(&t.attributes),
            ];
            if with_conditions {
                let mut parts = Vec::new();
                if let Some(m) = t.matcher.as_ref().filter(|v| !v.is_null()) {
                    parts.push(format!("match={m}"));
                }
                if let Some(s) = t.schedule.as_ref().filter(|v| !v.is_null()) {
                    parts.push(format!("schedule={s}"));
                }
                row.push(parts.join(" "));
            }
            row
        })
        .collect();
    render_table(&headers, &rows)
}

fn render_connections(connections: &[ConnectionView]) -> String {
    let rows: Vec<Vec<String>> = connections
        .iter()
        .map(|c| {
            vec![
                match &c.id {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
                c.client.clone(),
                c.path.clone(),
                c.subprotocol.clone().unwrap_or_default(),
                format_age(c.age_ms),
                format!("{}/{}", c.upstream.frames, c.upstream.bytes),
                format!("{}/{}", c.downstream.frames, c.downstream.bytes),
            ]
        })
        .collect();
    render_table(
        &[
            "ID",
            "CLIENT",
            "PATH",
            "SUBPROTOCOL",
            "AGE",
            "UP FRAMES/BYTES",
            "DOWN FRAMES/BYTES",
        ],
        &rows,
    )
}

fn format_age(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// `1` rather than `1.0`, `0.25` as is.
fn format_number(value: f64) -> String {
    serde_json::Number::from_f64(value)
        .map(|n| {
            let text = n.to_string();
            text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
        })
        .unwrap_or_else(|| value.to_string())
}

/// `k=v` pairs sorted by name; strings bare unless they need quotes.
fn render_attributes(attributes: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = attributes.keys().collect();
    keys.sort();
    keys.into_iter()
        .map(|key| {
            let value = &attributes[key];
            let text = match value {
                Value::String(s)
                    if !s.is_empty()
                        && !s.chars().any(|c| {
                            c.is_whitespace() || c.is_control() || c == '"' || c == '='
                        }) =>
                {
                    s.clone()
                }
                Value::Number(n) => n
                    .as_f64()
                    .filter(|_| n.is_f64())
                    .map(format_number)
                    .unwrap_or_else(|| n.to_string()),
                other => other.to_string(),
            };
            format!("{key}={text}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The answer to a toxic add/update: raw JSON, or `headline` (with `{}`
/// replaced by the toxic's name) and a one-row table.
fn toxic_answer(body: &[u8], json: bool, headline: &str) -> anyhow::Result<String> {
    if json {
        return Ok(pretty(body));
    }
    let toxic = parse_json::<ToxicView>(body, "toxic")?;
    Ok(format!(
        "{}\n{}",
        headline.replacen("{}", &toxic.name, 1),
        render_toxics(std::slice::from_ref(&toxic))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn admin_urls() {
        let t = Duration::from_secs(1);
        let c = AdminClient::new("http://127.0.0.1:8474", None, t).expect("valid test input");
        assert_eq!(
            (c.host.as_str(), c.port, c.prefix.as_str()),
            ("127.0.0.1", 8474, "")
        );
        assert_eq!(c.authority, "127.0.0.1:8474");
        let c =
            AdminClient::new("localhost:9000", Some(String::new()), t).expect("valid test input");
        assert_eq!(
            (c.host.as_str(), c.port, c.token),
            ("localhost", 9000, None)
        );
        let c = AdminClient::new("http://[::1]:8474/admin/", Some("s3cret".into()), t)
            .expect("valid test input");
        assert_eq!(
            (c.host.as_str(), c.port, c.prefix.as_str()),
            ("::1", 8474, "/admin")
        );
        assert_eq!(c.display, "http://[::1]:8474/admin");
        let c = AdminClient::new(" ", None, t).expect("valid test input");
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 8474));
        let c = AdminClient::new("http://proxy", None, t).expect("valid test input");
        assert_eq!(c.port, 80);
        for bad in [
            "https://127.0.0.1:8474",
            "ftp://x:1",
            "http://",
            "http://a b:1",
            "http://x:99999",
            "http://u:p@x:1",
            "http://x:1/?q=1",
        ] {
            let err = AdminClient::new(bad, None, t).unwrap_err();
            assert!(err.downcast_ref::<UsageError>().is_some(), "{bad}: {err}");
            assert!(err.to_string().contains("--admin"), "{bad}: {err}");
        }
        let err = AdminClient::new("http://x:1", Some("bad\ntoken".into()), t).unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some());
    }

    #[test]
    fn paths_are_percent_encoded() {
        assert_eq!(proxy_path("chat"), "/proxies/chat");
        assert_eq!(
            toxic_path("my proxy", "a/b"),
            "/proxies/my%20proxy/toxics/a%2Fb"
        );
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn error_messages_use_the_error_field() {
        let msg = error_message(
            StatusCode::NOT_FOUND,
            br#"{"error":"proxy not found","status":404}"#,
        );
        assert_eq!(msg, "404 Not Found: proxy not found");
        let msg = error_message(StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert_eq!(msg, "502 Bad Gateway: upstream down");
        assert_eq!(error_message(StatusCode::CONFLICT, b""), "409 Conflict");
        let long = vec![b'x'; 1000];
        assert!(error_message(StatusCode::BAD_REQUEST, &long).ends_with('…'));
    }

    #[test]
    fn tables_are_aligned_without_trailing_spaces() {
        let table = render_table(
            &["NAME", "TYPE", "X"],
            &[
                vec!["a".into(), "latency".into(), "".into()],
                vec!["longer-name".into(), "é".into(), "1".into()],
            ],
        );
        assert_eq!(
            table,
            "NAME         TYPE     X\n\
             a            latency\n\
             longer-name  é        1\n"
        );
    }

    fn sample_proxies() -> Vec<ProxyView> {
        let body = json!({
            "web": {"name": "web", "listen": "127.0.0.1:8081", "upstream": "backend:80",
                    "enabled": false, "toxics": []},
            "chat": {"name": "chat", "listen": "0.0.0.0:8080", "upstream": "ws://backend:9000/ws",
                     "enabled": true, "extensions": "strip",
                     "toxics": [
                        {"name": "lossy", "type": "message_loss", "stream": "upstream",
                         "toxicity": 1.0, "attributes": {"probability": 0.02}},
                        {"name": "slow", "type": "latency", "stream": "downstream",
                         "toxicity": 0.5, "attributes": {"latency": 300, "jitter": 100},
                         "schedule": {"start_after": 0, "duration": 5000, "period": 30000}}
                     ]}
        });
        parse_proxy_map(body.to_string().as_bytes()).expect("valid test input")
    }

    #[test]
    fn proxy_list_table() {
        let proxies = sample_proxies();
        assert_eq!(proxies[0].name, "chat", "sorted by name");
        assert_eq!(
            render_proxies(&proxies),
            "NAME  LISTEN          UPSTREAM              ENABLED  TOXICS\n\
             chat  0.0.0.0:8080    ws://backend:9000/ws  true     2\n\
             web   127.0.0.1:8081  backend:80            false    0\n"
        );
    }

    #[test]
    fn toxic_table_and_detail() {
        let proxies = sample_proxies();
        let detail = render_proxy_detail(&proxies[0]);
        assert!(detail.starts_with("Name:      chat\nListen:    0.0.0.0:8080\n"));
        let toxics = render_toxics(&proxies[0].toxics);
        let lines: Vec<&str> = toxics.lines().collect();
        assert_eq!(
            lines[0],
            "NAME   TYPE          STREAM      TOXICITY  ATTRIBUTES              CONDITIONS"
        );
        assert_eq!(
            lines[1],
            "lossy  message_loss  upstream    1         probability=0.02"
        );
        assert_eq!(
            lines[2],
            r#"slow   latency       downstream  0.5       jitter=100 latency=300  schedule={"duration":5000,"period":30000,"start_after":0}"#
        );
        assert!(detail.ends_with(&toxics));
        assert!(render_proxy_detail(&proxies[1]).ends_with("no toxics\n"));
    }

    #[test]
    fn attribute_rendering() {
        let attrs = json!({"reason": "going away", "code": 1012, "opcodes": ["pong"], "mode": "reset", "p": 1.0})
            .as_object()
            .cloned()
            .expect("valid test input");
        assert_eq!(
            render_attributes(&attrs),
            r#"code=1012 mode=reset opcodes=["pong"] p=1 reason="going away""#
        );
    }

    #[test]
    fn connection_table() {
        let body = json!([{"id": 7, "client": "127.0.0.1:5000", "path": "/chat?x=1", "subprotocol": null,
                           "age_ms": 1500, "upstream": {"frames": 3, "bytes": 120},
                           "downstream": {"frames": 4, "bytes": 200}}]);
        let connections: Vec<ConnectionView> =
            serde_json::from_value(body).expect("valid test input");
        let table = render_connections(&connections);
        assert!(table
            .lines()
            .nth(1)
            .expect("valid test input")
            .starts_with("7   127.0.0.1:5000  /chat?x=1"));
        assert!(table.contains("1.5s"));
        assert!(table.contains("3/120"));
    }

    #[test]
    fn unexpected_json_is_a_failure_not_a_panic() {
        let err = parse_proxy_map(b"[1,2]").unwrap_err();
        assert!(err.downcast_ref::<FailedError>().is_some());
        assert_eq!(pretty(b""), "");
        assert_eq!(pretty(b"{\"a\":1}"), "{\n  \"a\": 1\n}\n");
        assert_eq!(pretty(b"plain"), "plain\n");
    }
}
