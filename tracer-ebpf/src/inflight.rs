//! Direct-mapped in-flight tables (see tracer_common::Slot): the start of every
//! timed operation (a block request, a page fault) is kept in an array slot chosen
//! by hashing its key, so the common path costs array accesses only; a key whose
//! slot is held by another live key goes to an overflow LRU hash map, and the slot
//! counts such spills so lookups consult the overflow map only when needed.
//! Updates of a slot from two CPUs at once (two keys hashing to one slot, at the
//! same moment) can lose an entry; its end event is then counted as unmatched.

use aya_ebpf::{
    bindings::BPF_ANY,
    maps::{Array, LruHashMap, PerCpuArray},
};
use tracer_common::{STALE_NS, Slot, counters::Counter};

use crate::count;

/// What the table needs to know about values.
pub trait Entry: Copy {
    /// Creation time, to recognise stale entries.
    fn stamp(&self) -> u64;
}

pub struct Table<'a, K: 'static, V: 'static> {
    pub slots: &'a Array<Slot<K, V>>,
    pub overflow: &'a LruHashMap<K, V>,
    pub counters: &'a PerCpuArray<u64>,
}

impl<K: Copy + PartialEq + Default, V: Entry> Table<'_, K, V> {
    /// The slot at `index`, as a raw pointer: the kernel owns the memory and
    /// other CPUs may write it (see the module comment).
    #[inline(always)]
    fn slot(&self, index: u32) -> Option<*mut Slot<K, V>> {
        self.slots.get_ptr_mut(index)
    }

    /// The entry of `key` (whose slot is `index`), if any.
    #[inline(always)]
    pub fn find(&self, key: &K, index: u32) -> Option<*mut V> {
        // SAFETY: array value pointer; entries are plain data.
        let s = unsafe { &mut *self.slot(index)? };
        if s.key == *key {
            return Some(&mut s.value);
        }
        if s.spill == 0 {
            return None;
        }
        self.overflow.get_ptr_mut(key)
    }

    /// Stores `value` for `key`, replacing any entry it had in its slot; returns
    /// where it went.
    #[inline(always)]
    pub fn insert(&self, key: &K, index: u32, value: &V, now: u64) -> Option<*mut V> {
        self.store(key, index, value, now, true)
    }

    /// Like `insert`, for keys whose previous entry may end unseen without
    /// anything being lost (so replacing it is not counted).
    #[inline(always)]
    pub fn overwrite(&self, key: &K, index: u32, value: &V, now: u64) -> Option<*mut V> {
        self.store(key, index, value, now, false)
    }

    #[inline(always)]
    fn store(&self, key: &K, index: u32, value: &V, now: u64, counted: bool) -> Option<*mut V> {
        // SAFETY: array value pointer; entries are plain data.
        let s = unsafe { &mut *self.slot(index)? };
        if s.key == *key {
            if counted {
                // Its previous entry never ended (e.g. a fault that failed).
                count(self.counters, Counter::Replaced);
            }
            s.value = *value;
            return Some(&mut s.value);
        }
        let free = s.key == K::default();
        if free || now.saturating_sub(s.value.stamp()) > STALE_NS {
            if !free {
                count(self.counters, Counter::Replaced);
            }
            s.key = *key;
            s.value = *value;
            return Some(&mut s.value);
        }
        if self.overflow.insert(key, value, BPF_ANY as u64).is_err() {
            count(self.counters, Counter::MapFull);
            return None;
        }
        s.spill += 1;
        self.overflow.get_ptr_mut(key)
    }

    /// Takes the entry of `key` out of the table.
    #[inline(always)]
    pub fn take(&self, key: &K, index: u32) -> Option<V> {
        // SAFETY: array value pointer; entries are plain data.
        let s = unsafe { &mut *self.slot(index)? };
        if s.key == *key {
            // The value first: once the key is cleared, another CPU may store
            // a new entry in the slot.
            let value = s.value;
            s.key = K::default();
            return Some(value);
        }
        if s.spill == 0 {
            return None;
        }
        let p = self.overflow.get_ptr(key)?;
        // SAFETY: map value pointer from a successful lookup.
        let v = unsafe { *p };
        let _ = self.overflow.remove(key);
        s.spill = s.spill.saturating_sub(1);
        Some(v)
    }
}

impl Entry for tracer_common::kvmexits::Pending {
    fn stamp(&self) -> u64 {
        self.ts
    }
}

impl Entry for tracer_common::tcpconnlat::ConnStart {
    fn stamp(&self) -> u64 {
        self.ts
    }
}

/// Declares an in-flight table of a tool: its array of slots, its overflow map
/// and a function returning the `Table` over them (with the tool's `COUNTERS`).
/// `inflight_table!(fn requests, INFLIGHT_SLOTS, INFLIGHT: RqKey => Inflight);`
#[macro_export]
macro_rules! inflight_table {
    (fn $table:ident, $slots:ident, $overflow:ident: $key:ty => $value:ty) => {
        #[aya_ebpf::macros::map]
        static $slots: aya_ebpf::maps::Array<tracer_common::Slot<$key, $value>> =
            aya_ebpf::maps::Array::with_max_entries(tracer_common::INFLIGHT_SLOTS, 0);
        #[aya_ebpf::macros::map]
        static $overflow: aya_ebpf::maps::LruHashMap<$key, $value> =
            aya_ebpf::maps::LruHashMap::with_max_entries(8192, $crate::NO_COMMON_LRU);
        fn $table() -> $crate::inflight::Table<'static, $key, $value> {
            $crate::inflight::Table {
                slots: &$slots,
                overflow: &$overflow,
                counters: &COUNTERS,
            }
        }
    };
}
