//! The HTTP side of a proxied connection, parsed by hyper on both ends.
//!
//! An upgrade request is forwarded upstream with its method, path, query and
//! headers (hop-by-hop headers handled per RFC 9110, `X-Forwarded-For`
//! added, the client's `Sec-WebSocket-Key` unchanged); the upstream's answer
//! comes back as it is. After two 101s the raw sockets are taken back from
//! hyper and handed to the relay. Other requests are reverse-proxied.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::Instrument;

use super::conn::ConnShared;
use super::relay::{self, Link};
use super::ProxyShared;
use crate::config::{ExtensionsMode, HostMode};
use crate::toxics::{handshake_actions, ConnFacts, HandshakeAction, StreamDir};

/// The body type of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// How long the upstream gets to accept a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client gets to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn plain_response(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Answers `503` to a client over the connection cap and closes.
pub async fn refuse(mut tcp: TcpStream) {
    let body = "wsfault: too many connections\n";
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(reply.as_bytes())).await;
    let _ = tcp.shutdown().await;
}

/// Serves one client TCP connection with hyper (upgrades enabled).
pub async fn serve_client(tcp: TcpStream, peer: SocketAddr, ordinal: u64, proxy: Arc<ProxyShared>) {
    let span = tracing::info_span!("conn", conn_id = ordinal, proxy = %proxy.name);
    let service = hyper::service::service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(handle(req, peer, ordinal, proxy).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .preserve_header_case(true)
        .auto_date_header(false)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let connection = builder
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    if let Err(err) = connection.instrument(span.clone()).await {
        tracing::debug!(parent: &span, error = %err, "client HTTP connection ended with an error");
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), those named in Connection included.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| {
            s.split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    ] {
        headers.remove(name);
    }
}

fn add_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", v);
    }
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    ordinal: u64,
    proxy: Arc<ProxyShared>,
) -> Response<ProxyBody> {
    if is_upgrade(req.headers()) {
        upgrade(req, peer, ordinal, proxy).await
    } else {
        pass_http(req, peer, proxy).await
    }
}

async fn connect_upstream(
    proxy: &ProxyShared,
    authority: &str,
) -> Result<TcpStream, Response<ProxyBody>> {
    let tls = proxy.settings.load().upstream.tls;
    let connect = async {
        if tls {
            super::tls::connect(authority).await
        } else {
            TcpStream::connect(authority).await
        }
    };
    let result = tokio::time::timeout(CONNECT_TIMEOUT, connect).await;
    match result {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(err)) => {
            proxy.metrics.handshake_failure("upstream_unreachable");
            tracing::warn!(upstream = authority, error = %err, "upstream unreachable");
            Err(plain_response(
                StatusCode::BAD_GATEWAY,
                format!("wsfault: upstream {authority} unreachable: {err}\n"),
            ))
        }
        Err(_) => {
            proxy.metrics.handshake_failure("upstream_timeout");
            Err(plain_response(
                StatusCode::BAD_GATEWAY,
                format!(
                    "wsfault: upstream {authority} did not accept within {CONNECT_TIMEOUT:?}\n"
                ),
            ))
        }
    }
}

async fn send_upstream<B>(
    proxy: &ProxyShared,
    tcp: TcpStream,
    request: Request<B>,
    upgrades: bool,
) -> Result<Response<Incoming>, Response<ProxyBody>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let authority = proxy.settings.load().upstream.authority.clone();
    let (mut sender, connection) = match hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake(TokioIo::new(tcp))
        .await
    {
        Ok(pair) => pair,
        Err(err) => {
            proxy.metrics.handshake_failure("upstream_error");
            return Err(plain_response(
                StatusCode::BAD_GATEWAY,
                format!("wsfault: upstream {authority} failed: {err}\n"),
            ));
        }
    };
    if upgrades {
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
    } else {
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    sender.send_request(request).await.map_err(|err| {
        proxy.metrics.handshake_failure("upstream_error");
        plain_response(
            StatusCode::BAD_GATEWAY,
            format!("wsfault: upstream {authority} failed: {err}\n"),
        )
    })
}

// The error is the response to send back; it is built once per failed
// request, never on the relay's hot path, so its size does not matter.
#[allow(clippy::result_large_err)]
fn upstream_request_parts(
    parts: &mut http::request::Parts,
    proxy: &ProxyShared,
    peer: SocketAddr,
) -> Result<(), Response<ProxyBody>> {
    let settings = proxy.settings.load();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let joined = settings.upstream.join(path);
    parts.uri = joined.parse().map_err(|_| {
        plain_response(
            StatusCode::BAD_REQUEST,
            format!("wsfault: bad request path {joined:?}\n"),
        )
    })?;
    add_forwarded_for(&mut parts.headers, peer);
    if settings.spec.host == HostMode::Upstream {
        if let Ok(v) = HeaderValue::from_str(&settings.upstream.authority) {
            parts.headers.insert(header::HOST, v);
        }
    }
    Ok(())
}

async fn pass_http(
    req: Request<Incoming>,
    peer: SocketAddr,
    proxy: Arc<ProxyShared>,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Err(response) = upstream_request_parts(&mut parts, &proxy, peer) {
        return response;
    }
    let authority = proxy.settings.load().upstream.authority.clone();
    let tcp = match connect_upstream(&proxy, &authority).await {
        Ok(tcp) => tcp,
        Err(response) => return response,
    };
    match send_upstream(&proxy, tcp, Request::from_parts(parts, body), false).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(response) => response,
    }
}

