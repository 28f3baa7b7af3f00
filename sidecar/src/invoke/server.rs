//! The internal API's calls, `dapr.proto.internals.v1.ServiceInvocation`'s `CallLocalStream`
//! and `CallLocal`, as the callee's sidecar answers them: each call is checked against the ACL
//! with the caller's SPIFFE id from its client certificate, then handed to the app. The
//! internal port's server, which decodes the requests and sends the answers, is in
//! [`serve`](super::serve): mutual TLS when the sidecar has an identity (failing closed until
//! the first certificate), plaintext h2c otherwise.

use std::sync::Arc;

use daprs_api::SpiffeId;
use daprs_api::proto::common::InvokeResponse;
use daprs_api::proto::internals::{
    ApiVersion, InternalInvokeRequest, InternalInvokeRequestStream, InternalInvokeResponse,
    InternalInvokeResponseStream, Status as InternalStatus,
};
use tonic::Status;

use super::acl::Decision;
use super::app::{AppRequest, AppResponse, verb_name};
use super::{CHUNK_BYTES, Invoker};

/// The `ServiceInvocation` calls.
#[derive(Clone, Debug)]
pub struct Internal {
    invoker: Arc<Invoker>,
}

impl Internal {
    pub fn new(invoker: Arc<Invoker>) -> Self {
        Internal { invoker }
    }

    /// Whether an ACL is configured, so the caller's SPIFFE id is needed.
    pub fn acl_configured(&self) -> bool {
        self.invoker.acl.is_configured()
    }

    /// `CallLocalStream` on its decoded request messages; the response's messages, encoded.
    pub async fn call_local_stream(
        &self,
        caller: Option<SpiffeId>,
        messages: Vec<InternalInvokeRequestStream>,
    ) -> Result<bytes::Bytes, Status> {
        let mut messages = messages.into_iter();
        let first = messages
            .next()
            .ok_or_else(|| Status::invalid_argument("the stream carried no request"))?;
        let header = first
            .request
            .ok_or_else(|| Status::invalid_argument("the first message carries no request"))?;
        let payloads = std::iter::once(first.payload).chain(messages.map(|m| m.payload));
        let mut chunks = Vec::new();
        for (expected, p) in payloads.flatten().enumerate() {
            if p.seq != expected as u64 {
                return Err(Status::invalid_argument(format!(
                    "payload chunk {} arrived where {expected} was expected",
                    p.seq
                )));
            }
            chunks.push(p.data);
        }
        // One chunk (a body up to 2 KB) is taken as it is, more are joined.
        let body = match chunks.len() {
            0 => bytes::Bytes::new(),
            1 => chunks.swap_remove(0).into(),
            _ => chunks.concat().into(),
        };
        let mut response = self.handle(caller, header, body).await?;
        let header = response_header(&mut response, false);
        let mut payloads = super::payloads(&response.body);
        let mut messages = Vec::with_capacity(response.body.len() / CHUNK_BYTES + 1);
        messages.push(InternalInvokeResponseStream {
            response: Some(header),
            payload: payloads.next(),
        });
        messages.extend(payloads.map(|p| InternalInvokeResponseStream {
            response: None,
            payload: Some(p),
        }));
        Ok(daprs_api::grpc_frame::encode(&messages))
    }

    /// `CallLocal` on its decoded request; the response message, encoded.
    pub async fn call_local(
        &self,
        caller: Option<SpiffeId>,
        request: InternalInvokeRequest,
    ) -> Result<bytes::Bytes, Status> {
        let mut response = self.handle(caller, request, bytes::Bytes::new()).await?;
        Ok(daprs_api::grpc_frame::encode(&[response_header(
            &mut response,
            true,
        )]))
    }

    async fn handle(
        &self,
        caller: Option<SpiffeId>,
        request: InternalInvokeRequest,
        body: bytes::Bytes,
    ) -> Result<AppResponse, Status> {
        if request.ver != ApiVersion::V1 as i32 {
            return Err(Status::invalid_argument(format!(
                "unsupported internal API version {}; expected V1",
                request.ver
            )));
        }
        let message = request.message.unwrap_or_default();
        let ext = message.http_extension.unwrap_or_default();
        let verb = verb_name(ext.verb);
        let http_app = !matches!(self.invoker.app.protocol().as_str(), "grpc" | "grpcs");
        let caller_app = request
            .metadata
            .get("dapr-caller-app-id")
            .and_then(|v| v.values.first())
            .cloned()
            .unwrap_or_default();
        self.invoker.metrics.inc(
            "dapr_runtime_service_invocation_req_recv_total",
            &[
                ("src_app_id", caller_app.as_str()),
                ("method", message.method.as_str()),
            ],
        );
        if self.invoker.acl.is_configured() {
            let acl_verb = if http_app {
                Some(verb.unwrap_or("POST"))
            } else {
                None
            };
            match self
                .invoker
                .acl
                .check(caller.as_ref(), &message.method, acl_verb)
            {
                Decision::Allow => {
                    self.invoker.metrics.inc(
                        "dapr_runtime_acl_app_policy_action_allowed_total",
                        &[("src_app_id", caller_app.as_str())],
                    );
                }
                Decision::Deny(why) => {
                    self.invoker.metrics.inc(
                        "dapr_runtime_acl_app_policy_action_blocked_total",
                        &[("src_app_id", caller_app.as_str())],
                    );
                    tracing::info!(caller = ?caller.as_ref().map(|c| c.to_string()), method = %message.method, "{why}");
                    return Err(Status::permission_denied(why));
                }
            }
        }
        let body = if body.is_empty() {
            message
                .data
                .map(|d| bytes::Bytes::from(d.value))
                .unwrap_or_default()
        } else {
            body
        };
        let response = self
            .invoker
            .app
            .call(AppRequest {
                method: message.method,
                verb: verb.map(str::to_owned),
                query: ext.querystring,
                metadata: request.metadata,
                body,
                content_type: message.content_type,
            })
            .await;
        let status = match &response {
            Ok(r) => r.status.to_string(),
            Err(_) => "error".into(),
        };
        self.invoker.metrics.inc(
            "dapr_runtime_service_invocation_res_sent_total",
            &[
                ("src_app_id", caller_app.as_str()),
                ("status", status.as_str()),
            ],
        );
        response.map_err(|e| match e {
            super::app::AppError::Unhealthy => Status::unavailable(e.to_string()),
            e => Status::internal(e.to_string()),
        })
    }
}

/// The internal response's header part: the status, headers, trailers and content type are
/// moved out of `r` (its body stays, for the stream's chunks); the body too with `with_data`.
fn response_header(r: &mut AppResponse, with_data: bool) -> InternalInvokeResponse {
    InternalInvokeResponse {
        status: Some(InternalStatus {
            code: r.status,
            message: std::mem::take(&mut r.message),
            details: Vec::new(),
        }),
        headers: std::mem::take(&mut r.headers),
        trailers: std::mem::take(&mut r.trailers),
        message: Some(InvokeResponse {
            data: with_data.then(|| prost_types::Any {
                type_url: String::new(),
                value: r.body.to_vec(),
            }),
            content_type: std::mem::take(&mut r.content_type),
        }),
    }
}
