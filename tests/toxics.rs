//! Every toxic observed from outside, over real sockets (docs/reference.md#proxies-and-toxics).
//!
//! Each test drives a raw WebSocket peer (or a real client) through an
//! in-process proxy and checks what reaches the wire: timings within
//! generous bounds, frame shapes, how TCP ends (close frame / FIN / RST /
//! still open), and the toxic action counters.

// The child is waited on in `PyEcho::drop`; the lint misses the panic path.
mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use wsfault::frame::{Frame, Opcode};

/// A proxy `p` in front of a raw upstream.
async fn setup(seed: Option<u64>) -> (TestProxy, SocketAddr, RawUpstream) {
    let upstream = RawUpstream::bind().await;
    let (proxy, addr) = TestProxy::with_proxy(&upstream.addr.to_string(), seed).await;
    (proxy, addr, upstream)
}

/// `wsfault_toxic_actions_total` of one toxic of proxy `p`.
async fn actions(proxy: &TestProxy, toxic: &str) -> f64 {
    proxy
        .metric(&format!(
            "wsfault_toxic_actions_total{{proxy=\"p\",toxic=\"{toxic}\""
        ))
        .await
}

/// Removes a toxic of proxy `p`; panics unless 204.
async fn remove_toxic(proxy: &TestProxy, name: &str) {
    let (status, body) = http(
        proxy.admin,
        "DELETE",
        &format!("/proxies/p/toxics/{name}"),
        None,
    )
    .await;
    assert_eq!(status, 204, "removing {name}: {body}");
}

fn ms_since(t: Instant) -> u128 {
    t.elapsed().as_millis()
}

fn text(f: &Frame) -> String {
    String::from_utf8_lossy(&f.plain_payload()).to_string()
}

/// Sends an upgrade over a fresh TCP connection; returns the status and the
/// body (read by Content-Length, or until EOF).
async fn upgrade_status(addr: SocketAddr) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.expect("send upgrade");
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_string();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if status == 101 {
                return (101, String::new());
            }
            let len: usize = header(&head, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(usize::MAX);
            if buf.len() - (pos + 4) >= len {
                let body = String::from_utf8_lossy(&buf[pos + 4..pos + 4 + len]).to_string();
                return (status, body);
            }
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return status_and_body(&buf),
        }
    }
}

// ---------------------------------------------------------------- latency

#[tokio::test]
async fn latency_delays_each_frame_and_keeps_order() {
    let (proxy, addr, upstream) = setup(Some(1)).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "latency", "stream": "downstream", "attributes": {"latency": 100}}),
        )
        .await;
    // Round trip: upstream is untouched, downstream waits 100 ms.
    let start = Instant::now();
    client.send(true, 0, Opcode::Text, b"ping?").await;
    let got = server.recv().await;
    assert!(ms_since(start) < 100, "upstream must not be delayed");
    server
        .send(true, 0, Opcode::Text, &got.plain_payload())
        .await;
    let echo = client.recv().await;
    let rtt = ms_since(start);
    assert_eq!(text(&echo), "ping?");
    assert!((100..=400).contains(&rtt), "rtt {rtt} ms not in [100, 400]");

    // Jitter: each frame waits 150 ± 50 ms, order kept.
    remove_toxic(&proxy, "latency_downstream").await;
    proxy
        .toxic(
            "p",
            json!({"name": "jittery", "type": "latency", "attributes": {"latency": 150, "jitter": 50}}),
        )
        .await;
    // With --seed 1 the delays are those of connection 0's "jittery" RNG;
    // order is kept, so frame i goes at the latest of delays 0..=i.
    use rand::RngExt;
    use wsfault::toxics::{toxic_rng, StreamDir};
    let mut rng = toxic_rng(Some(1), "p", 0, StreamDir::Downstream, "jittery");
    let due: Vec<u128> = (0..10)
        .map(|_| u128::from(rng.random_range(100u64..=200)))
        .scan(0, |latest, d| {
            *latest = d.max(*latest);
            Some(*latest)
        })
        .collect();
    assert!(due[9] - due[0] >= 20, "seed 1 gives a spread: {due:?}");
    let start = Instant::now();
    for i in 0..10 {
        server
            .send(true, 0, Opcode::Text, format!("{i}").as_bytes())
            .await;
    }
    let mut seen = Vec::new();
    for i in 0..10 {
        let f = client.recv().await;
        let t = ms_since(start);
        assert_eq!(text(&f), format!("{i}"), "order kept");
        assert!(
            (due[i]..=due[i] + 400).contains(&t),
            "frame {i} after {t} ms, not in [{}, {}] (due {due:?})",
            due[i],
            due[i] + 400
        );
        seen.push(t);
    }
    assert!(
        seen.iter().max() > seen.iter().min(),
        "jitter: the delays differ: {seen:?}"
    );
    assert_eq!(actions(&proxy, "jittery").await, 10.0);
}

// ---------------------------------------------------------------- bandwidth

#[tokio::test]
async fn bandwidth_caps_throughput() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    // 100 KB/s: 60 KB of payload takes about 0.6 s.
    proxy
        .toxic(
            "p",
            json!({"type": "bandwidth", "attributes": {"rate": 100}}),
        )
        .await;
    let payload = vec![b'x'; 1000];
    let start = Instant::now();
    for _ in 0..60 {
        server.send(true, 0, Opcode::Binary, &payload).await;
    }
    for _ in 0..60 {
        assert_eq!(client.recv().await.payload.len(), 1000);
    }
    let took = ms_since(start);
    assert!(
        (500..=3000).contains(&took),
        "60 KB at 100 KB/s took {took} ms"
    );
    // The other direction is not capped.
    let start = Instant::now();
    for _ in 0..60 {
        client.send(true, 0, Opcode::Binary, &payload).await;
    }
    for _ in 0..60 {
        server.recv().await;
    }
    assert!(ms_since(start) < 400, "upstream must not be capped");
}

// ---------------------------------------------------------------- slow_close

#[tokio::test]
async fn slow_close_holds_the_close_frame() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "slow_close", "attributes": {"delay": 400}}),
        )
        .await;
    let start = Instant::now();
    server.send(true, 0, Opcode::Text, b"last words").await;
    server.send_frame(&Frame::close(1000, "bye", None)).await;
    let data = client.recv().await;
    assert_eq!(text(&data), "last words");
    assert!(ms_since(start) < 300, "data is not held");
    let close = client.recv().await;
    let t = ms_since(start);
    assert_eq!(close.header.opcode, Opcode::Close);
    assert_eq!(close.close_code(), 1000);
    assert!(
        (400..=1500).contains(&t),
        "close after {t} ms, not in [400, 1500]"
    );
    assert_eq!(actions(&proxy, "slow_close_downstream").await, 1.0);
}

