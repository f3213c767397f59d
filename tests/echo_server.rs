//! `wsfault echo`: plain echo, the resume protocol, limits, bad input and
//! shutdown, against the real server in-process (and once as the binary).

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const T: Duration = Duration::from_secs(10);

async fn connect(url: &str) -> Client {
    let (ws, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect");
    ws
}

/// Next data/pong/close message (skipping nothing), with a timeout.
async fn next(ws: &mut Client) -> Message {
    tokio::time::timeout(T, ws.next())
        .await
        .expect("timed out waiting for a message")
        .expect("stream ended")
        .expect("ws error")
}

async fn next_json(ws: &mut Client) -> Value {
    match next(ws).await {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("json"),
        other => panic!("expected text, got {other:?}"),
    }
}

async fn send_json(ws: &mut Client, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_text_binary_and_answers_pings() {
    let server = start_echo(None).await;
    let mut ws = connect(&server.url()).await;
    ws.send(Message::Text("hello there".into())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::Text("hello there".into()));
    let bin: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    ws.send(Message::Binary(bin.clone().into())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::Binary(bin.into()));
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        Message::Pong(b"are you there".to_vec().into())
    );
    // Empty messages, and a non-hello JSON first message, are echoed as-is.
    ws.send(Message::Text("".into())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::Text("".into()));
    ws.close(None).await.unwrap();
    match next(&mut ws).await {
        Message::Close(_) => {}
        other => panic!("expected close, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_hello_first_messages_mean_plain_echo() {
    let server = start_echo(None).await;
    for first in [r#"{"type":"msg","cseq":1}"#, "not json at all", "[1,2,3]"] {
        let mut ws = connect(&server.url()).await;
        ws.send(Message::Text(first.into())).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::Text(first.into()));
        // ...and later hellos are just echoed too.
        let hello = r#"{"type":"hello","session":"x","ack":0}"#;
        ws.send(Message::Text(hello.into())).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::Text(hello.into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_protocol_welcome_echo_dedup_and_replay() {
    let server = start_echo(None).await;
    let mut ws = connect(&server.url()).await;
    send_json(&mut ws, json!({"type":"hello","session":"s1","ack":0})).await;
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome, json!({"type":"welcome","session":"s1","next":1}));
    for cseq in 1..=3u64 {
        send_json(
            &mut ws,
            json!({"type":"msg","cseq":cseq,"body":format!("b{cseq}")}),
        )
        .await;
        let echo = next_json(&mut ws).await;
        assert_eq!(
            echo,
            json!({"type":"echo","seq":cseq,"cseq":cseq,"body":format!("b{cseq}")})
        );
    }
    // A resent cseq is not echoed again as a new seq.
    send_json(&mut ws, json!({"type":"msg","cseq":2,"body":"b2"})).await;
    send_json(
        &mut ws,
        json!({"type":"msg","cseq":4,"body":{"nested":[1,2]}}),
    )
    .await;
    let echo = next_json(&mut ws).await;
    assert_eq!(echo["seq"], 4);
    assert_eq!(echo["cseq"], 4);
    assert_eq!(echo["body"], json!({"nested":[1,2]}));
    // A mid-stream hello (gap resync) replays from there.
    send_json(&mut ws, json!({"type":"hello","session":"s1","ack":2})).await;
    assert_eq!(next_json(&mut ws).await["next"], 5);
    assert_eq!(next_json(&mut ws).await["seq"], 3);
    assert_eq!(next_json(&mut ws).await["seq"], 4);
    drop(ws);

    // A new connection resumes the session: welcome, then replay of seq > ack.
    let mut ws2 = connect(&server.url()).await;
    send_json(&mut ws2, json!({"type":"hello","session":"s1","ack":1})).await;
    let welcome = next_json(&mut ws2).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["next"], 5);
    for seq in 2..=4u64 {
        let e = next_json(&mut ws2).await;
        assert_eq!(e["type"], "echo");
        assert_eq!(e["seq"], seq);
        assert_eq!(e["cseq"], seq);
    }
    // Dedup survives the reconnect; new cseqs continue the seq.
    send_json(&mut ws2, json!({"type":"msg","cseq":3,"body":"b3"})).await;
    send_json(&mut ws2, json!({"type":"msg","cseq":5,"body":"b5"})).await;
    let e = next_json(&mut ws2).await;
    assert_eq!((e["seq"].as_u64(), e["cseq"].as_u64()), (Some(5), Some(5)));

    // Another session is independent.
    let mut ws3 = connect(&server.url()).await;
    send_json(&mut ws3, json!({"type":"hello","session":"other","ack":0})).await;
    assert_eq!(next_json(&mut ws3).await["next"], 1);
    send_json(&mut ws3, json!({"type":"msg","cseq":1,"body":null})).await;
    assert_eq!(next_json(&mut ws3).await["seq"], 1);
    // Garbage in resume mode gets an error message, not a dead connection.
    ws3.send(Message::Text("}{".into())).await.unwrap();
    assert_eq!(next_json(&mut ws3).await["type"], "error");
    send_json(&mut ws3, json!({"type":"msg","cseq":2,"body":null})).await;
    assert_eq!(next_json(&mut ws3).await["seq"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_hello_takes_the_session_over() {
    let server = start_echo(None).await;
    let mut a = connect(&server.url()).await;
    send_json(&mut a, json!({"type":"hello","session":"shared","ack":0})).await;
    next_json(&mut a).await;
    send_json(&mut a, json!({"type":"msg","cseq":1,"body":"x"})).await;
    assert_eq!(next_json(&mut a).await["seq"], 1);

    let mut b = connect(&server.url()).await;
    send_json(&mut b, json!({"type":"hello","session":"shared","ack":1})).await;
    assert_eq!(next_json(&mut b).await["next"], 2);
    // The old connection is closed by the server.
    let closed = tokio::time::timeout(T, async {
        loop {
            match a.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("old connection not closed");
    assert!(closed);
    send_json(&mut b, json!({"type":"msg","cseq":2,"body":"y"})).await;
    assert_eq!(next_json(&mut b).await["seq"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_that_connection() {
    let server = start_echo(None).await;
    let mut good = connect(&server.url()).await;

    // Complete an upgrade by hand, then send an unmasked frame with a
    // reserved opcode: a protocol error.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    raw.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = raw.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    raw.write_all(&[0x83, 0x02, b'h', b'i']).await.unwrap();
    // The server ends that connection (close frame and/or EOF).
    let ended = tokio::time::timeout(T, async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "server kept the broken connection open");

    // Plain garbage instead of an HTTP request.
    let mut junk = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    junk.write_all(b"\x00\x01\x02 definitely not http\r\n\r\n")
        .await
        .unwrap();
    let _ = tokio::time::timeout(T, junk.read(&mut buf)).await;

    // The other connection is unaffected, and new ones work.
    good.send(Message::Text("still here".into())).await.unwrap();
    assert_eq!(next(&mut good).await, Message::Text("still here".into()));
    let mut fresh = connect(&server.url()).await;
    fresh
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut fresh).await,
        Message::Binary(vec![1, 2, 3].into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_connections_over_the_limit_with_503() {
    let server = start_echo(Some(1)).await;
    let mut first = connect(&server.url()).await;
    first.send(Message::Text("a".into())).await.unwrap();
    assert_eq!(next(&mut first).await, Message::Text("a".into()));
    let refused = tokio::time::timeout(T, tokio_tungstenite::connect_async(server.url()))
        .await
        .expect("refusal timed out");
    match refused {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 503),
        other => panic!("expected HTTP 503, got {:?}", other.map(|_| ())),
    }
    // Once the first one leaves, a new connection gets in.
    first.close(None).await.unwrap();
    drop(first);
    let mut ok = None;
    for _ in 0..100 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(server.url()).await {
            ok = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = ok.expect("slot never freed");
    again.send(Message::Text("b".into())).await.unwrap();
    assert_eq!(next(&mut again).await, Message::Text("b".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_live_connections_with_1001() {
    let server = start_echo(None).await;
    let mut ws = connect(&server.url()).await;
    ws.send(Message::Text("x".into())).await.unwrap();
    next(&mut ws).await;
    let stopping = tokio::spawn(server.shutdown());
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
    drop(ws);
    tokio::time::timeout(T, stopping)
        .await
        .expect("serve did not return")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_exits_cleanly_on_sigterm() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(BIN)
        .args(["--log-format", "json", "echo", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn wsfault echo");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut addr = None;
    while addr.is_none() {
        let line = rx.recv_timeout(T).expect("no listening log line");
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if let Some(a) = v["listen"].as_str() {
                addr = Some(a.to_string());
            }
        }
    }
    let url = format!("ws://{}/", addr.unwrap());
    let mut ws = connect(&url).await;
    ws.send(Message::Binary(vec![9; 10].into())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::Binary(vec![9; 10].into()));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
    drop(ws);
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_exit_2() {
    let out = run_wsfault(vec!["echo".into(), "--listen".into(), "nonsense".into()]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    let out = run_wsfault(vec![
        "echo".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--max-connections".into(),
        "0".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
