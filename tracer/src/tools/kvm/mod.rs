//! tools/kvm/: the KVM tools, one file per tool (kvmexits), over the KVM knowledge
//! here that they share.
//!
//! KVM knowledge for kvmexits: exit-reason names for Intel VMX and AMD SVM, the
//! kvmstat-style classification of exits, and finding VM processes and vCPUs.
//!
//! The names are built in (from the kernel's uapi vmx.h/svm.h) and, at run time,
//! taken from the running kernel's kvm:kvm_exit format file when it has them, so a
//! newer kernel's reasons get their names too. An unknown code is shown as its
//! number, never dropped.

pub mod kvmexits;

use std::{collections::BTreeMap, fs};

use tracer_common::kvmexits::kind;

use crate::kernel::tracefs::symbolic_tables;

/// kvmstat's columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Column {
    Halt,
    Irq,
    Io,
    Mmio,
    Msr,
    Npf,
    Cpuid,
    Other,
}

pub const VMX: &[(i64, &str)] = &[
    (0, "EXCEPTION_NMI"),
    (1, "EXTERNAL_INTERRUPT"),
    (2, "TRIPLE_FAULT"),
    (3, "INIT_SIGNAL"),
    (4, "SIPI_SIGNAL"),
    (7, "INTERRUPT_WINDOW"),
    (8, "NMI_WINDOW"),
    (9, "TASK_SWITCH"),
    (10, "CPUID"),
    (12, "HLT"),
    (13, "INVD"),
    (14, "INVLPG"),
    (15, "RDPMC"),
    (16, "RDTSC"),
    (18, "VMCALL"),
    (19, "VMCLEAR"),
    (20, "VMLAUNCH"),
    (21, "VMPTRLD"),
    (22, "VMPTRST"),
    (23, "VMREAD"),
    (24, "VMRESUME"),
    (25, "VMWRITE"),
    (26, "VMOFF"),
    (27, "VMON"),
    (28, "CR_ACCESS"),
    (29, "DR_ACCESS"),
    (30, "IO_INSTRUCTION"),
    (31, "MSR_READ"),
    (32, "MSR_WRITE"),
    (33, "INVALID_STATE"),
    (34, "MSR_LOAD_FAIL"),
    (36, "MWAIT_INSTRUCTION"),
    (37, "MONITOR_TRAP_FLAG"),
    (39, "MONITOR_INSTRUCTION"),
    (40, "PAUSE_INSTRUCTION"),
    (41, "MCE_DURING_VMENTRY"),
    (43, "TPR_BELOW_THRESHOLD"),
    (44, "APIC_ACCESS"),
    (45, "EOI_INDUCED"),
    (46, "GDTR_IDTR"),
    (47, "LDTR_TR"),
    (48, "EPT_VIOLATION"),
    (49, "EPT_MISCONFIG"),
    (50, "INVEPT"),
    (51, "RDTSCP"),
    (52, "PREEMPTION_TIMER"),
    (53, "INVVPID"),
    (54, "WBINVD"),
    (55, "XSETBV"),
    (56, "APIC_WRITE"),
    (57, "RDRAND"),
    (58, "INVPCID"),
    (59, "VMFUNC"),
    (60, "ENCLS"),
    (61, "RDSEED"),
    (62, "PML_FULL"),
    (63, "XSAVES"),
    (64, "XRSTORS"),
    (67, "UMWAIT"),
    (68, "TPAUSE"),
    (74, "BUS_LOCK"),
    (75, "NOTIFY"),
    (77, "TDCALL"),
    (84, "MSR_READ_IMM"),
    (85, "MSR_WRITE_IMM"),
];

/// VMX exit reason flag: the VM entry failed.
pub const VMX_FAILED_VMENTRY: u32 = 0x8000_0000;

