//! What the block I/O tools share on the user side: the hook chains for request
//! tracking, field offsets from the format files, and decoding of rwbs flags.

use anyhow::{Context as _, Result};
use tracer_common::{
    Slot, TaskFilter,
    block::{BlockConfig, FLAG_ATTRIBUTE, Inflight, RqFields, RqKey},
};

use crate::core::{
    ebpf::{Choice, Hook, HookChain, HookUse, Loaded, Object},
    mapdump,
    tracefs::Format,
};

pub const SUBMIT: HookChain = HookChain {
    role: "submit",
    program: "block_submit",
    // block_io_start (6.5+) fires once per request in the submitter's context;
    // block_bio_queue fires per bio, also in the submitter's context.
    candidates: &[
        Hook::tp("block", "block_io_start"),
        Hook::tp("block", "block_bio_queue"),
    ],
};
pub const INSERT: HookChain = HookChain {
    role: "insert",
    program: "block_insert",
    candidates: &[Hook::tp("block", "block_rq_insert")],
};
pub const ISSUE: HookChain = HookChain {
    role: "issue",
    program: "block_issue",
    candidates: &[Hook::tp("block", "block_rq_issue")],
};
pub const COMPLETE: HookChain = HookChain {
    role: "complete",
    program: "block_complete",
    candidates: &[Hook::tp("block", "block_rq_complete")],
};

/// Which request events a tool needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    /// The submitting task (for -p/-c and COMM/PID columns).
    pub submit: bool,
    pub insert: bool,
    pub issue: bool,
    pub complete: bool,
}

impl Needs {
    pub const NONE: Needs = Needs {
        submit: false,
        insert: false,
        issue: false,
        complete: false,
    };
    pub const SUBMIT: Needs = Needs {
        submit: true,
        ..Needs::NONE
    };
    pub const INSERT: Needs = Needs {
        insert: true,
        ..Needs::NONE
    };

    /// These needs and `more`'s, when `on`.
    pub const fn and_if(self, on: bool, more: Needs) -> Needs {
        if !on {
            return self;
        }
        Needs {
            submit: self.submit || more.submit,
            insert: self.insert || more.insert,
            issue: self.issue || more.issue,
            complete: self.complete || more.complete,
        }
    }

    fn chains(self) -> [(bool, &'static HookChain); 4] {
        [
            (self.submit, &SUBMIT),
            (self.insert, &INSERT),
            (self.issue, &ISSUE),
            (self.complete, &COMPLETE),
        ]
    }
}

/// A block tool's hooks: those it always needs, and those an option adds.
pub fn hook_uses(always: Needs, options: &[(&'static str, Needs)]) -> Vec<HookUse> {
    let mut uses: Vec<HookUse> = always
        .chains()
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, c)| HookUse::always(*c))
        .collect();
    for (when, needs) in options {
        for (on, chain) in needs.chains() {
            if on && !uses.iter().any(|u| u.chain.program == chain.program) {
                uses.push(HookUse::with(when, *chain));
            }
        }
    }
    uses
}

/// The hooks chosen for this kernel and the configuration global to load with.
pub struct Plan {
    pub config: BlockConfig,
    pub choices: Vec<Choice>,
}

fn fields(f: &Format) -> Result<RqFields> {
    Ok(RqFields {
        dev: f.offset("dev", 4)?,
        sector: f.offset("sector", 8)?,
        nr_sector: f.offset_or_absent("nr_sector", 4)?,
        bytes: f.offset_or_absent("bytes", 4)?,
        rwbs: f.offset_at_least("rwbs", 8)?,
        _pad: [0; 3],
    })
}

/// Probes the kernel for the hooks `needs` asks for and reads their layouts.
pub fn plan(needs: Needs, task: TaskFilter, dev: u32) -> Result<Plan> {
    let mut config = BlockConfig {
        task,
        dev,
        ..BlockConfig::INITIAL
    };
    let mut choices = Vec::new();
    let [submit, insert, issue, complete] = needs.chains();
    let wanted = [
        (submit, &mut config.submit),
        (insert, &mut config.insert),
        (issue, &mut config.issue),
        (complete, &mut config.complete),
    ];
    for ((need, chain), slot) in wanted {
        if !need {
            continue;
        }
        let choice = chain.choose()?;
        let Hook::Tracepoint { category, name } = choice.hook else {
            unreachable!("block hooks are tracepoints")
        };
        let format =
            Format::read(category, name)?.with_context(|| format!("{category}:{name} vanished"))?;
        *slot = fields(&format)?;
        choices.push(choice);
    }
    if needs.submit {
        config.flags |= FLAG_ATTRIBUTE;
    }
    Ok(Plan { config, choices })
}

impl Plan {
    pub fn attach(&self, loaded: &mut Loaded) -> Result<()> {
        for choice in &self.choices {
            loaded.attach(choice)?;
        }
        Ok(())
    }
}

/// Loads a block tool's object with its plan's configuration and attaches it.
pub fn load<'a>(
    object: &Object,
    plan: &'a Plan,
    configure: impl FnOnce(&mut aya::EbpfLoader<'a>),
) -> Result<Loaded> {
    let mut loaded = crate::core::ebpf::load(object, |l| {
        l.override_global("CONFIG", &plan.config, true);
        configure(l);
    })?;
    plan.attach(&mut loaded)?;
    Ok(loaded)
}

/// Requests issued and not completed, left in the in-flight table (array slots
/// and overflow map).
pub fn in_flight(loaded: &Loaded) -> u64 {
    let mut n = 0;
    if let Some(map) = loaded.ebpf.map("INFLIGHT_SLOTS")
        && let Ok(slots) = mapdump::entries::<u32, Slot<RqKey, Inflight>>(map)
    {
        n += slots
            .iter()
            .filter(|(_, s)| s[0].key.dev != 0 && s[0].value.ts_issue != 0)
            .count();
    }
    if let Some(map) = loaded.ebpf.map("INFLIGHT")
        && let Ok(map) = mapdump::entries::<RqKey, Inflight>(map)
    {
        n += map.iter().filter(|(_, v)| v[0].ts_issue != 0).count();
    }
    n as u64
}

/// The I/O direction letter of BCC's T column: R, W, D (discard), F (flush), N.
pub fn op_letter(rwbs: &str) -> char {
    let (_, op, _) = split_rwbs(rwbs);
    op
}

/// The operation as a metric label: read, write, discard, flush or other.
pub fn op_name(rwbs: &str) -> &'static str {
    match op_letter(rwbs) {
        'R' => "read",
        'W' => "write",
        'D' => "discard",
        'F' => "flush",
        _ => "other",
    }
}

