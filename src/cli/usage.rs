//! `tollgate usage`: requests, tokens and cost from the audit records, as a table or JSON.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::config::{Config, Env};
use crate::pricing::format_usd;
use crate::records::{GroupBy, UsageQuery};
use crate::store;

/// `tollgate usage`
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Group by key, user, model, day and/or hour (comma-separated or repeated).
    #[arg(long = "by", value_delimiter = ',')]
    pub by: Vec<String>,
    /// How far back, e.g. 7d, 24h (counted by the hour).
    #[arg(long, default_value = "7d")]
    pub since: String,
}

/// Runs `tollgate usage` against the configured database.
pub async fn run(
    args: UsageArgs,
    json: bool,
    path: Option<&Path>,
    env: &Env,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(path, &super::env_without_upstream(env))?;
    let group_by = args
        .by
        .iter()
        .map(|by| {
            GroupBy::parse(by).with_context(|| {
                format!("--by: expected key, user, model, day or hour, got {by:?}")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let now = crate::records::now_ms();
    let query = UsageQuery {
        group_by: group_by.clone(),
        from_ms: now - super::keys::parse_lifetime_ms("--since", &args.since)?,
        // Through the current hour.
        to_ms: now + 3_600_000,
    };
    super::require_existing_database(&config)?;
    let records = store::connect(&config.database)
        .await
        .context("opening the database")?
        .records;
    let rows = records.usage(&query).await.context("reading usage")?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut header: Vec<&str> = group_by
        .iter()
        .map(|g| match g {
            GroupBy::Key => "KEY",
            GroupBy::User => "USER",
            GroupBy::Model => "MODEL",
            GroupBy::Day => "DAY",
            GroupBy::Hour => "HOUR",
        })
        .collect();
    header.extend([
        "REQUESTS",
        "ERRORS",
        "PROMPT",
        "CACHED",
        "COMPLETION",
        "COST_USD",
        "UNPRICED",
    ]);
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells: Vec<String> = group_by
                .iter()
                .map(|g| {
                    let value = match g {
                        GroupBy::Key => &row.key_id,
                        GroupBy::User => &row.user_id,
                        GroupBy::Model => &row.model,
                        GroupBy::Day => &row.day,
                        GroupBy::Hour => &row.hour,
                    };
                    match value.as_deref() {
                        None | Some("") => "-".to_owned(),
                        Some(text) => text.to_owned(),
                    }
                })
                .collect();
            cells.extend([
                row.totals.requests.to_string(),
                row.totals.errors.to_string(),
                row.totals.prompt_tokens.to_string(),
                row.totals.cached_tokens.to_string(),
                row.totals.completion_tokens.to_string(),
                format_usd(row.totals.cost_nanos),
                row.totals.unpriced.to_string(),
            ]);
            cells
        })
        .collect();
    super::write_table(&mut out, &header, &lines)?;
    if lines.is_empty() {
        writeln!(out, "(no requests in the last {})", args.since)?;
    }
    Ok(ExitCode::SUCCESS)
}
