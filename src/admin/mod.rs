//! The admin HTTP API: Toxiproxy 2.x's paths, bodies and status codes, plus
//! `/healthz`, `/metrics`, the connections endpoints, `/toxic-types`,
//! `/stats` and the web console at `/ui` (`admin/ui.rs`) (docs/reference.md#admin-api). Change
//! routes turn JSON into a typed [`Change`] and answer with what
//! [`Server::apply`] left behind.
//!
//! Security: optional bearer token (constant-time compare) on everything but
//! `/healthz`, `/metrics` and the console's static files; cross-site browser
//! `Origin`s get 403; bodies over 1 MiB get 413; slow clients time out.

mod ui;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ProxySpec;
use crate::proxy::{Change, Outcome, ProxyPatch, RegistryError, Server, ToxicPatch};
use crate::toxics::ToxicSpec;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Time a client gets to send a request head or body.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Admin API options.
#[derive(Debug, Clone, Default)]
pub struct AdminOptions {
    /// Bearer token; `None` = no authentication.
    pub token: Option<String>,
}

type Body = Full<Bytes>;

/// Serves the admin API on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    options: AdminOptions,
    mut stop: watch::Receiver<bool>,
) {
    let options = Arc::new(options);
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, _) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "admin accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let server = server.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                let options = options.clone();
                async move { Ok::<_, Infallible>(handle(req, &server, &options).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(CLIENT_TIMEOUT);
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(
        status,
        &json!({"error": message.into(), "status": status.as_u16()}),
    )
}

fn registry_error(err: RegistryError) -> Response<Body> {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, err.to_string())
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// Runs a typed change; `status` on success, with what the change left
/// behind as the body.
async fn apply(server: &Arc<Server>, change: Change, status: StatusCode) -> Response<Body> {
    match server.apply(change).await {
        Ok(Outcome::Proxy(view)) => json_response(status, &view),
        Ok(Outcome::Proxies(views)) => json_response(status, &json!({"proxies": views})),
        Ok(Outcome::Toxic(toxic)) => json_response(status, &toxic),
        Ok(Outcome::Done) => empty(status),
        Err(e) => registry_error(e),
    }
}

/// Whether a browser `Origin` belongs to another site than the `Host` asked.
fn cross_site(req: &Request<Incoming>) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("null");
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split("://").nth(1).unwrap_or("");
    origin == "null" || origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host)
}

fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or("");
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

async fn read_body(body: Incoming) -> Result<Bytes, Response<Body>> {
    let limited = Limited::new(body, MAX_BODY_BYTES);
    match tokio::time::timeout(CLIENT_TIMEOUT, limited.collect()).await {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        )),
        Ok(Err(err)) => {
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over {MAX_BODY_BYTES} bytes"),
                ))
            } else {
                Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read body: {err}"),
                ))
            }
        }
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Parses a JSON body; the error is the message of a 400.
fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|err| format!("bad request body: {err}"))
}

/// The JSON type a known field must have.
#[derive(Clone, Copy)]
enum Want {
    Str,
    Bool,
    Uint,
    Num,
    Obj,
    Arr,
    /// `self-signed` or `{cert, key}`.
    Tls,
    Choice(&'static [&'static str]),
}

/// Fields of a proxy body (Toxiproxy's first, then ours).
const PROXY_FIELDS: &[(&str, Want)] = &[
    ("name", Want::Str),
    ("listen", Want::Str),
    ("upstream", Want::Str),
    ("enabled", Want::Bool),
    ("toxics", Want::Arr),
    ("extensions", Want::Choice(&["strip", "pass"])),
    ("host", Want::Choice(&["keep", "upstream"])),
    ("max_frame_bytes", Want::Uint),
    ("max_message_bytes", Want::Uint),
    ("protocol", Want::Str),
    ("tls", Want::Tls),
];

/// Fields of a toxic body (Toxiproxy's first, then ours).
const TOXIC_FIELDS: &[(&str, Want)] = &[
    ("name", Want::Str),
    ("type", Want::Str),
    ("stream", Want::Choice(&["upstream", "downstream"])),
    ("toxicity", Want::Num),
    ("attributes", Want::Obj),
    ("match", Want::Obj),
    ("schedule", Want::Obj),
    ("count", Want::Obj),
];

