//! The proxy: a registry of named proxies, each with a listener, live
//! connections and a toxic list that links re-read between frames.
//!
//! * [`registry`]: [`Server`], the set of proxies; every change goes through
//!   [`Server::apply`], one atomic path.
//! * [`change`]: the typed changes ([`Change`], [`ProxyPatch`],
//!   [`ToxicPatch`]) the admin API builds from JSON.
//! * [`transition`]: what a change does to a proxy's settings (pure).
//! * [`shared`]: one proxy's state as its listener, connections and the API
//!   see it ([`ProxyShared`], [`ProxySettings`]).
//! * [`listener`]: the accept loop (bounded, no busy loop on EMFILE).
//! * [`handshake`]: hyper on both sides of the upgrade, plain HTTP pass-through.
//! * [`relay`]: the two links of a connection.
//! * [`conn`]: state shared by the links of one connection.
//! * [`workers`]: one single-threaded runtime per core that connections live on.

pub mod change;
pub mod conn;
pub mod handshake;
pub mod listener;
pub mod registry;
pub mod relay;
pub mod shared;
pub mod tls;
pub mod tls_listener;
pub mod transition;
pub mod workers;

pub use crate::views::{ConnectionView, ProxyView, StreamView};
pub use crate::vocab::UpstreamTarget;
pub use change::{Change, Outcome, ProxyPatch, RegistryError, ToxicPatch};
pub use registry::Server;
pub use shared::{ProxySettings, ProxyShared};
