//! tools/: one folder per family (block/, fault/, kvm/, tcp/), each with its tools,
//! one file per tool, over the family's shared code in its mod.rs.
//!
//! The tool registry: adding a tool is one file in its family's folder plus one
//! line in `TOOLS`.

use anyhow::Result;
use clap::{ArgMatches, Command};

use crate::bpf::{HookUse, Object};
use crate::sink::capture::{Recorder, trigger::Subsystem};
use crate::source::Source;
use crate::source::schema::{Schema, Schemas};

mod block;
mod fault;
mod kvm;
mod tcp;

/// Builds a tool's source as `tracer exporter` runs it.
pub type ExporterSource = fn() -> Result<Box<dyn Source>>;

/// A tool: its command line, its run function, the hooks it may use, and its
/// sources as the exporter and the recorder run it.
pub struct Tool {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub about: &'static str,
    /// What its event records hold and how views show them (None: it streams none).
    pub schema: Option<&'static Schema>,
    pub command: fn() -> Command,
    pub run: fn(&ArgMatches) -> Result<()>,
    /// Every hook chain the tool may attach, and with which option.
    pub hooks: fn() -> Vec<HookUse>,
    /// The tool's aggregation as `tracer exporter` runs it (None: an event tool).
    pub exporter: Option<ExporterSource>,
    /// What it traces (`tracer record --sources`).
    pub family: Subsystem,
    /// Its event stream as `tracer record` runs it.
    pub recorder: Option<Recorder>,
    /// Whether `tracer record` keeps its exporter histograms, every 100 ms, as
    /// context for the events around a trigger (a tool without a recorder).
    pub record_context: bool,
    pub object: Object,
}

pub static TOOLS: &[&Tool] = &[
    &block::biolatency::TOOL,
    &block::biosnoop::TOOL,
    &block::biotop::TOOL,
    &block::bitesize::TOOL,
    &block::biopattern::TOOL,
    &fault::pagefaults::TOOL,
    &fault::faultlat::TOOL,
    &fault::faultsnoop::TOOL,
    &kvm::kvmexits::TOOL,
    &tcp::tcpretrans::TOOL,
    &tcp::tcprtt::TOOL,
    &tcp::tcpconnlat::TOOL,
    &tcp::tcpdrop::TOOL,
];

pub fn find(name: &str) -> Option<&'static Tool> {
    TOOLS
        .iter()
        .copied()
        .find(|t| t.name == name || t.aliases.contains(&name))
}

