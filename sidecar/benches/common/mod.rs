//! Helpers shared by the sidecar's benches (`mod common;` in each).

/// `name` from the environment as a number, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time a process has used, in clock ticks (100 per second on Linux): user (`utime`)
/// and system (`stime`, the kernel working for it: system calls, wake-ups, the loopback
/// network path). Zero when the process is gone.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub user: u64,
    pub system: u64,
}

impl Cpu {
    pub fn of(pid: u32) -> Self {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let get = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // Fields after the command: state(0) ... utime(11) stime(12).
        Self {
            user: get(11),
            system: get(12),
        }
    }

    /// What was used since `before`.
    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
        }
    }

    /// The whole, in mCPU over `seconds`.
    pub fn mcpu(self, seconds: f64) -> f64 {
        mcpu(self.user + self.system, seconds)
    }

    /// `"84 mCPU (user 30, system 54)"` over `seconds`.
    pub fn describe(self, seconds: f64) -> String {
        format!(
            "{:.0} mCPU (user {:.0}, system {:.0})",
            self.mcpu(seconds),
            mcpu(self.user, seconds),
            mcpu(self.system, seconds)
        )
    }
}

/// `ticks` of CPU time over `seconds`, in mCPU (1 tick = 10 ms).
fn mcpu(ticks: u64, seconds: f64) -> f64 {
    ticks as f64 * 10.0 / seconds
}

/// The open-loop schedule of one load connection: its requests evenly spaced, the
/// connections staggered against each other, so the total rate is spread evenly over time.
#[derive(Clone, Copy, Debug)]
pub struct OpenLoop {
    first: std::time::Instant,
    interval: std::time::Duration,
}

impl OpenLoop {
    /// Connection `c` of `connections` sharing `rate` requests/s, the first due at `start`.
    pub fn new(start: std::time::Instant, rate: u64, connections: u64, c: u64) -> Self {
        let interval = std::time::Duration::from_secs_f64(connections as f64 / rate as f64);
        Self {
            first: start + interval.mul_f64(c as f64 / connections as f64),
            interval,
        }
    }

    /// Waits until request `i` is due and returns when its latency counts from. A request
    /// held back because the previous one (done at `previous_done`) was still running counts
    /// from its scheduled time, so a stall is not hidden (no coordinated omission). Otherwise
    /// it counts from now: tokio's timer wakes up to 1 ms late, which is the load generator's
    /// lateness, not the server's.
    pub async fn due(&self, i: u64, previous_done: std::time::Instant) -> std::time::Instant {
        let scheduled = self.first + self.interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        if previous_done > scheduled {
            scheduled
        } else {
            std::time::Instant::now()
        }
    }
}

/// The `p` percentile (0..=1) of sorted latencies in µs, in ms; NaN when there are none.
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}
