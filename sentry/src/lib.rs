//! sentry: the daprs certificate authority.
//!
//! It issues SPIFFE workload certificates (SVIDs) to sidecars and control-plane services after a
//! validator has authenticated the caller, and keeps its own CA alive by rotating it.

pub mod ca;
pub mod config;
pub mod csr;
pub mod rotation;
pub mod store;
pub mod validator;
