//! tools/block/: the block I/O tools, one file per tool (biolatency, biosnoop,
//! biotop, bitesize, biopattern), over the family's user-side code here (tracer-
//! ebpf's block.rs is its kernel side).
//!
//! What the block I/O tools share on the user side: the hook chains for request
//! tracking, field offsets from the format files, and decoding of rwbs flags.

pub mod biolatency;
pub mod biopattern;
pub mod biosnoop;
pub mod biotop;
pub mod bitesize;

use std::rc::Rc;

use anyhow::{Context as _, Result, bail};
use tracer_common::{
    Slot, TaskFilter,
    block::{
        BlockConfig, FLAG_ATTRIBUTE, FLAG_SIZES, FLAG_SUBMIT_BIO, Inflight, NO_OP, RqArg, RqFields,
        RqKey, RqLayout, RqOps,
    },
};

use crate::bpf::{Choice, Hook, HookChain, HookUse, Loaded, Object, mapdump};
use crate::kernel::{self, btf::Btf, tracefs::Format};

// Each chain's BTF-typed tracepoints come first, then its raw ones: both
// key the request by its address, where the classic one can only key it by
// (dev, sector); the BTF-typed program loads the request's fields where the
// raw one reads each through a helper call.
pub const SUBMIT: HookChain = HookChain {
    role: "submit",
    program: "block_submit",
    // block_io_start (6.5+) fires once per request in the submitter's context,
    // from blk_account_io_start, which before 5.19 is a function of its own
    // that a kprobe can see the request at (5.10: libbpf-tools' biosnoop's
    // way); block_bio_queue fires per bio, also in the submitter's context.
    // Keyed by address, the bio stands for its request until it is one (see
    // FLAG_SUBMIT_BIO).
    candidates: &[
        Hook::btf_tp("block", "block_io_start", "block_submit_btf"),
        Hook::kprobe("blk_account_io_start", "block_submit_kprobe"),
        Hook::btf_tp("block", "block_bio_queue", "block_submit_btf"),
        Hook::raw_tp("block", "block_io_start", "block_submit_raw"),
        Hook::raw_tp("block", "block_bio_queue", "block_submit_raw"),
        Hook::tp("block", "block_io_start"),
        Hook::tp("block", "block_bio_queue"),
    ],
};
pub const INSERT: HookChain = HookChain {
    role: "insert",
    program: "block_insert",
    candidates: &[
        Hook::btf_tp("block", "block_rq_insert", "block_insert_btf"),
        Hook::raw_tp("block", "block_rq_insert", "block_insert_raw"),
        Hook::tp("block", "block_rq_insert"),
    ],
};
pub const ISSUE: HookChain = HookChain {
    role: "issue",
    program: "block_issue",
    candidates: &[
        Hook::btf_tp("block", "block_rq_issue", "block_issue_btf"),
        Hook::raw_tp("block", "block_rq_issue", "block_issue_raw"),
        Hook::tp("block", "block_rq_issue"),
    ],
};
pub const COMPLETE: HookChain = HookChain {
    role: "complete",
    program: "block_complete",
    candidates: &[
        Hook::btf_tp("block", "block_rq_complete", "block_complete_btf"),
        Hook::raw_tp("block", "block_rq_complete", "block_complete_raw"),
        Hook::tp("block", "block_rq_complete"),
    ],
};

/// Which request events a tool needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    /// The submitting task (for -p/-c and COMM/PID columns).
    pub submit: bool,
    pub insert: bool,
    pub issue: bool,
    pub complete: bool,
    /// Each request's size, kept from its issue (a BYTES column).
    pub sizes: bool,
}

