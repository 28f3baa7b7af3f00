//! `sentry-client`: asks a sentry for a workload certificate the way a sidecar does, verifies it
//! and prints what it got. Used by the README's demo and handy for checking a deployed sentry.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use daprs_api::proto::sentry::TokenValidator;
use daprs_api::sentry_client::{self, SvidRequest};
use daprs_api::tls::TrustAnchors;

/// Obtain and verify a workload certificate from sentry.
#[derive(Debug, clap::Parser)]
#[command(name = "sentry-client", version)]
struct Args {
    /// sentry's gRPC address (host:port).
    #[arg(long, default_value = "127.0.0.1:50001")]
    sentry_address: String,
    /// PEM file with the trust anchors (sentry's `ca.crt`).
    #[arg(long)]
    trust_anchors: PathBuf,
    /// sentry's SPIFFE id, which its certificate must carry.
    #[arg(long, default_value = "spiffe://localhost/ns/default/dapr-sentry")]
    sentry_id: String,
    /// The app id to ask a certificate for.
    #[arg(long, default_value = "demo-app")]
    app_id: String,
    /// The app's namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// A token file (e.g. a pod-bound service-account token); sends validator KUBERNETES.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Write `cert.pem` and `key.pem` here.
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    daprs_api::tls::install_default_provider();
    let args: Args = daprs_api::cli::parse_or_exit();
    let anchors_pem = std::fs::read(&args.trust_anchors)
        .with_context(|| format!("failed to read {}", args.trust_anchors.display()))?;
    let anchors = TrustAnchors::from_pem(&anchors_pem)?;
    let sentry_id = args.sentry_id.parse()?;
    let channel = sentry_client::sentry_channel(&args.sentry_address, anchors.clone(), sentry_id)?;
    let (token, validator) = match &args.token_file {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("failed to read {}", path.display()))?,
            TokenValidator::Kubernetes,
        ),
        None => (String::new(), TokenValidator::Unknown),
    };
    let issued = sentry_client::request_svid(
        channel,
        &SvidRequest {
            app_id: args.app_id.clone(),
            namespace: args.namespace.clone(),
            token: token.trim().to_owned(),
            validator,
            ..SvidRequest::default()
        },
    )
    .await
    .with_context(|| {
        format!(
            "sentry at {} did not issue a certificate",
            args.sentry_address
        )
    })?;

    // Check the chain ourselves, against the anchors sentry returned.
    let returned = TrustAnchors::from_pem(issued.trust_anchors_pem.as_bytes())?;
    let chain = &issued.svid.chain;
    returned.verify(
        &chain[0],
        &chain[1..],
        rustls::pki_types::UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        &daprs_api::tls::provider().signature_verification_algorithms,
    )?;
    let hours = |t: SystemTime| {
        t.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .as_secs()
            / 3600
    };
    println!("certificate issued by sentry at {}", args.sentry_address);
    println!("  identity:    {}", issued.svid.id);
    println!(
        "  chain:       leaf + {} issuer certificate(s), verified against {} trust anchor(s)",
        chain.len() - 1,
        returned.certificates().len()
    );
    println!(
        "  valid until: {} (in {}h), renew at the midpoint",
        humantime_utc(issued.not_after),
        hours(issued.not_after)
    );
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("cert.pem"), &issued.chain_pem)?;
        std::fs::write(dir.join("key.pem"), &issued.key_pem)?;
        println!("  written to:  {}/cert.pem, key.pem", dir.display());
    }
    Ok(())
}

fn humantime_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| secs.to_string())
}
