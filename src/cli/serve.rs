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
    if any_key_counts_tokens(stores.keys.as_ref()).await {
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

/// Whether an active stored key has a budget or a token rule: then the tokenizer is built
/// before the first request rather than during it (~200 ms). A store that cannot be read says
/// no; the key cache warms the tokenizer when it meets such a key.
async fn any_key_counts_tokens(keys: &dyn crate::store::KeyStore) -> bool {
    let now = crate::keys::now_ms();
    let mut after: Option<String> = None;
    loop {
        let Ok(page) = keys.list(after.as_deref(), 500).await else {
            return false;
        };
        if page
            .iter()
            .any(|key| key.is_active(now) && key.counts_tokens())
        {
            return true;
        }
        if page.len() < 500 {
            return false;
        }
        after = page.last().map(|key| key.id.clone());
    }
}
