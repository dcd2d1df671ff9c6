//! kvmexits: VM exits by reason, VM and vCPU, with latency histograms.
//!
//! Two backends. Where KVM emits kvm:kvm_exit/kvm_entry (VMX and SVM hosts), every
//! exit is counted by its hardware reason and timed from exit to re-entry. Where
//! it does not (e.g. kvm_pvm), exits are classified from the generic x86 KVM
//! tracepoints (kvm_pio, kvm_mmio, kvm_msr, ...) and the exits to userspace are
//! timed from kvm_userspace_exit to the VMM's next KVM_RUN ioctl.

use crate::{TaskFilter, assert_size, hist::HistKey, pod};

/// What an event is: `ExitKey::kind`.
pub mod kind {
    /// kvm:kvm_exit on VMX; code = exit reason.
    pub const EXIT_VMX: u16 = 1;
    /// kvm:kvm_exit on SVM; code = exit code.
    pub const EXIT_SVM: u16 = 2;
    /// kvm:kvm_exit with an unknown isa.
    pub const EXIT_OTHER: u16 = 3;
    /// kvm:kvm_pio; code = 1 for out, 0 for in.
    pub const PIO: u16 = 4;
    /// kvm:kvm_mmio; code = 1 read, 2 write (unsatisfied reads count as reads).
    pub const MMIO: u16 = 5;
    /// kvm:kvm_msr; code = 1 for wrmsr, 0 for rdmsr.
    pub const MSR: u16 = 6;
    pub const CPUID: u16 = 7;
    /// kvm:kvm_hypercall; code = hypercall number.
    pub const HYPERCALL: u16 = 8;
    /// kvm:kvm_userspace_exit; code = KVM_EXIT_* reason.
    pub const USER_EXIT: u16 = 9;
    /// kvm:kvm_vcpu_wakeup: a halted vCPU woke (HLT handled in the kernel).
    pub const WAKEUP: u16 = 10;
    /// kvm:kvm_inj_virq: an interrupt injected into the guest.
    pub const INJ_IRQ: u16 = 11;
    /// kvm:kvm_page_fault: a guest-physical fault (EPT violation / NPF).
    pub const PAGE_FAULT: u16 = 12;
}

/// Counts are kept per (process, thread, vCPU, kind, code).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExitKey {
    pub tgid: u32,
    pub tid: u32,
    /// vCPU id where the event says it (kvm_exit), else NO_VCPU.
    pub vcpu: u32,
    pub kind: u16,
    pub _pad: u16,
    pub code: u32,
    pub _pad2: u32,
}
assert_size!(ExitKey, 24);
pod!(ExitKey);

pub const NO_VCPU: u32 = u32::MAX;

impl ExitKey {
    #[inline(always)]
    pub const fn slot(&self) -> u32 {
        let h = (self.tid as u64) << 32 | (self.kind as u64) << 24 | (self.code as u64 & 0xff_ffff);
        (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u32 & (COUNT_SLOTS - 1)
    }
}

/// Slots of the per-CPU count cache (a power of two).
pub const COUNT_SLOTS: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountSlot {
    /// All zero when free.
    pub key: ExitKey,
    pub count: u64,
}
assert_size!(CountSlot, 32);

/// The per-CPU count cache, one array element: keys land in a slot chosen by
/// hashing and stay there; a key whose slot is taken is counted in the overflow
/// hash map. Counts never move, so userspace sums both without races.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountSlots {
    pub slots: [CountSlot; COUNT_SLOTS as usize],
}
assert_size!(CountSlots, 32 * COUNT_SLOTS as usize);
pod!(CountSlots);

/// Latency histograms are grouped by vCPU thread, kind and code (userspace merges
/// the threads, or keeps one vCPU's).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LatGroup {
    pub tid: u32,
    pub kind: u32,
    pub code: u32,
    pub _pad: u32,
}
assert_size!(LatGroup, 16);
assert_size!(HistKey<LatGroup>, 24);
pod!(LatGroup, HistKey<LatGroup>);

