//! The command line: one file per subcommand. `anyhow` is used here and in `main.rs` only.

mod config_check;
mod demo;
mod health;
mod keys;
mod mock_upstream;
mod prices;
mod reconcile;
mod serve;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Env};

/// Tollgate: a fast, secure gateway for the OpenAI API.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
pub struct Cli {
    /// The TOML configuration file (default: $TOLLGATE_CONFIG, else ./tollgate.toml if present).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print one JSON document on stdout, whatever the outcome (errors as `{"error": …}`).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (address from --port, PORT / TOLLGATE_HOST).
    Serve(serve::ServeArgs),
    /// Run the gateway with an in-process mock upstream and a fresh key: try Tollgate without an OpenAI key.
    Demo(demo::DemoArgs),
    /// Create, list and revoke gateway keys in the configured database.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Requests, tokens and cost from the audit records (--by key,user,model,day,hour --since 7d).
    Usage(usage::UsageArgs),
    /// The price table in force (built in, with [pricing] overrides marked) and its version.
    Prices(prices::PricesArgs),
    /// Tollgate's spend per day and model beside OpenAI's Costs and Usage APIs (OPENAI_ADMIN_KEY).
    Reconcile(reconcile::ReconcileArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the fake OpenAI upstream used by tests, benchmarks and the demo.
    MockUpstream(mock_upstream::MockArgs),
    /// Ask a running gateway whether it is ready (a container's health check); exit 1 if not.
    Health(health::HealthArgs),
}

/// `tollgate config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration; print every setting in force (secrets masked) as
    /// TOML that loads back to the same configuration; exit 1 on error.
    Check,
}

/// Runs a parsed command line against an environment.
pub async fn run(cli: Cli, env: Env) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let mut env = env;
            if let Some(port) = args.port {
                env.set("PORT", &port.to_string());
            }
            if cli.json {
                env.set("TOLLGATE_LOG_FORMAT", "json");
            }
            let config = load(cli.config.as_deref(), &env)?;
            let source = crate::reload::ConfigSource {
                path: cli.config.clone(),
                env,
            };
            serve::run(config, source).await
        }
        Command::Demo(args) => demo::run(args, cli.json, cli.config.as_deref(), env).await,
        Command::Keys(command) => keys::run(command, cli.json, cli.config.as_deref(), &env).await,
        Command::Usage(args) => usage::run(args, cli.json, cli.config.as_deref(), &env).await,
        Command::Prices(args) => prices::run(&args, cli.json, cli.config.as_deref(), &env),
        Command::Reconcile(args) => {
            reconcile::run(args, cli.json, cli.config.as_deref(), &env).await
        }
        Command::Config(ConfigCommand::Check) => {
            config_check::run(cli.json, cli.config.as_deref(), &env)
        }
        Command::MockUpstream(args) => mock_upstream::run(args, cli.json).await,
        Command::Health(args) => health::run(&args, cli.json, cli.config.as_deref(), &env).await,
    }
}

/// Loads the configuration or fails with every problem listed.
fn load(path: Option<&std::path::Path>, env: &Env) -> anyhow::Result<Config> {
    Ok(Config::load(path, env)?)
}

/// An error and its causes on one line, each cause once: libraries often repeat their source in
/// their own message, which `{:#}` would print again ("…: unable to open database file: …:
/// unable to open database file").
pub fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Read-only commands (`keys list`, `usage`, `reconcile`) refuse to create an empty SQLite
/// database where there is none: answering "nothing" about a file the operator did not mean
/// (the demo writes `tollgate-demo.db`, `serve` `tollgate.db`) hides the mistake.
fn require_existing_database(config: &Config) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let url = config.database.url.expose_secret();
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Ok(());
    };
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || std::path::Path::new(path).exists() {
        return Ok(());
    }
    let demo = if std::path::Path::new("tollgate-demo.db").exists() {
        "; the demo's database is here: DATABASE_URL=sqlite://tollgate-demo.db"
    } else {
        ""
    };
    anyhow::bail!(
        "no database at {path} (DATABASE_URL or database.url): nothing was ever stored there{demo}"
    )
}

/// Binds the configured address, or says what to do when the port is taken.
async fn bind(config: &Config) -> anyhow::Result<tokio::net::TcpListener> {
    let address = std::net::SocketAddr::new(config.server.host, config.server.port);
    tokio::net::TcpListener::bind(address).await.map_err(|error| {
        if error.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "port {} on {} is already in use (another tollgate?): stop it, or pass --port N \
                 (--port 0 picks a free one)",
                address.port(),
                address.ip()
            )
        } else {
            anyhow::Error::new(error).context(format!("binding {address}"))
        }
    })
}

/// Commands that only touch the database need no upstream key; give the loader a placeholder
/// so that its absence is not reported as an error there.
fn env_without_upstream(env: &Env) -> Env {
    let mut env = env.clone();
    env.set_default("OPENAI_API_KEY", "unused-by-this-command");
    env
}

/// Writes `lines` under `header` in columns two spaces apart, each as wide as its widest cell.
fn write_table(
    out: &mut dyn std::io::Write,
    header: &[&str],
    lines: &[Vec<String>],
) -> std::io::Result<()> {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            lines
                .iter()
                .map(|line| line[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut print = |cells: &mut dyn Iterator<Item = &str>| -> std::io::Result<()> {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", padded.join("  ").trim_end())
    };
    print(&mut header.iter().copied())?;
    for line in lines {
        print(&mut line.iter().map(String::as_str))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("database: {0}")]
    struct Repeating(#[source] std::io::Error);

    #[test]
    fn a_cause_repeated_in_its_wrapper_is_printed_once() {
        let io = std::io::Error::other("unable to open database file");
        let error = anyhow::Error::new(Repeating(io)).context("opening the database");
        assert_eq!(
            describe(&error),
            "opening the database: database: unable to open database file"
        );
    }
}