pub const SVM: &[(i64, &str)] = &[
    (0x000, "read_cr0"),
    (0x002, "read_cr2"),
    (0x003, "read_cr3"),
    (0x004, "read_cr4"),
    (0x008, "read_cr8"),
    (0x010, "write_cr0"),
    (0x012, "write_cr2"),
    (0x013, "write_cr3"),
    (0x014, "write_cr4"),
    (0x018, "write_cr8"),
    (0x020, "read_dr0"),
    (0x021, "read_dr1"),
    (0x022, "read_dr2"),
    (0x023, "read_dr3"),
    (0x024, "read_dr4"),
    (0x025, "read_dr5"),
    (0x026, "read_dr6"),
    (0x027, "read_dr7"),
    (0x030, "write_dr0"),
    (0x031, "write_dr1"),
    (0x032, "write_dr2"),
    (0x033, "write_dr3"),
    (0x034, "write_dr4"),
    (0x035, "write_dr5"),
    (0x036, "write_dr6"),
    (0x037, "write_dr7"),
    (0x040, "DE excp"),
    (0x041, "DB excp"),
    (0x043, "BP excp"),
    (0x044, "OF excp"),
    (0x045, "BR excp"),
    (0x046, "UD excp"),
    (0x047, "NM excp"),
    (0x048, "DF excp"),
    (0x04a, "TS excp"),
    (0x04b, "NP excp"),
    (0x04c, "SS excp"),
    (0x04d, "GP excp"),
    (0x04e, "PF excp"),
    (0x050, "MF excp"),
    (0x051, "AC excp"),
    (0x052, "MC excp"),
    (0x053, "XF excp"),
    (0x060, "interrupt"),
    (0x061, "nmi"),
    (0x062, "smi"),
    (0x063, "init"),
    (0x064, "vintr"),
    (0x065, "cr0_sel_write"),
    (0x066, "read_idtr"),
    (0x067, "read_gdtr"),
    (0x068, "read_ldtr"),
    (0x069, "read_rt"),
    (0x06a, "write_idtr"),
    (0x06b, "write_gdtr"),
    (0x06c, "write_ldtr"),
    (0x06d, "write_rt"),
    (0x06e, "rdtsc"),
    (0x06f, "rdpmc"),
    (0x070, "pushf"),
    (0x071, "popf"),
    (0x072, "cpuid"),
    (0x073, "rsm"),
    (0x074, "iret"),
    (0x075, "swint"),
    (0x076, "invd"),
    (0x077, "pause"),
    (0x078, "hlt"),
    (0x079, "invlpg"),
    (0x07a, "invlpga"),
    (0x07b, "io"),
    (0x07c, "msr"),
    (0x07d, "task_switch"),
    (0x07e, "ferr_freeze"),
    (0x07f, "shutdown"),
    (0x080, "vmrun"),
    (0x081, "hypercall"),
    (0x082, "vmload"),
    (0x083, "vmsave"),
    (0x084, "stgi"),
    (0x085, "clgi"),
    (0x086, "skinit"),
    (0x087, "rdtscp"),
    (0x088, "icebp"),
    (0x089, "wbinvd"),
    (0x08a, "monitor"),
    (0x08b, "mwait"),
    (0x08d, "xsetbv"),
    (0x08f, "write_efer_trap"),
    (0x090, "write_cr0_trap"),
    (0x094, "write_cr4_trap"),
    (0x098, "write_cr8_trap"),
    (0x0a2, "invpcid"),
    (0x0a5, "buslock"),
    (0x0a6, "idle-halt"),
    (0x400, "npf"),
    (0x401, "avic_incomplete_ipi"),
    (0x402, "avic_unaccelerated_access"),
    (0x403, "vmgexit"),
    (0x8000_0001, "vmgexit_mmio_read"),
    (0x8000_0002, "vmgexit_mmio_write"),
    (0x8000_0003, "vmgexit_nmi_complete"),
    (0x8000_0004, "vmgexit_ap_hlt_loop"),
    (0x8000_0005, "vmgexit_ap_jump_table"),
    (0x8000_0010, "vmgexit_page_state_change"),
    (0x8000_0011, "vmgexit_guest_request"),
    (0x8000_0012, "vmgexit_ext_guest_request"),
    (0x8000_0013, "vmgexit_ap_creation"),
    (0x8000_fffd, "vmgexit_hypervisor_feature"),
    (-1, "invalid_guest_state"),
];

