//! The `kubernetes` validator: a pod-bound projected service-account token, checked with the
//! API server's TokenReview, then matched against the pod it is bound to.
//!
//! Successful TokenReviews are cached for the token's lifetime so a burst of renewals does not
//! hammer the API server; the pod is still read on every request, so a deleted pod's token
//! stops working at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use daprs_api::SpiffeId;
use daprs_api::names;
use daprs_api::proto::sentry::SignCertificateRequest;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use sha2::{Digest, Sha256};

use super::{Denial, Validator, common_checks, spiffe_id, unverified_claims};

/// Extra field TokenReview sets for pod-bound tokens.
const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// Most cached reviews kept; expired ones are dropped first.
const MAX_CACHED_REVIEWS: usize = 10_000;
/// Longest a review is cached when the token carries no `exp`.
const MAX_REVIEW_CACHE_TTL: Duration = Duration::from_secs(600);
/// Time allowed for one API call.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// What TokenReview said about a token.
#[derive(Clone, Debug)]
struct Review {
    namespace: String,
    service_account: String,
    pod_name: String,
    pod_uid: Option<String>,
    expires: SystemTime,
}

pub struct KubernetesValidator {
    client: kube::Client,
    audiences: Vec<String>,
    control_plane_namespace: String,
    control_plane_trust_domain: String,
    cache: Mutex<HashMap<[u8; 32], Review>>,
}

impl std::fmt::Debug for KubernetesValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesValidator")
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

/// The `dapr.io/v1alpha1` Configuration resource.
pub fn configuration_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("dapr.io", "v1alpha1", "Configuration"),
        "configurations",
    )
}

impl KubernetesValidator {
    pub fn new(
        client: kube::Client,
        control_plane_namespace: &str,
        control_plane_trust_domain: &str,
    ) -> Self {
        Self {
            client,
            audiences: vec![
                names::LEGACY_SENTRY_AUDIENCE.to_owned(),
                names::sentry_audience(control_plane_trust_domain, control_plane_namespace),
            ],
            control_plane_namespace: control_plane_namespace.into(),
            control_plane_trust_domain: control_plane_trust_domain.into(),
            cache: Mutex::default(),
        }
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Review> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|r| r.expires > SystemTime::now())
            .cloned()
    }

    fn remember(&self, key: [u8; 32], review: Review) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_REVIEWS {
            let now = SystemTime::now();
            cache.retain(|_, r| r.expires > now);
            if cache.len() >= MAX_CACHED_REVIEWS {
                cache.clear();
            }
        }
        cache.insert(key, review);
    }

    async fn review(&self, token: &str) -> Result<Review, Denial> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(review) = self.cached(&key) {
            return Ok(review);
        }
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let response = tokio::time::timeout(
            API_TIMEOUT,
            reviews.create(&PostParams::default(), &request),
        )
        .await
        .map_err(|_| {
            Denial::Unavailable("TokenReview timed out; is the API server reachable?".into())
        })?
        .map_err(|e| api_unavailable("TokenReview", e))?;
        let status = response.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(Denial::Denied(format!(
                "the token was not authenticated for audience {} or {}: {}",
                self.audiences[1],
                self.audiences[0],
                status.error.unwrap_or_else(|| "no reason given".into())
            )));
        }
        // An empty list means "valid for the API server itself", not for sentry.
        let granted = status.audiences.unwrap_or_default();
        if !granted.iter().any(|a| self.audiences.contains(a)) {
            return Err(Denial::Denied(format!(
                "the token was authenticated for {granted:?}, not for {} or {}",
                self.audiences[1], self.audiences[0]
            )));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let parts: Vec<&str> = username.split(':').collect();
        let ["system", "serviceaccount", namespace, service_account] = parts[..] else {
            return Err(Denial::Denied(format!(
                "the token belongs to {username:?}, not to a service account (system:serviceaccount:<namespace>:<name>)"
            )));
        };
        let extra = user.extra.unwrap_or_default();
        let first = |key: &str| extra.get(key).and_then(|v| v.first()).cloned();
        let claims = unverified_claims(token);
        let pod_name = first(EXTRA_POD_NAME)
            .or_else(|| {
                claims.as_ref()?.pointer("/kubernetes.io/pod/name")?.as_str().map(str::to_owned)
            })
            .ok_or_else(|| {
                Denial::Denied(format!(
                    "the token of service account {namespace}/{service_account} is not bound to a pod; use the projected token the injector mounts at {}",
                    names::SENTRY_TOKEN_PATH
                ))
            })?;
        let expires = claims
            .as_ref()
            .and_then(|c| c.get("exp")?.as_u64())
            .map(|exp| SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
            .unwrap_or_else(|| SystemTime::now() + MAX_REVIEW_CACHE_TTL);
        let review = Review {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            pod_name,
            pod_uid: first(EXTRA_POD_UID).or_else(|| {
                claims
                    .as_ref()?
                    .pointer("/kubernetes.io/pod/uid")?
                    .as_str()
                    .map(str::to_owned)
            }),
            expires,
        };
        self.remember(key, review.clone());
        Ok(review)
    }

    async fn configuration_trust_domain(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<String, Denial> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &configuration_resource());
        let configuration = tokio::time::timeout(API_TIMEOUT, api.get_opt(name))
            .await
            .map_err(|_| Denial::Unavailable("reading the Configuration timed out".into()))?
            .or_else(|e| match e {
                // The Configuration CRD is not installed: no Configuration can exist.
                kube::Error::Api(status) if status.code == 404 => Ok(None),
                e => Err(api_unavailable("reading the Configuration", e)),
            })?
            .ok_or_else(|| {
                Denial::Denied(format!(
                    "Configuration {namespace}/{name} named by the pod's {} annotation does not exist",
                    names::ANNOTATION_CONFIG
                ))
            })?;
        Ok(configuration
            .data
            .pointer("/spec/accessControl/trustDomain")
            .and_then(|v| v.as_str())
            .filter(|td| !td.is_empty())
            .unwrap_or(names::DEFAULT_APP_TRUST_DOMAIN)
            .to_owned())
    }
}

