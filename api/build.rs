//! Compiles the `.proto` files daprs owns with the pure-Rust `protox` (no system `protoc`).

const OPERATOR_PROTO: &str = "proto/operator.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: &[&str] = &[
        "proto/sentry.proto",
        OPERATOR_PROTO,
        "proto/common.proto",
        "proto/internals.proto",
    ];
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    // common.v1 on its own first: the pass below refers to it through `extern_path`, which
    // also keeps that pass from generating it.
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_fds(protox::compile(["proto/common.proto"], ["proto"])?)?;
    let descriptors = protox::compile(PROTOS.iter().filter(|p| **p != OPERATOR_PROTO), ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".dapr.proto.common.v1", "crate::proto::common")
        .compile_fds(descriptors)?;
    // The operator API on its own: its calls use the small-buffer codec (one long-lived stream
    // per sidecar connection; see `crate::proto::SmallBufferCodec`).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".dapr.proto.common.v1", "crate::proto::common")
        .codec_path("crate::proto::SmallBufferCodec")
        .compile_fds(protox::compile([OPERATOR_PROTO], ["proto"])?)?;
    Ok(())
}
