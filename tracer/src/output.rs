//! Output helpers shared by every tool: how a run prints, local timestamps,
//! stdout on a thread of its own, C strings from the kernel, and the top-style
//! screen clear.

use std::{
    fs::File,
    future::Future,
    io::{self, Write as _},
    os::fd::AsFd as _,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
        mpsc,
    },
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

/// When to report and when to stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Report every this often; None: once, at the end.
    pub interval: Option<Duration>,
    /// Stop after this many reports; None: until Ctrl-C.
    pub count: Option<u64>,
}

/// How a tool's run prints.
#[derive(Clone, Debug)]
pub struct Options<'a> {
    /// What is traced, for the banner: "Tracing <what>... Hit Ctrl-C to end."
    pub what: &'a str,
    pub json: bool,
    pub verbose: bool,
    /// -T: wall-clock times in records.
    pub timestamp: bool,
    pub schedule: Schedule,
    /// `--heatmap FILE.svg`: a column per interval (every second without one).
    pub heatmap: Option<PathBuf>,
}

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
        let mono = crate::kernel::monotonic_ns();
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

/// How much output may wait for a slow stdout. Past it the run loop stops
/// reading its ring buffer: the kernel's ring fills and counts what it cannot
/// keep (the "records lost" warning), and the tool's memory stays bounded.
const BACKLOG: usize = 256 << 10;

/// A pipe takes a write of at most PIPE_BUF bytes whole or not at all: written
/// in such pieces, what reached the reader is known record by record.
const PIECE: usize = libc::PIPE_BUF;

/// Output for stdout: its text, where each record ends in it, and whether it
/// is an interval's report.
#[derive(Debug, Default)]
pub struct Batch {
    pub text: String,
    ends: Vec<usize>,
    report: bool,
}

impl Batch {
    /// Text that is neither records nor a report (a header).
    pub fn text(text: String) -> Batch {
        Batch {
            text,
            ..Batch::default()
        }
    }

    /// An interval's report.
    pub fn report(text: String) -> Batch {
        Batch {
            text,
            report: true,
            ..Batch::default()
        }
    }

    /// Marks the end of a record just appended to `text`.
    pub fn end_record(&mut self) {
        self.ends.push(self.text.len());
    }
}

/// What the writer thread and the run loop share.
#[derive(Default)]
struct Shared {
    /// Bytes sent and not yet written.
    backlog: AtomicUsize,
    records: AtomicU64,
    reports: AtomicU64,
    error: Mutex<Option<io::Error>>,
    /// Set when the run has ended: nothing more is written, so that what was
    /// not written is counted exactly (but for a piece blocked in write(2)).
    stop: AtomicBool,
    /// Wakes the run loop when a write failed.
    failed: tokio::sync::Notify,
}

/// stdout, written by a thread of its own so that a blocked reader never holds
/// up the run loop (its signals, its ring buffer).
pub struct StdoutWriter {
    /// None once finished.
    tx: Option<mpsc::Sender<Batch>>,
    /// Disconnected once the thread ends.
    done: mpsc::Receiver<()>,
    shared: Arc<Shared>,
    records: u64,
    reports: u64,
}

impl StdoutWriter {
    pub fn start() -> Result<StdoutWriter> {
        let out = File::from(
            io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .context("duplicating stdout")?,
        );
        let (tx, rx) = mpsc::channel::<Batch>();
        let (done_tx, done) = mpsc::channel::<()>();
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                let _done = done_tx;
                write_batches(out, rx, &theirs);
            })
            .context("starting the stdout thread")?;
        Ok(StdoutWriter {
            tx: Some(tx),
            done,
            shared,
            records: 0,
            reports: 0,
        })
    }

    /// Whether stdout is so far behind that the run loop should stop reading.
    pub fn backed_up(&self) -> bool {
        self.shared.backlog.load(Relaxed) >= BACKLOG
    }

    /// Queues output; never blocks. After a failed write it is counted as not
    /// written.
    pub fn send(&mut self, batch: Batch) {
        if batch.text.is_empty() {
            return;
        }
        self.records += batch.ends.len() as u64;
        self.reports += u64::from(batch.report);
        self.shared.backlog.fetch_add(batch.text.len(), Relaxed);
        if let Some(tx) = &self.tx {
            let _ = tx.send(batch);
        }
    }

    /// Resolves once a write to stdout failed (its reader gone, a full disk).
    pub fn failed(&self) -> impl Future<Output = ()> + 'static {
        let shared = Arc::clone(&self.shared);
        async move { shared.failed.notified().await }
    }

    /// Lets the thread write what is queued, for at most `grace`, and says what
    /// was not written. A reader that takes nothing meanwhile leaves the thread
    /// blocked: the process exits around it.
    pub fn finish(&mut self, grace: Duration) -> Unwritten {
        drop(self.tx.take());
        let _ = self.done.recv_timeout(grace);
        self.shared.stop.store(true, Relaxed);
        Unwritten {
            records: self.records - self.shared.records.load(Relaxed),
            reports: self.reports - self.shared.reports.load(Relaxed),
            error: self.shared.error.lock().expect("not poisoned").take(),
        }
    }
}

