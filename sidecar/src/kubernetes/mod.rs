//! Kubernetes mode (`--mode kubernetes`): the sidecar's identity from sentry, and its
//! resources from the operator (Dapr's `dapr.proto.operator.v1.Operator` over mutual TLS).
//!
//! Boot, as daprd does it: SVID ([`crate::identity`]) → operator client ([`client`]) →
//! `GetConfiguration` (the `--config` name; none means the default Configuration) →
//! `ListComponents` and the kinds kept inert (`ListResiliency`, `ListHTTPEndpoints`,
//! `ListSubscriptionsV2`) → load, report each component's result to the operator →
//! update streams ([`sync`]), with reconnects, resyncs and per-component hot reload.
//!
//! Subscriptions, Resiliency policies and HTTPEndpoints are fetched and kept
//! ([`resources::KeptResources`]) but have no effect yet: the building blocks that use them
//! are not implemented. A changed Configuration is kept and takes effect at the next start.

pub mod client;
pub mod resources;
pub mod sync;

use std::future::Future;
use std::time::Duration;

use daprs_api::crd::{Configuration, ConfigurationSpec};

use crate::components::ComponentError;
pub use client::{OperatorClient, OperatorTarget};
pub use sync::Sync;

/// How long start-up keeps retrying an operator that is unreachable (Dapr: 100 × 5 s).
pub const BOOT_RETRY_FOR: Duration = Duration::from_secs(120);

/// What failed in kubernetes mode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("the operator refused {rpc} ({code:?}): {message}")]
    Call {
        rpc: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("the operator closed the {0} stream")]
    StreamEnded(&'static str),
    #[error("the operator sent an unusable Configuration {name:?}: {message}")]
    Configuration { name: String, message: String },
    #[error("failed to load components: {0}")]
    Components(#[source] ComponentError),
}

impl Error {
    /// Worth retrying: the operator is not (yet) reachable or answering.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Call {
                code: tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Aborted
                    | tonic::Code::ResourceExhausted,
                ..
            }
        )
    }
}

/// Retries `call` with backoff while its error is transient, for up to [`BOOT_RETRY_FOR`].
pub async fn retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline = tokio::time::Instant::now() + BOOT_RETRY_FOR;
    let mut backoff = sync::Backoff::default();
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_transient() && tokio::time::Instant::now() < deadline => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "{what}: the operator is not reachable yet; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The app's Configuration from the operator: `name` empty means Dapr's default (an empty
/// spec). Unreachable → retried; not found or unreadable → an error naming it.
pub async fn fetch_configuration(
    client: &OperatorClient,
    name: &str,
) -> Result<(ConfigurationSpec, Option<serde_json::Value>), Error> {
    if name.is_empty() {
        return Ok((ConfigurationSpec::default(), None));
    }
    let bytes = retry("GetConfiguration", || client.get_configuration(name)).await?;
    if bytes.is_empty() {
        return Err(Error::Configuration {
            name: name.to_owned(),
            message: "the operator returned nothing".into(),
        });
    }
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::Configuration {
            name: name.to_owned(),
            message: format!("not JSON: {e}"),
        })?;
    let configuration: Configuration =
        serde_json::from_value(value.clone()).map_err(|e| Error::Configuration {
            name: name.to_owned(),
            message: e.to_string(),
        })?;
    Ok((configuration.spec, Some(value)))
}
