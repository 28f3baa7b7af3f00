//! The daprs operator.
#![forbid(unsafe_code)]

pub mod crds;
