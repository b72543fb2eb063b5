//! A table of bad tokens: each is a 401 in OpenAI's envelope.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401_in_the_envelope() {
    let keys = generate_keys();
    let jwks = jwks_server(vec![jwk(&keys.ec, Algorithm::ES256, "ec-1")]).await;
    let gw = gateway(&keys, &jwks, "").await;
    let hs = EncodingKey::from_secret(SECRET.as_bytes());
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims("user-1");
        change(&mut c);
        c
    };
    let valid = sign(Algorithm::HS256, &hs, None, &claims("user-1"));
    let mut parts: Vec<&str> = valid.split('.').collect();
    let forged_payload = b64(serde_json::to_string(&claims("admin")).unwrap().as_bytes());
    parts[1] = &forged_payload;
    let tampered = parts.join(".");
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(serde_json::to_string(&claims("user-1")).unwrap().as_bytes())
    );
    let critical = |crit: Vec<String>| {
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(crit);
        jsonwebtoken::encode(&header, &claims("user-1"), &hs).unwrap()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", none, "well-formed"),
        (
            "a valid signature with an extension the gateway does not know in crit",
            critical(vec!["exp-by-the-issuer".to_owned()]),
            "crit",
        ),
        ("an empty crit", critical(Vec::new()), "crit"),
        (
            "HS256 with the wrong secret",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"another-secret-another-secret-0000"),
                None,
                &claims("u"),
            ),
            "signature",
        ),
        (
            "HS256 keyed with the RSA public key (confusion)",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(&keys.rsa_public_pem),
                None,
                &claims("u"),
            ),
            "signature",
        ),
        (
            "RS256 from another key",
            sign(Algorithm::RS256, &keys.rsa_other, None, &claims("u")),
            "signature",
        ),
        (
            "ES256 from another key with a known kid",
            sign(Algorithm::ES256, &keys.ec_other, Some("ec-1"), &claims("u")),
            "signature",
        ),
        (
            "ES256 with an unknown kid",
            sign(Algorithm::ES256, &keys.ec, Some("nope"), &claims("u")),
            "key is not known",
        ),
        (
            "RS256 claiming the EC key's kid",
            sign(Algorithm::RS256, &keys.rsa, Some("ec-1"), &claims("u")),
            "algorithm",
        ),
        (
            "HS512",
            sign(Algorithm::HS512, &hs, None, &claims("u")),
            "algorithm",
        ),
        (
            "RS512",
            sign(Algorithm::RS512, &keys.rsa, None, &claims("u")),
            "algorithm",
        ),
        (
            "expired past the leeway",
            sign(
                Algorithm::HS256,
                &hs,
                None,
                &with(&|c| c["exp"] = json!(now() - 120)),
            ),
            "expired",
        ),
        (
            "not valid for two minutes",
            sign(
                Algorithm::HS256,
                &hs,
                None,
                &with(&|c| c["nbf"] = json!(now() + 120)),
            ),
            "not valid yet",
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::HS256,
                &hs,
                None,
                &with(&|c| c["iss"] = json!("https://evil.test")),
            ),
            "issuer",
        ),
        (
            "wrong audience",
            sign(
                Algorithm::HS256,
                &hs,
                None,
                &with(&|c| c["aud"] = json!("someone-else")),
            ),
            "audience",
        ),
        (
            "no exp",
            sign(
                Algorithm::HS256,
                &hs,
                None,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
            "expiry",
        ),
        (
            "no sub",
            sign(
                Algorithm::HS256,
                &hs,
                None,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
            ),
            "subject",
        ),
        (
            "sub with a space",
            sign(
                Algorithm::HS256,
                &hs,
                None,
                &with(&|c| c["sub"] = json!("a b")),
            ),
            "subject",
        ),
        (
            "empty sub",
            sign(
                Algorithm::HS256,
                &hs,
                None,
                &with(&|c| c["sub"] = json!("")),
            ),
            "subject",
        ),
        (
            "sub of 200 characters",
            sign(
                Algorithm::HS256,
                &hs,
                None,
                &with(&|c| c["sub"] = json!("s".repeat(200))),
            ),
            "subject",
        ),
        (
            "exp as a string",
            sign(
                Algorithm::HS256,
                &hs,
                None,
                &with(&|c| c["exp"] = json!("tomorrow")),
            ),
            "",
        ),
        (
            "a 9 KB token",
            sign(
                Algorithm::HS256,
                &hs,
                None,
                &with(&|c| c["pad"] = json!("p".repeat(9000))),
            ),
            "too large",
        ),
        ("tampered payload", tampered, "signature"),
        ("garbage in three parts", "a.b.c".to_owned(), "well-formed"),
        (
            "header not base64",
            "!!!.e30.c2ln".to_owned(),
            "well-formed",
        ),
        (
            "payload is an array",
            format!("{}.{}.sig", b64(br#"{"alg":"HS256"}"#), b64(b"[]")),
            "",
        ),
        ("two parts only", "abc.def".to_owned(), "not a Tollgate key"),
    ];
    assert!(cases.len() >= 20);
    for (name, token, reason) in &cases {
        let response = call(&gw, token).await;
        let (status, error) = error_of(response).await;
        assert_eq!(status, 401, "{name}");
        assert_eq!(error["type"], "authentication_error", "{name}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(reason), "{name}: {message}");
        assert!(
            !message.contains(token.as_str()) || token.len() < 8,
            "{name}: the token is echoed"
        );
    }
    assert!(
        gw.upstream_requests().await.is_empty(),
        "no bad token reached the upstream"
    );
    gw.stop().await;
}
