//! `tollgate serve`: run the gateway until SIGTERM/SIGINT.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::config::Config;
use crate::reload::ConfigSource;
use crate::state::AppState;
use crate::{otel, server, store, telemetry};

/// `serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The port to listen on (default: $PORT, else 3006; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
}

/// Opens the store, binds the port, serves (reloading `source` on SIGHUP or
/// `POST /admin/reload`), drains.
pub async fn run(config: Config, source: ConfigSource) -> anyhow::Result<ExitCode> {
    let _logs = telemetry::init(&config.log);
    let traces = otel::init(&config.log.traces)?;
    let stores = store::connect(&config.database)
        .await
        .context("opening the database")?;
    // The first request on a budgeted key should not wait ~200 ms for the tokenizer. A store
    // that cannot answer says no: the key cache warms it when it meets such a key.
    if stores
        .keys
        .any_counts_tokens(crate::keys::now_ms())
        .await
        .unwrap_or(false)
    {
        crate::tokens::warm_up();
    }
    let state = AppState::new(config, stores).context("building the gateway state")?;
    state.reload.set_source(source);
    let listener = super::bind(&state.config).await?;
    let stop = server::shutdown_signal();
    tracing::info!(address = %listener.local_addr()?, upstream = %state.config.upstream.base_url, "tollgate listening");
    server::run(listener, state, stop).await?;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    tracing::info!("tollgate stopped");
    Ok(ExitCode::SUCCESS)
}
