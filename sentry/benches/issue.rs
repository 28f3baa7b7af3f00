//! Certificates issued per second on one core: CSR parsing and signature verification plus
//! signing, as sentry does for every `SignCertificate` (no network, no validator).
//!
//! `cargo bench -p daprs-sentry --bench issue`

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use daprs_sentry::ca::{self, Authority, GenerateOptions, IssueRequest, KeyAlgorithm};
use daprs_sentry::csr;

fn bench_issue(c: &mut Criterion) {
    let now = time::OffsetDateTime::now_utc();
    let id = "spiffe://public/ns/default/orders".parse().unwrap();
    let (_, csr_pem) = daprs_api::sentry_client::new_key_and_csr().unwrap();
    let mut group = c.benchmark_group("issue");
    group.throughput(Throughput::Elements(1));
    for algorithm in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256] {
        let bundle = ca::generate(
            &GenerateOptions {
                trust_domain: "cluster.local",
                namespace: "dapr-system",
                algorithm,
                ttl: Duration::from_secs(365 * 86_400),
                skew: Duration::from_secs(900),
            },
            now,
        )
        .unwrap();
        let authority = Authority::load(&bundle, now).unwrap();
        group.bench_function(format!("{algorithm:?} issuer, Ed25519 CSR"), |b| {
            b.iter(|| {
                let verified = csr::verify_pem(csr_pem.as_bytes()).unwrap();
                authority
                    .issue(
                        &IssueRequest {
                            id: &id,
                            public_key: &verified.public_key,
                            dns_names: &[],
                            ttl: Duration::from_secs(86_400),
                            skew: Duration::from_secs(900),
                        },
                        now,
                    )
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_issue);
criterion_main!(benches);
