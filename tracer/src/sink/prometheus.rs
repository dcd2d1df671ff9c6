//! The sink of `tracer exporter`: many sources in one process, sampled at each
//! scrape and served on `/metrics` (Prometheus text, or OpenMetrics when asked
//! for). The HTTP side is a task of its own; a scrape asks the sink through a
//! channel, and the run loop samples every source before the sink answers.
//!
//! The HTTP side is deliberately small and defensive: one request per
//! connection, a bounded request head read within a deadline, a bounded number
//! of connections, a deadline on writing the response. A stalled or hostile
//! client costs one connection slot until its deadline, never memory; while
//! every slot is taken, one that has not sent its request head within a
//! second makes room.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, oneshot},
    time::timeout,
};

use crate::sink::{Demand, Round, Sink, Sources};
use crate::source::{
    Sample, Source,
    metrics::{Family, Format, Observations, Registry},
};

/// Longest request head accepted (request line and headers).
const MAX_HEAD: usize = 8192;
/// Time a client has to send its request, and to take the response.
const CLIENT_DEADLINE: Duration = Duration::from_secs(10);
/// While every slot is taken, a connection that has not sent its whole
/// request head this long after it was accepted is closed to make room (a
/// scraper sends its request at once): half-sent requests, reopened as they
/// are closed, cannot hold the slots against a scrape.
const CROWDED_HEAD_DEADLINE: Duration = Duration::from_secs(1);
/// Connections served at once; further clients wait in the kernel's listen
/// queue until a slot frees.
const MAX_CONNECTIONS: usize = 128;

static LOST: Family = Family::counter(
    "tracer_events_lost",
    "Kernel records a tool could not deliver (ring buffer full).",
);
static MISSED: Family = Family::counter(
    "tracer_events_missed",
    "Events the kernel skipped a tool's programs for, because BPF was busy on that CPU \
     (another program, or a BPF map syscall such as a scrape's reads).",
);
static MAP_FULL: Family = Family::counter(
    "tracer_map_full",
    "Kernel updates dropped because a map was full.",
);
static UNMATCHED: Family = Family::counter(
    "tracer_unmatched_completions",
    "Completions whose start was never seen (block tools).",
);
static INFLIGHT: Family = Family::gauge(
    "tracer_inflight_entries",
    "Operations started and not yet finished, held in the kernel's in-flight tables.",
);
static SOURCE_UP: Family = Family::gauge(
    "tracer_source_up",
    "1 when the tool runs in this exporter, 0 when this kernel cannot run it.",
);
static SOURCE_ERRORS: Family = Family::counter(
    "tracer_source_read_errors",
    "Failed reads of a tool's kernel maps.",
);
static FOLDED: Family = Family::counter(
    "tracer_exporter_folded_label_values",
    "Distinct values of an unbounded label summed into \"other\", per metric family.",
);
static SERIES: Family = Family::gauge(
    "tracer_exporter_series",
    "Series this exporter serves (a histogram counts once).",
);
static SCRAPES: Family = Family::counter("tracer_exporter_scrapes", "Scrapes served.");
static EVICTED: Family = Family::counter(
    "tracer_exporter_evicted_connections",
    "Connections closed before they sent a whole request, to make room while every \
     connection slot was taken.",
);
static SCRAPE_CPU: Family = Family::counter(
    "tracer_exporter_scrape_cpu_seconds",
    "CPU time spent sampling the tools and encoding the metrics.",
);
static BPF_RUNS: Family = Family::counter(
    "tracer_bpf_program_runs",
    "Runs of each kernel program (when kernel.bpf_stats_enabled is 1).",
);
static BPF_TIME: Family = Family::counter(
    "tracer_bpf_program_run_seconds",
    "Time spent in each kernel program (when kernel.bpf_stats_enabled is 1).",
);

/// A tool the exporter was asked for but this kernel cannot run.
pub struct Absent {
    pub tool: &'static str,
}

