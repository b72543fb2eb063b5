//! The `tollgate` binary's commands: `config check` and `keys`.

use std::process::Output;

use serde_json::Value;

use crate::support::{Database, TestDatabase, UPSTREAM_KEY};

async fn tollgate(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().await.unwrap()
}

#[tokio::test]
async fn config_check_prints_a_configuration_that_loads_back_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tollgate.toml"), "[server]\nport = 4000\n").unwrap();
    let env = [
        ("OPENAI_API_KEY", UPSTREAM_KEY),
        ("TOLLGATE_ADMIN_TOKEN", "admin-secret-token-123"),
    ];
    let output = tollgate(&["config", "check"], &env, dir.path()).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(shown.contains("port = 4000"), "the file was read: {shown}");
    assert!(
        shown.contains("timeout_ms = 60000"),
        "defaults shown: {shown}"
    );
    assert!(
        !shown.contains(UPSTREAM_KEY) && !shown.contains("admin-secret-token-123"),
        "{shown}"
    );
    // Fed back as the configuration file, it loads, and prints itself again.
    std::fs::write(dir.path().join("printed.toml"), &shown).unwrap();
    let again = tollgate(
        &["--config", "printed.toml", "config", "check"],
        &env,
        dir.path(),
    )
    .await;
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), shown);
    // Without the admin token in the environment, the mask is refused by name.
    let masked = tollgate(
        &["--config", "printed.toml", "config", "check"],
        &env[..1],
        dir.path(),
    )
    .await;
    assert_eq!(masked.status.code(), Some(1));
    let errors = String::from_utf8_lossy(&masked.stderr);
    assert!(
        errors.starts_with("printed.toml: keys.admin_token: holds the mask"),
        "{errors}"
    );
    // --json: one document, valid or not.
    let json = tollgate(&["config", "check", "--json"], &env, dir.path()).await;
    let document: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(document["valid"], true);
    assert_eq!(document["config"]["server"]["port"], 4000);
    assert!(
        document["set_in_environment"]
            .as_array()
            .unwrap()
            .contains(&Value::from("OPENAI_API_KEY"))
    );
    let json = tollgate(&["config", "check", "--json"], &[], dir.path()).await;
    assert_eq!(json.status.code(), Some(1));
    let document: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(document["valid"], false);
    assert!(
        document["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("OPENAI_API_KEY")
    );
}

#[tokio::test]
async fn config_check_lists_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nport = \"high\"\nunknown_thing = 1\n",
    )
    .unwrap();
    let env = [
        ("OPENAI_TIMEOUT", "soon"),
        ("TOLLGATE_CORS_ORIGINS", "*"),
        ("OPENAI_BASE_URL", "ftp://x"),
    ];
    let output = tollgate(
        &["--config", "bad.toml", "config", "check"],
        &env,
        dir.path(),
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let errors = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = errors.lines().collect();
    for expected in [
        "bad.toml: server.port: expected a whole number, got \"high\"",
        "bad.toml: unknown setting \"server.unknown_thing\"",
        "OPENAI_TIMEOUT: expected milliseconds (a whole number), got \"soon\"",
        "OPENAI_API_KEY: required",
        "OPENAI_BASE_URL: expected an http(s) URL",
        "TOLLGATE_CORS_ORIGINS: \"*\"",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "missing {expected:?} in:\n{errors}"
        );
    }
    assert_eq!(lines.len(), 6, "one line per problem:\n{errors}");
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn a_missing_named_config_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = tollgate(
        &["--config", "nope.toml", "config", "check"],
        &[("OPENAI_API_KEY", "k")],
        dir.path(),
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("nope.toml: cannot read"));
}

