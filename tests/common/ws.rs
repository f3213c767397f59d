//! An in-process proxy, raw-frame WebSocket peers that can tell a close
//! frame from FIN from RST, a tiny async HTTP client for the admin API, and
//! echo servers: tokio-tungstenite in-process and Python `websockets`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;
use wsfault::config::ProxySpec;
use wsfault::frame::{Frame, FrameCodec, Opcode};
use wsfault::proxy::Server;

use super::tools::python;

/// Generous bound for anything that should happen "soon".
pub const SOON: Duration = Duration::from_secs(5);

/// A proxy server running in this process, with its admin API.
pub struct TestProxy {
    /// The registry.
    pub server: Arc<Server>,
    /// Admin API address.
    pub admin: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
}

impl TestProxy {
    /// Starts a server (no proxies) and its admin API on 127.0.0.1:0.
    pub async fn start(seed: Option<u64>) -> TestProxy {
        Self::start_with(seed, wsfault::admin::AdminOptions::default()).await
    }

    /// Like [`TestProxy::start`], with admin options (e.g. a bearer token).
    pub async fn start_with(seed: Option<u64>, options: wsfault::admin::AdminOptions) -> TestProxy {
        let server = Server::new(seed);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let admin = listener.local_addr().expect("admin addr");
        let (stop, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(wsfault::admin::serve(listener, server.clone(), options, rx));
        TestProxy {
            server,
            admin,
            stop,
        }
    }

    /// Starts a server with one proxy `p` in front of `upstream`; returns it and the proxy's address.
    pub async fn with_proxy(upstream: &str, seed: Option<u64>) -> (TestProxy, SocketAddr) {
        let proxy = TestProxy::start(seed).await;
        let addr = proxy.add("p", upstream).await;
        (proxy, addr)
    }

    /// Adds a proxy named `name` listening on 127.0.0.1:0.
    pub async fn add(&self, name: &str, upstream: &str) -> SocketAddr {
        self.add_spec(ProxySpec::new(name, "127.0.0.1:0", upstream))
            .await
    }

    /// Adds a proxy from a spec.
    pub async fn add_spec(&self, spec: ProxySpec) -> SocketAddr {
        let name = spec.name.clone();
        self.server.create(spec).await.expect("create proxy");
        self.server
            .proxy(&name)
            .and_then(|p| p.bound_addr())
            .expect("bound")
    }

    /// Adds a toxic from JSON through the admin API; panics unless 200.
    pub async fn toxic(&self, proxy: &str, json: serde_json::Value) {
        let (status, body) = http(
            self.admin,
            "POST",
            &format!("/proxies/{proxy}/toxics"),
            Some(&json.to_string()),
        )
        .await;
        assert_eq!(status, 200, "adding toxic {json}: {body}");
    }

    /// Scrapes `/metrics` and returns the value of the first sample whose line starts with `prefix`.
    pub async fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = http(self.admin, "GET", "/metrics", None).await;
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A minimal HTTP/1.1 request (Connection: close); returns status and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    http_with(addr, method, path, body, &[]).await
}

/// Like [`http`], with extra headers.
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect http");
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    tcp.write_all(req.as_bytes()).await.expect("write http");
    let mut out = Vec::new();
    tokio::time::timeout(SOON, tcp.read_to_end(&mut out))
        .await
        .expect("http timeout")
        .expect("read http");
    status_and_body(&out)
}

/// The status (0 if none) and the body (all after the head) of a raw HTTP
/// response.
pub fn status_and_body(response: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(response).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// How a raw peer saw the connection end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndSeen {
    /// Orderly FIN (read returned 0).
    Fin,
    /// ECONNRESET.
    Reset,
    /// Nothing within the wait: the TCP connection is still open.
    StillOpen,
}

/// One side of a WebSocket connection, speaking raw frames.
pub struct RawWs {
    /// The socket.
    pub tcp: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
    /// Whether this side masks (client).
    pub masks: bool,
    /// The HTTP head this side received (response for a client, request for a server).
    pub head: String,
}

impl RawWs {
    /// Connects and upgrades as a client. `extra` headers are added verbatim.
    pub async fn connect(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> RawWs {
        let (ws, status) = Self::try_connect(addr, path, extra).await;
        assert_eq!(status, 101, "upgrade refused: {}", ws.head);
        ws
    }

    /// Connects and sends an upgrade; returns the peer and the status.
    pub async fn try_connect(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> (RawWs, u16) {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).await.expect("send upgrade");
        let (head, rest) = read_head(&mut tcp).await;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (
            RawWs {
                tcp,
                buf: rest,
                codec: FrameCodec {
                    max_frame_bytes: 1 << 30,
                },
                masks: true,
                head,
            },
            status,
        )
    }

    /// Sends a frame with raw parts (masked if this side masks).
    pub async fn send(&mut self, fin: bool, rsv: u8, opcode: Opcode, payload: &[u8]) {
        let mask = self.masks.then_some([0x11, 0x22, 0x33, 0x44]);
        let frame = Frame::build(fin, rsv, opcode, payload, mask);
        self.send_frame(&frame).await;
    }

    /// Sends a whole frame as encoded.
    pub async fn send_frame(&mut self, frame: &Frame) {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        self.tcp.write_all(&out).await.expect("send frame");
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("send raw");
    }

    /// Receives one frame within `wait`; `None` on EOF, reset or timeout.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Ok(Some(frame)) = self.codec.decode(&mut self.buf) {
                return Some(frame);
            }
            let read = tokio::time::timeout_at(deadline, self.tcp.read_buf(&mut self.buf)).await;
            match read {
                Ok(Ok(n)) if n > 0 => continue,
                _ => return None,
            }
        }
    }

    /// Receives one frame (panics if none arrives soon).
    pub async fn recv(&mut self) -> Frame {
        self.recv_within(SOON).await.expect("expected a frame")
    }

    /// Receives the next data frame, skipping control frames other than close.
    pub async fn recv_data(&mut self) -> Frame {
        loop {
            let f = self.recv().await;
            if !matches!(f.header.opcode, Opcode::Ping | Opcode::Pong) {
                return f;
            }
        }
    }

    /// Waits for the TCP end, discarding frames; tells FIN from RST from still open.
    pub async fn end_within(&mut self, wait: Duration) -> EndSeen {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut scratch = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut scratch)).await {
                Err(_) => return EndSeen::StillOpen,
                Ok(Ok(0)) => return EndSeen::Fin,
                Ok(Ok(_)) => continue,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return EndSeen::Reset
                }
                Ok(Err(_)) => return EndSeen::Reset,
            }
        }
    }

    /// Waits for a close frame (skipping others); returns its code.
    pub async fn close_code_within(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = self.recv_within(left).await?;
            if f.header.opcode == Opcode::Close {
                return Some(f.close_code());
            }
        }
    }
}

