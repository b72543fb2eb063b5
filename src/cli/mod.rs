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
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (address from PORT / TOLLGATE_HOST).
    Serve,
    /// Run the gateway with an in-process mock upstream and a fresh key: try Tollgate without an OpenAI key.
    Demo(demo::DemoArgs),
    /// Create, list and revoke gateway keys in the configured database.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Requests, tokens and cost from the audit records (--by key,user,model,day --since 7d).
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
    /// Load and validate the configuration, print it with secrets masked; exit 1 on error.
    Check,
}

/// Runs a parsed command line against an environment.
pub async fn run(cli: Cli, env: Env) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve => {
            let config = load(cli.config.as_deref(), &env)?;
            let source = crate::reload::ConfigSource {
                path: cli.config.clone(),
                env,
            };
            serve::run(config, source).await
        }
        Command::Demo(args) => demo::run(args, cli.config.as_deref(), env).await,
        Command::Keys(command) => keys::run(command, cli.config.as_deref(), &env).await,
        Command::Usage(args) => usage::run(args, cli.config.as_deref(), &env).await,
        Command::Prices(args) => prices::run(&args, cli.config.as_deref(), &env),
        Command::Reconcile(args) => reconcile::run(args, cli.config.as_deref(), &env).await,
        Command::Config(ConfigCommand::Check) => Ok(config_check::run(cli.config.as_deref(), &env)),
        Command::MockUpstream(args) => mock_upstream::run(args).await,
        Command::Health(args) => health::run(&args, cli.config.as_deref(), &env).await,
    }
}

/// Loads the configuration or fails with every problem listed.
fn load(path: Option<&std::path::Path>, env: &Env) -> anyhow::Result<Config> {
    Ok(Config::load(path, env)?)
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
