//! Nothing acknowledged is lost: under steady load the database goes away for 10 s and comes
//! back, then the gateway is sent SIGTERM mid-load; afterwards the audit log holds exactly one
//! record per response the client received. PostgreSQL's link is cut by a TCP proxy; SQLite's
//! file is held under an exclusive lock by another connection. And two writers on one SQLite
//! file both land every batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use sqlx::Connection;

use crate::support::chaos_proxy::ChaosProxy;
use crate::support::{Database, TestDatabase, UPSTREAM_KEY, binary};

/// Sends chats from `workers` loops until the gateway stops answering; counts the responses
/// read to the end, whatever their status.
fn load(url: String, key: String, workers: usize) -> (Arc<AtomicU64>, tokio::task::JoinSet<()>) {
    let received = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for _ in 0..workers {
        let (client, url, key, received) =
            (client.clone(), url.clone(), key.clone(), received.clone());
        set.spawn(async move {
            let body = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "echo: durable" }] });
            loop {
                let Ok(response) = client.post(&url).bearer_auth(&key).json(&body).send().await
                else {
                    return;
                };
                if response.bytes().await.is_err() {
                    return;
                }
                received.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    (received, set)
}

/// What takes the database away: a cut proxy, or a held lock.
enum Outage {
    Proxy(ChaosProxy),
    SqliteLock(String),
}

async fn no_record_is_lost(database: Database) {
    let Some(test_database) = TestDatabase::create(database).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mock = crate::support::MockServer::start().await;
    let (gateway_url, outage) = match database {
        Database::Postgres => {
            let proxy = ChaosProxy::start("127.0.0.1:5432".parse().unwrap()).await;
            let through_proxy =
                test_database
                    .url
                    .replacen("127.0.0.1:5432", &proxy.address.to_string(), 1);
            assert_ne!(
                through_proxy, test_database.url,
                "the URL names 127.0.0.1:5432"
            );
            (through_proxy, Outage::Proxy(proxy))
        }
        Database::Sqlite => (
            test_database.url.clone(),
            Outage::SqliteLock(test_database.url.clone()),
        ),
    };
    std::fs::write(
        dir.path().join("tollgate.toml"),
        "[limits]\nenabled = false\n\n[records]\nflush_ms = 100\n",
    )
    .unwrap();
    let key = binary::create_key(&test_database.url, dir.path()).await;
    let env = [
        ("OPENAI_API_KEY", UPSTREAM_KEY.to_owned()),
        ("OPENAI_BASE_URL", mock.url()),
        ("DATABASE_URL", gateway_url),
        ("TOLLGATE_DATA_DIR", dir.path().display().to_string()),
        (
            "TOLLGATE_CONFIG",
            dir.path().join("tollgate.toml").display().to_string(),
        ),
    ];
    let gateway = binary::serve(&env, dir.path()).await;
    let (received, mut workers) = load(
        format!("http://{}/v1/chat/completions", gateway.address),
        key,
        8,
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_outage = received.load(Ordering::SeqCst);
    let holding = Arc::new(AtomicBool::new(true));
    let lock_holder = match &outage {
        Outage::Proxy(proxy) => {
            proxy.cut();
            None
        }
        Outage::SqliteLock(url) => {
            let mut connection = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut connection)
                .await
                .unwrap();
            let holding = holding.clone();
            let mut holder = tokio::task::JoinSet::new();
            holder.spawn(async move {
                while holding.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                sqlx::query("ROLLBACK")
                    .execute(&mut connection)
                    .await
                    .unwrap();
            });
            Some(holder)
        }
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during_outage = received.load(Ordering::SeqCst) - before_outage;
    match &outage {
        Outage::Proxy(proxy) => proxy.restore(),
        Outage::SqliteLock(_) => {
            holding.store(false, Ordering::SeqCst);
            lock_holder.unwrap().join_next().await.unwrap().unwrap();
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // SIGTERM while the load is still running.
    gateway.signal("TERM").await;
    let (code, log) = gateway.finish().await;
    assert_eq!(code, Some(0), "{log}");
    while workers.join_next().await.is_some() {}
    let received = received.load(Ordering::SeqCst);
    assert!(
        during_outage > 100,
        "the gateway kept answering during the outage ({during_outage})"
    );
    assert!(log.contains("audit write"), "the outage was noticed: {log}");

    let stores = tollgate::store::connect(
        &tollgate::config::Config::from_toml_str(
            "t",
            "",
            &[
                ("OPENAI_API_KEY", "sk-x"),
                ("DATABASE_URL", test_database.url.as_str()),
            ]
            .into_iter()
            .collect(),
        )
        .unwrap()
        .database,
    )
    .await
    .unwrap();
    assert_eq!(
        stores.records.count().await.unwrap(),
        received,
        "one record per response received"
    );
    assert!(
        !dir.path().join("tollgate-records.spill").exists(),
        "the spill file was replayed and removed"
    );
    test_database.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_is_lost_across_an_outage_and_sigterm_on_sqlite() {
    no_record_is_lost(Database::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_is_lost_across_an_outage_and_sigterm_on_postgres() {
    no_record_is_lost(Database::Postgres).await;
}

/// Two writers inserting into one SQLite file at once (the writer and a spill replay, or two
/// processes on one file) both succeed: each batch takes the write lock before its first read,
/// so neither is told SQLITE_BUSY without waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_on_one_sqlite_file_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("two-writers.db").display());
    let store = Arc::new(
        tollgate::store::SqliteStore::connect(&url, 4)
            .await
            .unwrap(),
    );
    let batch = |writer: u32, round: u32| -> Vec<tollgate::records::Record> {
        (0..20)
            .map(|n| tollgate::records::Record {
                id: format!("w{writer}-r{round}-n{n}"),
                created_at_ms: tollgate::records::now_ms(),
                caller: "key".into(),
                key_id: Some(format!("k{n}")),
                status: 200,
                outcome: "ok".into(),
                cost_nanos: Some(1),
                ..tollgate::records::Record::default()
            })
            .collect()
    };
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..2 {
        let store = store.clone();
        writers.spawn(async move {
            for round in 0..100 {
                let records = batch(writer, round);
                tollgate::store::RecordStore::insert(store.as_ref(), &records)
                    .await
                    .unwrap_or_else(|e| panic!("writer {writer}, round {round}: {e}"));
            }
        });
    }
    while let Some(writer) = writers.join_next().await {
        writer.unwrap();
    }
    assert_eq!(
        tollgate::store::RecordStore::count(store.as_ref())
            .await
            .unwrap(),
        2 * 100 * 20
    );
}
