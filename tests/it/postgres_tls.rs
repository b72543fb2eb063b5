//! PostgreSQL as clouds run it: TLS that verifies the server (`sslmode=verify-full` with the
//! CA in `sslrootcert`), encryption without verification (`sslmode=require`), a server that
//! refuses plain connections, and an impostor (a certificate another CA signed) refused with an
//! error that names the certificate and never the password. On a cluster the test owns.

use serde_json::json;

use crate::support::binary;
use crate::support::engines::required_env;
use crate::support::pg_cluster::PgCluster;
use crate::support::redis_topologies::TestCa;

/// `tollgate keys list --json` against `url`: whether it succeeded, and its error output.
async fn list_keys(url: &str, dir: &std::path::Path) -> (bool, String) {
    let output = tokio::process::Command::new(binary::path())
        .args(["keys", "list", "--json"])
        .env("DATABASE_URL", url)
        .env_remove("TOLLGATE_CONFIG")
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    // With --json the error is a document on stdout.
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_server_and_refuses_an_impostor() {
    let Some(_) = required_env("TOLLGATE_TEST_DATABASE_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let trusted = TestCa::new(dir.path(), "pg-trusted");
    let rogue = TestCa::new(dir.path(), "pg-rogue");
    let cluster = PgCluster::start(Some(&trusted)).await;

    // verify-full against the CA that signed the server: keys are created and requests served.
    let verified = cluster.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", trusted.cert()),
    );
    let binary::Stack {
        served,
        key,
        mock: _mock,
    } = binary::stack(dir.path(), Some(&verified), &[]).await;
    let answer = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", served.address))
        .bearer_auth(&key)
        .json(&json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let log = served.stop().await;
    assert!(!log.contains("panicked"), "{log}");

    // Encrypted but unverified (libpq's `require`) connects; a plain connection is turned away
    // by the server.
    assert!(
        list_keys(&cluster.url("127.0.0.1", "sslmode=require"), dir.path())
            .await
            .0
    );
    let (ok, error) = list_keys(&cluster.url("127.0.0.1", "sslmode=disable"), dir.path()).await;
    assert!(!ok, "a plain connection is refused");
    assert!(
        error.contains("pg_hba.conf") || error.contains("no encryption"),
        "{error}"
    );

    // An impostor: the gateway trusts another CA, so the same server is not believed, and
    // the error says why without the URL's password.
    let impostor = cluster
        .url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", rogue.cert()),
        )
        .replace("postgres@", "postgres:hunter2-secret@");
    let (ok, error) = list_keys(&impostor, dir.path()).await;
    assert!(!ok, "a server another CA signed is refused");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert!(!error.contains("hunter2-secret"), "{error}");
    // verify-full checks the name too: the certificate is for localhost and 127.0.0.1, and
    // the server also listens on 127.0.0.2.
    let (ok, error) = list_keys(
        &cluster.url(
            "127.0.0.2",
            &format!("sslmode=verify-full&sslrootcert={}", trusted.cert()),
        ),
        dir.path(),
    )
    .await;
    assert!(!ok, "a certificate for another name is refused");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

/// Every session the gateway opens carries `database.statement_timeout_ms`: a query that runs
/// longer is cancelled by the server.
#[tokio::test]
async fn sessions_carry_the_statement_timeout() {
    use sqlx::Connection;
    let Some(url) = required_env("TOLLGATE_TEST_DATABASE_URL") else {
        return;
    };
    let config = tollgate::config::Config::from_toml_str(
        "t.toml",
        "[database]\nstatement_timeout_ms = 200\n",
        &[("OPENAI_API_KEY", "sk-x"), ("DATABASE_URL", url.as_str())]
            .into_iter()
            .collect(),
    )
    .unwrap();
    let options = tollgate::store::PostgresStore::connect_options(&url, &config.database).unwrap();
    let mut connection = sqlx::PgConnection::connect_with(&options).await.unwrap();
    let (timeout,): (String,) = sqlx::query_as("SHOW statement_timeout")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(timeout, "200ms");
    let error = sqlx::query("SELECT pg_sleep(2)")
        .execute(&mut connection)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("statement timeout"), "{error}");
}
