//! Faults that understand the application (issue 12; SPEC §12–§14), end to
//! end through the real `wsfault proxy` binary: services and clients nobody
//! here wrote (python-socketio, strawberry-graphql with gql, Python
//! `websockets`), raw-frame peers speaking STOMP 1.2, the SignalR JSON hub
//! protocol and the Phoenix 2.0 serializer, and `wsfault load` against
//! `wsfault echo`. Each test asserts exact outcomes: which messages were
//! lost, what the client library said and why, how many actions the proxy
//! counted, what the admin API answered.
//!
//! What the libraries really do (python-socketio 5.18 / python-engineio
//! 4.15, checked against their source and by running them):
//! * The Engine.IO server sends its next PING only after the PONG of the
//!   previous one, so a session whose PINGs are all lost gets exactly one.
//! * The client restarts its read timeout (pingInterval + pingTimeout) on any
//!   packet, not only a PING: while data flows it never times out by itself;
//!   the server's ping timeout fires instead (reason "ping timeout").
//! * The client has only three disconnect reasons; its own read timeout and
//!   the server closing the WebSocket are both "transport error" (its log
//!   tells them apart: "Server has stopped communicating, aborting").
//! * When the client ends a session itself, the server's reason is
//!   "transport close".

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use wsfault::frame::{Frame, Opcode};

// ---------------------------------------------------------------------------
// Helpers

/// `POST /proxies/app/toxics`; panics unless 200.
fn add_toxic(proxy: &ProxyProc, toxic: Value) {
    let (status, body) = proxy.api("POST", "/proxies/app/toxics", Some(&toxic.to_string()));
    assert_eq!(status, 200, "adding {toxic}: {body}");
}

/// `wsfault_toxic_actions_total` of one toxic of proxy `app`.
fn actions_in(metrics: &str, toxic: &str) -> u64 {
    metric_sum(
        metrics,
        "wsfault_toxic_actions_total",
        &[("proxy", "app"), ("toxic", toxic)],
    ) as u64
}

/// `wsfault_messages_total` of one stream of proxy `app` (every kind).
fn messages_in(metrics: &str, stream: &str) -> u64 {
    metric_sum(
        metrics,
        "wsfault_messages_total",
        &[("proxy", "app"), ("stream", stream)],
    ) as u64
}

