//! The `tollgate` binary: parses the command line and hands over to `cli::run`.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc: per-thread free lists suit a server that allocates and frees small buffers on
/// every request (measured in docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[expect(
    clippy::print_stderr,
    reason = "the one place a fatal error reaches the operator before logging exists"
)]
fn main() -> ExitCode {
    let cli = match tollgate::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // A usage error is exit 2 either way; asked for JSON, it is a JSON document too.
        Err(error) if error.use_stderr() && std::env::args_os().any(|arg| arg == "--json") => {
            let text = error.to_string();
            let lines: Vec<&str> = text
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = lines.join(" ");
            let document = serde_json::json!({ "error": message.trim_start_matches("error: ") });
            let _ = writeln!(std::io::stdout(), "{document}");
            return ExitCode::from(2);
        }
        Err(error) => error.exit(),
    };
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tollgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tollgate::cli::run(
        cli,
        tollgate::config::Env::from_process(),
    )) {
        Ok(code) => code,
        Err(error) => {
            let message = tollgate::cli::describe(&error);
            if json {
                let document = serde_json::json!({ "error": message });
                let _ = writeln!(std::io::stdout(), "{document}");
            } else {
                eprintln!("tollgate: {message}");
            }
            ExitCode::FAILURE
        }
    }
}
