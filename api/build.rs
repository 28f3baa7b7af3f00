//! Compiles the `.proto` files daprs owns with the pure-Rust `protox` (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: &[&str] = &[
        "proto/sentry.proto",
        "proto/operator.proto",
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
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".dapr.proto.common.v1", "crate::proto::common")
        .compile_fds(descriptors)?;
    Ok(())
}