/// The tools' schemas, for the views (which read records by them).
pub fn schemas() -> Schemas {
    Schemas(
        TOOLS
            .iter()
            .filter_map(|t| Some((t.name, t.schema?)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use crate::bpf::Hook;
    use crate::source::schema::SYMBOL;
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

    use super::*;

    /// A tool that streams events to the recorder says what they hold, and
    /// its templates name only its fields (or the record's tool, or the
    /// symbol the report adds).
    #[test]
    fn schemas_name_their_own_fields() {
        for tool in TOOLS {
            let Some(s) = tool.schema else {
                assert!(
                    tool.recorder.is_none(),
                    "{}: events without a schema",
                    tool.name
                );
                continue;
            };
            let templates = [s.line, s.track.name, s.track.slice, s.who]
                .into_iter()
                .chain(s.top.map(|(_, key)| key));
            for name in templates.flat_map(|t| t.names()).chain(s.series) {
                assert!(
                    s.field(name).is_some() || ["tool", SYMBOL].contains(&name),
                    "{}: no field {name}",
                    tool.name
                );
            }
        }
    }

    /// The deepest stack slot a program's instructions touch (`r10 - off`).
    fn stack_depth(code: &[u8]) -> u32 {
        const BPF_LDX: u8 = 0x01;
        const BPF_ST: u8 = 0x02;
        const BPF_STX: u8 = 0x03;
        let mut deepest = 0;
        for insn in code.chunks_exact(8) {
            let (class, dst, src) = (insn[0] & 0x07, insn[1] & 0x0f, insn[1] >> 4);
            let off = i16::from_le_bytes([insn[2], insn[3]]);
            let via_fp = match class {
                BPF_LDX => src == 10,
                BPF_ST | BPF_STX => dst == 10,
                _ => false,
            };
            if via_fp && off < 0 {
                deepest = deepest.max(u32::from(off.unsigned_abs()));
            }
        }
        deepest
    }

    /// `tracer record` takes a context tool's exporter histograms, and has
    /// no place for its event stream.
    #[test]
    fn record_context_is_an_exporter_tool_without_a_recorder() {
        for tool in TOOLS.iter().filter(|t| t.record_context) {
            assert!(tool.exporter.is_some(), "{}: no exporter", tool.name);
            assert!(tool.recorder.is_none(), "{}: has a recorder", tool.name);
        }
    }

    /// No program's own frame is deeper than 456 bytes: older verifiers add
    /// the frame of a call (memcpy, bcmp) and refuse a total over 512 (6.1 and
    /// 5.10 refused tcp_probe_raw at 488 + 56), which this kernel's accepts.
    #[test]
    fn stacks_leave_room_for_a_call() {
        for tool in TOOLS {
            let elf = object::File::parse(tool.object.elf).unwrap();
            for sym in elf
                .symbols()
                .filter(|s| s.kind() == object::SymbolKind::Text)
            {
                let Some(section) = sym
                    .section_index()
                    .and_then(|i| elf.section_by_index(i).ok())
                else {
                    continue;
                };
                let code = section.data().unwrap();
                let (at, len) = (sym.address() as usize, sym.size() as usize);
                let Some(code) = code.get(at..at + len) else {
                    continue;
                };
                let depth = stack_depth(code);
                assert!(
                    depth <= 456,
                    "{}: {} uses {depth} bytes of stack",
                    tool.name,
                    sym.name().unwrap_or("?")
                );
            }
        }
    }

    /// Every program, map and global userspace names exists in the tool's ELF:
    /// a typo fails here, not on a user's machine.
    #[test]
    fn names_exist_in_the_embedded_objects() {
        for tool in TOOLS {
            assert!(
                !tool.object.elf.is_empty(),
                "{}: built with stub eBPF objects (TRACER_EBPF_STUBS): run through cargo xtask test",
                tool.name
            );
            let elf = object::File::parse(tool.object.elf).unwrap();
            let symbols: Vec<(String, String)> = elf
                .symbols()
                .filter_map(|s| {
                    let section = s
                        .section_index()
                        .and_then(|i| elf.section_by_index(i).ok())
                        .and_then(|sec| sec.name().ok().map(str::to_string))?;
                    Some((s.name().ok()?.to_string(), section))
                })
                .collect();
            let has = |name: &str, section: &dyn Fn(&str) -> bool| {
                symbols.iter().any(|(n, s)| n == name && section(s))
            };
            for u in (tool.hooks)() {
                let raw = u.chain.candidates.iter().filter_map(|h| match h {
                    Hook::RawTracepoint { program, .. }
                    | Hook::BtfTracepoint { program, .. }
                    | Hook::Kprobe { program, .. } => Some(*program),
                    _ => None,
                });
                for program in std::iter::once(u.chain.program).chain(raw) {
                    assert!(
                        has(program, &|s| s.starts_with("tracepoint")
                            || s.starts_with("raw_tp")
                            || s.starts_with("raw_tracepoint")
                            || s.starts_with("tp_btf")
                            || s.starts_with("perf_event")
                            || s.starts_with("kprobe")
                            || s.starts_with("kretprobe")),
                        "{}: no program {program} in its ELF",
                        tool.name,
                    );
                }
            }
            for map in tool.object.maps.iter().chain(&["COUNTERS"]) {
                assert!(
                    has(map, &|s| s == "maps" || s == ".maps"),
                    "{}: no map {map} in its ELF",
                    tool.name
                );
            }
            for global in tool.object.globals.iter().chain(&["CONFIG"]) {
                assert!(
                    has(global, &|s| s.starts_with(".rodata")
                        || s.starts_with(".data")),
                    "{}: no global {global} in its ELF",
                    tool.name
                );
            }
        }
    }
}
