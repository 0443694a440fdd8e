//! Stop signals and the readiness flag that draining turns off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the server is draining. Shared by the server, which sets it on a stop signal, and
/// `/readyz`, which fails from then on.
#[derive(Clone, Default)]
pub struct Readiness {
    draining: Arc<AtomicBool>,
}

impl Readiness {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Completes on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C). A signal that cannot be
/// listened for is logged and never completes, so only the other one stops the server.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};

    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "failed to listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };

    tokio::select! {
        () = terminate => tracing::info!(signal = "SIGTERM", "stop signal received"),
        () = interrupt => tracing::info!(signal = "SIGINT", "stop signal received"),
    }
}
