//! # wsfault — a WebSocket-aware chaos proxy
//!
//! Module map (data path first):
//!
//! | module | what it holds |
//! |---|---|
//! | [`frame`] | the verbatim WebSocket frame codec used by the relay |
//! | [`proxy`] | listeners, the hyper-parsed upgrade, the per-direction relay links, the proxy registry and `wsfault proxy` |
//! | [`toxics`] | the toxic framework (spec → definition → per-connection state) and one file per toxic type |
//! | [`config`] | YAML config loading with `FILE:LINE:COL` errors, proxy specs |
//! | [`admin`] | the Toxiproxy-compatible admin HTTP API, `/healthz`, `/metrics` |
//! | [`metrics`] | Prometheus metric families and pre-resolved per-proxy handles |
//! | [`echo`] | `wsfault echo`: the reference backend (echo + resume protocol) |
//! | [`load`] | `wsfault load`: the validating load client |
//! | [`ctl`] | `wsfault ctl`: admin API client |
//! | [`demo`] | `wsfault demo`: backend + proxy + scenario + load client in one process |
//! | [`cli`] | flag parsing, logging, exit codes |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod echo;
pub mod frame;
pub mod load;
pub mod metrics;
pub mod proxy;
pub mod toxics;
pub mod vocab;