async fn read_head(tcp: &mut TcpStream) -> (String, BytesMut) {
    let mut buf = BytesMut::new();
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_string();
            let rest = buf.split_off(pos + 4);
            return (head, rest);
        }
        let n = tokio::time::timeout(SOON, tcp.read_buf(&mut buf))
            .await
            .expect("head timeout")
            .expect("read head");
        if n == 0 {
            return (String::from_utf8_lossy(&buf).to_string(), BytesMut::new());
        }
    }
}

/// A raw WebSocket upstream: accepts upgrades and hands out server-side peers.
pub struct RawUpstream {
    listener: TcpListener,
    /// Its address.
    pub addr: SocketAddr,
}

impl RawUpstream {
    /// Binds 127.0.0.1:0.
    pub async fn bind() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        RawUpstream { listener, addr }
    }

    /// Accepts one upgrade and answers 101 (echoing a requested subprotocol's first entry if `protocol`).
    pub async fn accept(&self) -> RawWs {
        self.accept_with(&[]).await
    }

    /// Accepts one upgrade, answering 101 with extra headers.
    pub async fn accept_with(&self, extra: &[(&str, &str)]) -> RawWs {
        let (mut tcp, _) = tokio::time::timeout(SOON, self.listener.accept())
            .await
            .expect("accept timeout")
            .expect("accept");
        let (head, rest) = read_head(&mut tcp).await;
        let key = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n");
        for (k, v) in extra {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        tcp.write_all(resp.as_bytes()).await.expect("send 101");
        RawWs {
            tcp,
            buf: rest,
            codec: FrameCodec {
                max_frame_bytes: 1 << 30,
            },
            masks: false,
            head,
        }
    }

    /// Accepts one connection and answers with a fixed HTTP response.
    pub async fn accept_http(&self, response: &str) -> String {
        let (mut tcp, _) = tokio::time::timeout(SOON, self.listener.accept())
            .await
            .expect("accept timeout")
            .expect("accept");
        let (head, _) = read_head(&mut tcp).await;
        tcp.write_all(response.as_bytes())
            .await
            .expect("send response");
        let _ = tcp.shutdown().await;
        head
    }
}

/// Finds a header's value in an HTTP head (case-insensitive name).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A tokio-tungstenite echo server in this process (the reference behaviour).
pub async fn tungstenite_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                use futures_util::{SinkExt, StreamExt};
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            break;
                        }
                    } else if msg.is_close() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A Python `websockets` echo server child process; killed on drop.
pub struct PyEcho {
    child: std::process::Child,
    /// Its address.
    pub addr: SocketAddr,
}

impl PyEcho {
    /// Starts `tests/py/echo_server.py`.
    pub async fn start() -> Option<PyEcho> {
        Self::start_with(&[]).await
    }

    /// Starts `tests/py/echo_server.py` with extra arguments (e.g. `--deflate`).
    pub async fn start_with(args: &[&str]) -> Option<PyEcho> {
        let python = python()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        // Owned by the guard from the start, so it is reaped on every path.
        let mut guard = PyEcho {
            child: std::process::Command::new(python)
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/py/echo_server.py"
                ))
                .arg(&port_file)
                .args(args)
                .spawn()
                .expect("spawn python echo"),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let mut waited = Duration::ZERO;
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                if let Ok(port) = text.trim().parse::<u16>() {
                    guard.addr.set_port(port);
                    return Some(guard);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += Duration::from_millis(50);
            assert!(
                waited < Duration::from_secs(20),
                "python echo server did not start"
            );
        }
    }
}

impl Drop for PyEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects a raw client through `proxy` and accepts its upgrade at `upstream`.
pub async fn raw_pair(proxy: SocketAddr, upstream: &RawUpstream) -> (RawWs, RawWs) {
    tokio::join!(RawWs::connect(proxy, "/", &[]), upstream.accept())
}

/// Calls the admin API with an optional JSON body; returns the status and the
/// parsed JSON answer (`Value::Null` for an empty or non-JSON body).
pub async fn api(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let text = body.map(|b| b.to_string());
    let (status, answer) = http(admin, method, path, text.as_deref()).await;
    (
        status,
        serde_json::from_str(&answer).unwrap_or(serde_json::Value::Null),
    )
}
