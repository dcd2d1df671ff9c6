//! The running kernel's BTF (/sys/kernel/btf/vmlinux): struct member offsets and
//! sizes, enum values and raw tracepoint prototypes. Rust eBPF cannot emit CO-RE
//! relocations, so tracer looks the layout up here at start-up and gives the
//! offsets to its kernel programs as globals.
//!
//! Start-up time matters, so parsing is a single pass that records where each type
//! record starts and indexes the names of the kinds looked up by name (structs,
//! unions, enums, typedefs); everything else is decoded on demand. The file is
//! mapped rather than copied where the kernel allows it (6.16 and later). The format
//! is described in the kernel's Documentation/bpf/btf.rst. Only base BTF in the
//! host's byte order is read (what vmlinux always is), not split (module) BTF.

use std::{
    cell::{Cell, RefCell},
    fs, io,
    io::Read as _,
    ops::Deref,
    os::fd::AsRawFd as _,
    rc::Rc,
};

use anyhow::{Context as _, Result, bail};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
/// struct btf_type: name_off, info, size/type.
const TYPE_LEN: usize = 12;
/// Bound on typedef/qualifier chains, anonymous-member nesting and declarator
/// depth, so that malformed (cyclic) BTF gives an error instead of a hang.
const MAX_DEPTH: u32 = 64;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// A struct member's place: byte offset from the start of the outermost struct
/// named in the lookup, and byte size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub size: u32,
}

/// Parsed BTF. Lookups take bare names: `"sock"`, not `"struct sock"`.
pub struct Btf {
    data: Data,
    /// Absolute start and end of the string section in `data`.
    strings: (usize, usize),
    /// Absolute position in `data` of each type record, indexed by type id;
    /// entry 0 stands for id 0 (void), which has no record.
    types: Vec<u32>,
    /// (FNV-1a hash of the name, type id) of every named struct, union, enum and
    /// typedef, sorted, so that a lookup by name is a binary search.
    by_name: Vec<(u64, u32)>,
    /// BTF does not record pointer size; it is the size of `long` on Linux.
    ptr_size: u32,
}

impl std::fmt::Debug for Btf {
    // Not derived: the raw data is megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf")
            .field("bytes", &self.data.len())
            .field("types", &(self.types.len() - 1))
            .finish_non_exhaustive()
    }
}

/// The BTF bytes: mapped from sysfs where the kernel allows it (6.16 and later),
/// which saves copying megabytes at start-up, else read into memory.
enum Data {
    Owned(Vec<u8>),
    Mapped(Mapping),
}

impl Deref for Data {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Data::Owned(v) => v,
            // SAFETY: ptr..ptr+len is a read-only mapping that lives until Mapping
            // is dropped, and the kernel never changes its BTF.
            Data::Mapped(m) => unsafe { std::slice::from_raw_parts(m.ptr, m.len) },
        }
    }
}

struct Mapping {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by Mapping alone.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(file: &fs::File) -> io::Result<Mapping> {
        let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
        if len == 0 {
            return Err(io::Error::other("empty file"));
        }
        // SAFETY: a new private read-only mapping of an open file; the kernel
        // refuses it (and we fall back to reading) if it cannot map all of it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in Mapping::new, used no more.
        unsafe { libc::munmap(self.ptr.cast_mut().cast(), self.len) };
    }
}

/// A decoded type record header.
#[derive(Clone, Copy)]
struct Type {
    id: u32,
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// A size for INT, STRUCT, UNION, ENUM, ENUM64, FLOAT and DATASEC; a type id
    /// for the others.
    size_or_type: u32,
    /// Absolute position of the kind-specific data after the header.
    extra: usize,
}

/// A bitfield's position: bits from the start of the struct, and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bitfield {
    pub bit_offset: u32,
    pub bits: u32,
}

/// A struct member as found: bit offset from the start of the struct searched,
/// its type and its bitfield size (0 when not a bitfield).
struct FoundMember {
    bit_offset: u64,
    type_id: u32,
    bitfield_size: u32,
}

thread_local! {
    /// Inside `shared`: whether loads reuse one parse, and the parse.
    static SHARING: Cell<bool> = const { Cell::new(false) };
    static SHARED: RefCell<Option<Rc<Btf>>> = const { RefCell::new(None) };
}

/// Runs `f` with every `Btf::load` on this thread sharing one parse: the
/// exporter and the recorder start a dozen tools, and each parse costs ~3 ms.
/// The parse is dropped when `f` returns, so a long-running process does not
/// keep megabytes it no longer needs.
pub fn shared<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SHARING.set(false);
            SHARED.take();
        }
    }
    let _reset = Reset;
    SHARING.set(true);
    f()
}

/// Whether the running kernel's BTF has `struct bpf_mem_alloc`, noted at its
/// first parse: the tools that ask parse it anyway, and a second parse would
/// cost start-up time and peak memory.
static MEM_ALLOC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether tracing programs may use hash maps that allocate on insert: kernels
/// with the BPF memory allocator (6.1 and later; found by its struct in the
/// kernel's BTF). Before it, the verifier logs a one-time WARNING and taints
/// the kernel for the first such program of a boot (a panic where
/// `panic_on_warn` is set); there hash maps are preallocated. Without BTF the
/// allocator is taken to be absent.
pub fn has_bpf_mem_alloc() -> bool {
    if MEM_ALLOC.get().is_none() {
        // A parse notes the answer (see load_uncached).
        let _ = Btf::load();
    }
    MEM_ALLOC.get() == Some(&true)
}

impl Btf {
    /// The running kernel's BTF: parsed now, or the parse of an enclosing
    /// `shared` scope.
    pub fn load() -> Result<Rc<Btf>> {
        if !SHARING.get() {
            return Btf::load_uncached().map(Rc::new);
        }
        if let Some(btf) = SHARED.with_borrow(|b| b.clone()) {
            return Ok(btf);
        }
        let btf = Rc::new(Btf::load_uncached()?);
        SHARED.set(Some(Rc::clone(&btf)));
        Ok(btf)
    }

