//! Third-party services and their own clients (tests/py/, from PyPI: see
//! tests/requirements.txt) through a real `wsfault proxy` with no toxic:
//! the proxy must be invisible to them. These are the fixtures the
//! message-aware toxics and `wsfault load --script` are tested against;
//! here each one is shown to work, and to be checked, as it is.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Data messages the proxy relayed (both directions).
fn relayed(proxy: &ProxyProc) -> f64 {
    metric_sum(
        &proxy.metrics(),
        "wsfault_messages_total",
        &[("proxy", "app")],
    )
}

#[test]
fn socketio_chat_through_the_proxy_gets_every_broadcast_in_seq_order_and_every_ack() {
    // Heartbeats every second (a ping `2` from the server, a pong `3` from
    // the client) and a tick every 100 ms into the room, sharing its seq.
    let Some(server) = socketio_server(PINGS_1S_TICKS_100MS) else {
        return;
    };
    let proxy = ProxyProc::start(&server.addr.to_string(), &[]);
    let url = format!("http://{}", proxy.listen);
    let Some(mut client) =
        socketio_client(&url, &["--room", "r1", "--count", "50", "--rate", "25"])
    else {
        return;
    };
    let status = client.wait(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "socketio client failed\n{}\n--- proxy\n{}",
        client.both(),
        proxy.stderr()
    );
    let events = client.events();
    let ctx = || client.both();

    // Chats and ticks share the room's seq: 1, 2, 3, ... without a gap.
    let seqs = as_u64s(field_of(&events, &["chat", "tick"], "seq"));
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "room seq not contiguous\n{}", ctx());
    assert!(
        field_of(&events, &["tick"], "seq").len() >= 10,
        "too few ticks\n{}",
        ctx()
    );
    // Every chat came back once, in the order it was sent, and was acked.
    let sent: Vec<String> = (1..=50).map(|n| format!("c-{n}")).collect();
    let chats = as_strings(field_of(&events, &["chat"], "id"));
    assert_eq!(chats, sent, "broadcasts\n{}", ctx());
    let acks: BTreeSet<String> = as_strings(field_of(&events, &["ack"], "id"))
        .into_iter()
        .collect();
    assert_eq!(
        acks,
        sent.iter().cloned().collect::<BTreeSet<_>>(),
        "acks\n{}",
        ctx()
    );
    assert_eq!(field_of(&events, &["ack"], "id").len(), 50, "{}", ctx());
    // The heartbeats went through both ways: pings arrived, and the only
    // disconnect is the client's own at the end (no ping timeout).
    let disconnects: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "disconnect")
        .collect();
    assert_eq!(disconnects.len(), 1, "{}", ctx());
    assert_eq!(disconnects[0]["reason"], "client disconnect", "{}", ctx());
    assert!(
        disconnects[0]["pings"].as_u64().unwrap_or(0) >= 1,
        "no Engine.IO ping reached the client\n{}",
        ctx()
    );
    let done = events.last().expect("a done line");
    assert_eq!(done["event"], "done", "{}", ctx());
    assert_eq!(
        (&done["sent"], &done["acked"], &done["chats"]),
        (&Value::from(50), &Value::from(50), &Value::from(50)),
        "{}",
        ctx()
    );
    // The server saw one session, joined to r1, and no ping timeout.
    let server_events = server.events();
    assert_eq!(
        field_of(&server_events, &["join"], "room"),
        vec![Value::from("r1")],
        "{}",
        server.proc.both()
    );
    assert!(
        !server_events
            .iter()
            .any(|e| e["event"] == "disconnect" && e["reason"] == "ping timeout"),
        "{}",
        server.proc.both()
    );
    assert!(
        relayed(&proxy) >= 150.0,
        "the traffic did not go through the proxy"
    );
}

#[test]
fn socketio_client_resumes_a_room_from_a_seq_through_the_proxy() {
    // Two sessions on the same room: the second joins with `from` and gets
    // the retained messages after it replayed, then the live ones.
    let Some(server) = socketio_server(&[]) else {
        return;
    };
    let proxy = ProxyProc::start(&server.addr.to_string(), &[]);
    let url = format!("http://{}", proxy.listen);
    let Some(mut first) =
        socketio_client(&url, &["--room", "r2", "--count", "10", "--rate", "100"])
    else {
        return;
    };
    first.wait_ok(Duration::from_secs(30));
    let Some(mut second) = socketio_client(
        &url,
        &[
            "--room", "r2", "--from", "4", "--count", "5", "--rate", "100",
        ],
    ) else {
        return;
    };
    second.wait_ok(Duration::from_secs(30));
    let events = second.events();
    assert_eq!(
        as_u64s(field_of(&events, &["chat"], "seq")),
        (5..=15).collect::<Vec<u64>>(),
        "{}",
        second.both()
    );
    let ids = as_strings(field_of(&events, &["chat"], "id"));
    let expected: Vec<String> = (5..=10)
        .map(|n| format!("c-{n}"))
        .chain((1..=5).map(|n| format!("c-{n}")))
        .collect();
    assert_eq!(ids, expected, "{}", second.both());
}

