//! pagefaults: per-process fault counts.
use crate::{COMM_LEN, assert_size, pod};

/// Per process (tgid), per CPU in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcFaults {
    pub minor: u64,
    pub major: u64,
    /// Faults taken in user mode.
    pub user: u64,
    /// Faults taken in kernel mode (on user addresses, e.g. in copy_to_user).
    pub kernel: u64,
    /// Name of the thread that faulted first (the process's comm at that time).
    pub comm: [u8; COMM_LEN],
}
assert_size!(ProcFaults, 48);
pod!(ProcFaults);

/// The per-CPU cache of the process that faulted last on this CPU: faults come in
/// bursts per process, so most are counted with one array access; when another
/// process faults, the cache is added into the per-process hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcCache {
    /// 0 when empty.
    pub tgid: u32,
    pub _pad: u32,
    pub counts: ProcFaults,
}
assert_size!(ProcCache, 56);
pod!(ProcCache);
