//! User JWTs end to end: HS256 with a secret, RS256 from a PEM file, ES256 from a JWKS the test
//! serves, and a table of bad tokens. Keys are generated per run with `openssl`; none is
//! committed.

mod bad_tokens;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::routing::get;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::support::{TestGateway, error_of};

const SECRET: &str = "a-test-hs256-secret-that-is-long-enough-0123456789";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "tollgate";

fn openssl(args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(status.success(), "openssl {args:?}");
}

/// Generated keys: two RSA pairs and two EC keys.
struct Keys {
    rsa: EncodingKey,
    rsa_other: EncodingKey,
    rsa_public_pem: Vec<u8>,
    rsa_public_path: String,
    ec: EncodingKey,
    ec_other: EncodingKey,
    _dir: tempfile::TempDir,
}

fn generate_keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    for name in ["rsa", "rsa_other"] {
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &path(&format!("{name}.pem")),
        ]);
    }
    openssl(&[
        "pkey",
        "-in",
        &path("rsa.pem"),
        "-pubout",
        "-out",
        &path("rsa.pub.pem"),
    ]);
    for name in ["ec", "ec_other"] {
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &path(&format!("{name}.pem")),
        ]);
    }
    let read = |name: &str| std::fs::read(Path::new(&path(name))).unwrap();
    Keys {
        rsa: EncodingKey::from_rsa_pem(&read("rsa.pem")).unwrap(),
        rsa_other: EncodingKey::from_rsa_pem(&read("rsa_other.pem")).unwrap(),
        rsa_public_pem: read("rsa.pub.pem"),
        rsa_public_path: path("rsa.pub.pem"),
        ec: EncodingKey::from_ec_pem(&read("ec.pem")).unwrap(),
        ec_other: EncodingKey::from_ec_pem(&read("ec_other.pem")).unwrap(),
        _dir: dir,
    }
}

fn now() -> i64 {
    tollgate::keys::now_ms() / 1000
}

fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": now() + 600, "iat": now(), "iss": ISSUER, "aud": AUDIENCE })
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWKS endpoint whose keys the test can change, counting fetches.
struct JwksServer {
    url: String,
    keys: Arc<RwLock<Vec<Jwk>>>,
    fetches: Arc<AtomicU64>,
}

async fn jwks_server(initial: Vec<Jwk>) -> JwksServer {
    let keys = Arc::new(RwLock::new(initial));
    let fetches = Arc::new(AtomicU64::new(0));
    let (served_keys, counter) = (keys.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/jwks.json",
        get(move || {
            let (keys, counter) = (served_keys.clone(), counter.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                axum::Json(JwkSet {
                    keys: keys.read().await.clone(),
                })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio_util::task::TaskTracker::new().spawn(async move { axum::serve(listener, app).await });
    JwksServer {
        url: format!("http://{address}/jwks.json"),
        keys,
        fetches,
    }
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

async fn gateway(keys: &Keys, jwks: &JwksServer, toml: &str) -> TestGateway {
    TestGateway::builder()
        .toml(toml)
        .env("TOLLGATE_JWT_SECRET", SECRET)
        .env("TOLLGATE_JWT_PUBLIC_KEY", &keys.rsa_public_path)
        .env("TOLLGATE_JWT_JWKS_URL", &jwks.url)
        .env("TOLLGATE_JWT_ISSUER", ISSUER)
        .env("TOLLGATE_JWT_AUDIENCE", AUDIENCE)
        .start()
        .await
        .unwrap()
}

fn chat(model: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] })
}

async fn call(gw: &TestGateway, token: &str) -> reqwest::Response {
    gw.client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_rs256_and_es256_tokens_are_served_and_sub_is_the_user() {
    let keys = generate_keys();
    let jwks = jwks_server(vec![jwk(&keys.ec, Algorithm::ES256, "ec-1")]).await;
    let gw = gateway(&keys, &jwks, "[jwt]\nmodels = [\"gpt-4o-mini\"]\n").await;
    let tokens = [
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            None,
            &claims("alice"),
        ),
        sign(Algorithm::RS256, &keys.rsa, None, &claims("bob")),
        sign(Algorithm::ES256, &keys.ec, Some("ec-1"), &claims("carol")),
    ];
    for (token, user) in tokens.iter().zip(["alice", "bob", "carol"]) {
        assert_eq!(call(&gw, token).await.status(), 200, "{user}");
        let status: Value = gw
            .client
            .get(gw.url("/rate-limit/status"))
            .bearer_auth(token)
            .header("x-user-id", "someone-else")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            status["user"], user,
            "the subject is the user; x-user-id is ignored for JWT callers"
        );
        assert_eq!(
            status["buckets"][1]["remaining"], 99,
            "the user's chat bucket was charged once"
        );
    }
    // [jwt] models limit JWT users.
    let denied = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&tokens[0])
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(denied).await.0, 403);
    // Within the 30 s leeway, a just-expired or not-quite-valid token still passes.
    let mut lenient = claims("dave");
    lenient["exp"] = json!(now() - 10);
    lenient["nbf"] = json!(now() + 10);
    assert_eq!(
        call(
            &gw,
            &sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(SECRET.as_bytes()),
                None,
                &lenient
            )
        )
        .await
        .status(),
        200
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_is_refused_when_only_public_keys_are_configured() {
    let keys = generate_keys();
    let gw = TestGateway::builder()
        .env("TOLLGATE_JWT_PUBLIC_KEY", &keys.rsa_public_path)
        .start()
        .await
        .unwrap();
    // The classic confusion: HMAC "signed" with the RSA public key the server trusts.
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&keys.rsa_public_pem),
        None,
        &claims("u"),
    );
    let (status, error) = error_of(call(&gw, &forged).await).await;
    assert_eq!(status, 401);
    assert!(
        error["message"].as_str().unwrap().contains("algorithm"),
        "{error}"
    );
    let mut genuine = claims("u");
    genuine.as_object_mut().unwrap().remove("iss");
    genuine.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        call(&gw, &sign(Algorithm::RS256, &keys.rsa, None, &genuine))
            .await
            .status(),
        200
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refetches_the_jwks_at_most_once_per_interval() {
    let keys = generate_keys();
    let jwks = jwks_server(vec![jwk(&keys.ec, Algorithm::ES256, "ec-1")]).await;
    let gw = gateway(&keys, &jwks, "[jwt]\njwks_min_refresh_ms = 1000\n").await;
    assert_eq!(
        call(
            &gw,
            &sign(Algorithm::ES256, &keys.ec, Some("ec-1"), &claims("u"))
        )
        .await
        .status(),
        200
    );
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);
    // The issuer rotates in a new key.
    jwks.keys
        .write()
        .await
        .push(jwk(&keys.ec_other, Algorithm::ES256, "ec-2"));
    let rotated = sign(Algorithm::ES256, &keys.ec_other, Some("ec-2"), &claims("u"));
    for _ in 0..5 {
        assert_eq!(
            call(&gw, &rotated).await.status(),
            401,
            "within the interval the set is not refetched"
        );
    }
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        1,
        "a burst of unknown kids made no fetch"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        call(&gw, &rotated).await.status(),
        200,
        "after the interval the new key is fetched"
    );
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2);
    gw.stop().await;
}
