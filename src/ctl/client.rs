//! The admin API client: one typed method per request of `wsfault ctl`.
//!
//! A plain hyper 1 client connection over a tokio `TcpStream`, one
//! connection per request. A 2xx answer comes back as a [`Reply`]: the body
//! as sent (for `--json`) that parses on demand into the shared view types
//! ([`ProxyView`], [`ConnectionView`], [`ToxicSpec`]). Any other status is a
//! [`FailedError`] carrying the server's `{"error": ...}` message; a bad
//! `--admin` URL or `--token` is a [`UsageError`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};
use tokio::net::TcpStream;

use super::conditions::{check_locally, Conditions};
use crate::error::{FailedError, UsageError};
use crate::toxics::message_match::CountSpec;
use crate::toxics::{MatchSpec, ToxicSpec};
use crate::views::{toxic_from_json, ConnectionView, ProxyView};
use crate::vocab::StreamDir;

/// Where `wsfault proxy` serves its admin API by default.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:8474";

/// Largest admin API response body the client accepts.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The body of a 2xx answer: raw for `--json`, parsed on demand into `T`.
///
/// Parsing is separate so that `--json` prints whatever the server sent,
/// even JSON of an unexpected shape.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    body: Bytes,
    parse: fn(&[u8]) -> anyhow::Result<T>,
}

impl<T> Reply<T> {
    /// The body as the server sent it.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as a `T`; JSON of another shape is a [`FailedError`].
    pub fn parse(&self) -> anyhow::Result<T> {
        (self.parse)(&self.body)
    }
}

/// A toxic to add (`POST /proxies/{p}/toxics`); fields left `None` are not
/// sent, so the server's defaults apply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewToxic {
    /// Toxic type.
    pub kind: String,
    /// Name (server default: `TYPE_STREAM`).
    pub name: Option<String>,
    /// Stream (server default: downstream).
    pub stream: Option<StreamDir>,
    /// Toxicity (server default: 1).
    pub toxicity: Option<f64>,
    /// Attributes.
    pub attributes: Map<String, Value>,
    /// `match`: which connections and messages (not sent when `None`).
    pub matcher: Option<MatchSpec>,
    /// `count`: which of the matching messages (not sent when `None`).
    pub count: Option<CountSpec>,
}

impl NewToxic {
    /// The toxic as the server will read it (its defaults filled in), for
    /// [`check_locally`].
    fn as_spec(&self) -> ToxicSpec {
        ToxicSpec {
            name: self.name.clone().unwrap_or_default(),
            kind: self.kind.clone(),
            stream: self.stream.unwrap_or_default(),
            toxicity: self.toxicity.unwrap_or(1.0),
            attributes: self.attributes.clone(),
            matcher: self.matcher.clone(),
            schedule: None,
            count: self.count.clone(),
        }
    }
}