impl Needs {
    pub const NONE: Needs = Needs {
        submit: false,
        insert: false,
        issue: false,
        complete: false,
        sizes: false,
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
            sizes: self.sizes || more.sizes,
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
/// The configuration serves every kind of program, so that a later set of
/// hooks can replace the first if the kernel refuses one of its programs.
pub struct Plan {
    pub config: BlockConfig,
    /// The hooks to attach, best first: BTF-typed tracepoints where this
    /// kernel has them, else raw ones, else classic ones; then, in the order
    /// to fall back to, the same tracepoints raw, and the classic ones.
    sets: Vec<Vec<Choice>>,
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

/// Where `struct request`'s fields are in the running kernel, from BTF.
pub fn rq_layout(btf: &Btf) -> Result<RqLayout> {
    let off = |s: &str, p: &str| -> Result<u16> {
        u16::try_from(btf.member(s, p)?.offset).with_context(|| format!("{s}.{p} offset too large"))
    };
    let major = off("gendisk", "major")?;
    if off("gendisk", "first_minor")? != major + 4 {
        bail!("gendisk.first_minor does not follow gendisk.major");
    }
    // Older kernels' requests point to their disk (5.10 here); later ones
    // only to their queue.
    let (rq_disk, q_disk) = match off("request", "rq_disk") {
        Ok(rq_disk) => (rq_disk, tracer_common::block::NO_FIELD),
        Err(_) => (
            tracer_common::block::NO_FIELD,
            off("request_queue", "disk")?,
        ),
    };
    Ok(RqLayout {
        sector: off("request", "__sector")?,
        data_len: off("request", "__data_len")?,
        cmd_flags: off("request", "cmd_flags")?,
        rq_disk,
        q: off("request", "q")?,
        q_disk,
        disk_major: major,
        bio: off("request", "bio")?,
        ops: rq_ops(btf)?,
    })
}

/// The meaning of cmd_flags' bits (include/linux/blk_types.h), from BTF.
fn rq_ops(btf: &Btf) -> Result<RqOps> {
    // `enum req_op` since 6.0, `enum req_opf` before.
    let ops = btf
        .enum_variants("req_op")
        .or_else(|_| btf.enum_variants("req_opf"))?;
    let flags = btf.enum_variants("req_flag_bits")?;
    let find = |list: &[(String, i64)], name: &str| -> Option<u8> {
        let (_, v) = list.iter().find(|(n, _)| n == name)?;
        u8::try_from(*v).ok()
    };
    let op =
        |name: &str| find(&ops, name).with_context(|| format!("no {name} in the kernel's BTF"));
    let bit = |name: &str| {
        find(&flags, name)
            .filter(|b| *b < 32)
            .with_context(|| format!("no {name} in the kernel's BTF"))
    };
    Ok(RqOps {
        // The flag bits start just above the operation's.
        op_bits: bit("__REQ_FAILFAST_DEV")?,
        read: op("REQ_OP_READ")?,
        write: op("REQ_OP_WRITE")?,
        flush: op("REQ_OP_FLUSH")?,
        discard: op("REQ_OP_DISCARD")?,
        secure_erase: op("REQ_OP_SECURE_ERASE")?,
        write_same: find(&ops, "REQ_OP_WRITE_SAME").unwrap_or(NO_OP),
        preflush: bit("__REQ_PREFLUSH")?,
        fua: bit("__REQ_FUA")?,
        rahead: bit("__REQ_RAHEAD")?,
        sync: bit("__REQ_SYNC")?,
        meta: bit("__REQ_META")?,
        _pad: [0; 4],
    })
}

/// Where each raw tracepoint passes the request (block_bio_queue: the bio),
/// from its BTF prototype.
fn rq_arg(btf: &Btf, name: &str) -> Result<RqArg> {
    let object = if name == "block_bio_queue" {
        "bio"
    } else {
        "request"
    };
    let (index, arity) = btf.tracepoint_arg(name, object)?;
    Ok(RqArg {
        index: u8::try_from(index)?,
        arity: u8::try_from(arity)?,
    })
}

/// The request layout, or why the raw tracepoints cannot be used.
fn raw_layout() -> Result<(Rc<Btf>, RqLayout), String> {
    if !kernel::has_btf() {
        return Err("this kernel has no BTF".into());
    }
    let btf = Btf::load().map_err(|e| format!("{e:#}"))?;
    let layout = rq_layout(&btf).map_err(|e| format!("no request layout in BTF: {e:#}"))?;
    Ok((btf, layout))
}

fn is_btf(hook: &Hook) -> bool {
    matches!(hook, Hook::BtfTracepoint { .. })
}

fn is_kprobe(hook: &Hook) -> bool {
    matches!(hook, Hook::Kprobe { .. })
}

/// The tracepoint's name, or the kprobe's function.
fn tracepoint_name(hook: &Hook) -> &'static str {
    match hook {
        Hook::Tracepoint { name, .. }
        | Hook::RawTracepoint { name, .. }
        | Hook::BtfTracepoint { name, .. }
        | Hook::Kprobe { function: name, .. } => name,
        Hook::PerfSoftware { .. } => unreachable!("no block hook is a perf event"),
    }
}

/// Probes the kernel for the hooks `needs` asks for and reads their layouts.
/// Hooks that pass the request are taken only if every hook has one: a
/// request keyed by its address at one hook and by its sector at another
/// would never match.
pub fn plan(needs: Needs, task: TaskFilter, dev: u32) -> Result<Plan> {
    let mut config = initial_config(needs, task, dev);
    let layout = raw_layout();
    let chooser = Chooser {
        wanted: needs
            .chains()
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, c)| c)
            .collect(),
        layout: &layout,
    };
    let mut sets = chooser.sets()?;
    classic_fields(&mut config, &sets[sets.len() - 1])?;
    if let Ok((btf, rq)) = &layout
        && sets.len() > 1
    {
        config.rq = *rq;
        raw_args(&mut config, &mut sets[0], btf)?;
        if let Some(with_kprobe) = with_submit_kprobe(&sets[0], &|hook| chooser.no_layout(hook)) {
            sets.insert(0, with_kprobe);
        }
    }
    Ok(Plan { config, sets })
}

