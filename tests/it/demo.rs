//! `tollgate demo` as a newcomer meets it: it prints what to use (key, dashboard, admin token,
//! database), serves, stops at once on Ctrl-C, keeps its key between runs, and says what to do
//! when its port is taken.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// A running demo and the line it printed with `--json`.
struct Demo {
    child: Child,
    welcome: Value,
}

async fn start_demo(dir: &std::path::Path, port: u16) -> Demo {
    start_demo_with(dir, port, &[]).await
}

async fn start_demo_with(dir: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Demo {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["demo", "--json", "--stream-interval-ms", "0", "--port"])
        .arg(port.to_string())
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the demo started in time")
        .unwrap()
        .expect("the demo printed its welcome");
    Demo {
        child,
        welcome: serde_json::from_str(&line).unwrap(),
    }
}

impl Demo {
    fn field(&self, name: &str) -> &str {
        self.welcome[name].as_str().unwrap()
    }

    /// Ctrl-C, and how long the demo took to exit.
    async fn interrupt(mut self) -> (Option<i32>, Duration) {
        let pid = self.child.id().unwrap().to_string();
        let began = Instant::now();
        let sent = tokio::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the demo exited")
            .unwrap();
        (status.code(), began.elapsed())
    }
}

#[tokio::test]
async fn the_demo_prints_what_to_use_stops_at_once_and_keeps_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start_demo(dir.path(), 0).await;
    let base = demo.field("base_url").to_owned();
    let key = demo.field("key").to_owned();
    assert!(tollgate::keys::looks_like_key(&key));
    assert_eq!(demo.welcome["database_url"], "sqlite://tollgate-demo.db");
    let client = reqwest::Client::new();
    let chat = client
        .post(format!("{base}/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    // The admin token it printed opens the admin API, so the dashboard it names works.
    let root = base.trim_end_matches("/v1");
    let keys = client
        .get(format!("{root}/admin/keys"))
        .bearer_auth(demo.field("admin_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(keys.status(), 200);
    let dashboard = client.get(demo.field("dashboard")).send().await.unwrap();
    assert_eq!(dashboard.status(), 200);

    // A second demo on the same port says what to do instead of "Address already in use".
    let port = url::Url::parse(&base).unwrap().port().unwrap();
    let clash = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["demo", "--port", &port.to_string()])
        .current_dir(dir.path())
        .env_clear()
        .output()
        .await
        .unwrap();
    assert_eq!(clash.status.code(), Some(1));
    let said = String::from_utf8_lossy(&clash.stderr);
    assert!(
        said.contains(&format!("port {port}")) && said.contains("--port"),
        "{said}"
    );

    // Ctrl-C stops it at once (the mock no longer holds the drain for its grace period).
    let (code, took) = demo.interrupt().await;
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // The next run keeps the key (and its admin token), and stores no second demo key.
    let again = start_demo(dir.path(), 0).await;
    assert_eq!(again.field("key"), key);
    let listed = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["keys", "list", "--json"])
        .current_dir(dir.path())
        .env_clear()
        .env("DATABASE_URL", again.field("database_url"))
        .output()
        .await
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], "demo");
    let (code, _) = again.interrupt().await;
    assert_eq!(code, Some(0));

    // What it keeps is readable by its owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tollgate-demo.env"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// The demo keeps to itself: an operator's exported database and admin token are not used (nor
/// printed), and a secrets file another user could have written is not believed or followed.
#[cfg(unix)]
#[tokio::test]
async fn the_demo_ignores_the_operators_secrets_and_a_planted_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere.txt");
    std::fs::write(&elsewhere, "untouched").unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.path().join("tollgate-demo.env")).unwrap();
    let real_token = "the-operators-real-admin-token-0123";
    let demo = start_demo_with(
        dir.path(),
        0,
        &[
            ("TOLLGATE_ADMIN_TOKEN", real_token),
            ("DATABASE_URL", "sqlite://operators.db"),
        ],
    )
    .await;
    assert_ne!(
        demo.field("admin_token"),
        real_token,
        "never the operator's token"
    );
    assert_eq!(demo.welcome["database_url"], "sqlite://tollgate-demo.db");
    assert!(!dir.path().join("operators.db").exists());
    let (code, _) = demo.interrupt().await;
    assert_eq!(code, Some(0));
    // The link was replaced by a file of the demo's own, not followed.
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "untouched");
    let written = dir.path().join("tollgate-demo.env");
    assert!(
        std::fs::symlink_metadata(&written)
            .unwrap()
            .file_type()
            .is_file()
    );

    // A file others may write is not believed: its token is not the demo's.
    std::fs::write(
        &written,
        "TOLLGATE_ADMIN_TOKEN=planted-token-0123456789abcdef\n",
    )
    .unwrap();
    std::fs::set_permissions(&written, std::fs::Permissions::from_mode(0o666)).unwrap();
    let demo = start_demo(dir.path(), 0).await;
    assert_ne!(demo.field("admin_token"), "planted-token-0123456789abcdef");
    let (code, _) = demo.interrupt().await;
    assert_eq!(code, Some(0));
}
