//! The `jwks` validator: a JWT whose `sub` is the caller's SPIFFE id and whose `aud` includes
//! sentry's SPIFFE id, signed by a key of a JWKS (a file, an https URL, or inline JSON).

use std::sync::RwLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use daprs_api::SpiffeId;
use daprs_api::proto::sentry::SignCertificateRequest;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;

use super::{Denial, Validator, common_checks, spiffe_id};

/// Allowed clock skew on `exp`/`nbf`, as Dapr.
const LEEWAY_SECS: u64 = 300;
/// Least time between two JWKS reloads triggered by an unknown key id.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the JWKS comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    Inline(String),
    Url(String),
    File(std::path::PathBuf),
}

impl JwksSource {
    /// Interprets Dapr's `source` option: inline JSON, an http(s) URL, or a file path.
    pub fn parse(source: &str) -> Self {
        let trimmed = source.trim();
        if trimmed.starts_with('{') {
            Self::Inline(trimmed.to_owned())
        } else if trimmed.starts_with("https://") || trimmed.starts_with("http://") {
            Self::Url(trimmed.to_owned())
        } else {
            Self::File(trimmed.into())
        }
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let text = match self {
            Self::Inline(json) => json.clone(),
            Self::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("failed to read JWKS file {}: {e}", path.display()))?,
            Self::Url(url) => {
                let client = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .build()
                    .map_err(|e| e.to_string())?;
                client
                    .get(url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| format!("failed to fetch JWKS {url}: {e}"))?
                    .text()
                    .await
                    .map_err(|e| format!("failed to read JWKS {url}: {e}"))?
            }
        };
        serde_json::from_str(&text)
            .map_err(|e| format!("the JWKS is not valid JSON Web Key Set: {e}"))
    }
}

pub struct JwksValidator {
    source: JwksSource,
    sentry_id: String,
    keys: RwLock<(JwkSet, Instant)>,
}

impl std::fmt::Debug for JwksValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksValidator")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl JwksValidator {
    /// Loads the JWKS once (a bad source fails start-up with a clear message).
    pub async fn new(source: JwksSource, sentry_id: String) -> Result<Self, String> {
        let keys = source.fetch().await?;
        Ok(Self {
            source,
            sentry_id,
            keys: RwLock::new((keys, Instant::now())),
        })
    }

    fn key_for(&self, kid: Option<&str>) -> Option<jsonwebtoken::jwk::Jwk> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        match kid {
            Some(kid) => keys.0.find(kid).cloned(),
            None if keys.0.keys.len() == 1 => keys.0.keys.first().cloned(),
            None => None,
        }
    }

    async fn refresh_if_allowed(&self) {
        let due = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .elapsed()
            >= MIN_REFRESH_INTERVAL;
        if !due {
            return;
        }
        match self.source.fetch().await {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = (keys, Instant::now())
            }
            Err(e) => {
                tracing::warn!(error = %e, "failed to refresh the JWKS; keeping the old keys")
            }
        }
    }
}