// ---------------------------------------------------------------- timeout

#[tokio::test]
async fn timeout_blackholes_then_cuts_both_sides() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "timeout", "attributes": {"timeout": 600}}),
        )
        .await;
    let start = Instant::now();
    server.send(true, 0, Opcode::Text, b"into the void").await;
    assert!(
        client
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing passes"
    );
    assert_eq!(client.end_within(SOON).await, EndSeen::Fin);
    let t = ms_since(start);
    assert!(
        (500..=2500).contains(&t),
        "cut after {t} ms, not in [500, 2500]"
    );
    assert_eq!(server.end_within(SOON).await, EndSeen::Fin);
}

#[tokio::test]
async fn timeout_zero_blackholes_forever() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "timeout", "stream": "upstream", "attributes": {"timeout": 0}}),
        )
        .await;
    client.send(true, 0, Opcode::Text, b"x").await;
    assert!(server
        .recv_within(Duration::from_millis(300))
        .await
        .is_none());
    // The other stream still flows; TCP stays open.
    server.send(true, 0, Opcode::Text, b"down").await;
    assert_eq!(text(&client.recv().await), "down");
    assert_eq!(
        server.end_within(Duration::from_secs(1)).await,
        EndSeen::StillOpen
    );
}

// ---------------------------------------------------------------- reset_peer

#[tokio::test]
async fn reset_peer_resets_both_sides() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "reset_peer", "attributes": {"timeout": 300}}),
        )
        .await;
    let start = Instant::now();
    // Still relaying before the timeout.
    server.send(true, 0, Opcode::Text, b"before").await;
    assert_eq!(text(&client.recv().await), "before");
    assert_eq!(client.end_within(SOON).await, EndSeen::Reset);
    let t = ms_since(start);
    assert!((250..=2500).contains(&t), "reset after {t} ms");
    assert_eq!(server.end_within(SOON).await, EndSeen::Reset);
    assert_eq!(actions(&proxy, "reset_peer_downstream").await, 1.0);
}

// ---------------------------------------------------------------- limit_data

#[tokio::test]
async fn limit_data_cuts_after_exactly_n_wire_bytes() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "limit_data", "stream": "upstream", "attributes": {"bytes": 100}}),
        )
        .await;
    // Masked 40-byte frames are 46 wire bytes: 46 + 46 + 8 of the third.
    let mut expected = Vec::new();
    for i in 0..3u8 {
        let frame = Frame::build(true, 0, Opcode::Binary, &[i; 40], Some([1, 2, 3, 4]));
        let mut wire = bytes::BytesMut::new();
        frame.encode(&mut wire);
        expected.extend_from_slice(&wire);
        client.send_frame(&frame).await;
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(SOON, server.tcp.read_to_end(&mut got)).await;
    assert!(matches!(read, Ok(Ok(_))), "upstream sees FIN: {read:?}");
    assert_eq!(got.len(), 100, "exactly 100 wire bytes");
    assert_eq!(
        &got[..],
        &expected[..100],
        "the bytes as sent, cut mid-frame"
    );
    assert_ne!(
        client.end_within(SOON).await,
        EndSeen::StillOpen,
        "client is cut too"
    );
    assert_eq!(actions(&proxy, "limit_data_upstream").await, 1.0);
}

// ---------------------------------------------------------------- slicer

#[tokio::test]
async fn slicer_resends_messages_as_small_continuation_frames() {
    let (proxy, addr, upstream) = setup(Some(3)).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"name": "down", "type": "slicer", "attributes": {"average_size": 10, "size_variation": 0, "delay": 20000}}),
        )
        .await;
    let message: Vec<u8> = (0..35u8).collect();
    let start = Instant::now();
    server.send(true, 0, Opcode::Binary, &message).await;
    let mut sizes = Vec::new();
    let mut joined = Vec::new();
    loop {
        let f = client.recv().await;
        let expected_op = if sizes.is_empty() {
            Opcode::Binary
        } else {
            Opcode::Continuation
        };
        assert_eq!(f.header.opcode, expected_op);
        assert_eq!(f.header.mask, None, "server → client frames are unmasked");
        sizes.push(f.payload.len());
        joined.extend_from_slice(&f.payload);
        if f.header.fin {
            break;
        }
    }
    assert_eq!(sizes, vec![10, 10, 10, 5]);
    assert_eq!(joined, message);
    assert!(ms_since(start) >= 50, "slices are spaced by delay (20 ms)");

    // Upstream: the new frames carry fresh masks and unmask to the original.
    proxy
        .toxic(
            "p",
            json!({"name": "up", "type": "slicer", "stream": "upstream", "attributes": {"average_size": 8, "size_variation": 3}}),
        )
        .await;
    let message: Vec<u8> = (0..100u8).collect();
    client.send(true, 0, Opcode::Binary, &message).await;
    let mut masks = BTreeSet::new();
    let mut joined = Vec::new();
    let mut count = 0;
    loop {
        let f = server.recv().await;
        count += 1;
        let mask = f.header.mask.expect("client → server frames are masked");
        assert_ne!(
            mask,
            [0x11, 0x22, 0x33, 0x44],
            "a fresh mask, not the client's"
        );
        masks.insert(mask);
        assert!(
            (5..=11).contains(&f.payload.len()) || f.header.fin,
            "slice of {} bytes",
            f.payload.len()
        );
        joined.extend_from_slice(&f.plain_payload());
        if f.header.fin {
            break;
        }
    }
    assert_eq!(joined, message);
    assert!(count >= 9, "{count} slices");
    assert_eq!(masks.len(), count, "one fresh mask per frame");
    assert_eq!(actions(&proxy, "up").await, 1.0);
}

// ---------------------------------------------------------------- fragment