/// The configuration before any hook is chosen: the filters, and which
/// optional work the programs do.
fn initial_config(needs: Needs, task: TaskFilter, dev: u32) -> BlockConfig {
    let mut config = BlockConfig {
        task,
        dev,
        ..BlockConfig::INITIAL
    };
    if needs.submit {
        config.flags |= FLAG_ATTRIBUTE;
    }
    if needs.sizes {
        config.flags |= FLAG_SIZES;
    }
    config
}

/// Why a hook is passed over, given the index of its chain among the wanted.
type Refuse<'f> = &'f dyn Fn(usize, &Hook) -> Option<String>;

/// Chooses a hook for each wanted chain, for each set to fall back to.
struct Chooser<'a> {
    wanted: Vec<&'static HookChain>,
    layout: &'a Result<(Rc<Btf>, RqLayout), String>,
}

impl Chooser<'_> {
    /// Why `hook` cannot be used without the request layout, if it is missing.
    fn no_layout(&self, hook: &Hook) -> Option<String> {
        hook.passes_arguments()
            .then(|| self.layout.as_ref().err().cloned())
            .flatten()
    }

    /// One choice per wanted chain (by index), passing over what `refuse` names.
    fn choose_all(&self, refuse: Refuse) -> Result<Vec<Choice>> {
        self.wanted
            .iter()
            .enumerate()
            .map(|(i, chain)| {
                chain.choose_with(|hook| match refuse(i, hook) {
                    Some(why) => Err(why),
                    None => Ok(()),
                })
            })
            .collect()
    }

    /// The same, keyed one way: all by address, or all by (dev, sector).
    fn keyed(&self, refuse: Refuse) -> Result<Vec<Choice>> {
        let choices = self.choose_all(refuse)?;
        let Some(classic) = choices.iter().find(|c| !c.hook.passes_arguments()) else {
            return Ok(choices);
        };
        if !choices.iter().any(|c| c.hook.passes_arguments()) {
            return Ok(choices);
        }
        let why = format!(
            "the {} hook here is {}, which does not give the request",
            classic.role, classic.hook
        );
        self.choose_all(&|_, hook| hook.passes_arguments().then(|| why.clone()))
    }

    /// The sets of hooks, best first: the best this kernel has, then the same
    /// tracepoints raw if the first has BTF-typed ones, then the classic ones
    /// if the last so far passes the request.
    fn sets(&self) -> Result<Vec<Vec<Choice>>> {
        let mut sets = vec![self.best()?];
        if sets[0].iter().any(|c| is_btf(&c.hook)) {
            let raw = self.raw(&sets[0])?;
            if raw.iter().any(|c| c.hook.passes_arguments()) {
                sets.push(raw);
            }
        }
        if sets[sets.len() - 1]
            .iter()
            .any(|c| c.hook.passes_arguments())
        {
            sets.push(self.classic()?);
        }
        Ok(sets)
    }

    /// The best hooks, without the submitter's kprobe: it is tried in a set
    /// of its own, put before this one (see `with_submit_kprobe`), so that
    /// these sets are what to fall back to if the kernel refuses it.
    fn best(&self) -> Result<Vec<Choice>> {
        self.keyed(&|_, hook| {
            is_kprobe(hook)
                .then(|| "the kernel refused it (see the note)".to_string())
                .or_else(|| self.no_layout(hook))
        })
    }

    /// `first`'s tracepoints raw: the configuration is the first set's.
    fn raw(&self, first: &[Choice]) -> Result<Vec<Choice>> {
        self.keyed(&|i, hook| {
            if is_btf(hook) {
                Some("the kernel refused a BTF-typed tracepoint's program".into())
            } else if is_kprobe(hook) {
                Some("passed over with the raw tracepoints (see the note)".into())
            } else if hook.passes_arguments()
                && tracepoint_name(hook) != tracepoint_name(&first[i].hook)
            {
                Some(format!("not {}", first[i].hook))
            } else {
                self.no_layout(hook)
            }
        })
    }

    /// The classic tracepoints, the last to fall back to.
    fn classic(&self) -> Result<Vec<Choice>> {
        self.choose_all(&|_, hook| {
            hook.passes_arguments()
                .then(|| "the kernel refused a raw or BTF-typed tracepoint's program".into())
        })
    }
}