/// The writer thread: SIGPIPE is blocked here only, so a reader that goes away
/// is an EPIPE error that ends the run cleanly (everywhere else it stays
/// deadly, so that `tracer list | head` ends quietly, as the C tools do).
fn write_batches(mut out: File, rx: mpsc::Receiver<Batch>, shared: &Shared) {
    // SAFETY: a signal set on the stack, and this thread's own signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    for batch in rx {
        if let Err(e) = write_batch(&mut out, &batch, shared) {
            *shared.error.lock().expect("not poisoned") = Some(e);
            shared.failed.notify_one();
            return;
        }
    }
}

/// Writes a batch in pieces of at most PIECE bytes, cut at line ends, counting
/// each record once all of it is written.
fn write_batch(out: &mut File, batch: &Batch, shared: &Shared) -> io::Result<()> {
    let text = batch.text.as_bytes();
    let (mut at, mut counted) = (0, 0);
    while at < text.len() {
        if shared.stop.load(Relaxed) {
            return Ok(());
        }
        let rest = &text[at..];
        let cut = if rest.len() <= PIECE {
            rest.len()
        } else {
            rest[..PIECE]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(PIECE, |i| i + 1)
        };
        out.write_all(&rest[..cut])?;
        at += cut;
        shared.backlog.fetch_sub(cut, Relaxed);
        let written = batch.ends.partition_point(|&end| end <= at);
        shared
            .records
            .fetch_add((written - counted) as u64, Relaxed);
        counted = written;
    }
    shared.reports.fetch_add(u64::from(batch.report), Relaxed);
    Ok(())
}

/// Output a run queued and stdout did not take.
#[derive(Debug)]
pub struct Unwritten {
    pub records: u64,
    pub reports: u64,
    pub error: Option<io::Error>,
}

impl Unwritten {
    /// Says on stderr what was not written, and why. A reader that went away
    /// (EPIPE) ends a run as Ctrl-C does; any other write error is the run's.
    pub fn report(self, tool: &str) -> Result<()> {
        let mut what = Vec::new();
        for (n, unit) in [(self.records, "record"), (self.reports, "report")] {
            if n > 0 {
                what.push(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }));
            }
        }
        let what = what.join(" and ");
        match self.error {
            Some(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                if !what.is_empty() {
                    eprintln!("{tool}: {what} not written (stdout closed by its reader)");
                }
                Ok(())
            }
            Some(e) if what.is_empty() => bail!("cannot write to stdout: {e}"),
            Some(e) => bail!("cannot write to stdout ({what} not written): {e}"),
            None => {
                if !what.is_empty() {
                    eprintln!("{tool}: WARNING: {what} not written (stdout blocked)");
                }
                Ok(())
            }
        }
    }
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
    fn batches_are_written_in_pieces_counted_by_record() {
        let (mut reader, writer) = io::pipe().unwrap();
        let mut out = File::from(std::os::fd::OwnedFd::from(writer));
        let shared = Shared::default();
        let mut batch = Batch::default();
        // Short records, then one longer than a piece: a piece is cut at a
        // line's end, or inside a line longer than PIECE.
        for i in 0..100 {
            batch.text.push_str(&format!("record {i}\n"));
            batch.end_record();
        }
        batch.text.push_str(&"x".repeat(PIECE + 10));
        batch.text.push('\n');
        batch.end_record();
        shared.backlog.store(batch.text.len(), Relaxed);
        let reading = std::thread::spawn(move || {
            let mut got = String::new();
            io::Read::read_to_string(&mut reader, &mut got).unwrap();
            got
        });
        write_batch(&mut out, &batch, &shared).unwrap();
        drop(out);
        assert_eq!(reading.join().unwrap(), batch.text);
        assert_eq!(shared.records.load(Relaxed), 101);
        assert_eq!(shared.reports.load(Relaxed), 0);
        assert_eq!(shared.backlog.load(Relaxed), 0);
    }

    #[test]
    fn a_stdout_error_other_than_epipe_fails_the_run() {
        let unwritten = |records, error| Unwritten {
            records,
            reports: 1,
            error: Some(error),
        };
        let enospc = || io::Error::from_raw_os_error(libc::ENOSPC);
        let e = unwritten(3, enospc()).report("t").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot write to stdout (3 records and 1 report not written): No space left on device (os error 28)"
        );
        let epipe = io::Error::from_raw_os_error(libc::EPIPE);
        assert!(unwritten(3, epipe).report("t").is_ok());
    }

    #[test]
    fn time_formats() {
        assert_eq!(local_time().len(), 8);
        assert_eq!(format_local(0, true).len(), 15);
    }
}