#[tokio::test]
async fn fragment_splits_with_interleaved_pings_and_fresh_masks() {
    let (proxy, addr, upstream) = setup(Some(4)).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "fragment", "stream": "upstream", "attributes": {"max_frame_bytes": 8, "interleave_ping": true}}),
        )
        .await;
    let message = b"twenty bytes payload";
    client.send(true, 0, Opcode::Text, message).await;
    let expected = [
        (Opcode::Text, false, 8),
        (Opcode::Ping, true, 7),
        (Opcode::Continuation, false, 8),
        (Opcode::Ping, true, 7),
        (Opcode::Continuation, true, 4),
    ];
    let mut joined = Vec::new();
    let mut masks = BTreeSet::new();
    for (opcode, fin, len) in expected {
        let f = server.recv().await;
        assert_eq!(
            (f.header.opcode, f.header.fin, f.payload.len()),
            (opcode, fin, len)
        );
        let mask = f.header.mask.expect("masked toward the server");
        assert_ne!(mask, [0x11, 0x22, 0x33, 0x44]);
        masks.insert(mask);
        if opcode != Opcode::Ping {
            joined.extend_from_slice(&f.plain_payload());
        }
    }
    assert_eq!(masks.len(), 5, "each frame has its own mask");
    assert_eq!(&joined[..], message);

    // Downstream, without pings: unmasked fragments of at most 8 bytes.
    proxy
        .toxic(
            "p",
            json!({"name": "down", "type": "fragment", "attributes": {"max_frame_bytes": 8}}),
        )
        .await;
    server.send(true, 0, Opcode::Binary, &[7u8; 17]).await;
    let sizes: Vec<(Opcode, bool, usize, bool)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let f = client.recv().await;
            v.push((
                f.header.opcode,
                f.header.fin,
                f.payload.len(),
                f.header.mask.is_some(),
            ));
        }
        v
    };
    assert_eq!(
        sizes,
        vec![
            (Opcode::Binary, false, 8, false),
            (Opcode::Continuation, false, 8, false),
            (Opcode::Continuation, true, 1, false)
        ]
    );
    assert_eq!(actions(&proxy, "fragment_upstream").await, 1.0);
    assert_eq!(actions(&proxy, "down").await, 1.0);
}

// ---------------------------------------------------------------- message_loss

/// Sends `n` messages downstream through a fresh proxy with a 30 % loss
/// toxic (seeded); returns the missing indices and the toxic's action count.
async fn lossy_run(seed: u64, n: usize) -> (Vec<usize>, f64, EndSeen) {
    let (proxy, addr, upstream) = setup(Some(seed)).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "message_loss", "attributes": {"probability": 0.3}}),
        )
        .await;
    for i in 0..n {
        server
            .send(true, 0, Opcode::Text, format!("{i}").as_bytes())
            .await;
    }
    let mut seen = BTreeSet::new();
    while let Some(f) = client.recv_within(Duration::from_millis(700)).await {
        let i: usize = text(&f).parse().expect("index");
        assert!(seen.last().is_none_or(|last| *last < i), "order kept");
        seen.insert(i);
    }
    let missing = (0..n).filter(|i| !seen.contains(i)).collect();
    let acted = actions(&proxy, "message_loss_downstream").await;
    let end = client.end_within(Duration::from_millis(300)).await;
    (missing, acted, end)
}

#[tokio::test]
async fn message_loss_drops_at_the_rate_and_counts_each_drop() {
    let n = 400;
    let (missing, acted, end) = lossy_run(42, n).await;
    // With --seed 42, message k is lost when draw k of connection 0's
    // toxic RNG is under 0.3.
    use rand::RngExt;
    use wsfault::toxics::{toxic_rng, StreamDir};
    let name = "message_loss_downstream";
    let mut rng = toxic_rng(Some(42), "p", 0, StreamDir::Downstream, name);
    let expected: Vec<usize> = (0..n).filter(|_| rng.random::<f64>() < 0.3).collect();
    assert_eq!(missing, expected, "exactly the seeded messages are lost");
    assert_eq!(missing.len(), 129, "{} of {n} lost", missing.len());
    assert_eq!(
        acted,
        missing.len() as f64,
        "actions == messages the receiver missed"
    );
    assert_eq!(end, EndSeen::StillOpen, "TCP stays up: a silent gap");
}

#[tokio::test]
async fn message_loss_same_seed_same_dropped_indices() {
    let (first, _, _) = lossy_run(7, 200).await;
    let (second, _, _) = lossy_run(7, 200).await;
    assert!(!first.is_empty());
    assert_eq!(
        first, second,
        "same seed, same traffic ⇒ same dropped indices"
    );
    let (other, _, _) = lossy_run(8, 200).await;
    assert_ne!(first, other, "another seed drops other messages");
}

// ---------------------------------------------------------------- drop_connection

async fn drop_connection_end(mode: &str) -> (EndSeen, EndSeen, f64) {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "drop_connection", "stream": "upstream", "attributes": {"after_messages": 2, "mode": mode}}),
        )
        .await;
    for i in 0..3 {
        client
            .send(true, 0, Opcode::Text, format!("m{i}").as_bytes())
            .await;
    }
    assert_eq!(text(&server.recv().await), "m0");
    assert_eq!(text(&server.recv().await), "m1");
    let wait = Duration::from_secs(1);
    let (c, s) = tokio::join!(client.end_within(wait), server.end_within(wait));
    (c, s, actions(&proxy, "drop_connection_upstream").await)
}

#[tokio::test]
async fn drop_connection_reset_fin_and_blackhole_are_told_apart() {
    assert_eq!(
        drop_connection_end("reset").await,
        (EndSeen::Reset, EndSeen::Reset, 1.0)
    );
    assert_eq!(
        drop_connection_end("fin").await,
        (EndSeen::Fin, EndSeen::Fin, 1.0)
    );
    assert_eq!(
        drop_connection_end("blackhole").await,
        (EndSeen::StillOpen, EndSeen::StillOpen, 1.0)
    );
}

#[tokio::test]
async fn drop_connection_after_ms() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "drop_connection", "attributes": {"after_ms": 300, "mode": "fin"}}),
        )
        .await;
    let start = Instant::now();
    assert_eq!(client.end_within(SOON).await, EndSeen::Fin);
    let t = ms_since(start);
    assert!((250..=2500).contains(&t), "dropped after {t} ms");
    assert_eq!(server.end_within(SOON).await, EndSeen::Fin);
}

// ---------------------------------------------------------------- idle_timeout

