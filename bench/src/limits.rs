//! Where the machine stops: file descriptors, local ports, memory. A size the machine cannot
//! hold is skipped with the reason instead of failing half-way.

use std::fs;

use rlimit::Resource;

/// Descriptors the process needs besides the sockets of the subscribers (runtime, HTTP
/// clients and pools, the listener, the echo floor, stdio).
const FD_MARGIN: u64 = 512;
/// Memory one subscriber costs when the broker runs in this process, as a rough upper
/// bound: the server side's socket (about 23 KiB idle, `--idle-sockets`; more while frames
/// are in flight), the client's buffers, both sides' tasks, and the broker's connection and
/// subscription records.
const BYTES_PER_SUBSCRIBER_LOCAL: u64 = 512 * 1024;
/// The same with the broker elsewhere: only the client side.
const BYTES_PER_SUBSCRIBER_REMOTE: u64 = 64 * 1024;
/// Ports kept free for everything else on the machine.
const PORT_MARGIN: u64 = 1_000;

/// The machine's limits, read once at start (after raising the descriptor limit).
#[derive(Clone, Debug)]
pub struct Limits {
    /// The soft `RLIMIT_NOFILE` in force.
    pub open_files: u64,
    /// Where that limit came from (raised, or why not).
    pub open_files_note: String,
    /// Size of the ephemeral port range (`net.ipv4.ip_local_port_range`).
    pub local_ports: Option<u64>,
    /// `MemAvailable` at start.
    pub memory_available: Option<u64>,
}

impl Limits {
    /// Raises the soft descriptor limit to what `largest` subscribers need (as root, the
    /// hard limit too), and reads the other limits.
    pub fn prepare(largest: usize, local: bool) -> Self {
        let wanted = fds_needed(largest, local);
        let (open_files, open_files_note) = raise_open_files(wanted);
        Self {
            open_files,
            open_files_note,
            local_ports: local_port_range(),
            memory_available: meminfo_kib("MemAvailable").map(|kib| kib * 1024),
        }
    }

    /// Why `subscribers` connections cannot be opened here, if they cannot.
    pub fn refuse(&self, subscribers: usize, local: bool) -> Option<String> {
        let fds = fds_needed(subscribers, local);
        if fds > self.open_files {
            return Some(format!(
                "needs about {fds} file descriptors, the limit is {} ({}); raise it with \
                 `ulimit -n {fds}` (as root, or after raising the hard limit)",
                self.open_files, self.open_files_note
            ));
        }
        if let Some(ports) = self.local_ports {
            let n = subscribers as u64;
            if n + PORT_MARGIN > ports {
                return Some(format!(
                    "needs {n} local ports to one address, the ephemeral range has {ports} \
                     (net.ipv4.ip_local_port_range)"
                ));
            }
        }
        if let Some(available) = self.memory_available {
            let per = if local {
                BYTES_PER_SUBSCRIBER_LOCAL
            } else {
                BYTES_PER_SUBSCRIBER_REMOTE
            };
            let needed = per * subscribers as u64;
            if needed > available / 2 {
                return Some(format!(
                    "needs up to {} MiB, more than half of the {} MiB available",
                    needed >> 20,
                    available >> 20
                ));
            }
        }
        None
    }
}

/// One descriptor per client socket, one per server socket when the broker runs here.
fn fds_needed(subscribers: usize, local: bool) -> u64 {
    let per = if local { 2 } else { 1 };
    subscribers as u64 * per + FD_MARGIN
}

/// Raises the soft `RLIMIT_NOFILE` towards `wanted` (as root, the hard limit too): the limit
/// in force and where it came from.
pub fn raise_open_files(wanted: u64) -> (u64, String) {
    let Ok((soft, hard)) = rlimit::getrlimit(Resource::NOFILE) else {
        return (u64::MAX, "unknown: getrlimit failed".to_owned());
    };
    if soft >= wanted {
        return (soft, "already high enough".to_owned());
    }
    if hard >= wanted {
        return match rlimit::setrlimit(Resource::NOFILE, wanted, hard) {
            Ok(()) => (wanted, format!("soft limit raised from {soft}")),
            Err(e) => (soft, format!("raising the soft limit failed: {e}")),
        };
    }
    // Above the hard limit: only a privileged process may raise it, and not past nr_open.
    let ceiling = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let target = wanted.min(ceiling).max(hard);
    match rlimit::setrlimit(Resource::NOFILE, target, target) {
        Ok(()) => (
            target,
            format!("soft and hard limits raised from {soft}/{hard}"),
        ),
        Err(_) => match rlimit::setrlimit(Resource::NOFILE, hard, hard) {
            Ok(()) => (
                hard,
                format!("soft limit raised from {soft} to the hard limit {hard}"),
            ),
            Err(e) => (soft, format!("hard limit {hard}; raising failed: {e}")),
        },
    }
}

fn local_port_range() -> Option<u64> {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = range.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (low, high) = (bounds.next()??, bounds.next()??);
    Some(high.saturating_sub(low) + 1)
}

fn meminfo_kib(field: &str) -> Option<u64> {
    proc_field("/proc/meminfo", field)
}

/// This process's resident memory right now (`VmRSS`).
pub fn resident_bytes() -> Option<u64> {
    proc_field("/proc/self/status", "VmRSS").map(|kib| kib * 1024)
}

/// Resident memory of process `pid` right now (`VmRSS`).
pub fn resident_bytes_of(pid: u32) -> Option<u64> {
    proc_field(&format!("/proc/{pid}/status"), "VmRSS").map(|kib| kib * 1024)
}

/// A `Name:   1234 kB` line's number.
fn proc_field(path: &str, field: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_does_not_fit_and_says_why() {
        let limits = Limits {
            open_files: 1_024,
            open_files_note: "test".into(),
            local_ports: Some(28_232),
            memory_available: Some(8 << 30),
        };
        assert_eq!(limits.refuse(100, true), None);
        assert!(
            limits
                .refuse(1_000, true)
                .unwrap()
                .contains("file descriptors")
        );
        let limits = Limits {
            open_files: 1 << 20,
            ..limits
        };
        assert!(
            limits
                .refuse(30_000, false)
                .unwrap()
                .contains("local ports")
        );
        assert!(limits.refuse(20_000, true).unwrap().contains("MiB"));
    }
}