/// KVM_EXIT_* reasons of exits to userspace (include/uapi/linux/kvm.h).
pub const KVM_EXIT: &[&str] = &[
    "UNKNOWN",
    "EXCEPTION",
    "IO",
    "HYPERCALL",
    "DEBUG",
    "HLT",
    "MMIO",
    "IRQ_WINDOW_OPEN",
    "SHUTDOWN",
    "FAIL_ENTRY",
    "INTR",
    "SET_TPR",
    "TPR_ACCESS",
    "S390_SIEIC",
    "S390_RESET",
    "DCR",
    "NMI",
    "INTERNAL_ERROR",
    "OSI",
    "PAPR_HCALL",
    "S390_UCONTROL",
    "WATCHDOG",
    "S390_TSCH",
    "EPR",
    "SYSTEM_EVENT",
    "S390_STSI",
    "IOAPIC_EOI",
    "HYPERV",
    "ARM_NISV",
    "X86_RDMSR",
    "X86_WRMSR",
];
pub const KVM_EXIT_IO: u32 = 2;
pub const KVM_EXIT_HLT: u32 = 5;
pub const KVM_EXIT_MMIO: u32 = 6;

/// Exit-reason names: built in, overridden by the running kernel's tables.
#[derive(Clone, Debug)]
pub struct ExitNames {
    vmx: BTreeMap<u32, String>,
    svm: BTreeMap<u32, String>,
}

impl Default for ExitNames {
    fn default() -> Self {
        let table = |t: &[(i64, &str)]| t.iter().map(|(v, n)| (*v as u32, n.to_string())).collect();
        ExitNames {
            vmx: table(VMX),
            svm: table(SVM),
        }
    }
}

impl ExitNames {
    /// Adds the names in kvm:kvm_exit's print fmt (first table VMX, second SVM).
    pub fn with_kernel_tables(mut self, print_fmt: &str) -> Self {
        let tables = symbolic_tables(print_fmt);
        for (map, table) in [&mut self.vmx, &mut self.svm].into_iter().zip(tables) {
            map.extend(table.into_iter().map(|(v, n)| (v as u32, n)));
        }
        self
    }

    /// The name of an event's reason, e.g. "IO_INSTRUCTION", "npf", "IO out".
    pub fn name(&self, kind: u16, code: u32) -> String {
        match kind {
            kind::EXIT_VMX => {
                let basic = code & 0xffff;
                let name = self
                    .vmx
                    .get(&basic)
                    .cloned()
                    .unwrap_or_else(|| format!("VMX_EXIT_{basic}"));
                if code & VMX_FAILED_VMENTRY != 0 {
                    format!("{name} FAILED_VMENTRY")
                } else {
                    name
                }
            }
            kind::EXIT_SVM => self
                .svm
                .get(&code)
                .cloned()
                .unwrap_or_else(|| format!("SVM_EXIT_{code:#x}")),
            kind::EXIT_OTHER => format!("exit {code:#x}"),
            kind::PIO => if code == 1 { "IO out" } else { "IO in" }.into(),
            kind::MMIO => if code == 2 { "MMIO write" } else { "MMIO read" }.into(),
            kind::MSR => if code == 1 { "WRMSR" } else { "RDMSR" }.into(),
            kind::CPUID => "CPUID".into(),
            kind::HYPERCALL => format!("HYPERCALL {code}"),
            kind::USER_EXIT => format!("to VMM: {}", kvm_exit_name(code)),
            kind::WAKEUP => "HLT (woken in kernel)".into(),
            kind::INJ_IRQ => "interrupt injected".into(),
            kind::PAGE_FAULT => "EPT/NPF fault".into(),
            _ => format!("kind {kind} code {code}"),
        }
    }
}