/// Pings from the client every 100 ms for up to 1.5 s; returns when (if)
/// the client saw its TCP connection end, and how.
async fn ping_until_end(client: &mut RawWs) -> Option<(u128, EndSeen)> {
    let start = Instant::now();
    let ping = {
        let mut wire = bytes::BytesMut::new();
        Frame::build(true, 0, Opcode::Ping, b"hb", Some([9, 9, 9, 9])).encode(&mut wire);
        wire
    };
    while start.elapsed() < Duration::from_millis(1500) {
        let _ = client.tcp.write_all(&ping).await;
        match client.end_within(Duration::from_millis(100)).await {
            EndSeen::StillOpen => {}
            end => return Some((ms_since(start), end)),
        }
    }
    None
}

#[tokio::test]
async fn idle_timeout_ignores_pings_by_default() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "idle_timeout", "attributes": {"timeout": 500}}),
        )
        .await;
    let ended = ping_until_end(&mut client).await;
    let (t, end) = ended.expect("cut despite pings");
    assert!((400..=1400).contains(&t), "cut after {t} ms");
    assert_ne!(end, EndSeen::StillOpen);
    assert_ne!(server.end_within(SOON).await, EndSeen::StillOpen);
    assert_eq!(actions(&proxy, "idle_timeout_downstream").await, 1.0);
}

#[tokio::test]
async fn idle_timeout_counts_pings_when_asked() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "idle_timeout", "attributes": {"timeout": 500, "count_control_frames": true}}),
        )
        .await;
    assert_eq!(
        ping_until_end(&mut client).await,
        None,
        "pings keep the connection alive"
    );
    // Data still flows afterwards.
    client.send(true, 0, Opcode::Text, b"alive").await;
    assert_eq!(text(&server.recv_data().await), "alive");
    assert_eq!(actions(&proxy, "idle_timeout_downstream").await, 0.0);
}

#[tokio::test]
async fn idle_timeout_data_keeps_alive_then_close_code_to_both() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "idle_timeout", "stream": "upstream", "attributes": {"timeout": 400, "close_code": 4000}}),
        )
        .await;
    // Data every 150 ms (downstream only: the stream does not matter).
    for i in 0..6 {
        server
            .send(true, 0, Opcode::Text, format!("{i}").as_bytes())
            .await;
        assert_eq!(text(&client.recv().await), format!("{i}"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let start = Instant::now();
    let (c, s) = tokio::join!(client.recv_within(SOON), server.recv_within(SOON));
    let t = ms_since(start);
    let (c, s) = (c.expect("client close"), s.expect("server close"));
    assert_eq!(
        (c.header.opcode, c.close_code(), c.header.mask),
        (Opcode::Close, 4000, None)
    );
    assert_eq!((s.header.opcode, s.close_code()), (Opcode::Close, 4000));
    assert!(s.header.mask.is_some(), "the close to the server is masked");
    assert!(t <= 1500, "close after {t} ms of silence");
    // Both answer; the proxy ends both TCP connections.
    client
        .send_frame(&Frame::close(4000, "", Some([1, 2, 3, 4])))
        .await;
    server.send_frame(&Frame::close(4000, "", None)).await;
    assert_eq!(client.end_within(SOON).await, EndSeen::Fin);
    assert_eq!(server.end_within(SOON).await, EndSeen::Fin);
}

// ---------------------------------------------------------------- stall

#[tokio::test]
async fn stall_blocks_the_sender_while_the_other_stream_flows() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "stall", "stream": "upstream", "attributes": {"duration": 2500}}),
        )
        .await;
    let start = Instant::now();
    client.send(true, 0, Opcode::Text, b"first").await;
    assert!(
        server
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "stalled"
    );
    // Downstream keeps flowing.
    server.send(true, 0, Opcode::Text, b"down").await;
    assert_eq!(text(&client.recv().await), "down");
    // The client's writes block once the buffers fill.
    let chunk = {
        let mut wire = bytes::BytesMut::new();
        Frame::build(
            true,
            0,
            Opcode::Binary,
            &vec![0u8; 256 * 1024],
            Some([5, 6, 7, 8]),
        )
        .encode(&mut wire);
        wire
    };
    let mut written = 0usize;
    let mut blocked = false;
    while written < 256 * 1024 * 1024 && start.elapsed() < Duration::from_millis(1800) {
        match tokio::time::timeout(Duration::from_millis(200), client.tcp.write_all(&chunk)).await {
            Ok(Ok(())) => written += chunk.len(),
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => {
                blocked = true;
                break;
            }
        }
    }
    assert!(
        blocked,
        "the sender was never blocked ({written} bytes written)"
    );
    assert!(
        start.elapsed() < Duration::from_millis(2300),
        "test too slow to observe the stall"
    );
    // After the stall, the first message arrives first.
    let first = server.recv().await;
    let t = ms_since(start);
    assert_eq!(text(&first), "first");
    assert!(t >= 2000, "released after {t} ms, before the stall ended");
}

// ---------------------------------------------------------------- close

#[tokio::test]
async fn close_toxic_to_client_and_1001_to_server() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "close", "attributes": {"code": 4001, "reason": "maintenance", "after_ms": 200}}),
        )
        .await;
    let start = Instant::now();
    let c = client.recv().await;
    assert!(ms_since(start) >= 150, "after_ms respected");
    assert_eq!(
        (c.header.opcode, c.close_code(), c.header.mask),
        (Opcode::Close, 4001, None)
    );
    assert_eq!(&c.plain_payload()[2..], b"maintenance");
    let s = server.recv().await;
    assert_eq!((s.header.opcode, s.close_code()), (Opcode::Close, 1001));
    assert!(s.header.mask.is_some(), "masked toward the server");
    // Nobody replies: the proxy ends both TCP connections after about 1 s.
    assert_eq!(client.end_within(SOON).await, EndSeen::Fin);
    assert_eq!(server.end_within(SOON).await, EndSeen::Fin);
    assert_eq!(actions(&proxy, "close_downstream").await, 1.0);
}

#[tokio::test]
async fn close_toxic_to_server_after_messages_is_masked() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "close", "stream": "upstream", "attributes": {"code": 4002, "reason": "go", "after_messages": 2}}),
        )
        .await;
    for i in 0..3 {
        client
            .send(true, 0, Opcode::Text, format!("m{i}").as_bytes())
            .await;
    }
    assert_eq!(text(&server.recv().await), "m0");
    assert_eq!(text(&server.recv().await), "m1");
    let s = server.recv().await;
    assert_eq!((s.header.opcode, s.close_code()), (Opcode::Close, 4002));
    assert!(
        s.header.mask.is_some(),
        "the injected close to the server is masked"
    );
    assert_eq!(&s.plain_payload()[2..], b"go");
    let c = client.recv().await;
    assert_eq!(
        (c.header.opcode, c.close_code(), c.header.mask),
        (Opcode::Close, 1001, None)
    );
    // Both reply: the handshake completes and TCP ends.
    server.send_frame(&Frame::close(4002, "", None)).await;
    client
        .send_frame(&Frame::close(1001, "", Some([1, 2, 3, 4])))
        .await;
    assert_eq!(client.end_within(SOON).await, EndSeen::Fin);
    assert_eq!(server.end_within(SOON).await, EndSeen::Fin);
}