/// The live connections of proxy `app`.
fn connections(proxy: &ProxyProc) -> Vec<Value> {
    let (status, body) = proxy.api("GET", "/proxies/app/connections", None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_else(|| panic!("not a JSON array: {body}"))
}

/// Polls `/connections` while `client` runs; the `"protocol"` of the first
/// connection seen (`None` if the client ended first).
fn protocol_while_running(proxy: &ProxyProc, client: &mut PyProc) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.running() && Instant::now() < deadline {
        if let Some(first) = connections(proxy).first() {
            return first["protocol"].as_str().map(str::to_string);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The one line named `name`; panics when there are none or several.
fn only<'a>(events: &'a [Value], name: &str, ctx: &dyn Fn() -> String) -> &'a Value {
    let found: Vec<&Value> = events.iter().filter(|e| e["event"] == name).collect();
    assert_eq!(found.len(), 1, "exactly one {name:?} line\n{}", ctx());
    found[0]
}

/// `wsfault proxy` in front of `upstream`, started off the async runtime's
/// worker, with `toxics` added through the admin API.
fn proxy_with(upstream: SocketAddr, toxics: &[Value]) -> ProxyProc {
    tokio::task::block_in_place(|| proxy_at(upstream, toxics))
}

/// `wsfault proxy --seed 12` in front of `upstream`, with `toxics` added
/// through the admin API.
fn proxy_at(upstream: SocketAddr, toxics: &[Value]) -> ProxyProc {
    let proxy = ProxyProc::start(&upstream.to_string(), &["--seed", "12"]);
    for toxic in toxics {
        add_toxic(&proxy, toxic.clone());
    }
    proxy
}

/// A `message_loss` toxic named `name` on `stream` that loses every
/// message `matcher` selects.
fn lose(name: &str, stream: &str, matcher: Value) -> Value {
    json!({"name": name, "type": "message_loss", "stream": stream,
           "attributes": {"probability": 1}, "match": matcher})
}

/// The client's output, then the server's and the proxy's, for a failure message.
fn story(client: &PyProc, server: &PyService, proxy: &ProxyProc) -> String {
    format!(
        "{}\n--- server\n{}\n--- proxy\n{}",
        client.both(),
        server.proc.both(),
        proxy.stderr()
    )
}

/// `GET /metrics` from async code.
async fn metrics_async(proxy: &ProxyProc) -> String {
    http(proxy.admin, "GET", "/metrics", None).await.1
}

/// The `"protocol"` of every live connection of proxy `app`, from async code.
async fn protocols_async(proxy: &ProxyProc) -> Vec<String> {
    let (status, list) = api(proxy.admin, "GET", "/proxies/app/connections", None).await;
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|c| c["protocol"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Connects a raw client through the proxy at `path` with `request` headers
/// and accepts it upstream, answering with `response` headers.
async fn raw_connect(
    proxy: &ProxyProc,
    upstream: &RawUpstream,
    path: &str,
    request: &[(&str, &str)],
    response: &[(&str, &str)],
) -> (RawWs, RawWs) {
    tokio::join!(
        RawWs::connect(proxy.listen, path, request),
        upstream.accept_with(response)
    )
}

/// Sends one single-frame text message.
async fn send_text(ws: &mut RawWs, text: &str) {
    ws.send(true, 0, Opcode::Text, text.as_bytes()).await;
}

/// Sends each text as its own single-frame message.
async fn send_texts(ws: &mut RawWs, texts: &[&str]) {
    for text in texts {
        send_text(ws, text).await;
    }
}

/// Receives single-frame text messages (skipping WebSocket pings and
/// pongs) up to and including `last`, in order; then checks that nothing
/// else arrives for 300 ms.
async fn texts_until(ws: &mut RawWs, last: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let frame = ws
            .recv_within(SOON)
            .await
            .unwrap_or_else(|| panic!("no {last:?} within {SOON:?}; got {got:?}"));
        match frame.header.opcode {
            Opcode::Ping | Opcode::Pong => continue,
            Opcode::Text => {}
            other => panic!("unexpected {other:?} frame; got so far {got:?}"),
        }
        assert!(frame.header.fin, "a fragmented message; got so far {got:?}");
        let text = String::from_utf8(frame.plain_payload().to_vec()).expect("UTF-8 text");
        let done = text == last;
        got.push(text);
        if done {
            break;
        }
    }
    if let Some(extra) = ws.recv_within(Duration::from_millis(300)).await {
        panic!(
            "unexpected frame after {last:?}: {:?} {:?}",
            extra.header.opcode,
            String::from_utf8_lossy(&extra.plain_payload())
        );
    }
    got
}

/// A frame as (opcode, fin, plain payload), for exact sequence comparisons.
fn shape(frame: &Frame) -> (&'static str, bool, Vec<u8>) {
    (
        frame.header.opcode.label(),
        frame.header.fin,
        frame.plain_payload().to_vec(),
    )
}

fn text_frame(fin: bool, payload: &str) -> (&'static str, bool, Vec<u8>) {
    ("text", fin, payload.as_bytes().to_vec())
}

fn cont_frame(fin: bool, payload: &[u8]) -> (&'static str, bool, Vec<u8>) {
    ("continuation", fin, payload.to_vec())
}

/// Frames (every opcode) until one whose payload is `last` with FIN.
async fn frames_until(ws: &mut RawWs, last: &[u8]) -> Vec<Frame> {
    let mut got = Vec::new();
    loop {
        let frame = ws.recv_within(SOON).await.unwrap_or_else(|| {
            panic!(
                "stream ended before {:?}; got {:?}",
                String::from_utf8_lossy(last),
                got.iter().map(shape).collect::<Vec<_>>()
            )
        });
        let done = frame.header.fin && frame.plain_payload()[..] == *last;
        got.push(frame);
        if done {
            return got;
        }
    }
}

/// Checks the RFC 6455 frame sequence of `frames`: a continuation only
/// inside a fragmented message, a new data frame only outside one.
fn assert_well_formed_sequence(frames: &[Frame]) {
    let mut inside = false;
    for (i, frame) in frames.iter().enumerate() {
        match frame.header.opcode {
            Opcode::Ping | Opcode::Pong | Opcode::Close => {}
            Opcode::Continuation => {
                assert!(inside, "frame {i}: a continuation outside a message");
                inside = !frame.header.fin;
            }
            Opcode::Text | Opcode::Binary => {
                assert!(!inside, "frame {i}: a new message inside a fragmented one");
                inside = !frame.header.fin;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Socket.IO (python-socketio server under uvicorn, python-socketio client)

/// The Engine.IO PINGs (`2`) are lost downstream while ticks and chats
/// flow: the client never sees a PING, never answers with a PONG, and the
/// SERVER ends the session with "ping timeout" (the client restarts its own
/// read timeout on every packet). Every message the server sent except the
/// one PING reached the client, up to the disconnect.
#[test]
fn socketio_pings_lost_while_data_flows_the_server_times_out_and_data_arrives_until_then() {
    let Some(server) = socketio_server(PINGS_1S_TICKS_100MS) else {
        return;
    };
    let proxy = proxy_at(
        server.addr,
        &[lose(
            "no-pings",
            "downstream",
            json!({"message": {"kind": "heartbeat"}}),
        )],
    );
    let url = format!("http://{}", proxy.listen);
    let Some(mut client) = socketio_client(
        &url,
        &[
            "--room",
            "r1",
            "--count",
            "200",
            "--rate",
            "20",
            "--duration",
            "20",
        ],
    ) else {
        return;
    };
    let protocol = protocol_while_running(&proxy, &mut client);
    let status = client.wait(Duration::from_secs(30));
    let ctx = || story(&client, &server, &proxy);
    assert!(status.is_some_and(|s| s.success()), "{}", ctx());
    assert_eq!(protocol.as_deref(), Some("socketio"), "{}", ctx());

    let events = client.events();
    // The client: no PING ever arrived, and its only disconnect is the
    // WebSocket ending under it ("transport error").
    let disconnect = only(&events, "disconnect", &ctx);
    assert_eq!(disconnect["reason"], "transport error", "{}", ctx());
    assert_eq!(disconnect["pings"], 0, "{}", ctx());
    assert_eq!(disconnect["last_ping_ago_ms"], Value::Null, "{}", ctx());
    // The server: its own ping timeout ended the session.
    let server_events = server.events();
    assert_eq!(
        field_of(&server_events, &["disconnect"], "reason"),
        vec![json!("ping timeout")],
        "{}",
        ctx()
    );
    // Data flowed: the room's seq arrived without a gap, the ticks kept
    // coming after the lost PING (sent 1 s in, ticks every 100 ms).
    let seqs = as_u64s(field_of(&events, &["chat", "tick"], "seq"));
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<u64>>(),
        "{}",
        ctx()
    );
    let ticks = count_of(&events, "tick");
    assert!(
        ticks >= 12,
        "ticks stopped with the PING: {ticks}\n{}",
        ctx()
    );
    let chats = count_of(&events, "chat");
    let acks = count_of(&events, "ack");
    let joined = count_of(&events, "joined");
    assert_eq!(joined, 1, "{}", ctx());
    assert!(chats > 0 && acks > 0, "{}", ctx());

    // The proxy dropped exactly the one PING the server sent (python-engineio
    // sends the next one only after a PONG) and relayed every other message:
    // the Engine.IO open packet, the Socket.IO connect, the join ack, every
    // chat, ack and tick the client logged.
    let metrics = proxy.metrics();
    let lost = actions_in(&metrics, "no-pings");
    assert_eq!(lost, 1, "{}\n{metrics}", ctx());
    assert_eq!(
        messages_in(&metrics, "downstream"),
        2 + joined + chats + acks + ticks + lost,
        "downstream messages read = relayed to the client + lost\n{}\n{metrics}",
        ctx()
    );
}

/// PINGs lost and no data after the join: now nothing at all reaches the
/// client, so ITS OWN read timeout fires, pingInterval + pingTimeout after
/// the last packet. python-socketio reports it as "transport error" (it has
/// no ping-timeout reason); python-engineio's log says "Server has stopped
/// communicating, aborting". The server's ping timeout closes the WebSocket
/// at the same instant, so the server's close frame is held 1.5 s by a
/// second toxic (`latency` on `kind: close`) to let the client's timer fire
/// first, deterministically.
#[test]
fn socketio_pings_lost_and_no_data_the_clients_own_read_timeout_fires_as_transport_error() {
    let Some(server) = socketio_server(&["--ping-interval", "1", "--ping-timeout", "1"]) else {
        return;
    };
    let proxy = proxy_at(
        server.addr,
        &[
            lose(
                "no-pings",
                "downstream",
                json!({"message": {"kind": "heartbeat"}}),
            ),
            json!({"name": "late-close", "type": "latency", "stream": "downstream",
               "attributes": {"latency": 1500},
               "match": {"message": {"kind": "close"}}}),
        ],
    );
    let url = format!("http://{}", proxy.listen);
    let Some(mut client) = socketio_client(
        &url,
        &["--room", "r1", "--count", "0", "--duration", "8", "--debug"],
    ) else {
        return;
    };
    let status = client.wait(Duration::from_secs(30));
    let ctx = || story(&client, &server, &proxy);
    assert!(status.is_some_and(|s| s.success()), "{}", ctx());
    let events = client.events();
    assert_eq!(count_of(&events, "joined"), 1, "{}", ctx());
    assert_eq!(
        count_of(&events, "tick") + count_of(&events, "chat"),
        0,
        "{}",
        ctx()
    );
    let disconnect = only(&events, "disconnect", &ctx);
    assert_eq!(disconnect["reason"], "transport error", "{}", ctx());
    assert_eq!(disconnect["pings"], 0, "{}", ctx());
    // Its own timer: silent for pingInterval + pingTimeout (1 s + 1 s, taken
    // from the server's open packet) before it gave up.
    assert_eq!(
        (
            &disconnect["ping_interval_ms"],
            &disconnect["ping_timeout_ms"]
        ),
        (&json!(1000), &json!(1000)),
        "{}",
        ctx()
    );
    let silent = disconnect["last_packet_ago_ms"].as_u64().unwrap_or(0);
    assert!(
        silent >= 2000,
        "gave up after {silent} ms of silence\n{}",
        ctx()
    );
    assert!(
        client
            .stderr()
            .contains("Server has stopped communicating, aborting"),
        "not the client's own read timeout\n{}",
        ctx()
    );
    // The server timed out too (no PONG): its reason is "ping timeout".
    assert_eq!(
        field_of(&server.events(), &["disconnect"], "reason"),
        vec![json!("ping timeout")],
        "{}",
        ctx()
    );
    // Downstream: open packet, Socket.IO connect, join ack, and the one
    // PING, which was lost; one close frame held.
    let metrics = proxy.metrics();
    assert_eq!(actions_in(&metrics, "no-pings"), 1, "{metrics}");
    assert_eq!(actions_in(&metrics, "late-close"), 1, "{metrics}");
    assert_eq!(messages_in(&metrics, "downstream"), 4, "{metrics}");
}

/// The opposite cut: every Socket.IO data packet (`42` events, `43` acks)
/// is lost downstream, heartbeats pass. The session stays up: PINGs arrive
/// once a second and are answered, nobody times out, and the only
/// disconnect is the client's own at the end. The join ack is data too, so
/// the client's `join` call times out after 5 s (no "joined" line).
#[test]
fn socketio_data_lost_the_session_stays_up_and_pings_flow() {
    let Some(server) = socketio_server(PINGS_1S_TICKS_100MS) else {
        return;
    };
    let proxy = proxy_at(
        server.addr,
        &[lose(
            "no-data",
            "downstream",
            json!({"message": {"kind": "data"}}),
        )],
    );
    let url = format!("http://{}", proxy.listen);
    // The connect handler waits 5 s for the (lost) join ack; then 0.5 s more.
    let Some(mut client) =
        socketio_client(&url, &["--room", "r1", "--count", "0", "--duration", "0.5"])
    else {
        return;
    };
    let protocol = protocol_while_running(&proxy, &mut client);
    let status = client.wait(Duration::from_secs(30));
    let ctx = || story(&client, &server, &proxy);
    assert!(status.is_some_and(|s| s.success()), "{}", ctx());
    assert_eq!(protocol.as_deref(), Some("socketio"), "{}", ctx());
    let events = client.events();
    for name in ["joined", "tick", "chat", "ack"] {
        assert_eq!(count_of(&events, name), 0, "{name}\n{}", ctx());
    }
    let disconnect = only(&events, "disconnect", &ctx);
    assert_eq!(disconnect["reason"], "client disconnect", "{}", ctx());
    let up_ms = disconnect["t_ms"].as_u64().unwrap_or(0);
    assert!(up_ms >= 5000, "session up only {up_ms} ms\n{}", ctx());
    let pings = disconnect["pings"].as_u64().unwrap_or(0);
    assert!(pings >= 4, "{pings} PINGs in {up_ms} ms\n{}", ctx());
    // The server: the client joined, and it ended the session itself.
    let server_events = server.events();
    assert_eq!(
        field_of(&server_events, &["join"], "room"),
        vec![json!("r1")],
        "{}",
        ctx()
    );
    assert_eq!(
        field_of(&server_events, &["disconnect"], "reason"),
        vec![json!("transport close")],
        "{}",
        ctx()
    );
    // Downstream: open packet and Socket.IO connect (handshakes), the PINGs
    // the client counted, and the data the toxic dropped: nothing else.
    let metrics = proxy.metrics();
    let lost = actions_in(&metrics, "no-data");
    assert!(
        lost >= 40,
        "join ack + ~50 ticks, dropped {lost}\n{metrics}"
    );
    assert_eq!(
        messages_in(&metrics, "downstream"),
        2 + pings + lost,
        "{}\n{metrics}",
        ctx()
    );
}

// ---------------------------------------------------------------------------
// 2. GraphQL (strawberry-graphql server, gql client, graphql-transport-ws)

/// SPEC §12's example on a real subscription: `next` messages 13, 16, 19,
/// 22 and 25 are lost and nothing else; the subscription still completes.
#[test]
fn gql_subscription_loses_exactly_items_13_16_19_22_25_and_completes() {
    let Some(server) = graphql_server(&[]) else {
        return;
    };
    let proxy = proxy_at(
        server.addr,
        &[
            json!({"name": "lose-next", "type": "message_loss", "stream": "downstream",
               "attributes": {"probability": 1},
               "match": {"message": {"json": {"pointer": "/type", "equals": "next"}}},
               "count": {"after": 10, "every": 3, "limit": 5}}),
        ],
    );
    let url = format!("ws://{}/graphql", proxy.listen);
    let Some(mut client) = graphql_client(&url, &["--to", "30", "--interval-ms", "50"]) else {
        return;
    };
    let protocol = protocol_while_running(&proxy, &mut client);
    let status = client.wait(Duration::from_secs(30));
    let ctx = || format!("{}\n--- proxy\n{}", client.both(), proxy.stderr());
    assert!(status.is_some_and(|s| s.success()), "{}", ctx());
    assert_eq!(protocol.as_deref(), Some("graphql-ws"), "{}", ctx());
    let events = client.events();
    assert_eq!(
        field_of(&events, &["connected"], "subprotocol"),
        vec![json!("graphql-transport-ws")],
        "{}",
        ctx()
    );
    let lost = [13u64, 16, 19, 22, 25];
    let expected: Vec<u64> = (1..=30).filter(|s| !lost.contains(s)).collect();
    assert_eq!(
        as_u64s(field_of(&events, &["next"], "seq")),
        expected,
        "{}",
        ctx()
    );
    let last = events.last().expect("lines");
    assert_eq!(
        (&last["event"], &last["count"]),
        (&json!("complete"), &json!(25)),
        "{}",
        ctx()
    );
    let metrics = proxy.metrics();
    assert_eq!(actions_in(&metrics, "lose-next"), 5, "{metrics}");
    // connection_ack, 30 next, complete; connection_init, subscribe.
    assert_eq!(messages_in(&metrics, "downstream"), 32, "{metrics}");
    assert_eq!(messages_in(&metrics, "upstream"), 2, "{metrics}");
}

// ---------------------------------------------------------------------------
// 3. STOMP 1.2, SignalR JSON hub protocol, Phoenix serializer 2.0 (raw frames)

/// STOMP 1.2 over WebSocket (subprotocol `v12.stomp`): the broker's
/// heart-beats (frames that are only an EOL, `\n` or `\r\n`) are lost
/// downstream; CONNECTED, MESSAGE and RECEIPT arrive in order, and the
/// client's own heart-beats still reach the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_broker_heartbeats_lost_every_other_frame_arrives_in_order() {
    let upstream = RawUpstream::bind().await;
    let proxy = proxy_with(
        upstream.addr,
        &[lose(
            "no-beats",
            "downstream",
            json!({"message": {"kind": "heartbeat"}}),
        )],
    );
    let stomp = [("Sec-WebSocket-Protocol", "v12.stomp")];
    let (mut client, mut broker) = raw_connect(&proxy, &upstream, "/stomp", &stomp, &stomp).await;

    let connect = "CONNECT\naccept-version:1.2\nhost:stomp.example.org\nheart-beat:1000,1000\n\n\0";
    let connected = "CONNECTED\nversion:1.2\nheart-beat:1000,1000\nserver:broker/1.0\n\n\0";
    let subscribe = "SUBSCRIBE\nid:0\ndestination:/queue/a\nack:auto\n\n\0";
    let send = "SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\0";
    let message = |n: u32| {
        format!(
            "MESSAGE\nsubscription:0\nmessage-id:{n}\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a #{n}\0"
        )
    };
    let disconnect = "DISCONNECT\nreceipt:77\n\n\0";
    let receipt = "RECEIPT\nreceipt-id:77\n\n\0";

    send_text(&mut client, connect).await;
    send_text(&mut broker, connected).await;
    assert_eq!(texts_until(&mut client, connected).await, vec![connected]);
    assert_eq!(protocols_async(&proxy).await, vec!["stomp"]);

    // Client → broker: its heart-beats are not touched (the toxic is downstream).
    send_texts(&mut client, &[subscribe, "\n", send, "\r\n", disconnect]).await;
    let m1 = message(1);
    let m2 = message(2);
    // Broker → client: heart-beats around and between the frames.
    send_texts(&mut broker, &["\n", &m1, "\r\n", "\n", &m2, "\n", receipt]).await;
    assert_eq!(
        texts_until(&mut client, receipt).await,
        vec![m1.as_str(), m2.as_str(), receipt]
    );
    assert_eq!(
        texts_until(&mut broker, disconnect).await,
        vec![connect, subscribe, "\n", send, "\r\n", disconnect]
    );
    assert_eq!(actions_in(&metrics_async(&proxy).await, "no-beats"), 4);
}

/// SignalR JSON hub protocol (records end in 0x1E), detected from the
/// client's first message `{"protocol":"json","version":1}`. On `/hub-a`
/// the server's pings (type 6; a frame counts as a heartbeat only when all
/// its records are pings) are lost; on `/hub-b` the handshake answer `{}` is
/// lost. Invocations (type 1), completions (type 3) and close (type 7) pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalr_pings_or_the_handshake_answer_lost_everything_else_arrives_in_order() {
    let upstream = RawUpstream::bind().await;
    let proxy = proxy_with(
        upstream.addr,
        &[
            lose(
                "no-pings",
                "downstream",
                json!({"path": "/hub-a", "message": {"kind": "heartbeat"}}),
            ),
            lose(
                "no-answer",
                "downstream",
                json!({"path": "/hub-b", "message": {"kind": "handshake"}}),
            ),
        ],
    );
    const RS: &str = "\u{1e}";
    let request = format!("{{\"protocol\":\"json\",\"version\":1}}{RS}");
    let answer = format!("{{}}{RS}");
    let ping = format!("{{\"type\":6}}{RS}");
    let two_pings = format!("{{\"type\":6}}{RS}{{\"type\":6}}{RS}");
    let invoke = |who: &str| {
        format!(
            "{{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"{who}\",\"hello\"]}}{RS}"
        )
    };
    let send = format!(
        "{{\"type\":1,\"invocationId\":\"0\",\"target\":\"SendMessage\",\"arguments\":[\"alice\",\"hello\"]}}{RS}"
    );
    let completion = format!("{{\"type\":3,\"invocationId\":\"0\",\"result\":null}}{RS}");
    let close =
        format!("{{\"type\":7,\"error\":\"Server is shutting down\",\"allowReconnect\":true}}{RS}");

    // /hub-a: pings lost.
    let (mut client, mut server) = raw_connect(&proxy, &upstream, "/hub-a", &[], &[]).await;
    send_text(&mut client, &request).await;
    assert_eq!(
        texts_until(&mut server, &request).await,
        vec![request.as_str()]
    );
    assert_eq!(protocols_async(&proxy).await, vec!["signalr"]);
    // A data frame that carries a ping record among others is data.
    let mixed = format!("{}{ping}", invoke("bob"));
    let alice = invoke("alice");
    send_texts(
        &mut server,
        &[
            &answer,
            &ping,
            &alice,
            &two_pings,
            &completion,
            &mixed,
            &ping,
            &close,
        ],
    )
    .await;
    assert_eq!(
        texts_until(&mut client, &close).await,
        vec![
            answer.as_str(),
            alice.as_str(),
            completion.as_str(),
            mixed.as_str(),
            close.as_str()
        ]
    );
    // Upstream untouched: the client's own pings reach the server.
    send_texts(&mut client, &[&ping, &send, &two_pings]).await;
    assert_eq!(
        texts_until(&mut server, &two_pings).await,
        vec![ping.as_str(), send.as_str(), two_pings.as_str()]
    );
    drop((client, server));

    // /hub-b: the handshake answer lost, pings kept.
    let (mut client, mut server) = raw_connect(&proxy, &upstream, "/hub-b", &[], &[]).await;
    send_text(&mut client, &request).await;
    assert_eq!(
        texts_until(&mut server, &request).await,
        vec![request.as_str()]
    );
    send_texts(&mut server, &[&answer, &ping, &alice, &close]).await;
    assert_eq!(
        texts_until(&mut client, &close).await,
        vec![ping.as_str(), alice.as_str(), close.as_str()]
    );

    let metrics = metrics_async(&proxy).await;
    assert_eq!(actions_in(&metrics, "no-pings"), 3, "{metrics}");
    assert_eq!(actions_in(&metrics, "no-answer"), 1, "{metrics}");
}

/// Phoenix channels, serializer 2.0 (`/socket/websocket?vsn=2.0.0`,
/// messages `[join_ref, ref, topic, event, payload]`). On `/socket` the
/// heartbeats are lost both ways: the client's `heartbeat` on topic
/// `phoenix` upstream and its `phx_reply` downstream; the join, its reply
/// on the room topic (data), broadcasts, `phx_leave` and `phx_close` pass.
/// On `/live` the channel join (`phx_join`) is lost upstream, nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phoenix_heartbeats_or_joins_lost_everything_else_arrives_in_order() {
    let upstream = RawUpstream::bind().await;
    let proxy = proxy_with(
        upstream.addr,
        &[
            lose(
                "no-beats-up",
                "upstream",
                json!({"path": "/socket/*", "message": {"kind": "heartbeat"}}),
            ),
            lose(
                "no-beats-down",
                "downstream",
                json!({"path": "/socket/*", "message": {"kind": "heartbeat"}}),
            ),
            lose(
                "no-join",
                "upstream",
                json!({"path": "/live/*", "message": {"kind": "handshake"}}),
            ),
        ],
    );
    let join = r#"["1","1","room:lobby","phx_join",{"user":"alice"}]"#;
    let join_reply = r#"["1","1","room:lobby","phx_reply",{"status":"ok","response":{}}]"#;
    let beat = |r: u32| format!(r#"[null,"{r}","phoenix","heartbeat",{{}}]"#);
    let beat_reply =
        |r: u32| format!(r#"[null,"{r}","phoenix","phx_reply",{{"status":"ok","response":{{}}}}]"#);
    let new_msg = r#"["1","3","room:lobby","new_msg",{"body":"hi"}]"#;
    let new_msg_reply = r#"["1","3","room:lobby","phx_reply",{"status":"ok","response":{}}]"#;
    let broadcast = r#"[null,null,"room:lobby","new_msg",{"body":"hi","user":"alice"}]"#;
    let leave = r#"["1","5","room:lobby","phx_leave",{}]"#;
    let leave_reply = r#"["1","5","room:lobby","phx_reply",{"status":"ok","response":{}}]"#;
    let closed = r#"["1","1","room:lobby","phx_close",{}]"#;
    let (beat2, beat4) = (beat(2), beat(4));
    let (beat2_reply, beat4_reply) = (beat_reply(2), beat_reply(4));

    let (mut client, mut server) =
        raw_connect(&proxy, &upstream, "/socket/websocket?vsn=2.0.0", &[], &[]).await;
    assert_eq!(protocols_async(&proxy).await, vec!["phoenix"]);
    send_texts(&mut client, &[join, &beat2, new_msg, &beat4, leave]).await;
    assert_eq!(
        texts_until(&mut server, leave).await,
        vec![join, new_msg, leave]
    );
    send_texts(
        &mut server,
        &[
            join_reply,
            &beat2_reply,
            new_msg_reply,
            broadcast,
            &beat4_reply,
            leave_reply,
            closed,
        ],
    )
    .await;
    assert_eq!(
        texts_until(&mut client, closed).await,
        vec![join_reply, new_msg_reply, broadcast, leave_reply, closed]
    );
    drop((client, server));

    let (mut client, mut server) =
        raw_connect(&proxy, &upstream, "/live/websocket?vsn=2.0.0", &[], &[]).await;
    assert_eq!(protocols_async(&proxy).await, vec!["phoenix"]);
    send_texts(&mut client, &[join, &beat2, new_msg, leave]).await;
    assert_eq!(
        texts_until(&mut server, leave).await,
        vec![beat2.as_str(), new_msg, leave]
    );
    send_texts(&mut server, &[&beat2_reply, broadcast]).await;
    assert_eq!(
        texts_until(&mut client, broadcast).await,
        vec![beat2_reply.as_str(), broadcast]
    );

    let metrics = metrics_async(&proxy).await;
    assert_eq!(actions_in(&metrics, "no-beats-up"), 2, "{metrics}");
    assert_eq!(actions_in(&metrics, "no-beats-down"), 2, "{metrics}");
    assert_eq!(actions_in(&metrics, "no-join"), 1, "{metrics}");
}

// ---------------------------------------------------------------------------
// 4. reorder, seen by `wsfault load --mode echo` against `wsfault echo`

/// With `distance: 1` and probability 1, the echoes of one connection are
/// swapped in pairs: 1 is held, 2 passes, 1 follows, 3 is held... The load
/// client counts an echo as reordered when a later one arrived before it,
/// so every held echo that some later echo overtook is one reorder. The one
/// exception is exact: when the connection's last echo is the one held
/// (an odd number of echoes), nothing comes to overtake it, `max_hold`
/// releases it in its place, and it is an action but not a reorder. So,
/// with N echoes: actions = ceil(N/2), reordered = floor(N/2), lost = 0.
#[test]
fn reorder_the_load_clients_reordered_count_is_the_toxics_swaps() {
    let echo_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _echo = ChildGuard::spawn(
        &mut wsfault(&["echo", "--listen", &echo_addr.to_string()]),
        "wsfault echo",
    );
    wait_tcp(echo_addr, Duration::from_secs(10));
    let proxy = ProxyProc::start(&echo_addr.to_string(), &["--seed", "7"]);
    add_toxic(
        &proxy,
        json!({"name": "swap", "type": "reorder", "stream": "downstream",
               "attributes": {"distance": 1, "probability": 1, "max_hold": 500}}),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let report_path = dir.path().join("report.json");
    let ran = run(
        &mut wsfault(&[
            "load",
            "--url",
            &format!("ws://{}/", proxy.listen),
            "--mode",
            "echo",
            "--connections",
            "1",
            "--rate",
            "50",
            "--duration",
            "2s",
            "--slo",
            "loss==0",
            "--slo",
            "dup==0",
            "--slo",
            "corrupt==0",
            "--report",
            report_path.to_str().unwrap(),
        ]),
        "wsfault load",
        Duration::from_secs(30),
    );
    assert!(ran.ok(), "{}", ran.both());
    let report = read_report(&report_path);
    let m = &report["messages"];
    let sent = m["sent"].as_u64().expect("sent");
    assert!(sent >= 50, "{report}");
    assert_eq!(
        (
            &m["received"],
            &m["lost"],
            &m["duplicated"],
            &m["corrupted"]
        ),
        (&json!(sent), &json!(0), &json!(0), &json!(0)),
        "{report}"
    );
    let swaps = actions_in(&proxy.metrics(), "swap");
    let reordered = m["reordered"].as_u64().expect("reordered");
    assert_eq!(swaps, sent.div_ceil(2), "{report}");
    assert_eq!(reordered, sent / 2, "{report}");
    assert_eq!(reordered, swaps - sent % 2, "{report}");
    assert_eq!(report["pass"], true, "{report}");
}

// ---------------------------------------------------------------------------
// 5. corrupt utf8: a Python `websockets` client fails the connection (1007)

/// A Python `websockets` client that prints each message and how the
/// connection closed: `{"event":"message","data":...}`, then
/// `{"event":"closed","sent":CODE,"sent_reason":TEXT,"rcvd":CODE,"error":TYPE}`.
const WEBSOCKETS_READER: &str = r#"
import asyncio, json, sys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

def log(**fields):
    print(json.dumps(fields), flush=True)

async def main():
    error = None
    async with connect(sys.argv[1], open_timeout=5, close_timeout=2) as ws:
        try:
            async for message in ws:
                log(event="message", data=message)
        except ConnectionClosed as e:
            error = type(e).__name__
        sent, rcvd = ws.protocol.close_sent, ws.protocol.close_rcvd
        log(event="closed", sent=sent and sent.code, sent_reason=sent and sent.reason,
            rcvd=rcvd and rcvd.code, error=error)

asyncio.run(main())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_utf8_makes_a_python_websockets_client_close_with_1007() {
    let Some(python) = interpreter_with_all(&["websockets"]) else {
        return;
    };
    let upstream = RawUpstream::bind().await;
    // Only the second data message is made invalid UTF-8.
    let proxy = proxy_with(
        upstream.addr,
        &[
            json!({"name": "poison", "type": "corrupt", "stream": "downstream",
                   "attributes": {"mode": "utf8"}, "count": {"after": 1, "limit": 1}}),
        ],
    );
    let url = format!("ws://{}/feed", proxy.listen);
    let reader = ChildGuard::spawn(
        Command::new(&python)
            .args(["-c", WEBSOCKETS_READER, &url])
            .stdin(Stdio::null()),
        "websockets reader",
    );
    let mut server = upstream.accept().await;
    send_texts(&mut server, &["m-1", "m-2", "m-3"]).await;
    // The client fails the connection: its close frame reaches the server.
    let code = server.close_code_within(SOON).await;
    server.send_frame(&Frame::close(1007, "", None)).await;
    let ran = tokio::task::block_in_place(|| reader.wait(Duration::from_secs(20)));
    assert_eq!(code, Some(1007), "{}", ran.both());
    assert!(ran.ok(), "{}", ran.both());
    let events = json_lines(&ran.stdout);
    assert_eq!(
        field_of(&events, &["message"], "data"),
        vec![json!("m-1")],
        "{}",
        ran.both()
    );
    let closed = events
        .iter()
        .find(|e| e["event"] == "closed")
        .unwrap_or_else(|| panic!("no closed line\n{}", ran.both()));
    assert_eq!(closed["sent"], 1007, "{}", ran.both());
    assert_eq!(closed["error"], "ConnectionClosedError", "{}", ran.both());
    assert!(
        closed["sent_reason"]
            .as_str()
            .is_some_and(|r| r.contains("invalid start byte")),
        "{}",
        ran.both()
    );
    let metrics = metrics_async(&proxy).await;
    assert_eq!(actions_in(&metrics, "poison"), 1, "{metrics}");
    assert_eq!(
        metric_sum(
            &metrics,
            "wsfault_closes_total",
            &[("proxy", "app"), ("code", "1007"), ("by", "client")]
        ),
        1.0,
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------
// 6. inject: exactly `limit` times, between whole messages

/// `after_messages: 2, limit: 3` downstream, with fragmented messages (and
/// a ping inside one): the injected message comes right after messages 2,
/// 4 and 6, each after the last fragment, and never again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inject_after_messages_lands_exactly_limit_times_between_whole_messages() {
    let upstream = RawUpstream::bind().await;
    let proxy = proxy_with(
        upstream.addr,
        &[
            json!({"name": "extra", "type": "inject", "stream": "downstream",
                   "attributes": {"payload": "INJECTED", "after_messages": 2, "limit": 3}}),
        ],
    );
    let (mut client, mut server) = raw_connect(&proxy, &upstream, "/", &[], &[]).await;
    let pause = Duration::from_millis(15);
    // Each step is one frame; fragments are written apart so that the proxy
    // reads them separately.
    let steps: Vec<(bool, Opcode, &[u8])> = vec![
        (true, Opcode::Text, b"m1"),
        (false, Opcode::Text, b"m2-a"),
        (true, Opcode::Ping, b"p"),
        (false, Opcode::Continuation, b"m2-b"),
        (true, Opcode::Continuation, b"m2-c"),
        (false, Opcode::Binary, &[1, 2, 3]),
        (true, Opcode::Continuation, &[4, 5]),
        (true, Opcode::Text, b"m4"),
        (false, Opcode::Text, b"m5-a"),
        (true, Opcode::Continuation, b"m5-b"),
        (false, Opcode::Text, b"m6-a"),
        (true, Opcode::Continuation, b"m6-b"),
        (true, Opcode::Text, b"m7"),
        (false, Opcode::Text, b"m8-a"),
        (true, Opcode::Continuation, b"m8-b"),
        (true, Opcode::Text, b"end"),
    ];
    for (fin, opcode, payload) in &steps {
        server.send(*fin, 0, *opcode, payload).await;
        tokio::time::sleep(pause).await;
    }
    let got = frames_until(&mut client, b"end").await;
    assert!(
        client
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "frames after the last message"
    );
    let inj = text_frame(true, "INJECTED");
    let expected = vec![
        text_frame(true, "m1"),
        text_frame(false, "m2-a"),
        ("ping", true, b"p".to_vec()),
        cont_frame(false, b"m2-b"),
        cont_frame(true, b"m2-c"),
        inj.clone(),
        ("binary", false, vec![1, 2, 3]),
        cont_frame(true, &[4, 5]),
        text_frame(true, "m4"),
        inj.clone(),
        text_frame(false, "m5-a"),
        cont_frame(true, b"m5-b"),
        text_frame(false, "m6-a"),
        cont_frame(true, b"m6-b"),
        inj,
        text_frame(true, "m7"),
        text_frame(false, "m8-a"),
        cont_frame(true, b"m8-b"),
        text_frame(true, "end"),
    ];
    assert_eq!(got.iter().map(shape).collect::<Vec<_>>(), expected);
    assert_well_formed_sequence(&got);
    assert!(
        got.iter().all(|f| f.header.mask.is_none()),
        "frames to the client are never masked"
    );
    assert_eq!(actions_in(&metrics_async(&proxy).await, "extra"), 3);
}

/// `every_ms: 100, limit: 3` upstream: ticks that fall while the client is
/// in the middle of a fragmented message wait for its end and collapse into
/// one injection right after its last fragment; exactly 3 injections in
/// all, each a whole masked frame between messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inject_every_ms_waits_for_the_end_of_a_fragmented_message_and_stops_at_limit() {
    let upstream = RawUpstream::bind().await;
    let proxy = proxy_with(
        upstream.addr,
        &[
            json!({"name": "ticks", "type": "inject", "stream": "upstream",
                   "attributes": {"payload": "TICK", "every_ms": 100, "limit": 3}}),
        ],
    );
    let (mut client, mut server) = raw_connect(&proxy, &upstream, "/", &[], &[]).await;
    client.send(false, 0, Opcode::Text, b"u1-a").await;
    // The first fragment is through before the first tick (100 ms).
    let first = server.recv().await;
    assert_eq!(shape(&first), text_frame(false, "u1-a"));
    // Ticks at 100, 200 and 300 ms fall inside the message.
    tokio::time::sleep(Duration::from_millis(350)).await;
    client.send(false, 0, Opcode::Continuation, b"u1-b").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.send(true, 0, Opcode::Continuation, b"u1-c").await;
    client.send(true, 0, Opcode::Text, b"u2").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    client.send(true, 0, Opcode::Text, b"u3").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.send(true, 0, Opcode::Text, b"end").await;

    let mut got = vec![first];
    got.extend(frames_until(&mut server, b"end").await);
    assert!(
        server
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "frames after the last message"
    );
    let shapes: Vec<_> = got.iter().map(shape).collect();
    let tick = text_frame(true, "TICK");
    // Right after the fragmented message, one injection for all the ticks
    // that fell inside it.
    assert_eq!(
        shapes[..4],
        [
            text_frame(false, "u1-a"),
            cont_frame(false, b"u1-b"),
            cont_frame(true, b"u1-c"),
            tick.clone()
        ],
        "{shapes:?}"
    );
    assert_eq!(
        shapes.iter().filter(|s| **s == tick).count(),
        3,
        "{shapes:?}"
    );
    let data: Vec<_> = shapes.iter().filter(|s| **s != tick).cloned().collect();
    assert_eq!(
        data,
        vec![
            text_frame(false, "u1-a"),
            cont_frame(false, b"u1-b"),
            cont_frame(true, b"u1-c"),
            text_frame(true, "u2"),
            text_frame(true, "u3"),
            text_frame(true, "end"),
        ]
    );
    assert_well_formed_sequence(&got);
    assert!(
        got.iter().all(|f| f.header.mask.is_some()),
        "frames to the server are masked, injected ones included"
    );
    assert_eq!(actions_in(&metrics_async(&proxy).await, "ticks"), 3);
}

// ---------------------------------------------------------------------------
// 7. Bad input through the admin API

/// Each refused request: 400, an error naming the field, the value and what
/// is valid, and nothing changed (`GET /proxies` as before).
#[test]
fn bad_matchers_counts_and_protocols_are_refused_with_400_and_change_nothing() {
    let proxy = ProxyProc::start(&format!("127.0.0.1:{}", closed_port()), &[]);
    add_toxic(
        &proxy,
        json!({"name": "lose-next", "type": "message_loss", "stream": "downstream",
               "attributes": {"probability": 1},
               "match": {"message": {"json": {"pointer": "/type", "equals": "next"}}},
               "count": {"after": 10, "every": 3, "limit": 5}}),
    );
    let snapshot = || -> Value {
        let (status, body) = proxy.api("GET", "/proxies", None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    };
    let before = snapshot();
    // Read back as written.
    let toxic = &before["app"]["toxics"][0];
    assert_eq!(
        (&toxic["match"], &toxic["count"]),
        (
            &json!({"message": {"json": {"pointer": "/type", "equals": "next"}}}),
            &json!({"after": 10, "every": 3, "limit": 5})
        ),
        "{before}"
    );

    let refused = |method: &str, path: &str, body: Value, needles: &[&str]| {
        let (status, answer) = proxy.api(method, path, Some(&body.to_string()));
        assert_eq!(status, 400, "{method} {path} {body}: {answer}");
        let error: Value = serde_json::from_str(&answer).expect("JSON error");
        let message = error["error"].as_str().unwrap_or_default();
        for needle in needles {
            assert!(
                message.contains(needle),
                "{method} {path} {body}: {message:?} does not name {needle:?}"
            );
        }
        assert_eq!(
            snapshot(),
            before,
            "{method} {path} {body} changed something"
        );
    };

    // A bad regex: the field, the value and the parser's message.
    refused(
        "POST",
        "/proxies/app/toxics",
        json!({"name": "bad-regex", "type": "message_loss", "attributes": {"probability": 1},
               "match": {"message": {"regex": "(open"}}}),
        &["match.message.regex", "\"(open\"", "unclosed group"],
    );
    // The same on an update of the existing toxic.
    refused(
        "POST",
        "/proxies/app/toxics/lose-next",
        json!({"match": {"message": {"regex": "(open"}}}),
        &["match.message.regex", "\"(open\""],
    );
    // A JSON pointer that does not start with '/'.
    refused(
        "POST",
        "/proxies/app/toxics",
        json!({"name": "bad-pointer", "type": "message_loss", "attributes": {"probability": 1},
               "match": {"message": {"json": {"pointer": "type", "equals": "next"}}}}),
        &["match.message.json.pointer", "\"type\"", "'/'"],
    );
    // match.message and count on a toxic that is not about messages.
    refused(
        "POST",
        "/proxies/app/toxics",
        json!({"name": "bad-stall", "type": "stall", "attributes": {"duration": 100},
               "match": {"message": {"kind": "heartbeat"}}}),
        &["match.message", "stall"],
    );
    refused(
        "POST",
        "/proxies/app/toxics",
        json!({"name": "bad-stall", "type": "stall", "attributes": {"duration": 100},
               "count": {"every": 2}}),
        &["count", "stall"],
    );
    // An unknown protocol profile, on a new proxy and on an update.
    let choices = "auto, none, socketio, graphql-ws, stomp, signalr, phoenix";
    refused(
        "POST",
        "/proxies",
        json!({"name": "mq", "upstream": "127.0.0.1:9", "protocol": "mqtt"}),
        &["protocol", "\"mqtt\"", choices],
    );
    refused(
        "POST",
        "/proxies/app",
        json!({"protocol": "mqtt"}),
        &["protocol", "\"mqtt\"", choices],
    );
    refused(
        "POST",
        "/populate",
        json!([{"name": "mq", "upstream": "127.0.0.1:9", "protocol": "mqtt"}]),
        &["protocol", "\"mqtt\"", choices],
    );
    let names: BTreeSet<String> = before
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(names, BTreeSet::from(["app".to_string()]));
}
