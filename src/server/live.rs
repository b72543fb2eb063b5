//! The state and router that new requests are served by, swapped whole by a reload
//! ([`crate::reload`]). A request takes the router current when it arrives and keeps it, and
//! with it the state it started with, to its end (streams included).

use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::reload::{self, ReloadError, ReloadRequest};
use crate::state::AppState;

/// The current state and its router.
pub struct Live {
    current: RwLock<(AppState, Router)>,
}

impl Live {
    /// Serves `state` until a reload replaces it.
    pub fn new(state: AppState) -> Arc<Self> {
        let router = super::router(state.clone());
        Arc::new(Self {
            current: RwLock::new((state, router)),
        })
    }

    /// The router for a request arriving now.
    pub fn router(&self) -> Router {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    /// The state new requests see (background work reads it each round).
    pub fn state(&self) -> AppState {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    /// Reads the configuration again and swaps it in, or keeps the running one and says why.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let current = self.state();
        let prepared = tokio::task::spawn_blocking(move || reload::prepare(&current))
            .await
            .unwrap_or(Err(ReloadError::Interrupted));
        let outcome = prepared.map(|state| {
            // The new state's key cache starts empty: keys merge their rules with the new
            // defaults on their next lookup.
            let router = super::router(state.clone());
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = (state, router);
        });
        match &outcome {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(error) => {
                tracing::warn!(%error, "configuration not reloaded: the running one stays");
            }
        }
        crate::metrics::record_reload(outcome.is_ok());
        outcome
    }
}

/// Reloads on `SIGHUP` and on each request from `POST /admin/reload`, one at a time, until
/// `stop`.
pub async fn serve_reloads(
    live: Arc<Live>,
    mut requests: mpsc::Receiver<ReloadRequest>,
    stop: CancellationToken,
) {
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hangups.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        tokio::select! {
            () = stop.cancelled() => return,
            Some(()) = hangup => {
                let _ = live.reload().await;
            }
            request = requests.recv() => match request {
                Some(answer) => {
                    let outcome = live.reload().await.map_err(|e| e.to_string());
                    let _ = answer.send(outcome);
                }
                None => return,
            },
        }
    }
}
