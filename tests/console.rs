//! The web console (issue 15; docs/reference.md#web-console): `GET /ui`,
//! `GET /toxic-types` and `GET /stats` over HTTP, then the page itself in
//! headless Chromium (Debian `chromium` + `chromium-driver`, Selenium from
//! PyPI, tests/py/console_ui.py): a toxic added, edited and removed through
//! the forms and seen in `GET /proxies`; one toxic of every registered type
//! added through its generated form; a live connection ended from the
//! page and its client getting close 1001; the chart growing; a cold load in
//! under a second with no request to another origin; and, with a token, the
//! page asking for it once.
//!
//! `WSFAULT_SCREENSHOT=docs/console.png` saves a screenshot of the console
//! (the README's) from the browser test.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsfault::admin::AdminOptions;
use wsfault::frame::Opcode;

/// A GET with extra headers; the status, the head and the body.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(SOON, tcp.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// A client on `path` through the proxy that sends a text message every
/// 20 to 100 ms (slowly varying) and drains the echoes, so the chart has
/// traffic to plot.
fn steady_client(proxy: SocketAddr, path: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ws = RawWs::connect(proxy, path, &[]).await;
        let start = tokio::time::Instant::now();
        loop {
            ws.send(true, 0, Opcode::Text, b"tick").await;
            while ws.recv_within(Duration::from_millis(1)).await.is_some() {}
            let phase = start.elapsed().as_secs_f64() / 5.0;
            let pause = 60.0 + 40.0 * phase.sin();
            tokio::time::sleep(Duration::from_millis(pause as u64)).await;
        }
    })
}

