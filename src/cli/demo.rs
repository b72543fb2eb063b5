//! `tollgate demo`: a newcomer's first minute. The gateway, an in-process mock upstream, a
//! fresh key, and copy-paste snippets; no OpenAI key needed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::config::{Config, Env};
use crate::keys::{self, NewKey};
use crate::mock_upstream::{self, MockOptions};
use crate::state::AppState;
use crate::{server, store, telemetry};

/// `demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Pause between streamed words, so streaming is visible in a terminal.
    #[arg(long, default_value_t = 40)]
    pub stream_interval_ms: u64,
}

/// Starts the mock, points the gateway at it, creates a key, prints how to call it, serves.
pub async fn run(args: DemoArgs, path: Option<&Path>, env: Env) -> anyhow::Result<ExitCode> {
    let mock_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the mock upstream")?;
    let mock_address = mock_listener.local_addr()?;
    let mock_key = format!("sk-demo-{}", uuid::Uuid::new_v4().simple());
    let options = MockOptions {
        stream_interval: std::time::Duration::from_millis(args.stream_interval_ms),
        api_key: Some(mock_key.clone()),
        ..MockOptions::default()
    };
    let mut env = env;
    env.set("OPENAI_API_KEY", &mock_key);
    env.set("OPENAI_BASE_URL", &format!("http://{mock_address}/v1"));
    env.set_default("DATABASE_URL", "sqlite://tollgate-demo.db");
    env.set_default("TOLLGATE_LOG_FORMAT", "text");
    let config = Config::load(path, &env)?;
    let _logs = telemetry::init(&config.log);

    let stores = store::connect(&config.database)
        .await
        .context("opening the database")?;
    let issued = keys::issue(
        NewKey {
            name: "demo".to_owned(),
            ..NewKey::default()
        },
        keys::now_ms(),
    );
    stores
        .keys
        .insert(&issued.key, &issued.hash)
        .await
        .context("storing the demo key")?;

    let address = SocketAddr::new(config.server.host, config.server.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    let base = format!("http://{}", listener.local_addr()?);
    print_welcome(&base, &issued.secret)?;

    let state = AppState::new(config, stores).context("building the gateway state")?;
    let (stop_mock, mock_stopped) = tokio::sync::oneshot::channel::<()>();
    let mock = state
        .tasks
        .spawn(mock_upstream::serve(mock_listener, options, async move {
            let _ = mock_stopped.await;
        }));
    server::run(listener, state, server::shutdown_signal()).await?;
    let _ = stop_mock.send(());
    let _ = mock.await;
    Ok(ExitCode::SUCCESS)
}

fn print_welcome(base: &str, key: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        r#"
Tollgate demo: the gateway is running at {base}, in front of a built-in mock of OpenAI.

  Your key (demo only):  {key}

Try it:

  curl {base}/v1/chat/completions \
    -H "Authorization: Bearer {key}" \
    -H "Content-Type: application/json" \
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

Or with the OpenAI Python SDK (pip install openai):

  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key="{key}")
  stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
      messages=[{{"role": "user", "content": "Hello!"}}])
  for chunk in stream:
      print(chunk.choices[0].delta.content or "", end="", flush=True)

Health: {base}/health   Metrics: {base}/metrics   Stop: Ctrl-C
"#
    )?;
    out.flush()
}
