//! A FUSE filesystem served by the test itself, for outliers the test makes
//! rather than hopes for: reads that cover a chosen byte of a chosen file are
//! answered only after a chosen delay. A loop device on such a file gives block
//! I/Os whose latency the test knows (at least the delay); an mmapped file gives
//! major page faults that slow.
//!
//! The protocol is spoken directly over /dev/fuse (no libfuse, no Python): the
//! few requests a loop device and mmap need, ENOSYS for the rest. Files live in
//! memory. One thread reads requests; each delayed read is answered from a thread
//! of its own, so the delay holds up no other request.

use std::{
    ffi::CString,
    fs::{File, OpenOptions},
    io::Read as _,
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::host::unique_name;

/// How the kernel may cache a file's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caching {
    /// FOPEN_DIRECT_IO: every read reaches the server (for loop-device backing
    /// files: a block read is a FUSE read, never a page-cache hit).
    Direct,
    /// The page cache: an mmap of the file takes major faults that read through
    /// the server, one page at a time (no readahead is granted at INIT).
    Cached,
}

/// A file of the filesystem.
pub struct FileSpec {
    pub name: &'static str,
    pub size: u64,
    pub caching: Caching,
}

/// A read the server delayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelayedRead {
    pub file: &'static str,
    pub offset: u64,
    pub len: u32,
    /// The thread that caused it, as FUSE reports it (a kworker for loop I/O).
    pub pid: u32,
}

struct Node {
    spec: FileSpec,
    data: Mutex<Vec<u8>>,
    /// (byte offset, delay): a read covering the byte waits that long.
    slow: Mutex<Vec<(u64, Duration)>>,
}

struct Shared {
    nodes: Vec<Node>,
    delayed: Mutex<Vec<DelayedRead>>,
    served_reads: AtomicU32,
    /// (file, byte offset): a read covering the byte waits until released.
    held: Mutex<Vec<(&'static str, u64)>>,
    released: Condvar,
}

/// A mounted test filesystem; unmounted on drop.
pub struct SlowFs {
    pub mountpoint: PathBuf,
    shared: Arc<Shared>,
}

// Opcodes and flags of include/uapi/linux/fuse.h.
const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const SETATTR: u32 = 4;
const OPEN: u32 = 14;
const READ: u32 = 15;
const WRITE: u32 = 16;
const STATFS: u32 = 17;
const RELEASE: u32 = 18;
const FSYNC: u32 = 20;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const OPENDIR: u32 = 27;
const READDIR: u32 = 28;
const RELEASEDIR: u32 = 29;
const INTERRUPT: u32 = 36;
const DESTROY: u32 = 38;
const BATCH_FORGET: u32 = 42;

const FOPEN_DIRECT_IO: u32 = 1;
const FUSE_BIG_WRITES: u32 = 1 << 5;
const FUSE_MAX_PAGES: u32 = 1 << 22;

const ROOT: u64 = 1;
const IN_HEADER: usize = 40;
const MAX_WRITE: u32 = 1 << 20;
/// Entries and attributes never change behind the kernel's back.
const VALID_S: u64 = 3600;

impl SlowFs {
    /// Mounts a new filesystem with these files (zero-filled) on a fresh directory.
    #[track_caller]
    pub fn mount(files: Vec<FileSpec>) -> SlowFs {
        let mountpoint = std::env::temp_dir().join(unique_name("fuse"));
        std::fs::create_dir_all(&mountpoint).expect("creating the FUSE mountpoint");
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("opening /dev/fuse");
        let opts = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
            dev.as_raw_fd()
        );
        let c = |s: &str| CString::new(s).unwrap();
        let target = c(mountpoint.to_str().unwrap());
        let (src, fstype, data) = (c("tracer-test"), c("fuse"), c(&opts));
        // SAFETY: valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting FUSE on {}: {}",
            mountpoint.display(),
            std::io::Error::last_os_error()
        );
        let shared = Arc::new(Shared {
            nodes: files
                .into_iter()
                .map(|spec| Node {
                    data: Mutex::new(vec![0; spec.size as usize]),
                    spec,
                    slow: Mutex::new(Vec::new()),
                })
                .collect(),
            delayed: Mutex::new(Vec::new()),
            served_reads: AtomicU32::new(0),
            held: Mutex::new(Vec::new()),
            released: Condvar::new(),
        });
        let server = Arc::clone(&shared);
        thread::Builder::new()
            .name("fuse-server".into())
            .spawn(move || serve(dev, &server))
            .expect("starting the FUSE server");
        SlowFs { mountpoint, shared }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.node(name);
        self.mountpoint.join(name)
    }

    #[track_caller]
    fn node(&self, name: &str) -> &Node {
        self.shared
            .nodes
            .iter()
            .find(|n| n.spec.name == name)
            .unwrap_or_else(|| panic!("no file {name} in the test filesystem"))
    }

    /// From now on, reads of `name` that cover byte `offset` wait `delay` first.
    pub fn slow_down(&self, name: &str, offset: u64, delay: Duration) {
        self.node(name).slow.lock().unwrap().push((offset, delay));
    }

    /// From now on, reads of `name` that cover byte `offset` are answered
    /// only once `release` is called: I/Os kept in flight for as long as the
    /// test needs, whatever the machine's speed.
    pub fn hold(&self, name: &str, offset: u64) {
        let name = self.node(name).spec.name;
        self.shared.held.lock().unwrap().push((name, offset));
    }

    /// Answers the reads `hold` kept waiting, and later ones at once.
    pub fn release(&self, name: &str, offset: u64) {
        let mut held = self.shared.held.lock().unwrap();
        held.retain(|h| *h != (name, offset));
        self.shared.released.notify_all();
    }

    /// Releases every held read (so nothing stays stuck after a failed test).
    pub fn release_all(&self) {
        self.shared.held.lock().unwrap().clear();
        self.shared.released.notify_all();
    }

    /// Fills a file's contents directly (not through the kernel).
    pub fn fill(&self, name: &str, byte: u8) {
        self.node(name).data.lock().unwrap().fill(byte);
    }

    /// The reads delayed so far.
    pub fn delayed(&self) -> Vec<DelayedRead> {
        self.shared.delayed.lock().unwrap().clone()
    }

    /// READ requests answered so far (delayed or not).
    pub fn reads_served(&self) -> u32 {
        self.shared.served_reads.load(Ordering::Relaxed)
    }
}