/// The id of the live connection of `proxy` whose path is `path`.
async fn connection_id(admin: SocketAddr, proxy: &str, path: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let (_, list) = api(admin, "GET", &format!("/proxies/{proxy}/connections"), None).await;
        let found = list
            .as_array()
            .and_then(|l| l.iter().find(|c| c["path"] == path))
            .and_then(|c| c["id"].as_u64());
        if let Some(id) = found {
            return id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection on {path}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Chromium, chromedriver and Python with Selenium, or skipped.
fn browser_tools() -> bool {
    tool("chromium", &["--version"]).is_some()
        && tool("chromedriver", &["--version"]).is_some()
        && interpreter_with("selenium").is_some()
}

/// Runs tests/py/console_ui.py to its end (off the runtime's threads).
async fn run_console(args: Vec<String>) -> PyProc {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut browser =
        PyProc::spawn("console_ui.py", &["selenium"], &args).expect("tools were checked first");
    tokio::task::spawn_blocking(move || {
        let status = browser.wait(Duration::from_secs(180));
        assert!(
            status.is_some_and(|s| s.success()),
            "console_ui.py failed\n{}",
            browser.both()
        );
        browser
    })
    .await
    .expect("browser thread")
}

fn event(browser: &PyProc, name: &str) -> Value {
    browser
        .events_named(name)
        .pop()
        .unwrap_or_else(|| panic!("no {name:?} line\n{}", browser.both()))
}

/// Every URL in `urls` is on `origin` (or a `data:` URL, which fetches
/// nothing).
fn assert_same_origin(urls: &Value, origin: &str) {
    let urls = urls.as_array().expect("a list of URLs");
    assert!(!urls.is_empty(), "no requests seen");
    for url in urls {
        let url = url.as_str().unwrap_or("");
        assert!(
            url.starts_with(&format!("{origin}/")) || url.starts_with("data:"),
            "request to another origin: {url} (all: {urls:?})"
        );
    }
}

#[tokio::test]
async fn ui_toxic_types_and_stats_over_http() {
    let upstream = tungstenite_echo().await;
    let proxy = TestProxy::start(None).await;
    let addr = proxy.add("app", &upstream.to_string()).await;

    // The page and its two files, with a same-origin-only policy.
    let (status, head, page) = get(proxy.admin, "/ui", &[]).await;
    assert_eq!(status, 200, "{head}");
    assert!(header(&head, "content-type").is_some_and(|v| v.starts_with("text/html")));
    let csp = header(&head, "content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(page.contains("/ui/app.js") && page.contains("/ui/style.css"));
    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let (status, head, body) = get(proxy.admin, path, &[]).await;
        assert_eq!(status, 200, "{path}: {head}");
        assert!(header(&head, "content-type").is_some_and(|v| v.starts_with(kind)));
        assert!(!body.is_empty());
    }
    assert_eq!(get(proxy.admin, "/ui/nothing.js", &[]).await.0, 404);

    // Every registered type, described from its parser.
    let (status, types) = api(proxy.admin, "GET", "/toxic-types", None).await;
    assert_eq!(status, 200, "{types}");
    let names: Vec<&str> = types
        .as_array()
        .expect("an array of types")
        .iter()
        .filter_map(|t| t["type"].as_str())
        .collect();
    let registered: Vec<&str> = wsfault::toxics::REGISTRY.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, registered);
    let latency = &types[0];
    assert_eq!(
        latency["attributes"][0],
        json!({"name": "latency", "kind": "integer", "min": 0, "max": 3_600_000,
               "required": true, "default": null})
    );

    // Counters per proxy, as the chart reads them.
    proxy
        .toxic(
            "app",
            json!({"name": "slow", "type": "latency", "attributes": {"latency": 1}}),
        )
        .await;
    let mut ws = RawWs::connect(addr, "/", &[]).await;
    for _ in 0..3 {
        ws.send(true, 0, Opcode::Text, b"hi").await;
        assert_eq!(&ws.recv_data().await.plain_payload()[..], b"hi");
    }
    let (status, stats) = api(proxy.admin, "GET", "/stats", None).await;
    assert_eq!(status, 200, "{stats}");
    let app = &stats["proxies"]["app"];
    assert_eq!(app["connections_active"], 1, "{stats}");
    assert_eq!(app["messages"], json!({"upstream": 3, "downstream": 3}));
    assert_eq!(app["toxic_actions"], app["toxic_actions_by_toxic"]["slow"]);
    assert!(app["toxic_actions"].as_u64() >= Some(3), "{stats}");
}

#[tokio::test]
async fn token_and_origin_rules_hold_for_the_console() {
    let options = AdminOptions {
        token: Some("s3cret".into()),
    };
    let proxy = TestProxy::start_with(None, options).await;
    let admin = proxy.admin.to_string();
    let own = format!("http://{admin}");
    let bearer = ("Authorization", "Bearer s3cret");
    // The static page needs no token; what it shows does.
    for path in ["/ui", "/ui/app.js", "/ui/style.css"] {
        assert_eq!(get(proxy.admin, path, &[]).await.0, 200, "{path}");
    }
    for path in ["/toxic-types", "/stats", "/proxies"] {
        assert_eq!(get(proxy.admin, path, &[]).await.0, 401, "{path}");
        assert_eq!(get(proxy.admin, path, &[bearer]).await.0, 200, "{path}");
        // The page's own origin passes; another site's is refused, token or not.
        let same = [bearer, ("Origin", own.as_str())];
        assert_eq!(get(proxy.admin, path, &same).await.0, 200, "{path}");
        let evil = [bearer, ("Origin", "http://evil.example")];
        assert_eq!(get(proxy.admin, path, &evil).await.0, 403, "{path}");
    }
    let evil = [("Origin", "http://evil.example")];
    assert_eq!(get(proxy.admin, "/ui", &evil).await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_drives_the_api_in_headless_chromium() {
    if !browser_tools() {
        return;
    }
    let upstream = tungstenite_echo().await;
    let proxy = TestProxy::start(None).await;
    let addr = proxy.add("app", &upstream.to_string()).await;
    proxy.add("billing", &upstream.to_string()).await;
    proxy
        .toxic(
            "billing",
            json!({"name": "lossy", "type": "message_loss", "attributes": {"probability": 0.1}}),
        )
        .await;
    let steady = [
        steady_client(addr, "/feed?from=0"),
        steady_client(addr, "/chat/room-1"),
    ];
    let mut victim = RawWs::connect(addr, "/victim?room=7", &[]).await;
    let victim_id = connection_id(proxy.admin, "app", "/victim?room=7").await;

    let mut args = vec![
        format!("http://{}/ui", proxy.admin),
        "--proxy".into(),
        "app".into(),
        "--end-conn".into(),
        victim_id.to_string(),
        "--every-type-on".into(),
        "billing".into(),
    ];
    if let Ok(shot) = std::env::var("WSFAULT_SCREENSHOT") {
        let shot = Path::new(ROOT).join(PathBuf::from(shot));
        args.extend([
            "--screenshot".into(),
            shot.display().to_string(),
            "--linger".into(),
            "45".into(),
        ]);
    }
    let browser = run_console(args).await;
    for line in browser.events() {
        eprintln!("console_ui: {line}");
    }

    // A cold load in under a second.
    let loaded = event(&browser, "loaded");
    let load_ms = loaded["load_ms"].as_f64().unwrap_or(f64::MAX);
    let ready_ms = loaded["ready_ms"].as_f64().unwrap_or(f64::MAX);
    assert!(load_ms < 1000.0, "load event after {load_ms} ms: {loaded}");
    assert!(
        (0.0..1000.0).contains(&ready_ms),
        "proxies drawn after {ready_ms} ms: {loaded}"
    );

    // The form offered every type; the toxic it added is in the API.
    let added = event(&browser, "added");
    assert_eq!(
        added["types"].as_array().map(Vec::len),
        Some(wsfault::toxics::REGISTRY.len())
    );
    let (_, proxies) = api(proxy.admin, "GET", "/proxies", None).await;
    let toxics = proxies["app"]["toxics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(toxics.len(), 1, "ui-dup was removed: {proxies}");
    let toxic = &toxics[0];
    assert_eq!(
        (
            toxic["name"].as_str(),
            toxic["type"].as_str(),
            toxic["stream"].as_str()
        ),
        (Some("ui-latency"), Some("latency"), Some("downstream")),
        "{toxic}"
    );
    assert_eq!(toxic["attributes"], json!({"latency": 300, "jitter": 7}));
    // Every type's generated form added a toxic (removed again after).
    let every = event(&browser, "every_type");
    let registered: Vec<&str> = wsfault::toxics::REGISTRY.iter().map(|(n, _)| *n).collect();
    assert_eq!(every["types"], json!(registered), "{every}");
    assert_eq!(
        proxies["billing"]["toxics"],
        json!([{
            "name": "lossy", "type": "message_loss", "stream": "downstream", "toxicity": 1.0,
            "attributes": {"probability": 0.1}
        }])
    );

    // The connection ended from the page: its client got close 1001.
    event(&browser, "ended");
    assert_eq!(victim.close_code_within(SOON).await, Some(1001));

    // The chart grew while the page watched.
    let chart = event(&browser, "chart");
    let (first, second) = (chart["first"].as_u64(), chart["second"].as_u64());
    assert!(second > first, "chart points did not grow: {chart}");

    // Nothing but the admin API's own origin was asked for.
    let requests = event(&browser, "requests");
    assert_same_origin(&requests["urls"], &format!("http://{}", proxy.admin));
    for client in steady {
        client.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_asks_for_the_token_once() {
    if !browser_tools() {
        return;
    }
    let options = AdminOptions {
        token: Some("s3cret".into()),
    };
    let proxy = TestProxy::start_with(None, options).await;
    proxy.add("app", "127.0.0.1:9").await;
    let browser = run_console(vec![
        format!("http://{}/ui", proxy.admin),
        "--proxy".into(),
        "app".into(),
        "--token".into(),
        "s3cret".into(),
    ])
    .await;
    let token = event(&browser, "token");
    eprintln!("console_ui: {token}");
    assert_eq!(
        token["listed_before"], 0,
        "nothing shown before the token: {token}"
    );
    assert_eq!(token["stored"], "s3cret", "{token}");
    assert_eq!(token["asked_after_reload"], false, "{token}");
    assert_same_origin(&token["urls"], &format!("http://{}", proxy.admin));
}
