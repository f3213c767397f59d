//! `wss://` on the proxy's listener (issue 15; docs/reference.md#tls-on-the-listener),
//! through the real `wsfault proxy` binary: `tls: self-signed` with its PEM
//! served at `GET /proxies/{p}/certificate`, `--tls-cert/--tls-key` files,
//! clients we did not write (Python `websockets` over `ssl`, trusting only
//! the served PEM; headless Chromium opening `wss://` from an https page),
//! toxics applying to the decrypted stream, and bad PEM files refused with
//! exit 2 naming the file.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The upstream: a Python `websockets` echo server that also serves a test page at `/`.
fn page_echo_server() -> Option<PyService> {
    PyService::start("page_echo_server.py", &["websockets"], &[])
}

/// A proxy `app` with `tls` (YAML) in front of `upstream`.
fn tls_proxy(upstream: &str, tls: &str) -> ProxyProc {
    let yaml = format!(
        "proxies:\n  - name: app\n    listen: 127.0.0.1:0\n    upstream: {upstream}\n    tls: {tls}\n"
    );
    ProxyProc::start_config(&yaml, "app", &[])
}

/// Runs tests/py/wss_client.py against `url`, trusting `cafile` only.
fn wss_client(url: &str, cafile: &Path, count: u32) -> Option<(Option<i32>, Value)> {
    let count = count.to_string();
    let cafile = cafile.to_str().expect("utf-8 path");
    let mut client = PyProc::spawn(
        "wss_client.py",
        &["websockets"],
        &[url, cafile, "--count", &count],
    )?;
    let status = client.wait(Duration::from_secs(60));
    let line = client
        .events()
        .into_iter()
        .last()
        .unwrap_or_else(|| panic!("no output: {}", client.both()));
    Some((status.and_then(|s| s.code()), line))
}

#[test]
fn self_signed_wss_with_python_websockets_trusting_the_served_pem() {
    let Some(upstream) = page_echo_server() else {
        return;
    };
    let proxy = tls_proxy(&upstream.addr.to_string(), "self-signed");
    let (status, view) = proxy.api("GET", "/proxies/app", None);
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        serde_json::from_str::<Value>(&view).expect("JSON")["tls"],
        "self-signed"
    );
    let (status, pem) = proxy.api("GET", "/proxies/app/certificate", None);
    assert_eq!(status, 200, "{pem}");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let dir = tempfile::tempdir().expect("tempdir");
    let cafile = dir.path().join("proxy.pem");
    std::fs::write(&cafile, &pem).expect("write PEM");

    // Both names the certificate was made for; the client checks them.
    let port = proxy.listen.port();
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("wss://{host}:{port}/echo");
        let Some((code, line)) = wss_client(&url, &cafile, 5) else {
            return;
        };
        assert_eq!(code, Some(0), "{host}: {line}");
        assert_eq!(line["echoed"], 5, "{line}");
        assert!(
            line["version"]
                .as_str()
                .is_some_and(|v| v.starts_with("TLSv1.")),
            "{line}"
        );
    }

    // Toxics act on the decrypted stream: a 300 ms latency downstream.
    let (status, body) = proxy.api(
        "POST",
        "/proxies/app/toxics",
        Some(
            &json!({"name": "slow", "type": "latency", "attributes": {"latency": 300}}).to_string(),
        ),
    );
    assert_eq!(status, 200, "{body}");
    let url = format!("wss://localhost:{port}/echo");
    let Some((code, line)) = wss_client(&url, &cafile, 3) else {
        return;
    };
    assert_eq!(code, Some(0), "{line}");
    let rtts: Vec<f64> = line["rtt_ms"]
        .as_array()
        .expect("rtt_ms")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(
        rtts.iter().all(|&ms| ms >= 300.0),
        "every echo waited: {rtts:?}"
    );
    let metrics = proxy.metrics();
    assert!(
        metric_sum(
            &metrics,
            "wsfault_toxic_actions_total",
            &[("toxic", "slow")]
        ) >= 3.0,
        "{metrics}"
    );

    // A certificate it does not trust: the client refuses the proxy.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    let stranger = dir.path().join("stranger.pem");
    std::fs::write(&stranger, other.cert.pem()).expect("write PEM");
    let Some((code, line)) = wss_client(&url, &stranger, 1) else {
        return;
    };
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("CERTIFICATE_VERIFY_FAILED")),
        "{line}"
    );
    let metrics = proxy.metrics();
    assert!(
        metric_sum(
            &metrics,
            "wsfault_handshake_failures_total",
            &[("reason", "tls")]
        ) >= 1.0,
        "the refused handshake is counted: {metrics}"
    );
}

