//! A tiny, deterministic KVM guest for the kvmexits tests: 16-bit real-mode code
//! that does a chosen number of port writes, MMIO writes, CPUIDs, RDMSRs and
//! WRMSRs, then halts. It runs on its own thread named "CPU 0/KVM", as qemu's
//! vCPU threads are, so the tools see the same COMM they would see for qemu.
//!
//! KVM is driven through raw ioctls (libc only): the handful of structures the
//! guest needs are declared below from linux/kvm.h (x86_64), with their sizes
//! checked at compile time.
//!
//! Speed: under kvm_pvm (this machine's KVM, which emulates the real-mode guest
//! one instruction at a time: kvm:kvm_emulate_insn fires per guest instruction)
//! an exit to userspace costs about 10–12 µs and a CPUID/RDMSR/WRMSR loop
//! iteration 2.5–6.5 µs, so 10,000,000 of one kind take one to two minutes.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    thread,
};

use anyhow::{Context as _, bail, ensure};

/// What the guest does, in this order, before `hlt`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestProgram {
    /// `out dx,al` to port 0x3f8: one KVM_EXIT_IO each.
    pub outs: u32,
    /// `mov [0x8000],al` to unbacked guest-physical memory: a KVM_EXIT_MMIO
    /// each (exactly one here, kvm_pvm included; tests rely on "at least one").
    pub mmio_writes: u32,
    /// `cpuid` with eax=0: handled in the kernel (kvm:kvm_cpuid). The VM has no
    /// CPUID table (no KVM_SET_CPUID2), so it reads zeros and the tracepoint
    /// says found=0.
    pub cpuids: u32,
    /// `rdmsr` of IA32_TIME_STAMP_COUNTER (0x10): handled in the kernel.
    pub rdmsrs: u32,
    /// `wrmsr` of 0 to IA32_SYSENTER_CS (0x174): handled in the kernel.
    pub wrmsrs: u32,
}

/// What a guest run saw from userspace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestRun {
    /// KVM_EXIT_* reason → how many KVM_RUN calls returned with it.
    pub exit_counts: BTreeMap<u32, u64>,
    pub io_exits: u64,
    pub mmio_exits: u64,
    /// The guest reached its final `hlt`.
    pub hlt: bool,
    /// Kernel thread id of the "CPU 0/KVM" thread that ran KVM_RUN.
    pub vcpu_tid: u32,
    pub pid: u32,
}

/// The name of the vCPU thread (qemu names its vCPU threads "CPU <n>/KVM").
pub const VCPU_THREAD_NAME: &str = "CPU 0/KVM";

pub const KVM_EXIT_UNKNOWN: u32 = 0;
pub const KVM_EXIT_EXCEPTION: u32 = 1;
pub const KVM_EXIT_IO: u32 = 2;
pub const KVM_EXIT_HYPERCALL: u32 = 3;
pub const KVM_EXIT_DEBUG: u32 = 4;
pub const KVM_EXIT_HLT: u32 = 5;
pub const KVM_EXIT_MMIO: u32 = 6;
pub const KVM_EXIT_IRQ_WINDOW_OPEN: u32 = 7;
pub const KVM_EXIT_SHUTDOWN: u32 = 8;
pub const KVM_EXIT_FAIL_ENTRY: u32 = 9;
pub const KVM_EXIT_INTR: u32 = 10;
pub const KVM_EXIT_INTERNAL_ERROR: u32 = 17;

/// The guest's fixed addresses (guest-physical; real mode with all segment bases 0).
const CODE_ADDR: u64 = 0x1000;
const CODE_SIZE: usize = 0x1000;
/// Outside every memory slot, so a store there exits as MMIO.
pub const MMIO_ADDR: u64 = 0x8000;
pub const SERIAL_PORT: u16 = 0x3f8;
pub const MSR_TSC: u32 = 0x10;
/// IA32_SYSENTER_CS: KVM emulates it in the kernel and accepts any value.
pub const MSR_SYSENTER_CS: u32 = 0x174;

// ioctl request numbers from linux/kvm.h (checked against the header with a C program).
const KVM_GET_API_VERSION: u64 = 0xae00;
const KVM_CREATE_VM: u64 = 0xae01;
const KVM_GET_VCPU_MMAP_SIZE: u64 = 0xae04;
const KVM_CREATE_VCPU: u64 = 0xae41;
const KVM_SET_USER_MEMORY_REGION: u64 = 0x4020_ae46;
const KVM_RUN: u64 = 0xae80;
const KVM_GET_REGS: u64 = 0x8090_ae81;
const KVM_SET_REGS: u64 = 0x4090_ae82;
const KVM_GET_SREGS: u64 = 0x8138_ae83;
const KVM_SET_SREGS: u64 = 0x4138_ae84;
/// The only stable KVM API version there has ever been.
const KVM_API_VERSION: i32 = 12;

