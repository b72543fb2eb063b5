//! `tollgate reconcile`: Tollgate's spend per day and model beside OpenAI's Costs and Usage
//! APIs (read with `OPENAI_ADMIN_KEY`), and the differences.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::config::{Config, Env};
use crate::reconcile::{DEFAULT_TOLERANCE, reconcile};
use crate::store;

/// `tollgate reconcile`
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// How far back, in whole UTC days from that day's start, e.g. 7d.
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// The cost difference a day and model may have and still agree, in USD.
    #[arg(long)]
    pub tolerance_usd: Option<f64>,
}

/// Runs the comparison; exit 1 when OpenAI cannot be read.
pub async fn run(
    args: ReconcileArgs,
    json: bool,
    path: Option<&Path>,
    env: &Env,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(path, &super::env_without_upstream(env))?;
    let tolerance = match args.tolerance_usd {
        None => DEFAULT_TOLERANCE,
        Some(usd) if usd.is_finite() && (0.0..=1_000.0).contains(&usd) => {
            crate::pricing::usd_to_nanos(usd)
        }
        Some(_) => anyhow::bail!("--tolerance-usd: a number from 0 to 1000"),
    };
    let now = crate::records::now_ms();
    let from_ms = now - super::keys::parse_lifetime_ms("--since", &args.since)?;
    super::require_existing_database(&config)?;
    let records = store::connect(&config.database)
        .await
        .context("opening the database")?
        .records;
    let upstream = &config.upstream;
    let report = reconcile(
        records.as_ref(),
        (
            &upstream.admin_base_url,
            upstream.admin_key.as_ref(),
            upstream.project.as_ref(),
        ),
        (from_ms, now),
        tolerance,
    )
    .await?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{} to {}: {} day and model pairs agree (within {} USD), {} differ",
        report.from,
        report.to,
        report.matched,
        report.tolerance_usd,
        report.differences.len()
    )?;
    if report.differences.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let header = [
        "DAY",
        "MODEL",
        "TOLLGATE_USD",
        "OPENAI_USD",
        "DIFFERENCE_USD",
        "TOLLGATE_IN",
        "OPENAI_IN",
        "TOLLGATE_OUT",
        "OPENAI_OUT",
    ];
    let lines: Vec<Vec<String>> = report
        .differences
        .iter()
        .map(|d| {
            vec![
                d.day.clone(),
                d.model.clone(),
                d.tollgate.cost_usd.clone(),
                d.openai.cost_usd.clone(),
                d.cost_difference_usd.clone(),
                d.tollgate.input_tokens.to_string(),
                d.openai.input_tokens.to_string(),
                d.tollgate.output_tokens.to_string(),
                d.openai.output_tokens.to_string(),
            ]
        })
        .collect();
    super::write_table(&mut out, &header, &lines)?;
    Ok(ExitCode::SUCCESS)
}