/// Where the admin API is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminClient {
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
    /// Parses `--admin`: `http://HOST[:PORT][/prefix]` or bare `HOST:PORT`
    /// (empty: [`DEFAULT_ADMIN`]). An empty token means none; `timeout`
    /// bounds each request.
    pub fn new(url: &str, token: Option<String>, timeout: Duration) -> anyhow::Result<AdminClient> {
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

    /// `GET /proxies`: every proxy, sorted by name.
    pub async fn list(&self) -> anyhow::Result<Reply<Vec<ProxyView>>> {
        let body = self.call(Method::GET, "/proxies", None).await?;
        Ok(Reply {
            body,
            parse: parse_proxy_map,
        })
    }

    /// `GET /proxies/{proxy}`.
    pub async fn get(&self, proxy: &str) -> anyhow::Result<Reply<ProxyView>> {
        let body = self.call(Method::GET, &proxy_path(proxy), None).await?;
        Ok(proxy_reply(body))
    }

    /// `POST /proxies`: a new, enabled proxy.
    pub async fn create(
        &self,
        proxy: &str,
        listen: &str,
        upstream: &str,
    ) -> anyhow::Result<Reply<ProxyView>> {
        let request = serde_json::json!({
            "name": proxy, "listen": listen, "upstream": upstream, "enabled": true,
        });
        let body = self.call(Method::POST, "/proxies", Some(request)).await?;
        Ok(proxy_reply(body))
    }

    /// `GET` then `POST /proxies/{proxy}` with `enabled` flipped. Returns the
    /// `enabled` value it sent and the server's answer.
    pub async fn toggle(&self, proxy: &str) -> anyhow::Result<(bool, Reply<ProxyView>)> {
        let path = proxy_path(proxy);
        let enabled = !self.get(proxy).await?.parse()?.enabled;
        let request = serde_json::json!({ "enabled": enabled });
        let body = self.call(Method::POST, &path, Some(request)).await?;
        Ok((enabled, proxy_reply(body)))
    }

    /// `DELETE /proxies/{proxy}`; returns the (usually empty) body.
    pub async fn delete(&self, proxy: &str) -> anyhow::Result<Bytes> {
        self.call(Method::DELETE, &proxy_path(proxy), None).await
    }

    /// `POST /proxies/{proxy}/toxics`. A `match.message` or `count` the
    /// server would refuse is a [`UsageError`] before any request
    /// ([`check_locally`]).
    pub async fn add_toxic(
        &self,
        proxy: &str,
        toxic: &NewToxic,
    ) -> anyhow::Result<Reply<ToxicSpec>> {
        check_locally(&toxic.as_spec())?;
        let mut request = Map::new();
        if let Some(name) = &toxic.name {
            request.insert("name".into(), Value::String(name.clone()));
        }
        request.insert("type".into(), Value::String(toxic.kind.clone()));
        if let Some(stream) = toxic.stream {
            request.insert("stream".into(), Value::String(stream.label().into()));
        }
        if let Some(toxicity) = toxic.toxicity {
            request.insert("toxicity".into(), serde_json::json!(toxicity));
        }
        request.insert("attributes".into(), Value::Object(toxic.attributes.clone()));
        if let Some(matcher) = &toxic.matcher {
            request.insert("match".into(), to_json(matcher)?);
        }
        if let Some(count) = &toxic.count {
            request.insert("count".into(), to_json(count)?);
        }
        let path = format!("{}/toxics", proxy_path(proxy));
        let body = self
            .call(Method::POST, &path, Some(Value::Object(request)))
            .await?;
        Ok(toxic_reply(body))
    }

    /// `GET` then `POST /proxies/{proxy}/toxics/{name}`: sets `attributes`
    /// over the current ones, the given `match` and `count` fields over the
    /// current ones ([`Conditions::apply_match`], [`Conditions::apply_count`])
    /// and, when given, the toxicity. Nothing to set, or a `match.message` or
    /// `count` the server would refuse ([`check_locally`]), is a
    /// [`UsageError`] (and no `POST` is sent).
    pub async fn update_toxic(
        &self,
        proxy: &str,
        name: &str,
        toxicity: Option<f64>,
        attributes: &Map<String, Value>,
        conditions: &Conditions,
    ) -> anyhow::Result<Reply<ToxicSpec>> {
        if attributes.is_empty() && toxicity.is_none() && conditions.is_empty() {
            return Err(UsageError(
                "nothing to update: give at least one -a K=V, --toxicity F, match flag \
                 (--match-path, --match-header, --match-subprotocol, --kind, --opcode, \
                 --contains, --regex, --json-pointer) or count flag (--count-after, \
                 --count-every, --count-limit)"
                    .into(),
            )
            .into());
        }
        let path = toxic_path(proxy, name);
        // Merge on the client side, so attributes, match and count fields not
        // named on the command line keep their values whether the server
        // merges or replaces.
        let current = parse_toxic(&self.call(Method::GET, &path, None).await?)?;
        let mut merged = current.clone();
        merged
            .attributes
            .extend(attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(toxicity) = toxicity {
            merged.toxicity = toxicity;
        }
        merged.matcher = conditions.apply_match(current.matcher);
        merged.count = conditions.apply_count(current.count);
        check_locally(&merged)?;
        let mut request = Map::new();
        request.insert("attributes".into(), Value::Object(merged.attributes));
        if let Some(toxicity) = toxicity {
            request.insert("toxicity".into(), serde_json::json!(toxicity));
        }
        if let (true, Some(matcher)) = (conditions.has_match(), &merged.matcher) {
            request.insert("match".into(), to_json(matcher)?);
        }
        if let (true, Some(count)) = (conditions.has_count(), &merged.count) {
            request.insert("count".into(), to_json(count)?);
        }
        let body = self
            .call(Method::POST, &path, Some(Value::Object(request)))
            .await?;
        Ok(toxic_reply(body))
    }

    /// `DELETE /proxies/{proxy}/toxics/{name}`; returns the (usually empty) body.
    pub async fn remove_toxic(&self, proxy: &str, name: &str) -> anyhow::Result<Bytes> {
        self.call(Method::DELETE, &toxic_path(proxy, name), None)
            .await
    }

    /// `GET /proxies/{proxy}/connections`.
    pub async fn connections(&self, proxy: &str) -> anyhow::Result<Reply<Vec<ConnectionView>>> {
        let path = format!("{}/connections", proxy_path(proxy));
        let body = self.call(Method::GET, &path, None).await?;
        Ok(Reply {
            body,
            parse: |body| parse_json(body, "connection list"),
        })
    }

    /// `POST /reset`; returns the (usually empty) body.
    pub async fn reset(&self) -> anyhow::Result<Bytes> {
        self.call(Method::POST, "/reset", None).await
    }

    /// `GET /healthz`: succeeds iff it answers 2xx; returns the body.
    pub async fn health(&self) -> anyhow::Result<Bytes> {
        self.call(Method::GET, "/healthz", None).await
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

fn proxy_reply(body: Bytes) -> Reply<ProxyView> {
    Reply {
        body,
        parse: |body| parse_json(body, "proxy"),
    }
}

fn toxic_reply(body: Bytes) -> Reply<ToxicSpec> {
    Reply {
        body,
        parse: parse_toxic,
    }
}

/// A request field as JSON.
fn to_json(value: &impl serde::Serialize) -> anyhow::Result<Value> {
    serde_json::to_value(value).context("cannot encode the request body")
}

/// A body as `T`; anything else is a [`FailedError`] naming `what`.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> anyhow::Result<T> {
    serde_json::from_slice(body).map_err(|e| unexpected(what, e))
}

fn unexpected(what: &str, err: serde_json::Error) -> anyhow::Error {
    FailedError(format!(
        "the admin API answered with an unexpected {what} JSON: {err}"
    ))
    .into()
}

/// One toxic, read leniently ([`toxic_from_json`]).
fn parse_toxic(body: &[u8]) -> anyhow::Result<ToxicSpec> {
    toxic_from_json(parse_json(body, "toxic")?).map_err(|e| unexpected("toxic", e))
}

/// `GET /proxies` → proxies sorted by name (a proxy without a `name` takes
/// its key's).
pub(crate) fn parse_proxy_map(body: &[u8]) -> anyhow::Result<Vec<ProxyView>> {
    let map = parse_json::<BTreeMap<String, ProxyView>>(body, "proxy list")?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn unexpected_json_is_a_failure_not_a_panic() {
        let err = parse_proxy_map(b"[1,2]").unwrap_err();
        assert!(err.downcast_ref::<FailedError>().is_some());
        let err = parse_toxic(br#"{"name": "no type"}"#).unwrap_err();
        assert!(err.downcast_ref::<FailedError>().is_some());
        assert!(err.to_string().contains("unexpected toxic JSON"), "{err}");
        let reply = Reply::<Vec<ProxyView>> {
            body: Bytes::from_static(b"plain"),
            parse: parse_proxy_map,
        };
        assert_eq!(reply.body(), b"plain");
        assert!(reply.parse().is_err());
    }

    #[test]
    fn proxy_maps_fill_names_from_keys_and_sort() {
        let proxies =
            parse_proxy_map(br#"{"b": {"name": "b"}, "a": {"listen": "x:1"}}"#).expect("lenient");
        let names: Vec<&str> = proxies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
