//! Waiting for something to happen: one async poller for the tokio tests
//! and one blocking poller for the tests that drive processes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long [`eventually`] waits.
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// Waits until `check` holds (polling every 25 ms), or panics with `what`
/// after [`EVENTUALLY`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_listening(addr: SocketAddr) {
    eventually(&format!("{addr} listening"), || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
}

/// Blocks until `check` holds (polling every `every`), or panics with
/// "`failure` within `limit`" once `limit` has passed.
pub fn wait_until(
    failure: &str,
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{failure} within {limit:?}");
        std::thread::sleep(every);
    }
}

/// Blocks until something accepts TCP connections on `addr`, at most `limit`.
pub fn wait_tcp(addr: SocketAddr, limit: Duration) {
    wait_until(
        &format!("{addr} not listening"),
        limit,
        Duration::from_millis(50),
        || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok(),
    );
}