    /// Reads and parses the running kernel's BTF.
    fn load_uncached() -> Result<Btf> {
        let mut file = match fs::File::open(VMLINUX) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                bail!("this kernel has no BTF ({VMLINUX})")
            }
            Err(e) => return Err(e).with_context(|| format!("opening {VMLINUX}")),
        };
        let data = match Mapping::new(&file) {
            Ok(mapping) => Data::Mapped(mapping),
            Err(_) => {
                let mut data = Vec::new();
                file.read_to_end(&mut data)
                    .with_context(|| format!("reading {VMLINUX}"))?;
                Data::Owned(data)
            }
        };
        let btf = Btf::from_data(data).with_context(|| format!("parsing {VMLINUX}"))?;
        MEM_ALLOC.get_or_init(|| btf.has_struct("bpf_mem_alloc"));
        Ok(btf)
    }

    /// Parses a BTF blob (a copy of `bytes` is kept).
    #[cfg(test)]
    pub fn parse(bytes: &[u8]) -> Result<Btf> {
        Btf::from_data(Data::Owned(bytes.to_vec()))
    }

    fn from_data(data: Data) -> Result<Btf> {
        let hdr_len = check_header(&data)?;
        let (type_start, type_end) = section(&data, hdr_len, 8, "type")?;
        let strings = section(&data, hdr_len, 16, "string")?;
        if u32::try_from(data.len()).is_err() {
            bail!("BTF larger than 4 GiB");
        }

        let mut btf = Btf {
            types: Vec::with_capacity((type_end - type_start) / TYPE_LEN + 1),
            by_name: Vec::new(),
            ptr_size: std::mem::size_of::<usize>() as u32,
            data,
            strings,
        };
        btf.types.push(0);
        let mut pos = type_start;
        while pos < type_end {
            pos = btf.index_type(pos, type_end)?;
        }
        btf.by_name.sort_unstable();
        Ok(btf)
    }

    /// Records the type at `pos` (its offset, its name if it is looked up by name,
    /// the pointer size if it is `long`) and returns where the next one starts.
    fn index_type(&mut self, pos: usize, type_end: usize) -> Result<usize> {
        let id = self.types.len() as u32;
        if type_end - pos < TYPE_LEN {
            bail!("BTF type id {id} is truncated");
        }
        let name_off = read_u32(&self.data, pos);
        let info = read_u32(&self.data, pos + 4);
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let next = pos + TYPE_LEN + record_extra(id, kind, vlen)?;
        if next > type_end {
            bail!("BTF type id {id} runs past the end of the type section");
        }
        self.types.push(pos as u32);
        match kind {
            KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_TYPEDEF => {
                let name = self
                    .str_bytes(name_off)
                    .with_context(|| format!("BTF type id {id}"))?;
                if !name.is_empty() {
                    self.by_name.push((fnv1a(name), id));
                }
            }
            KIND_INT => {
                let name = self
                    .str_bytes(name_off)
                    .with_context(|| format!("BTF type id {id}"))?;
                if name == b"long int" || name == b"long unsigned int" {
                    self.ptr_size = read_u32(&self.data, pos + 8);
                }
            }
            _ => {}
        }
        Ok(next)
    }

    /// Offset and size of a member of struct or union `struct_name`. `path` is
    /// dot-separated (`"__sk_common.skc_state"`); members of anonymous structs and
    /// unions are found as C finds them, and typedefs and qualifiers are followed.
    /// A bitfield member is an error: it has no byte offset. When several structs
    /// share the name (static to different files), those that have the member must
    /// agree on its place.
    pub fn member(&self, struct_name: &str, path: &str) -> Result<Member> {
        let answers = self
            .composites(struct_name)?
            .into_iter()
            .map(|t| self.member_of(t, struct_name, path))
            .collect();
        agree(&format!("{struct_name}.{path}"), answers)
    }

    /// Whether the kernel defines struct `name` (a feature's own type).
    pub fn has_struct(&self, name: &str) -> bool {
        self.named(name, |k| k == KIND_STRUCT)
            .is_ok_and(|found| !found.is_empty())
    }

    /// Whether the kernel has a function `name` that is not inlined away (BTF
    /// describes each function the kernel's symbol table has). Functions are
    /// not indexed (tens of thousands): this scans, for the rare caller.
    pub fn has_function(&self, name: &str) -> bool {
        (1..self.types.len() as u32)
            .filter_map(|id| self.ty(id).ok())
            .any(|t| t.kind == KIND_FUNC && self.str_is(t.name_off, name))
    }

    /// Walks `path` from struct `top`: the member found and its bit offset from
    /// the start of `top`.
    fn locate(&self, top: Type, what: &str, path: &str) -> Result<(u64, FoundMember)> {
        let mut container = top;
        let mut bit_offset = 0u64;
        let mut found: Option<FoundMember> = None;
        let mut walked = String::new();
        for part in path.split('.') {
            if let Some(prev) = found.take() {
                let t = self.resolve(prev.type_id)?;
                if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
                    bail!("{what}: member '{walked}' is not a struct or union");
                }
                container = t;
                walked.push('.');
            }
            walked.push_str(part);
            let m = self
                .find_member(container, part, 0)?
                .with_context(|| format!("{what} has no member '{walked}'"))?;
            bit_offset += m.bit_offset;
            found = Some(m);
        }
        let Some(m) = found else {
            bail!("{what}: empty member path");
        };
        Ok((bit_offset, m))
    }

    /// Bit offset and width of a bitfield member (e.g. `icsk_ca_state`); a member
    /// that is not a bitfield is reported with its full width.
    pub fn bitfield(&self, struct_name: &str, path: &str) -> Result<Bitfield> {
        let answers = self
            .composites(struct_name)?
            .into_iter()
            .map(|top| {
                let what = format!("{} {struct_name}", kind_word(top.kind));
                let (bit_offset, m) = self.locate(top, &what, path)?;
                let bits = if m.bitfield_size != 0 {
                    m.bitfield_size
                } else {
                    let t = self.resolve(m.type_id)?;
                    if t.kind == KIND_INT {
                        self.u32_at(t.extra) & 0xff
                    } else {
                        u32::try_from(self.size_of(m.type_id, 0)? * 8)
                            .context("member size overflows")?
                    }
                };
                Ok(Bitfield {
                    bit_offset: u32::try_from(bit_offset).context("offset overflows")?,
                    bits,
                })
            })
            .collect();
        agree(&format!("{struct_name}.{path}"), answers)
    }

    fn member_of(&self, top: Type, struct_name: &str, path: &str) -> Result<Member> {
        let what = format!("{} {struct_name}", kind_word(top.kind));
        let (bit_offset, m) = self.locate(top, &what, path)?;
        if m.bitfield_size != 0
            || !bit_offset.is_multiple_of(8)
            || self.is_int_bitfield(m.type_id)?
        {
            bail!("{what}: member '{path}' is a bitfield, which has no byte offset");
        }
        let size = self
            .size_of(m.type_id, 0)
            .with_context(|| format!("{what}: size of member '{path}'"))?;
        Ok(Member {
            offset: u32::try_from(bit_offset / 8).context("member offset overflows")?,
            size: u32::try_from(size).context("member size overflows")?,
        })
    }

    /// Every (name, value) of `enum <enum_name>`, in declaration order. ENUM64
    /// values above i64::MAX wrap, as the API is i64.
    pub fn enum_variants(&self, enum_name: &str) -> Result<Vec<(String, i64)>> {
        let enums = self.named(enum_name, |k| k == KIND_ENUM || k == KIND_ENUM64)?;
        if enums.is_empty() {
            bail!("the kernel's BTF has no enum {enum_name}");
        }
        let answers = enums
            .iter()
            .map(|t| {
                (0..t.vlen)
                    .map(|i| {
                        let (name_off, value) = self.enum_entry(t, i);
                        Ok((self.name(name_off)?.to_string(), value))
                    })
                    .collect()
            })
            .collect();
        agree(&format!("enum {enum_name}"), answers)
    }

    /// How many arguments the kernel passes to a raw tracepoint's programs: the
    /// parameters of the prototype its `btf_trace_<name>` typedef points to,
    /// after the leading `void *`. Tells which optional arguments (a drop
    /// reason, an error) this kernel's tracepoint has.
    pub fn tracepoint_arity(&self, tracepoint: &str) -> Result<usize> {
        Ok(self.tracepoint_proto(tracepoint)?.vlen - 1)
    }

    /// Which of a raw tracepoint's arguments is the first `struct <name> *`,
    /// and its arity: arguments move between kernels (before 5.11 the
    /// block_rq tracepoints pass the queue first).
    pub fn tracepoint_arg(&self, tracepoint: &str, struct_name: &str) -> Result<(usize, usize)> {
        let proto = self.tracepoint_proto(tracepoint)?;
        for i in 1..proto.vlen {
            let param_type = self.u32_at(proto.extra + 8 * i + 4);
            if param_type == 0 {
                continue; // `...`
            }
            let t = self.resolve(param_type)?;
            if t.kind != KIND_PTR {
                continue;
            }
            let pointee = self.resolve(t.size_or_type)?;
            if pointee.kind == KIND_STRUCT && self.str_is(pointee.name_off, struct_name) {
                return Ok((i - 1, proto.vlen - 1));
            }
        }
        bail!("raw tracepoint {tracepoint} has no struct {struct_name} * argument")
    }

    /// The size of a raw tracepoint's argument `n` if it is an integer or an
    /// enum: a program that reads it by position checks that this kernel
    /// passes a number there.
    pub fn tracepoint_int_arg(&self, tracepoint: &str, n: usize) -> Result<u32> {
        let proto = self.tracepoint_proto(tracepoint)?;
        let arity = proto.vlen - 1;
        if n >= arity {
            bail!(
                "raw tracepoint {tracepoint} has {arity} arguments, not {}",
                n + 1
            );
        }
        let param_type = self.u32_at(proto.extra + 8 * (n + 1) + 4);
        let t = if param_type == 0 {
            None // `...`
        } else {
            Some(self.resolve(param_type)?)
        };
        match t {
            Some(t) if matches!(t.kind, KIND_INT | KIND_ENUM | KIND_ENUM64) => Ok(t.size_or_type),
            _ => bail!("argument {n} of raw tracepoint {tracepoint} is not an integer"),
        }
    }

    /// The id of a tracepoint's `btf_trace_<name>` typedef, which a BTF-typed
    /// tracepoint's program is loaded for.
    pub fn tracepoint_typedef(&self, tracepoint: &str) -> Result<u32> {
        Ok(self.tracepoint_typedef_and_proto(tracepoint)?.0)
    }

    /// The prototype a raw tracepoint's `btf_trace_<name>` typedef points to.
    fn tracepoint_proto(&self, tracepoint: &str) -> Result<Type> {
        Ok(self.tracepoint_typedef_and_proto(tracepoint)?.1)
    }

    fn tracepoint_typedef_and_proto(&self, tracepoint: &str) -> Result<(u32, Type)> {
        let typedef_name = format!("btf_trace_{tracepoint}");
        let typedefs = self.named(&typedef_name, |k| k == KIND_TYPEDEF)?;
        if typedefs.is_empty() {
            bail!("the kernel's BTF has no typedef {typedef_name}");
        }
        let proto = |typedef: &Type| -> Result<Type> {
            let mut t = self.resolve(typedef.id)?;
            if t.kind == KIND_PTR {
                t = self.resolve(t.size_or_type)?;
            }
            if t.kind != KIND_FUNC_PROTO || t.vlen == 0 {
                bail!("typedef {typedef_name} is not a tracepoint prototype");
            }
            Ok(t)
        };
        let arity = agree(
            &typedef_name,
            typedefs.iter().map(|t| proto(t).map(|p| p.vlen)).collect(),
        )?;
        typedefs
            .iter()
            .filter_map(|t| Some((t.id, proto(t).ok()?)))
            .find(|(_, p)| p.vlen == arity)
            .with_context(|| format!("typedef {typedef_name} vanished"))
    }

    fn composites(&self, name: &str) -> Result<Vec<Type>> {
        let is_composite = |k| k == KIND_STRUCT || k == KIND_UNION;
        let mut found = self.named(name, is_composite)?;
        if found.is_empty() {
            for typedef in self.named(name, |k| k == KIND_TYPEDEF)? {
                let t = self.resolve(typedef.id)?;
                if is_composite(t.kind) {
                    found.push(t);
                }
            }
        }
        if found.is_empty() {
            bail!("the kernel's BTF has no struct or union {name}");
        }
        Ok(found)
    }

    /// The indexed types called `name` whose kind passes `want`, in id order.
    fn named(&self, name: &str, want: impl Fn(u32) -> bool) -> Result<Vec<Type>> {
        let hash = fnv1a(name.as_bytes());
        let start = self.by_name.partition_point(|&(h, _)| h < hash);
        let mut found = Vec::new();
        for &(h, id) in &self.by_name[start..] {
            if h != hash {
                break;
            }
            let t = self.ty(id)?;
            if want(t.kind) && self.str_is(t.name_off, name) {
                found.push(t);
            }
        }
        Ok(found)
    }

    /// Member `name` of struct or union `t`, searching anonymous members depth-first
    /// in declaration order (C forbids a name appearing twice).
    fn find_member(&self, t: Type, name: &str, depth: u32) -> Result<Option<FoundMember>> {
        if depth > MAX_DEPTH {
            bail!("anonymous members nested too deeply (malformed BTF?)");
        }
        for i in 0..t.vlen {
            let pos = t.extra + 12 * i;
            let name_off = self.u32_at(pos);
            let type_id = self.u32_at(pos + 4);
            let raw = self.u32_at(pos + 8);
            // With kind_flag the offset word packs a bitfield size in its top byte.
            let (bit_offset, bitfield_size) = if t.kind_flag {
                (u64::from(raw & 0xff_ffff), raw >> 24)
            } else {
                (u64::from(raw), 0)
            };
            if name_off == 0 {
                let inner = self.resolve(type_id)?;
                // Unnamed bitfields (padding) are skipped.
                if (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION)
                    && let Some(mut m) = self.find_member(inner, name, depth + 1)?
                {
                    m.bit_offset += bit_offset;
                    return Ok(Some(m));
                }
            } else if self.str_is(name_off, name) {
                return Ok(Some(FoundMember {
                    bit_offset,
                    type_id,
                    bitfield_size,
                }));
            }
        }
        Ok(None)
    }

    /// Bitfields in structs without kind_flag are INTs narrower than their size.
    fn is_int_bitfield(&self, id: u32) -> Result<bool> {
        let t = self.resolve(id)?;
        if t.kind != KIND_INT {
            return Ok(false);
        }
        let encoding = self.u32_at(t.extra);
        let (bits, offset) = (encoding & 0xff, (encoding >> 16) & 0xff);
        Ok(offset != 0 || u64::from(bits) != u64::from(t.size_or_type) * 8)
    }

    /// Size in bytes of a type.
    fn size_of(&self, id: u32, depth: u32) -> Result<u64> {
        if depth > MAX_DEPTH {
            bail!("type id {id}: type chain too deep (malformed BTF?)");
        }
        let t = self.ty(id)?;
        match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Ok(u64::from(t.size_or_type))
            }
            KIND_PTR => Ok(u64::from(self.ptr_size)),
            KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                self.size_of(t.size_or_type, depth + 1)
            }
            KIND_ARRAY => {
                let elem = self.u32_at(t.extra);
                let count = self.u32_at(t.extra + 8);
                let elem_size = self.size_of(elem, depth + 1)?;
                elem_size
                    .checked_mul(u64::from(count))
                    .context("array size overflows")
            }
            kind => bail!("type id {id} ({}) has no size", kind_word(kind)),
        }
    }

    /// Follows typedefs, qualifiers and type tags to the underlying type.
    fn resolve(&self, id: u32) -> Result<Type> {
        let mut id = id;
        for _ in 0..MAX_DEPTH {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Ok(t),
            }
        }
        bail!("type id {id}: typedef chain too long (malformed BTF?)")
    }

    fn enum_entry(&self, t: &Type, i: usize) -> (u32, i64) {
        if t.kind == KIND_ENUM64 {
            let pos = t.extra + 12 * i;
            let low = u64::from(self.u32_at(pos + 4));
            let high = u64::from(self.u32_at(pos + 8));
            (self.u32_at(pos), ((high << 32) | low) as i64)
        } else {
            let pos = t.extra + 8 * i;
            let raw = self.u32_at(pos + 4);
            let value = if t.kind_flag {
                i64::from(raw as i32)
            } else {
                i64::from(raw)
            };
            (self.u32_at(pos), value)
        }
    }

    /// The record header of type `id`.
    fn ty(&self, id: u32) -> Result<Type> {
        let pos = match self.types.get(id as usize) {
            Some(&pos) if id != 0 => pos as usize,
            _ if id == 0 => bail!("type id 0 (void) where a type was expected"),
            _ => bail!("type id {id} does not exist (malformed BTF?)"),
        };
        let info = self.u32_at(pos + 4);
        Ok(Type {
            id,
            name_off: self.u32_at(pos),
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: self.u32_at(pos + 8),
            extra: pos + TYPE_LEN,
        })
    }

    /// The NUL-terminated string at `off` in the string section, without the NUL.
    fn str_bytes(&self, off: u32) -> Result<&[u8]> {
        let (start, end) = self.strings;
        let rest = start
            .checked_add(off as usize)
            .and_then(|s| self.data.get(s..end))
            .with_context(|| format!("BTF string offset {off} is out of bounds"))?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .with_context(|| format!("BTF string at offset {off} is not terminated"))?;
        Ok(&rest[..len])
    }

    /// Whether the string at `off` is `name`; cheaper than finding its end first.
    fn str_is(&self, off: u32, name: &str) -> bool {
        let start = self.strings.0.saturating_add(off as usize);
        let end = start.saturating_add(name.len());
        end < self.strings.1
            && self.data.get(start..end) == Some(name.as_bytes())
            && self.data.get(end) == Some(&0)
    }

    fn name(&self, off: u32) -> Result<&str> {
        std::str::from_utf8(self.str_bytes(off)?)
            .with_context(|| format!("BTF string at offset {off} is not UTF-8"))
    }

    /// A u32 inside a type record. Parsing checked that every record, including
    /// its kind-specific data, lies within the data, so the fallback is unreachable.
    fn u32_at(&self, pos: usize) -> u32 {
        read_u32(&self.data, pos)
    }
}

