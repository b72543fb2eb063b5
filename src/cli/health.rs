//! `tollgate health`: asks a running gateway whether it is ready, for a container's
//! `HEALTHCHECK` (the runtime image has no shell and no curl). Exit 0 on a 2xx answer.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use std::net::{IpAddr, SocketAddr};

use crate::config::{Config, Env};

/// `tollgate health`
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// What to ask (plain http only); default `/health/ready` at the configured address
    /// (`PORT` / `server.port`, and `TOLLGATE_HOST` / `server.host` unless it is a wildcard).
    #[arg(long)]
    pub url: Option<String>,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 3_000)]
    pub timeout_ms: u64,
}

/// Asks and prints the status line; exit 1 unless the answer is 2xx.
pub async fn run(
    args: &HealthArgs,
    json: bool,
    path: Option<&std::path::Path>,
    env: &Env,
) -> anyhow::Result<ExitCode> {
    let url = match &args.url {
        Some(url) => url.clone(),
        None => {
            // Where `serve` listens, read the way `serve` reads it.
            let config = Config::load(path, &super::env_without_upstream(env))?;
            let host = match config.server.host {
                host if host.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
                host => host,
            };
            let address = SocketAddr::new(host, config.server.port);
            format!("http://{address}/health/ready")
        }
    };
    let ask = status_of(&url);
    let status = tokio::time::timeout(Duration::from_millis(args.timeout_ms), ask)
        .await
        .with_context(|| format!("no answer from {url} in {} ms", args.timeout_ms))??;
    let ready = (200..300).contains(&status);
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "url": url, "status": status, "ready": ready })
        )?;
    } else {
        writeln!(out, "{url}: {status}")?;
    }
    Ok(if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The status code of `GET url` (HTTP/1.1, one connection).
async fn status_of(url: &str) -> anyhow::Result<u16> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!(
            "{url}: only http:// is supported (the health check asks the gateway it runs beside)"
        );
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    // The status line, however the answer arrives in pieces.
    let mut head = Vec::with_capacity(64);
    let mut chunk = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {line:?}"))
}
