//! A real sentry, in-process on 127.0.0.1 with its own CA in a temporary directory.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

pub struct Sentry {
    pub running: Option<daprs_sentry::Running>,
    pub dir: tempfile::TempDir,
}

impl Sentry {
    /// Starts sentry with `extra` flags (for example `--workload-cert-ttl 3s`).
    pub async fn start(extra: &[&str]) -> Sentry {
        daprs_api::tls::install_default_provider();
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Sentry {
        let creds = dir.path().join("creds");
        let mut argv: Vec<String> = [
            "sentry",
            "--issuer-credentials",
            creds.to_str().unwrap(),
            "--port",
            "0",
            "--healthz-port",
            "0",
            "--metrics-port",
            "0",
            "--listen-address",
            "127.0.0.1",
            "--healthz-listen-address",
            "127.0.0.1",
            "--metrics-listen-address",
            "127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(extra.iter().map(|s| s.to_string()));
        let running = daprs_sentry::start_in(
            daprs_sentry::config::Args::parse_from(argv),
            daprs_sentry::Environment {
                namespace: "default".into(),
                client: None,
            },
        )
        .await
        .unwrap();
        let url = format!("http://{}/healthz", running.healthz_addr);
        for _ in 0..200 {
            if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Sentry {
            running: Some(running),
            dir,
        }
    }

    pub fn address(&self) -> String {
        self.running.as_ref().unwrap().grpc_addr.to_string()
    }

    pub fn anchors_file(&self) -> PathBuf {
        self.dir.path().join("creds/ca.crt")
    }

    pub fn anchors_pem(&self) -> String {
        std::fs::read_to_string(self.anchors_file()).unwrap()
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }
}
