//! Live reload on the real binary: SIGHUP and `POST /admin/reload` apply new limit rules,
//! models, prices, content rules and cache policy; a request in flight finishes on the
//! configuration it started with; a broken file, or one that changes what needs a restart,
//! is refused and the running configuration stays (logged and counted).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{MockServer, UPSTREAM_KEY, binary, eventually};

const ADMIN: &str = "admin-token-for-reload-tests-0123";

/// The first configuration: alias `fast`, 100 chats an hour, list prices.
const FIRST: &str = "[models.fast]\ntarget = \"gpt-4o-mini\"\n\n\
    [[limits.rules]]\nscope = \"key\"\nroute = \"chat\"\nrequests = 100\nper = \"1h\"\n";

/// The second: alias `quick` instead, 6 chats an hour, gpt-4o-mini at $1,000/M input, a deny
/// rule, and no cache for embeddings.
const SECOND: &str = "[models.quick]\ntarget = \"gpt-4o-mini\"\n\n\
    [[limits.rules]]\nscope = \"key\"\nroute = \"chat\"\nrequests = 6\nper = \"1h\"\n\n\
    [pricing.\"gpt-4o-mini\"]\ninput = 1000.0\n\n\
    [content]\ndeny = [\"(?i)forbidden phrase\"]\n\n[cache]\nembeddings = \"off\"\n";

fn chat(model: &str, content: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": content }], "max_tokens": 5 })
}

struct Reloadable {
    served: binary::Served,
    config: std::path::PathBuf,
    key: String,
    client: reqwest::Client,
    mock: MockServer,
    _dir: tempfile::TempDir,
}

impl Reloadable {
    async fn start(toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tollgate.toml");
        std::fs::write(&config, toml).unwrap();
        let binary::Stack {
            served, mock, key, ..
        } = binary::stack(
            dir.path(),
            None,
            &[
                ("TOLLGATE_ADMIN_TOKEN", ADMIN.to_owned()),
                ("TOLLGATE_CONFIG", config.display().to_string()),
            ],
        )
        .await;
        Self {
            served,
            config,
            key,
            client: reqwest::Client::new(),
            mock,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.served.address)
    }

