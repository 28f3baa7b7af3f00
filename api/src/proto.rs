//! Generated gRPC code for the protocols daprs owns (see `api/proto/`).

/// `dapr.proto.sentry.v1`: the certificate authority.
pub mod sentry {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("dapr.proto.sentry.v1");
}

/// `dapr.proto.operator.v1`: the operator API sidecars load and watch their resources with
/// (Dapr's `Operator` service), plus daprs' `ResourceStatus` reports.
pub mod operator {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("dapr.proto.operator.v1");
}

/// `dapr.proto.common.v1`: the invocation messages sidecars exchange (a subset of Dapr's).
pub mod common {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("dapr.proto.common.v1");
}

/// `dapr.proto.internals.v1`: sidecar-to-sidecar service invocation (`ServiceInvocation`).
pub mod internals {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("dapr.proto.internals.v1");
}
