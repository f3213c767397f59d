//! For the echo-server and load-client tests: the real echo server
//! in-process, a deliberately broken server, a server that refuses the
//! upgrade, a lossy forwarder, and a small XML well-formedness check.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

/// A running in-process echo server; stops when dropped.
pub struct EchoServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl EchoServer {
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Triggers the shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("serve task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts `wsfault::echo::serve` on 127.0.0.1:0.
pub async fn start_echo(max_connections: Option<usize>) -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(wsfault::echo::serve(
        listener,
        max_connections,
        async move {
            let _ = rx.await;
        },
    ));
    EchoServer {
        addr,
        stop: Some(tx),
        task: Some(task),
    }
}

/// What the broken server gets wrong. Message indexes count from 1 per
/// connection (echo mode); seqs are the resume protocol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Echo mode: the n-th echo is sent after the (n+1)-th.
    SwapEcho(u64),
    /// Echo mode: the n-th echo is sent twice.
    RepeatEcho(u64),
    /// Echo mode: the n-th echo is never sent.
    SkipEcho(u64),
    /// Resume mode: seq S is never sent, live or in a replay.
    ResumeSkip(u64),
    /// Resume mode: the message after seq S is given seq S again (a server
    /// whose sequence counter did not advance). A byte-identical second copy
    /// would be indistinguishable from a wire duplicate, which the resume
    /// protocol discards by seq.
    ResumeRepeat(u64),
    /// No resume protocol at all: every message is echoed unchanged.
    PlainEcho,
}

/// Starts a WebSocket server on 127.0.0.1:0 with one deliberate fault.
pub async fn start_broken(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let mut index = 0u64;
                let mut reused = false;
                let mut held: Option<Message> = None;
                // Resume state (one session per connection is enough here).
                let mut next_seq = 1u64;
                let mut retained: Vec<(u64, String)> = Vec::new();
                let mut seen = HashSet::new();
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Binary(_) => {
                            index += 1;
                            let out: Vec<Message> = match fault {
                                Fault::SwapEcho(n) if index == n => {
                                    held = Some(msg);
                                    vec![]
                                }
                                Fault::SwapEcho(n) if index == n + 1 => {
                                    let mut v = vec![msg];
                                    v.extend(held.take());
                                    v
                                }
                                Fault::RepeatEcho(n) if index == n => vec![msg.clone(), msg],
                                Fault::SkipEcho(n) if index == n => vec![],
                                _ => vec![msg],
                            };
                            for m in out {
                                if ws.send(m).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Message::Text(text) => {
                            if fault == Fault::PlainEcho {
                                if ws.send(Message::Text(text)).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                            let v: serde_json::Value = match serde_json::from_str(text.as_str()) {
                                Ok(v) => v,
                                Err(_) => {
                                    let _ = ws.send(Message::Text(text)).await;
                                    continue;
                                }
                            };
                            let skip = match fault {
                                Fault::ResumeSkip(s) => Some(s),
                                _ => None,
                            };
                            match v["type"].as_str() {
                                Some("hello") => {
                                    let ack = v["ack"].as_u64().unwrap_or(0);
                                    let welcome = serde_json::json!({
                                        "type": "welcome", "session": v["session"], "next": next_seq
                                    });
                                    let _ =
                                        ws.send(Message::Text(welcome.to_string().into())).await;
                                    for (seq, t) in &retained {
                                        if *seq > ack && Some(*seq) != skip {
                                            let _ = ws.send(Message::Text(t.clone().into())).await;
                                        }
                                    }
                                }
                                Some("msg") => {
                                    let cseq = v["cseq"].as_u64().unwrap_or(0);
                                    if !seen.insert(cseq) {
                                        continue;
                                    }
                                    let seq = match fault {
                                        Fault::ResumeRepeat(s) if next_seq == s + 1 && !reused => {
                                            reused = true;
                                            s
                                        }
                                        _ => {
                                            next_seq += 1;
                                            next_seq - 1
                                        }
                                    };
                                    let echo = serde_json::json!({
                                        "type": "echo", "seq": seq, "cseq": cseq, "body": v["body"]
                                    })
                                    .to_string();
                                    retained.push((seq, echo.clone()));
                                    if Some(seq) == skip {
                                        continue;
                                    }
                                    if ws.send(Message::Text(echo.into())).await.is_err() {
                                        return;
                                    }
                                }
                                _ => {
                                    let _ = ws.send(Message::Text(text)).await;
                                }
                            }
                        }
                        Message::Close(_) => {}
                        _ => {}
                    }
                }
            });
        }
    });
    addr
}