/// The one answer that every definition of a name gives. The kernel's BTF can hold
/// several same-named types or enumerators (static to different files): the
/// definitions that answer must agree, and if none does, the first error is given.
fn agree<T: PartialEq + std::fmt::Debug>(what: &str, answers: Vec<Result<T>>) -> Result<T> {
    let mut values: Vec<T> = Vec::new();
    let mut first_error = None;
    for answer in answers {
        match answer {
            Ok(v) if !values.contains(&v) => values.push(v),
            Ok(_) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if values.len() > 1 {
        bail!("{what} differs between same-named definitions in the kernel's BTF: {values:?}");
    }
    match (values.pop(), first_error) {
        (Some(v), _) => Ok(v),
        (None, Some(e)) => Err(e),
        (None, None) => bail!("the kernel's BTF has no {what}"),
    }
}

/// A native-endian u32 at `pos`, or 0 if out of bounds (callers check bounds).
/// Checks magic, byte order and version; returns the header length.
fn check_header(data: &[u8]) -> Result<usize> {
    if data.len() < HEADER_LEN {
        bail!("BTF is {} bytes, too short for its header", data.len());
    }
    let magic = u16::from_ne_bytes([data[0], data[1]]);
    if magic != MAGIC {
        if magic.swap_bytes() == MAGIC {
            bail!("BTF is in the other byte order");
        }
        bail!("not BTF (magic {magic:#06x})");
    }
    if data[2] != 1 {
        bail!("unsupported BTF version {}", data[2]);
    }
    let hdr_len = read_u32(data, 4) as usize;
    if hdr_len < HEADER_LEN || hdr_len > data.len() {
        bail!("bad BTF header length {hdr_len}");
    }
    Ok(hdr_len)
}

/// Start and end of the section whose offset and length the header holds at
/// `off_pos`, checked to lie inside `data`.
fn section(data: &[u8], hdr_len: usize, off_pos: usize, what: &str) -> Result<(usize, usize)> {
    let off = read_u32(data, off_pos) as usize;
    let len = read_u32(data, off_pos + 4) as usize;
    let start = hdr_len.checked_add(off);
    match start.and_then(|s| Some((s, s.checked_add(len)?))) {
        Some((start, end)) if end <= data.len() => Ok((start, end)),
        _ => bail!("BTF {what} section (offset {off}, length {len}) is out of bounds"),
    }
}

/// Bytes that follow the common type record of type `id`, by its kind.
fn record_extra(id: u32, kind: u32, vlen: usize) -> Result<usize> {
    Ok(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        // Records are variable-length: an unknown kind cannot be skipped.
        _ => bail!("BTF type id {id} has unknown kind {kind}"),
    })
}

fn read_u32(data: &[u8], pos: usize) -> u32 {
    data.get(pos..pos.saturating_add(4))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

/// FNV-1a: fast on the short names indexed, and needs no allocation.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn kind_word(kind: u32) -> &'static str {
    match kind {
        KIND_INT => "int",
        KIND_PTR => "pointer",
        KIND_ARRAY => "array",
        KIND_STRUCT => "struct",
        KIND_UNION => "union",
        KIND_ENUM | KIND_ENUM64 => "enum",
        KIND_FWD => "forward declaration",
        KIND_TYPEDEF => "typedef",
        KIND_VOLATILE => "volatile",
        KIND_CONST => "const",
        KIND_RESTRICT => "restrict",
        KIND_FUNC => "function",
        KIND_FUNC_PROTO => "function prototype",
        KIND_VAR => "variable",
        KIND_DATASEC => "data section",
        KIND_FLOAT => "float",
        KIND_DECL_TAG => "declaration tag",
        KIND_TYPE_TAG => "type tag",
        _ => "unknown kind",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF blobs: strings and type records, then the header.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Builder {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        /// Adds a type record; `extra` is its kind-specific data as u32 words.
        fn ty(
            &mut self,
            name: &str,
            kind: u32,
            kind_flag: bool,
            vlen: u32,
            size_or_type: u32,
            extra: &[u32],
        ) -> u32 {
            let name_off = self.str(name);
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
            for word in [name_off, info, size_or_type].iter().chain(extra) {
                self.types.extend_from_slice(&word.to_ne_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        /// STRUCT or UNION with (name, type, offset word) members.
        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            kind_flag: bool,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let mut extra = Vec::new();
            for &(name, type_id, offset) in members {
                extra.extend([self.str(name), type_id, offset]);
            }
            self.ty(name, kind, kind_flag, members.len() as u32, size, &extra)
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_ne_bytes());
            out.extend_from_slice(&[1, 0]);
            let type_len = self.types.len() as u32;
            let str_len = self.strings.len() as u32;
            for word in [HEADER_LEN as u32, 0, type_len, type_len, str_len] {
                out.extend_from_slice(&word.to_ne_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// Type ids of the sample that later parts of it refer to.
    struct Base {
        int: u32,
        long: u32,
        char_: u32,
        u32_: u32,
        volatile_int: u32,
        char_ptr: u32,
        const_char_ptr: u32,
        char_const_ptr: u32,
        user_char_ptr: u32,
    }

    /// A blob with every kind, in the shapes the kernel's BTF uses. The parts are
    /// added in a fixed order, so every type keeps its id.
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let base = sample_base(&mut b);
        let color_enum = sample_enums(&mut b);
        let outer = sample_outer(&mut b, &base);
        let void_ptr = sample_functions(&mut b, &base, outer);
        sample_odd_composites(&mut b, &base);
        // A tracepoint passing numbers: (void *, u32, long, color, char *).
        let ints = [
            0,
            void_ptr,
            0,
            base.u32_,
            0,
            base.long,
            0,
            color_enum,
            0,
            base.char_ptr,
        ];
        let ints = b.ty("", KIND_FUNC_PROTO, false, 5, 0, &ints);
        let ints_ptr = b.ty("", KIND_PTR, false, 0, ints, &[]);
        b.ty("btf_trace_ints", KIND_TYPEDEF, false, 0, ints_ptr, &[]);
        b.build()
    }

    /// Integers, a float, a forward declaration, qualifiers, pointers, a variable
    /// in its data section and a declaration tag.
    fn sample_base(b: &mut Builder) -> Base {
        let int = b.ty("int", KIND_INT, false, 0, 4, &[(1 << 24) | 32]);
        let uint = b.ty("unsigned int", KIND_INT, false, 0, 4, &[32]);
        let char_ = b.ty("char", KIND_INT, false, 0, 1, &[(1 << 24) | 8]);
        let long = b.ty("long int", KIND_INT, false, 0, 8, &[(1 << 24) | 64]);
        let u32_ = b.ty("u32", KIND_TYPEDEF, false, 0, uint, &[]);
        b.ty("double", KIND_FLOAT, false, 0, 8, &[]);
        b.ty("fwd_only", KIND_FWD, false, 0, 0, &[]);
        let volatile_int = b.ty("", KIND_VOLATILE, false, 0, int, &[]);
        let char_ptr = b.ty("", KIND_PTR, false, 0, char_, &[]);
        b.ty("", KIND_RESTRICT, false, 0, char_ptr, &[]);
        let const_char = b.ty("", KIND_CONST, false, 0, char_, &[]);
        let const_char_ptr = b.ty("", KIND_PTR, false, 0, const_char, &[]);
        let char_const_ptr = b.ty("", KIND_CONST, false, 0, char_ptr, &[]);
        let user_char = b.ty("user", KIND_TYPE_TAG, false, 0, char_, &[]);
        let user_char_ptr = b.ty("", KIND_PTR, false, 0, user_char, &[]);
        let var = b.ty("some_var", KIND_VAR, false, 0, int, &[1]);
        b.ty(".data", KIND_DATASEC, false, 1, 4, &[var, 0, 4]);
        b.ty("some_tag", KIND_DECL_TAG, false, 0, var, &[u32::MAX]);
        Base {
            int,
            long,
            char_,
            u32_,
            volatile_int,
            char_ptr,
            const_char_ptr,
            char_const_ptr,
            user_char_ptr,
        }
    }

    /// Signed, unsigned, anonymous and 64-bit enums; returns the id of `color`.
    fn sample_enums(b: &mut Builder) -> u32 {
        let color = [
            b.str("RED"),
            0,
            b.str("GREEN"),
            1,
            b.str("NEG"),
            -2i32 as u32,
        ];
        let color_enum = b.ty("color", KIND_ENUM, true, 3, 4, &color);
        let unsigned = [b.str("UNSIGNED_BIG"), 0xffff_fff0];
        b.ty("", KIND_ENUM, false, 1, 4, &unsigned);
        let anon = [b.str("ANON_X"), 7];
        b.ty("", KIND_ENUM, false, 1, 4, &anon);
        let huge = [
            b.str("HUGE"),
            0,
            1 << 8,
            b.str("MINUS_ONE"),
            u32::MAX,
            u32::MAX,
        ];
        b.ty("big", KIND_ENUM64, true, 2, 8, &huge);
        color_enum
    }

    /// `struct outer`, with an anonymous union, a bitfield, a typedef'd struct,
    /// an array and qualified members; returns its id.
    fn sample_outer(b: &mut Builder, base: &Base) -> u32 {
        let (int, u32_) = (base.int, base.u32_);
        let anon_union = b.composite(KIND_UNION, "", false, 4, &[("a", int, 0), ("b", u32_, 0)]);
        let inner = b.composite(
            KIND_STRUCT,
            "inner",
            false,
            8,
            &[("y", int, 0), ("z", int, 32)],
        );
        let inner_t = b.ty("inner_t", KIND_TYPEDEF, false, 0, inner, &[]);
        let char16 = b.ty("", KIND_ARRAY, false, 0, 0, &[base.char_, int, 16]);
        // kind_flag: offsets carry the bitfield size in their top byte.
        b.composite(
            KIND_STRUCT,
            "outer",
            true,
            56,
            &[
                ("x", int, 0),
                ("", anon_union, 32),
                ("t", u32_, 64),
                ("bf", int, (3 << 24) | 96),
                ("in", inner_t, 128),
                ("name", char16, 192),
                ("p", base.const_char_ptr, 320),
                ("v", base.volatile_int, 384),
            ],
        )
    }

    /// A function and the tracepoint `btf_trace_test` whose arguments are
    /// pointers of every shape; returns the id of `void *`.
    fn sample_functions(b: &mut Builder, base: &Base, outer: u32) -> u32 {
        let void_ptr = b.ty("", KIND_PTR, false, 0, 0, &[]);
        let outer_ptr = b.ty("", KIND_PTR, false, 0, outer, &[]);
        let cb_params = [0, base.int, 0, base.char_ptr];
        let cb = b.ty("", KIND_FUNC_PROTO, false, 2, base.int, &cb_params);
        let cb_ptr = b.ty("", KIND_PTR, false, 0, cb, &[]);
        let params = [
            0,
            void_ptr,
            b.str("rq"),
            outer_ptr,
            b.str("s"),
            base.const_char_ptr,
            b.str("c"),
            base.char_const_ptr,
            b.str("u"),
            base.user_char_ptr,
            b.str("cb"),
            cb_ptr,
            0,
            0,
        ];
        let proto = b.ty("", KIND_FUNC_PROTO, false, 7, 0, &params);
        b.ty("some_func", KIND_FUNC, false, 1, proto, &[]);
        let proto_ptr = b.ty("", KIND_PTR, false, 0, proto, &[]);
        b.ty("btf_trace_test", KIND_TYPEDEF, false, 0, proto_ptr, &[]);
        b.ty("not_a_proto", KIND_TYPEDEF, false, 0, base.int, &[]);
        void_ptr
    }

    /// A named union, an anonymous struct behind a typedef, old-style bitfields,
    /// same-named definitions and a malformed typedef cycle.
    fn sample_odd_composites(b: &mut Builder, base: &Base) {
        let int = base.int;
        b.composite(KIND_UNION, "named_union", false, 8, &[("l", base.long, 0)]);
        let anon_struct = b.composite(KIND_STRUCT, "", false, 4, &[("counter", int, 0)]);
        b.ty("anon_t", KIND_TYPEDEF, false, 0, anon_struct, &[]);
        // Old-style (no kind_flag) bitfields: an odd bit offset or a narrow INT.
        let int3 = b.ty("int", KIND_INT, false, 0, 4, &[3]);
        b.composite(
            KIND_STRUCT,
            "old_bitfields",
            false,
            8,
            &[("odd", int, 3), ("narrow", int3, 32)],
        );
        // Same-named types static to different files.
        let dup1 = [("a", int, 0), ("c", int, 32), ("only1", int, 64)];
        b.composite(KIND_STRUCT, "dup", false, 12, &dup1);
        b.composite(
            KIND_STRUCT,
            "dup",
            false,
            8,
            &[("a", int, 0), ("c", int, 0)],
        );
        let dup_enum = [b.str("SAME"), 5, b.str("CLASH"), 1];
        b.ty("dup_enum", KIND_ENUM, false, 2, 4, &dup_enum);
        let dup_enum = [b.str("SAME"), 5, b.str("CLASH"), 2];
        b.ty("dup_enum", KIND_ENUM, false, 2, 4, &dup_enum);
        // A typedef naming itself: malformed, must not hang.
        let looped = b.next_id;
        b.ty("looped", KIND_TYPEDEF, false, 0, looped, &[]);
        b.composite(KIND_STRUCT, "cyclic", false, 4, &[("m", looped, 0)]);
    }

    fn err<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn members() {
        let btf = Btf::parse(&sample()).unwrap();
        let m = |path| btf.member("outer", path).unwrap();
        assert_eq!(m("x"), Member { offset: 0, size: 4 });
        // Inside the anonymous union, found transparently.
        assert_eq!(m("a"), Member { offset: 4, size: 4 });
        assert_eq!(m("b"), Member { offset: 4, size: 4 });
        assert_eq!(m("t"), Member { offset: 8, size: 4 });
        assert_eq!(
            m("in"),
            Member {
                offset: 16,
                size: 8
            }
        );
        // Through a typedef'd struct member.
        assert_eq!(
            m("in.z"),
            Member {
                offset: 20,
                size: 4
            }
        );
        assert_eq!(
            m("name"),
            Member {
                offset: 24,
                size: 16
            }
        );
        assert_eq!(
            m("p"),
            Member {
                offset: 40,
                size: 8
            }
        );
        assert_eq!(
            m("v"),
            Member {
                offset: 48,
                size: 4
            }
        );
        assert_eq!(
            btf.member("named_union", "l").unwrap(),
            Member { offset: 0, size: 8 }
        );
        assert_eq!(
            btf.member("anon_t", "counter").unwrap(),
            Member { offset: 0, size: 4 }
        );

        assert!(err(btf.member("outer", "bf")).contains("bitfield"));
        assert!(err(btf.member("old_bitfields", "odd")).contains("bitfield"));
        assert!(err(btf.member("old_bitfields", "narrow")).contains("bitfield"));
        assert!(err(btf.member("nope", "x")).contains("no struct or union nope"));
        assert!(err(btf.member("outer", "nope")).contains("struct outer has no member 'nope'"));
        assert!(err(btf.member("outer", "in.nope")).contains("no member 'in.nope'"));
        assert!(err(btf.member("outer", "x.y")).contains("'x' is not a struct or union"));
        assert!(btf.member("outer", "").is_err());
        // Named members are not searched into: C needs the path.
        assert!(btf.member("outer", "y").is_err());
        // A typedef that is not a struct, and malformed cycles.
        assert!(btf.member("u32", "x").is_err());
        assert!(btf.member("looped", "x").is_err());
        assert!(err(btf.member("cyclic", "m")).contains("too long"));
    }

    #[test]
    fn same_named_definitions() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member("dup", "a").unwrap().offset, 0);
        assert_eq!(btf.member("dup", "only1").unwrap().offset, 8);
        assert!(err(btf.member("dup", "c")).contains("dup.c differs"));
        assert!(err(btf.member("dup", "nope")).contains("no member 'nope'"));
        assert!(err(btf.enum_variants("dup_enum")).contains("differs"));
    }

    #[test]
    fn enums() {
        let btf = Btf::parse(&sample()).unwrap();
        let variants = btf.enum_variants("color").unwrap();
        assert_eq!(
            variants,
            [("RED".into(), 0), ("GREEN".into(), 1), ("NEG".into(), -2)]
        );
        assert_eq!(btf.enum_variants("big").unwrap().len(), 2);
        assert!(err(btf.enum_variants("outer")).contains("no enum outer"));
    }

    #[test]
    fn rejects_malformed() {
        let good = sample();
        assert!(err(Btf::parse(&good[..10])).contains("too short"));
        let mut bad = good.clone();
        bad[0] ^= 0xff;
        assert!(err(Btf::parse(&bad)).contains("not BTF"));
        let mut bad = good.clone();
        bad[2] = 2;
        assert!(err(Btf::parse(&bad)).contains("version"));
        assert!(err(Btf::parse(&good[..good.len() - 1])).contains("out of bounds"));

        let mut b = Builder::new();
        b.ty("x", 31, false, 0, 0, &[]);
        assert!(err(Btf::parse(&b.build())).contains("unknown kind 31"));

        // A struct claiming more members than the section holds.
        let mut b = Builder::new();
        b.ty("s", KIND_STRUCT, false, 5, 4, &[0, 0, 0]);
        assert!(err(Btf::parse(&b.build())).contains("runs past"));

        // Corrupting any single byte must give errors, never a panic.
        for i in 0..good.len() {
            for value in [0x00, 0x01, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[i] = value;
                if let Ok(btf) = Btf::parse(&bad) {
                    let _ = btf.member("outer", "in.z");
                    let _ = btf.member("outer", "a");
                    let _ = btf.enum_variants("color");
                }
            }
        }
    }

    #[test]
    fn functions_and_structs_are_found_by_name() {
        let mut b = Builder::new();
        let proto = b.ty("", KIND_FUNC_PROTO, false, 0, 0, &[]);
        b.ty("blk_account_io_start", KIND_FUNC, false, 0, proto, &[]);
        b.ty("bpf_mem_alloc", KIND_STRUCT, false, 0, 8, &[]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert!(btf.has_function("blk_account_io_start"));
        assert!(!btf.has_function("blk_account_io"));
        assert!(!btf.has_function("bpf_mem_alloc"));
        assert!(btf.has_struct("bpf_mem_alloc"));
        assert!(!btf.has_struct("blk_account_io_start"));
    }

    #[test]
    fn tracepoint_arity() {
        let btf = Btf::parse(&sample()).unwrap();
        let typedef = btf.ty(btf.tracepoint_typedef("test").unwrap()).unwrap();
        assert_eq!(typedef.kind, KIND_TYPEDEF);
        assert!(btf.str_is(typedef.name_off, "btf_trace_test"));
        assert!(err(btf.tracepoint_typedef("absent")).contains("no typedef btf_trace_absent"));
        assert_eq!(btf.tracepoint_arity("test").unwrap(), 6);
        assert!(err(btf.tracepoint_arity("absent")).contains("no typedef btf_trace_absent"));
        assert_eq!(btf.tracepoint_arg("test", "outer").unwrap(), (0, 6));
        assert!(err(btf.tracepoint_arg("test", "inner")).contains("no struct inner *"));
        assert_eq!(btf.tracepoint_int_arg("ints", 0).unwrap(), 4);
        assert_eq!(btf.tracepoint_int_arg("ints", 1).unwrap(), 8);
        assert_eq!(btf.tracepoint_int_arg("ints", 2).unwrap(), 4, "an enum");
        assert!(err(btf.tracepoint_int_arg("ints", 3)).contains("not an integer"));
        assert!(err(btf.tracepoint_int_arg("ints", 4)).contains("has 4 arguments, not 5"));
        assert!(
            err(btf.tracepoint_int_arg("test", 5)).contains("not an integer"),
            "`...`"
        );
    }

    /// The running kernel's BTF; None (skip) when absent, unless CI=true.
    fn vmlinux() -> Option<Rc<Btf>> {
        if std::path::Path::new(VMLINUX).exists() {
            return Some(Btf::load().unwrap());
        }
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but this kernel has no BTF ({VMLINUX})");
        }
        eprintln!("skipping: this kernel has no BTF ({VMLINUX})");
        None
    }

    #[test]
    fn running_kernel() {
        let Some(btf) = vmlinux() else { return };
        let state = btf.member("sock", "__sk_common.skc_state").unwrap();
        assert_eq!(state.size, 1);
        // skc_state is sock's first member's field: the two paths agree.
        assert_eq!(state, btf.member("sock_common", "skc_state").unwrap());
        assert_eq!(btf.member("tcp_sock", "srtt_us").unwrap().size, 4);
        assert_eq!(btf.member("request", "__sector").unwrap().size, 8);
        // Inside an anonymous union of sock_common.
        assert_eq!(btf.member("sock", "__sk_common.skc_daddr").unwrap().size, 4);
        assert!(btf.member("inet_connection_sock", "icsk_pending").is_ok());
        assert!(
            err(btf.member("sock", "__sk_common.skc_reuse")).contains("bitfield"),
            "skc_reuse is a 4-bit bitfield"
        );
        assert_eq!(
            btf.bitfield("sock", "__sk_common.skc_reuse").unwrap().bits,
            4
        );
        assert_eq!(btf.tracepoint_arity("block_rq_issue").unwrap(), 1);
        assert!(btf.tracepoint_arity("tcp_retransmit_skb").unwrap() >= 2);
        let ca = btf
            .bitfield("inet_connection_sock", "icsk_ca_state")
            .unwrap();
        assert_eq!(ca.bits, 5);
        let pending = btf.member("inet_connection_sock", "icsk_pending").unwrap();
        assert_eq!(
            ca.bit_offset / 8 + 2,
            pending.offset,
            "icsk_ca_state sits two bytes before icsk_pending"
        );
        assert_eq!(
            btf.bitfield("inet_connection_sock", "icsk_pending")
                .unwrap()
                .bits,
            8
        );
        let reasons = btf.enum_variants("skb_drop_reason").unwrap();
        assert!(
            reasons
                .iter()
                .any(|(n, v)| n == "SKB_DROP_REASON_NETFILTER_DROP" && *v > 0)
        );
    }

    #[test]
    fn loads_share_one_parse_inside_shared_only() {
        let Some(_) = vmlinux() else { return };
        let (a, b) = shared(|| (Btf::load().unwrap(), Btf::load().unwrap()));
        assert!(Rc::ptr_eq(&a, &b));
        assert!(
            SHARED.with_borrow(Option::is_none),
            "dropped when the scope ends"
        );
        assert!(!Rc::ptr_eq(&Btf::load().unwrap(), &Btf::load().unwrap()));
    }

    /// Start-up cost. Run optimised:
    /// CARGO_PROFILE_DEV_OPT_LEVEL=3 cargo test -p tracer --lib kernel::btf -- --ignored --nocapture
    #[test]
    #[ignore]
    fn load_time() {
        let Some(_) = vmlinux() else { return };
        let mut load = Vec::new();
        let mut lookups = Vec::new();
        for _ in 0..20 {
            let start = std::time::Instant::now();
            let btf = Btf::load().unwrap();
            let loaded = std::time::Instant::now();
            btf.member("sock", "__sk_common.skc_state").unwrap();
            btf.member("tcp_sock", "srtt_us").unwrap();
            btf.member("request", "__sector").unwrap();
            btf.member("inet_connection_sock", "icsk_pending").unwrap();
            btf.enum_variants("skb_drop_reason").unwrap();
            load.push((loaded - start).as_secs_f64() * 1000.0);
            lookups.push(loaded.elapsed().as_secs_f64() * 1000.0);
        }
        let first = (load[0], lookups[0]);
        load.sort_by(f64::total_cmp);
        lookups.sort_by(f64::total_cmp);
        eprintln!(
            "Btf::load {:.2} ms first, {:.2} ms median; 7 lookups {:.3} ms, {:.3} ms",
            first.0, load[10], first.1, lookups[10]
        );
    }
}
