//! Relay worker threads: one single-threaded tokio runtime per core, each
//! with its own epoll, like nginx's worker processes.
//!
//! A connection (its HTTP upgrade, both links, the upstream socket) lives on
//! one worker from accept to close, so a frame never wakes a task on
//! another thread: no work stealing, no futex hand-offs between workers, no
//! shared run queue. The listener, the admin API and signal handling stay on
//! the main runtime; toxic changes and commands reach the links through
//! wakers, which work across threads.
//!
//! Measured at 100 connections × 64 B closed loop (`benches/NOTES.md`): the
//! multi-threaded scheduler spent about 3.4 % of the proxy's CPU in `futex`
//! waking its other worker; with relay workers the proxy's CPU per round
//! trip fell from 11.3 to 10.5 µs and throughput rose from 0.85× to 0.96×
//! nginx's.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::runtime::Handle;

/// The started workers; empty when none could be started (then connections
/// run on the caller's runtime).
struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

static WORKERS: OnceLock<Workers> = OnceLock::new();

/// The environment variable that sets the number of relay workers.
pub const THREADS_VAR: &str = "WSFAULT_RELAY_THREADS";

/// How many relay workers to start: `WSFAULT_RELAY_THREADS` if set, else one
/// per available core. A value that is not a whole number from 1 to 1024 is
/// an error naming the variable, the value and the valid range.
pub fn worker_count() -> Result<usize, String> {
    match std::env::var(THREADS_VAR) {
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err(format!(
                "{THREADS_VAR}={value:?} is not a worker count: expected a whole number from 1 to 1024 (default: one per core)"
            )),
        },
        Err(_) => Ok(one_per_core()),
    }
}

fn one_per_core() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn start_workers(count: usize) -> Workers {
    let mut handles = Vec::new();
    for index in 0..count {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("wsfault-relay-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot start a relay worker runtime");
                        return;
                    }
                };
                let _ = handle_tx.send(runtime.handle().clone());
                // Drives the tasks spawned onto this worker, forever.
                runtime.block_on(std::future::pending::<()>());
            });
        match spawned {
            Ok(_) => {
                if let Ok(handle) = handle_rx.recv() {
                    handles.push(handle);
                }
            }
            Err(err) => tracing::error!(error = %err, "cannot start a relay worker thread"),
        }
    }
    Workers {
        handles,
        next: AtomicUsize::new(0),
    }
}

/// Checks `WSFAULT_RELAY_THREADS` and starts the relay workers now rather
/// than at the first connection.
pub fn start() -> Result<(), String> {
    let count = worker_count()?;
    WORKERS.get_or_init(|| start_workers(count));
    Ok(())
}

/// Runs a connection's future on the next relay worker (round robin); on the
/// current runtime if no worker could be started.
pub fn spawn_connection<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    // Library use without `start`: a bad variable falls back to the default.
    let workers =
        WORKERS.get_or_init(|| start_workers(worker_count().unwrap_or_else(|_| one_per_core())));
    if workers.handles.is_empty() {
        tokio::spawn(future);
        return;
    }
    let index = workers.next.fetch_add(1, Ordering::Relaxed) % workers.handles.len();
    workers.handles[index].spawn(future);
}