/// A vCPU thread's process and name, recorded when it is first counted (so the
/// table can name vCPUs of VMs that have exited by the time it is printed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadName {
    pub tgid: u32,
    pub _pad: u32,
    pub comm: [u8; crate::COMM_LEN],
}
assert_size!(ThreadName, 24);
pod!(ThreadName);

/// A pending exit (kvm_exit backend) or exit to userspace (generic backend), per
/// vCPU thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub ts: u64,
    pub kind: u32,
    pub code: u32,
}
assert_size!(Pending, 16);
pod!(Pending);
assert_size!(crate::Slot<u64, Pending>, 32);
pod!(crate::Slot<u64, Pending>);

/// Offsets of the fields the programs read, from the format files.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmFields {
    pub exit_reason: u16,
    pub exit_isa: u16,
    pub exit_vcpu: u16,
    pub pio_rw: u16,
    pub mmio_type: u16,
    pub msr_write: u16,
    pub hypercall_nr: u16,
    pub uexit_reason: u16,
    pub uexit_errno: u16,
    /// sys_enter_ioctl `cmd`, or raw_syscalls:sys_enter `args[1]`.
    pub ioctl_cmd: u16,
    /// raw_syscalls:sys_enter `id` (NO_FIELD with syscalls:sys_enter_ioctl).
    pub syscall_id: u16,
    pub _pad: u16,
}
assert_size!(KvmFields, 24);

/// The long-standing layouts (read with direct loads when the kernel agrees).
pub mod layout {
    pub const EXIT_REASON: u16 = 8;
    pub const PIO_RW: u16 = 8;
    pub const MMIO_TYPE: u16 = 8;
    pub const MSR_WRITE: u16 = 8;
    pub const HYPERCALL_NR: u16 = 8;
    pub const UEXIT_REASON: u16 = 8;
    pub const UEXIT_ERRNO: u16 = 12;
    pub const IOCTL_CMD: u16 = 24;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmConfig {
    pub task: TaskFilter,
    /// Only this vCPU thread (0: all).
    pub tid: u32,
    /// Only this vCPU id where events carry it (NO_VCPU: all).
    pub vcpu: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    pub _pad: u32,
    /// Latencies are recorded in ns / unit_div.
    pub unit_div: u64,
    pub fields: KvmFields,
}
assert_size!(KvmConfig, 64);
pod!(KvmConfig);

/// Time exits (--latency).
pub const FLAG_LATENCY: u32 = 1 << 0;
/// Also send each timed exit on the `EVENTS` ring (tracer record).
pub const FLAG_EVENTS: u32 = 1 << 1;

/// One timed exit: from the exit to the vCPU's next entry (or, for exits to the
/// VMM, its next KVM_RUN).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitEvent {
    /// When the vCPU went back in (CLOCK_MONOTONIC ns).
    pub ts: u64,
    pub lat_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    /// `kind::*` and its code, as in ExitKey.
    pub kind: u32,
    pub code: u32,
}
assert_size!(ExitEvent, 32);
pod!(ExitEvent);

/// KVM_RUN = _IO(KVMIO 0xAE, 0x80).
pub const KVM_RUN: u32 = 0xAE80;
/// x86_64 syscall number of ioctl (raw_syscalls fallback).
pub const SYS_IOCTL: u64 = 16;

impl KvmConfig {
    pub const INITIAL: KvmConfig = KvmConfig {
        task: TaskFilter {
            tgid: 0,
            _pad: 0,
            cgroup_id: 0,
        },
        tid: 0,
        vcpu: NO_VCPU,
        flags: 0,
        _pad: 0,
        unit_div: 1000,
        fields: KvmFields {
            exit_reason: 8,
            exit_isa: 24,
            exit_vcpu: 56,
            pio_rw: 8,
            mmio_type: 8,
            msr_write: 8,
            hypercall_nr: 8,
            uexit_reason: 8,
            uexit_errno: 12,
            ioctl_cmd: 24,
            syscall_id: crate::block::NO_FIELD,
            _pad: 0,
        },
    };
}

impl Default for KvmConfig {
    fn default() -> Self {
        Self::INITIAL
    }
}