// ---------------------------------------------------------------- drop_control

#[tokio::test]
async fn drop_control_swallows_pings_so_no_pong_comes_back() {
    let echo = tungstenite_echo().await;
    let (proxy, addr) = TestProxy::with_proxy(&echo.to_string(), None).await;
    proxy
        .toxic(
            "p",
            json!({"type": "drop_control", "stream": "upstream", "attributes": {"opcodes": ["ping"]}}),
        )
        .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("connect");
    ws.send(Message::Ping(b"hb".to_vec().into()))
        .await
        .expect("ping");
    ws.send(Message::text("data")).await.expect("send");
    // The echo comes back, the pong never does.
    assert_eq!(
        ws.next().await.expect("echo").expect("frame"),
        Message::text("data")
    );
    let next = tokio::time::timeout(Duration::from_secs(1), ws.next()).await;
    assert!(next.is_err(), "no pong expected, got {next:?}");
    assert_eq!(actions(&proxy, "drop_control_upstream").await, 1.0);
}

#[tokio::test]
async fn drop_control_swallows_pongs_only() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "drop_control", "attributes": {"opcodes": "pong"}}),
        )
        .await;
    server.send(true, 0, Opcode::Pong, b"pong").await;
    server.send(true, 0, Opcode::Ping, b"ping").await;
    server.send(true, 0, Opcode::Text, b"data").await;
    let f = client.recv().await;
    assert_eq!(
        (f.header.opcode, &f.payload[..]),
        (Opcode::Ping, &b"ping"[..]),
        "pings pass"
    );
    assert_eq!(text(&client.recv().await), "data");
    assert_eq!(actions(&proxy, "drop_control_downstream").await, 1.0);
}

// ---------------------------------------------------------------- duplicate

#[tokio::test]
async fn duplicate_delivers_each_message_twice() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy.toxic("p", json!({"type": "duplicate"})).await;
    server.send(true, 0, Opcode::Text, b"a").await;
    server.send(false, 0, Opcode::Binary, b"b1").await;
    server.send(true, 0, Opcode::Ping, b"p").await;
    server.send(true, 0, Opcode::Continuation, b"b2").await;
    server.send(true, 0, Opcode::Text, b"c").await;
    let mut seen = Vec::new();
    for _ in 0..9 {
        let f = client.recv().await;
        seen.push((f.header.opcode, f.header.fin, text(&f)));
    }
    let t = |op, fin, s: &str| (op, fin, s.to_string());
    assert_eq!(
        seen,
        vec![
            t(Opcode::Text, true, "a"),
            t(Opcode::Text, true, "a"),
            t(Opcode::Binary, false, "b1"),
            t(Opcode::Ping, true, "p"),
            t(Opcode::Continuation, true, "b2"),
            t(Opcode::Binary, false, "b1"),
            t(Opcode::Continuation, true, "b2"),
            t(Opcode::Text, true, "c"),
            t(Opcode::Text, true, "c"),
        ]
    );
    assert!(client
        .recv_within(Duration::from_millis(200))
        .await
        .is_none());
    assert_eq!(actions(&proxy, "duplicate_downstream").await, 3.0);
}

// ---------------------------------------------------------------- rate_limit

#[tokio::test]
async fn rate_limit_delay_spaces_messages_out() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "rate_limit", "stream": "upstream", "attributes": {"messages_per_second": 10, "burst": 2}}),
        )
        .await;
    let start = Instant::now();
    for i in 0..6 {
        client
            .send(true, 0, Opcode::Text, format!("{i}").as_bytes())
            .await;
    }
    let mut times = Vec::new();
    for i in 0..6 {
        assert_eq!(text(&server.recv().await), format!("{i}"));
        times.push(ms_since(start));
    }
    assert!(times[1] < 80, "the burst passes at once: {times:?}");
    assert!(
        (300..=1500).contains(&times[5]),
        "4 extra messages at 10/s: {times:?}"
    );
    assert_eq!(actions(&proxy, "rate_limit_upstream").await, 4.0);
}

#[tokio::test]
async fn rate_limit_drop_discards_the_excess() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "rate_limit", "stream": "upstream", "attributes": {"messages_per_second": 5, "burst": 3, "action": "drop"}}),
        )
        .await;
    for i in 0..10 {
        client
            .send(true, 0, Opcode::Text, format!("{i}").as_bytes())
            .await;
    }
    for i in 0..3 {
        assert_eq!(text(&server.recv().await), format!("{i}"));
    }
    assert!(
        server
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "the excess is dropped"
    );
    // Tokens come back: one more passes later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.send(true, 0, Opcode::Text, b"later").await;
    assert_eq!(text(&server.recv().await), "later");
    assert_eq!(actions(&proxy, "rate_limit_upstream").await, 7.0);
}

#[tokio::test]
async fn rate_limit_close_sends_1008_to_sender_and_1001_to_receiver() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "rate_limit", "stream": "upstream", "attributes": {"messages_per_second": 1, "burst": 2, "action": "close"}}),
        )
        .await;
    for i in 0..3 {
        client
            .send(true, 0, Opcode::Text, format!("{i}").as_bytes())
            .await;
    }
    assert_eq!(text(&server.recv().await), "0");
    assert_eq!(text(&server.recv().await), "1");
    let s = server.recv().await;
    assert_eq!((s.header.opcode, s.close_code()), (Opcode::Close, 1001));
    assert!(s.header.mask.is_some());
    let c = client.recv().await;
    assert_eq!((c.header.opcode, c.close_code()), (Opcode::Close, 1008));
    assert_eq!(actions(&proxy, "rate_limit_upstream").await, 1.0);
}

// ---------------------------------------------------------------- reject_handshake

