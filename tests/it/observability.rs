//! `/metrics` and `Server-Timing`: every metric DESIGN "Observability" names is exported with
//! its labels, labels stay low-cardinality (no key ids, users or unknown model names), and
//! proxied answers say how the time split between gateway and upstream.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::support::TestGateway;

/// Every series in a Prometheus text page: metric name → the label names it carries.
fn series(page: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, labels) = match line.split_once('{') {
            Some((name, rest)) => (name, rest.split_once('}').map_or("", |(l, _)| l)),
            None => (line.split_whitespace().next().unwrap_or(""), ""),
        };
        let entry = found.entry(name.to_owned()).or_default();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            entry.insert(pair.split_once('=').unwrap().0.to_owned());
        }
    }
    found
}

fn label_values(page: &str, metric: &str, label: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| {
            let start = l.find(&format!("{label}=\""))? + label.len() + 2;
            let end = start + l[start..].find('"')?;
            Some(l[start..end].to_owned())
        })
        .collect()
}

#[tokio::test]
async fn metrics_carry_the_designed_names_and_only_bounded_labels() {
    let gw = TestGateway::builder()
        .toml("[[limits.rules]]\nscope = \"key\"\nroute = \"embeddings\"\nrequests = 1\nper = \"1h\"\n")
        .start()
        .await
        .unwrap();
    let user = "user-who-must-not-be-a-label";
    let chat = |model: &str| {
        json!({"model": model, "temperature": 0, "user": user,
               "messages": [{"role": "user", "content": "metrics"}]})
    };
    for _ in 0..2 {
        let response = gw
            .post("/v1/chat/completions", &chat("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // A model name the caller made up must not become a label value.
    let invented = "made-up-model-0123456789";
    let response = gw
        .post("/v1/chat/completions", &chat(invented))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let embed = json!({"model": "text-embedding-3-small", "input": "one"});
    assert_eq!(
        gw.post("/v1/embeddings", &embed)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let limited = gw.post(
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "two"}),
    );
    assert_eq!(limited.send().await.unwrap().status(), 429);
    let anonymous = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&chat("gpt-4o-mini"));
    assert_eq!(anonymous.send().await.unwrap().status(), 401);

    let page = gw.metrics().await;
    let found = series(&page);
    let expected: [(&str, &[&str]); 14] = [
        (
            "tollgate_requests_total",
            &["route", "status", "model", "cache", "error"],
        ),
        ("tollgate_request_duration_seconds_bucket", &["route", "le"]),
        (
            "tollgate_upstream_duration_seconds_bucket",
            &["route", "le"],
        ),
        ("tollgate_gateway_overhead_seconds_bucket", &["route", "le"]),
        ("tollgate_upstream_attempts_total", &["outcome"]),
        ("tollgate_tokens_total", &["model", "class"]),
        ("tollgate_cost_nanodollars_total", &["model"]),
        ("tollgate_rate_limited_total", &["scope", "unit"]),
        ("tollgate_budget_refusals_total", &[]),
        ("tollgate_content_refusals_total", &[]),
        ("tollgate_audit_queue_depth", &[]),
        ("tollgate_audit_records_written_total", &[]),
        ("tollgate_audit_spill_file_bytes", &[]),
        ("tollgate_unpriced_requests_total", &["route"]),
    ];
    for (name, labels) in expected {
        let carried = found
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not exported:\n{page}"));
        let labels: BTreeSet<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        assert_eq!(carried, &labels, "{name}'s labels");
    }
    for helped in [
        "tollgate_requests_total",
        "tollgate_gateway_overhead_seconds",
    ] {
        assert!(
            page.contains(&format!("# HELP {helped} ")),
            "{helped} has help text"
        );
    }

    // Bounded values: the requests' models are table names or "other"; no key id, no user.
    let models = label_values(&page, "tollgate_requests_total", "model");
    assert!(
        models.contains("gpt-4o-mini") && models.contains("other"),
        "{models:?}"
    );
    assert!(
        !page.contains(invented),
        "a caller's model name became a label"
    );
    assert!(!page.contains(user), "a user id became a label");
    let key_id = gw.store.list(None, 10).await.unwrap()[0].id.clone();
    assert!(!page.contains(&key_id), "a key id became a label");
    let caches = label_values(&page, "tollgate_requests_total", "cache");
    assert!(
        caches.contains("HIT") && caches.contains("MISS"),
        "{caches:?}"
    );
    let errors = label_values(&page, "tollgate_requests_total", "error");
    assert!(
        errors.contains("rate_limited") && errors.contains("unauthenticated"),
        "{errors:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn server_timing_splits_gateway_and_upstream_time() {
    let gw = TestGateway::builder()
        .mock(|mock| mock.latency = std::time::Duration::from_millis(40))
        .start()
        .await
        .unwrap();
    let response = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "t"}]}),
        )
        .send()
        .await
        .unwrap();
    let timing = response.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_owned();
    let durations: BTreeMap<&str, f64> = timing
        .split(", ")
        .map(|part| {
            let (name, duration) = part.split_once(";dur=").unwrap();
            (name, duration.parse().unwrap())
        })
        .collect();
    assert!(durations["upstream"] >= 40.0, "{timing}");
    assert!(
        durations["gateway"] >= 0.0 && durations["gateway"] < 40.0,
        "{timing}"
    );
    let health = gw.client.get(gw.url("/health")).send().await.unwrap();
    let timing = health.headers()["server-timing"].to_str().unwrap();
    assert!(
        timing.starts_with("gateway;dur=") && !timing.contains("upstream"),
        "{timing}"
    );
    gw.stop().await;
}