async fn upgrade(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    ordinal: u64,
    proxy: Arc<ProxyShared>,
) -> Response<ProxyBody> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let settings = proxy.settings.load_full();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let requested_protocol = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.split(',').next())
        .map(|s| s.trim().to_string());
    let lower_headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.as_str().to_ascii_lowercase(),
                v.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    let mut facts = ConnFacts {
        opened_at: std::time::Instant::now(),
        path: path.clone(),
        subprotocol: requested_protocol,
        headers: lower_headers,
        compressed: false,
    };

    // Handshake toxics.
    let handshake_toxics: Vec<_> = settings
        .toxics
        .iter()
        .filter(|t| t.def.handshake_only())
        .cloned()
        .collect();
    if !handshake_toxics.is_empty() {
        for (entry, action) in
            handshake_actions(&handshake_toxics, &facts, proxy.seed, &proxy.name, ordinal)
        {
            proxy
                .metrics
                .toxic_actions(&entry.spec.name, &entry.spec.kind)
                .inc();
            match action {
                HandshakeAction::Continue => {}
                HandshakeAction::Delay(delay) => tokio::time::sleep(delay).await,
                HandshakeAction::Reject { status, body } => {
                    proxy.metrics.handshake_failure("rejected_by_toxic");
                    let status =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                    return plain_response(status, body);
                }
            }
        }
    }

    let (mut parts, _body) = req.into_parts();
    // Hop-by-hop headers go; the upgrade itself is re-stated.
    let upgrade_value = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Some(v) = upgrade_value {
        parts.headers.insert(header::UPGRADE, v);
    }
    if settings.spec.extensions == ExtensionsMode::Strip {
        parts.headers.remove("sec-websocket-extensions");
    }
    if let Err(response) = upstream_request_parts(&mut parts, &proxy, peer) {
        return response;
    }
    let tcp = match connect_upstream(&proxy, &settings.upstream.authority).await {
        Ok(tcp) => tcp,
        Err(response) => return response,
    };
    let request = Request::from_parts(parts, http_body_util::Empty::<Bytes>::new());
    let mut response = match send_upstream(&proxy, tcp, request, true).await {
        Ok(response) => response,
        Err(response) => return response,
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        proxy.metrics.handshake_failure("upstream_refused");
        let (parts, body) = response.into_parts();
        return Response::from_parts(parts, body.boxed());
    }
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    facts.subprotocol = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string());
    facts.compressed = response
        .headers()
        .get_all("sec-websocket-extensions")
        .iter()
        .any(|v| {
            v.to_str()
                .map(|s| s.contains("permessage-deflate"))
                .unwrap_or(false)
        });
    // Registered before the 101 goes back: a client that has its 101 finds
    // its connection in the admin API's list (and can end it).
    let profile = crate::protocols::at_handshake(
        settings.spec.protocol,
        &crate::protocols::Handshake {
            path_and_query: &facts.path,
            subprotocol: facts.subprotocol.as_deref(),
        },
    );
    let conn = Arc::new(ConnShared::new(
        ordinal,
        peer,
        facts.path.clone(),
        facts.subprotocol.clone(),
        profile,
    ));
    proxy.register(conn.clone());
    let span = tracing::Span::current();
    tokio::spawn(
        async move {
            let (client, upstream) = tokio::join!(client_upgrade, upstream_upgrade);
            let (client, upstream) = match (client, upstream) {
                (Ok(c), Ok(u)) => (c, u),
                (c, u) => {
                    tracing::warn!(
                        client_ok = c.is_ok(),
                        upstream_ok = u.is_ok(),
                        "upgrade did not complete"
                    );
                    proxy.metrics.handshake_failure("upgrade_failed");
                    proxy.unregister(conn.id);
                    return;
                }
            };
            let (client, upstream) = match (
                client.downcast::<TokioIo<TcpStream>>(),
                upstream.downcast::<TokioIo<TcpStream>>(),
            ) {
                (Ok(c), Ok(u)) => (c, u),
                _ => {
                    proxy.metrics.handshake_failure("upgrade_failed");
                    proxy.unregister(conn.id);
                    return;
                }
            };
            relay_connection(
                conn,
                client.io.into_inner(),
                client.read_buf,
                upstream.io.into_inner(),
                upstream.read_buf,
                peer,
                facts,
                proxy,
            )
            .await;
        }
        .instrument(span),
    );
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.boxed())
}

#[allow(clippy::too_many_arguments)]
async fn relay_connection(
    conn: Arc<ConnShared>,
    client: TcpStream,
    client_buffered: Bytes,
    upstream: TcpStream,
    upstream_buffered: Bytes,
    peer: SocketAddr,
    facts: ConnFacts,
    proxy: Arc<ProxyShared>,
) {
    let facts = Arc::new(ConnFacts {
        opened_at: conn.opened_at,
        ..facts
    });
    tracing::info!(client = %peer, path = %conn.path, "connection open");
    let client = Arc::new(client);
    let upstream = Arc::new(upstream);
    let up = Link {
        stream: StreamDir::Upstream,
        reader: client.clone(),
        writer: upstream.clone(),
        initial: client_buffered,
        conn: conn.clone(),
        proxy: proxy.clone(),
        facts: facts.clone(),
    };
    let down = Link {
        stream: StreamDir::Downstream,
        reader: upstream,
        writer: client,
        initial: upstream_buffered,
        conn: conn.clone(),
        proxy: proxy.clone(),
        facts,
    };
    // One task per direction: a frame arriving on one socket wakes and polls
    // only the link that reads it.
    let up_task = tokio::spawn(relay::run(up).instrument(tracing::Span::current()));
    relay::run(down).await;
    let _ = up_task.await;
    proxy.unregister(conn.id);
    tracing::info!(
        age_ms = conn.opened_at.elapsed().as_millis() as u64,
        "connection closed"
    );
}
