//! The real Dapr daprd, for interoperability tests (included by the tests that use it, with
//! `#[path = "support/dapr.rs"] mod dapr_binary;`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The real Dapr daprd: `DAPRS_DAPR_DAPRD`, else built (or found in the cache) by
/// `scripts/dapr-daprd.sh`.
pub fn dapr_daprd() -> PathBuf {
    if let Some(path) = std::env::var_os("DAPRS_DAPR_DAPRD").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/dapr-daprd.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed; it builds Dapr's daprd from the Go module proxy (see its output above)",
        script.display()
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().unwrap().trim())
}
