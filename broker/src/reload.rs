//! Files the broker reads again while it runs (TLS certificates and keys,
//! the token file): on SIGHUP, and whenever their modification time
//! changes, so rotating a certificate or revoking a token needs no restart.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the files' modification times are checked.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Something loaded from files that can be loaded again.
pub trait Reload: Send + Sync {
    /// Loads again if `force` (SIGHUP) or the files changed; on failure
    /// logs and keeps what was loaded before.
    fn reload(&self, force: bool);
}

/// Reloads `sources` on SIGHUP and every [`WATCH_EVERY`] until `stop`.
pub async fn watch(sources: Vec<Arc<dyn Reload>>, stop: CancellationToken) {
    if sources.is_empty() {
        return;
    }
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; files are reloaded when they change");
            None
        }
    };
    loop {
        let force = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(WATCH_EVERY) => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
        };
        if force {
            tracing::info!("SIGHUP: reloading certificates and tokens");
        }
        for source in &sources {
            source.reload(force);
        }
    }
}
