//! Ports for tests that must name an address before something listens on it.

/// A port that nothing is bound to right now, on any interface (bound on
/// `0.0.0.0:0`, then released), so it serves for `127.0.0.1:PORT` and
/// `0.0.0.0:PORT` alike. It is also a port where nothing listens, for tests
/// of refused connections.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    free_port()
}