/// A scrape, sent by the HTTP side to the sink: the loop samples every source,
/// then the sink answers with the exposition in `format`.
struct Scrape {
    format: Format,
    reply: oneshot::Sender<Bytes>,
}

/// The exporter sink: metrics sampled when a scrape asks (and once at the
/// start, so that every series starts at zero), served by an HTTP task of
/// its own.
pub struct Exporter {
    /// Until the start, which serves it.
    listener: Option<std::net::TcpListener>,
    absent: Vec<Absent>,
    registry: Registry,
    /// What the samples of the current round added.
    obs: Observations,
    /// Last kernel counter values per source (counters are exported as totals).
    last_counters: Vec<[u64; tracer_common::counters::NUM_COUNTERS as usize]>,
    last_missed: Vec<u64>,
    last_bpf: HashMap<(usize, String), (u64, u64)>,
    last_folded: HashMap<&'static str, u64>,
    /// Scrapes served, and how many of them the registry has counted.
    scrapes: u64,
    scrapes_counted: u64,
    /// Connections closed to make room (see CROWDED_HEAD_DEADLINE), counted
    /// by the HTTP side, and how many of them the registry has counted.
    evicted: Arc<AtomicU64>,
    evicted_counted: u64,
    /// Scrapes from the HTTP side, and the one being answered.
    scrapes_in: Option<mpsc::Receiver<Scrape>>,
    asking: Option<Scrape>,
    /// Whether the first sample was taken.
    primed: bool,
    /// Process CPU time when the current round was asked for.
    cpu_at: f64,
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage with a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn bpf_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1")
}

/// Binds the exporter's address (before any program is loaded, so that a busy
/// port fails fast).
pub fn bind(listen: SocketAddr) -> Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

impl Exporter {
    pub fn new(
        listener: std::net::TcpListener,
        absent: Vec<Absent>,
        fold_limit: Option<usize>,
    ) -> Exporter {
        Exporter {
            listener: Some(listener),
            absent,
            registry: Registry::with_fold_limit(fold_limit),
            obs: Observations::default(),
            last_counters: Vec::new(),
            last_missed: Vec::new(),
            last_bpf: HashMap::new(),
            last_folded: HashMap::new(),
            scrapes: 0,
            scrapes_counted: 0,
            evicted: Arc::new(AtomicU64::new(0)),
            evicted_counted: 0,
            scrapes_in: None,
            asking: None,
            primed: false,
            cpu_at: 0.0,
        }
    }

    /// A source's own health: up, its kernel counters, in-flight operations
    /// and, when kernel.bpf_stats_enabled is 1, its programs' run time.
    fn observe_source(&mut self, i: usize, source: &dyn Source, stats: bool) {
        let tool = source.name();
        let label = || vec![("tool", tool.to_string())];
        let obs = &mut self.obs;
        obs.gauge(&SOURCE_UP, label(), 1.0);
        match source.loaded().counters() {
            Ok(now) => {
                use tracer_common::counters::Counter;
                let last = &mut self.last_counters[i];
                for (family, c) in [
                    (&LOST, Counter::Lost),
                    (&MAP_FULL, Counter::MapFull),
                    (&UNMATCHED, Counter::Unmatched),
                ] {
                    let k = c as usize;
                    obs.count(family, label(), now[k].saturating_sub(last[k]));
                }
                *last = now;
            }
            Err(e) => {
                eprintln!("exporter: reading {tool}'s counters: {e:#}");
                obs.count(&SOURCE_ERRORS, label(), 1);
            }
        }
        let missed = source.loaded().missed();
        obs.count(&MISSED, label(), missed.saturating_sub(self.last_missed[i]));
        self.last_missed[i] = missed;
        if let Some(n) = source.in_flight() {
            obs.gauge(&INFLIGHT, label(), n as f64);
        }
        if !stats {
            return;
        }
        for (prog, p) in source.loaded().ebpf.programs() {
            let Ok(info) = p.info() else { continue };
            let (runs, ns) = (info.run_count(), info.run_time().as_nanos() as u64);
            let last = self.last_bpf.entry((i, prog.to_string())).or_insert((0, 0));
            let labels = || vec![("tool", tool.to_string()), ("program", prog.to_string())];
            obs.count(&BPF_RUNS, labels(), runs.saturating_sub(last.0));
            obs.count_f64(&BPF_TIME, labels(), ns.saturating_sub(last.1) as f64 / 1e9);
            *last = (runs, ns);
        }
    }