impl Drop for SlowFs {
    fn drop(&mut self) {
        self.release_all();
        let target = CString::new(self.mountpoint.to_str().unwrap()).unwrap();
        // SAFETY: valid path. A lazy unmount: whatever still holds the mount (a
        // loop device the test failed to detach) cannot keep this from returning.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&self.mountpoint);
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
}

/// A reply: fuse_out_header then the body, in one write (the device takes a
/// reply in one piece).
fn reply(dev: &File, unique: u64, error: i32, body: &[u8]) {
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&(-error).to_ne_bytes());
    msg.extend_from_slice(&unique.to_ne_bytes());
    msg.extend_from_slice(body);
    // SAFETY: writing our own buffer to our own fd. An error (ENOENT) means the
    // request was interrupted or the mount is going away: nothing to do.
    let _ = unsafe { libc::write(dev.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
}

/// struct fuse_attr (88 bytes).
fn attr(ino: u64, size: u64, mode: u32) -> Vec<u8> {
    let mut a = Vec::with_capacity(88);
    for v in [ino, size, size.div_ceil(512), 0, 0, 0] {
        a.extend_from_slice(&v.to_ne_bytes());
    }
    let nlink = if mode & libc::S_IFDIR != 0 { 2 } else { 1 };
    for v in [0u32, 0, 0, mode, nlink, 0, 0, 0, 4096, 0] {
        a.extend_from_slice(&v.to_ne_bytes());
    }
    a
}

fn node_attr(shared: &Shared, ino: u64) -> Option<Vec<u8>> {
    if ino == ROOT {
        return Some(attr(ROOT, 0, libc::S_IFDIR | 0o755));
    }
    let node = shared.nodes.get(ino.checked_sub(2)? as usize)?;
    Some(attr(ino, node.spec.size, libc::S_IFREG | 0o644))
}

/// struct fuse_attr_out.
fn attr_out(a: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(104);
    out.extend_from_slice(&VALID_S.to_ne_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(a);
    out
}

fn serve(dev: File, shared: &Arc<Shared>) {
    let mut buf = vec![0u8; MAX_WRITE as usize + 4096];
    loop {
        let n = match (&dev).read(&mut buf) {
            Ok(n) => n,
            // Interrupted, or a request withdrawn before we read it.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ENOENT)) => continue,
            // ENODEV: unmounted.
            Err(_) => return,
        };
        if n < IN_HEADER {
            continue;
        }
        let req = &buf[..n];
        let (opcode, unique, ino) = (u32_at(req, 4), u64_at(req, 8), u64_at(req, 16));
        let pid = u32_at(req, 32);
        let body = &req[IN_HEADER..];
        match opcode {
            INIT => {
                // fuse_init_out: 7.31, no readahead (one FUSE read per faulted
                // page), 1 MiB requests.
                let mut out = Vec::with_capacity(64);
                for v in [7u32, 31, 0, FUSE_BIG_WRITES | FUSE_MAX_PAGES] {
                    out.extend_from_slice(&v.to_ne_bytes());
                }
                out.extend_from_slice(&16u16.to_ne_bytes()); // max_background
                out.extend_from_slice(&12u16.to_ne_bytes()); // congestion_threshold
                out.extend_from_slice(&MAX_WRITE.to_ne_bytes());
                out.extend_from_slice(&1u32.to_ne_bytes()); // time_gran
                out.extend_from_slice(&((MAX_WRITE / 4096) as u16).to_ne_bytes()); // max_pages
                out.resize(64, 0);
                reply(&dev, unique, 0, &out);
            }
            LOOKUP => {
                let name = body.split(|&b| b == 0).next().unwrap_or_default();
                match shared
                    .nodes
                    .iter()
                    .position(|n| n.spec.name.as_bytes() == name)
                {
                    Some(i) if ino == ROOT => {
                        let ino = i as u64 + 2;
                        let mut out = Vec::with_capacity(128);
                        for v in [ino, 0, VALID_S, VALID_S] {
                            out.extend_from_slice(&v.to_ne_bytes());
                        }
                        out.extend_from_slice(&[0; 8]);
                        out.extend_from_slice(&node_attr(shared, ino).unwrap());
                        reply(&dev, unique, 0, &out);
                    }
                    _ => reply(&dev, unique, libc::ENOENT, &[]),
                }
            }
            GETATTR | SETATTR => match node_attr(shared, ino) {
                Some(a) => reply(&dev, unique, 0, &attr_out(&a)),
                None => reply(&dev, unique, libc::ENOENT, &[]),
            },
            OPEN | OPENDIR => {
                let flags = match shared.nodes.get(ino.wrapping_sub(2) as usize) {
                    Some(n) if n.spec.caching == Caching::Direct => FOPEN_DIRECT_IO,
                    _ => 0,
                };
                let mut out = vec![0u8; 16];
                out[8..12].copy_from_slice(&flags.to_ne_bytes());
                reply(&dev, unique, 0, &out);
            }
            READ => {
                let (offset, size) = (u64_at(body, 8), u32_at(body, 16));
                let Some(node) = shared.nodes.get(ino.wrapping_sub(2) as usize) else {
                    reply(&dev, unique, libc::ENOENT, &[]);
                    continue;
                };
                let data = {
                    let d = node.data.lock().unwrap();
                    let start = (offset as usize).min(d.len());
                    let end = (offset as usize + size as usize).min(d.len());
                    d[start..end].to_vec()
                };
                shared.served_reads.fetch_add(1, Ordering::Relaxed);
                let delay = node
                    .slow
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(at, _)| (offset..offset + size as u64).contains(at))
                    .map(|(_, d)| *d)
                    .max();
                let (file, range) = (node.spec.name, offset..offset + size as u64);
                let covers = move |(name, at): &(&str, u64)| *name == file && range.contains(at);
                let held = shared.held.lock().unwrap().iter().any(covers.clone());
                if !held && delay.is_none() {
                    reply(&dev, unique, 0, &data);
                    continue;
                }
                shared.delayed.lock().unwrap().push(DelayedRead {
                    file,
                    offset,
                    len: size,
                    pid,
                });
                let dev = dev.try_clone().expect("dup /dev/fuse");
                let shared = Arc::clone(shared);
                let until = Instant::now() + delay.unwrap_or_default();
                thread::spawn(move || {
                    if held {
                        let mut held = shared.held.lock().unwrap();
                        while held.iter().any(covers.clone()) {
                            held = shared.released.wait(held).unwrap();
                        }
                    } else {
                        // sleep may wake early on a signal: wait the full delay.
                        while let Some(left) = until.checked_duration_since(Instant::now()) {
                            thread::sleep(left);
                        }
                    }
                    reply(&dev, unique, 0, &data);
                });
            }
            WRITE => {
                let (offset, size) = (u64_at(body, 8) as usize, u32_at(body, 16) as usize);
                let payload = &body[40..40 + size];
                match shared.nodes.get(ino.wrapping_sub(2) as usize) {
                    Some(node) => {
                        let mut d = node.data.lock().unwrap();
                        let end = (offset + size).min(d.len());
                        if offset < end {
                            d[offset..end].copy_from_slice(&payload[..end - offset]);
                        }
                        let mut out = vec![0u8; 8];
                        out[..4].copy_from_slice(&(size as u32).to_ne_bytes());
                        reply(&dev, unique, 0, &out);
                    }
                    None => reply(&dev, unique, libc::ENOENT, &[]),
                }
            }
            READDIR => {
                // Entries from the requested index on (off = index of the next one).
                let (start, size) = (u64_at(body, 8) as usize, u32_at(body, 16) as usize);
                let mut out = Vec::new();
                for (i, node) in shared.nodes.iter().enumerate().skip(start) {
                    let name = node.spec.name.as_bytes();
                    let len = (24 + name.len()).next_multiple_of(8);
                    if out.len() + len > size {
                        break;
                    }
                    for v in [i as u64 + 2, i as u64 + 1] {
                        out.extend_from_slice(&v.to_ne_bytes());
                    }
                    out.extend_from_slice(&(name.len() as u32).to_ne_bytes());
                    out.extend_from_slice(&(libc::DT_REG as u32).to_ne_bytes());
                    out.extend_from_slice(name);
                    out.resize(out.len().next_multiple_of(8), 0);
                }
                reply(&dev, unique, 0, &out);
            }
            STATFS => {
                let mut out = vec![0u8; 80];
                out[40..44].copy_from_slice(&4096u32.to_ne_bytes()); // bsize
                out[44..48].copy_from_slice(&255u32.to_ne_bytes()); // namelen
                out[48..52].copy_from_slice(&4096u32.to_ne_bytes()); // frsize
                reply(&dev, unique, 0, &out);
            }
            RELEASE | RELEASEDIR | FLUSH | FSYNC | DESTROY => reply(&dev, unique, 0, &[]),
            // No reply is expected to these.
            FORGET | BATCH_FORGET | INTERRUPT => {}
            _ => reply(&dev, unique, libc::ENOSYS, &[]),
        }
    }
}

/// A loop device backed by a file on a `SlowFs` (one 64 MiB disk): the block I/Os
/// that read a slowed-down byte take at least the delay, the others go through
/// the FUSE server untouched. Drops the loop device before the filesystem.
pub struct SlowDisk {
    pub dev: crate::block::LoopDevice,
    pub fs: SlowFs,
}

pub const SLOW_DISK_FILE: &str = "disk.img";

impl SlowDisk {
    #[track_caller]
    pub fn new(size_mb: u64) -> SlowDisk {
        let fs = SlowFs::mount(vec![FileSpec {
            name: SLOW_DISK_FILE,
            size: size_mb << 20,
            caching: Caching::Direct,
        }]);
        let dev = crate::block::LoopDevice::on_file(&fs.path(SLOW_DISK_FILE));
        SlowDisk { dev, fs }
    }

    /// Block reads covering this byte of the disk take at least `delay`.
    pub fn slow_down(&self, offset: u64, delay: Duration) {
        self.fs.slow_down(SLOW_DISK_FILE, offset, delay);
    }

    /// Block reads covering this byte wait until `release` (see SlowFs::hold).
    pub fn hold(&self, offset: u64) {
        self.fs.hold(SLOW_DISK_FILE, offset);
    }

    pub fn release(&self, offset: u64) {
        self.fs.release(SLOW_DISK_FILE, offset);
    }
}

impl Drop for SlowDisk {
    /// Held reads are answered before the loop device is detached.
    fn drop(&mut self) {
        self.fs.release_all();
    }
}

/// A file of `pages` pages on a `SlowFs`, cached by the kernel: mmapped, each
/// page not yet cached is read through the server by a major fault.
pub struct SlowFile {
    pub fs: SlowFs,
    pub path: PathBuf,
}

pub const SLOW_FILE: &str = "mapped.bin";

impl SlowFile {
    #[track_caller]
    pub fn new(pages: u64) -> SlowFile {
        let fs = SlowFs::mount(vec![FileSpec {
            name: SLOW_FILE,
            size: pages * 4096,
            caching: Caching::Cached,
        }]);
        fs.fill(SLOW_FILE, 7);
        let path = fs.path(SLOW_FILE);
        SlowFile { fs, path }
    }

    /// Reading page `page` (a fault on it) takes at least `delay`.
    pub fn slow_down_page(&self, page: u64, delay: Duration) {
        self.fs.slow_down(SLOW_FILE, page * 4096, delay);
    }
}