#[test]
fn gql_subscription_through_the_proxy_gets_seq_1_to_30_in_order_and_completes() {
    let Some(server) = graphql_server(&[]) else {
        return;
    };
    let proxy = ProxyProc::start(&server.addr.to_string(), &[]);
    let url = format!("ws://{}/graphql", proxy.listen);
    let Some(mut client) = graphql_client(
        &url,
        &[
            "--to",
            "30",
            "--interval-ms",
            "10",
            "--send",
            "m-1",
            "--send",
            "m-2",
        ],
    ) else {
        return;
    };
    let status = client.wait(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "gql client failed\n{}\n--- proxy\n{}",
        client.both(),
        proxy.stderr()
    );
    let events = client.events();
    assert_eq!(
        field_of(&events, &["connected"], "subprotocol"),
        vec![Value::from("graphql-transport-ws")],
        "{}",
        client.both()
    );
    assert_eq!(
        as_strings(field_of(&events, &["sent"], "id")),
        vec!["m-1", "m-2"],
        "the mutation answers with the sent id\n{}",
        client.both()
    );
    assert_eq!(
        as_u64s(field_of(&events, &["next"], "seq")),
        (1..=30).collect::<Vec<u64>>(),
        "{}",
        client.both()
    );
    let last = events.last().expect("lines");
    assert_eq!(
        (&last["event"], &last["count"]),
        (&Value::from("complete"), &Value::from(30)),
        "{}",
        client.both()
    );

    // The legacy subprotocol (`graphql-ws`), resuming after 10.
    let Some(mut legacy) = graphql_client(
        &url,
        &[
            "--subprotocol",
            "graphql-ws",
            "--from",
            "10",
            "--to",
            "15",
            "--interval-ms",
            "5",
        ],
    ) else {
        return;
    };
    legacy.wait_ok(Duration::from_secs(30));
    let events = legacy.events();
    assert_eq!(
        field_of(&events, &["connected"], "subprotocol"),
        vec![Value::from("graphql-ws")]
    );
    assert_eq!(
        as_u64s(field_of(&events, &["next"], "seq")),
        (11..=15).collect::<Vec<u64>>(),
        "{}",
        legacy.both()
    );
    assert!(
        relayed(&proxy) >= 35.0,
        "the traffic did not go through the proxy"
    );
}

/// What a feed client saw on one connection.
struct FeedRun {
    seqs: Vec<u64>,
    replies: Vec<String>,
    close: Option<u16>,
}

/// Reads `url` until the server closes; sends `{"id":"q-K"}` after every
/// 10th seq (while fewer than `asks` were sent).
async fn read_feed(url: &str, asks: usize) -> FeedRun {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let mut run = FeedRun {
        seqs: Vec::new(),
        replies: Vec::new(),
        close: None,
    };
    let mut asked = 0;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("feed stalled");
        match next {
            Some(Ok(Message::Text(text))) => {
                let v: Value = serde_json::from_str(&text).expect("JSON message");
                if let Some(seq) = v["seq"].as_u64() {
                    run.seqs.push(seq);
                    if run.seqs.len().is_multiple_of(10) && asked < asks {
                        asked += 1;
                        let ask = serde_json::json!({ "id": format!("q-{asked}") });
                        ws.send(Message::Text(ask.to_string().into()))
                            .await
                            .expect("send");
                    }
                } else if let Some(reply) = v["reply"].as_str() {
                    run.replies.push(reply.to_string());
                } else {
                    panic!("unexpected message {text}");
                }
            }
            Some(Ok(Message::Close(frame))) => {
                run.close = frame.map(|f| u16::from(f.code));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return run,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_feed_through_the_proxy_is_contiguous_resumes_from_a_seq_and_replies_by_id() {
    let Some(server) = json_feed_server(&["--rate", "200"]) else {
        return;
    };
    let proxy = ProxyProc::start(&server.addr.to_string(), &[]);

    let first = read_feed(&format!("ws://{}/feed?count=60", proxy.listen), 5).await;
    assert_eq!(first.seqs, (1..=60).collect::<Vec<u64>>());
    assert_eq!(
        first.replies,
        (1..=5).map(|k| format!("q-{k}")).collect::<Vec<_>>()
    );
    assert_eq!(first.close, Some(1000));

    let resumed = read_feed(
        &format!("ws://{}/feed?from=60&count=20&pad=100", proxy.listen),
        0,
    )
    .await;
    assert_eq!(resumed.seqs, (61..=80).collect::<Vec<u64>>());
    assert_eq!(resumed.close, Some(1000));
    assert!(
        relayed(&proxy) >= 85.0,
        "the traffic did not go through the proxy"
    );
}
