//! The operator client: one HTTP/2 channel over mutual TLS (the sidecar's SVID; the server must
//! be `spiffe://<control-plane-td>/ns/<control-plane-ns>/dapr-operator` under the trust
//! anchors), the List calls, the update streams and daprs' status reports.

use std::time::Duration;

use daprs_api::SpiffeId;
use daprs_api::proto::operator::operator_client::OperatorClient as Grpc;
use daprs_api::proto::operator::resource_status_client::ResourceStatusClient;
use daprs_api::proto::operator::*;
use daprs_api::sentry_client;
use daprs_api::tls::{self, PeerMatcher, SpiffeServerVerifier, SvidResolver, TrustAnchors};
use tonic::Streaming;
use tonic::transport::Channel;

use super::Error;

/// Longest a unary call to the operator may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the operator is and how it is recognised.
#[derive(Clone, Debug)]
pub struct OperatorTarget {
    /// `host:port`.
    pub address: String,
    pub control_plane_trust_domain: String,
    pub control_plane_namespace: String,
}

impl OperatorTarget {
    /// The identity the operator must present.
    pub fn operator_id(&self) -> Result<SpiffeId, Error> {
        SpiffeId::new(
            &self.control_plane_trust_domain,
            &self.control_plane_namespace,
            daprs_api::names::OPERATOR_APP_ID,
        )
        .map_err(|e| {
            Error::Config(format!(
                "--control-plane-trust-domain {:?} / --control-plane-namespace {:?}: {e}",
                self.control_plane_trust_domain, self.control_plane_namespace
            ))
        })
    }
}

/// A connection to the operator for one app in one namespace. Cheap to clone.
#[derive(Clone)]
pub struct OperatorClient {
    channel: Channel,
    /// The app's namespace: every request names it (the operator checks it is the caller's).
    pub namespace: String,
}

fn call_error(rpc: &'static str) -> impl Fn(tonic::Status) -> Error {
    move |status| Error::Call {
        rpc,
        code: status.code(),
        message: status.message().to_owned(),
    }
}

impl OperatorClient {
    /// A lazily connecting channel to `target`, presenting `svid` and verifying the operator
    /// against `anchors` (both swappable at run time: renewals and rotated roots are used by
    /// the next handshake).
    pub fn new(
        target: &OperatorTarget,
        anchors: TrustAnchors,
        svid: SvidResolver,
        namespace: &str,
    ) -> Result<Self, Error> {
        let verifier =
            SpiffeServerVerifier::new(anchors, PeerMatcher::Exact(target.operator_id()?));
        let config = tls::client_config(verifier, Some(svid))
            .map_err(|e| Error::Config(format!("operator TLS: {e}")))?;
        let channel = sentry_client::tls_channel(&target.address, config).map_err(|e| {
            Error::Config(format!("--control-plane-address {:?}: {e}", target.address))
        })?;
        Ok(Self {
            channel,
            namespace: namespace.to_owned(),
        })
    }

    fn grpc(&self) -> Grpc<Channel> {
        Grpc::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    fn request<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(CALL_TIMEOUT);
        request
    }

    /// `GetConfiguration`: the JSON of the named Configuration.
    pub async fn get_configuration(&self, name: &str) -> Result<Vec<u8>, Error> {
        let response = self
            .grpc()
            .get_configuration(Self::request(GetConfigurationRequest {
                name: name.to_owned(),
                namespace: self.namespace.clone(),
            }))
            .await
            .map_err(call_error("GetConfiguration"))?;
        Ok(response.into_inner().configuration)
    }

    /// `ListComponents`: the Components in the app's scope, secrets inlined.
    pub async fn list_components(&self) -> Result<Vec<Vec<u8>>, Error> {
        let response = self
            .grpc()
            .list_components(Self::request(ListComponentsRequest {
                namespace: self.namespace.clone(),
            }))
            .await
            .map_err(call_error("ListComponents"))?;
        Ok(response.into_inner().components)
    }

