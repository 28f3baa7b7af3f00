use super::*;
use crate::ca::{IssueRequest, Issued, KeyAlgorithm};
use daprs_api::tls::TrustAnchors;
use rcgen::KeyPair;
use rustls::pki_types::UnixTime;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn generate_options() -> GenerateOptions<'static> {
    GenerateOptions {
        trust_domain: "cluster.local",
        namespace: "dapr-system",
        algorithm: KeyAlgorithm::Ed25519,
        ttl: 10 * HOUR,
        skew: 5 * MINUTE,
    }
}

fn policy() -> RotationPolicy {
    RotationPolicy {
        rotate_before: 3 * HOUR,
        propagation_delay: 20 * MINUTE,
        workload_ttl: HOUR,
        skew: 5 * MINUTE,
    }
}

fn start() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

/// Runs every due step at `now`, as the server's loop does.
fn settle(
    ca: &mut StoredCa,
    now: OffsetDateTime,
    steps: &mut Vec<(OffsetDateTime, Step)>,
) -> Authority {
    loop {
        let authority = Authority::load(&ca.bundle, now).unwrap();
        match advance(ca, &authority, &policy(), &generate_options(), now).unwrap() {
            Some((next, step)) => {
                steps.push((now, step));
                *ca = next;
            }
            None => return authority,
        }
    }
}

