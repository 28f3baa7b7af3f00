//! The workspace's own binaries (sentry, operator, injector, daprd) for tests that run them as
//! processes, found next to the running test binary in Cargo's target directory.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// `target/<profile>/<name>` of the running test binary's build. `cargo test --workspace`
/// builds every workspace binary before running tests; `cargo test -p daprs-e2e` does not, so
/// a missing binary fails with the command that builds it.
pub fn workspace_binary(name: &str, package: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = profile_dir.join(name);
    if !path.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build -p {package} --bin {name}` (cargo test --workspace builds it)",
            path.display()
        );
    }
    Ok(path)
}
