//! Running kubectl against a [`Cluster`] from a test, with text on its standard input.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::cluster::Cluster;

/// Runs `kubectl <args>` against `cluster`, feeding it `stdin` when given, and returns whether
/// it succeeded, its stdout and its stderr. Panics only when kubectl cannot be run at all.
pub async fn kubectl_raw(
    cluster: &Cluster,
    args: &[&str],
    stdin: Option<String>,
) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::from(cluster.kubectl());
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    let mut input = child.stdin.take().expect("kubectl's stdin is piped");
    if let Some(text) = stdin {
        input
            .write_all(text.as_bytes())
            .await
            .expect("kubectl reads its stdin");
    }
    drop(input);
    let out = child.wait_with_output().await.expect("kubectl finishes");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`kubectl_raw`] that must succeed: returns stdout, or panics with the arguments and stderr.
pub async fn kubectl(cluster: &Cluster, args: &[&str], stdin: Option<String>) -> String {
    let (ok, out, err) = kubectl_raw(cluster, args, stdin).await;
    assert!(ok, "kubectl {args:?}: {err}");
    out
}

/// Polls `check` every 200 ms until it returns `Some`, for up to `secs` seconds; panics naming
/// `what` when time runs out.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
