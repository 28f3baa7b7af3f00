//! Build-script helper: link a binary with its functions in a recorded order.
//!
//! `link-order/<binary>.txt` lists the functions a binary ran at start-up and under a typical
//! load (recorded by `scripts/link-order.sh`). Linked first and side by side, those functions
//! fill a few contiguous pages of `.text` instead of being spread over all of it, so the
//! kernel maps (and the process counts in its RSS) far fewer code pages: daprd's idle RSS
//! drops from 7.8 to 3.5 MB (docs/performance.md).
//!
//! The order needs rust-lld (`--symbol-ordering-file`); it ships with every rustup toolchain,
//! and `cc` is pointed at it with `-fuse-ld=lld` and its `gcc-ld` wrapper directory. Without
//! it, or on another OS, the binary links as usual (a warning says so): the order changes
//! only where code sits, never what it does. Names in the file that the binary does not
//! define (another profile or target, or code changed since it was recorded) are ignored;
//! `scripts/test.sh` reports how many still match the shipped build.
//!
//! Included by `sidecar/build.rs` and `operator/build.rs` with `#[path]`.

use std::path::{Path, PathBuf};

/// Emits the link arguments that put the functions listed in `link-order/<binary>.txt`
/// first in `binary`'s `.text`.
pub fn link_in_recorded_order(binary: &str) {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let order_file = manifest_dir
        .join("..")
        .join("link-order")
        .join(format!("{binary}.txt"));
    println!("cargo:rerun-if-changed={}", order_file.display());
    println!("cargo:rerun-if-env-changed=DAPRS_LINK_ORDER");

    if std::env::var("DAPRS_LINK_ORDER").is_ok_and(|v| v == "off") {
        return;
    }
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    if !order_file.is_file() {
        println!(
            "cargo:warning={} is missing: {binary} links without a recorded function order \
             (run scripts/link-order.sh to record one)",
            order_file.display()
        );
        return;
    }
    let Some(gcc_ld) = rust_lld_wrapper_dir() else {
        println!(
            "cargo:warning=rust-lld was not found in the toolchain: {binary} links without its \
             recorded function order (idle RSS is a few MB higher; behaviour is the same)"
        );
        return;
    };
    let arg = |value: String| println!("cargo:rustc-link-arg-bin={binary}={value}");
    arg("-fuse-ld=lld".to_owned());
    arg(format!("-B{}", gcc_ld.display()));
    arg(format!(
        "-Wl,--symbol-ordering-file={}",
        order_file.display()
    ));
    arg("-Wl,--no-warn-symbol-ordering".to_owned());
}

/// `<sysroot>/lib/rustlib/<host>/bin/gcc-ld`, where rustup puts the `ld.lld` wrapper that runs
/// the toolchain's rust-lld, if it is there.
fn rust_lld_wrapper_dir() -> Option<PathBuf> {
    let rustc = std::env::var_os("RUSTC")?;
    let host = std::env::var("HOST").ok()?;
    let output = std::process::Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = String::from_utf8(output.stdout).ok()?;
    let dir = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/gcc-ld");
    dir.join("ld.lld").is_file().then_some(dir)
}
