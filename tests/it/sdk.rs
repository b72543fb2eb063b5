//! The official OpenAI SDKs (Python and Node) against the real gateway. The suites live in
//! `tests/sdk/`; this test starts the gateway and mock and runs them.

use std::path::Path;
use std::process::Stdio;

use tollgate::mock_upstream::MockOptions;
use tollgate::mock_upstream::azure::AzureMock;

use crate::support::tls_front::TlsFront;
use crate::support::{MockServer, TestGateway, engines};

const AZURE_KEY: &str = "azure-sdk-key-0123456789";

/// An Azure OpenAI resource (the mock in Azure's dialect) behind three aliases: `pooled` (the
/// default upstream and Azure, one pool), `azure-only`, and `azure-missing` (a model with no
/// deployment there).
fn azure_toml(azure: &MockServer) -> String {
    format!(
        r#"
[[upstreams]]
name = "azure"
kind = "azure"
base_url = "{base}"
api_key_env = "AZURE_SDK_KEY"
deployments = {{ "gpt-4o-mini" = "mini" }}

[models.pooled]
pool = [{{ upstream = "default", target = "gpt-4o-mini" }}, {{ upstream = "azure", target = "gpt-4o-mini" }}]

[models.azure-only]
target = "gpt-4o-mini"
upstream = "azure"

[models.azure-missing]
target = "gpt-4o"
upstream = "azure"
"#,
        base = azure.control("/openai")
    )
}

async fn run_suite(program: &str, args: &[&str], installed: impl FnOnce() -> bool) {
    if !installed() {
        assert!(
            !engines::strict(),
            "{program} SDK suite cannot run (SDK not installed) and TOLLGATE_TEST_STRICT=1"
        );
        eprintln!(
            "SKIPPED: the {program} SDK suite needs its SDK installed (see tests/sdk/README.md)"
        );
        return;
    }
    let azure = MockServer::with(MockOptions {
        api_key: Some(AZURE_KEY.to_owned()),
        azure: Some(AzureMock {
            deployments: [("mini".to_owned(), "gpt-4o-mini".to_owned())].into(),
        }),
        ..MockOptions::default()
    })
    .await;
    let gw = TestGateway::builder()
        .toml(&azure_toml(&azure))
        .env("AZURE_SDK_KEY", AZURE_KEY)
        .start()
        .await
        .unwrap();
    let (_, limited) = gw.create_key(&["gpt-4o-mini"]).await;
    // A key whose own rule allows one chat request per hour: the second is Tollgate's 429.
    let one_per_hour = tollgate::keys::issue(
        tollgate::keys::NewKey {
            name: "one per hour".into(),
            rules: vec![
                tollgate::limiter::rules::RuleSpec::parse_cli(
                    "scope=key,route=chat,requests=1,per=1h",
                )
                .unwrap(),
            ],
            ..Default::default()
        },
        tollgate::keys::now_ms(),
    );
    gw.store
        .insert(&one_per_hour.key, &one_per_hour.hash)
        .await
        .unwrap();
    // TLS in front, as deployments have it: the Node SDK's Realtime client dials only wss://.
    let front_dir = tempfile::tempdir().unwrap();
    let front = TlsFront::start(front_dir.path(), gw.base.trim_start_matches("http://")).await;
    let output = tokio::process::Command::new(program)
        .args(args)
        .env("TOLLGATE_BASE_URL", gw.url("/v1"))
        .env("TOLLGATE_KEY", &gw.key)
        .env("TOLLGATE_LIMITED_KEY", &limited)
        .env("TOLLGATE_ONE_PER_HOUR_KEY", &one_per_hour.secret)
        .env("TOLLGATE_MOCK_URL", &gw.mock_base)
        .env("TOLLGATE_AZURE_MOCK_URL", azure.control(""))
        .env("TOLLGATE_TLS_BASE_URL", format!("{}/v1", front.base))
        .env("TOLLGATE_TLS_CA", &front.ca)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} SDK suite failed:\n{report}"
    );
    eprintln!("{report}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_conformance() {
    run_suite("python3", &["tests/sdk/python/test_sdk.py"], || {
        std::process::Command::new("python3")
            .args(["-c", "import openai"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_conformance() {
    run_suite("node", &["--test", "tests/sdk/node/test.mjs"], || {
        Path::new("tests/sdk/node/node_modules/openai").exists()
    })
    .await;
}