#[tokio::test]
async fn reject_handshake_answers_status_and_body() {
    let echo = tungstenite_echo().await;
    let (proxy, addr) = TestProxy::with_proxy(&echo.to_string(), None).await;
    proxy
        .toxic(
            "p",
            json!({"type": "reject_handshake", "attributes": {"status": 429, "body": "slow down"}}),
        )
        .await;
    assert_eq!(upgrade_status(addr).await, (429, "slow down".to_string()));
    assert_eq!(actions(&proxy, "reject_handshake_downstream").await, 1.0);
    remove_toxic(&proxy, "reject_handshake_downstream").await;
    assert_eq!(upgrade_status(addr).await.0, 101);
}

/// Which of `n` upgrades a seeded 50 % reject_handshake refuses.
async fn rejected_pattern(seed: u64, n: usize) -> Vec<bool> {
    let echo = tungstenite_echo().await;
    let (proxy, addr) = TestProxy::with_proxy(&echo.to_string(), Some(seed)).await;
    proxy
        .toxic(
            "p",
            json!({"type": "reject_handshake", "attributes": {"status": 503, "probability": 0.5}}),
        )
        .await;
    let mut pattern = Vec::new();
    for _ in 0..n {
        let (status, _) = upgrade_status(addr).await;
        assert!(status == 101 || status == 503, "status {status}");
        pattern.push(status == 503);
    }
    let rejected = pattern.iter().filter(|r| **r).count();
    assert_eq!(
        actions(&proxy, "reject_handshake_downstream").await,
        rejected as f64
    );
    pattern
}

#[tokio::test]
async fn reject_handshake_probability_is_respected_and_seeded() {
    let n = 60;
    let first = rejected_pattern(11, n).await;
    // With --seed 11, upgrade k is refused when the first draw of its
    // toxic's RNG is under 0.5.
    use rand::RngExt;
    use wsfault::toxics::{toxic_rng, StreamDir};
    let expected: Vec<bool> = (0..n as u64)
        .map(|k| {
            let name = "reject_handshake_downstream";
            let mut rng = toxic_rng(Some(11), "p", k, StreamDir::Downstream, name);
            rng.random::<f64>() < 0.5
        })
        .collect();
    assert_eq!(first, expected, "exactly the seeded upgrades are refused");
    let rejected = first.iter().filter(|r| **r).count();
    assert_eq!(rejected, 34, "{rejected} of {n} rejected");
    assert_eq!(
        rejected_pattern(11, n).await,
        first,
        "same seed, same decisions"
    );
}

// ---------------------------------------------------------------- handshake_delay

#[tokio::test]
async fn handshake_delay_delays_the_101() {
    let echo = tungstenite_echo().await;
    let (proxy, addr) = TestProxy::with_proxy(&echo.to_string(), None).await;
    let start = Instant::now();
    assert_eq!(upgrade_status(addr).await.0, 101);
    assert!(ms_since(start) < 300, "no delay without the toxic");
    proxy
        .toxic(
            "p",
            json!({"type": "handshake_delay", "attributes": {"latency": 400}}),
        )
        .await;
    let start = Instant::now();
    assert_eq!(upgrade_status(addr).await.0, 101);
    let t = ms_since(start);
    assert!((400..=2000).contains(&t), "101 after {t} ms");
}

// ---------------------------------------------------------------- toxicity

#[tokio::test]
async fn toxicity_zero_has_no_effect() {
    let (proxy, addr, upstream) = setup(Some(5)).await;
    proxy
        .toxic(
            "p",
            json!({"name": "lossy", "type": "message_loss", "toxicity": 0.0, "attributes": {"probability": 1.0}}),
        )
        .await;
    proxy
        .toxic(
            "p",
            json!({"name": "slow", "type": "latency", "toxicity": 0, "attributes": {"latency": 1000}}),
        )
        .await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    let start = Instant::now();
    for i in 0..20 {
        server
            .send(true, 0, Opcode::Text, format!("{i}").as_bytes())
            .await;
    }
    for i in 0..20 {
        assert_eq!(text(&client.recv().await), format!("{i}"));
    }
    assert!(ms_since(start) < 500, "no latency");
    assert_eq!(actions(&proxy, "lossy").await, 0.0);
    assert_eq!(actions(&proxy, "slow").await, 0.0);
}

#[tokio::test]
async fn toxicity_half_applies_to_about_half_the_connections() {
    let (proxy, addr, upstream) = setup(Some(6)).await;
    proxy
        .toxic(
            "p",
            json!({"type": "message_loss", "toxicity": 0.5, "attributes": {"probability": 1.0}}),
        )
        .await;
    let mut affected = Vec::new();
    let n = 30;
    for ordinal in 0..n {
        let (mut client, mut server) = raw_pair(addr, &upstream).await;
        server.send(true, 0, Opcode::Text, b"x").await;
        // A marker that is not dropped shows the connection is unaffected.
        if client
            .recv_within(Duration::from_millis(150))
            .await
            .is_none()
        {
            affected.push(ordinal);
        }
    }
    // With --seed 6, connection k is affected when the first draw of its
    // toxic's RNG is under 0.5 (the toxicity draw).
    use rand::RngExt;
    use wsfault::toxics::{toxic_rng, StreamDir};
    let expected: Vec<u64> = (0..n)
        .filter(|k| {
            let name = "message_loss_downstream";
            let mut rng = toxic_rng(Some(6), "p", *k, StreamDir::Downstream, name);
            rng.random::<f64>() < 0.5
        })
        .collect();
    assert_eq!(affected, expected, "exactly the seeded connections");
    // The same list as toxics::runtime's unit test: seeding is stable.
    assert_eq!(expected, [1, 2, 3, 7, 8, 11, 20, 22, 25, 29]);
}

// ---------------------------------------------------------------- match

/// Whether a downstream message reaches the client of a connection opened
/// with `path` and `extra` headers (upstream answering with `answer`).
async fn delivered(
    addr: SocketAddr,
    upstream: &RawUpstream,
    path: &str,
    extra: &[(&str, &str)],
    answer: &[(&str, &str)],
) -> bool {
    let (mut client, mut server) = tokio::join!(
        RawWs::connect(addr, path, extra),
        upstream.accept_with(answer)
    );
    server.send(true, 0, Opcode::Text, b"hello").await;
    client
        .recv_within(Duration::from_millis(300))
        .await
        .is_some()
}

