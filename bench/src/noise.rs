//! Machine load and the noise flag.
//!
//! Before each slice of each case the bench reads the 1-minute load average, and during the
//! slice it measures *foreign* CPU: the busy time of the whole machine (user, nice, system and
//! steal from `/proc/stat`) minus the user and system time of the processes this benchmark
//! runs (itself, the nodes, Redis, the floor server; from `/proc/<pid>/stat`). What remains is
//! work that competed with the measurement: a compiler, another test, a neighbour VM (steal).
//! Interrupt time is left out on both sides, because on loopback it is mostly our own traffic.
//!
//! A case whose foreign CPU exceeded [`NOISY_CORES`] of a core in any of its slices is flagged
//! noisy: its numbers are probably pessimistic and worth re-running on a quiet machine.
//!
//! The same counters give the *CPU per operation* of each case ([`CpuProbe::cpu_time`]): the
//! user and system time that the case's server processes (a cluster's three nodes, Redis' three
//! processes, the echo server) and the bench itself used during its slices, divided by the
//! requests completed. Time spent waiting for a core does not count, so this figure stays
//! steady when other work competes for the machine, unlike latency and throughput.

use std::fs;
use std::process::Command;
use std::time::Duration;

/// Foreign CPU, in cores, above which a slice is noisy.
pub const NOISY_CORES: f64 = 0.15;

/// The 1-minute load average, if readable.
pub fn loadavg() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU counters at one instant, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    /// Every tick of every CPU, idle included.
    total: u64,
    /// Ticks spent running something (user, nice, system, steal).
    busy: u64,
    /// Ticks used by our processes.
    ours: u64,
}

/// Takes [`CpuSample`]s counting a given set of processes (and this one) as ours.
#[derive(Debug, Clone, Default)]
pub struct CpuProbe {
    pids: Vec<u32>,
    cores: usize,
    /// Clock ticks per second of the /proc counters (`sysconf(_SC_CLK_TCK)`).
    ticks_per_sec: u64,
}

impl CpuProbe {
    /// A probe counting this process and `pids` as ours.
    pub fn new(mut pids: Vec<u32>) -> CpuProbe {
        pids.push(std::process::id());
        pids.sort_unstable();
        pids.dedup();
        CpuProbe {
            pids,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            ticks_per_sec: clock_ticks_per_sec(),
        }
    }

    /// The user + system CPU time used so far by the processes `pids` (all their threads,
    /// live and exited; a process that is gone counts 0), at clock-tick resolution.
    pub fn cpu_time(&self, pids: &[u32]) -> Duration {
        let ticks: u64 = pids.iter().filter_map(|&pid| process_ticks(pid)).sum();
        Duration::from_micros(ticks.saturating_mul(1_000_000) / self.ticks_per_sec.max(1))
    }

    /// As [`cpu_time`](Self::cpu_time) for this process: the bench's client side.
    pub fn own_cpu_time(&self) -> Duration {
        self.cpu_time(&[std::process::id()])
    }

    pub fn sample(&self) -> CpuSample {
        let (total, busy) = machine_ticks().unwrap_or_default();
        let ours = self.pids.iter().filter_map(|&pid| process_ticks(pid)).sum();
        CpuSample { total, busy, ours }
    }

    /// Foreign CPU between two samples, in cores (1.0 = one core fully used by others).
    pub fn foreign_cores(&self, before: &CpuSample, after: &CpuSample) -> f64 {
        let total = after.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        let busy = after.busy.saturating_sub(before.busy);
        let ours = after.ours.saturating_sub(before.ours);
        // `total` counts every core, so the share of it times the core count is in cores.
        busy.saturating_sub(ours) as f64 / total as f64 * self.cores as f64
    }
}

/// `sysconf(_SC_CLK_TCK)`, the unit of the /proc CPU counters, as `getconf CLK_TCK` reports it
/// (calling libc directly would need `unsafe`, which the workspace denies). If `getconf` is
/// missing, 100: the value on every Linux architecture the bench runs on (USER_HZ).
pub fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&hz: &u64| hz > 0)
        .unwrap_or(100)
}

/// (all ticks, busy ticks) from the `cpu` line of /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    if v.len() < 8 {
        return None;
    }
    let total = v[..8].iter().sum();
    let busy = v[0] + v[1] + v[2] + v[7];
    Some((total, busy))
}

/// utime + stime of a process (all its threads, live and exited), in ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine() {
        assert!(loadavg().is_some());
        let probe = CpuProbe::new(vec![]);
        let a = probe.sample();
        // Spin for several clock ticks (10 ms each) so every counter moves.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let b = probe.sample();
        assert!(b.total > a.total);
        assert!(b.ours >= a.ours);
        assert!(probe.foreign_cores(&a, &b) >= 0.0);
        // Spinning moves our own CPU time on, in whole ticks.
        let (mine, start) = (probe.own_cpu_time(), std::time::Instant::now());
        while probe.own_cpu_time() == mine && start.elapsed() < std::time::Duration::from_secs(5) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        assert!(probe.own_cpu_time() > mine);
        assert!(clock_ticks_per_sec() >= 100);
    }
}