/// A certificate and key for `localhost` as PEM files in `dir`.
fn cert_files(dir: &Path, stem: &str) -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen");
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, made.cert.pem()).expect("cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("key");
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn tls_cert_and_key_flags_serve_wss() {
    let Some(upstream) = page_echo_server() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = cert_files(dir.path(), "proxy");
    let up = upstream.addr.to_string();
    let proxy = ProxyProc::start_args(
        &[
            "--name",
            "app",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &up,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        "app",
    );
    let (status, pem) = proxy.api("GET", "/proxies/app/certificate", None);
    assert_eq!(status, 200);
    assert_eq!(pem, std::fs::read_to_string(&cert).expect("cert"));
    let url = format!("wss://localhost:{}/echo", proxy.listen.port());
    let Some((code, line)) = wss_client(&url, Path::new(&cert), 5) else {
        return;
    };
    assert_eq!(code, Some(0), "{line}");
    assert_eq!(line["echoed"], 5, "{line}");
}

#[test]
fn bad_pem_files_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = cert_files(dir.path(), "a");
    let (_, other_key) = cert_files(dir.path(), "b");
    let missing = dir.path().join("missing.pem").display().to_string();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("garbage");
    let garbage = garbage.display().to_string();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--tls-cert", &missing, "--tls-key", &key],
            format!("tls.cert {missing}: cannot read the file"),
        ),
        (
            vec!["--tls-cert", &garbage, "--tls-key", &key],
            format!("tls.cert {garbage}: no certificate"),
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &garbage],
            format!("tls.key {garbage}: not a PEM private key"),
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &other_key],
            format!("tls.key {other_key}: does not fit the certificate in {cert}"),
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec![
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
            "--admin",
            "127.0.0.1:0",
        ];
        args.extend(flags.iter());
        let ran = run(
            &mut wsfault(&args),
            "wsfault proxy",
            Duration::from_secs(30),
        );
        assert_eq!(ran.code(), Some(2), "{flags:?}: {}", ran.both());
        assert!(ran.stderr.contains(&expected), "{flags:?}: {}", ran.stderr);
    }
    // The same from a config file.
    let config = dir.path().join("wsfault.yaml");
    std::fs::write(
        &config,
        format!("proxies:\n  - {{name: app, listen: 127.0.0.1:0, upstream: 127.0.0.1:9, tls: {{cert: {cert}, key: {other_key}}}}}\n"),
    )
    .expect("config");
    let config = config.display().to_string();
    let ran = run(
        &mut wsfault(&["proxy", "--config", &config, "--admin", "127.0.0.1:0"]),
        "wsfault proxy",
        Duration::from_secs(30),
    );
    assert_eq!(ran.code(), Some(2), "{}", ran.both());
    assert!(
        ran.stderr
            .contains(&format!("tls.key {other_key}: does not fit")),
        "{}",
        ran.stderr
    );
    // A tls value that is neither form names both.
    std::fs::write(
        &config,
        "proxies:\n  - {name: app, listen: 127.0.0.1:0, upstream: 127.0.0.1:9, tls: yes-please}\n",
    )
    .expect("config");
    let ran = run(
        &mut wsfault(&["proxy", "--config", &config, "--admin", "127.0.0.1:0"]),
        "wsfault proxy",
        Duration::from_secs(30),
    );
    assert_eq!(ran.code(), Some(2), "{}", ran.both());
    assert!(ran.stderr.contains("wsfault.yaml:2:"), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("`self-signed` or {cert: FILE, key: FILE}"),
        "{}",
        ran.stderr
    );
}

/// The base64 SHA-256 of a PEM certificate's SubjectPublicKeyInfo, as
/// Chromium's `--ignore-certificate-errors-spki-list` wants it.
fn spki_sha256(pem: &str) -> Option<String> {
    let openssl = openssl()?;
    let script = format!(
        "{o} x509 -pubkey -noout | {o} pkey -pubin -outform der | {o} dgst -sha256 -binary | base64",
        o = openssl.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            if let Some(stdin) = child.stdin.as_mut() {
                stdin.write_all(pem.as_bytes())?;
            }
            child.wait_with_output()
        })
        .expect("openssl pipeline");
    assert!(out.status.success(), "openssl pipeline failed");
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn headless_chromium_opens_wss_from_an_https_page() {
    let (Some(_), Some(_)) = (
        tool("chromium", &["--version"]),
        tool("chromedriver", &["--version"]),
    ) else {
        return;
    };
    let Some(upstream) = page_echo_server() else {
        return;
    };
    let proxy = tls_proxy(&upstream.addr.to_string(), "self-signed");
    let (status, pem) = proxy.api("GET", "/proxies/app/certificate", None);
    assert_eq!(status, 200, "{pem}");
    let Some(spki) = spki_sha256(&pem) else {
        return;
    };
    // The page itself comes through the proxy over https; its script opens
    // wss:// to the same origin (an https page allows nothing else).
    let url = format!("https://localhost:{}/", proxy.listen.port());
    let Some(mut browser) =
        PyProc::spawn("browser_wss.py", &["selenium"], &[&url, "--spki", &spki])
    else {
        return;
    };
    let status = browser.wait(Duration::from_secs(120));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", browser.both());
    let result = browser
        .events_named("result")
        .pop()
        .unwrap_or_else(|| panic!("no result: {}", browser.both()));
    assert_eq!(result["result"]["scheme"], "wss:", "{result}");
    assert_eq!(
        result["result"]["echoed"],
        json!(["m0", "m1", "m2", "m3", "m4"]),
        "{result}"
    );
    assert_eq!(result["result"]["error"], Value::Null, "{result}");
    let metrics = proxy.metrics();
    assert!(
        metric_sum(
            &metrics,
            "wsfault_messages_total",
            &[("proxy", "app"), ("stream", "upstream")]
        ) >= 5.0,
        "the browser's messages crossed the proxy: {metrics}"
    );
}