#[tokio::test]
async fn match_path_header_and_subprotocol_select_connections() {
    let (proxy, addr, upstream) = setup(None).await;
    proxy
        .toxic(
            "p",
            json!({"name": "by-path", "type": "message_loss", "attributes": {"probability": 1.0}, "match": {"path": "/chat*"}}),
        )
        .await;
    assert!(
        !delivered(addr, &upstream, "/chat/room?x=1", &[], &[]).await,
        "matching path is affected"
    );
    assert!(
        delivered(addr, &upstream, "/news", &[], &[]).await,
        "other path is not"
    );
    remove_toxic(&proxy, "by-path").await;

    proxy
        .toxic(
            "p",
            json!({"name": "by-header", "type": "message_loss", "attributes": {"probability": 1.0}, "match": {"header": {"X-Tenant": "a"}}}),
        )
        .await;
    assert!(!delivered(addr, &upstream, "/", &[("x-tenant", "a")], &[]).await);
    assert!(delivered(addr, &upstream, "/", &[("x-tenant", "b")], &[]).await);
    assert!(delivered(addr, &upstream, "/", &[], &[]).await);
    remove_toxic(&proxy, "by-header").await;

    proxy
        .toxic(
            "p",
            json!({"name": "by-sub", "type": "message_loss", "attributes": {"probability": 1.0}, "match": {"subprotocol": "v2"}}),
        )
        .await;
    let v2 = [("Sec-WebSocket-Protocol", "v2")];
    let v1 = [("Sec-WebSocket-Protocol", "v1")];
    assert!(!delivered(addr, &upstream, "/", &v2, &v2).await);
    assert!(delivered(addr, &upstream, "/", &v1, &v1).await);
    assert!(delivered(addr, &upstream, "/", &[], &[]).await);
    assert_eq!(actions(&proxy, "by-path").await, 1.0);
    assert_eq!(actions(&proxy, "by-header").await, 1.0);
    assert_eq!(actions(&proxy, "by-sub").await, 1.0);
}

// ---------------------------------------------------------------- schedule

#[tokio::test]
async fn schedule_windows_open_and_close_without_api_calls() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    // Loss windows [300, 900) and [1800, 2400) ms after the toxic is added.
    proxy
        .toxic(
            "p",
            json!({"type": "message_loss", "attributes": {"probability": 1.0},
                   "schedule": {"start_after": 300, "duration": 600, "period": 1500}}),
        )
        .await;
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut got = BTreeSet::new();
        while let Some(f) = client.recv_within(Duration::from_millis(1500)).await {
            got.insert(text(&f).parse::<u128>().expect("ms"));
        }
        got
    });
    let mut sent = Vec::new();
    while start.elapsed() < Duration::from_millis(2700) {
        let t = ms_since(start);
        server
            .send(true, 0, Opcode::Text, format!("{t}").as_bytes())
            .await;
        sent.push(t);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let got = reader.await.expect("reader");
    let in_any =
        |t: u128, ranges: &[(u128, u128)]| ranges.iter().any(|(a, b)| (*a..=*b).contains(&t));
    let must_drop = [(420, 780), (1920, 2280)];
    let must_pass = [(0, 200), (1020, 1680), (2520, 2700)];
    for t in &sent {
        if in_any(*t, &must_drop) {
            assert!(
                !got.contains(t),
                "message sent at {t} ms passed inside a window"
            );
        }
        if in_any(*t, &must_pass) {
            assert!(
                got.contains(t),
                "message sent at {t} ms lost outside the windows"
            );
        }
    }
    assert!(sent.iter().filter(|t| in_any(**t, &must_drop)).count() >= 10);
}

// ---------------------------------------------------------------- live changes

#[tokio::test]
async fn adding_and_removing_a_toxic_acts_on_a_live_connection() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    server.send(true, 0, Opcode::Text, b"before").await;
    assert_eq!(text(&client.recv().await), "before");
    proxy
        .toxic(
            "p",
            json!({"type": "message_loss", "attributes": {"probability": 1.0}}),
        )
        .await;
    server.send(true, 0, Opcode::Text, b"during").await;
    assert!(
        client
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "dropped from the next frame on"
    );
    remove_toxic(&proxy, "message_loss_downstream").await;
    server.send(true, 0, Opcode::Text, b"after").await;
    assert_eq!(text(&client.recv().await), "after");
}

#[tokio::test]
async fn removing_latency_releases_held_frames_in_order() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "latency", "attributes": {"latency": 3000}}),
        )
        .await;
    for i in 0..10 {
        server
            .send(true, 0, Opcode::Text, format!("{i}").as_bytes())
            .await;
    }
    assert!(
        client
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "held"
    );
    let removed = Instant::now();
    remove_toxic(&proxy, "latency_downstream").await;
    // Held frames are released now, without waiting for new traffic.
    for i in 0..10 {
        assert_eq!(text(&client.recv().await), format!("{i}"));
    }
    let t = ms_since(removed);
    assert!(t < 1000, "held frames released {t} ms after the removal");
    // Frames sent after the change follow, in order, nothing lost.
    for i in 10..20 {
        server
            .send(true, 0, Opcode::Text, format!("{i}").as_bytes())
            .await;
    }
    for i in 10..20 {
        assert_eq!(text(&client.recv().await), format!("{i}"));
    }
}

#[tokio::test]
async fn removing_latency_mid_stream_loses_and_reorders_nothing() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "latency", "attributes": {"latency": 500}}),
        )
        .await;
    let sender = tokio::spawn(async move {
        for i in 0..60 {
            server
                .send(true, 0, Opcode::Text, format!("{i}").as_bytes())
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    remove_toxic(&proxy, "latency_downstream").await;
    for i in 0..60 {
        assert_eq!(
            text(&client.recv().await),
            format!("{i}"),
            "in order, none lost"
        );
    }
    let _server = sender.await.expect("sender");
}

// ---------------------------------------------------------------- API validation

#[tokio::test]
async fn invalid_toxic_gets_400_and_keeps_previous_toxics() {
    let (proxy, addr, upstream) = setup(None).await;
    proxy
        .toxic(
            "p",
            json!({"type": "latency", "attributes": {"latency": 200}}),
        )
        .await;
    let bad = [
        (
            json!({"name": "bad1", "type": "latency", "attributes": {"latency": -5}}),
            "latency",
        ),
        (
            json!({"name": "bad2", "type": "message_loss", "attributes": {"probability": 1.5}}),
            "probability",
        ),
        (
            json!({"name": "bad3", "type": "fragment", "attributes": {"max_frame_bytes": 0}}),
            "max_frame_bytes",
        ),
        (
            json!({"name": "bad4", "type": "latency", "toxicity": 2, "attributes": {"latency": 1}}),
            "toxicity",
        ),
    ];
    for (body, attr) in bad {
        let (status, text) = http(
            proxy.admin,
            "POST",
            "/proxies/p/toxics",
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(attr), "message names {attr}: {text}");
        assert!(
            text.contains("valid range"),
            "message names the valid range: {text}"
        );
    }
    // Updating with a bad value is refused too.
    let (status, text) = http(
        proxy.admin,
        "POST",
        "/proxies/p/toxics/latency_downstream",
        Some(&json!({"attributes": {"jitter": "lots"}}).to_string()),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("jitter") && text.contains("valid range"),
        "{text}"
    );
    // Only the first toxic is there, unchanged, and it still acts.
    let (status, list) = http(proxy.admin, "GET", "/proxies/p/toxics", None).await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&list).expect("json");
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, vec!["latency_downstream"]);
    assert_eq!(list[0]["attributes"], json!({"latency": 200}));
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    let start = Instant::now();
    server.send(true, 0, Opcode::Text, b"x").await;
    client.recv().await;
    assert!(ms_since(start) >= 200, "the previous toxic still applies");
}

