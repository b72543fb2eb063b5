//! The real `tollgate` binary as a child process: for tests about signals and log output.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr};
use tokio::task::JoinHandle;

/// A running `tollgate serve`.
pub struct Served {
    pub child: Child,
    /// `127.0.0.1:PORT`, read from the "tollgate listening" log line.
    pub address: String,
    log: JoinHandle<Vec<u8>>,
}

/// The binary cargo built for this test run.
pub fn path() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

/// Creates a key with `tollgate keys create --json` against `database_url`.
pub async fn create_key(database_url: &str, dir: &std::path::Path) -> String {
    create_key_with(database_url, dir, &[]).await.1
}

/// Creates a key with extra `keys create` options; returns its id and secret.
pub async fn create_key_with(
    database_url: &str,
    dir: &std::path::Path,
    options: &[&str],
) -> (String, String) {
    let created = tokio::process::Command::new(path())
        .args(["keys", "create", "--name", "test", "--json"])
        .args(options)
        .env("DATABASE_URL", database_url)
        .env_remove("TOLLGATE_CONFIG")
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    )
}

/// A `tollgate serve` with a mock upstream of its own and one key: where most tests of the
/// real binary start.
pub struct Stack {
    pub served: Served,
    /// The upstream: it stops when dropped, so keep it for as long as the gateway serves.
    pub mock: super::MockServer,
    /// A key allowed every model.
    pub key: String,
}

/// Starts a [`Stack`] in `dir` on `database` (a SQLite file in `dir` when `None`), with `env`
/// on top of the upstream's key and URL.
pub async fn stack(dir: &std::path::Path, database: Option<&str>, env: &[(&str, String)]) -> Stack {
    let database = database.map_or_else(
        || format!("sqlite://{}", dir.join("tollgate.db").display()),
        str::to_owned,
    );
    let key = create_key(&database, dir).await;
    let mock = super::MockServer::start().await;
    let mut all = vec![
        ("OPENAI_API_KEY", super::UPSTREAM_KEY.to_owned()),
        ("OPENAI_BASE_URL", mock.url()),
        ("DATABASE_URL", database),
    ];
    all.extend(env.iter().cloned());
    Stack {
        served: serve(&all, dir).await,
        mock,
        key,
    }
}

/// Starts `tollgate serve` on a free port with `env`, and waits until it listens.
pub async fn serve(env: &[(&str, String)], dir: &std::path::Path) -> Served {
    let mut command = tokio::process::Command::new(path());
    command
        .arg("serve")
        .env("PORT", "0")
        .env_remove("TOLLGATE_CONFIG")
        .current_dir(dir);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr: ChildStderr = child.stderr.take().unwrap();
    let mut log = Vec::new();
    let mut address = None;
    while address.is_none() {
        let mut buffer = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stderr.read(&mut buffer))
            .await
            .expect("the server started in time")
            .unwrap();
        assert!(
            n > 0,
            "the server exited: {}",
            String::from_utf8_lossy(&log)
        );
        log.extend_from_slice(&buffer[..n]);
        address = String::from_utf8_lossy(&log)
            .lines()
            .find(|l| l.contains("tollgate listening"))
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["address"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            });
    }
    let log = tokio_util::task::TaskTracker::new().spawn(async move {
        let _ = stderr.read_to_end(&mut log).await;
        log
    });
    Served {
        child,
        address: address.unwrap(),
        log,
    }
}

impl Served {
    /// Sends a signal by name (`TERM`, `INT`) with the system's `kill`.
    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = tokio::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code and everything it logged.
    pub async fn finish(mut self) -> (Option<i32>, String) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exited")
            .unwrap();
        let log = self.log.await.unwrap();
        (status.code(), String::from_utf8_lossy(&log).to_string())
    }

    /// Stops the process as an operator would (SIGTERM), so its buffered log lines are written,
    /// and returns its log.
    pub async fn stop(self) -> String {
        self.signal("TERM").await;
        self.finish().await.1
    }

    /// Kills the process and returns its log.
    pub async fn kill(mut self) -> String {
        let _ = self.child.start_kill();
        self.finish().await.1
    }
}
