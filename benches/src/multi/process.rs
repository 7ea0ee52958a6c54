//! What the process costs, read from the kernel: CPU time, resident memory, the machine's load.

use std::time::Duration;

/// User plus system CPU time used by every thread of this process so far (`getrusage`).
pub fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage`; RUSAGE_SELF is always a valid target.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // SAFETY: getrusage filled it in (rc == 0); a zeroed rusage is valid anyway.
    let usage = unsafe { usage.assume_init() };
    let micros = |t: libc::timeval| Duration::from_micros(t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64);
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

/// The process's resident set in bytes (`VmRSS` of `/proc/self/status`), 0 where unreadable.
pub fn rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The first three fields of `/proc/loadavg` (1, 5 and 15 minutes), if there is one.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}
