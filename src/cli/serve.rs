//! `tollgate serve`: run the gateway until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;
use crate::reload::ConfigSource;
use crate::state::AppState;
use crate::{otel, server, store, telemetry};

/// Opens the store, binds the port, serves (reloading `source` on SIGHUP or
/// `POST /admin/reload`), drains.
pub async fn run(config: Config, source: ConfigSource) -> anyhow::Result<ExitCode> {
    let _logs = telemetry::init(&config.log);
    let traces = otel::init(&config.log.traces)?;
    let address = SocketAddr::new(config.server.host, config.server.port);
    let stores = store::connect(&config.database)
        .await
        .context("opening the database")?;
    let state = AppState::new(config, stores).context("building the gateway state")?;
    state.reload.set_source(source);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    tracing::info!(address = %listener.local_addr()?, upstream = %state.config.upstream.base_url, "tollgate listening");
    server::run(listener, state, server::shutdown_signal()).await?;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    tracing::info!("tollgate stopped");
    Ok(ExitCode::SUCCESS)
}
