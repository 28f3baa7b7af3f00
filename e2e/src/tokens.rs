//! Service-account tokens from the TokenRequest API, TokenReview, and clients acting as a
//! service account.

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
    TokenReviewStatus,
};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::cluster::{Cluster, Connection, SERVICE_ACCOUNT_ISSUER};

/// The lifetime a token is requested with unless a pod's projected volume says otherwise, as
/// the kubelet does. The API server grants no less than 600 s.
pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// The service account a pod runs as: `spec.serviceAccountName`, else `default`.
pub fn pod_service_account(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

impl Connection {
    /// Asks the TokenRequest API for a token of `namespace/service_account` (as admin).
    pub async fn request_token(
        &self,
        namespace: &str,
        service_account: &str,
        spec: TokenRequestSpec,
    ) -> Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec,
            ..Default::default()
        };
        let response = api
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .with_context(|| {
                format!(
                    "failed to request a token for serviceaccount {namespace}/{service_account}"
                )
            })?;
        Ok(response
            .status
            .context("the TokenRequest response has no status")?
            .token)
    }

    /// A token of `namespace/service_account` that is bound to nothing, for `audiences`
    /// (empty: the API server's own audience).
    pub async fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
    ) -> Result<String> {
        let spec = TokenRequestSpec {
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            expiration_seconds: Some(DEFAULT_TOKEN_EXPIRATION_SECONDS),
            ..Default::default()
        };
        self.request_token(namespace, service_account, spec).await
    }

    /// A token of the pod's service account bound to the pod (`boundObjectRef`), as the
    /// kubelet gets for a projected `serviceAccountToken` volume: it names the pod in its
    /// claims and stops authenticating once the pod is deleted. `pod` must be the object as
    /// the API server stored it (with its `uid`).
    pub async fn pod_token(
        &self,
        pod: &Pod,
        audiences: &[&str],
        expiration_seconds: Option<i64>,
    ) -> Result<String> {
        let namespace = pod.namespace().context("the pod has no namespace")?;
        let spec = TokenRequestSpec {
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            expiration_seconds: Some(
                expiration_seconds.unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS),
            ),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: Some(
                    pod.uid()
                        .context("the pod has no uid: pass the created object")?,
                ),
            }),
        };
        self.request_token(&namespace, pod_service_account(pod), spec)
            .await
    }

    /// Reviews `token` through the TokenReview API (as admin) for `audiences` (empty: the
    /// API server's own), as sentry does.
    pub async fn review_token(&self, token: &str, audiences: &[&str]) -> Result<TokenReviewStatus> {
        let api: Api<TokenReview> = Api::all(self.client());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!audiences.is_empty())
                    .then(|| audiences.iter().map(|a| a.to_string()).collect()),
            },
            ..Default::default()
        };
        let response = api
            .create(&PostParams::default(), &review)
            .await
            .context("failed to create a TokenReview")?;
        response
            .status
            .context("the TokenReview response has no status")
    }

    /// A client acting as `namespace/service_account`, authenticated with a token from the
    /// TokenRequest API and trusting the cluster CA: it can do what RBAC grants that service
    /// account and nothing else.
    pub async fn client_for_service_account(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<Client> {
        let token = self
            .service_account_token(namespace, service_account, &[])
            .await?;
        Ok(self.client_with_token(&token))
    }
}

/// The claims the API server puts in a token of `service_account` bound to `pod`, valid from
/// `issued_at` to `expires_at` (Unix seconds), for [`Cluster::sign_service_account_token`].
/// Both objects must be as stored (their `uid`s are checked). Edit the result to forge
/// anything else.
pub fn bound_token_claims(
    pod: &Pod,
    service_account: &ServiceAccount,
    audiences: &[&str],
    issued_at: i64,
    expires_at: i64,
) -> Value {
    let namespace = pod.namespace().unwrap_or_default();
    let sa = service_account.name_any();
    json!({
        "iss": SERVICE_ACCOUNT_ISSUER,
        "sub": format!("system:serviceaccount:{namespace}:{sa}"),
        "aud": audiences,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": expires_at,
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": pod.name_any(), "uid": pod.uid().unwrap_or_default()},
            "serviceaccount": {"name": sa, "uid": service_account.uid().unwrap_or_default()},
        },
    })
}

impl Cluster {
    /// Signs `claims` with the API server's service-account key (ES256, no `kid`), for tokens
    /// TokenRequest will not issue: expired ones (more than the API server's 1 minute of
    /// leeway), not yet valid ones, odd claims. See [`bound_token_claims`].
    pub fn sign_service_account_token(&self, claims: &Value) -> Result<String> {
        let key = jsonwebtoken::EncodingKey::from_ec_pem(
            self.service_account_signing_key_pem().as_bytes(),
        )
        .context("the service-account key is not an EC PEM key")?;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            claims,
            &key,
        )
        .context("failed to sign the token")
    }
}
