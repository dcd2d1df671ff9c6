//! Block-device workloads the tests create and clean up themselves: loop
//! devices on tmpfs, O_DIRECT I/O that nothing merges, a `dd` child process,
//! and an ext4 filesystem on a loop device.

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::Mutex,
    time::Duration,
};

use crate::{host::unique_name, measure::timed, sh};

/// Loop devices are attached one at a time: `losetup -f` can hand the same free
/// device to two concurrent callers.
static LOSETUP: Mutex<()> = Mutex::new(());

/// A loop device backed by a file on tmpfs (/dev/shm), detached and removed on drop.
pub struct LoopDevice {
    pub path: String,
    pub name: String,
    /// The backing file, removed on drop when the device made it.
    made_backing: Option<PathBuf>,
}

impl LoopDevice {
    #[track_caller]
    pub fn new(size_mb: u64) -> LoopDevice {
        let backing = PathBuf::from(format!("/dev/shm/{}.img", unique_name("loop")));
        let file = File::create(&backing).expect("creating the backing file");
        file.set_len(size_mb << 20).unwrap();
        drop(file);
        match LoopDevice::attach(&backing) {
            Ok(mut dev) => {
                dev.made_backing = Some(backing);
                dev
            }
            Err(e) => {
                let _ = std::fs::remove_file(&backing);
                panic!("{e}");
            }
        }
    }

    /// A loop device on an existing file (e.g. on a `fuse::SlowFs`).
    #[track_caller]
    pub fn on_file(backing: &Path) -> LoopDevice {
        LoopDevice::attach(backing).unwrap_or_else(|e| panic!("{e}"))
    }

    fn attach(backing: &Path) -> Result<LoopDevice, String> {
        let _guard = LOSETUP.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(backing)
            .output()
            .expect("losetup");
        if !out.status.success() {
            return Err(format!(
                "losetup {} failed: {}",
                backing.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let name = path.trim_start_matches("/dev/").to_string();
        // Where udev runs, it probes (reads) a new device: let that finish before
        // the test counts the device's I/O.
        let _ = Command::new("udevadm")
            .args(["settle", "--timeout=30"])
            .status();
        Ok(LoopDevice {
            path,
            name,
            made_backing: None,
        })
    }

    /// Opens the device for O_DIRECT I/O.
    pub fn open_direct(&self) -> DirectIo {
        DirectIo::open(Path::new(&self.path))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _guard = LOSETUP.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
        if let Some(backing) = &self.made_backing {
            let _ = std::fs::remove_file(backing);
        }
    }
}

/// O_DIRECT I/O with a page-aligned buffer: each call is one request that
/// nothing merges with, issued by the calling thread.
pub struct DirectIo {
    file: File,
    buf: *mut u8,
    cap: usize,
}

const DIRECT_BUF: usize = 1 << 20;

impl DirectIo {
    pub fn open(path: &Path) -> DirectIo {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .unwrap_or_else(|e| panic!("opening {} O_DIRECT: {e}", path.display()));
        let layout = std::alloc::Layout::from_size_align(DIRECT_BUF, 4096).unwrap();
        // SAFETY: non-zero size layout.
        let buf = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!buf.is_null());
        DirectIo {
            file,
            buf,
            cap: DIRECT_BUF,
        }
    }

    fn buf(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.cap);
        // SAFETY: buf is a live allocation of cap bytes.
        unsafe { std::slice::from_raw_parts_mut(self.buf, len) }
    }

    #[track_caller]
    pub fn write(&mut self, offset: u64, len: usize) {
        let file = self.file.try_clone().unwrap();
        let n = file.write_at(self.buf(len), offset).expect("direct write");
        assert_eq!(n, len);
    }

    #[track_caller]
    pub fn read(&mut self, offset: u64, len: usize) {
        let file = self.file.try_clone().unwrap();
        let n = file.read_at(self.buf(len), offset).expect("direct read");
        assert_eq!(n, len);
    }
}

impl Drop for DirectIo {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.cap, 4096).unwrap();
        // SAFETY: allocated in open() with this layout.
        unsafe { std::alloc::dealloc(self.buf, layout) };
    }
}

/// The standard block workload: `writes` sequential 4 KiB O_DIRECT writes from
/// offset 0, then `reads` 64 KiB O_DIRECT reads from 1 MiB on, one at a time.
pub const W_SIZE: u64 = 4096;
pub const R_SIZE: u64 = 65536;
pub const R_BASE: u64 = 1 << 20;

pub fn block_workload(dev: &LoopDevice, writes: u64, reads: u64) {
    let mut io = dev.open_direct();
    for i in 0..writes {
        io.write(i * W_SIZE, W_SIZE as usize);
    }
    for j in 0..reads {
        io.read(R_BASE + j * R_SIZE, R_SIZE as usize);
    }
}

/// `block_workload`, timing each syscall: returns the longest (which bounds the
/// latency of every block I/O of the workload: each lies within its syscall).
pub fn block_workload_timed(dev: &LoopDevice, writes: u64, reads: u64) -> Duration {
    let mut io = dev.open_direct();
    let mut longest = Duration::ZERO;
    for i in 0..writes {
        longest = longest.max(timed(|| io.write(i * W_SIZE, W_SIZE as usize)));
    }
    for j in 0..reads {
        longest = longest.max(timed(|| io.read(R_BASE + j * R_SIZE, R_SIZE as usize)));
    }
    longest
}

/// Starts a child process (`dd`) writing `count` 4 KiB O_DIRECT blocks to the
/// device at `offset_blocks`; returns it so the test knows its pid.
pub fn dd_writer(dev: &LoopDevice, count: u64, offset_blocks: u64) -> Child {
    Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", dev.path))
        .args(["bs=4096", "oflag=direct", "status=none"])
        .arg(format!("count={count}"))
        .arg(format!("seek={offset_blocks}"))
        .spawn()
        .expect("starting dd")
}

/// An ext4 filesystem on a loop device (a real block device, so file pages dropped
/// from the page cache come back through major faults), unmounted on drop.
pub struct Ext4 {
    pub mountpoint: PathBuf,
    _dev: LoopDevice,
}

impl Ext4 {
    #[track_caller]
    pub fn new(size_mb: u64) -> Ext4 {
        let dev = LoopDevice::new(size_mb);
        sh(&format!("mkfs.ext4 -q -F {}", dev.path));
        let mountpoint = std::env::temp_dir().join(format!("tracer-ext4-{}", dev.name));
        std::fs::create_dir_all(&mountpoint).unwrap();
        sh(&format!("mount {} {}", dev.path, mountpoint.display()));
        Ext4 {
            mountpoint,
            _dev: dev,
        }
    }

    /// Writes a file of `pages` 4 KiB pages and makes it durable.
    pub fn write_file(&self, name: &str, pages: usize) -> PathBuf {
        let path = self.mountpoint.join(name);
        let data = vec![7u8; pages * 4096];
        std::fs::write(&path, &data).unwrap();
        File::open(&path).unwrap().sync_all().unwrap();
        path
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mountpoint).status();
        let _ = std::fs::remove_dir(&self.mountpoint);
    }
}
