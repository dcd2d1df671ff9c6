//! A process that takes page faults on request, for the page-fault tools' tests
//! and benchmarks.
//!
//!   page-toucher anon PAGES        map PAGES anonymous pages, write each once
//!   page-toucher file PATH PAGES   map PATH, drop it from the page cache, read one
//!                                  byte of each of its first PAGES pages
//!   page-toucher loop PAGES ROUNDS anon, ROUNDS times (map, touch, unmap), no
//!                                  handshake: for benchmarks
//!
//! Handshake (anon, file): prints "ready", waits for a line on stdin, faults,
//! prints "done START END" (the mapping's address range, hex), then waits for
//! stdin to close so the test can read /proc/PID/maps meanwhile.

use std::io::{BufRead as _, Write as _};

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

fn touch_file(p: *mut u8, pages: usize) -> u64 {
    let mut sum = 0u64;
    for i in 0..pages {
        // SAFETY: inside the mapping.
        sum += unsafe { std::ptr::read_volatile(p.add(i * PAGE)) } as u64;
    }
    sum
}

fn handshake(start: *mut u8, len: usize, work: impl FnOnce()) {
    let stdin = std::io::stdin();
    let mut line = String::new();
    println!("ready");
    std::io::stdout().flush().unwrap();
    stdin.lock().read_line(&mut line).unwrap();
    work();
    println!("done {:x} {:x}", start as usize, start as usize + len);
    std::io::stdout().flush().unwrap();
    while stdin.lock().read_line(&mut line).is_ok_and(|n| n > 0) {}
}

fn pages_arg(s: Option<&String>) -> usize {
    s.and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| die("PAGES must be a positive number"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("anon") => {
            let pages = pages_arg(args.get(1));
            let p = map(pages * PAGE, -1);
            handshake(p, pages * PAGE, || touch_anon(p, pages));
        }
        Some("file") => {
            let path = args.get(1).unwrap_or_else(|| die("file PATH PAGES"));
            let pages = pages_arg(args.get(2));
            let file = std::fs::File::open(path).unwrap_or_else(|e| die(&format!("{path}: {e}")));
            use std::os::fd::AsRawFd as _;
            let fd = file.as_raw_fd();
            // SAFETY: advice on our own open file.
            if unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) } != 0 {
                die("posix_fadvise failed");
            }
            let p = map(pages * PAGE, fd);
            handshake(p, pages * PAGE, || {
                std::hint::black_box(touch_file(p, pages));
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
