//! `tollgate demo`: a newcomer's first minute. The gateway, an in-process mock upstream, a
//! fresh key, and copy-paste snippets; no OpenAI key needed.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use tokio_util::task::TaskTracker;

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
    /// The port to listen on (default: $PORT, else 3006; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
}

/// The demo's database, always (an exported `DATABASE_URL` is not the demo's business): apart
/// from the one `serve` uses by default, so that a demo key never works against a real upstream.
const DEMO_DATABASE_URL: &str = "sqlite://tollgate-demo.db";

/// Where the demo keeps its key and admin token between runs (mode 0600), in a form a shell
/// can source.
const DEMO_SECRETS_FILE: &str = "tollgate-demo.env";

/// Starts the mock, points the gateway at it, creates a key, prints how to call it, serves.
pub async fn run(
    args: DemoArgs,
    json: bool,
    path: Option<&Path>,
    env: Env,
) -> anyhow::Result<ExitCode> {
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
    let saved = DemoSecrets::read(Path::new(DEMO_SECRETS_FILE));
    // The demo keeps to its own mock, database and admin token, whatever the operator's
    // environment holds: their real token is never printed, a demo key never lands in their
    // database, and demo traffic never reaches an upstream of theirs.
    let mut env = env;
    env.set("OPENAI_API_KEY", &mock_key);
    env.set("OPENAI_BASE_URL", &format!("http://{mock_address}/v1"));
    env.set("DATABASE_URL", DEMO_DATABASE_URL);
    env.set("TOLLGATE_ADMIN_TOKEN", &saved.admin_token);
    env.set_default("TOLLGATE_LOG_FORMAT", "text");
    if let Some(port) = args.port {
        env.set("PORT", &port.to_string());
    }
    // A configuration file only when named with --config (./tollgate.toml may route models
    // to real providers).
    let config = match path {
        Some(path) => Config::load(Some(path), &env)?,
        None => Config::from_toml_str("(demo defaults)", "", &env)?,
    };
    let _logs = telemetry::init(&config.log);

    let stores = store::connect(&config.database)
        .await
        .context("opening the database")?;
    let key = demo_key(&stores, saved.key.as_deref()).await?;
    let listener = super::bind(&config).await?;
    let stop = server::shutdown_signal();
    let admin_token = saved.admin_token.clone();
    DemoSecrets {
        key: Some(key.clone()),
        admin_token: admin_token.clone(),
    }
    .write(Path::new(DEMO_SECRETS_FILE))
    .with_context(|| format!("writing {DEMO_SECRETS_FILE}"))?;
    let base = format!("http://{}", listener.local_addr()?);
    let welcome = Welcome {
        base: &base,
        key: &key,
        admin_token: &admin_token,
    };
    if json {
        welcome.print_json()?;
    } else {
        print_welcome(&welcome)?;
    }

    let state = AppState::new(config, stores).context("building the gateway state")?;
    // The mock runs beside the gateway, not on its task tracker: the gateway's shutdown waits
    // for its own tasks, and the mock must outlive the requests draining through it.
    let mock_tasks = TaskTracker::new();
    let (stop_mock, mock_stopped) = tokio::sync::oneshot::channel::<()>();
    mock_tasks.spawn(mock_upstream::serve(mock_listener, options, async move {
        let _ = mock_stopped.await;
    }));
    server::run(listener, state, stop).await?;
    let _ = stop_mock.send(());
    mock_tasks.close();
    mock_tasks.wait().await;
    Ok(ExitCode::SUCCESS)
}

/// The demo key kept from an earlier run when the database still holds it active, else a new one.
async fn demo_key(stores: &store::Stores, saved: Option<&str>) -> anyhow::Result<String> {
    if let Some(secret) = saved {
        let known = stores
            .keys
            .find_by_hash(&keys::hash_secret(secret))
            .await
            .context("looking up the demo key")?;
        if known.is_some_and(|key| key.is_active(keys::now_ms())) {
            return Ok(secret.to_owned());
        }
    }
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
    Ok(issued.secret)
}