#[tokio::test]
async fn prices_show_the_table_in_force_its_version_and_the_overrides() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tollgate.toml"),
        "[pricing.\"gpt-4o\"]\noutput = 11\n\n[pricing.\"mine\"]\ninput = 1\noutput = 2\nmax_output_tokens = 100\n",
    )
    .unwrap();
    let listed = tollgate(&["prices", "--json"], &[], dir.path()).await;
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let builtin = tollgate::pricing::PriceTable::builtin().version();
    let version = listed["version"].as_str().unwrap();
    assert!(
        version.starts_with(&format!("{builtin}+config-")),
        "{version}"
    );
    let model = |name: &str| {
        listed["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(model("gpt-4o")["source"], "override");
    assert_eq!(model("gpt-4o")["output_usd"], "11.000000");
    assert_eq!(
        model("gpt-4o")["input_usd"],
        "2.500000",
        "the rest stays built in"
    );
    assert_eq!(model("mine")["max_output_tokens"], 100);
    assert_eq!(model("gpt-4o-mini")["source"], "builtin");

    let one = tollgate(
        &["prices", "--model", "gpt-4o-mini-2024-07-18"],
        &[],
        dir.path(),
    )
    .await;
    let text = String::from_utf8_lossy(&one.stdout);
    assert!(one.status.success());
    assert!(
        text.contains(version) && text.contains("0.600000"),
        "{text}"
    );
    let unknown = tollgate(&["prices", "--model", "nope"], &[], dir.path()).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nope has no price"));
}

async fn keys_lifecycle(database: Database) {
    let Some(db) = TestDatabase::create(database).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = [("DATABASE_URL", db.url.as_str())];
    let created = tollgate(
        &[
            "keys",
            "create",
            "--name",
            "billing",
            "--models",
            "gpt-4o-mini,gpt-4o",
            "--expires",
            "30d",
            "--json",
        ],
        &env,
        dir.path(),
    )
    .await;
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(tollgate::keys::looks_like_key(
        created["key"].as_str().unwrap()
    ));
    assert_eq!(
        created["models"],
        serde_json::json!(["gpt-4o-mini", "gpt-4o"])
    );

    let listed = tollgate(&["keys", "list", "--json"], &env, dir.path()).await;
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["id"], id);
    assert!(
        !listed
            .to_string()
            .contains(created["key"].as_str().unwrap()),
        "the secret is never listed"
    );

    let table = tollgate(&["keys", "list"], &env, dir.path()).await;
    assert!(String::from_utf8_lossy(&table.stdout).contains("billing"));

    let revoked = tollgate(&["keys", "revoke", id, "--json"], &env, dir.path()).await;
    assert!(revoked.status.success());
    let revoked: Value = serde_json::from_slice(&revoked.stdout).unwrap();
    assert_eq!(revoked["already_revoked"], false);
    // Revoking is idempotent: the second time succeeds and says so.
    let again = tollgate(&["keys", "revoke", id, "--json"], &env, dir.path()).await;
    assert!(again.status.success(), "revoking twice succeeds");
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["already_revoked"], true);
    // An unknown id is an error, in JSON too: one document on stdout, exit 1.
    let unknown = tollgate(&["keys", "revoke", "key_nope", "--json"], &env, dir.path()).await;
    assert_eq!(unknown.status.code(), Some(1));
    let unknown: Value = serde_json::from_slice(&unknown.stdout).unwrap();
    assert!(unknown["error"].as_str().unwrap().contains("key_nope"));
    // A usage error is exit 2 (clap's convention).
    let usage = tollgate(&["keys", "revoke"], &env, dir.path()).await;
    assert_eq!(usage.status.code(), Some(2));
    let usage = tollgate(&["keys", "revoke", "--json"], &env, dir.path()).await;
    assert_eq!(usage.status.code(), Some(2));
    let usage: Value = serde_json::from_slice(&usage.stdout).unwrap();
    assert!(usage["error"].as_str().unwrap().contains("<ID>"), "{usage}");
    let active = tollgate(&["keys", "list", "--json"], &env, dir.path()).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&active.stdout).unwrap(),
        serde_json::json!([])
    );
    let all = tollgate(&["keys", "list", "--all", "--json"], &env, dir.path()).await;
    assert!(serde_json::from_slice::<Value>(&all.stdout).unwrap()[0]["revoked_at_ms"].is_i64());

    // Budgets from the command line.
    let budgeted = tollgate(
        &[
            "keys",
            "create",
            "--name",
            "capped",
            "--budget-usd",
            "25",
            "--user-budget-usd",
            "2.5",
            "--period",
            "day",
            "--json",
        ],
        &env,
        dir.path(),
    )
    .await;
    let budgeted: Value = serde_json::from_slice(&budgeted.stdout).unwrap();
    assert_eq!(
        budgeted["budgets"]["key"],
        serde_json::json!({ "max_usd": 25.0, "period": "day", "alert_at": 0.8 })
    );
    assert_eq!(budgeted["budgets"]["user"]["max_usd"], 2.5);
    let refused = tollgate(
        &["keys", "create", "--name", "x", "--budget-usd=-1"],
        &env,
        dir.path(),
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    let capped = budgeted["id"].as_str().unwrap();
    // `--period` alone changes the period of the budgets the key has, keeping their amounts;
    // an amount alone keeps the other budget.
    let update = |args: &'static [&'static str]| {
        let mut all = vec!["keys", "update", capped, "--json"];
        all.extend_from_slice(args);
        let dir = dir.path().to_owned();
        async move {
            let output = tollgate(&all, &env, &dir).await;
            (
                output.status.code(),
                serde_json::from_slice::<Value>(&output.stdout).unwrap(),
            )
        }
    };
    let (code, key) = update(&["--period", "month"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        key["budgets"],
        serde_json::json!({
            "key": { "max_usd": 25.0, "period": "month", "alert_at": 0.8 },
            "user": { "max_usd": 2.5, "period": "month", "alert_at": 0.8 },
        })
    );
    let (_, key) = update(&["--budget-usd", "30"]).await;
    assert_eq!(key["budgets"]["key"]["max_usd"], 30.0);
    assert_eq!(key["budgets"]["key"]["period"], "month");
    assert_eq!(key["budgets"]["user"]["max_usd"], 2.5);
    // Flags that would do nothing are errors, not "Updated".
    let (code, error) = update(&[]).await;
    assert_eq!(code, Some(1));
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("nothing to change")
    );
    let (code, error) = update(&["--clear-budgets"]).await;
    assert_eq!(code, Some(0), "{error}");
    let (code, error) = update(&["--period", "day"]).await;
    assert_eq!(code, Some(1));
    assert!(
        error["error"].as_str().unwrap().contains("no budget"),
        "{error}"
    );
    let period_only = tollgate(
        &["keys", "create", "--name", "x", "--period", "day"],
        &env,
        dir.path(),
    )
    .await;
    assert_eq!(period_only.status.code(), Some(1));
    let cleared = tollgate(
        &["keys", "update", capped, "--clear-budgets", "--json"],
        &env,
        dir.path(),
    )
    .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&cleared.stdout).unwrap()["budgets"],
        serde_json::json!({})
    );

    // Usage from records.
    let config = tollgate::config::Config::from_toml_str(
        "t",
        "",
        &[
            ("OPENAI_API_KEY", "sk-x"),
            ("DATABASE_URL", db.url.as_str()),
        ]
        .into_iter()
        .collect(),
    )
    .unwrap();
    let stores = tollgate::store::connect(&config.database).await.unwrap();
    let now = tollgate::records::now_ms();
    let record = |n: u8, user: &str, cost: i64| tollgate::records::Record {
        id: format!("rec-{n}"),
        created_at_ms: now - i64::from(n) * 1000,
        request_id: format!("req-{n}"),
        key_id: Some(id.to_owned()),
        user_id: Some(user.to_owned()),
        caller: "key".into(),
        method: "POST".into(),
        route: "/v1/chat/completions".into(),
        model_requested: Some("gpt-4o-mini".into()),
        status: 200,
        outcome: "ok".into(),
        cost_nanos: Some(cost),
        ..tollgate::records::Record::default()
    };
    let records = [
        record(1, "ann", 1_500_000),
        record(2, "ann", 500_000),
        record(3, "bob", 250_000_000),
    ];
    assert_eq!(stores.records.insert(&records).await.unwrap(), 3);
    assert_eq!(
        stores.records.insert(&records).await.unwrap(),
        0,
        "ids already stored are skipped"
    );
    let usage = tollgate(
        &["usage", "--by", "user", "--since", "1d", "--json"],
        &env,
        dir.path(),
    )
    .await;
    assert!(
        usage.status.success(),
        "{}",
        String::from_utf8_lossy(&usage.stderr)
    );
    let usage: Value = serde_json::from_slice(&usage.stdout).unwrap();
    assert_eq!(
        usage,
        serde_json::json!([
            { "user_id": "ann", "requests": 2, "errors": 0, "prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0, "reasoning_tokens": 0, "images": 0, "cost_nanos": 2000000, "unpriced": 0, "estimated": 0 },
            { "user_id": "bob", "requests": 1, "errors": 0, "prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0, "reasoning_tokens": 0, "images": 0, "cost_nanos": 250000000, "unpriced": 0, "estimated": 0 },
        ])
    );
    // A record three days old is read from the daily rollup (whole days), the rest from the
    // hourly one (today's partial day): together, by key.
    let mut old = record(4, "cy", 7_000);
    old.created_at_ms = now - 3 * 86_400_000;
    stores.records.insert(&[old]).await.unwrap();
    let by_key = tollgate(
        &["usage", "--by", "key", "--since", "7d", "--json"],
        &env,
        dir.path(),
    )
    .await;
    let by_key: Value = serde_json::from_slice(&by_key.stdout).unwrap();
    assert_eq!(by_key[0]["requests"], 4, "{by_key}");
    assert_eq!(by_key[0]["cost_nanos"], 252_007_000, "{by_key}");
    let table = tollgate(&["usage", "--by", "key,day"], &env, dir.path()).await;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("COST_USD") && table.contains("0.252000"),
        "{table}"
    );
    db.drop_schema().await;
}