/// Checks a JSON body against `fields` so that errors name the field, the
/// bad value and the valid choices (serde's messages name neither).
/// Null values count as absent (Toxiproxy's Go clients send `"toxics": null`).
fn check_fields(
    value: Value,
    what: &str,
    fields: &[(&str, Want)],
    required: &[&str],
) -> Result<serde_json::Map<String, Value>, String> {
    let Value::Object(mut obj) = value else {
        return Err(format!(
            "bad request body: a {what} must be a JSON object, got {value}"
        ));
    };
    obj.retain(|_, v| !v.is_null());
    let names = || {
        fields
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (key, value) in &obj {
        let Some((_, want)) = fields.iter().find(|(n, _)| n == key) else {
            return Err(format!(
                "unknown field {key:?} in {what}: valid fields are {}",
                names()
            ));
        };
        let ok = match want {
            Want::Str => value.is_string(),
            Want::Bool => value.is_boolean(),
            Want::Uint => value.is_u64(),
            Want::Num => value.is_number(),
            Want::Obj => value.is_object(),
            Want::Arr => value.is_array(),
            Want::Tls => value == "self-signed" || value.is_object(),
            Want::Choice(choices) => value.as_str().is_some_and(|s| choices.contains(&s)),
        };
        if !ok {
            let expected = match want {
                Want::Str => "expected a string".to_string(),
                Want::Bool => "valid choices are true, false".to_string(),
                Want::Uint => "expected a non-negative integer".to_string(),
                Want::Num => "expected a number".to_string(),
                Want::Obj => "expected a JSON object".to_string(),
                Want::Arr => "expected a JSON array".to_string(),
                Want::Tls => r#"expected "self-signed" or {"cert": FILE, "key": FILE}"#.to_string(),
                Want::Choice(choices) => format!("valid choices are {}", choices.join(", ")),
            };
            return Err(format!("{what} field {key}={value} is invalid: {expected}"));
        }
    }
    for field in required {
        if !obj.contains_key(*field) {
            return Err(format!(
                "missing required field: {field} (a {what} needs {})",
                required.join(", ")
            ));
        }
    }
    Ok(obj)
}

/// A toxic body (add or patch), checked field by field.
fn toxic_json(value: Value, required: &[&str]) -> Result<Value, String> {
    check_fields(value, "toxic", TOXIC_FIELDS, required).map(Value::Object)
}

/// A proxy update body, checked field by field; `toxics` is ignored (as in
/// Toxiproxy).
fn proxy_patch(value: Value) -> Result<ProxyPatch, String> {
    let mut obj = check_fields(value, "proxy", PROXY_FIELDS, &[])?;
    obj.remove("toxics");
    serde_json::from_value(Value::Object(obj)).map_err(|err| format!("bad request body: {err}"))
}

/// A toxic update body, checked field by field.
fn toxic_patch(value: Value) -> Result<ToxicPatch, String> {
    let obj = toxic_json(value, &[])?;
    serde_json::from_value(obj).map_err(|err| err.to_string())
}

/// A proxy body for create or populate: checked field by field; `listen`
/// defaults to `127.0.0.1:0` (Toxiproxy accepts a missing listen too).
fn proxy_spec(value: Value) -> Result<ProxySpec, String> {
    let mut obj = check_fields(value, "proxy", PROXY_FIELDS, &["name", "upstream"])?;
    obj.entry("listen")
        .or_insert_with(|| Value::from("127.0.0.1:0"));
    if let Some(Value::Array(toxics)) = obj.remove("toxics") {
        let mut checked = Vec::with_capacity(toxics.len());
        for toxic in toxics {
            checked.push(toxic_json(toxic, &["type"])?);
        }
        obj.insert("toxics".into(), Value::Array(checked));
    }
    serde_json::from_value(Value::Object(obj)).map_err(|err| format!("bad request body: {err}"))
}

fn bad_request(message: String) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, message)
}

async fn handle(
    req: Request<Incoming>,
    server: &Arc<Server>,
    options: &AdminOptions,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if cross_site(&req) {
        return error(StatusCode::FORBIDDEN, "cross-site requests are not allowed");
    }
    let open = path == "/healthz" || path == "/metrics" || ui::is_static(&path);
    if let Some(token) = &options.token {
        if !open && !authorized(&req, token) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    if method == Method::GET || method == Method::HEAD {
        if let Some(page) = ui::file(&path) {
            return page;
        }
    }
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > MAX_BODY_BYTES {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body of {len} bytes is over {MAX_BODY_BYTES} bytes"),
            );
        }
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    route(&method, &segments, &query, &body, server).await
}

