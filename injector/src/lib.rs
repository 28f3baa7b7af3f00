//! daprs-injector: the sidecar injector, a mutating admission webhook that adds `daprd` to
//! pods annotated `dapr.io/enabled: "true"`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admission;
pub mod config;
pub mod glob;
pub mod mutate;
pub mod patch;
pub mod sidecar;
pub mod values;
