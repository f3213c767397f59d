//! The accept loop of one proxy.
//!
//! Bounded: above [`connection_capacity`] live connections a new client gets
//! `503` and is closed; on EMFILE/ENFILE the loop backs off instead of
//! spinning, and existing connections are unaffected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::ProxyShared;

/// A bound, accepting listener.
pub struct Running {
    /// The real bound address.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting; the socket is closed once the returned future resolves.
    pub fn stop(self) -> impl std::future::Future<Output = ()> {
        let _ = self.stop.send(true);
        let task = self.task;
        async move {
            let _ = task.await;
        }
    }
}

/// File descriptors kept back for the admin API, logs and the refusal path
/// (at most a quarter of the limit).
const RESERVED_FDS: u64 = 64;

/// Raises the soft open-file limit to the hard one and returns how many
/// proxied connections fit (two sockets each).
pub fn connection_capacity() -> usize {
    let limit = match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) => {
            if soft < hard && rlimit::Resource::NOFILE.set(hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    };
    let reserved = RESERVED_FDS.min(limit / 4);
    (limit.saturating_sub(reserved) / 2).max(1) as usize
}

/// A bound socket that does not accept yet (see [`serve`]).
pub struct Bound {
    /// The real bound address.
    pub addr: SocketAddr,
    listener: TcpListener,
}

/// Binds `listen` with a deep backlog; accepting starts with [`serve`],
/// so the proxy's settings can name the real address before the first client.
pub async fn bind(listen: &str) -> std::io::Result<Bound> {
    let addr = tokio::net::lookup_host(listen)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{listen} resolves to no address")))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    let listener = TcpListener::from_std(socket.into())?;
    let addr = listener.local_addr()?;
    Ok(Bound { addr, listener })
}

/// Starts accepting connections for `proxy` on a bound socket.
pub fn serve(bound: Bound, proxy: Arc<ProxyShared>) -> Running {
    let Bound { addr, listener } = bound;
    let (stop, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop_rx.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        let ordinal = proxy.next_ordinal();
                        if proxy.connection_count() >= proxy.max_connections {
                            proxy.metrics.handshake_failure("capacity");
                            tokio::spawn(super::handshake::refuse(tcp));
                            continue;
                        }
                        // The connection moves to a relay worker: its
                        // sockets join that worker's epoll.
                        let tcp = match tcp.into_std() {
                            Ok(tcp) => tcp,
                            Err(err) => {
                                tracing::warn!(proxy = %proxy.name, error = %err, "cannot hand the connection to a relay worker");
                                continue;
                            }
                        };
                        let proxy = proxy.clone();
                        let tls = proxy.settings.load().tls.clone();
                        super::workers::spawn_connection(async move {
                            let tcp = match tokio::net::TcpStream::from_std(tcp) {
                                Ok(tcp) => tcp,
                                Err(err) => {
                                    tracing::warn!(proxy = %proxy.name, error = %err, "relay worker cannot register the connection");
                                    return;
                                }
                            };
                            // wss://: the TLS handshake runs here, on the
                            // worker; the relay gets the decrypted stream.
                            let tcp = match tls {
                                None => tcp,
                                Some(tls) => match tls.accept(tcp).await {
                                    Ok(plain) => plain,
                                    Err(err) => {
                                        proxy.metrics.handshake_failure("tls");
                                        tracing::debug!(proxy = %proxy.name, %peer, error = %err, "TLS handshake failed");
                                        return;
                                    }
                                },
                            };
                            super::handshake::serve_client(tcp, peer, ordinal, proxy).await
                        });
                    }
                    Err(err) => {
                        // EMFILE/ENFILE and friends: back off, never spin.
                        tracing::warn!(proxy = %proxy.name, error = %err, "accept failed; backing off");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    });
    Running { addr, stop, task }
}
