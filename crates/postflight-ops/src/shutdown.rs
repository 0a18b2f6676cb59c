//! Stopping on SIGTERM as well as SIGINT.
//!
//! Kubernetes, Docker and systemd stop a process with SIGTERM. As PID 1 in a container a
//! process has no default action for SIGTERM at all: without a handler the signal is ignored
//! and the process is killed after the grace period, losing what it buffered. Every binary
//! therefore listens for both signals and drains within [`GRACE`].

use std::time::Duration;

use tokio::sync::watch;

/// How long a binary may take to stop once asked: well inside Kubernetes' default 30 s
/// grace period, and the bound the tests hold the binaries to.
pub const GRACE: Duration = Duration::from_secs(9);

/// A stop request shared by every part of a process; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Starts listening for SIGTERM and SIGINT (Ctrl-C). Must be called inside a Tokio
    /// runtime; if a handler cannot be installed the error says which.
    pub fn on_signals() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "stopping: draining within {GRACE:?}");
            tx.send_replace(true);
            // Keep the handlers installed: a second signal during the drain is absorbed
            // rather than killing the process halfway.
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
        });
        Ok(Self(rx))
    }

    /// Completes once a stop was requested.
    pub async fn requested(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
