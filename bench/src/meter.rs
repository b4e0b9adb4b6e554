//! What a run costs: wall time, this process's CPU, the broker's CPU, peak memory.
//!
//! All from the kernel: `getrusage(RUSAGE_SELF)` (every thread of the process, microseconds),
//! `/proc/<broker>/stat` (utime + stime, clock ticks), `/proc/self/status` `VmHWM` (the peak
//! resident set), which writing `5` to `/proc/self/clear_refs` resets to the current RSS, so
//! that the peak is the measured interval's and not the setup's.

use std::fs;
use std::time::Instant;

/// User and system CPU seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// User time.
    pub user: f64,
    /// System time.
    pub sys: f64,
}

/// This process's CPU time so far, all threads.
pub fn self_cpu() -> CpuTimes {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    CpuTimes {
        user: timeval(usage.ru_utime),
        sys: timeval(usage.ru_stime),
    }
}

/// Seconds in a `timeval`.
pub fn timeval(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// Resets this process's peak RSS to its current RSS; `false` if the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's peak RSS in KiB (`VmHWM`), since start or the last [`reset_peak_rss`].
pub fn peak_rss_kb() -> u64 {
    status_kb("VmHWM").unwrap_or(0)
}

/// This process's current RSS in KiB.
pub fn rss_kb() -> u64 {
    status_kb("VmRSS").unwrap_or(0)
}

fn status_kb(field: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// The CPU seconds (user + system) process `pid` has used, from `/proc/<pid>/stat`.
pub fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime); `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) as f64 / ticks.max(1) as f64)
}

/// The process listening on TCP `port` (the broker), found from `/proc/net/tcp{,6}` and the
/// socket inodes in `/proc/*/fd`. `None` if it is not visible (another user's process when
/// not root, or the broker in a container).
pub fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let listening = *state == "0A";
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if listening && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// The measured interval of a run.
#[derive(Debug)]
pub struct Meter {
    started: Instant,
    cpu: CpuTimes,
    broker: Option<(u32, f64)>,
}

/// What the interval cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// This process's CPU during the interval.
    pub cpu: CpuTimes,
    /// The broker's CPU during the interval (user + system), if its process is visible.
    pub broker_cpu_s: Option<f64>,
    /// Peak RSS in KiB from the start of the interval (or of the process, if the peak could
    /// not be reset or was not asked to be).
    pub peak_rss_kb: u64,
}

impl Meter {
    /// Starts the interval; resets the peak RSS first if `reset_rss`.
    pub fn start(broker_pid: Option<u32>, reset_rss: bool) -> Self {
        if reset_rss {
            reset_peak_rss();
        }
        let broker = broker_pid.and_then(|pid| Some((pid, process_cpu_s(pid)?)));
        Self {
            cpu: self_cpu(),
            broker,
            started: Instant::now(),
        }
    }

    /// Ends the interval.
    pub fn stop(self) -> Measured {
        let elapsed_s = self.started.elapsed().as_secs_f64();
        let cpu = self_cpu();
        let broker_cpu_s = self
            .broker
            .and_then(|(pid, before)| Some(process_cpu_s(pid)? - before));
        Measured {
            elapsed_s,
            cpu: CpuTimes {
                user: cpu.user - self.cpu.user,
                sys: cpu.sys - self.cpu.sys,
            },
            broker_cpu_s,
            peak_rss_kb: peak_rss_kb(),
        }
    }
}