    /// The round's observations into the registry, then the exporter's own:
    /// each scrape sees the kernel's counts as of its request.
    fn apply(&mut self, sources: &Sources) {
        let stats = bpf_stats_enabled();
        for (i, source) in sources.iter().enumerate() {
            self.observe_source(i, source.as_ref(), stats);
        }
        for a in &self.absent {
            self.obs
                .gauge(&SOURCE_UP, vec![("tool", a.tool.to_string())], 0.0);
        }
        self.registry.apply(std::mem::take(&mut self.obs));
        let mut own = Observations::default();
        for (family, n) in self.registry.folded() {
            let last = self.last_folded.entry(family).or_insert(0);
            own.count(&FOLDED, vec![("family", family.to_string())], n - *last);
            *last = n;
        }
        own.count(&SCRAPES, Vec::new(), self.scrapes - self.scrapes_counted);
        self.scrapes_counted = self.scrapes;
        let evicted = self.evicted.load(Relaxed);
        own.count(&EVICTED, Vec::new(), evicted - self.evicted_counted);
        self.evicted_counted = evicted;
        own.count_f64(
            &SCRAPE_CPU,
            Vec::new(),
            (cpu_seconds() - self.cpu_at).max(0.0),
        );
        self.registry.apply(own);
        let mut series = Observations::default();
        series.gauge(&SERIES, Vec::new(), self.registry.series() as f64 + 1.0);
        self.registry.apply(series);
    }
}

impl Sink for Exporter {
    fn start(&mut self, sources: &Sources) -> Result<()> {
        self.last_counters =
            vec![[0; tracer_common::counters::NUM_COUNTERS as usize]; sources.len()];
        self.last_missed = vec![0; sources.len()];
        let listener = self.listener.take().context("serving HTTP twice")?;
        let listener = TcpListener::from_std(listener).context("serving HTTP")?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(MAX_CONNECTIONS);
        self.scrapes_in = Some(rx);
        tokio::spawn(serve(listener, tx, Arc::clone(&self.evicted)));
        let names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
        eprintln!(
            "exporter: serving {} on http://{addr}/metrics",
            names.join(", ")
        );
        Ok(())
    }

    fn sample(
        &mut self,
        _i: usize,
        source: &dyn Source,
        sample: Sample,
        _round: &Round,
    ) -> Result<()> {
        source.export(&sample, &mut self.obs);
        Ok(())
    }

    /// Counted and said; the other tools are still served.
    fn read_failed(&mut self, source: &dyn Source, error: &anyhow::Error) -> bool {
        let tool = source.name();
        eprintln!("exporter: reading {tool}: {error:#}");
        self.obs
            .count(&SOURCE_ERRORS, vec![("tool", tool.to_string())], 1);
        true
    }

