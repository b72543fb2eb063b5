//! The HTTP server: the layer stack (composed here and nowhere else) and the accept loop.
//!
//! The accept loop is hyper-util's, not `axum::serve`, because a gateway needs what
//! `axum::serve` does not expose: a header read timeout (a client that dribbles its headers is
//! cut off), `TCP_NODELAY` on every socket, HTTP/1.1 keep-alive and h2c (HTTP/2 without TLS,
//! detected from the connection preface) on the same port, and a graceful shutdown that stops
//! accepting, lets in-flight requests and streams finish within a grace period, then closes.
//! `connections` bounds each connection in time (idle, first request) and each client address
//! in number.

mod connections;
pub use connections::{ConnectionSlot, Slot};
pub mod live;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::IntoResponse;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::GatewayError;
use crate::middleware::origin::AllowedOrigins;
use crate::middleware::{access_log, content_type, origin, request_id, security_headers};
use crate::records::Recorder;
use crate::routes;
use crate::state::AppState;

/// The whole application: the routes inside the HTTP layers.
pub fn router(state: AppState) -> Router {
    let cors_origins = state.config.server.cors_origins.clone();
    let recorder = state.recorder.clone();
    with_layers(routes::router(state), &cors_origins, recorder)
}

/// Wraps `routes` in the HTTP layers, outermost first. Public so that tests can put a route
/// of their own (one that panics) inside exactly the production stack.
pub fn with_layers(routes: Router, cors_origins: &[String], recorder: Recorder) -> Router {
    let cors = cors_layer(cors_origins);
    let allowed_origins = AllowedOrigins(
        cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect(),
    );
    let [nosniff, frame, referrer, csp, cache_control] = security_headers::layers();
    let layers = ServiceBuilder::new()
        // 1. Request id first, so every response below — panics and 404s included — carries it
        //    and every log line can name it.
        .layer(axum::middleware::from_fn(request_id::assign))
        // 2. The log line, metrics and audit record see the final status, after panics
        //    became 500s.
        .layer(axum::middleware::from_fn_with_state(
            recorder,
            access_log::observe,
        ))
        // 3. A panic in any handler becomes a 500 in OpenAI's envelope, never a dropped connection.
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                GatewayError::Internal("handler panicked".to_owned()).into_response()
            },
        ))
        // 4. Security headers on everything, errors included.
        .layer(nosniff)
        .layer(frame)
        .layer(referrer)
        .layer(csp)
        .layer(cache_control)
        // 5. CORS answers preflights before authentication (browsers send no credentials on
        //    them) and only for listed origins.
        .option_layer(cors)
        // 6. One gate, before any work: a request from a browser origin outside the allowlist
        //    (403), then a body of a type no route takes (415). Body *size* is enforced where
        //    bodies are read (`extract`), so 413 uses our envelope.
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let refused = origin::refusal(&allowed_origins, &request)
                    .or_else(|| content_type::refusal(&request));
                async move {
                    match refused {
                        Some(error) => error.into_response(),
                        None => next.run(request).await,
                    }
                }
            },
        ));
    routes.layer(layers)
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_credentials(true)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-user-id"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("openai-beta"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("x-tollgate-cache"),
                HeaderName::from_static("x-tollgate-cost-usd"),
                HeaderName::from_static("x-ratelimit-remaining-requests"),
                header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains.
///
/// Every connection is bounded: headers within `server.header_read_timeout`, no request in
/// flight for `server.idle_timeout` closes it (HTTP/1.1 keep-alive and HTTP/2 alike, so a
/// client answering HTTP/2 pings cannot hold one forever), and at most
/// `server.max_connections_per_ip` at once per client address.
///
/// Draining: stop accepting; tell every connection to finish its in-flight request and close
/// (HTTP/1 stops keep-alive, HTTP/2 sends GOAWAY); wait for them and for the deferred tasks
/// (stream relays) up to the grace period; then return, dropping whatever is left.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let server = state.config.server.clone();
    let live = live::Live::new(state.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(MAX_HEADER_LIST_BYTES);
    let draining = CancellationToken::new();
    if state.config.records.enabled {
        let current = live.clone();
        state.tasks.spawn(crate::batches::poll(
            move || current.state(),
            state.config.records.batch_poll_interval,
            draining.clone(),
        ));
    }
    // Pools' state shared with the other replicas (whatever the configuration says now: a
    // reload may add a pool).
    if let Some(store) = &state.pools.shared {
        state.tasks.spawn(crate::upstream::pool::shared::sync(
            std::sync::Arc::clone(&state.pools.board),
            std::sync::Arc::clone(store),
            draining.clone(),
        ));
    }
    if let Some(requests) = state.reload.take_inbox() {
        state.tasks.spawn(live::serve_reloads(
            live.clone(),
            requests,
            draining.clone(),
        ));
    }
    let per_ip = connections::PerIp::new(server.max_connections_per_ip);
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A load balancer carries many clients: only direct clients are counted.
        let slot = if server.trusted_proxies.trusts(peer.ip()) {
            None
        } else {
            match per_ip.claim(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    crate::metrics::record_connection_closed("per_ip_cap");
                    tracing::debug!(client = %peer.ip(), "too many connections from one client");
                    continue;
                }
            }
        };
        let slot = connections::ConnectionSlot::new(slot);
        // Small SSE events and JSON answers must leave at once, not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let activity = connections::Activity::new();
        let service = {
            let live = live.clone();
            let activity = activity.clone();
            let slot = slot.clone();
            hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                // The peer address, for client-IP decisions (as `into_make_service_with_connect_info`).
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                // Only an upgrade can take the connection over (and its slot with it).
                if request.headers().contains_key(header::UPGRADE) {
                    request.extensions_mut().insert(slot.clone());
                }
                let busy = activity.begin();
                // The router (and state) current now serve this request to its end.
                let app = live.router();
                async move {
                    let response = app.oneshot(request).await?;
                    Ok::<_, std::convert::Infallible>(busy.hold_until_sent(response))
                }
            })
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let draining = draining.clone();
        let limits = connections::Limits {
            first_request: server.header_read_timeout,
            idle: server.idle_timeout,
        };
        state.tasks.spawn(async move {
            let _slot = slot;
            connections::watch(
                connection,
                |connection| connection.graceful_shutdown(),
                activity,
                limits,
                draining,
            )
            .await;
        });
    }

    tracing::info!(
        grace_ms = server.shutdown_grace.as_millis() as u64,
        "shutting down: draining in-flight requests"
    );
    drop(listener);
    draining.cancel();
    let drained = async {
        state.tasks.close();
        state.tasks.wait().await;
    };
    if tokio::time::timeout(server.shutdown_grace, drained)
        .await
        .is_err()
    {
        tracing::warn!("grace period over: closing the remaining connections");
    }
    state.finish_records().await;
    Ok(())
}

/// The largest HTTP/2 header list a client may send (hyper's default is 16 MiB).
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called, not
/// when the future is first polled: a signal that arrives between "listening" and the serve
/// loop is then a request to stop, never the default action that kills the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = signal(SignalKind::terminate())
            .and_then(|terminate| Ok((terminate, signal(SignalKind::interrupt())?)));
        async move {
            match handlers {
                Ok((mut terminate, mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => {},
                        _ = interrupt.recv() => {},
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
