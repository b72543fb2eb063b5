//! The dashboard: served from the binary behind the admin API's switch, with a strict CSP;
//! and driven in Debian's Chromium (tests/dashboard/test.mjs): it loads, shows the traffic
//! this test sent through the gateway, and creates and revokes a key.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::support::{TestGateway, engines, eventually};

const ADMIN: &str = "admin-token-for-the-dashboard";

#[tokio::test]
async fn the_dashboard_is_served_only_with_an_admin_token_and_holds_no_data() {
    let gw = TestGateway::builder()
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .start()
        .await
        .unwrap();
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let response = gw.client.get(gw.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(
            policy.contains("script-src 'self'") && !policy.contains("unsafe"),
            "{policy}"
        );
        // The SVG namespace is a name, not a load.
        let body = response
            .text()
            .await
            .unwrap()
            .replace("http://www.w3.org/2000/svg", "");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
    }
    gw.stop().await;

    let closed = TestGateway::start().await;
    let response = closed
        .client
        .get(closed.url("/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "no admin token, no dashboard");
    closed.stop().await;
}

/// Whether the browser and its driver are installed (both are, in CI).
/// The page's formats (money, chart buckets) as functions, in Node.
#[test]
fn the_dashboard_formats_money_and_buckets_one_way() {
    let output = std::process::Command::new("node")
        .args(["--test", "tests/dashboard/money.test.mjs"])
        .output()
        .expect("node runs (the machine's Node 20)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn browser_available() -> bool {
    Path::new("/usr/bin/chromium").exists()
        && Path::new("tests/dashboard/node_modules/playwright-core").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    if !browser_available() {
        assert!(
            !engines::strict(),
            "the dashboard browser test needs /usr/bin/chromium and `npm ci --prefix tests/dashboard`, and TOLLGATE_TEST_STRICT=1"
        );
        eprintln!(
            "SKIPPED: the dashboard browser test needs chromium and playwright-core (tests/dashboard/README.md)"
        );
        return;
    }
    let gw = TestGateway::builder()
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .start()
        .await
        .unwrap();
    // Traffic for the dashboard to show: two users, two routes, one error.
    let mut request_id = String::new();
    for (user, content) in [("dash-user-ann", "hello"), ("dash-user-bob", "hi there")] {
        let response = gw
            .post(
                "/v1/chat/completions",
                &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}),
            )
            .header("x-user-id", user)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        request_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
    }
    let embedded = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small", "input": "dashboard"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(embedded.status(), 200);
    let refused = gw
        .post("/v1/chat/completions", &json!({"model": "gpt-4o-mini"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let stored = eventually(Duration::from_secs(5), || async {
        gw.state.records.count().await.unwrap() >= 4
    })
    .await;
    assert!(stored, "the records are written");

    let screenshots = std::env::var("SCREENSHOT_DIR").ok();
    let output = tokio::process::Command::new("node")
        .arg("tests/dashboard/test.mjs")
        .env("TOLLGATE_URL", &gw.base)
        .env("ADMIN_TOKEN", ADMIN)
        .env("EXPECT_MODEL", "gpt-4o-mini")
        .env("EXPECT_USER", "dash-user-bob")
        .env("EXPECT_REQUEST_ID", &request_id)
        .env("SCREENSHOT_DIR", screenshots.unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("node runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the dashboard test failed:\n{report}"
    );
    eprintln!("{report}");
    gw.stop().await;
}