fn verifies(anchors_pem: &str, issued: &Issued, at: OffsetDateTime) -> Result<(), String> {
    let anchors = TrustAnchors::from_pem(anchors_pem.as_bytes()).unwrap();
    let chain = daprs_api::tls::certs_from_pem(issued.chain_pem.as_bytes()).unwrap();
    let at = UnixTime::since_unix_epoch(Duration::from_secs(at.unix_timestamp() as u64));
    anchors
        .verify(
            &chain[0],
            &chain[1..],
            at,
            webpki::KeyUsage::server_auth(),
            &daprs_api::tls::provider().signature_verification_algorithms,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn policy_must_keep_trust_overlapping() {
    policy().validate(10 * HOUR).unwrap();
    let too_short = RotationPolicy {
        rotate_before: HOUR,
        ..policy()
    };
    let err = too_short.validate(10 * HOUR).unwrap_err();
    assert!(err.to_string().contains("--ca-rotate-before"), "{err}");
    assert!(
        policy().validate(2 * HOUR).is_err(),
        "longer than the CA lifetime"
    );
}

/// Walks 30 hours (four full rotations) in 5-minute steps. At each step sentry issues a
/// certificate; clients hold the anchors sentry published up to one propagation delay ago.
/// Every certificate must verify, for its whole life, against whatever anchors clients hold.
#[test]
fn every_certificate_verifies_against_the_anchors_clients_hold_across_rotations() {
    let step = 5 * MINUTE;
    let mut now = start();
    let mut ca = StoredCa {
        bundle: crate::ca::generate(&generate_options(), now).unwrap(),
        rotation: Some(RotationState::default()),
    };
    let mut steps = Vec::new();
    // (time, anchors published at that time)
    let mut published: Vec<(OffsetDateTime, String)> = Vec::new();
    let mut issued: Vec<(OffsetDateTime, Issued)> = Vec::new();
    let end = start() + 30 * HOUR;
    while now <= end {
        let authority = settle(&mut ca, now, &mut steps);
        published.push((now, ca.bundle.trust_anchors.clone()));
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = authority
            .issue(
                &IssueRequest {
                    id: &"spiffe://public/ns/default/app".parse().unwrap(),
                    public_key: &key,
                    dns_names: &[],
                    ttl: policy().workload_ttl,
                    skew: policy().skew,
                },
                now,
            )
            .unwrap();
        issued.push((now, cert));
        now += step;
    }

    let anchors_at = |t: OffsetDateTime| -> &str {
        &published
            .iter()
            .rev()
            .find(|(p, _)| *p <= t)
            .expect("published")
            .1
    };
    let lag = policy().propagation_delay;
    let mut checks = 0;
    for (issued_at, cert) in &issued {
        let mut at = *issued_at;
        while at < cert.not_after && at <= end {
            for held_since in [at, at - lag] {
                let held = anchors_at(held_since.max(start()));
                verifies(held, cert, at).unwrap_or_else(|e| {
                    panic!("certificate issued at {issued_at} fails at {at} with anchors from {held_since}: {e}\nsteps: {steps:#?}")
                });
                checks += 1;
            }
            at += step;
        }
    }
    assert!(checks > 1000, "{checks}");

    // A CA lives 10h and rotates 3h before expiry: rotations start at 7h, 14h, 21h and 28h.
    // Four complete rotations happened, in order, and the anchors shrank back to one root.
    let kinds: Vec<_> = steps
        .iter()
        .map(|(_, s)| match s {
            Step::PublishedNewRoot { .. } => 'P',
            Step::SwitchedIssuer => 'S',
            Step::RetiredRoots { .. } => 'R',
        })
        .collect();
    assert_eq!(
        kinds.iter().collect::<String>(),
        "PSR".repeat(4),
        "{steps:#?}"
    );
    assert!(ca.bundle.trust_anchors.matches("BEGIN CERTIFICATE").count() == 1);
    // The switch waited for the propagation delay; the retirement for TTL + skew.
    assert_eq!(steps[1].0 - steps[0].0, lag);
    assert_eq!(
        steps[2].0 - steps[1].0,
        policy().workload_ttl + policy().skew
    );
}

#[test]
fn retirement_keeps_the_new_root_and_state_round_trips_as_json() {
    let now = start();
    let mut ca = StoredCa {
        bundle: crate::ca::generate(&generate_options(), now).unwrap(),
        rotation: Some(RotationState::default()),
    };
    let mut steps = Vec::new();
    settle(&mut ca, now + 7 * HOUR + MINUTE, &mut steps);
    assert!(matches!(steps[0].1, Step::PublishedNewRoot { .. }));
    assert_eq!(
        ca.bundle.trust_anchors.matches("BEGIN CERTIFICATE").count(),
        2
    );
    let json = serde_json::to_string(ca.rotation.as_ref().unwrap()).unwrap();
    let back: RotationState = serde_json::from_str(&json).unwrap();
    assert_eq!(Some(back), ca.rotation);
}

#[test]
fn a_user_supplied_ca_is_never_rotated() {
    let now = start();
    let ca = StoredCa {
        bundle: crate::ca::generate(&generate_options(), now).unwrap(),
        rotation: None,
    };
    let late = now + 9 * HOUR;
    let authority = Authority::load(&ca.bundle, late).unwrap();
    assert_eq!(
        advance(&ca, &authority, &policy(), &generate_options(), late).unwrap(),
        None
    );
}

/// sentry comes back from downtime 3 minutes before its CA expires: it publishes the new root
/// and, with no time left to wait for propagation, switches at once.
#[test]
fn a_ca_about_to_expire_switches_without_waiting() {
    let now = start();
    let mut ca = StoredCa {
        bundle: crate::ca::generate(&generate_options(), now).unwrap(),
        rotation: Some(RotationState::default()),
    };
    let mut steps = Vec::new();
    let late = now + 10 * HOUR - 3 * MINUTE;
    settle(&mut ca, late, &mut steps);
    let kinds: Vec<_> = steps.iter().map(|(_, s)| s.clone()).collect();
    assert!(
        matches!(
            kinds[..],
            [Step::PublishedNewRoot { .. }, Step::SwitchedIssuer]
        ),
        "{kinds:?}"
    );
    let retiring = &ca.rotation.as_ref().unwrap().retiring;
    assert_eq!(
        retiring[0].after,
        now + 10 * HOUR + policy().skew,
        "old root kept until it expires"
    );
}

#[test]
fn promote_pending_signs_with_the_waiting_issuer() {
    let now = start();
    let mut ca = StoredCa {
        bundle: crate::ca::generate(&generate_options(), now).unwrap(),
        rotation: Some(RotationState::default()),
    };
    let mut steps = Vec::new();
    settle(&mut ca, now + 7 * HOUR + MINUTE, &mut steps);
    let pending = ca.rotation.as_ref().unwrap().pending.clone().unwrap();
    let promoted = ca.promote_pending().unwrap();
    assert_eq!(promoted.bundle.issuer_chain, pending.issuer_chain);
    assert_eq!(
        promoted
            .bundle
            .trust_anchors
            .matches("BEGIN CERTIFICATE")
            .count(),
        1
    );
    assert!(promoted.bookkeeping_matches());
    Authority::load(&promoted.bundle, now + 11 * HOUR).unwrap();
}