async fn route(
    method: &Method,
    segments: &[&str],
    query: &str,
    body: &[u8],
    server: &Arc<Server>,
) -> Response<Body> {
    match (method, segments) {
        (&Method::GET, ["healthz"]) => {
            if server.all_bound() {
                json_response(StatusCode::OK, &json!({"status": "ok"}))
            } else {
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "starting"}),
                )
            }
        }
        (&Method::GET, ["version"]) => json_response(
            StatusCode::OK,
            &json!({"version": env!("CARGO_PKG_VERSION")}),
        ),
        (&Method::GET, ["metrics"]) => {
            let mut response = Response::new(Full::new(Bytes::from(server.metrics.render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (&Method::GET, ["toxic-types"]) => {
            json_response(StatusCode::OK, &crate::toxics::toxic_types())
        }
        (&Method::GET, ["stats"]) => {
            // Counters outlive deleted proxies; show the current ones.
            let names: Vec<String> = server.list().into_iter().map(|p| p.name).collect();
            let mut stats = server.metrics.stats();
            stats.retain(|name, _| names.contains(name));
            json_response(StatusCode::OK, &json!({"proxies": stats}))
        }
        (&Method::POST, ["reset"]) => apply(server, Change::Reset, StatusCode::NO_CONTENT).await,
        (&Method::GET, ["proxies"]) => {
            let map: serde_json::Map<String, Value> = server
                .list()
                .into_iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        serde_json::to_value(p).unwrap_or(Value::Null),
                    )
                })
                .collect();
            json_response(StatusCode::OK, &map)
        }
        (&Method::POST, ["proxies"]) => {
            let spec = match parse_json(body).and_then(proxy_spec) {
                Ok(s) => s,
                Err(e) => return bad_request(e),
            };
            apply(server, Change::CreateProxy(spec), StatusCode::CREATED).await
        }
        (&Method::POST, ["populate"]) => {
            let list = match parse_json::<Value>(body) {
                // Toxiproxy takes a bare array; `{"proxies": [...]}` is accepted too.
                Ok(Value::Object(mut o)) if o.len() == 1 && o.contains_key("proxies") => {
                    o.remove("proxies").unwrap_or(Value::Null)
                }
                Ok(v) => v,
                Err(e) => return bad_request(e),
            };
            let Value::Array(items) = list else {
                return bad_request(format!(
                    "bad request body: populate takes a JSON array of proxies (or {{\"proxies\": [...]}}), got {list}"
                ));
            };
            let mut specs = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match proxy_spec(item) {
                    Ok(spec) => specs.push(spec),
                    Err(e) => return bad_request(format!("proxy {}: {e}", i + 1)),
                }
            }
            apply(server, Change::Populate(specs), StatusCode::CREATED).await
        }
        (&Method::GET, ["proxies", p]) => match server.get(p) {
            Ok(view) => json_response(StatusCode::OK, &view),
            Err(e) => registry_error(e),
        },
        (&Method::POST | &Method::PATCH, ["proxies", p]) => {
            let patch = match parse_json(body).and_then(proxy_patch) {
                Ok(patch) => patch,
                Err(e) => return bad_request(e),
            };
            let change = Change::UpdateProxy {
                proxy: p.to_string(),
                patch,
            };
            apply(server, change, StatusCode::OK).await
        }
        (&Method::DELETE, ["proxies", p]) => {
            let change = Change::DeleteProxy(p.to_string());
            apply(server, change, StatusCode::NO_CONTENT).await
        }
        (&Method::GET, ["proxies", p, "toxics"]) => match server.toxics(p) {
            Ok(list) => json_response(StatusCode::OK, &list),
            Err(e) => registry_error(e),
        },
        (&Method::POST, ["proxies", p, "toxics"]) => {
            let spec = match parse_json(body)
                .and_then(|v| toxic_json(v, &["type"]))
                .and_then(|v| {
                    serde_json::from_value::<ToxicSpec>(v)
                        .map_err(|e| format!("bad request body: {e}"))
                }) {
                Ok(s) => s,
                Err(e) => return bad_request(e),
            };
            let change = Change::AddToxic {
                proxy: p.to_string(),
                toxic: spec,
            };
            apply(server, change, StatusCode::OK).await
        }
        (&Method::GET, ["proxies", p, "toxics", t]) => match server.toxic(p, t) {
            Ok(t) => json_response(StatusCode::OK, &t),
            Err(e) => registry_error(e),
        },
        (&Method::POST | &Method::PATCH, ["proxies", p, "toxics", t]) => {
            let patch = match parse_json(body).and_then(toxic_patch) {
                Ok(patch) => patch,
                Err(e) => return bad_request(e),
            };
            let change = Change::UpdateToxic {
                proxy: p.to_string(),
                toxic: t.to_string(),
                patch,
            };
            apply(server, change, StatusCode::OK).await
        }
        (&Method::DELETE, ["proxies", p, "toxics", t]) => {
            let change = Change::RemoveToxic {
                proxy: p.to_string(),
                toxic: t.to_string(),
            };
            apply(server, change, StatusCode::NO_CONTENT).await
        }
        (&Method::GET, ["proxies", p, "certificate"]) => match server.certificate(p) {
            Ok(Some(pem)) => {
                let mut response = Response::new(Full::new(Bytes::from(pem)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-pem-file"),
                );
                response
            }
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                format!(
                    "proxy {p} has no TLS listener (set tls: self-signed or tls: {{cert, key}})"
                ),
            ),
            Err(e) => registry_error(e),
        },
        (&Method::GET, ["proxies", p, "connections"]) => match server.connections(p) {
            Ok(list) => json_response(StatusCode::OK, &list),
            Err(e) => registry_error(e),
        },
        (&Method::DELETE, ["proxies", p, "connections", id]) => {
            let Ok(id) = id.parse::<u64>() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("connection id {id:?} is not a number"),
                );
            };
            let mode = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("mode="))
                .unwrap_or("close");
            match server.end_connection(p, id, mode) {
                Ok(()) => empty(StatusCode::NO_CONTENT),
                Err(e) => registry_error(e),
            }
        }
        (&Method::GET, ["ui", ..]) => error(StatusCode::NOT_FOUND, "no such endpoint"),
        (
            _,
            ["healthz" | "version" | "metrics" | "reset" | "proxies" | "populate" | "toxic-types"
            | "stats" | "ui", ..],
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here"),
        ),
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}