/// Each classic tracepoint's record fields, from its format file.
fn classic_fields(config: &mut BlockConfig, classic: &[Choice]) -> Result<()> {
    for choice in classic {
        let Hook::Tracepoint { category, name } = choice.hook else {
            unreachable!("the last choices are classic tracepoints")
        };
        let format =
            Format::read(category, name)?.with_context(|| format!("{category}:{name} vanished"))?;
        *role_config(config, choice.role).0 = fields(&format)?;
    }
    Ok(())
}

/// Where each hook of `set` that passes the request passes it, and the BTF
/// ids of its BTF-typed tracepoints.
fn raw_args(config: &mut BlockConfig, set: &mut [Choice], btf: &Btf) -> Result<()> {
    for choice in set.iter_mut().filter(|c| c.hook.passes_arguments()) {
        let name = tracepoint_name(&choice.hook);
        *role_config(config, choice.role).1 = rq_arg(btf, name)?;
        if name == "block_bio_queue" {
            config.flags |= FLAG_SUBMIT_BIO;
        }
        if is_btf(&choice.hook) {
            choice.btf_id = Some(btf.tracepoint_typedef(name)?);
        }
    }
    Ok(())
}

/// `set` with its submitter seen at the kprobe instead of block_bio_queue,
/// when this kernel has the kprobe's function. Each request is then seen
/// once, as a request, where block_bio_queue sees each of its bios; the
/// configuration stays the bio's (FLAG_SUBMIT_BIO), which the kprobe's
/// program ignores and the later hooks' need not: an entry not under the
/// request's first bio is looked up under the request.
fn with_submit_kprobe(
    set: &[Choice],
    no_layout: &dyn Fn(&Hook) -> Option<String>,
) -> Option<Vec<Choice>> {
    let at = set.iter().position(|c| c.role == SUBMIT.role)?;
    let bio = &set[at].hook;
    if !bio.passes_arguments() || tracepoint_name(bio) != "block_bio_queue" {
        return None;
    }
    let kprobe_at = SUBMIT.candidates.iter().position(is_kprobe)?;
    let choice = SUBMIT
        .choose_with(|hook| {
            let place = SUBMIT.candidates.iter().position(|c| c == hook);
            match place {
                Some(p) if p == kprobe_at => no_layout(hook).map_or(Ok(()), Err),
                // Better hooks were passed over already; they fail again.
                Some(p) if p < kprobe_at => Ok(()),
                _ => Err("not tried".into()),
            }
        })
        .ok()
        .filter(|c| is_kprobe(&c.hook))?;
    let mut with_kprobe = set.to_vec();
    with_kprobe[at] = choice;
    Some(with_kprobe)
}

