//! The one test-support module. Every integration test that needs help
//! pulls it in the same way:
//! `mod common;` and `use common::*;`.
//!
//! - [`ports`]: a port nothing is bound to.
//! - [`wait`]: polling until something holds (async and blocking).
//! - [`tools`]: every external tool (Python and its modules, promtool,
//!   prometheus, openssl, docker, debootstrap) is found here; a missing one
//!   skips the test with a printed reason, or fails it when
//!   `WSFAULT_REQUIRE_TOOLS=1`.
//! - [`procs`]: the `wsfault` binary and other child processes.
//! - [`ws`]: an in-process proxy, raw-frame WebSocket peers, HTTP clients
//!   for the admin API, echo servers (in-process and Python).
//! - [`docker`]: `docker` commands, the test binary in the build context,
//!   run-unique names and admin calls for the Docker tests.
//! - [`load`]: the echo server in-process, a deliberately broken server, a
//!   lossy forwarder and an XML check for the load-client tests.
//! - [`services`]: third-party services and clients from PyPI (Socket.IO,
//!   GraphQL, a JSON feed) started from tests/py/, and `wsfault proxy` as a
//!   child process to put between them.
//!
//! Each test binary uses only part of this, hence `allow(dead_code)` here
//! and `allow(unused_imports)` on the re-exports.
#![allow(dead_code)]

pub mod docker;
pub mod load;
pub mod ports;
pub mod procs;
pub mod services;
pub mod tools;
pub mod wait;
pub mod ws;

#[allow(unused_imports)]
pub use docker::*;
#[allow(unused_imports)]
pub use load::*;
#[allow(unused_imports)]
pub use ports::*;
#[allow(unused_imports)]
pub use procs::*;
#[allow(unused_imports)]
pub use services::*;
#[allow(unused_imports)]
pub use tools::*;
#[allow(unused_imports)]
pub use wait::*;
#[allow(unused_imports)]
pub use ws::*;
