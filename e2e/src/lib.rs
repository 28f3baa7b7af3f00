//! A real Kubernetes control plane for end-to-end tests: etcd, kube-apiserver and
//! kube-controller-manager built from their Go modules (`scripts/k8s-binaries.sh`) and run as
//! local processes on loopback, with kubectl and helm beside them. There is no kubelet: pods
//! are admitted and stored but never run, and [`RunPod`] runs a container of one as a local
//! process the way a kubelet would for our purposes.
//!
//! ```no_run
//! use daprs_e2e::with_temp_ns;
//! use k8s_openapi::api::core::v1::ConfigMap;
//!
//! #[tokio::test]
//! async fn a_configmap_is_accepted() {
//!     with_temp_ns(|_client, ns| async move {
//!         let cm: ConfigMap = serde_json::from_value(serde_json::json!({
//!             "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}
//!         })).unwrap();
//!         ns.accepts(&cm).await;
//!     })
//!     .await;
//! }
//! ```
//!
//! See `e2e/README.md` for how it works, the cache and `cargo run -p daprs-e2e --bin cluster -- up`.

pub mod binaries;
mod cluster;
mod daprd;
mod kubectl;
mod namespace;
mod pki;
mod pod;
mod process;
mod redis;
mod sentry;
mod tokens;
pub mod workspace;

pub use cluster::{Cluster, Connection, KEEP_DIR_ENV, SERVICE_ACCOUNT_ISSUER};
pub use daprd::{Daprd, echo_app, has_component};
pub use kubectl::{eventually, kubectl, kubectl_raw};
pub use namespace::{TEMP_NS_LABEL, TempNs, with_temp_ns};
pub use pki::CertifiedKey;
pub use pod::{PodProcess, RunPod};
pub use redis::Redis;
pub use sentry::start_sentry;
pub use tokens::{DEFAULT_TOKEN_EXPIRATION_SECONDS, bound_token_claims, pod_service_account};
