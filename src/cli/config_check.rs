//! `tollgate config check`: the same loader as `serve`, printing the result.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, Env};

/// Prints the effective configuration (secrets masked) and exits 0, or every problem and exits 1.
pub fn run(path: Option<&Path>, env: &Env) -> ExitCode {
    match Config::load(path, env) {
        Ok(config) => {
            let _ = writeln!(
                std::io::stdout(),
                "# configuration is valid\n{}",
                config.to_masked_toml()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            let mut stderr = std::io::stderr();
            for line in &error.0 {
                let _ = writeln!(stderr, "{line}");
            }
            ExitCode::FAILURE
        }
    }
}