/// What the demo remembers between runs.
struct DemoSecrets {
    key: Option<String>,
    admin_token: String,
}

impl DemoSecrets {
    /// The saved secrets, or a fresh admin token and no key. The file is believed only when it
    /// is a regular file of this user's that no one else may read or write: in a shared folder
    /// another user could otherwise choose the demo's admin token.
    fn read(path: &Path) -> Self {
        let text = if is_private_to_this_user(path) {
            std::fs::read_to_string(path).unwrap_or_default()
        } else {
            String::new()
        };
        let value = |name: &str| {
            text.lines()
                .filter_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .map(str::trim)
                .find(|value| !value.is_empty())
                .map(str::to_owned)
        };
        Self {
            key: value("TOLLGATE_DEMO_KEY").filter(|key| keys::looks_like_key(key)),
            admin_token: value("TOLLGATE_ADMIN_TOKEN")
                .filter(|token| {
                    token.len() >= 16
                        && token
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                })
                .unwrap_or_else(|| format!("demo-admin-{}", uuid::Uuid::new_v4().simple())),
        }
    }

    /// Writes the file readable by its owner only: a fresh file (never one that exists, never
    /// through a symbolic link) renamed over the old one.
    fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut text = format!(
            "# Written by `tollgate demo`: what it needs to keep its key between runs.\n\
             # Load into a shell with: set -a; . ./{DEMO_SECRETS_FILE}; set +a\n\
             DATABASE_URL={DEMO_DATABASE_URL}\n\
             TOLLGATE_ADMIN_TOKEN={}\n",
            self.admin_token
        );
        if let Some(key) = &self.key {
            text.push_str(&format!("TOLLGATE_DEMO_KEY={key}\n"));
        }
        let fresh = path.with_extension(format!("env.{}", uuid::Uuid::new_v4().simple()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options
            .open(&fresh)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .and_then(|()| std::fs::rename(&fresh, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&fresh);
        }
        written
    }
}

/// Whether `path` is a regular file (not a link) owned by this process's user, with no
/// permission for anyone else.
#[cfg(unix)]
fn is_private_to_this_user(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(file), Ok(me)) = (
        std::fs::symlink_metadata(path),
        std::fs::metadata("/proc/self"),
    ) else {
        return false;
    };
    file.file_type().is_file() && file.uid() == me.uid() && file.mode() & 0o077 == 0
}

#[cfg(not(unix))]
fn is_private_to_this_user(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_file())
}

/// What the welcome text names.
struct Welcome<'a> {
    base: &'a str,
    key: &'a str,
    admin_token: &'a str,
}

impl Welcome<'_> {
    /// One line for scripts: where the gateway is and how to call it.
    fn print_json(&self) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "base_url": format!("{}/v1", self.base),
                "key": self.key,
                "dashboard": format!("{}/dashboard", self.base),
                "admin_token": self.admin_token,
                "database_url": DEMO_DATABASE_URL,
            })
        )?;
        out.flush()
    }
}

fn print_welcome(welcome: &Welcome<'_>) -> std::io::Result<()> {
    let Welcome {
        base,
        key,
        admin_token,
    } = welcome;
    let cli = format!(
        "The CLI, on this demo's database (in another terminal, in this folder):\n\n  \
         export DATABASE_URL={DEMO_DATABASE_URL}   # or: set -a; . ./{DEMO_SECRETS_FILE}; set +a\n  \
         tollgate keys list\n  \
         tollgate usage --by model\n"
    );
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        r#"
Tollgate demo: the gateway is running at {base}, in front of a built-in mock of OpenAI.

  Your key (demo only):  {key}
  Dashboard:             {base}/dashboard
  Admin token:           {admin_token}

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

{cli}
The key and admin token are kept in ./{DEMO_SECRETS_FILE} for the next run.
Health: {base}/health   Metrics: {base}/metrics   Stop: Ctrl-C
"#
    )?;
    out.flush()
}
