//! # wsfault — a WebSocket-aware chaos proxy
//!
//! ## Layers (imports only point down; `import-cycles.py src` finds no circle)
//!
//! ```text
//! main.rs ─▶ cmd          flags, logging, signals, exit codes; one file per subcommand
//!              │
//!              ▼
//!   proxy · admin · load · echo · ctl      the library's servers and clients
//!              │
//!              ▼
//!   toxics · protocols · config             the fault framework, one file per toxic; protocol
//!                                           profiles, one file each; YAML loading
//!              │
//!              ▼
//!   frame · metrics · vocab · views · resume_wire · error · shutdown
//!                    the bottom: codec, metric families, shared words, the admin
//!                    API's and the resume protocol's JSON shapes, exit-status errors
//! ```
//!
//! ## Module map (data path first)
//!
//! | module | what it holds |
//! |---|---|
//! | [`frame`] | the verbatim WebSocket frame codec used by the relay |
//! | [`proxy`] | listeners (plain or TLS), the hyper-parsed upgrade, the per-direction relay links, the proxy registry, config reload |
//! | [`toxics`] | the toxic framework (spec → definition → per-connection state) and one file per toxic type |
//! | [`config`] | YAML config loading with `FILE:LINE:COL` errors, proxy specs |
//! | [`protocols`] | protocol profiles (Socket.IO, GraphQL, STOMP, SignalR, Phoenix): message kinds, heartbeat answers |
//! | [`admin`] | the Toxiproxy-compatible admin HTTP API, `/healthz`, `/metrics`, `/toxic-types`, the web console at `/ui` |
//! | [`metrics`] | Prometheus metric families and pre-resolved per-proxy handles |
//! | [`views`] | the admin API's JSON shapes, shared by the registry, the API and `ctl` |
//! | [`vocab`] | words every layer shares: `StreamDir`, `CutMode`, the activity clock, `UpstreamTarget` |
//! | [`resume_wire`] | the resume protocol's JSON messages and the WebSocket limits, shared by `echo` and `load` |
//! | [`echo`] | the reference backend (echo + resume protocol) |
//! | [`load`] | the validating load client (echo, resume and script modes), reports and their merge |
//! | [`ctl`] | the admin API client: typed requests, tables and `--json` output |
//! | [`cmd`] | the subcommands: `proxy`, `echo`, `load`, `ctl`, `demo`, `report` (flags → library calls) |
//! | [`error`] | `UsageError` / `FailedError` and the exit codes they map to |
//! | [`shutdown`] | SIGINT/SIGTERM as a future |
//!
//! Follow one frame: [`proxy::listener`] accepts → [`proxy::handshake`]
//! forwards the upgrade → [`proxy::relay`] reads frames with [`frame`],
//! runs the connection's toxic chain ([`toxics`]) and writes them on.
//! Follow one API call: [`admin`] parses the JSON into a typed
//! [`proxy::Change`] → [`proxy::Server::apply`] runs it under the registry's
//! change lock (one change at a time) → the links see the new toxic list
//! before their next frame.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod cmd;
pub mod config;
pub mod ctl;
pub mod echo;
pub mod error;
pub mod frame;
pub mod load;
pub mod metrics;
pub mod protocols;
pub mod proxy;
pub mod resume_wire;
pub mod shutdown;
pub mod toxics;
pub mod views;
pub mod vocab;
