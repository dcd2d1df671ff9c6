//! tools/fault/: the page-fault tools, one file per tool (pagefaults, faultlat,
//! faultsnoop), over the family's user-side code here (tracer-ebpf's fault.rs is
//! its kernel side).
//!
//! What the page-fault tools share on the user side: hooks and the layout of the
//! exceptions:page_fault_* tracepoints, and naming a fault's type.

pub mod faultlat;
pub mod faultsnoop;
pub mod pagefaults;

use anyhow::{Context as _, Result};
use tracer_common::{
    TaskFilter,
    fault::{FaultConfig, FaultFields, PF_INSTR, PF_WRITE},
};

use crate::bpf::{self, Hook, HookChain, SoftwareEvent};
use crate::kernel::{self, btf::Btf, tracefs::Format};

// Raw first: detached at once, and never skipped while BPF is busy.
pub const START_USER: HookChain = HookChain {
    role: "start",
    program: "fault_start_user",
    candidates: &[
        Hook::raw_tp("exceptions", "page_fault_user", "fault_start_user_raw"),
        Hook::tp("exceptions", "page_fault_user"),
    ],
};
pub const START_KERNEL: HookChain = HookChain {
    role: "start-k",
    program: "fault_start_kernel",
    candidates: &[
        Hook::raw_tp("exceptions", "page_fault_kernel", "fault_start_kernel_raw"),
        Hook::tp("exceptions", "page_fault_kernel"),
    ],
};

/// A `usable` for attaching the start chains: their raw tracepoints' programs
/// read the faulting ip from pt_regs at its BTF offset.
pub fn usable(cfg: &FaultConfig) -> impl Fn(&Hook) -> Result<(), String> + Copy {
    bpf::raw_if(
        cfg.fields.regs_ip != tracer_common::block::NO_FIELD,
        "no pt_regs layout in the kernel's BTF",
    )
}
pub const END_MINOR: HookChain = HookChain {
    role: "minor",
    program: "fault_minor",
    candidates: &[Hook::PerfSoftware {
        event: SoftwareEvent::PageFaultsMin,
    }],
};
pub const END_MAJOR: HookChain = HookChain {
    role: "major",
    program: "fault_major",
    candidates: &[Hook::PerfSoftware {
        event: SoftwareEvent::PageFaultsMaj,
    }],
};

/// The configuration global, with the start tracepoints' layout when needed.
pub fn config(task: TaskFilter, with_start: bool) -> Result<FaultConfig> {
    let mut cfg = FaultConfig {
        task,
        ..FaultConfig::INITIAL
    };
    if with_start {
        let user = Format::read("exceptions", "page_fault_user")?
            .context("this kernel has no exceptions:page_fault_user tracepoint (x86 only)")?;
        let regs_ip = kernel::has_btf()
            .then(|| Btf::load().and_then(|btf| btf.member("pt_regs", "ip")).ok())
            .flatten()
            .and_then(|m| u16::try_from(m.offset).ok())
            .unwrap_or(tracer_common::block::NO_FIELD);
        cfg.fields = FaultFields {
            address: user.offset("address", 8)?,
            ip: user.offset("ip", 8)?,
            error_code: user.offset("error_code", 8)?,
            regs_ip,
        };
        // page_fault_kernel shares the event class, hence the layout; check it.
        if let Some(kernel) = Format::read("exceptions", "page_fault_kernel")? {
            anyhow::ensure!(
                kernel.offset("address", 8)? == cfg.fields.address
                    && kernel.offset("ip", 8)? == cfg.fields.ip,
                "exceptions:page_fault_kernel and page_fault_user differ in layout"
            );
        }
    }
    Ok(cfg)
}

/// "write/user/minor" and the like.
pub fn type_name(error_code: u32, kernel: bool, major: bool) -> String {
    let access = if error_code & PF_INSTR != 0 {
        "exec"
    } else if error_code & PF_WRITE != 0 {
        "write"
    } else {
        "read"
    };
    format!(
        "{access}/{}/{}",
        if kernel { "kernel" } else { "user" },
        if major { "major" } else { "minor" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_types() {
        assert_eq!(type_name(0x6, false, false), "write/user/minor");
        assert_eq!(type_name(0x4, false, true), "read/user/major");
        assert_eq!(type_name(0x14, false, false), "exec/user/minor");
        assert_eq!(type_name(0x2, true, false), "write/kernel/minor");
    }

    #[test]
    fn layout_from_fixture() {
        let f = Format::parse(include_str!(
            "../../../tests/fixtures/page_fault_user.format"
        ))
        .unwrap();
        assert_eq!(
            (
                f.offset("address", 8).unwrap(),
                f.offset("ip", 8).unwrap(),
                f.offset("error_code", 8).unwrap()
            ),
            (8, 16, 24)
        );
    }
}
