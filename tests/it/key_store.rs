//! The `KeyStore` behaviour suite, run against SQLite and PostgreSQL, and key lifecycle
//! through the gateway.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tollgate::keys::{self, NewKey};
use tollgate::store::KeyStore;

use crate::support::{Database, TestGateway, eventually};

async fn behaviour(store: Arc<dyn KeyStore>) {
    store.ping().await.unwrap();
    // Only a key that counts tokens makes `serve` build the tokenizer before listening: the
    // gateway's own test key has no budget and no token rule.
    assert!(!store.any_counts_tokens(keys::now_ms()).await.unwrap());
    let mut issued = Vec::new();
    for i in 0..5 {
        let new = NewKey {
            name: format!("key {i}"),
            owner: Some("team".into()),
            models: vec!["gpt-4o".into()],
            rules: vec![
                tollgate::limiter::rules::RuleSpec::parse_cli(
                    "scope=user,route=chat,requests=5,per=1m",
                )
                .unwrap(),
            ],
            metadata: json!({ "n": i }).as_object().unwrap().clone(),
            budgets: tollgate::keys::KeyBudgets {
                key: Some(tollgate::config::BudgetSpec {
                    max_usd: 12.5,
                    period: tollgate::config::BudgetPeriod::Month,
                    alert_at: 0.9,
                }),
                user: None,
            },
            routes: vec!["batches".into()],
            expires_at_ms: Some(4_000_000_000_000),
        };
        let key = keys::issue(new, keys::now_ms() + i);
        store.insert(&key.key, &key.hash).await.unwrap();
        issued.push(key);
    }
    // Found by hash, with every field intact.
    let found = store.find_by_hash(&issued[2].hash).await.unwrap().unwrap();
    assert_eq!(found, issued[2].key);
    assert!(
        store
            .find_by_hash(&keys::hash_secret("tg-nope"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.get(&issued[4].key.id).await.unwrap().unwrap().name,
        "key 4"
    );
    // A duplicate hash is refused.
    assert!(
        store
            .insert(&keys::issue(NewKey::default(), 0).key, &issued[0].hash)
            .await
            .is_err()
    );
    // Pages in creation order.
    let first = store.list(None, 2).await.unwrap();
    let second = store.list(Some(&first[1].id), 2).await.unwrap();
    let third = store.list(Some(&second[1].id), 2).await.unwrap();
    let expected: Vec<&str> = issued.iter().map(|k| k.key.id.as_str()).collect();
    // The harness's own key was created first; the pages hold it and then ours, in order.
    let mut ids: Vec<&str> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|k| k.id.as_str())
        .collect();
    assert_eq!(ids.len(), 6);
    ids.retain(|id| expected.contains(id));
    assert_eq!(ids, expected);
    // Updates change the editable fields and nothing else.
    let mut changed = issued[3].key.clone();
    tollgate::keys::KeyPatch {
        name: Some("renamed".into()),
        models: Some(vec![]),
        rules: Some(vec![]),
        expires_at_ms: Some(None),
        ..Default::default()
    }
    .apply(&mut changed);
    assert!(store.update(&changed).await.unwrap());
    let reread = store.get(&changed.id).await.unwrap().unwrap();
    assert_eq!(reread, changed);
    assert_eq!(
        (
            reread.name.as_str(),
            reread.rules.len(),
            reread.expires_at_ms
        ),
        ("renamed", 0, None)
    );
    assert_eq!(
        store
            .find_by_hash(&issued[3].hash)
            .await
            .unwrap()
            .unwrap()
            .id,
        changed.id,
        "the hash is untouched"
    );
    let mut ghost = changed.clone();
    ghost.id = "key_missing".into();
    assert!(!store.update(&ghost).await.unwrap());

    assert!(store.any_counts_tokens(keys::now_ms()).await.unwrap());
    // Revocation is once.
    assert!(store.revoke(&issued[1].key.id, 123).await.unwrap());
    assert!(!store.revoke(&issued[1].key.id, 456).await.unwrap());
    assert!(!store.revoke("key_missing", 1).await.unwrap());
    assert_eq!(
        store
            .get(&issued[1].key.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at_ms,
        Some(123)
    );
}

#[tokio::test]
async fn key_store_behaviour_on_sqlite() {
    let gw = TestGateway::builder()
        .database(Database::Sqlite)
        .start()
        .await
        .unwrap();
    behaviour(gw.store.clone()).await;
    gw.stop().await;
}

#[tokio::test]
async fn key_store_behaviour_on_postgres() {
    let Some(gw) = TestGateway::builder()
        .database(Database::Postgres)
        .start()
        .await
    else {
        return;
    };
    behaviour(gw.store.clone()).await;
    gw.stop().await;
}

async fn revocation_takes_effect_within_a_second(database: Database) {
    let Some(gw) = TestGateway::builder().database(database).start().await else {
        return;
    };
    let (id, secret) = gw.create_key(&[]).await;
    let call = || {
        gw.client
            .get(gw.url("/v1/models"))
            .bearer_auth(&secret)
            .send()
    };
    assert_eq!(
        call().await.unwrap().status(),
        200,
        "the key works and is now cached"
    );
    gw.store.revoke(&id, keys::now_ms()).await.unwrap();
    let revoked_at = std::time::Instant::now();
    let refused = eventually(Duration::from_millis(1500), || async {
        call().await.unwrap().status() == 401
    })
    .await;
    assert!(refused);
    assert!(
        revoked_at.elapsed() <= Duration::from_millis(1100),
        "took {:?}",
        revoked_at.elapsed()
    );
    gw.stop().await;
}

#[tokio::test]
async fn revocation_within_a_second_sqlite() {
    revocation_takes_effect_within_a_second(Database::Sqlite).await;
}

#[tokio::test]
async fn revocation_within_a_second_postgres() {
    revocation_takes_effect_within_a_second(Database::Postgres).await;
}

#[tokio::test]
async fn chat_works_on_postgres() {
    let Some(gw) = TestGateway::builder()
        .database(Database::Postgres)
        .start()
        .await
    else {
        return;
    };
    let body = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] });
    assert_eq!(
        gw.post("/v1/chat/completions", &body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.stop().await;
}
