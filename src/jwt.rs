//! User JWTs: verifying a token and reading its subject, the end user.
//!
//! Which key verifies a token is decided by its `alg`, and only among what is configured:
//! HS256 only against `TOLLGATE_JWT_SECRET`; RS256 and ES256 only against an RSA or EC public
//! key of that family, from `TOLLGATE_JWT_JWKS_URL` (by `kid`) or `TOLLGATE_JWT_PUBLIC_KEY`
//! (a PEM). So `alg: none` never verifies (it is not an algorithm the library knows), and an
//! HS256 token "signed" with a public key has no secret to match (the HS/RS confusion attack).
//! `exp` is required and `nbf` honoured, both with 30 s leeway; `iss` and `aud` are checked
//! when configured; `sub` must name a user as `x-user-id` does. Oversized tokens are refused
//! before any decoding. A JWKS is fetched on first use and refetched on an unknown `kid` at
//! most once per `jwt.jwks_min_refresh_ms`, so a stream of made-up `kid`s cannot hammer the
//! key server.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use crate::config::JwtConfig;

/// Leeway for `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;

/// Why a token was refused. Every variant is a 401 but `KeysUnavailable` (503).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("the token is too large")]
    TooLarge,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token's key is not known")]
    UnknownKey,
    #[error("the token's signature is not valid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has no expiry")]
    NoExpiry,
    #[error("the token's issuer is not accepted")]
    Issuer,
    #[error("the token's audience is not accepted")]
    Audience,
    #[error("the token has no valid subject")]
    Subject,
    #[error("the signing keys could not be fetched")]
    KeysUnavailable,
    #[error("the token names critical header extensions")]
    Critical,
}

impl JwtError {
    /// The reason shown to the caller (static: never echoes the token).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge => "the token is too large",
            Self::Malformed => "the token is not a well-formed JWT",
            Self::Algorithm => "the token's algorithm is not accepted",
            Self::UnknownKey => "the token's key is not known",
            Self::Signature => "the token's signature is not valid",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::NoExpiry => "the token has no expiry (exp)",
            Self::Issuer => "the token's issuer is not accepted",
            Self::Audience => "the token's audience is not accepted",
            Self::Subject => "the token has no valid subject",
            Self::KeysUnavailable => "the signing keys could not be fetched",
            Self::Critical => "the token names critical header extensions (crit) it requires",
        }
    }
}

/// Keys from a JWKS URL, by `kid`.
struct Jwks {
    url: Url,
    client: reqwest::Client,
    min_refresh: Duration,
    state: Mutex<JwksState>,
}

#[derive(Default)]
struct JwksState {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched_at: Option<Instant>,
}

/// Verifies user JWTs as configured.
pub struct JwtVerifier {
    hmac: Option<DecodingKey>,
    pem: Option<(DecodingKey, Algorithm)>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
    max_token_bytes: usize,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
}

impl JwtVerifier {
    /// Builds the verifier; `None` when no verification method is configured.
    pub fn new(config: &JwtConfig) -> Result<Option<Self>, String> {
        if !config.enabled() {
            return Ok(None);
        }
        use secrecy::ExposeSecret;
        let hmac = config
            .secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes()));
        let pem = match &config.public_key {
            Some(path) => {
                let bytes =
                    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
                let key = DecodingKey::from_rsa_pem(&bytes)
                    .map(|k| (k, Algorithm::RS256))
                    .or_else(|_| DecodingKey::from_ec_pem(&bytes).map(|k| (k, Algorithm::ES256)))
                    .map_err(|_| {
                        format!(
                            "{} is not an RSA or EC (P-256) public key in PEM",
                            path.display()
                        )
                    })?;
                Some(key)
            }
            None => None,
        };
        let jwks = config.jwks_url.clone().map(|url| Jwks {
            url,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            min_refresh: config.jwks_min_refresh,
            state: Mutex::new(JwksState::default()),
        });
        Ok(Some(Self {
            hmac,
            pem,
            jwks,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            max_token_bytes: config.max_token_bytes,
        }))
    }

    /// Whether `token` has a JWT's shape (three dot-separated parts): worth verifying.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3
    }

    /// Verifies `token` and returns its subject.
    pub async fn verify(&self, token: &str) -> Result<String, JwtError> {
        if token.len() > self.max_token_bytes {
            return Err(JwtError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        // RFC 7515 §4.1.11: every extension named in `crit` must be understood. Tollgate
        // understands none, so any `crit` (an empty one is invalid too) is a refusal.
        if header.crit.is_some() {
            return Err(JwtError::Critical);
        }
        let key = match header.alg {
            Algorithm::HS256 => self.hmac.clone().ok_or(JwtError::Algorithm)?,
            Algorithm::RS256 | Algorithm::ES256 => {
                self.public_key(header.alg, header.kid.as_deref()).await?
            }
            _ => return Err(JwtError::Algorithm),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| classify(&e))?;
        let subject = data.claims.sub.ok_or(JwtError::Subject)?;
        if !crate::identity::is_valid_user(&subject) {
            return Err(JwtError::Subject);
        }
        Ok(subject)
    }

    /// The RSA or EC key for `alg`: from the JWKS by `kid`, else the PEM key of that family.
    async fn public_key(&self, alg: Algorithm, kid: Option<&str>) -> Result<DecodingKey, JwtError> {
        if let (Some(jwks), Some(kid)) = (&self.jwks, kid) {
            return jwks.key(kid, alg).await;
        }
        match &self.pem {
            Some((key, family)) if *family == alg => Ok(key.clone()),
            Some(_) => Err(JwtError::Algorithm),
            None if self.jwks.is_some() => Err(JwtError::UnknownKey),
            None => Err(JwtError::Algorithm),
        }
    }
}

impl Jwks {
    async fn key(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, JwtError> {
        let mut state = self.state.lock().await;
        let stale = state
            .fetched_at
            .is_none_or(|at| at.elapsed() >= self.min_refresh);
        if !state.keys.contains_key(kid) && stale {
            state.fetched_at = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => state.keys = keys,
                Err(error) => {
                    tracing::warn!(url = %self.url, %error, "could not fetch the JWT key set");
                    if state.keys.is_empty() {
                        return Err(JwtError::KeysUnavailable);
                    }
                }
            }
        }
        match state.keys.get(kid) {
            Some((key, key_alg)) if *key_alg == alg => Ok(key.clone()),
            Some(_) => Err(JwtError::Algorithm),
            None => Err(JwtError::UnknownKey),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
        let set: JwkSet = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        Ok(set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let alg = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                        Algorithm::ES256
                    }
                    _ => return None,
                };
                Some((kid, (DecodingKey::from_jwk(jwk).ok()?, alg)))
            })
            .collect())
    }
}

fn classify(error: &jsonwebtoken::errors::Error) -> JwtError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::Issuer,
        ErrorKind::InvalidAudience => JwtError::Audience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "sub" => JwtError::Subject,
        ErrorKind::MissingRequiredClaim(_) => JwtError::NoExpiry,
        ErrorKind::InvalidSignature => JwtError::Signature,
        ErrorKind::InvalidAlgorithm => JwtError::Algorithm,
        _ => JwtError::Malformed,
    }
}
