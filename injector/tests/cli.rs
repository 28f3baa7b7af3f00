//! The `injector` binary: bad flags and bad files are one line and exit 64.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn injector(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_injector"))
        .args(args)
        .env_remove("NAMESPACE")
        .env_remove("SIDECAR_IMAGE")
        .output()
        .unwrap()
}

#[test]
fn bad_flags_are_one_line_and_exit_64() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--namespace", "x"],
            "required arguments were not provided",
        ),
        (
            &[
                "--namespace",
                "x",
                "--sidecar-image",
                "d",
                "--sidecar-image-pull-policy",
                "Sometimes",
            ],
            "allowed: Always, IfNotPresent, Never",
        ),
        (
            &[
                "--namespace",
                "x",
                "--sidecar-image",
                "d",
                "--allowed-service-accounts",
                "nocolon",
            ],
            "exactly one ':'",
        ),
        (
            &["--namespace", "x", "--sidecar-image", "d", "--prot", "1"],
            "did you mean --port",
        ),
    ];
    for (args, needle) in cases {
        let out = injector(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn unreadable_certificate_files_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let out = injector(&[
        "--mode",
        "standalone",
        "--namespace",
        "x",
        "--sidecar-image",
        "d",
        "--port",
        "0",
        "--healthz-port",
        "0",
        "--metrics-port",
        "0",
        "--tls-cert-file",
        missing,
        "--tls-key-file",
        missing,
    ]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("--tls-cert-file") && stderr.contains("missing.pem"),
        "{stderr}"
    );
}
