//! The admin API (docs/reference.md#admin-api): Toxiproxy 2.x's paths, bodies and status codes,
//! our extra endpoints, security, and bad input.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use wsfault::frame::Opcode;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn ws(addr: SocketAddr) -> Ws {
    tokio::time::timeout(
        SOON,
        tokio_tungstenite::connect_async(format!("ws://{addr}/")),
    )
    .await
    .expect("connect timeout")
    .expect("connect through proxy")
    .0
}

/// Sends one text message and waits for its echo; returns the round trip.
async fn round_trip(ws: &mut Ws, text: &str) -> Duration {
    let start = Instant::now();
    ws.send(Message::text(text)).await.expect("send");
    let echoed = tokio::time::timeout(SOON, ws.next())
        .await
        .expect("echo timeout")
        .expect("echo")
        .expect("frame");
    assert_eq!(echoed, Message::text(text));
    start.elapsed()
}

fn listen_addr(view: &Value) -> SocketAddr {
    view["listen"]
        .as_str()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("listen in {view}"))
}

/// Asserts a Toxiproxy-style error body and returns its message.
fn error_message(status: u16, body: &Value) -> String {
    assert_eq!(
        body["status"].as_u64(),
        Some(status as u64),
        "error body {body}"
    );
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_string()
}

async fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_err()
}

#[tokio::test]
async fn proxies_created_over_the_api_listen_at_once() {
    let echo = tungstenite_echo().await;
    let proxy = TestProxy::start(None).await;
    let (status, view) = api(
        proxy.admin,
        "POST",
        "/proxies",
        Some(json!({"name": "chat", "listen": "127.0.0.1:0", "upstream": echo.to_string(), "enabled": true})),
    )
    .await;
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["name"], "chat");
    assert_eq!(view["upstream"], echo.to_string());
    assert_eq!(view["enabled"], true);
    assert_eq!(view["toxics"], json!([]));
    let addr = listen_addr(&view);
    assert_ne!(addr.port(), 0, "the real port is reported");
    // No waiting: the listener is bound when the 201 arrives.
    let mut client = ws(addr).await;
    round_trip(&mut client, "hi").await;

    let (status, body) = api(
        proxy.admin,
        "POST",
        "/proxies",
        Some(json!({"name": "chat", "listen": "127.0.0.1:0", "upstream": echo.to_string()})),
    )
    .await;
    assert_eq!(status, 409);
    assert!(error_message(409, &body).contains("chat"), "{body}");

    let (status, all) = api(proxy.admin, "GET", "/proxies", None).await;
    assert_eq!(status, 200);
    assert_eq!(all["chat"]["listen"], addr.to_string(), "{all}");
    assert_eq!(all["chat"]["toxics"], json!([]));
    let (status, one) = api(proxy.admin, "GET", "/proxies/chat", None).await;
    assert_eq!((status, one["name"].as_str()), (200, Some("chat")));
    let (status, body) = api(proxy.admin, "GET", "/proxies/nope", None).await;
    assert_eq!(status, 404);
    error_message(404, &body);

    // Toxiproxy accepts a proxy without `listen`: it gets a free loopback port.
    let (status, view) = api(
        proxy.admin,
        "POST",
        "/proxies",
        Some(json!({"name": "nolisten", "upstream": echo.to_string()})),
    )
    .await;
    assert_eq!(status, 201, "{view}");
    let mut client = ws(listen_addr(&view)).await;
    round_trip(&mut client, "hi").await;
    // A disabled proxy is created without a listener.
    let (status, view) = api(
        proxy.admin,
        "POST",
        "/proxies",
        Some(json!({"name": "off", "listen": "127.0.0.1:0", "upstream": echo.to_string(), "enabled": false})),
    )
    .await;
    assert_eq!((status, &view["enabled"]), (201, &json!(false)), "{view}");
}

