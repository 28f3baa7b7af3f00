//! A private `redis-server` for a test (installed by `scripts/sidecar-deps.sh`), on a free
//! loopback port with no persistence, killed when dropped.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long redis-server gets to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running redis-server; see the module docs.
#[derive(Debug)]
pub struct Redis {
    child: Child,
    /// Its loopback port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts redis-server and waits until it accepts connections.
    pub fn start() -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::tempdir()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server is missing: run scripts/sidecar-deps.sh")?;
        let mut redis = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = redis.child.try_wait()? {
                bail!("redis-server exited at start-up ({status})");
            }
            if Instant::now() >= deadline {
                bail!("redis-server did not accept connections within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    /// Whether `key` exists (asked with redis-cli).
    pub fn exists(&self, key: &str) -> Result<bool> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "EXISTS", key])
            .output()
            .context("redis-cli is missing: run scripts/sidecar-deps.sh")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "1")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