#[repr(C)]
#[derive(Default)]
struct KvmUserspaceMemoryRegion {
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KvmRegs {
    rax: u64,
    rbx: u64,
    rcx: u64,
    rdx: u64,
    rsi: u64,
    rdi: u64,
    rsp: u64,
    rbp: u64,
    r8_15: [u64; 8],
    rip: u64,
    rflags: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KvmSegment {
    base: u64,
    limit: u32,
    selector: u16,
    type_: u8,
    present: u8,
    dpl: u8,
    db: u8,
    s: u8,
    l: u8,
    g: u8,
    avl: u8,
    unusable: u8,
    padding: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KvmDtable {
    base: u64,
    limit: u16,
    padding: [u16; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KvmSregs {
    cs: KvmSegment,
    ds: KvmSegment,
    es: KvmSegment,
    fs: KvmSegment,
    gs: KvmSegment,
    ss: KvmSegment,
    tr: KvmSegment,
    ldt: KvmSegment,
    gdt: KvmDtable,
    idt: KvmDtable,
    cr0: u64,
    cr2: u64,
    cr3: u64,
    cr4: u64,
    cr8: u64,
    efer: u64,
    apic_base: u64,
    interrupt_bitmap: [u64; 4],
}

const _: () = assert!(size_of::<KvmUserspaceMemoryRegion>() == 32);
const _: () = assert!(size_of::<KvmRegs>() == 144);
const _: () = assert!(size_of::<KvmSegment>() == 24);
const _: () = assert!(size_of::<KvmSregs>() == 312);

// Offsets into struct kvm_run (the vCPU's shared page), from linux/kvm.h.
const RUN_EXIT_REASON: usize = 8;
const RUN_IO_DIRECTION: usize = 32;
const RUN_IO_PORT: usize = 34;
const RUN_IO_COUNT: usize = 36;
const RUN_MMIO_PHYS_ADDR: usize = 32;
const RUN_MMIO_IS_WRITE: usize = 52;
const RUN_INTERNAL_SUBERROR: usize = 32;
const RUN_INTERNAL_NDATA: usize = 36;
const RUN_INTERNAL_DATA: usize = 40;
const RUN_FAIL_ENTRY_REASON: usize = 32;
const KVM_EXIT_IO_OUT: u8 = 1;

/// ioctl with an integer (or no) argument; returns the non-negative result.
fn ioctl_val(fd: RawFd, request: u64, arg: libc::c_ulong, what: &str) -> anyhow::Result<i32> {
    // SAFETY: these requests take an integer argument, not a pointer.
    let r = unsafe { libc::ioctl(fd, request as _, arg) };
    if r < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(r)
}

/// The `repr(C)` structures above, which KVM ioctls read or write whole.
///
/// # Safety
/// Implementors must be `repr(C)` plain data for which any bytes are valid.
unsafe trait KvmStruct {}
// SAFETY: repr(C) structs of integers only.
unsafe impl KvmStruct for KvmUserspaceMemoryRegion {}
// SAFETY: as above.
unsafe impl KvmStruct for KvmRegs {}
// SAFETY: as above.
unsafe impl KvmStruct for KvmSregs {}

/// ioctl that reads or writes `*arg`. Checks that `arg` is exactly as large as
/// the size encoded in `request` (_IOC_SIZE), which is what the kernel copies.
fn ioctl_ptr<T: KvmStruct>(fd: RawFd, request: u64, arg: &mut T, what: &str) -> anyhow::Result<()> {
    assert_eq!(
        (request >> 16) & 0x3fff,
        size_of::<T>() as u64,
        "{what}: wrong argument type"
    );
    // SAFETY: arg is a live, exclusive T of the size the request names, and any
    // bytes the kernel writes there are a valid T (KvmStruct).
    let r = unsafe { libc::ioctl(fd, request as _, std::ptr::from_mut(arg)) };
    if r < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Wraps a file descriptor a KVM ioctl just returned.
fn owned_fd(fd: i32) -> OwnedFd {
    // SAFETY: fd was just created by the kernel for us and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A memory mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize, flags: i32, fd: RawFd, what: &str) -> anyhow::Result<Mapping> {
        // SAFETY: a fresh mapping at an address of the kernel's choosing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!("mmap {what}: {}", std::io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Reads a field the kernel may have written during the last ioctl.
    fn read<T: Copy>(&self, offset: usize) -> T {
        assert!(offset + size_of::<T>() <= self.len && offset.is_multiple_of(align_of::<T>()));
        // SAFETY: in bounds and aligned (checked above; the mapping is page-aligned);
        // volatile because the kernel, not this program, writes it.
        unsafe { std::ptr::read_volatile(self.ptr.add(offset).cast::<T>()) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nothing borrows it any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn open_kvm() -> Result<File, String> {
    let kvm = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let version = ioctl_val(
        kvm.as_raw_fd(),
        KVM_GET_API_VERSION,
        0,
        "KVM_GET_API_VERSION",
    )
    .map_err(|e| e.to_string())?;
    if version != KVM_API_VERSION {
        return Err(format!(
            "/dev/kvm has API version {version}, expected {KVM_API_VERSION}"
        ));
    }
    Ok(kvm)
}

/// Whether this machine can run the test guest: /dev/kvm opens and a VM can be
/// created. The error says why not.
fn kvm_available() -> Result<(), String> {
    let kvm = open_kvm()?;
    let vm = ioctl_val(kvm.as_raw_fd(), KVM_CREATE_VM, 0, "KVM_CREATE_VM")
        .map_err(|e| format!("cannot create a VM: {e}"))?;
    drop(owned_fd(vm));
    Ok(())
}

/// Whether a KVM test can run here. Outside CI it may skip (returns false after
/// saying why); with CI=true it fails instead (like `can_trace`). Probed once
/// per process: the probe's VM is a KVM fd that a test counting its own must
/// not see from another test's thread.
pub fn can_run_kvm() -> bool {
    static AVAILABLE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    match AVAILABLE.get_or_init(kvm_available).clone() {
        Ok(()) => true,
        Err(why) if crate::in_ci() => panic!("cannot run with CI=true: {why}"),
        Err(why) => {
            eprintln!("SKIPPED: needs KVM: {why}");
            false
        }
    }
}

/// Returns early from a test that cannot run a KVM guest here (see `can_run_kvm`).
#[macro_export]
macro_rules! require_kvm {
    () => {
        if !$crate::kvm::can_run_kvm() {
            return;
        }
    };
}

/// Appends `mov esi,n; body: <body>; dec esi; jnz body` (nothing when n is 0).
/// 32-bit counter (0x66 operand-size prefix in 16-bit code), so n may be any u32.
fn counted_loop(code: &mut Vec<u8>, n: u32, body: &[u8]) {
    if n == 0 {
        return;
    }
    code.extend([0x66, 0xbe]); // mov esi, imm32
    code.extend(n.to_le_bytes());
    code.extend(body);
    code.extend([0x66, 0x4e]); // dec esi
    let back = body.len() + 2 + 2; // body + dec + the jnz itself
    let rel = i8::try_from(-(back as i32)).expect("loop body too long for jnz rel8");
    code.extend([0x75, rel as u8]); // jnz body
}

/// The guest's 16-bit real-mode machine code, loaded at CODE_ADDR; ends with `hlt`.
pub fn guest_code(p: &GuestProgram) -> Vec<u8> {
    let mut code = Vec::new();
    let [port_lo, port_hi] = SERIAL_PORT.to_le_bytes();
    code.extend([0xba, port_lo, port_hi]); // mov dx, 0x3f8
    counted_loop(&mut code, p.outs, &[0xee]); // out dx, al
    let [mmio_lo, mmio_hi] = u16::try_from(MMIO_ADDR).unwrap().to_le_bytes();
    counted_loop(&mut code, p.mmio_writes, &[0xa2, mmio_lo, mmio_hi]); // mov [0x8000], al
    counted_loop(
        &mut code,
        p.cpuids,
        &[
            0x66, 0x31, 0xc0, // xor eax, eax (cpuid clobbers it)
            0x0f, 0xa2, // cpuid
        ],
    );
    let mut rdmsr = vec![0x66, 0xb9]; // mov ecx, imm32
    rdmsr.extend(MSR_TSC.to_le_bytes());
    rdmsr.extend([0x0f, 0x32]); // rdmsr
    counted_loop(&mut code, p.rdmsrs, &rdmsr);
    let mut wrmsr = vec![0x66, 0xb9]; // mov ecx, imm32
    wrmsr.extend(MSR_SYSENTER_CS.to_le_bytes());
    wrmsr.extend([
        0x66, 0x31, 0xc0, // xor eax, eax
        0x66, 0x31, 0xd2, // xor edx, edx
        0x0f, 0x30, // wrmsr
    ]);
    counted_loop(&mut code, p.wrmsrs, &wrmsr);
    code.push(0xf4); // hlt
    assert!(code.len() <= CODE_SIZE);
    code
}

/// Runs `p` once in a fresh VM on a new "CPU 0/KVM" thread and waits for it.
pub fn run_guest(p: &GuestProgram) -> anyhow::Result<GuestRun> {
    run_guest_repeated(p, 1)
}

/// Runs `p` `repeat` times in one fresh VM on one new "CPU 0/KVM" thread: after
/// each `hlt` the vCPU is sent back to the start. Counts are totals over all
/// rounds (exit_counts[KVM_EXIT_HLT] == repeat).
pub fn run_guest_repeated(p: &GuestProgram, repeat: u32) -> anyhow::Result<GuestRun> {
    run_guest_with(p, repeat, |_| {})
}

/// Like `run_guest_repeated`, calling `on_io_exit(n)` on the vCPU thread while it
/// handles its n-th port I/O exit (n from 1): the VMM's handling time of that exit,
/// and a point where the test knows the vCPU thread is alive and inside its run.
pub fn run_guest_with(
    p: &GuestProgram,
    repeat: u32,
    mut on_io_exit: impl FnMut(u64) + Send + 'static,
) -> anyhow::Result<GuestRun> {
    ensure!(repeat > 0, "repeat must be at least 1");
    let code = guest_code(p);
    let vcpu = thread::Builder::new()
        .name(VCPU_THREAD_NAME.to_string())
        .spawn(move || run_vm(&code, repeat, &mut on_io_exit))
        .context("spawning the vCPU thread")?;
    match vcpu.join() {
        Ok(run) => run,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Builds the VM and runs its only vCPU on the calling thread. Everything is
/// closed and unmapped on return (locals drop in reverse order: the run page,
/// the vCPU, the VM, then guest memory).
fn run_vm(code: &[u8], repeat: u32, on_io_exit: &mut dyn FnMut(u64)) -> anyhow::Result<GuestRun> {
    let kvm = open_kvm().map_err(anyhow::Error::msg)?;
    let memory = Mapping::new(
        CODE_SIZE,
        libc::MAP_SHARED | libc::MAP_ANONYMOUS,
        -1,
        "guest memory",
    )?;
    // SAFETY: memory is a fresh writable mapping of CODE_SIZE >= code.len() bytes.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), memory.ptr, code.len()) };

    let vm = owned_fd(ioctl_val(
        kvm.as_raw_fd(),
        KVM_CREATE_VM,
        0,
        "KVM_CREATE_VM",
    )?);
    let mut region = KvmUserspaceMemoryRegion {
        slot: 0,
        flags: 0,
        guest_phys_addr: CODE_ADDR,
        memory_size: CODE_SIZE as u64,
        userspace_addr: memory.ptr as u64,
    };
    ioctl_ptr(
        vm.as_raw_fd(),
        KVM_SET_USER_MEMORY_REGION,
        &mut region,
        "KVM_SET_USER_MEMORY_REGION",
    )?;
    let vcpu = owned_fd(ioctl_val(
        vm.as_raw_fd(),
        KVM_CREATE_VCPU,
        0,
        "KVM_CREATE_VCPU",
    )?);
    let run_size = ioctl_val(
        kvm.as_raw_fd(),
        KVM_GET_VCPU_MMAP_SIZE,
        0,
        "KVM_GET_VCPU_MMAP_SIZE",
    )?;
    drop(kvm);
    let run = Mapping::new(
        run_size as usize,
        libc::MAP_SHARED,
        vcpu.as_raw_fd(),
        "the vCPU's kvm_run",
    )?;

    // Real mode with code and data segments based at 0, so [0x8000] is
    // guest-physical 0x8000.
    let mut sregs = KvmSregs::default();
    ioctl_ptr(vcpu.as_raw_fd(), KVM_GET_SREGS, &mut sregs, "KVM_GET_SREGS")?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    sregs.ds.base = 0;
    sregs.ds.selector = 0;
    ioctl_ptr(vcpu.as_raw_fd(), KVM_SET_SREGS, &mut sregs, "KVM_SET_SREGS")?;
    let start = || -> anyhow::Result<()> {
        // Bit 1 of rflags is reserved and always set; interrupts stay off.
        let mut regs = KvmRegs {
            rip: CODE_ADDR,
            rflags: 2,
            ..KvmRegs::default()
        };
        ioctl_ptr(vcpu.as_raw_fd(), KVM_SET_REGS, &mut regs, "KVM_SET_REGS")
    };
    let rip = || -> anyhow::Result<u64> {
        let mut regs = KvmRegs::default();
        ioctl_ptr(vcpu.as_raw_fd(), KVM_GET_REGS, &mut regs, "KVM_GET_REGS")?;
        Ok(regs.rip)
    };
    // After the exit for the final hlt, rip points just past it.
    let hlt_rip = CODE_ADDR + code.len() as u64;

    // SAFETY: gettid has no preconditions.
    let vcpu_tid = unsafe { libc::gettid() } as u32;
    let mut out = GuestRun {
        vcpu_tid,
        pid: std::process::id(),
        ..GuestRun::default()
    };
    for _ in 0..repeat {
        start()?;
        loop {
            // SAFETY: KVM_RUN takes no argument; the kernel fills the kvm_run page.
            if unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_RUN as _, 0) } < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                bail!("KVM_RUN: {err}");
            }
            let reason: u32 = run.read(RUN_EXIT_REASON);
            *out.exit_counts.entry(reason).or_default() += 1;
            match reason {
                KVM_EXIT_IO => {
                    let (dir, port, count) = (
                        run.read::<u8>(RUN_IO_DIRECTION),
                        run.read::<u16>(RUN_IO_PORT),
                        run.read::<u32>(RUN_IO_COUNT),
                    );
                    ensure!(
                        dir == KVM_EXIT_IO_OUT && port == SERIAL_PORT && count == 1,
                        "unexpected port I/O exit (direction {dir}, port {port:#x}, count {count}) at rip {:#x}",
                        rip()?
                    );
                    out.io_exits += 1;
                    on_io_exit(out.io_exits);
                }
                KVM_EXIT_MMIO => {
                    let (addr, is_write) = (
                        run.read::<u64>(RUN_MMIO_PHYS_ADDR),
                        run.read::<u8>(RUN_MMIO_IS_WRITE),
                    );
                    // A read would mean the guest went astray (e.g. an exception
                    // reading the unbacked interrupt vector table at 0).
                    ensure!(
                        addr == MMIO_ADDR && is_write == 1,
                        "unexpected MMIO exit ({} at {addr:#x}) at rip {:#x}",
                        if is_write == 1 { "write" } else { "read" },
                        rip()?
                    );
                    out.mmio_exits += 1;
                }
                KVM_EXIT_HLT => {
                    let at = rip()?;
                    ensure!(
                        at == hlt_rip,
                        "guest halted at rip {at:#x}, not at the end of its program ({hlt_rip:#x})"
                    );
                    break;
                }
                KVM_EXIT_SHUTDOWN => {
                    bail!("guest shut down (triple fault) at rip {:#x}", rip()?)
                }
                KVM_EXIT_FAIL_ENTRY => bail!(
                    "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {:#x}",
                    run.read::<u64>(RUN_FAIL_ENTRY_REASON)
                ),
                KVM_EXIT_INTERNAL_ERROR => {
                    let ndata = run.read::<u32>(RUN_INTERNAL_NDATA).min(16) as usize;
                    let data: Vec<String> = (0..ndata)
                        .map(|i| format!("{:#x}", run.read::<u64>(RUN_INTERNAL_DATA + 8 * i)))
                        .collect();
                    bail!(
                        "KVM_EXIT_INTERNAL_ERROR: suberror {} (1 = emulation failure), data [{}], rip {:#x}",
                        run.read::<u32>(RUN_INTERNAL_SUBERROR),
                        data.join(", "),
                        rip()?
                    )
                }
                other => bail!("unexpected KVM exit reason {other} at rip {:#x}", rip()?),
            }
        }
    }
    out.hlt = true;
    Ok(out)
}

/// An idle VM with vCPU 0, held open so that the calling process is a VM in
/// /proc (for tools that check their -p argument) before a guest runs.
pub struct HeldVm {
    _vcpu: OwnedFd,
    _vm: OwnedFd,
}

pub fn hold_vm() -> anyhow::Result<HeldVm> {
    let kvm = open_kvm().map_err(anyhow::Error::msg)?;
    let vm = owned_fd(ioctl_val(
        kvm.as_raw_fd(),
        KVM_CREATE_VM,
        0,
        "KVM_CREATE_VM",
    )?);
    let vcpu = owned_fd(ioctl_val(
        vm.as_raw_fd(),
        KVM_CREATE_VCPU,
        0,
        "KVM_CREATE_VCPU",
    )?);
    Ok(HeldVm {
        _vcpu: vcpu,
        _vm: vm,
    })
}
