//! Pass-through: with no toxics the proxy is invisible (docs/reference.md#wsfault-proxy).

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use wsfault::frame::Opcode;

#[tokio::test]
async fn tungstenite_client_round_trips_text_binary_and_ping() {
    let echo = tungstenite_echo().await;
    let (_proxy, addr) = TestProxy::with_proxy(&echo.to_string(), None).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat?room=1"))
        .await
        .expect("connect through proxy");
    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("echo").expect("frame"),
        Message::text("hello")
    );
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send");
    assert_eq!(
        ws.next().await.expect("echo").expect("frame"),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.send(Message::Ping(b"p1".to_vec().into()))
        .await
        .expect("ping");
    assert_eq!(
        ws.next().await.expect("pong").expect("frame"),
        Message::Pong(b"p1".to_vec().into())
    );
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn frames_are_relayed_verbatim_both_ways() {
    let upstream = RawUpstream::bind().await;
    let (_proxy, addr) = TestProxy::with_proxy(&upstream.addr.to_string(), None).await;
    let accept = tokio::spawn(async move { upstream.accept().await });
    let mut client = RawWs::connect(addr, "/", &[]).await;
    let mut server = accept.await.expect("accept");

    // Three fragments with RSV bits and an interleaved ping arrive as sent.
    client.send(false, 0b010, Opcode::Text, b"one ").await;
    client.send(true, 0, Opcode::Ping, b"ping-payload").await;
    client.send(false, 0, Opcode::Continuation, b"two ").await;
    client
        .send(true, 0b001, Opcode::Continuation, b"three")
        .await;
    let expected = [
        (false, 0b010, Opcode::Text, &b"one "[..]),
        (true, 0, Opcode::Ping, &b"ping-payload"[..]),
        (false, 0, Opcode::Continuation, &b"two "[..]),
        (true, 0b001, Opcode::Continuation, &b"three"[..]),
    ];
    for (fin, rsv, opcode, payload) in expected {
        let f = server.recv().await;
        assert_eq!(
            (f.header.fin, f.header.rsv, f.header.opcode),
            (fin, rsv, opcode)
        );
        assert_eq!(
            f.header.mask,
            Some([0x11, 0x22, 0x33, 0x44]),
            "client mask kept"
        );
        assert_eq!(&f.plain_payload()[..], payload);
    }
    // No pong is invented by the proxy: the server decides.
    server.send(true, 0, Opcode::Pong, b"ping-payload").await;
    server.send(true, 0, Opcode::Binary, &[1, 2, 3]).await;
    let pong = client.recv().await;
    assert_eq!(pong.header.opcode, Opcode::Pong);
    let data = client.recv().await;
    assert_eq!(
        (data.header.opcode, &data.payload[..]),
        (Opcode::Binary, &[1u8, 2, 3][..])
    );
    assert_eq!(data.header.mask, None);

    // Close code and reason are kept.
    client
        .send_frame(&wsfault::frame::Frame::close(
            4321,
            "custom reason",
            Some([1, 2, 3, 4]),
        ))
        .await;
    let close = server.recv().await;
    assert_eq!(close.close_code(), 4321);
    assert_eq!(&close.plain_payload()[2..], b"custom reason");
    server
        .send_frame(&wsfault::frame::Frame::close(4321, "bye", None))
        .await;
    assert_eq!(client.recv().await.close_code(), 4321);
    // The server ends TCP; the client sees FIN.
    server.tcp.shutdown().await.expect("shutdown");
    drop(server);
    assert_eq!(client.end_within(SOON).await, EndSeen::Fin);
}

#[tokio::test]
async fn upgrade_request_is_forwarded_with_headers_and_key() {
    let upstream = RawUpstream::bind().await;
    let (_proxy, addr) =
        TestProxy::with_proxy(&format!("ws://{}/prefix/", upstream.addr), None).await;
    let accept = tokio::spawn(async move {
        upstream
            .accept_with(&[("Sec-WebSocket-Protocol", "chat.v2"), ("X-Upstream", "yes")])
            .await
    });
    let client = RawWs::connect(
        addr,
        "/chat?x=1",
        &[
            ("Origin", "http://example.test"),
            ("Cookie", "session=abc"),
            ("Authorization", "Bearer t0k"),
            ("Sec-WebSocket-Protocol", "chat.v2, chat.v1"),
            (
                "Sec-WebSocket-Extensions",
                "permessage-deflate; client_max_window_bits",
            ),
            ("X-Custom", "value-1"),
            ("X-Forwarded-For", "10.0.0.1"),
        ],
    )
    .await;
    let server = accept.await.expect("accept");
    let head = &server.head;
    assert!(head.starts_with("GET /prefix/chat?x=1 HTTP/1.1"), "{head}");
    assert_eq!(
        header(head, "host"),
        Some(addr.to_string().as_str()),
        "Host unchanged"
    );
    assert_eq!(
        header(head, "sec-websocket-key"),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
    assert_eq!(header(head, "origin"), Some("http://example.test"));
    assert_eq!(header(head, "cookie"), Some("session=abc"));
    assert_eq!(header(head, "authorization"), Some("Bearer t0k"));
    assert_eq!(
        header(head, "sec-websocket-protocol"),
        Some("chat.v2, chat.v1")
    );
    assert_eq!(header(head, "x-custom"), Some("value-1"));
    assert_eq!(header(head, "x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
    assert_eq!(
        header(head, "sec-websocket-extensions"),
        None,
        "deflate stripped by default"
    );
    // The upstream's answer comes back as it is: accept key valid for the client.
    assert_eq!(
        header(&client.head, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(
        header(&client.head, "sec-websocket-protocol"),
        Some("chat.v2")
    );
    assert_eq!(header(&client.head, "x-upstream"), Some("yes"));
}

#[tokio::test]
async fn extensions_pass_and_host_rewrite() {
    let upstream = RawUpstream::bind().await;
    let proxy = TestProxy::start(None).await;
    let mut spec = wsfault::config::ProxySpec::new("p", "127.0.0.1:0", &upstream.addr.to_string());
    spec.extensions = wsfault::config::ExtensionsMode::Pass;
    spec.host = wsfault::config::HostMode::Upstream;
    let addr = proxy.add_spec(spec).await;
    let up_addr = upstream.addr;
    let accept = tokio::spawn(async move { upstream.accept().await });
    let _client = RawWs::connect(
        addr,
        "/",
        &[("Sec-WebSocket-Extensions", "permessage-deflate")],
    )
    .await;
    let server = accept.await.expect("accept");
    assert_eq!(
        header(&server.head, "sec-websocket-extensions"),
        Some("permessage-deflate")
    );
    assert_eq!(
        header(&server.head, "host"),
        Some(up_addr.to_string().as_str())
    );
}

#[tokio::test]
async fn non_101_answers_and_unreachable_upstreams() {
    let upstream = RawUpstream::bind().await;
    let (proxy, addr) = TestProxy::with_proxy(&upstream.addr.to_string(), None).await;
    let answer = tokio::spawn(async move {
        upstream
            .accept_http("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 11\r\n\r\nwho are you")
            .await
    });
    let (client, status) = RawWs::try_connect(addr, "/", &[]).await;
    answer.await.expect("answered");
    assert_eq!(status, 401);
    assert_eq!(header(&client.head, "www-authenticate"), Some("Bearer"));

    // Nothing listens there: 502 with a body naming the upstream, proxy keeps running.
    let dead_addr = std::net::SocketAddr::from(([127, 0, 0, 1], closed_port()));
    let addr2 = proxy.add("dead", &dead_addr.to_string()).await;
    let (status, body) = http_with(
        addr2,
        "GET",
        "/",
        None,
        &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
    )
    .await;
    assert_eq!(status, 502);
    assert!(body.contains(&dead_addr.to_string()), "{body}");
    assert_eq!(
        proxy
            .metric("wsfault_handshake_failures_total{proxy=\"dead\"")
            .await,
        1.0
    );
}

#[tokio::test]
async fn plain_http_is_reverse_proxied() {
    let Some(py) = PyEcho::start().await else {
        return;
    };
    let (_proxy, addr) = TestProxy::with_proxy(&py.addr.to_string(), None).await;
    let (status, body) = http(addr, "GET", "/health", None).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn abrupt_ends_are_mirrored() {
    let upstream = RawUpstream::bind().await;
    let (_proxy, addr) = TestProxy::with_proxy(&upstream.addr.to_string(), None).await;
    // FIN without a close frame becomes FIN.
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    client.tcp.shutdown().await.expect("shutdown");
    assert_eq!(server.end_within(SOON).await, EndSeen::Fin);
    drop(client);
    // RST becomes RST.
    let (client, mut server) = raw_pair(addr, &upstream).await;
    client.tcp.set_zero_linger().expect("linger");
    drop(client);
    assert_eq!(server.end_within(SOON).await, EndSeen::Reset);
}

#[tokio::test]
async fn malformed_and_oversized_frames_close_only_their_connection() {
    let upstream = RawUpstream::bind().await;
    let proxy = TestProxy::start(None).await;
    let mut spec = wsfault::config::ProxySpec::new("p", "127.0.0.1:0", &upstream.addr.to_string());
    spec.max_frame_bytes = 1000;
    spec.max_message_bytes = 1500;
    let addr = proxy.add_spec(spec).await;

    let (mut bystander, mut bystander_server) = raw_pair(addr, &upstream).await;

    // Reserved opcode 0x3: 1002 to the sender, 1001 to the peer.
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    client.send_raw(&[0x83, 0x80, 1, 2, 3, 4]).await;
    assert_eq!(client.close_code_within(SOON).await, Some(1002));
    assert_eq!(server.close_code_within(SOON).await, Some(1001));
    assert_eq!(
        proxy
            .metric("wsfault_closes_total{by=\"proxy\",code=\"1002\"")
            .await,
        1.0
    );

    // Unmasked client frame: 1002.
    let (mut client, _server) = raw_pair(addr, &upstream).await;
    client.masks = false;
    client.send(true, 0, Opcode::Text, b"no mask").await;
    assert_eq!(client.close_code_within(SOON).await, Some(1002));

    // Frame over max_frame_bytes: 1009 to the sender, 1001 to the other side.
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    client.send(true, 0, Opcode::Binary, &[0u8; 1001]).await;
    assert_eq!(client.close_code_within(SOON).await, Some(1009));
    assert_eq!(server.close_code_within(SOON).await, Some(1001));

    // Message over max_message_bytes across fragments: 1009.
    let (mut client, _server) = raw_pair(addr, &upstream).await;
    client.send(false, 0, Opcode::Binary, &[0u8; 900]).await;
    client
        .send(true, 0, Opcode::Continuation, &[0u8; 900])
        .await;
    assert_eq!(client.close_code_within(SOON).await, Some(1009));

    // The bystander is unaffected.
    bystander.send(true, 0, Opcode::Text, b"still here").await;
    assert_eq!(
        &bystander_server.recv().await.plain_payload()[..],
        b"still here"
    );
}

#[tokio::test]
async fn slow_reader_backpressures_the_writer() {
    let upstream = RawUpstream::bind().await;
    let (_proxy, addr) = TestProxy::with_proxy(&upstream.addr.to_string(), None).await;
    let (mut client, _server) = raw_pair(addr, &upstream).await; // never reads
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0usize;
    let frame = wsfault::frame::Frame::build(true, 0, Opcode::Binary, &chunk, Some([1, 2, 3, 4]));
    let mut wire = bytes::BytesMut::new();
    frame.encode(&mut wire);
    // Writes must block once the kernel buffers and the proxy's bounded buffer fill.
    loop {
        match tokio::time::timeout(Duration::from_millis(500), client.tcp.write_all(&wire)).await {
            Ok(Ok(())) => sent += wire.len(),
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => break,
        }
        assert!(
            sent < 256 * 1024 * 1024,
            "proxy never pushed back after {sent} bytes"
        );
    }
    assert!(sent > 0);
}

#[tokio::test]
async fn a_client_we_did_not_write_works_through_the_proxy() {
    let Some(python) = python() else { return };
    let echo = tungstenite_echo().await;
    let (_proxy, addr) = TestProxy::with_proxy(&echo.to_string(), None).await;
    let script = format!(
        r#"
import asyncio
from websockets.asyncio.client import connect
async def main():
    async with connect("ws://{addr}/py") as ws:
        for i in range(100):
            await ws.send(f"msg {{i}}")
            assert await ws.recv() == f"msg {{i}}"
        await ws.send(b"\x00\xff")
        assert await ws.recv() == b"\x00\xff"
        pong = await ws.ping(b"hb")
        await asyncio.wait_for(pong, 5)
    print("ok")
asyncio.run(main())
"#
    );
    let out = tokio::process::Command::new(python)
        .args(["-c", &script])
        .output()
        .await
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[tokio::test]
async fn wss_upstreams_are_verified_and_relayed() {
    let Some(openssl) = openssl() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let made = std::process::Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl req");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let Some(server) = PyEcho::start_with(&[
        "--tls",
        cert.to_str().expect("utf8"),
        key.to_str().expect("utf8"),
    ])
    .await
    else {
        return;
    };
    let upstream = format!("wss://localhost:{}/", server.addr.port());
    for (trusted, expect_ok) in [(true, true), (false, false)] {
        let admin: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut cmd = std::process::Command::new(BIN);
        cmd.args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
            "--admin",
            &admin.to_string(),
        ])
        .stderr(std::process::Stdio::null());
        if trusted {
            cmd.env("SSL_CERT_FILE", &cert);
        } else {
            cmd.env_remove("SSL_CERT_FILE");
        }
        let child = cmd.spawn().expect("spawn proxy");
        let _guard = KillOnDrop(child);
        wait_listening(admin).await;
        let (_, body) = http(admin, "GET", "/proxies/default", None).await;
        let view: serde_json::Value = serde_json::from_str(&body).expect("json");
        let listen = view["listen"].as_str().expect("listen").to_string();
        let result = tokio_tungstenite::connect_async(format!("ws://{listen}/tls")).await;
        if expect_ok {
            let (mut ws, _) = result.expect("connect through the wss upstream");
            ws.send(Message::text("over tls")).await.expect("send");
            assert_eq!(
                ws.next().await.expect("echo").expect("frame"),
                Message::text("over tls")
            );
        } else {
            let err = result.expect_err("an untrusted certificate must fail");
            assert!(err.to_string().contains("502"), "{err}");
        }
    }
}
