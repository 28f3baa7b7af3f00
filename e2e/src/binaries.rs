//! Where etcd, kube-apiserver, kube-controller-manager, kubectl and helm come from.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Result, anyhow, bail};

/// Environment variable naming a directory that already holds the binaries; when it is unset
/// the harness runs `scripts/k8s-binaries.sh`, which builds them into its cache once.
pub const BIN_DIR_ENV: &str = "DAPRS_K8S_BIN";

/// The binaries the harness needs, by file name.
pub const REQUIRED_BINARIES: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "helm",
];

/// The build script, found from this crate's source directory.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/k8s-binaries.sh")
}

/// The directory holding the binaries: `$DAPRS_K8S_BIN`, or what the build script printed.
/// The script runs at most once per process; its progress goes straight to stderr. A failure
/// is an error, never a skip.
pub fn bin_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| locate().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn locate() -> Result<PathBuf> {
    let dir = match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => run_build_script()?,
    };
    let missing: Vec<&str> = REQUIRED_BINARIES
        .iter()
        .copied()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} has no {}; run scripts/k8s-binaries.sh and set {BIN_DIR_ENV} to the directory it prints",
            dir.display(),
            missing.join(", ")
        );
    }
    Ok(dir)
}

fn run_build_script() -> Result<PathBuf> {
    let script = build_script();
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| anyhow!("failed to run {}: {e}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}); its output is above. Fix that, or set {BIN_DIR_ENV} to a directory holding {}",
            script.display(),
            output.status,
            REQUIRED_BINARIES.join(", ")
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    match last {
        Some(dir) => Ok(PathBuf::from(dir.trim())),
        None => bail!("{} printed no directory", script.display()),
    }
}