    /// The first sample starts every series at zero; then one per scrape.
    fn poll_demand(&mut self, cx: &mut Context<'_>) -> Poll<Demand> {
        if self.primed {
            let Some(scrapes) = &mut self.scrapes_in else {
                return Poll::Pending;
            };
            match scrapes.poll_recv(cx) {
                Poll::Ready(Some(scrape)) => self.asking = Some(scrape),
                // The HTTP side is gone (it never ends on its own).
                Poll::Ready(None) => {
                    self.scrapes_in = None;
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        self.primed = true;
        self.cpu_at = cpu_seconds();
        Poll::Ready(Demand::Sample)
    }

    fn answer(&mut self, sources: &Sources) {
        self.apply(sources);
        if let Some(scrape) = self.asking.take() {
            self.scrapes += 1;
            let _ = scrape.reply.send(self.registry.encode(scrape.format));
        }
    }

    fn summary(&self) -> Option<String> {
        Some(format!("exporter: served {} scrapes", self.scrapes))
    }
}

/// The HTTP side: accepts clients while a connection slot is free, each on a
/// task of its own, until the run ends (and its runtime with it).
async fn serve(listener: TcpListener, scrapes: mpsc::Sender<Scrape>, evicted: Arc<AtomicU64>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot first, then a client: at the cap, clients wait in the
        // kernel's listen queue in the order they came. A client refused at
        // once (503) would retry at once too, and one reconnecting in a loop
        // would take every freed slot before a scraper did.
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("never closed");
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (scrapes, slots, evicted) = (scrapes.clone(), Arc::clone(&slots), Arc::clone(&evicted));
        tokio::spawn(async move {
            let _ = handle(stream, &scrapes, &slots, &evicted).await;
            drop(slot);
        });
    }
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub accept: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum BadRequest {
    TooLarge,
    Malformed,
}

/// Parses a request head (everything before the blank line). Lines end in
/// CRLF or, as RFC 9112 section 2.2 lets a recipient accept, a bare LF.
pub fn parse_head(head: &[u8]) -> Result<Request, BadRequest> {
    let text = std::str::from_utf8(head).map_err(|_| BadRequest::Malformed)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().ok_or(BadRequest::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::Malformed);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() {
        return Err(BadRequest::Malformed);
    }
    let path = target_path(target).ok_or(BadRequest::Malformed)?;
    let mut accept = String::new();
    for header in lines.filter(|l| !l.is_empty()) {
        let (name, value) = header.split_once(':').ok_or(BadRequest::Malformed)?;
        if name.eq_ignore_ascii_case("accept") {
            accept = value.trim().to_string();
        }
    }
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        accept,
    })
}

/// The path of a request target without its query: the origin form
/// (`/metrics?x=1`), or the absolute form (`http://host:port/metrics`),
/// which a server must accept (RFC 9112 section 3.2.2).
fn target_path(target: &str) -> Option<&str> {
    let path = if target.starts_with('/') {
        target
    } else {
        let (scheme, rest) = target.split_once("://")?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return None;
        }
        // The authority (host and port) ends where the path or query begins.
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        match &rest[end..] {
            p if p.starts_with('/') => p,
            _ => "/",
        }
    };
    path.split('?').next()
}

/// Where a request head ends: the first empty line, after CRLF or bare LF.
fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find(|&i| {
        buf[i] == b'\n' && (buf[i + 1..].starts_with(b"\n") || buf[i + 1..].starts_with(b"\r\n"))
    })
}

/// Reads a request head: up to the blank line, at most MAX_HEAD bytes.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, BadRequest> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|_| BadRequest::Malformed)?;
        if n == 0 {
            return Err(BadRequest::Malformed);
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(BadRequest::TooLarge);
        }
    }
}

/// Resolves when a connection still without its request head should make
/// room: every slot is taken (the accept loop holds the last one for the
/// next client) and it was accepted CROWDED_HEAD_DEADLINE ago or more.
async fn crowded_out(slots: &Semaphore, accepted: Instant) {
    let mut at = accepted + CROWDED_HEAD_DEADLINE;
    loop {
        tokio::time::sleep_until(at.into()).await;
        if slots.available_permits() == 0 {
            return;
        }
        at += CROWDED_HEAD_DEADLINE;
    }
}