#[tokio::test]
async fn keys_cli_on_sqlite() {
    keys_lifecycle(Database::Sqlite).await;
}

#[tokio::test]
async fn keys_cli_on_postgres() {
    keys_lifecycle(Database::Postgres).await;
}

/// `tollgate health` (the image's health check): 0 for a ready gateway at `$PORT` or `--url`,
/// 1 for an answer that is not 2xx, an error when nothing listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_asks_a_running_gateway() {
    let gw = crate::support::TestGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = gw.base.rsplit(':').next().unwrap().to_owned();
    let ready = tollgate(&["health"], &[("PORT", &port)], dir.path()).await;
    assert!(ready.status.success(), "{ready:?}");
    assert!(String::from_utf8_lossy(&ready.stdout).contains("/health/ready: 200"));
    let missing = gw.url("/nope");
    let not_found = tollgate(&["health", "--url", &missing], &[], dir.path()).await;
    assert_eq!(not_found.status.code(), Some(1), "{not_found:?}");
    let as_json = tollgate(&["health", "--url", &missing, "--json"], &[], dir.path()).await;
    let as_json: Value = serde_json::from_slice(&as_json.stdout).unwrap();
    assert_eq!(as_json["status"], 404);
    assert_eq!(as_json["ready"], false);
    // The port of the TOML file, as `serve` reads it.
    std::fs::write(
        dir.path().join("tollgate.toml"),
        format!("[server]\nport = {port}\n"),
    )
    .unwrap();
    let from_file = tollgate(&["health"], &[], dir.path()).await;
    assert!(from_file.status.success(), "{from_file:?}");
    gw.stop().await;
    let closed = tollgate(&["health"], &[("PORT", &port)], dir.path()).await;
    assert!(!closed.status.success(), "{closed:?}");
    let https = tollgate(
        &["health", "--url", "https://127.0.0.1:1/"],
        &[],
        dir.path(),
    )
    .await;
    assert!(String::from_utf8_lossy(&https.stderr).contains("only http://"));
}

