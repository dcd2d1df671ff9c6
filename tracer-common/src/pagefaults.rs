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
