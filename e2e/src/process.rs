//! Child processes with their output in a log file, and the guard that kills them when the
//! test process goes away without running destructors.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result, bail};

/// How many lines of a component's log an error message quotes.
pub(crate) const LOG_TAIL_LINES: usize = 40;

/// A control-plane component running as a child process, its stdout and stderr in `log`.
pub(crate) struct Process {
    pub name: &'static str,
    pub log: PathBuf,
    child: Child,
}

impl Process {
    /// Starts `program` with `args`, output to `<log_dir>/<name>.log`. The process joins the
    /// process group `group`, or leads a new one when `group` is `None`, so that the guard
    /// can kill every component with one signal and a Ctrl-C in the terminal (sent to the
    /// foreground group) reaches only the test process, whose cleanup then runs.
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
        group: Option<u32>,
    ) -> Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let out =
            File::create(&log).with_context(|| format!("failed to create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .current_dir(log_dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(group.map_or(0, |g| g as i32))
            .spawn()
            .with_context(|| format!("failed to start {}", program.display()))?;
        Ok(Self { name, log, child })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Fails, quoting the end of the log, if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, LOG_TAIL_LINES)
            );
        }
        Ok(())
    }

    /// Kills the process and reaps it.
    pub fn stop(&mut self) {
        // SIGKILL: the data dies with the cluster, so there is nothing to shut down cleanly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of the file at `path`, or a note saying it could not be read.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// A `sh` process that kills the process group `group` and removes `dir` once its stdin
/// reaches end of file, which happens when the guard is released or dropped, or when the test
/// process exits in any way at all (the kernel closes the pipe): a `static` cluster is never
/// dropped, a panicking test may abort, and `cargo test` may be stopped with Ctrl-C or SIGKILL.
pub(crate) struct Guard {
    stdin: Option<ChildStdin>,
    child: Child,
}

impl Guard {
    /// `dir` is removed only when `remove_dir` is true (see `DAPRS_E2E_KEEP`).
    pub fn spawn(group: u32, dir: &Path, remove_dir: bool) -> Result<Self> {
        // The guard ignores the terminal's signals: it must outlive the test process. A line
        // "keep" before end of file keeps the directory (start-up failed: logs are wanted).
        const SCRIPT: &str = r#"trap '' INT TERM HUP QUIT
read -r line
# A negative pid is the process group; dash's kill takes no "--".
kill -KILL "-$1" 2>/dev/null
if [ -n "$2" ] && [ "$line" != keep ]; then
  sleep 0.2
  rm -rf -- "$2" 2>/dev/null || { sleep 1; rm -rf -- "$2"; }
fi"#;
        let dir_arg = if remove_dir {
            dir.as_os_str().to_owned()
        } else {
            Default::default()
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("daprs-e2e-guard")
            .arg(group.to_string())
            .arg(dir_arg)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("failed to start the cleanup guard (sh)")?;
        // std creates the pipe close-on-exec, so no other child inherits the write end and
        // holds it open past our exit.
        let stdin = child.stdin.take();
        Ok(Self { stdin, child })
    }
}

impl Guard {
    /// Lets the guard do its work now and waits for it; `keep_dir` keeps the directory.
    pub fn release(mut self, keep_dir: bool) {
        if let Some(mut stdin) = self.stdin.take()
            && keep_dir
        {
            let _ = stdin.write_all(b"keep\n");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