/// blk_fill_rwbs writes: [F = preflush] op [F = FUA][A = readahead][S = sync][M = meta].
fn split_rwbs(rwbs: &str) -> (bool, char, &str) {
    let b = rwbs.as_bytes();
    let is_op = |c: u8| matches!(c, b'W' | b'R' | b'D' | b'F' | b'N');
    match b {
        [b'F', op, ..] if is_op(*op) => (true, *op as char, &rwbs[2..]),
        [op, ..] => (false, *op as char, &rwbs[1..]),
        [] => (false, 'N', ""),
    }
}

/// rwbs as BCC's biolatency -F names the flags, e.g. "Sync-Write", "ReadAhead-Read".
pub fn flags_name(rwbs: &str) -> String {
    let (preflush, op, rest) = split_rwbs(rwbs);
    let (mut desc, rest) = match (op, rest.strip_prefix('E')) {
        ('D', Some(rest)) => ("SecureErase".to_string(), rest),
        ('R', _) => ("Read".to_string(), rest),
        ('W', _) => ("Write".to_string(), rest),
        ('D', None) => ("Discard".to_string(), rest),
        ('F', _) => ("Flush".to_string(), rest),
        _ => ("Unknown".to_string(), rest),
    };
    for (flag, name) in [('S', "Sync"), ('M', "Metadata"), ('F', "ForcedUnitAccess")] {
        if rest.contains(flag) {
            desc = format!("{name}-{desc}");
        }
    }
    if preflush {
        desc = format!("PreFlush-{desc}");
    }
    if rest.contains('A') {
        desc = format!("ReadAhead-{desc}");
    }
    desc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names_follow_bcc() {
        for (rwbs, name) in [
            ("R", "Read"),
            ("W", "Write"),
            ("WS", "Sync-Write"),
            ("RA", "ReadAhead-Read"),
            ("FWS", "PreFlush-Sync-Write"),
            ("WFS", "ForcedUnitAccess-Sync-Write"),
            ("FF", "PreFlush-Flush"),
            ("F", "Flush"),
            ("D", "Discard"),
            ("DE", "SecureErase"),
            ("RM", "Metadata-Read"),
            ("N", "Unknown"),
            ("", "Unknown"),
        ] {
            assert_eq!(flags_name(rwbs), name, "{rwbs}");
        }
    }

    #[test]
    fn op_letters() {
        assert_eq!(op_letter("WS"), 'W');
        assert_eq!(op_letter("FWS"), 'W');
        assert_eq!(op_letter("R"), 'R');
        assert_eq!(op_letter("FF"), 'F');
        assert_eq!(op_letter("D"), 'D');
        assert_eq!(op_letter(""), 'N');
    }

    #[test]
    fn layouts_from_fixtures() {
        let issue =
            Format::parse(include_str!("../../tests/fixtures/block_rq_issue.format")).unwrap();
        let f = fields(&issue).unwrap();
        assert_eq!(
            (f.dev, f.sector, f.nr_sector, f.bytes, f.rwbs),
            (8, 16, 24, 28, 34)
        );
        let complete = Format::parse(include_str!(
            "../../tests/fixtures/block_rq_complete.format"
        ))
        .unwrap();
        let f = fields(&complete).unwrap();
        assert_eq!(f.bytes, tracer_common::block::NO_FIELD);
        let bio =
            Format::parse(include_str!("../../tests/fixtures/block_bio_queue.format")).unwrap();
        let f = fields(&bio).unwrap();
        assert_eq!((f.dev, f.sector, f.rwbs), (8, 16, 28));
    }
}