/// The first request on a budgeted key used to wait ~200 ms for the tokenizer: `serve` builds
/// it before listening when a stored key has a budget, and not otherwise (it costs ~60 MB).
#[tokio::test]
async fn serve_builds_the_tokenizer_before_listening_when_a_stored_key_counts_tokens() {
    use crate::support::binary;
    let built_before_listening = |log: &str| {
        let built = log.find("tokenizer tables built");
        let listening = log.find("tollgate listening").unwrap();
        built.is_some_and(|at| at < listening)
    };
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("t.db").display());
    let env = [
        ("OPENAI_API_KEY", UPSTREAM_KEY.to_owned()),
        ("DATABASE_URL", database.clone()),
    ];
    binary::create_key(&database, dir.path()).await;
    let log = binary::serve(&env, dir.path()).await.stop().await;
    assert!(!built_before_listening(&log), "{log}");
    binary::create_key_with(&database, dir.path(), &["--budget-usd", "5"]).await;
    let log = binary::serve(&env, dir.path()).await.stop().await;
    assert!(built_before_listening(&log), "{log}");
}

/// `keys list` and `usage` in a folder where only the demo has run: a clear error naming the
/// demo's database, not an empty answer from a freshly created `tollgate.db`.
#[tokio::test]
async fn read_only_commands_refuse_to_create_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tollgate-demo.db"), b"").unwrap();
    for args in [&["keys", "list"][..], &["usage"][..]] {
        let output = tollgate(args, &[], dir.path()).await;
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(
            said.contains("no database at tollgate.db") && said.contains("tollgate-demo.db"),
            "{said}"
        );
        assert!(
            !dir.path().join("tollgate.db").exists(),
            "nothing was created"
        );
    }
}

/// `serve --port` on a taken port says what to do; text logs to a file or pipe carry no
/// terminal colours.
#[tokio::test]
async fn serve_takes_a_port_says_when_it_is_taken_and_writes_plain_text_logs() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("t.db").display());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let env = [
        ("OPENAI_API_KEY", UPSTREAM_KEY),
        ("DATABASE_URL", database.as_str()),
        ("TOLLGATE_LOG_FORMAT", "text"),
    ];
    let refused = tollgate(&["serve", "--port", &port], &env, dir.path()).await;
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains(&format!("port {port} on 127.0.0.1 is already in use"))
            && said.contains("--port"),
        "{said}"
    );
    drop(taken);

    let mut serving = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--port", "0"])
        .current_dir(dir.path())
        .env_clear()
        .envs(env)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = serving.stderr.take().unwrap();
    let mut log = Vec::new();
    while !String::from_utf8_lossy(&log).contains("tollgate listening") {
        let mut chunk = [0u8; 1024];
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(10), stderr.read(&mut chunk))
                .await
                .expect("the server logged in time")
                .unwrap();
        assert!(
            read > 0,
            "the server exited: {}",
            String::from_utf8_lossy(&log)
        );
        log.extend_from_slice(&chunk[..read]);
    }
    let _ = serving.start_kill();
    assert!(
        !log.contains(&0x1b),
        "no ANSI escapes: {}",
        String::from_utf8_lossy(&log)
    );
}
