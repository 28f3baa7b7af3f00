//! The `dapr.proto.sentry.v1.CA` gRPC service: validate, parse the CSR, sign.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use daprs_api::SpiffeId;
use daprs_api::names;
use daprs_api::proto::sentry::ca_server::Ca;
use daprs_api::proto::sentry::{SignCertificateRequest, SignCertificateResponse};
use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use crate::ca::{Authority, IssueRequest};
use crate::csr;
use crate::metrics::Metrics;
use crate::validator::{Denial, Validators};

/// Lifetimes applied to every workload certificate.
#[derive(Clone, Debug)]
pub struct IssuePolicy {
    pub workload_ttl: Duration,
    pub skew: Duration,
    pub control_plane_namespace: String,
    pub control_plane_trust_domain: String,
    pub cluster_domain: String,
}

/// The CA currently used for signing; swapped by the CA manager without blocking requests.
#[derive(Clone, Default)]
pub struct CurrentAuthority(Arc<RwLock<Option<Arc<Authority>>>>);

impl std::fmt::Debug for CurrentAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CurrentAuthority")
            .field(&self.get().is_some())
            .finish()
    }
}

impl CurrentAuthority {
    pub fn get(&self) -> Option<Arc<Authority>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, authority: Arc<Authority>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(authority);
    }
}

/// The gRPC service.
#[derive(Debug)]
pub struct CaService {
    pub authority: CurrentAuthority,
    pub validators: Validators,
    pub policy: IssuePolicy,
    pub metrics: Arc<Metrics>,
}

impl CaService {
    /// DNS names for control-plane ids in the control-plane namespace and trust domain.
    fn dns_names(&self, id: &SpiffeId) -> Vec<String> {
        let p = &self.policy;
        if id.namespace() == p.control_plane_namespace
            && id.trust_domain() == p.control_plane_trust_domain
        {
            names::control_plane_dns_names(id.app_id(), id.namespace(), &p.cluster_domain)
        } else {
            Vec::new()
        }
    }

    async fn sign(
        &self,
        request: &SignCertificateRequest,
    ) -> Result<SignCertificateResponse, (Status, &'static str)> {
        let denial = |d: Denial| match d {
            Denial::Invalid(m) => (Status::invalid_argument(m), "bad_request"),
            Denial::Denied(m) => (Status::permission_denied(m), "validation"),
            Denial::Unavailable(m) => (Status::unavailable(m), "unavailable"),
        };
        let validator = self
            .validators
            .select(request.token_validator)
            .map_err(denial)?;
        let id = validator.validate(request).await.map_err(denial)?;
        if id.app_id() == names::SENTRY_APP_ID
            && id.namespace() == self.policy.control_plane_namespace
        {
            // Clients pin sentry by this id; it is never handed out.
            return Err((
                Status::permission_denied("sentry's own identity is never issued to clients"),
                "validation",
            ));
        }
        let verified = csr::verify_pem(&request.certificate_signing_request)
            .map_err(|e| (Status::invalid_argument(e.to_string()), "bad_request"))?;
        let authority = self.authority.get().ok_or_else(|| {
            (
                Status::unavailable("sentry has not loaded its CA yet; retry shortly"),
                "unavailable",
            )
        })?;
        let dns_names = self.dns_names(&id);
        let issued = authority
            .issue(
                &IssueRequest {
                    id: &id,
                    public_key: &verified.public_key,
                    dns_names: &dns_names,
                    ttl: self.policy.workload_ttl,
                    skew: self.policy.skew,
                },
                OffsetDateTime::now_utc(),
            )
            .map_err(|e| (Status::internal(e.to_string()), "sign"))?;
        if issued.capped {
            tracing::warn!(%id, not_after = %issued.not_after, "certificate lifetime capped at the issuer's expiry");
        }
        tracing::info!(%id, validator = validator.name(), not_after = %issued.not_after, "certificate issued");
        Ok(SignCertificateResponse {
            workload_certificate: issued.chain_pem.into_bytes(),
            trust_chain_certificates: vec![authority.trust_anchors_pem().as_bytes().to_vec()],
            valid_until: Some(prost_types::Timestamp {
                seconds: issued.not_after.unix_timestamp(),
                nanos: 0,
            }),
            jwt: None,
            per_audience_jwts: Default::default(),
        })
    }
}

#[tonic::async_trait]
impl Ca for CaService {
    async fn sign_certificate(
        &self,
        request: Request<SignCertificateRequest>,
    ) -> Result<Response<SignCertificateResponse>, Status> {
        self.metrics.sign_requests.inc();
        let request = request.into_inner();
        match self.sign(&request).await {
            Ok(response) => {
                self.metrics.sign_success.inc();
                Ok(Response::new(response))
            }
            Err((status, reason)) => {
                self.metrics.failure(reason);
                // The message names the failed check; tokens and CSRs are never logged.
                tracing::warn!(
                    app_id = %request.id,
                    namespace = %request.namespace,
                    code = ?status.code(),
                    reason = status.message(),
                    "certificate request refused"
                );
                Err(status)
            }
        }
    }
}
