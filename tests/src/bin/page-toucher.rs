//! A process that takes page faults on request, for the page-fault tools' tests
//! and benchmarks.
//!
//!   page-toucher anon PAGES        map PAGES anonymous pages, write each once
//!   page-toucher file PATH PAGES   map PATH, drop it from the page cache, read one
//!                                  byte of each of its first PAGES pages
//!   page-toucher loop PAGES ROUNDS anon, ROUNDS times (map, touch, unmap), no
//!                                  handshake: for benchmarks
//!
//! $TOUCHER_COMM sets the process name. Handshake (anon, file): prints "ready", waits for a line on stdin, faults,
//! prints "done START END LONG" (the mapping's address range, hex, and the
//! comma-separated indexes of the pages whose touch took at least
//! $TOUCHER_LONG_NS ns, "-" for none), then waits for stdin to close so the test
//! can read /proc/PID/maps meanwhile. A touch contains its page fault: a fault
//! can only have taken that long if its touch did.

use std::{
    io::{BufRead as _, Write as _},
    time::{Duration, Instant},
};

const PAGE: usize = 4096;

fn die(msg: &str) -> ! {
    eprintln!("page-toucher: {msg}");
    std::process::exit(2);
}

fn map(len: usize, fd: i32) -> *mut u8 {
    let (prot, flags) = if fd < 0 {
        (
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        )
    } else {
        (libc::PROT_READ, libc::MAP_SHARED)
    };
    // SAFETY: a fresh mapping; the result is checked.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        die(&format!("mmap: {}", std::io::Error::last_os_error()));
    }
    // One fault per page: no transparent huge pages, no readahead.
    // SAFETY: advice on our own mapping.
    unsafe {
        libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
        libc::madvise(p, len, libc::MADV_RANDOM);
    }
    p.cast()
}

fn touch_anon(p: *mut u8, pages: usize) {
    for i in 0..pages {
        // SAFETY: inside the mapping.
        unsafe { std::ptr::write_volatile(p.add(i * PAGE), 1) };
    }
}

/// Reads a byte of a mapped file: the faulting instruction, in a function of its
/// own so that `tracer report` has a symbol to name (page_toucher::read_page).
///
/// # Safety
/// `p` is inside a readable mapping.
#[inline(never)]
unsafe fn read_page(p: *const u8) -> u8 {
    // SAFETY: the caller's.
    unsafe { std::ptr::read_volatile(p) }
}

/// Touches each page with `touch`, returning the pages that took at least
/// `long` (none when `long` is None: then nothing is timed).
fn touch_timed(pages: usize, long: Option<Duration>, mut touch: impl FnMut(usize)) -> Vec<usize> {
    let mut slow = Vec::new();
    for i in 0..pages {
        match long {
            None => touch(i),
            Some(long) => {
                let start = Instant::now();
                touch(i);
                if start.elapsed() >= long {
                    slow.push(i);
                }
            }
        }
    }
    slow
}

fn handshake(start: *mut u8, len: usize, work: impl FnOnce() -> Vec<usize>) {
    let stdin = std::io::stdin();
    let mut line = String::new();
    println!("ready");
    std::io::stdout().flush().unwrap();
    stdin.lock().read_line(&mut line).unwrap();
    let long = work();
    let long = if long.is_empty() {
        "-".to_string()
    } else {
        long.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "done {:x} {:x} {long}",
        start as usize,
        start as usize + len
    );
    std::io::stdout().flush().unwrap();
    while stdin.lock().read_line(&mut line).is_ok_and(|n| n > 0) {}
}

/// Drops the file's pages from the page cache and checks that none is left:
/// POSIX_FADV_DONTNEED silently skips pages it cannot free at that moment.
fn drop_from_cache(fd: i32, p: *mut u8, pages: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut resident = vec![0u8; pages];
    loop {
        // SAFETY: advice on our own open file; mincore on our own mapping with a
        // vector of one byte per page.
        let rc = unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            die("posix_fadvise failed");
        }
        if unsafe { libc::mincore(p.cast(), pages * PAGE, resident.as_mut_ptr()) } != 0 {
            die(&format!("mincore: {}", std::io::Error::last_os_error()));
        }
        if resident.iter().all(|r| r & 1 == 0) {
            return;
        }
        if Instant::now() > deadline {
            die("pages of the file stay in the page cache");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pages_arg(s: Option<&String>) -> usize {
    s.and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| die("PAGES must be a positive number"))
}

fn main() {
    // $TOUCHER_COMM: a process name of the test's choosing.
    if let Ok(comm) = std::env::var("TOUCHER_COMM") {
        let name = std::ffi::CString::new(comm).unwrap_or_else(|_| die("bad TOUCHER_COMM"));
        // SAFETY: PR_SET_NAME with a NUL-terminated string (the kernel takes 15 bytes).
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let long = std::env::var("TOUCHER_LONG_NS")
        .ok()
        .map(|s| Duration::from_nanos(s.parse().unwrap_or_else(|_| die("bad TOUCHER_LONG_NS"))));
    match args.first().map(String::as_str) {
        Some("anon") => {
            let pages = pages_arg(args.get(1));
            let p = map(pages * PAGE, -1);
            handshake(p, pages * PAGE, || {
                touch_timed(pages, long, |i| {
                    // SAFETY: inside the mapping.
                    unsafe { std::ptr::write_volatile(p.add(i * PAGE), 1) };
                })
            });
        }
        Some("file") => {
            let path = args.get(1).unwrap_or_else(|| die("file PATH PAGES"));
            let pages = pages_arg(args.get(2));
            let file = std::fs::File::open(path).unwrap_or_else(|e| die(&format!("{path}: {e}")));
            use std::os::fd::AsRawFd as _;
            let fd = file.as_raw_fd();
            let p = map(pages * PAGE, fd);
            drop_from_cache(fd, p, pages);
            handshake(p, pages * PAGE, || {
                touch_timed(pages, long, |i| {
                    // SAFETY: inside the mapping.
                    std::hint::black_box(unsafe { read_page(p.add(i * PAGE)) });
                })
            });
        }
        Some("loop") => {
            let pages = pages_arg(args.get(1));
            let rounds = pages_arg(args.get(2));
            for _ in 0..rounds {
                let p = map(pages * PAGE, -1);
                touch_anon(p, pages);
                // SAFETY: unmapping what we mapped.
                unsafe { libc::munmap(p.cast(), pages * PAGE) };
            }
        }
        _ => die("usage: page-toucher anon PAGES | file PATH PAGES | loop PAGES ROUNDS"),
    }
}