pub fn kvm_exit_name(reason: u32) -> String {
    KVM_EXIT
        .get(reason as usize)
        .map_or_else(|| format!("EXIT_{reason}"), |n| n.to_string())
}

/// kvmstat's column of an event; None for events that are not exits of their own
/// (interrupt injections, and exits to userspace already counted as IO/MMIO).
pub fn column(kind: u16, code: u32) -> Option<Column> {
    Some(match kind {
        kind::EXIT_VMX => match code & 0xffff {
            12 => Column::Halt,
            1 => Column::Irq,
            30 => Column::Io,
            49 => Column::Mmio,
            48 => Column::Npf,
            31 | 32 | 84 | 85 => Column::Msr,
            10 => Column::Cpuid,
            _ => Column::Other,
        },
        kind::EXIT_SVM => match code {
            0x078 | 0x0a6 => Column::Halt,
            0x060 => Column::Irq,
            0x07b => Column::Io,
            0x8000_0001 | 0x8000_0002 => Column::Mmio,
            0x400 => Column::Npf,
            0x07c => Column::Msr,
            0x072 => Column::Cpuid,
            _ => Column::Other,
        },
        kind::PIO => Column::Io,
        kind::MMIO => Column::Mmio,
        kind::MSR => Column::Msr,
        kind::CPUID => Column::Cpuid,
        kind::PAGE_FAULT => Column::Npf,
        kind::WAKEUP => Column::Halt,
        kind::USER_EXIT => match code {
            KVM_EXIT_IO | KVM_EXIT_MMIO => return None,
            KVM_EXIT_HLT => Column::Halt,
            _ => Column::Other,
        },
        kind::INJ_IRQ => return None,
        _ => Column::Other,
    })
}

/// The KVM file descriptors of a process: whether it holds a VM, and its vCPU ids.
pub fn vm_fds(pid: u32) -> (bool, Vec<u32>) {
    let mut vm = false;
    let mut vcpus = Vec::new();
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in dir.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if target == "anon_inode:kvm-vm" {
                vm = true;
            } else if let Some(id) = target.strip_prefix("anon_inode:kvm-vcpu:") {
                vcpus.extend(id.parse::<u32>().ok());
            }
        }
    }
    vcpus.sort();
    (vm, vcpus)
}

/// Processes holding a KVM VM.
pub fn vm_processes() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| vm_fds(pid).0)
        .collect()
}

/// The VM's name: qemu's `-name` (`guest=NAME,...` or `NAME,...`), else the comm.
pub fn vm_name(pid: u32) -> String {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    qemu_name(&cmdline).unwrap_or_else(|| crate::kernel::process_comm(pid))
}

/// qemu's `-name` from a NUL-separated command line.
fn qemu_name(cmdline: &[u8]) -> Option<String> {
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let value = args.get(args.iter().position(|a| a == "-name")? + 1)?;
    let name = match value.split(',').find_map(|p| p.strip_prefix("guest=")) {
        Some(guest) => guest,
        None => value.split(',').next().unwrap_or(value),
    };
    (!name.is_empty()).then(|| name.to_string())
}

/// The vCPU a thread runs, from its name: qemu's "CPU 3/KVM", or a trailing number
/// ("fc_vcpu 3", "vcpu3"); None if the name says nothing.
pub fn vcpu_of_thread_name(name: &str) -> Option<u32> {
    if let Some(rest) = name.strip_prefix("CPU ")
        && let Some(n) = rest.strip_suffix("/KVM")
    {
        return n.parse().ok();
    }
    let digits: String = name
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    if digits.is_empty() || !name.to_ascii_lowercase().contains("cpu") {
        return None;
    }
    digits.chars().rev().collect::<String>().parse().ok()
}

