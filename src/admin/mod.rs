//! The admin HTTP API: Toxiproxy 2.x's paths, bodies and status codes, plus
//! `/healthz`, `/metrics` and the connections endpoints (SPEC §5).
//!
//! Security: optional bearer token (constant-time compare) on everything but
//! `/healthz` and `/metrics`; cross-site browser `Origin`s get 403; bodies
//! over 1 MiB get 413; slow clients time out.

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
use crate::proxy::{RegistryError, Server};
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
        .and_then(|v| v.strip_prefix("Bearer "))
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

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Response<Body>> {
    serde_json::from_slice(bytes)
        .map_err(|err| error(StatusCode::BAD_REQUEST, format!("bad request body: {err}")))
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
    let open = path == "/healthz" || path == "/metrics";
    if let Some(token) = &options.token {
        if !open && !authorized(&req, token) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
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
        (&Method::POST, ["reset"]) => match server.reset().await {
            Ok(()) => empty(StatusCode::NO_CONTENT),
            Err(e) => registry_error(e),
        },
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
            let spec: ProxySpec = match parse_json(body) {
                Ok(s) => s,
                Err(r) => return r,
            };
            match server.create(spec).await {
                Ok(view) => json_response(StatusCode::CREATED, &view),
                Err(e) => registry_error(e),
            }
        }
        (&Method::POST, ["populate"]) => {
            let specs: Vec<ProxySpec> = match parse_json::<Value>(body) {
                // Toxiproxy accepts a bare array; `{"proxies": [...]}` is accepted too.
                Ok(Value::Object(mut o)) if o.contains_key("proxies") => {
                    match serde_json::from_value(o.remove("proxies").unwrap_or(Value::Null)) {
                        Ok(s) => s,
                        Err(e) => {
                            return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}"))
                        }
                    }
                }
                Ok(v) => match serde_json::from_value(v) {
                    Ok(s) => s,
                    Err(e) => {
                        return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}"))
                    }
                },
                Err(r) => return r,
            };
            match server.populate(specs).await {
                Ok(views) => json_response(StatusCode::CREATED, &json!({"proxies": views})),
                Err(e) => registry_error(e),
            }
        }
        (&Method::GET, ["proxies", p]) => match server.get(p) {
            Ok(view) => json_response(StatusCode::OK, &view),
            Err(e) => registry_error(e),
        },
        (&Method::POST | &Method::PATCH, ["proxies", p]) => {
            let patch: Value = match parse_json(body) {
                Ok(v) => v,
                Err(r) => return r,
            };
            match server.update(p, &patch).await {
                Ok(view) => json_response(StatusCode::OK, &view),
                Err(e) => registry_error(e),
            }
        }
        (&Method::DELETE, ["proxies", p]) => match server.delete(p).await {
            Ok(()) => empty(StatusCode::NO_CONTENT),
            Err(e) => registry_error(e),
        },
        (&Method::GET, ["proxies", p, "toxics"]) => match server.toxics(p) {
            Ok(list) => json_response(StatusCode::OK, &list),
            Err(e) => registry_error(e),
        },
        (&Method::POST, ["proxies", p, "toxics"]) => {
            let spec: ToxicSpec = match parse_json(body) {
                Ok(s) => s,
                Err(r) => return r,
            };
            match server.add_toxic(p, spec) {
                Ok(t) => json_response(StatusCode::OK, &t),
                Err(e) => registry_error(e),
            }
        }
        (&Method::GET, ["proxies", p, "toxics", t]) => match server.toxic(p, t) {
            Ok(t) => json_response(StatusCode::OK, &t),
            Err(e) => registry_error(e),
        },
        (&Method::POST | &Method::PATCH, ["proxies", p, "toxics", t]) => {
            let patch: Value = match parse_json(body) {
                Ok(v) => v,
                Err(r) => return r,
            };
            match server.update_toxic(p, t, &patch) {
                Ok(t) => json_response(StatusCode::OK, &t),
                Err(e) => registry_error(e),
            }
        }
        (&Method::DELETE, ["proxies", p, "toxics", t]) => match server.remove_toxic(p, t) {
            Ok(()) => empty(StatusCode::NO_CONTENT),
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
        (_, ["healthz" | "version" | "metrics" | "reset" | "proxies" | "populate", ..]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here"),
        ),
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}