    async fn send(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The model the upstream was last asked for: an alias's target, or the name as sent
    /// when no alias has it.
    async fn last_upstream_model(&self) -> String {
        let requests: Vec<Value> = self
            .client
            .get(format!(
                "{}/_mock/requests",
                self.mock.url().trim_end_matches("/v1")
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let last = requests.last().unwrap();
        last["body"]["model"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn status(&self, body: &Value) -> u16 {
        self.send(body).await.status().as_u16()
    }

    async fn admin_reload(&self) -> (u16, Value) {
        let response = self
            .client
            .post(self.url("/admin/reload"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn metric(&self, outcome: &str) -> u64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = format!("tollgate_config_reloads_total{{outcome=\"{outcome}\"}}");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0, |n| n.trim().parse().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_rules_models_prices_and_content_while_requests_in_flight_finish_as_they_began()
 {
    let gw = Reloadable::start(FIRST).await;
    assert_eq!(gw.status(&chat("fast", "hello")).await, 200);
    assert_eq!(gw.last_upstream_model().await, "gpt-4o-mini");
    let cost_before = gw.send(&chat("gpt-4o-mini", "hello")).await;
    let cost_before = cost_before.headers()["x-tollgate-cost-usd"]
        .to_str()
        .unwrap()
        .to_owned();

    // A request under way when the configuration changes: the mock holds it for 1.5 s.
    gw.client
        .post(format!(
            "{}/_mock/faults",
            gw.mock.url().trim_end_matches("/v1")
        ))
        .json(&json!({ "latency_ms": 1500 }))
        .send()
        .await
        .unwrap();
    let slow = chat("fast", "slow one");
    let in_flight = gw.send(&slow);
    let reload = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(&gw.config, SECOND).unwrap();
        gw.served.signal("HUP").await;
        let applied = eventually(Duration::from_secs(10), || async {
            gw.metric("ok").await == 1
        })
        .await;
        assert!(applied, "the reload is counted");
    };
    let (in_flight, ()) = tokio::join!(in_flight, reload);
    assert_eq!(in_flight.status(), 200);
    let cost_in_flight: f64 = in_flight.headers()["x-tollgate-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();

    // New requests see the new configuration: the old alias is gone (the name goes upstream as
    // sent) and the new one maps,
    assert_eq!(gw.status(&chat("fast", "hello")).await, 200);
    assert_eq!(gw.last_upstream_model().await, "fast");
    assert_eq!(gw.status(&chat("quick", "hello")).await, 200);
    assert_eq!(gw.last_upstream_model().await, "gpt-4o-mini");
    // the new price applies,
    let cost_after = gw.send(&chat("gpt-4o-mini", "hello")).await;
    let cost_after = cost_after.headers()["x-tollgate-cost-usd"]
        .to_str()
        .unwrap()
        .to_owned();
    let (before, after): (f64, f64) = (cost_before.parse().unwrap(), cost_after.parse().unwrap());
    assert!(after > before * 100.0, "{cost_before} → {cost_after}");
    // The request in flight through the reload was priced (after its answer, so after the
    // reload) on the configuration it began with: list price, not the new one.
    assert!(
        cost_in_flight * 100.0 < after,
        "in flight {cost_in_flight}, after {after}"
    );
    // the deny rule refuses,
    let denied = gw.send(&chat("quick", "a Forbidden Phrase here")).await;
    assert_eq!(denied.status(), 400);
    // and the new rule limits (six chats an hour, some already spent under the old rule's
    // bucket or not: at most six more are served).
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(gw.status(&chat("quick", "count me")).await);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let log = gw.served.stop().await;
    assert!(log.contains("configuration reloaded"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_or_a_change_that_needs_a_restart_keeps_the_running_configuration() {
    let gw = Reloadable::start(FIRST).await;
    for (toml, says) in [
        ("[models.fast\ntarget = 1\n", "tollgate.toml"),
        (
            "[[limits.rules]]\nscope = \"key\"\nroute = \"chat\"\nrequests = -1\nper = \"1h\"\n",
            "limits.rules",
        ),
        (
            &format!("{FIRST}\n[database]\nmax_connections = 3\n"),
            "need a restart: [database]",
        ),
        (
            &format!("{FIRST}\n[limits]\nredis_prefix = \"other\"\n"),
            "limits.redis_prefix",
        ),
    ] {
        std::fs::write(&gw.config, toml).unwrap();
        let (status, body) = gw.admin_reload().await;
        assert_eq!(status, 409, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("configuration not reloaded"),
            "{message}"
        );
        assert!(message.contains(says), "{message}");
        // The running configuration stays.
        assert_eq!(gw.status(&chat("fast", "still here")).await, 200);
        assert_eq!(gw.last_upstream_model().await, "gpt-4o-mini");
    }
    assert_eq!(gw.metric("error").await, 4);
    assert_eq!(gw.metric("ok").await, 0);

    // A good file then reloads through the admin route; without the token the route refuses.
    std::fs::write(&gw.config, SECOND).unwrap();
    let anonymous = gw
        .client
        .post(gw.url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(gw.status(&chat("fast", "still here")).await, 200);
    let (status, body) = gw.admin_reload().await;
    assert_eq!((status, body), (200, json!({ "status": "reloaded" })));
    assert_eq!(gw.status(&chat("fast", "hello")).await, 200);
    assert_eq!(gw.last_upstream_model().await, "fast");
    let log = gw.served.stop().await;
    assert!(log.contains("configuration not reloaded"), "{log}");
    assert!(!log.contains(UPSTREAM_KEY), "{log}");
}