    /// `ListSubscriptionsV2`. Old operators answer "Marshal called with nil" when there are
    /// none; Dapr treats that as empty, and so do we.
    pub async fn list_subscriptions(&self) -> Result<Vec<Vec<u8>>, Error> {
        match self
            .grpc()
            .list_subscriptions_v2(Self::request(ListSubscriptionsRequest {
                namespace: self.namespace.clone(),
            }))
            .await
        {
            Ok(response) => Ok(response.into_inner().subscriptions),
            Err(status) if status.message().ends_with("Marshal called with nil") => Ok(Vec::new()),
            Err(status) => Err(call_error("ListSubscriptionsV2")(status)),
        }
    }

    /// `ListResiliency` (not scope-filtered by the operator).
    pub async fn list_resiliency(&self) -> Result<Vec<Vec<u8>>, Error> {
        let response = self
            .grpc()
            .list_resiliency(Self::request(ListResiliencyRequest {
                namespace: self.namespace.clone(),
            }))
            .await
            .map_err(call_error("ListResiliency"))?;
        Ok(response.into_inner().resiliencies)
    }

    /// `ListHTTPEndpoints` (not scope-filtered by the operator; secrets inlined).
    pub async fn list_http_endpoints(&self) -> Result<Vec<Vec<u8>>, Error> {
        let response = self
            .grpc()
            .list_http_endpoints(Self::request(ListHttpEndpointsRequest {
                namespace: self.namespace.clone(),
            }))
            .await
            .map_err(call_error("ListHTTPEndpoints"))?;
        Ok(response.into_inner().http_endpoints)
    }

    pub async fn component_updates(&self) -> Result<Streaming<ComponentUpdateEvent>, Error> {
        Ok(self
            .grpc()
            .component_update(ComponentUpdateRequest {
                namespace: self.namespace.clone(),
            })
            .await
            .map_err(call_error("ComponentUpdate"))?
            .into_inner())
    }

    pub async fn subscription_updates(&self) -> Result<Streaming<SubscriptionUpdateEvent>, Error> {
        Ok(self
            .grpc()
            .subscription_update(SubscriptionUpdateRequest {
                namespace: self.namespace.clone(),
            })
            .await
            .map_err(call_error("SubscriptionUpdate"))?
            .into_inner())
    }

    pub async fn resiliency_updates(&self) -> Result<Streaming<ResiliencyUpdateEvent>, Error> {
        Ok(self
            .grpc()
            .resiliency_update(ResiliencyUpdateRequest {
                namespace: self.namespace.clone(),
            })
            .await
            .map_err(call_error("ResiliencyUpdate"))?
            .into_inner())
    }

    pub async fn http_endpoint_updates(&self) -> Result<Streaming<HttpEndpointUpdateEvent>, Error> {
        Ok(self
            .grpc()
            .http_endpoint_update(HttpEndpointUpdateRequest {
                namespace: self.namespace.clone(),
            })
            .await
            .map_err(call_error("HTTPEndpointUpdate"))?
            .into_inner())
    }

    /// `ConfigurationUpdate`; `None` when the operator does not implement it (Dapr tolerates
    /// that too).
    pub async fn configuration_updates(
        &self,
    ) -> Result<Option<Streaming<ConfigurationUpdateEvent>>, Error> {
        match self
            .grpc()
            .configuration_update(ConfigurationUpdateRequest {
                namespace: self.namespace.clone(),
            })
            .await
        {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
            Err(status) => Err(call_error("ConfigurationUpdate")(status)),
        }
    }

    /// daprs' `ResourceStatus.ReportResources`; returns the results the operator rejected,
    /// with why. `Unimplemented` means a Dapr operator, which has no status to write.
    pub async fn report(&self, results: Vec<ResourceResult>) -> Result<Vec<String>, Error> {
        let response = ResourceStatusClient::new(self.channel.clone())
            .report_resources(Self::request(ReportResourcesRequest {
                namespace: self.namespace.clone(),
                results,
            }))
            .await
            .map_err(call_error("ReportResources"))?;
        Ok(response.into_inner().rejected)
    }
}
