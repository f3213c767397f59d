//! Toxiproxy compatibility: the unmodified `toxiproxy-python` client
//! (PyPI `toxiproxy-python`, module `toxiproxy`) drives the admin API.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxiproxy_python_client_drives_the_whole_api() {
    let Some(python) = interpreter_with("toxiproxy") else {
        return;
    };
    let echo = tungstenite_echo().await;
    let proxy = TestProxy::start(None).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/toxiproxy_client.py");
    let child = tokio::process::Command::new(python)
        .arg(script)
        .arg(proxy.admin.ip().to_string())
        .arg(proxy.admin.port().to_string())
        .arg(echo.to_string())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("python client timed out")
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "toxiproxy-python failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for step in [
        "version",
        "create",
        "duplicate refused",
        "add toxics",
        "invalid toxic refused",
        "update toxic",
        "remove toxic",
        "toggle",
        "reset",
        "destroy",
        "all steps passed",
    ] {
        assert!(stdout.contains(step), "step {step:?} missing:\n{stdout}");
    }
    assert!(
        proxy.server.list().is_empty(),
        "destroy_all left proxies behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxics_added_by_the_python_client_act_on_traffic() {
    let Some(python) = interpreter_with("toxiproxy") else {
        return;
    };
    let upstream = RawUpstream::bind().await;
    let proxy = TestProxy::start(None).await;
    // The client creates the proxy and a WebSocket-only toxic through the
    // generic attributes: every client → server message is lost.
    let code = format!(
        "from toxiproxy import Toxiproxy\n\
         s = Toxiproxy(); s.update_api_consumer('{}', {})\n\
         p = s.create(upstream='{}', name='ws', listen='127.0.0.1:0')\n\
         p.add_toxic(name='loss', type='message_loss', stream='upstream', attributes={{'probability': 1.0}})\n\
         print(p.listen)\n",
        proxy.admin.ip(),
        proxy.admin.port(),
        upstream.addr
    );
    let output = tokio::process::Command::new(python)
        .args(["-c", &code])
        .output()
        .await
        .expect("run python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listen: std::net::SocketAddr = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("listen address");
    let (mut client, mut server) = raw_pair(listen, &upstream).await;
    client
        .send(true, 0, wsfault::frame::Opcode::Text, b"lost")
        .await;
    server
        .send(true, 0, wsfault::frame::Opcode::Text, b"kept")
        .await;
    assert_eq!(&client.recv().await.payload[..], b"kept");
    assert!(
        server
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "the message was dropped"
    );
    assert_eq!(
        proxy
            .metric(
                "wsfault_toxic_actions_total{proxy=\"ws\",toxic=\"loss\",type=\"message_loss\"}"
            )
            .await,
        1.0
    );
}