fn api_unavailable(what: &str, error: kube::Error) -> Denial {
    match error {
        kube::Error::Api(status) if status.code == 403 => Denial::Unavailable(format!(
            "{what} was forbidden: sentry's service account lacks RBAC ({})",
            status.message
        )),
        e => Denial::Unavailable(format!("{what} failed: {e}")),
    }
}

#[async_trait]
impl Validator for KubernetesValidator {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn validate(&self, request: &SignCertificateRequest) -> Result<SpiffeId, Denial> {
        common_checks(request)?;
        if request.token.is_empty() {
            return Err(Denial::Denied(format!(
                "no token was sent; the kubernetes validator needs the pod-bound service-account token with audience {}",
                self.audiences[1]
            )));
        }
        let review = self.review(&request.token).await?;
        if request.namespace != review.namespace {
            return Err(Denial::Denied(format!(
                "the request is for namespace {:?} but the token belongs to namespace {:?}",
                request.namespace, review.namespace
            )));
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &review.namespace);
        let pod = tokio::time::timeout(API_TIMEOUT, pods.get_opt(&review.pod_name))
            .await
            .map_err(|_| Denial::Unavailable("reading the pod timed out".into()))?
            .map_err(|e| api_unavailable("reading the pod", e))?
            .filter(|pod| review.pod_uid.is_none() || pod.metadata.uid == review.pod_uid)
            .ok_or_else(|| {
                Denial::Denied(format!(
                    "pod {}/{} the token is bound to no longer exists",
                    review.namespace, review.pod_name
                ))
            })?;
        let pod_sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        if pod_sa != review.service_account {
            return Err(Denial::Denied(format!(
                "pod {}/{} runs as service account {pod_sa:?} but the token belongs to {:?}",
                review.namespace, review.pod_name, review.service_account
            )));
        }
        let annotations = pod.metadata.annotations.unwrap_or_default();
        let pod_ref = format!("{}/{}", review.namespace, review.pod_name);

        if let Some(component) = annotations.get(names::ANNOTATION_CONTROL_PLANE) {
            if review.namespace != self.control_plane_namespace {
                return Err(Denial::Denied(format!(
                    "pod {pod_ref} is annotated {}={component} but is not in the control-plane namespace {:?}",
                    names::ANNOTATION_CONTROL_PLANE,
                    self.control_plane_namespace
                )));
            }
            if !names::CONTROL_PLANE_COMPONENTS.contains(&component.as_str()) {
                return Err(Denial::Denied(format!(
                    "pod {pod_ref} has unknown {} value {component:?}; expected one of {}",
                    names::ANNOTATION_CONTROL_PLANE,
                    names::CONTROL_PLANE_COMPONENTS.join(", ")
                )));
            }
            if annotations.contains_key(names::ANNOTATION_APP_ID) {
                return Err(Denial::Denied(format!(
                    "control-plane pod {pod_ref} must not also carry {}",
                    names::ANNOTATION_APP_ID
                )));
            }
            let expected = names::control_plane_app_id(component);
            if request.id != expected {
                return Err(Denial::Denied(format!(
                    "app id mismatch: requested {:?} but control-plane pod {pod_ref} is {expected:?}",
                    request.id
                )));
            }
            return spiffe_id(
                &self.control_plane_trust_domain,
                &review.namespace,
                &expected,
            );
        }

        let (expected, source) = match annotations.get(names::ANNOTATION_APP_ID) {
            Some(id) => (
                id.clone(),
                format!("its {} annotation", names::ANNOTATION_APP_ID),
            ),
            None => (
                review.pod_name.clone(),
                "its name (no dapr.io/app-id annotation)".to_owned(),
            ),
        };
        if request.id != expected {
            return Err(Denial::Denied(format!(
                "app id mismatch: requested {:?} but pod {pod_ref} is {expected:?} by {source}",
                request.id
            )));
        }
        let trust_domain = match annotations.get(names::ANNOTATION_CONFIG) {
            Some(config) if !config.is_empty() => {
                self.configuration_trust_domain(&review.namespace, config)
                    .await?
            }
            _ => names::DEFAULT_APP_TRUST_DOMAIN.to_owned(),
        };
        spiffe_id(&trust_domain, &review.namespace, &expected)
    }
}

#[cfg(test)]
mod tests;
