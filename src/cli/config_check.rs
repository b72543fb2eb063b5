//! `tollgate config check`: the same loader as `serve`, printing the result.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::config::{Config, Env};

/// Prints the effective configuration (every setting in force, secrets masked) as TOML that
/// loads back to the same configuration, and exits 0; or every problem, and exits 1. With
/// `--json`, one document: `valid`, then `config` or `errors`.
pub fn run(json: bool, path: Option<&Path>, env: &Env) -> anyhow::Result<ExitCode> {
    let checked = Config::load(path, env);
    let mut out = std::io::stdout().lock();
    match (&checked, json) {
        (Ok(config), false) => write!(out, "{}", config.effective.to_toml())?,
        (Ok(config), true) => writeln!(
            out,
            "{}",
            json!({
                "valid": true,
                "config": config.effective.table,
                "set_in_environment": config.effective.from_env_only,
            })
        )?,
        (Err(error), false) => {
            let mut stderr = std::io::stderr().lock();
            for line in &error.0 {
                writeln!(stderr, "{line}")?;
            }
        }
        (Err(error), true) => writeln!(out, "{}", json!({ "valid": false, "errors": error.0 }))?,
    }
    Ok(if checked.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