#[async_trait]
impl Validator for JwksValidator {
    fn name(&self) -> &'static str {
        "jwks"
    }

    async fn validate(&self, request: &SignCertificateRequest) -> Result<SpiffeId, Denial> {
        common_checks(request)?;
        if request.token.is_empty() {
            return Err(Denial::Denied(
                "no token was sent; the jwks validator needs a JWT".into(),
            ));
        }
        let header = jsonwebtoken::decode_header(&request.token)
            .map_err(|e| Denial::Denied(format!("the token is not a JWT: {e}")))?;
        let kid = header.kid.as_deref();
        let jwk = match self.key_for(kid) {
            Some(jwk) => jwk,
            None => {
                self.refresh_if_allowed().await;
                self.key_for(kid).ok_or_else(|| {
                    Denial::Denied(format!(
                        "no key in the JWKS matches the token's key id {kid:?}"
                    ))
                })?
            }
        };
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| Denial::Denied(format!("the JWKS key {kid:?} is unusable: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.set_audience(&[&self.sentry_id]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        let claims = jsonwebtoken::decode::<Claims>(&request.token, &key, &validation)
            .map_err(|e| {
                Denial::Denied(format!(
                    "the JWT was refused ({e}); its aud must include {}",
                    self.sentry_id
                ))
            })?
            .claims;
        let td = if request.trust_domain.is_empty() {
            daprs_api::names::DEFAULT_APP_TRUST_DOMAIN
        } else {
            &request.trust_domain
        };
        let expected = spiffe_id(td, &request.namespace, &request.id)?;
        if claims.sub != expected.to_string() {
            return Err(Denial::Denied(format!(
                "the JWT's sub is {:?} but the request is for {expected}",
                claims.sub
            )));
        }
        Ok(expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    const SENTRY: &str = "spiffe://cluster.local/ns/dapr-system/dapr-sentry";

    /// An EC P-256 key (PKCS#8) and its JWK, generated with rcgen.
    fn keys() -> (EncodingKey, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = key.public_key_raw(); // 0x04 || x || y
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]});
        (
            EncodingKey::from_ec_der(&key.serialize_der()),
            jwks.to_string(),
        )
    }

    fn token(key: &EncodingKey, sub: &str, aud: &str, exp_offset: i64) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        let exp = time::OffsetDateTime::now_utc().unix_timestamp() + exp_offset;
        jsonwebtoken::encode(&header, &json!({"sub": sub, "aud": [aud], "exp": exp}), key).unwrap()
    }

    fn request(token: String) -> SignCertificateRequest {
        SignCertificateRequest {
            id: "orders".into(),
            namespace: "default".into(),
            token,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn accepts_a_jwt_for_the_requested_identity() {
        let (key, jwks) = keys();
        let v = JwksValidator::new(JwksSource::parse(&jwks), SENTRY.into())
            .await
            .unwrap();
        let id = v
            .validate(&request(token(
                &key,
                "spiffe://public/ns/default/orders",
                SENTRY,
                600,
            )))
            .await
            .unwrap();
        assert_eq!(id.to_string(), "spiffe://public/ns/default/orders");
    }

    #[tokio::test]
    async fn refuses_wrong_subject_audience_expiry_and_key() {
        let (key, jwks) = keys();
        let (other_key, _) = keys();
        let v = JwksValidator::new(JwksSource::parse(&jwks), SENTRY.into())
            .await
            .unwrap();
        let cases = [
            (
                token(&key, "spiffe://public/ns/default/payments", SENTRY, 600),
                "sub is",
            ),
            (
                token(
                    &key,
                    "spiffe://public/ns/default/orders",
                    "someone-else",
                    600,
                ),
                "aud must include",
            ),
            (
                token(&key, "spiffe://public/ns/default/orders", SENTRY, -3600),
                "ExpiredSignature",
            ),
            (
                token(&other_key, "spiffe://public/ns/default/orders", SENTRY, 600),
                "InvalidSignature",
            ),
            ("not-a-jwt".into(), "not a JWT"),
        ];
        for (token, needle) in cases {
            match v.validate(&request(token)).await {
                Err(Denial::Denied(msg)) => assert!(msg.contains(needle), "{msg} / {needle}"),
                other => panic!("{needle}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn reads_a_jwks_file_and_reports_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let (_, jwks) = keys();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks).unwrap();
        assert!(
            JwksValidator::new(JwksSource::parse(path.to_str().unwrap()), SENTRY.into())
                .await
                .is_ok()
        );
        std::fs::write(&path, "{oops").unwrap();
        let err = JwksValidator::new(JwksSource::File(path), SENTRY.into())
            .await
            .unwrap_err();
        assert!(err.contains("not valid JSON Web Key Set"), "{err}");
    }
}