#[tokio::test]
async fn deleted_proxies_stop_listening_and_end_their_connections() {
    let upstream = RawUpstream::bind().await;
    let (proxy, addr) = TestProxy::with_proxy(&upstream.addr.to_string(), None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    let (status, body) = http(proxy.admin, "DELETE", "/proxies/p", None).await;
    assert_eq!((status, body.as_str()), (204, ""));
    assert_ne!(
        client.end_within(SOON).await,
        EndSeen::StillOpen,
        "client connection ended"
    );
    assert_ne!(
        server.end_within(SOON).await,
        EndSeen::StillOpen,
        "upstream connection ended"
    );
    assert!(refused(addr).await, "listener closed");
    let (status, body) = api(proxy.admin, "GET", "/proxies/p", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api(proxy.admin, "DELETE", "/proxies/p", None).await;
    assert_eq!(status, 404);
    error_message(404, &body);
    let (_, all) = api(proxy.admin, "GET", "/proxies", None).await;
    assert_eq!(all, json!({}));
}

#[tokio::test]
async fn populate_is_idempotent_and_does_not_rebind() {
    let echo = tungstenite_echo().await;
    let proxy = TestProxy::start(None).await;
    let body = json!([
        {"name": "a", "listen": "127.0.0.1:0", "upstream": echo.to_string()},
        {"name": "b", "listen": "127.0.0.1:0", "upstream": echo.to_string(), "enabled": true,
         "toxics": [{"type": "latency", "attributes": {"latency": 1}}]},
    ]);
    let (status, first) = api(proxy.admin, "POST", "/populate", Some(body.clone())).await;
    assert_eq!(status, 201, "{first}");
    let list = first["proxies"].as_array().expect("proxies array");
    assert_eq!(list.len(), 2);
    let a = listen_addr(&list[0]);
    let b = listen_addr(&list[1]);
    assert_eq!(list[1]["toxics"][0]["name"], "latency_downstream");
    let mut live = ws(a).await;
    round_trip(&mut live, "before").await;

    let (status, second) = api(proxy.admin, "POST", "/populate", Some(body.clone())).await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second, first, "same body twice, same result");
    assert_eq!(listen_addr(&second["proxies"][0]), a);
    assert_eq!(listen_addr(&second["proxies"][1]), b);
    round_trip(&mut live, "after").await; // the connection survived: no rebinding
                                          // The `{"proxies": [...]}` form is accepted too.
    let (status, third) = api(
        proxy.admin,
        "POST",
        "/populate",
        Some(json!({"proxies": body})),
    )
    .await;
    assert_eq!((status, &third), (201, &first));
    let (_, all) = api(proxy.admin, "GET", "/proxies", None).await;
    assert_eq!(all.as_object().map(|o| o.len()), Some(2));

    // Changing only `enabled` keeps the address.
    let (status, off) = api(
        proxy.admin,
        "POST",
        "/populate",
        Some(json!([{"name": "a", "listen": a.to_string(), "upstream": echo.to_string(), "enabled": false}])),
    )
    .await;
    assert_eq!(status, 201, "{off}");
    assert_eq!(off["proxies"][0]["enabled"], false);
    assert_eq!(listen_addr(&off["proxies"][0]), a);
    assert!(refused(a).await);
    // A bad entry changes nothing.
    let (status, _) = api(
        proxy.admin,
        "POST",
        "/populate",
        Some(json!([{"name": "c", "upstream": echo.to_string()}, {"name": "d"}])),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(api(proxy.admin, "GET", "/proxies/c", None).await.0, 404);
}

#[tokio::test]
async fn disabling_closes_listener_and_connections_enabling_reopens() {
    let upstream = RawUpstream::bind().await;
    let (proxy, addr) = TestProxy::with_proxy(&upstream.addr.to_string(), None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    let (status, view) = api(
        proxy.admin,
        "POST",
        "/proxies/p",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["enabled"], false);
    assert_ne!(client.end_within(SOON).await, EndSeen::StillOpen);
    assert_ne!(server.end_within(SOON).await, EndSeen::StillOpen);
    assert!(refused(addr).await, "listener closed");
    let (status, view) = api(
        proxy.admin,
        "PATCH",
        "/proxies/p",
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(listen_addr(&view), addr, "same address again");
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    client.send(true, 0, Opcode::Text, b"back").await;
    assert_eq!(&server.recv().await.plain_payload()[..], b"back");
}

#[tokio::test]
async fn reset_reenables_every_proxy_and_removes_every_toxic() {
    let echo = tungstenite_echo().await;
    let proxy = TestProxy::start(None).await;
    let a = proxy.add("a", &echo.to_string()).await;
    let b = proxy.add("b", &echo.to_string()).await;
    proxy
        .toxic(
            "a",
            json!({"type": "latency", "attributes": {"latency": 400}}),
        )
        .await;
    proxy.toxic("b", json!({"type": "message_loss", "stream": "upstream", "attributes": {"probability": 1.0}})).await;
    assert_eq!(
        api(
            proxy.admin,
            "POST",
            "/proxies/b",
            Some(json!({"enabled": false}))
        )
        .await
        .0,
        200
    );
    assert!(refused(b).await);
    let (status, body) = http(proxy.admin, "POST", "/reset", None).await;
    assert_eq!((status, body.as_str()), (204, ""));
    let (_, all) = api(proxy.admin, "GET", "/proxies", None).await;
    for name in ["a", "b"] {
        assert_eq!(all[name]["enabled"], true, "{all}");
        assert_eq!(all[name]["toxics"], json!([]), "{all}");
    }
    for addr in [a, b] {
        let mut client = ws(addr).await;
        assert!(round_trip(&mut client, "clean").await < Duration::from_millis(400));
    }
}

#[tokio::test]
async fn patch_and_deprecated_post_both_update_a_proxy() {
    let first = RawUpstream::bind().await;
    let second = RawUpstream::bind().await;
    let (proxy, addr) = TestProxy::with_proxy(&first.addr.to_string(), None).await;
    let (status, view) = api(
        proxy.admin,
        "PATCH",
        "/proxies/p",
        Some(json!({"upstream": second.addr.to_string()})),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["upstream"], second.addr.to_string());
    let (_client, _server) = raw_pair(addr, &second).await;
    // Toxiproxy's clients use POST (deprecated, still supported), with the
    // whole proxy (name and toxics included).
    let (status, view) = api(
        proxy.admin,
        "POST",
        "/proxies/p",
        Some(json!({"name": "p", "listen": addr.to_string(), "upstream": first.addr.to_string(), "enabled": true, "toxics": []})),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["upstream"], first.addr.to_string());
    assert_eq!(listen_addr(&view), addr);
    let (_client, _server) = raw_pair(addr, &first).await;
    // Asking for "any port" on the same address keeps the bound one.
    let (status, view) = api(
        proxy.admin,
        "PATCH",
        "/proxies/p",
        Some(json!({"listen": "127.0.0.1:0"})),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(listen_addr(&view), addr);
    // Moving the listener to another port rebinds it.
    let port = free_port();
    let (status, view) = api(
        proxy.admin,
        "PATCH",
        "/proxies/p",
        Some(json!({"listen": format!("127.0.0.1:{port}")})),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    let moved = listen_addr(&view);
    assert_eq!(moved.port(), port);
    assert!(refused(addr).await, "old address closed");
    let (_client, _server) = raw_pair(moved, &first).await;
}

#[tokio::test]
async fn toxics_crud_acts_on_live_connections() {
    let echo = tungstenite_echo().await;
    let (proxy, addr) = TestProxy::with_proxy(&echo.to_string(), None).await;
    let mut live = ws(addr).await;
    assert!(round_trip(&mut live, "fast").await < Duration::from_millis(250));
    let (status, list) = api(proxy.admin, "GET", "/proxies/p/toxics", None).await;
    assert_eq!((status, list), (200, json!([])));

    let (status, toxic) = api(
        proxy.admin,
        "POST",
        "/proxies/p/toxics",
        Some(json!({"type": "latency", "attributes": {"latency": 300}})),
    )
    .await;
    assert_eq!(status, 200, "{toxic}");
    assert_eq!(toxic["name"], "latency_downstream");
    assert_eq!(toxic["type"], "latency");
    assert_eq!(toxic["stream"], "downstream");
    assert_eq!(toxic["toxicity"], 1.0);
    assert_eq!(toxic["attributes"], json!({"latency": 300}));
    assert!(
        round_trip(&mut live, "slow").await >= Duration::from_millis(290),
        "applies to a live connection"
    );

    let (status, list) = api(proxy.admin, "GET", "/proxies/p/toxics", None).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(1)));
    let (status, one) = api(
        proxy.admin,
        "GET",
        "/proxies/p/toxics/latency_downstream",
        None,
    )
    .await;
    assert_eq!((status, &one), (200, &toxic));
    let (_, p) = api(proxy.admin, "GET", "/proxies/p", None).await;
    assert_eq!(p["toxics"], json!([toxic]));

    // Toxiproxy's update is POST; attributes are merged.
    let (status, updated) = api(
        proxy.admin,
        "POST",
        "/proxies/p/toxics/latency_downstream",
        Some(json!({"attributes": {"jitter": 10}})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["attributes"], json!({"latency": 300, "jitter": 10}));
    let (status, updated) = api(
        proxy.admin,
        "PATCH",
        "/proxies/p/toxics/latency_downstream",
        Some(json!({"toxicity": 0.5, "attributes": {"latency": 0, "jitter": 0}})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["toxicity"], 0.5);
    assert_eq!(updated["name"], "latency_downstream");
    assert!(round_trip(&mut live, "fast again").await < Duration::from_millis(250));

    let (status, body) = api(
        proxy.admin,
        "POST",
        "/proxies/p/toxics",
        Some(json!({"type": "latency", "attributes": {"latency": 1}})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(error_message(409, &body).contains("latency_downstream"));
    // A named toxic on the other stream.
    let (status, toxic) = api(
        proxy.admin,
        "POST",
        "/proxies/p/toxics",
        Some(json!({"name": "up", "type": "message_loss", "stream": "upstream", "toxicity": 1, "attributes": {"probability": 0}})),
    )
    .await;
    assert_eq!(
        (status, &toxic["stream"]),
        (200, &json!("upstream")),
        "{toxic}"
    );

    let (status, body) = http(
        proxy.admin,
        "DELETE",
        "/proxies/p/toxics/latency_downstream",
        None,
    )
    .await;
    assert_eq!((status, body.as_str()), (204, ""));
    let (status, body) = api(
        proxy.admin,
        "DELETE",
        "/proxies/p/toxics/latency_downstream",
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert!(error_message(404, &body).contains("latency_downstream"));
    let (status, _) = api(
        proxy.admin,
        "GET",
        "/proxies/p/toxics/latency_downstream",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, list) = api(proxy.admin, "GET", "/proxies/p/toxics", None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    round_trip(&mut live, "still here").await;
}

#[tokio::test]
async fn healthz_version_and_metrics() {
    let echo = tungstenite_echo().await;
    let (proxy, _addr) = TestProxy::with_proxy(&echo.to_string(), None).await;
    let (status, body) = api(proxy.admin, "GET", "/healthz", None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, body) = api(proxy.admin, "GET", "/version", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let (status, text) = http(proxy.admin, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("wsfault_connections_active{proxy=\"p\"} 0"),
        "{text}"
    );
    let (status, body) = api(proxy.admin, "GET", "/no/such/thing", None).await;
    assert_eq!(status, 404);
    error_message(404, &body);
    let (status, body) = api(proxy.admin, "PUT", "/proxies", None).await;
    assert_eq!(status, 405);
    error_message(405, &body);
}

#[tokio::test]
async fn connections_are_listed_and_can_be_ended() {
    let upstream = RawUpstream::bind().await;
    let (proxy, addr) = TestProxy::with_proxy(&upstream.addr.to_string(), None).await;
    let (mut client, mut server) = tokio::join!(
        RawWs::connect(addr, "/chat?x=1", &[("Sec-WebSocket-Protocol", "v1, v2")]),
        upstream.accept_with(&[("Sec-WebSocket-Protocol", "v2")])
    );
    client.send(true, 0, Opcode::Text, b"hello").await;
    client.send(true, 0, Opcode::Text, b"hello").await;
    server.recv().await;
    server.recv().await;
    server.send(true, 0, Opcode::Binary, b"world").await;
    client.recv().await;
    let client_addr = client.tcp.local_addr().expect("local addr").to_string();
    eventually("counters of both streams", || async {
        let list = api(proxy.admin, "GET", "/proxies/p/connections", None)
            .await
            .1;
        list[0]["upstream"]["frames"] == 2 && list[0]["downstream"]["frames"] == 1
    })
    .await;
    let list = api(proxy.admin, "GET", "/proxies/p/connections", None)
        .await
        .1;
    let conn = &list[0];
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(conn["id"], 0);
    assert_eq!(conn["client"], client_addr);
    assert_eq!(conn["path"], "/chat?x=1");
    assert_eq!(conn["subprotocol"], "v2");
    assert!(conn["age_ms"].is_u64(), "{conn}");
    assert_eq!(
        conn["upstream"],
        json!({"frames": 2, "bytes": 2 * (2 + 4 + 5)}),
        "masked 5-byte frames"
    );
    assert_eq!(conn["downstream"], json!({"frames": 1, "bytes": 2 + 5}));

    let (status, body) = http(
        proxy.admin,
        "DELETE",
        "/proxies/p/connections/0?mode=close",
        None,
    )
    .await;
    assert_eq!((status, body.as_str()), (204, ""));
    assert_eq!(client.close_code_within(SOON).await, Some(1001));
    assert_eq!(server.close_code_within(SOON).await, Some(1001));
    drop((client, server));
    eventually("the closed connection leaves the list", || async {
        api(proxy.admin, "GET", "/proxies/p/connections", None)
            .await
            .1
            == json!([])
    })
    .await;

    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    let (status, body) = api(
        proxy.admin,
        "DELETE",
        "/proxies/p/connections/1?mode=explode",
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_message(400, &body).contains("close, reset"), "{body}");
    let (status, _) = http(
        proxy.admin,
        "DELETE",
        "/proxies/p/connections/1?mode=reset",
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(client.end_within(SOON).await, EndSeen::Reset);
    assert_eq!(server.end_within(SOON).await, EndSeen::Reset);
    let (status, body) = api(proxy.admin, "DELETE", "/proxies/p/connections/1", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = api(proxy.admin, "GET", "/proxies/nope/connections", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn token_is_required_except_for_healthz_and_metrics() {
    let options = wsfault::admin::AdminOptions {
        token: Some("s3cret".into()),
    };
    let proxy = TestProxy::start_with(None, options).await;
    for (method, path) in [
        ("GET", "/proxies"),
        ("GET", "/version"),
        ("POST", "/reset"),
        ("DELETE", "/proxies/x"),
        ("GET", "/nope"),
    ] {
        let (status, body) = http(proxy.admin, method, path, None).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        let body: Value = serde_json::from_str(&body).expect("json error");
        error_message(401, &body);
        let (status, _) = http_with(
            proxy.admin,
            method,
            path,
            None,
            &[("Authorization", "Bearer wrong")],
        )
        .await;
        assert_eq!(status, 401, "{method} {path} with a wrong token");
        let (status, _) = http_with(
            proxy.admin,
            method,
            path,
            None,
            &[("Authorization", "Basic czNjcmV0")],
        )
        .await;
        assert_eq!(status, 401, "{method} {path} with another scheme");
    }
    let (status, body) = http_with(
        proxy.admin,
        "GET",
        "/proxies",
        None,
        &[("Authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    let (status, _) = http_with(
        proxy.admin,
        "POST",
        "/reset",
        None,
        &[("Authorization", "bearer s3cret")],
    )
    .await;
    assert_eq!(status, 204, "the scheme is case-insensitive");
    assert_eq!(http(proxy.admin, "GET", "/healthz", None).await.0, 200);
    assert_eq!(http(proxy.admin, "GET", "/metrics", None).await.0, 200);
}

#[tokio::test]
async fn cross_site_origins_are_forbidden_same_origin_is_allowed() {
    let proxy = TestProxy::start(None).await;
    for origin in [
        "http://evil.example",
        "https://evil.example:8474",
        "null",
        &format!("http://{}.evil.example", proxy.admin.ip()),
    ] {
        let (status, body) =
            http_with(proxy.admin, "POST", "/reset", None, &[("Origin", origin)]).await;
        assert_eq!(status, 403, "{origin}: {body}");
        let body: Value = serde_json::from_str(&body).expect("json error");
        error_message(403, &body);
    }
    let same = format!("http://{}", proxy.admin);
    let (status, _) = http_with(proxy.admin, "GET", "/proxies", None, &[("Origin", &same)]).await;
    assert_eq!(status, 200, "same origin");
    assert_eq!(
        http(proxy.admin, "GET", "/proxies", None).await.0,
        200,
        "no Origin (curl, clients)"
    );
}

/// Sends a request head and reads the answer without sending the body.
async fn head_only(admin: SocketAddr, head: &str) -> String {
    let mut tcp = TcpStream::connect(admin).await.expect("connect");
    tcp.write_all(head.as_bytes()).await.expect("write head");
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(SOON, tcp.read(&mut out))
        .await
        .expect("answer timeout")
        .expect("read");
    String::from_utf8_lossy(&out[..n]).to_string()
}

#[tokio::test]
async fn bodies_over_one_mib_get_413() {
    let proxy = TestProxy::start(None).await;
    let limit = wsfault::admin::MAX_BODY_BYTES;
    // Declared too large: refused before the body is read.
    let answer = head_only(
        proxy.admin,
        &format!(
            "POST /populate HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            proxy.admin,
            limit + 1
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"status\":413"), "{answer}");
    // Chunked (no length announced): cut at the limit.
    let mut tcp = TcpStream::connect(proxy.admin).await.expect("connect");
    let head = format!(
        "POST /populate HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        proxy.admin
    );
    tcp.write_all(head.as_bytes()).await.expect("head");
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
        for _ in 0..(limit / (64 * 1024) + 4) {
            if wr.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
    });
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(SOON, rd.read(&mut answer))
        .await
        .expect("answer timeout")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    writer.abort();
    // Exactly the limit is fine.
    let body = format!("[]{}", " ".repeat(limit - 2));
    let (status, answer) = http(proxy.admin, "POST", "/populate", Some(&body)).await;
    assert_eq!((status, answer.as_str()), (201, "{\"proxies\":[]}"));
}

#[tokio::test]
async fn a_slow_client_is_cut_after_the_timeout_and_blocks_nobody() {
    let proxy = TestProxy::start(None).await;
    let started = Instant::now();
    let mut slow = TcpStream::connect(proxy.admin).await.expect("connect");
    slow.write_all(b"GET /proxies HTTP/1.1\r\nHost: x\r\nX-Half: ")
        .await
        .expect("half a head");
    let mut silent = TcpStream::connect(proxy.admin).await.expect("connect");
    // Other requests are served meanwhile.
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(http(proxy.admin, "GET", "/version", None).await.0, 200);
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    for (what, tcp) in [("half a head", &mut slow), ("nothing", &mut silent)] {
        let mut sink = Vec::new();
        let cut = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut sink)).await;
        assert!(cut.is_ok(), "a client that sent {what} was never cut");
        let answer = String::from_utf8_lossy(&sink);
        assert!(!answer.contains(" 200 "), "{what}: {answer}");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5),
        "cut after a timeout, not at once ({waited:?})"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_field_and_change_nothing() {
    let echo = tungstenite_echo().await;
    let (proxy, addr) = TestProxy::with_proxy(&echo.to_string(), None).await;
    proxy
        .toxic(
            "p",
            json!({"name": "slow", "type": "latency", "attributes": {"latency": 150}}),
        )
        .await;
    let (_, before) = api(proxy.admin, "GET", "/proxies", None).await;
    let up = echo.to_string();
    let latency = |attrs: Value| json!({"type": "latency", "attributes": attrs}).to_string();
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, String, u16, &[&str])> = vec![
        ("POST", "/proxies", "{".into(), 400, &["bad request body"]),
        ("POST", "/proxies", "[]".into(), 400, &["JSON object"]),
        ("POST", "/proxies", json!({"listen": "127.0.0.1:0", "upstream": up}).to_string(), 400, &["missing required field: name"]),
        ("POST", "/proxies", json!({"name": "q", "listen": "127.0.0.1:0"}).to_string(), 400, &["missing required field: upstream"]),
        ("POST", "/proxies", json!({"name": 5, "upstream": up}).to_string(), 400, &["name=5", "string"]),
        ("POST", "/proxies", json!({"name": "q", "upstream": up, "enabled": "yes"}).to_string(), 400, &["enabled=\"yes\"", "true, false"]),
        ("POST", "/proxies", json!({"name": "q", "upstream": up, "colour": "red"}).to_string(), 400, &["colour", "valid fields are name, listen, upstream"]),
        ("POST", "/proxies", json!({"name": "q", "upstream": "http://x:1"}).to_string(), 400, &["http://x:1", "ws://host:port"]),
        ("POST", "/proxies", json!({"name": "q", "upstream": up, "listen": "nowhere"}).to_string(), 400, &["nowhere", "host:port"]),
        ("POST", "/proxies", json!({"name": "q", "upstream": up, "extensions": "zip"}).to_string(), 400, &["extensions", "strip, pass"]),
        ("POST", "/proxies", json!({"name": "q", "upstream": up, "max_frame_bytes": -1}).to_string(), 400, &["max_frame_bytes=-1"]),
        ("POST", "/proxies", json!({"name": "p", "listen": "127.0.0.1:0", "upstream": up}).to_string(), 409, &["p"]),
        ("POST", "/proxies/p/toxics", json!({"type": "gremlin"}).to_string(), 400, &["gremlin", "latency", "message_loss", "drop_connection"]),
        ("POST", "/proxies/p/toxics", json!({"attributes": {"latency": 1}}).to_string(), 400, &["missing required field: type"]),
        ("POST", "/proxies/p/toxics", latency(json!({"latency": -5})), 400, &["latency=-5", "valid range"]),
        ("POST", "/proxies/p/toxics", latency(json!({"latency": "slow"})), 400, &["latency=\"slow\""]),
        ("POST", "/proxies/p/toxics", latency(json!({})), 400, &["latency", "missing"]),
        ("POST", "/proxies/p/toxics", latency(json!({"latency": 5, "jiter": 5})), 400, &["jiter", "valid attributes are jitter, latency"]),
        ("POST", "/proxies/p/toxics", json!({"type": "timeout", "attributes": {"timeout": -1}}).to_string(), 400, &["timeout=-1"]),
        ("POST", "/proxies/p/toxics", json!({"type": "message_loss", "attributes": {"probability": 1.5}}).to_string(), 400, &["probability=1.5", "0..=1"]),
        ("POST", "/proxies/p/toxics", json!({"type": "latency", "toxicity": 2, "attributes": {"latency": 1}}).to_string(), 400, &["toxicity", "0..=1"]),
        ("POST", "/proxies/p/toxics", json!({"type": "latency", "toxicity": "all", "attributes": {"latency": 1}}).to_string(), 400, &["toxicity=\"all\"", "number"]),
        ("POST", "/proxies/p/toxics", json!({"type": "latency", "stream": "sideways", "attributes": {"latency": 1}}).to_string(), 400, &["sideways", "upstream, downstream"]),
        ("POST", "/proxies/p/toxics", json!({"type": "latency", "atributes": {"latency": 1}}).to_string(), 400, &["atributes", "valid fields are"]),
        ("POST", "/proxies/p/toxics", json!({"type": "drop_connection", "attributes": {"after_messages": 1, "mode": "kaboom"}}).to_string(), 400, &["kaboom", "reset, fin, blackhole"]),
        ("POST", "/proxies/p/toxics", json!({"type": "latency", "attributes": {"latency": 1}, "schedule": {"duration": 10, "period": 5}}).to_string(), 400, &["schedule.duration", "period"]),
        ("POST", "/proxies/p/toxics", json!({"name": "slow", "type": "latency", "attributes": {"latency": 1}}).to_string(), 409, &["slow"]),
        ("POST", "/proxies/nope/toxics", latency(json!({"latency": 1})), 404, &["nope"]),
        ("GET", "/proxies/p/toxics/nope", String::new(), 404, &["nope"]),
        ("POST", "/proxies/p/toxics/nope", json!({"toxicity": 0.5}).to_string(), 404, &["nope"]),
        ("POST", "/proxies/p/toxics/slow", json!({"attributes": {"latency": "soon"}}).to_string(), 400, &["latency=\"soon\""]),
        ("PATCH", "/proxies/p/toxics/slow", json!({"toxicity": -0.1}).to_string(), 400, &["toxicity", "0..=1"]),
        ("PATCH", "/proxies/p/toxics/slow", json!({"stream": "both"}).to_string(), 400, &["both", "upstream, downstream"]),
        ("PATCH", "/proxies/p/toxics/slow", json!({"name": "renamed"}).to_string(), 400, &["name"]),
        ("PATCH", "/proxies/p", json!({"enabled": "no"}).to_string(), 400, &["enabled=\"no\"", "true, false"]),
        ("PATCH", "/proxies/p", json!({"bogus": 1}).to_string(), 400, &["bogus", "valid fields are"]),
        ("PATCH", "/proxies/p", json!({"upstream": "ftp://x"}).to_string(), 400, &["ftp://x"]),
        ("POST", "/proxies/p", "not json".into(), 400, &["bad request body"]),
        ("PATCH", "/proxies/nope", json!({"enabled": true}).to_string(), 404, &["nope"]),
        ("DELETE", "/proxies/nope", String::new(), 404, &["nope"]),
        ("DELETE", "/proxies/p/toxics/nope", String::new(), 404, &["nope"]),
        ("POST", "/populate", json!({"a": 1}).to_string(), 400, &["array"]),
        ("POST", "/populate", json!([{"name": "q"}]).to_string(), 400, &["proxy 1", "upstream"]),
        ("POST", "/populate", json!([{"name": "q", "upstream": up, "toxics": [{"type": "nope"}]}]).to_string(), 400, &["nope", "valid types"]),
        ("DELETE", "/proxies/p/connections/abc", String::new(), 400, &["abc"]),
        ("DELETE", "/proxies/p/connections/999", String::new(), 404, &["999"]),
    ];
    assert!(cases.len() >= 20);
    for (method, path, body, status, needles) in &cases {
        let (got, answer) = http(proxy.admin, method, path, Some(body)).await;
        let answer: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|_| panic!("{method} {path} {body}: not JSON: {answer}"));
        assert_eq!(got, *status, "{method} {path} {body}: {answer}");
        let message = error_message(*status, &answer);
        for needle in *needles {
            assert!(
                message.contains(needle),
                "{method} {path} {body}: {message:?} lacks {needle:?}"
            );
        }
    }
    // Nothing changed, and the proxy still relays with its toxic.
    let (_, after) = api(proxy.admin, "GET", "/proxies", None).await;
    assert_eq!(after, before);
    let mut client = ws(addr).await;
    assert!(round_trip(&mut client, "still relaying").await >= Duration::from_millis(140));
}

#[tokio::test]
async fn the_binary_warns_about_a_non_loopback_admin_without_token() {
    /// Starts `wsfault proxy` and returns its stderr up to the "admin API listening" line.
    fn stderr_until_listening(extra: &[&str]) -> String {
        use std::io::BufRead;
        let admin = format!("0.0.0.0:{}", free_port());
        let mut child = std::process::Command::new(BIN)
            .args(["proxy", "--admin", &admin])
            .args(extra)
            .env_remove("WSFAULT_ADMIN_TOKEN")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn wsfault");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let done = line.contains("admin API listening");
                let _ = tx.send(line);
                if done {
                    break;
                }
            }
        });
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("admin API listening") {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            seen.contains("admin API listening"),
            "never started: {seen}"
        );
        seen
    }
    let warned = stderr_until_listening(&[]);
    assert!(
        warned.contains("WARN") && warned.contains("without --admin-token"),
        "{warned}"
    );
    let quiet = stderr_until_listening(&["--admin-token", "t0ken"]);
    assert!(!quiet.contains("WARN"), "{quiet}");
}

/// One admin call made by a concurrency test: what it asked, what came
/// back, and when (for real-time order between calls).
#[derive(Debug, Clone)]
struct Call {
    /// Toxic index.
    toxic: usize,
    /// The `latency` an update set; `None` for a remove.
    latency: Option<u64>,
    status: u16,
    body: Value,
    start: Instant,
    end: Instant,
}

/// Runs `calls` (method, path, body) at once against the admin API.
async fn concurrently(
    admin: SocketAddr,
    calls: Vec<(&'static str, String, Option<Value>)>,
) -> Vec<(u16, Value, Instant, Instant)> {
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|(method, path, body)| {
            tokio::spawn(async move {
                let start = Instant::now();
                let (status, answer) = api(admin, method, &path, body).await;
                (status, answer, start, Instant::now())
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.expect("call task"));
    }
    out
}

fn toxic_names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("toxic list: {list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_with_distinct_names_all_land() {
    let proxy = TestProxy::start(None).await;
    proxy.add("default", "127.0.0.1:9").await;
    for round in 0..5 {
        let calls = (0..200)
            .map(|i| {
                let body = json!({"name": format!("t{i}"), "type": "latency", "attributes": {"latency": i}});
                ("POST", "/proxies/default/toxics".to_string(), Some(body))
            })
            .collect();
        let answers = concurrently(proxy.admin, calls).await;
        for (i, (status, body, _, _)) in answers.iter().enumerate() {
            assert_eq!(*status, 200, "round {round}, add t{i}: {body}");
            assert_eq!(body["name"], format!("t{i}"), "round {round}: {body}");
            assert_eq!(body["attributes"], json!({"latency": i}), "{body}");
        }
        let (status, list) = api(proxy.admin, "GET", "/proxies/default/toxics", None).await;
        assert_eq!(status, 200);
        let mut want: Vec<String> = (0..200).map(|i| format!("t{i}")).collect();
        want.sort();
        let names = toxic_names(&list);
        assert_eq!(
            names.len(),
            200,
            "round {round}: every answered add is there"
        );
        assert_eq!(names, want, "round {round}");
        let (status, _) = api(proxy.admin, "POST", "/reset", None).await;
        assert_eq!(status, 204);
        let (_, list) = api(proxy.admin, "GET", "/proxies/default/toxics", None).await;
        assert_eq!(list, json!([]), "round {round}: reset removes them all");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_of_one_name_give_one_200_and_409s() {
    let proxy = TestProxy::start(None).await;
    proxy.add("default", "127.0.0.1:9").await;
    let calls = (0..50)
        .map(|i| {
            let body = json!({"name": "same", "type": "latency", "attributes": {"latency": i}});
            ("POST", "/proxies/default/toxics".to_string(), Some(body))
        })
        .collect();
    let answers = concurrently(proxy.admin, calls).await;
    let won: Vec<usize> = (0..50).filter(|&i| answers[i].0 == 200).collect();
    assert_eq!(won.len(), 1, "exactly one add wins: {answers:?}");
    for (status, body, _, _) in &answers {
        assert!(*status == 200 || *status == 409, "{status} {body}");
        if *status == 409 {
            assert!(error_message(409, body).contains("same"), "{body}");
        }
    }
    let (_, list) = api(proxy.admin, "GET", "/proxies/default/toxics", None).await;
    assert_eq!(toxic_names(&list), vec!["same".to_string()]);
    // What is there is what the winner was told.
    assert_eq!(list[0], answers[won[0]].1, "{list}");
}

/// Updates (distinct `latency` values) and removes race on ten toxics, with
/// readers listing them meanwhile. Every answer must fit one serial order:
/// an update answered 200 shows its own value; no update that starts after
/// a remove's 204 finds the toxic; a 404 comes only after the remove began;
/// what is left is the value of a successful update that no later
/// successful update (in real time) overwrote; a listing shows only values
/// some call wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_and_removes_fit_a_serial_order() {
    const TOXICS: usize = 10;
    const UPDATES: usize = 12;
    let proxy = TestProxy::start(None).await;
    proxy.add("default", "127.0.0.1:9").await;
    for round in 0..3 {
        for t in 0..TOXICS {
            let (status, body) = api(
                proxy.admin,
                "POST",
                "/proxies/default/toxics",
                Some(json!({"name": format!("t{t}"), "type": "latency", "attributes": {"latency": 1}})),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
        // Even toxics get one remove among their updates, odd ones none.
        let mut plan: Vec<(usize, Option<u64>)> = Vec::new();
        for k in 0..UPDATES {
            for t in 0..TOXICS {
                plan.push((t, Some(1000 + (t * 100 + k) as u64)));
                if t % 2 == 0 && k == UPDATES / 2 {
                    plan.push((t, None));
                }
            }
        }
        let mut calls: Vec<(&'static str, String, Option<Value>)> = plan
            .iter()
            .map(|&(t, latency)| match latency {
                Some(v) => (
                    "PATCH",
                    format!("/proxies/default/toxics/t{t}"),
                    Some(json!({"attributes": {"latency": v}})),
                ),
                None => ("DELETE", format!("/proxies/default/toxics/t{t}"), None),
            })
            .collect();
        let readers = 20;
        for _ in 0..readers {
            calls.push(("GET", "/proxies/default/toxics".to_string(), None));
        }
        let answers = concurrently(proxy.admin, calls).await;
        let (ops, reads) = answers.split_at(plan.len());
        let ops: Vec<Call> = plan
            .iter()
            .zip(ops)
            .map(|(&(toxic, latency), (status, body, start, end))| Call {
                toxic,
                latency,
                status: *status,
                body: body.clone(),
                start: *start,
                end: *end,
            })
            .collect();
        let written =
            |t: usize, v: u64| v == 1 || ops.iter().any(|c| c.toxic == t && c.latency == Some(v));
        for (status, list, _, _) in reads {
            assert_eq!(*status, 200, "{list}");
            for toxic in list.as_array().expect("list") {
                let name = toxic["name"].as_str().expect("name");
                let t: usize = name[1..].parse().expect("index");
                let v = toxic["attributes"]["latency"].as_u64().expect("latency");
                assert!(written(t, v), "round {round}: a listing shows {toxic}");
            }
        }
        let (_, list) = api(proxy.admin, "GET", "/proxies/default/toxics", None).await;
        for t in 0..TOXICS {
            let mine: Vec<&Call> = ops.iter().filter(|c| c.toxic == t).collect();
            for c in &mine {
                match (c.latency, c.status) {
                    (Some(v), 200) => {
                        assert_eq!(c.body["name"], format!("t{t}"), "{c:?}");
                        assert_eq!(c.body["attributes"]["latency"], v, "round {round}: {c:?}");
                    }
                    (Some(_), 404) => {}
                    (None, 204) => {}
                    _ => panic!("round {round}: unexpected answer {c:?}"),
                }
            }
            let remove = mine.iter().find(|c| c.latency.is_none());
            let left = list
                .as_array()
                .expect("list")
                .iter()
                .find(|x| x["name"] == format!("t{t}"));
            match (remove, left) {
                (Some(remove), None) => {
                    assert_eq!(remove.status, 204, "{remove:?}");
                    for c in &mine {
                        if c.start > remove.end {
                            assert_eq!(
                                c.status, 404,
                                "round {round}: update after the remove's answer: {c:?}"
                            );
                        }
                        if c.status == 404 {
                            assert!(
                                c.end >= remove.start,
                                "round {round}: 404 before the remove began: {c:?}"
                            );
                        }
                    }
                }
                (None, Some(left)) => {
                    let v = left["attributes"]["latency"].as_u64().expect("latency");
                    let Some(last) = mine
                        .iter()
                        .find(|c| c.status == 200 && c.latency == Some(v))
                    else {
                        panic!("round {round}: t{t} holds {v}, which no successful update set");
                    };
                    for c in &mine {
                        assert!(
                            !(c.status == 200 && c.start > last.end),
                            "round {round}: t{t} holds {v}, but {c:?} answered 200 after it"
                        );
                    }
                }
                (remove, left) => {
                    panic!("round {round}: t{t}: remove {remove:?}, left {left:?}")
                }
            }
        }
        let (status, _) = api(proxy.admin, "POST", "/reset", None).await;
        assert_eq!(status, 204);
    }
}
