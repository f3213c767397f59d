//! What a link is: the sockets and shared state it was handed, the words
//! derived from its direction, and how it ends. The bottom of the relay:
//! every other file of it may use these, and this file uses none of them.

use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;

use crate::metrics::CloseBy;
use crate::proxy::conn::ConnShared;
use crate::proxy::ProxyShared;
use crate::toxics::{ConnFacts, CutMode, StreamDir};

/// Everything a link needs.
pub struct Link {
    /// The stream this link carries.
    pub stream: StreamDir,
    /// The socket it reads from.
    pub reader: Arc<TcpStream>,
    /// The socket it writes to.
    pub writer: Arc<TcpStream>,
    /// Bytes already read from `reader` during the upgrade.
    pub initial: Bytes,
    /// Shared connection state.
    pub conn: Arc<ConnShared>,
    /// The proxy's shared state (toxics, limits, metrics).
    pub proxy: Arc<ProxyShared>,
    /// Facts about the connection, for toxics.
    pub facts: Arc<ConnFacts>,
}

impl Link {
    /// Whether this link writes to the server (client → server).
    #[inline]
    pub(super) fn to_server(&self) -> bool {
        self.stream == StreamDir::Upstream
    }

    /// The other link's stream.
    #[inline]
    pub(super) fn other(&self) -> StreamDir {
        match self.stream {
            StreamDir::Upstream => StreamDir::Downstream,
            StreamDir::Downstream => StreamDir::Upstream,
        }
    }

    /// Who sends the frames this link reads (the `by` label of their closes).
    #[inline]
    pub(super) fn sender_label(&self) -> CloseBy {
        match self.stream {
            StreamDir::Upstream => CloseBy::Client,
            StreamDir::Downstream => CloseBy::Upstream,
        }
    }
}

/// How a link ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The reader sent FIN: pass it on.
    Eof,
    /// Abrupt reset seen on either side: reset both.
    Reset,
    /// A cut requested by a toxic or the admin API.
    Cut(CutMode),
    /// The closing handshake finished (or timed out).
    Closed,
    /// The other link is gone and this one had no more to do.
    PeerGone,
}
