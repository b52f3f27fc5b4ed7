//! CPU time of this process's threads, by thread name, from `/proc/self/task/*/stat`.
//!
//! The in-process broker runs on a Tokio runtime of its own whose threads are named
//! [`BROKER_THREADS`]; the benchmark's clients run on another ([`CLIENT_THREADS`]). Summing
//! `utime + stime` over the threads of one name separates the broker's CPU time from the
//! clients' although they share the process. (The benchmark's main thread, which paces the
//! mutations, is neither.)

use std::fs;
use std::time::Duration;

/// Thread name of the runtime the in-process broker runs on.
pub const BROKER_THREADS: &str = "bench-broker";
/// Thread name of the runtime the subscribers and the mutation client run on.
pub const CLIENT_THREADS: &str = "bench-client";

/// `/proc` reports CPU time in clock ticks of `USER_HZ`, which Linux fixes at 100 for
/// user space on every architecture it supports.
const TICKS_PER_SECOND: u64 = 100;

/// CPU time (user + system) of every live thread of this process named `name`; `None`
/// where `/proc` cannot be read (not Linux).
pub fn thread_cpu(name: &str) -> Option<Duration> {
    let mut ticks = 0u64;
    for entry in fs::read_dir("/proc/self/task").ok()? {
        let Ok(entry) = entry else { continue };
        // A thread may exit between the listing and the read: skip it.
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((comm, used)) = parse_stat(&stat)
            && comm == name
        {
            ticks += used;
        }
    }
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// The thread name and `utime + stime` of a `stat` line. The name stands in parentheses and
/// may itself contain spaces or parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    // After the name: state (field 3), ..., utime (field 14), stime (field 15).
    let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

/// CPU time used by the in-process broker's threads over a phase.
#[derive(Clone, Copy, Debug)]
pub struct CpuMeter {
    broker: Option<Duration>,
}

impl CpuMeter {
    /// Starts measuring: reads the broker threads' CPU time so far.
    pub fn start() -> Self {
        Self {
            broker: thread_cpu(BROKER_THREADS),
        }
    }

    /// The broker's CPU time since [`CpuMeter::start`]; `None` where `/proc` is unreadable.
    pub fn stop(&self) -> Option<Duration> {
        Some(thread_cpu(BROKER_THREADS)?.saturating_sub(self.broker?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_whose_name_has_spaces_and_parentheses() {
        let line = "4242 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 120 30 0 0 20 0 1 0 5 6 7";
        assert_eq!(parse_stat(line), Some(("a (b) c", 150)));
    }

    #[test]
    fn reads_this_process_threads() {
        if cfg!(target_os = "linux") {
            assert_eq!(thread_cpu("no thread has this name"), Some(Duration::ZERO));
        }
    }
}
