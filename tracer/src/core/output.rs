//! Output helpers shared by every tool: local timestamps, NDJSON lines, C strings
//! from the kernel, and the top-style screen clear.

use std::io::Write as _;

use serde_json::Value;

/// Local wall-clock time as HH:MM:SS (BCC's -T format).
pub fn local_time() -> String {
    local_time_fmt(false)
}

fn local_time_fmt(micros: bool) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_local(now.as_nanos() as u64, micros)
}

/// Formats a Unix time in ns as local HH:MM:SS[.ffffff].
pub fn format_local(unix_ns: u64, micros: bool) -> String {
    let secs = (unix_ns / 1_000_000_000) as libc::time_t;
    // SAFETY: localtime_r with valid in and out parameters.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    if micros {
        format!(
            "{:02}:{:02}:{:02}.{:06}",
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec,
            (unix_ns % 1_000_000_000) / 1000
        )
    } else {
        format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
    }
}

/// Converts kernel timestamps (CLOCK_MONOTONIC, as bpf_ktime_get_ns) to Unix time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Monotonic time when tracing started.
    pub start_mono: u64,
    unix_minus_mono: i128,
}

impl Clock {
    pub fn now() -> Clock {
        let mono = crate::core::kernel::monotonic_ns();
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Clock {
            start_mono: mono,
            unix_minus_mono: unix as i128 - mono as i128,
        }
    }

    /// Seconds since tracing started.
    pub fn since_start(&self, mono_ns: u64) -> f64 {
        mono_ns.saturating_sub(self.start_mono) as f64 / 1e9
    }

    pub fn unix_ns(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.unix_minus_mono).max(0) as u64
    }

    /// An event's time column: seconds since tracing began (BCC's TIME(s)), or
    /// with -T the local wall-clock time.
    pub fn column(&self, mono_ns: u64, wall: bool) -> String {
        if wall {
            format!("{:<15}", format_local(self.unix_ns(mono_ns), true))
        } else {
            format!("{:<11.6}", self.since_start(mono_ns))
        }
    }

    /// The heading of `column`.
    pub fn header(wall: bool) -> String {
        if wall {
            format!("{:<15}", "TIME")
        } else {
            format!("{:<11}", "TIME(s)")
        }
    }
}

/// Seconds since the Unix epoch, for JSON records.
pub fn unix_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Writes one NDJSON line.
pub fn json_line(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// A NUL-terminated kernel string (comm, rwbs) as text.
pub fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Fixed-size, NUL-padded comm for kernel-side comparison.
pub fn comm_bytes(s: &str) -> [u8; tracer_common::COMM_LEN] {
    let mut out = [0u8; tracer_common::COMM_LEN];
    let n = s.len().min(tracer_common::COMM_LEN - 1);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

/// The first lines of a top-like report: the screen cleared (unless -C), then
/// the time and load average, as BCC's top tools print them.
pub fn top_banner(clear: bool, out: &mut String) {
    if clear {
        out.push_str("\x1b[H\x1b[2J");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    out.push_str(&format!("{} loadavg: {}\n\n", local_time(), load.trim()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_strings() {
        assert_eq!(cstr(b"dd\0\0\0"), "dd");
        assert_eq!(cstr(b"WS"), "WS");
        assert_eq!(cstr(b"\0abc"), "");
        assert_eq!(
            cstr(&comm_bytes("a-very-long-process-name")),
            "a-very-long-pro"
        );
    }

    #[test]
    fn time_formats() {
        assert_eq!(local_time().len(), 8);
        assert_eq!(format_local(0, true).len(), 15);
    }
}