async fn handle(
    mut stream: TcpStream,
    scrapes: &mpsc::Sender<Scrape>,
    slots: &Semaphore,
    evicted: &AtomicU64,
) -> Result<()> {
    let accepted = Instant::now();
    // Too slow, or in the way: just close.
    let head = tokio::select! {
        head = timeout(CLIENT_DEADLINE, read_head(&mut stream)) => match head {
            Ok(head) => head,
            Err(_) => return Ok(()),
        },
        () = crowded_out(slots, accepted) => {
            evicted.fetch_add(1, Relaxed);
            return Ok(());
        }
    };
    let text = |s: &'static str| Bytes::from_static(s.as_bytes());
    let req = match head.and_then(|h| parse_head(&h)) {
        Ok(r) => r,
        Err(BadRequest::TooLarge) => {
            return respond(
                stream,
                431,
                "Request Header Fields Too Large",
                "text/plain",
                text("request head too large\n"),
                false,
            )
            .await;
        }
        Err(BadRequest::Malformed) => {
            return respond(
                stream,
                400,
                "Bad Request",
                "text/plain",
                text("bad request\n"),
                false,
            )
            .await;
        }
    };
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        return respond(
            stream,
            405,
            "Method Not Allowed",
            "text/plain",
            text("only GET and HEAD\n"),
            false,
        )
        .await;
    }
    match req.path.as_str() {
        "/metrics" => {
            // The run loop samples every source, then the sink answers; it
            // goes away only when the run ends.
            let format = Format::negotiate(&req.accept);
            let (reply, body) = oneshot::channel();
            if scrapes.send(Scrape { format, reply }).await.is_err() {
                return Ok(());
            }
            let Ok(body) = body.await else {
                return Ok(());
            };
            respond(stream, 200, "OK", format.content_type(), body, head_only).await
        }
        "/" => {
            respond(stream, 200, "OK", "text/html; charset=utf-8", text(
                "<html><head><title>tracer exporter</title></head><body><h1>tracer exporter</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n",
            ), head_only).await
        }
        _ => respond(stream, 404, "Not Found", "text/plain", text("not found: try /metrics\n"), head_only).await,
    }
}

async fn respond(
    mut stream: TcpStream,
    code: u16,
    reason: &str,
    content_type: &str,
    body: Bytes,
    head_only: bool,
) -> Result<()> {
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if code == 405 {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        if !head_only {
            stream.write_all(&body).await?;
        }
        stream.shutdown().await
    };
    // A client that stops reading is dropped at the deadline.
    let _ = timeout(CLIENT_DEADLINE, write).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let r = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text;version=1.0.0").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/metrics");
        assert!(r.accept.starts_with("application/openmetrics-text"));
        // The absolute form (RFC 9112 3.2.2), and bare LF line ends (2.2).
        for (head, path) in [
            (
                &b"GET http://127.0.0.1:9435/metrics?x=1 HTTP/1.1"[..],
                "/metrics",
            ),
            (b"GET HTTP://host HTTP/1.1", "/"),
            (b"GET http://host?x=/y HTTP/1.1", "/"),
            (b"GET /metrics HTTP/1.1\nHost: a\r\nAccept: b", "/metrics"),
        ] {
            assert_eq!(
                parse_head(head).map(|r| r.path),
                Ok(path.into()),
                "{head:?}"
            );
        }
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\nAccept: text/plain\r")
                .unwrap()
                .accept,
            "text/plain"
        );
        for bad in [
            &b"GET /metrics"[..],
            b"GET metrics HTTP/1.1",
            b"GET http:///metrics HTTP/1.1",
            b"GET ftp://host/metrics HTTP/1.1",
            b"GET /metrics HTTP/1.1 extra",
            b"GET /metrics SPDY/3",
            b"GET /metrics HTTP/1.1\r\nno colon here",
            b"\xff\xfe / HTTP/1.1",
        ] {
            assert_eq!(parse_head(bad), Err(BadRequest::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn a_head_ends_at_the_first_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\n"), Some(19));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\r\n"), Some(19));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r"), None);
    }
}
