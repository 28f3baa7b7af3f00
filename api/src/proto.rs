//! Generated gRPC code for the protocols daprs owns (see `api/proto/`).

/// `dapr.proto.sentry.v1`: the certificate authority.
pub mod sentry {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("dapr.proto.sentry.v1");
}
