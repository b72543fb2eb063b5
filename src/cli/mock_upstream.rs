//! `tollgate mock-upstream`: serve the fake OpenAI on its own.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::mock_upstream::{self, MockOptions};

/// `mock-upstream` options.
#[derive(Debug, Args)]
pub struct MockArgs {
    /// Address to listen on (port 0 picks a free one; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:3007")]
    pub listen: SocketAddr,
    /// Latency added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Pause between stream events, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub stream_interval_ms: u64,
    /// Require this bearer key (401 otherwise), to test the gateway's upstream-auth handling.
    #[arg(long)]
    pub api_key: Option<String>,
    /// How many received requests /_mock/requests keeps (0: record nothing, for benchmarks).
    #[arg(long, default_value_t = 1000)]
    pub record_limit: usize,
    /// Speak Azure OpenAI's dialect: `/openai/deployments/NAME/...?api-version=...`, the key
    /// in `api-key`, Azure's error shapes.
    #[arg(long)]
    pub azure: bool,
    /// With --azure: a deployment and the model it runs (`NAME=MODEL`, repeatable); unknown
    /// deployments answer 404 DeploymentNotFound. None: any name is served as that model.
    #[arg(long, value_name = "NAME=MODEL", requires = "azure", value_parser = deployment)]
    pub azure_deployment: Vec<(String, String)>,
    /// Limit answers to this many requests a minute, with OpenAI's `x-ratelimit-*` headers
    /// on every answer and a 429 beyond it.
    #[arg(long)]
    pub requests_per_minute: Option<u64>,
}

fn deployment(text: &str) -> Result<(String, String), String> {
    let (name, model) = text
        .split_once('=')
        .ok_or_else(|| "expected NAME=MODEL".to_owned())?;
    Ok((name.to_owned(), model.to_owned()))
}

/// Binds, prints `listening on ADDRESS`, serves until SIGTERM/SIGINT.
pub async fn run(args: MockArgs, json: bool) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;
    let stop = crate::server::shutdown_signal();
    let base_url = format!("http://{address}/v1");
    if json {
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::json!({ "listening": base_url })
        )?;
    } else {
        writeln!(std::io::stdout(), "mock-upstream listening on {base_url}")?;
    }
    std::io::stdout().flush()?;
    let options = MockOptions {
        latency: Duration::from_millis(args.latency_ms),
        stream_interval: Duration::from_millis(args.stream_interval_ms),
        api_key: args.api_key,
        record_limit: args.record_limit,
        azure: args.azure.then(|| mock_upstream::azure::AzureMock {
            deployments: args.azure_deployment.into_iter().collect(),
        }),
        requests_per_minute: args.requests_per_minute,
    };
    mock_upstream::serve(listener, options, stop).await?;
    Ok(ExitCode::SUCCESS)
}
