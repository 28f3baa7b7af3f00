//! `daprs-api`: the contract shared by every daprs component.
//!
//! - [`crd`]: the Dapr resource types (Component, Configuration, Subscription, ...).
//! - [`spiffe`]: SPIFFE ids (`spiffe://<td>/ns/<ns>/<app-id>`).
//! - [`proto`]: the gRPC definitions daprs owns, compiled from `api/proto/`.
//! - [`tls`]: rustls configurations that serve an SVID and verify peers by SPIFFE id.
//! - [`grpc_frame`]: gRPC's 5-byte message framing, for servers and clients written without tonic's codec.
//! - [`names`]: well-known names, ports and identities shared by the control plane and sidecars.

pub mod annotations;
pub mod cli;
pub mod crd;
pub mod duration;
pub mod grpc_frame;
pub mod names;
pub mod proto;
pub mod sentry_client;
pub mod spiffe;
pub mod tls;

pub use spiffe::{SpiffeId, SpiffeIdError};
