//! The `sentry` binary's handling of bad configuration: one line naming the problem, exit 64.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use std::process::Command;

fn sentry(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sentry"))
        .args(args)
        .env_remove("NAMESPACE")
        .envs(env.iter().copied())
        .output()
        .expect("sentry runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_invalid_flag_value_is_one_line_and_exit_64() {
    let (code, stderr) = sentry(&["--mode", "cloud"], &[]);
    assert_eq!(code, 64, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--mode") && stderr.contains("standalone, kubernetes"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_flag_suggests_the_right_one() {
    let (code, stderr) = sentry(&["--trust-domian", "x"], &[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("--trust-domain"), "{stderr}");
}

#[test]
fn kubernetes_mode_without_namespace_says_what_to_set() {
    let (code, stderr) = sentry(&["--mode", "kubernetes"], &[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("NAMESPACE is not set"), "{stderr}");
}

#[test]
fn a_rotation_policy_that_cannot_overlap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = sentry(
        &[
            "--issuer-credentials",
            dir.path().to_str().unwrap(),
            "--ca-rotate-before",
            "1h",
            "--port",
            "0",
            "--healthz-port",
            "0",
            "--metrics-port",
            "0",
        ],
        &[],
    );
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("--ca-rotate-before"), "{stderr}");
}