// ---------------------------------------------------------------- timers and updates

#[tokio::test]
async fn timers_count_from_the_connection_when_the_toxic_is_older() {
    let (proxy, addr, upstream) = setup(None).await;
    proxy
        .toxic(
            "p",
            json!({"type": "close", "attributes": {"code": 4003, "after_ms": 400}}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let start = Instant::now();
    let (mut client, _server) = raw_pair(addr, &upstream).await;
    let c = client.recv().await;
    let t = ms_since(start);
    assert_eq!(c.close_code(), 4003);
    assert!(
        (350..=2000).contains(&t),
        "close {t} ms after the connection opened"
    );
}

#[tokio::test]
async fn updating_a_toxic_acts_on_a_live_connection() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "latency", "attributes": {"latency": 300}}),
        )
        .await;
    let start = Instant::now();
    server.send(true, 0, Opcode::Text, b"slow").await;
    assert_eq!(text(&client.recv().await), "slow");
    assert!(ms_since(start) >= 300);
    let (status, body) = http(
        proxy.admin,
        "POST",
        "/proxies/p/toxics/latency_downstream",
        Some(&json!({"attributes": {"latency": 0}}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let start = Instant::now();
    server.send(true, 0, Opcode::Text, b"fast").await;
    assert_eq!(text(&client.recv().await), "fast");
    assert!(
        ms_since(start) < 200,
        "the update applies from the next frame"
    );
}

#[tokio::test]
async fn slow_close_holds_the_fin() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "slow_close", "attributes": {"delay": 400}}),
        )
        .await;
    let start = Instant::now();
    server.tcp.shutdown().await.expect("shutdown");
    assert_eq!(client.end_within(SOON).await, EndSeen::Fin);
    let t = ms_since(start);
    assert!((400..=1500).contains(&t), "FIN after {t} ms");
}

#[tokio::test]
async fn stall_every_repeats_the_pause() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    // Paused during [0, 300) and [1000, 1300) ms.
    proxy
        .toxic(
            "p",
            json!({"type": "stall", "stream": "upstream", "attributes": {"duration": 300, "every": 1000}}),
        )
        .await;
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut arrivals = Vec::new();
        while let Some(f) = server.recv_within(Duration::from_millis(800)).await {
            arrivals.push((text(&f).parse::<u128>().expect("ms"), ms_since(start)));
        }
        arrivals
    });
    while start.elapsed() < Duration::from_millis(1500) {
        client
            .send(
                true,
                0,
                Opcode::Text,
                format!("{}", ms_since(start)).as_bytes(),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let arrivals = reader.await.expect("reader");
    assert!(arrivals.len() >= 20, "{arrivals:?}");
    for (sent, got) in &arrivals {
        if (0..=200).contains(sent) || (1050..=1200).contains(sent) {
            let end = if *sent < 500 { 250 } else { 1250 };
            assert!(*got >= end, "sent at {sent}, arrived at {got}: not stalled");
        }
        if (400..=900).contains(sent) {
            assert!(
                got - sent < 200,
                "sent at {sent}, arrived at {got}: stalled outside a window"
            );
        }
    }
}

#[tokio::test]
async fn limit_data_on_a_frame_boundary_delivers_whole_frames() {
    let (proxy, addr, upstream) = setup(None).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "limit_data", "attributes": {"bytes": 24}}),
        )
        .await;
    // Unmasked 10-byte frames are 12 wire bytes: exactly two pass.
    for i in 0..3u8 {
        server.send(true, 0, Opcode::Binary, &[i; 10]).await;
    }
    assert_eq!(&client.recv().await.payload[..], &[0u8; 10]);
    assert_eq!(&client.recv().await.payload[..], &[1u8; 10]);
    assert!(
        client
            .recv_within(Duration::from_millis(500))
            .await
            .is_none(),
        "nothing after the limit"
    );
    assert_ne!(
        server.end_within(SOON).await,
        EndSeen::StillOpen,
        "the server is cut too"
    );
}

/// `match.message`: messages a toxic passes by are not delayed by it, not
/// even behind a message it holds; whole messages stay whole.
#[tokio::test]
async fn messages_a_toxic_passes_by_overtake_what_it_holds() {
    let (proxy, addr, upstream) = setup(Some(1)).await;
    let (mut client, mut server) = raw_pair(addr, &upstream).await;
    proxy
        .toxic(
            "p",
            json!({"type": "latency", "stream": "downstream", "attributes": {"latency": 1500},
                   "match": {"message": {"contains": "slow"}}}),
        )
        .await;
    let start = Instant::now();
    server.send(true, 0, Opcode::Text, b"slow-1").await;
    server.send(false, 0, Opcode::Text, b"fast-").await;
    server.send(true, 0, Opcode::Continuation, b"1").await;
    server.send(true, 0, Opcode::Text, b"fast-2").await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let frame = client.recv().await;
        got.push((text(&frame), frame.header.fin, ms_since(start)));
    }
    let order: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(order, ["fast-", "1", "fast-2", "slow-1"], "{got:?}");
    assert!(got[2].2 < 1000, "fast-2 waited behind slow-1: {got:?}");
    assert!(got[3].2 >= 1500, "slow-1 not held: {got:?}");
}