/// The configuration of a role's hook: its classic record's fields and where
/// its raw tracepoint passes the request.
fn role_config<'a>(config: &'a mut BlockConfig, role: &str) -> (&'a mut RqFields, &'a mut RqArg) {
    match role {
        "submit" => (&mut config.submit, &mut config.args.submit),
        "insert" => (&mut config.insert, &mut config.args.insert),
        "issue" => (&mut config.issue, &mut config.args.issue),
        "complete" => (&mut config.complete, &mut config.args.complete),
        other => unreachable!("no block role {other}"),
    }
}

impl Plan {
    /// Attaches the chosen hooks; if the kernel refuses a program, the next
    /// set instead (`-v` says why).
    pub fn attach(&self, loaded: &mut Loaded) -> Result<()> {
        let mut sets = self.sets.iter();
        let mut set = sets.next().expect("a plan has hooks");
        loop {
            let Err(e) = set.iter().try_for_each(|c| loaded.attach(c)) else {
                return Ok(());
            };
            let Some(next) = sets.next() else {
                return Err(e);
            };
            loaded.detach_all();
            let kind = |s: &[Choice]| {
                let tracepoints = match s
                    .iter()
                    .find(|c| c.hook.passes_arguments() && !is_kprobe(&c.hook))
                {
                    Some(c) if is_btf(&c.hook) => "BTF-typed tracepoints",
                    Some(_) => "raw tracepoints",
                    None => "classic tracepoints",
                };
                match s.iter().find(|c| is_kprobe(&c.hook)) {
                    Some(c) => format!("{tracepoints} and {}", c.hook),
                    None => tracepoints.to_string(),
                }
            };
            loaded
                .notes
                .push(format!("{} instead of {}: {e:#}", kind(next), kind(set)));
            set = next;
        }
    }
}

/// Loads a block tool's object with its plan's configuration and attaches it.
pub fn load<'a>(
    object: &Object,
    plan: &'a Plan,
    configure: impl FnOnce(&mut aya::EbpfLoader<'a>),
) -> Result<Loaded> {
    let mut loaded = crate::bpf::load(object, |l| {
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
            .filter(|(_, s)| s[0].key != RqKey::default() && s[0].value.ts_issue != 0)
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
    fn request_layout_from_this_kernel() {
        let Ok(btf) = Btf::load() else {
            assert!(std::env::var("CI").is_err(), "CI needs BTF");
            return;
        };
        let rq = rq_layout(&btf).unwrap();
        // include/linux/blk-mq.h: __sector follows __data_len, 4 bytes apart.
        assert_eq!(rq.data_len + 4, rq.sector);
        assert_eq!((rq.ops.read, rq.ops.write, rq.ops.op_bits), (0, 1, 8));
        // Before 5.11 the queue comes first.
        let bio_queue = btf.tracepoint_arity("block_bio_queue").unwrap();
        for (tracepoint, object, want) in [
            ("block_rq_complete", "request", (0, 3)),
            ("block_bio_queue", "bio", (bio_queue - 1, bio_queue)),
        ] {
            let got = btf.tracepoint_arg(tracepoint, object).unwrap();
            assert_eq!(got, want, "{tracepoint}");
        }
    }

    #[test]
    fn layouts_from_fixtures() {
        let issue = Format::parse(include_str!(
            "../../../tests/fixtures/block_rq_issue.format"
        ))
        .unwrap();
        let f = fields(&issue).unwrap();
        assert_eq!(
            (f.dev, f.sector, f.nr_sector, f.bytes, f.rwbs),
            (8, 16, 24, 28, 34)
        );
        let complete = Format::parse(include_str!(
            "../../../tests/fixtures/block_rq_complete.format"
        ))
        .unwrap();
        let f = fields(&complete).unwrap();
        assert_eq!(f.bytes, tracer_common::block::NO_FIELD);
        let bio = Format::parse(include_str!(
            "../../../tests/fixtures/block_bio_queue.format"
        ))
        .unwrap();
        let f = fields(&bio).unwrap();
        assert_eq!((f.dev, f.sector, f.rwbs), (8, 16, 28));
    }
}
