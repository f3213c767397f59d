//! Config reload (docs/reference.md#config-reload): `wsfault proxy --config
//! FILE` re-reads the file on SIGHUP and when it changes on disk.
//!
//! The file's directory is watched (notify), not the file itself: a
//! Kubernetes ConfigMap update swaps a `..data` symlink and never writes the
//! file, and editors often replace a file by renaming. Any event in the
//! directory re-reads the file after a short pause; only a changed content
//! is applied (SIGHUP always applies). A file that does not load is logged
//! with its `FILE:LINE:COL` and the running config stays. Applying is one
//! [`Change::ApplyConfig`]: live connections are kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::{mpsc, watch};

use super::{Change, Outcome, Server};

/// How long the directory must be quiet before the file is re-read.
const SETTLE: Duration = Duration::from_millis(200);

/// What the last reload did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The file was applied; the proxies it names.
    Applied(Vec<String>),
    /// The content is what was applied last: nothing to do.
    Unchanged,
    /// The file was refused; the message names the place.
    Refused(String),
}

/// The reload state of one config file.
pub struct ConfigReloader {
    server: Arc<Server>,
    path: PathBuf,
    /// The content applied last.
    applied: String,
    /// The proxy names of the file applied last.
    names: Vec<String>,
}

impl ConfigReloader {
    /// Starts from the content and proxies already applied at start-up.
    pub fn new(server: Arc<Server>, path: &Path, applied: String, names: Vec<String>) -> Self {
        ConfigReloader {
            server,
            path: path.to_path_buf(),
            applied,
            names,
        }
    }

    /// Re-reads the file; applies it when `force` or when it changed.
    pub async fn reload(&mut self, force: bool) -> Reloaded {
        let shown = self.path.display().to_string();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) => return self.refused(format!("{shown}: cannot read config: {err}")),
        };
        if !force && text == self.applied {
            return Reloaded::Unchanged;
        }
        let config = match crate::config::parse_str(&text, &shown) {
            Ok(config) => config,
            Err(err) => return self.refused(err.to_string()),
        };
        let names: Vec<String> = config.proxies.iter().map(|p| p.name.clone()).collect();
        let forget = self
            .names
            .iter()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect();
        let change = Change::ApplyConfig {
            proxies: config.proxies,
            forget,
        };
        match self.server.apply(change).await {
            Ok(Outcome::Proxies(_)) | Ok(_) => {
                self.applied = text;
                self.names = names.clone();
                self.server.metrics.config_reload(true);
                tracing::info!(config = %shown, proxies = ?names, "config reloaded");
                Reloaded::Applied(names)
            }
            Err(err) => self.refused(format!("{shown}: {err}")),
        }
    }

    fn refused(&mut self, message: String) -> Reloaded {
        self.server.metrics.config_reload(false);
        tracing::error!(error = %message, "config reload refused; the running config stays");
        Reloaded::Refused(message)
    }
}

/// Reloads on SIGHUP and on changes in the file's directory until `stop`.
pub async fn watch_config(mut reloader: ConfigReloader, mut stop: watch::Receiver<bool>) {
    let (tx, mut events) = mpsc::unbounded_channel::<()>();
    let dir = reloader
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| {
        w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(err) => {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot watch the config directory; reloading on SIGHUP only");
            None
        }
    };
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP");
            None
        }
    };
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                reloader.reload(true).await;
            }
            Some(()) = events.recv() => {
                // Let a burst of events (a symlink swap is several) settle.
                while let Ok(Some(())) = tokio::time::timeout(SETTLE, events.recv()).await {}
                reloader.reload(false).await;
            }
        }
    }
}