pub fn thread_name(pid: u32, tid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::tracefs::Format;

    fn fixture() -> Format {
        Format::parse(include_str!("../../../tests/fixtures/kvm_exit.format")).unwrap()
    }

    #[test]
    fn builtin_tables_match_the_kernels() {
        let tables = symbolic_tables(&fixture().print_fmt);
        assert_eq!(tables.len(), 2, "VMX and SVM tables");
        let own = |t: &[(i64, &str)]| {
            t.iter()
                .map(|(v, n)| (*v, n.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(tables[0], own(VMX));
        assert_eq!(tables[1], own(SVM));
    }

    #[test]
    fn vmx_names_mask_flags() {
        let names = ExitNames::default();
        assert_eq!(names.name(kind::EXIT_VMX, 30), "IO_INSTRUCTION");
        assert_eq!(
            names.name(kind::EXIT_VMX, 0x8000_0021),
            "INVALID_STATE FAILED_VMENTRY"
        );
        assert_eq!(names.name(kind::EXIT_VMX, 12 | 0x0800_0000), "HLT");
        assert_eq!(names.name(kind::EXIT_VMX, 999), "VMX_EXIT_999");
    }

    #[test]
    fn svm_names_beyond_0x400() {
        let names = ExitNames::default().with_kernel_tables(&fixture().print_fmt);
        assert_eq!(names.name(kind::EXIT_SVM, 0x07b), "io");
        assert_eq!(names.name(kind::EXIT_SVM, 0x400), "npf");
        assert_eq!(names.name(kind::EXIT_SVM, 0x403), "vmgexit");
        assert_eq!(
            names.name(kind::EXIT_SVM, 0x8000_0010),
            "vmgexit_page_state_change"
        );
        assert_eq!(names.name(kind::EXIT_SVM, u32::MAX), "invalid_guest_state");
        assert_eq!(names.name(kind::EXIT_SVM, 0x5ff), "SVM_EXIT_0x5ff");
    }

    #[test]
    fn kernel_tables_add_new_names() {
        let fmt = r#""x", (REC->isa == 1) ? __print_symbolic(REC->exit_reason & 0xffff, { 99, "NEW_ONE" }) : __print_symbolic(REC->exit_reason, { 0x777, "newsvm" })"#;
        let names = ExitNames::default().with_kernel_tables(fmt);
        assert_eq!(names.name(kind::EXIT_VMX, 99), "NEW_ONE");
        assert_eq!(names.name(kind::EXIT_SVM, 0x777), "newsvm");
        assert_eq!(names.name(kind::EXIT_VMX, 30), "IO_INSTRUCTION");
    }

    #[test]
    fn columns() {
        assert_eq!(column(kind::EXIT_VMX, 30), Some(Column::Io));
        assert_eq!(column(kind::EXIT_VMX, 49), Some(Column::Mmio));
        assert_eq!(column(kind::EXIT_SVM, 0x400), Some(Column::Npf));
        assert_eq!(column(kind::EXIT_SVM, 0x078), Some(Column::Halt));
        assert_eq!(column(kind::USER_EXIT, KVM_EXIT_HLT), Some(Column::Halt));
        assert_eq!(column(kind::USER_EXIT, KVM_EXIT_IO), None);
        assert_eq!(column(kind::INJ_IRQ, 0), None);
        assert_eq!(column(kind::PIO, 1), Some(Column::Io));
    }

    #[test]
    fn qemu_names() {
        assert_eq!(
            qemu_name(b"qemu-system-x86_64\0-name\0guest=web1,debug-threads=on\0-m\0big"),
            Some("web1".into())
        );
        assert_eq!(qemu_name(b"qemu\0-name\0db2\0"), Some("db2".into()));
        assert_eq!(qemu_name(b"qemu\0-m\0big"), None);
        assert_eq!(qemu_name(b"qemu\0-name"), None);
    }

    #[test]
    fn thread_names() {
        assert_eq!(vcpu_of_thread_name("CPU 3/KVM"), Some(3));
        assert_eq!(vcpu_of_thread_name("fc_vcpu 2"), Some(2));
        assert_eq!(vcpu_of_thread_name("vcpu11"), Some(11));
        assert_eq!(vcpu_of_thread_name("worker7"), None);
        assert_eq!(vcpu_of_thread_name("qemu-system-x86"), None);
    }
}