/// A TCP server that answers every request with a fixed HTTP response.
pub async fn start_http_refuser(status_line: &'static str, body: &'static str) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 {status_line}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// A small well-formedness check: balanced, properly nested tags, quoted
/// attributes, no raw `<` or stray `&` in text or attribute values.
pub fn check_xml(xml: &str) -> Result<(), String> {
    let body = xml
        .strip_prefix("<?xml")
        .and_then(|r| r.split_once("?>").map(|(_, rest)| rest))
        .ok_or("no XML declaration")?;
    let mut stack: Vec<String> = Vec::new();
    let mut rest = body;
    let mut roots = 0;
    while let Some(lt) = rest.find('<') {
        check_text(&rest[..lt])?;
        let after = &rest[lt + 1..];
        let gt = find_tag_end(after).ok_or("unterminated tag")?;
        let tag = &after[..gt];
        rest = &after[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("unexpected </{name}>"))?;
            if open != name.trim() {
                return Err(format!("</{name}> closes <{open}>"));
            }
        } else {
            let self_closing = tag.ends_with('/');
            let inner = tag.trim_end_matches('/');
            let name: String = inner.chars().take_while(|c| !c.is_whitespace()).collect();
            if name.is_empty() {
                return Err("empty tag name".into());
            }
            check_attrs(&inner[name.len()..])?;
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name);
            }
        }
    }
    check_text(rest)?;
    if !stack.is_empty() {
        return Err(format!("unclosed tags: {stack:?}"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(())
}

fn find_tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"') | (None, '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn check_text(t: &str) -> Result<(), String> {
    if t.contains('<') {
        return Err("raw < in text".into());
    }
    let mut rest = t;
    while let Some(amp) = rest.find('&') {
        let after = &rest[amp + 1..];
        let semi = after.find(';').ok_or("& without ;")?;
        let ent = &after[..semi];
        let ok = matches!(ent, "amp" | "lt" | "gt" | "quot" | "apos")
            || (ent.starts_with('#') && ent.len() > 1);
        if !ok {
            return Err(format!("bad entity &{ent};"));
        }
        rest = &after[semi + 1..];
    }
    Ok(())
}

fn check_attrs(s: &str) -> Result<(), String> {
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or(format!("attribute without value: {rest}"))?;
        let name = rest[..eq].trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("bad attribute name `{name}`"));
        }
        let after = rest[eq + 1..].trim_start();
        let q = after.chars().next().ok_or("missing attribute value")?;
        if q != '"' && q != '\'' {
            return Err("unquoted attribute".into());
        }
        let end = after[1..].find(q).ok_or("unterminated attribute")?;
        check_text(&after[1..1 + end])?;
        rest = after[end + 2..].trim_start();
    }
    Ok(())
}

/// Faults of [`start_lossy_proxy`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Lossy {
    /// Drop each data frame client → server with probability 1/n.
    pub drop_every_up: Option<u64>,
    /// Drop each data frame server → client with probability 1/n.
    pub drop_every_down: Option<u64>,
    /// End each connection abruptly (no close frame) after this long.
    pub cut_after: Option<Duration>,
}

/// A TCP forwarder that understands just enough WebSocket framing to drop
/// whole data frames, and can cut connections: a poor man's chaos proxy.
pub async fn start_lossy_proxy(upstream: SocketAddr, faults: Lossy) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let cut = async {
                    match faults.cut_after {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = pump(cr, sw, faults.drop_every_up) => {}
                    _ = pump(sr, cw, faults.drop_every_down) => {}
                    _ = cut => {}
                }
            });
        }
    });
    addr
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    drop_every: Option<u64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // The HTTP head passes untouched.
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    if to.write_all(&buf[..head_end]).await.is_err() {
        return;
    }
    buf.drain(..head_end);
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(rand::random());
    loop {
        // Forward every complete frame in the buffer.
        loop {
            if buf.len() < 2 {
                break;
            }
            let len7 = (buf[1] & 0x7f) as usize;
            let masked = buf[1] & 0x80 != 0;
            let (ext, len) = match len7 {
                126 if buf.len() >= 4 => (2, u16::from_be_bytes([buf[2], buf[3]]) as usize),
                127 if buf.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[2..10]);
                    (8, u64::from_be_bytes(b) as usize)
                }
                126 | 127 => break,
                n => (0, n),
            };
            let total = 2 + ext + if masked { 4 } else { 0 } + len;
            if buf.len() < total {
                break;
            }
            let opcode = buf[0] & 0x0f;
            let mut keep = true;
            if opcode == 1 || opcode == 2 {
                if let Some(n) = drop_every {
                    keep = rng.random_range(0..n) != 0;
                }
            }
            if keep && to.write_all(&buf[..total]).await.is_err() {
                return;
            }
            buf.drain(..total);
        }
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
