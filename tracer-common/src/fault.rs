//! Page-fault tracking shared by faultlat and faultsnoop.
//!
//! A fault starts at the exceptions:page_fault_user/kernel tracepoint and ends
//! when the kernel accounts it (mm_account_fault, after handle_mm_fault returns),
//! which emits the software perf event PAGE_FAULTS_MIN or PAGE_FAULTS_MAJ in the
//! faulting thread. Faults that fail or are interrupted are never accounted:
//! their start is replaced by the thread's next fault (counted) and the in-flight
//! map is an LRU map, so nothing leaks.

use crate::{TaskFilter, assert_size, pod};

/// The exceptions:page_fault_* layout since it was introduced; read with direct
/// loads when the format file agrees (see block::layout).
pub mod layout {
    pub const ADDRESS: u16 = 8;
    pub const IP: u16 = 16;
    pub const ERROR_CODE: u16 = 24;
}

/// Offsets in the exceptions:page_fault_* records (from tracefs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultFields {
    pub address: u16,
    pub ip: u16,
    pub error_code: u16,
    /// pt_regs.ip (from BTF) for the raw tracepoints' programs, whose
    /// arguments are (address, regs, error_code); NO_FIELD without BTF.
    pub regs_ip: u16,
}
assert_size!(FaultFields, 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultConfig {
    pub task: TaskFilter,
    /// Latencies are recorded in ns / unit_div.
    pub unit_div: u64,
    /// Faults faster than this (ns) are not reported (faultsnoop --min-latency).
    pub min_latency_ns: u64,
    /// `FLAG_*` bits.
    pub flags: u32,
    pub _pad: u32,
    pub fields: FaultFields,
}
assert_size!(FaultConfig, 48);
pod!(FaultConfig);

/// One histogram per process (faultlat -P).
pub const FLAG_PER_PROCESS: u32 = 1 << 0;
/// faultsnoop: report every major fault, whatever `min_latency_ns` (tracer record).
pub const FLAG_ALL_MAJOR: u32 = 1 << 1;
/// The tool shows the faulting instruction: the raw tracepoints' programs
/// read it from pt_regs (a probe read per fault, ~100 ns here).
pub const FLAG_IP: u32 = 1 << 2;

impl FaultConfig {
    pub const INITIAL: FaultConfig = FaultConfig {
        task: TaskFilter {
            tgid: 0,
            _pad: 0,
            cgroup_id: 0,
        },
        unit_div: 1000,
        min_latency_ns: 0,
        flags: 0,
        _pad: 0,
        fields: FaultFields {
            address: 8,
            ip: 16,
            error_code: 24,
            regs_ip: crate::block::NO_FIELD,
        },
    };
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self::INITIAL
    }
}

/// A fault in progress, keyed by thread id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStart {
    pub ts: u64,
    pub address: u64,
    pub ip: u64,
    /// x86 page-fault error code (bit 1 write, bit 2 user, bit 4 instruction fetch).
    pub error_code: u32,
    /// 1 if the fault was taken in kernel mode (page_fault_kernel).
    pub kernel: u32,
}
assert_size!(FaultStart, 32);
pod!(FaultStart);
// In-flight faults: slot `tid % INFLIGHT_SLOTS`, keyed by thread id (as u64, so
// the slot has no padding).
assert_size!(crate::Slot<u64, FaultStart>, 48);
pod!(crate::Slot<u64, FaultStart>);

/// x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
pub const PF_WRITE: u32 = 1 << 1;
pub const PF_INSTR: u32 = 1 << 4;
