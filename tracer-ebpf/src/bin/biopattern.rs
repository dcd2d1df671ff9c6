//! biopattern: sequential vs random I/O per disk, counted at completion.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::BPF_ANY,
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
};
use tracer_common::{
    biopattern::PatternValue,
    block::BlockConfig,
    counters::{Counter, NUM_COUNTERS},
};
use tracer_ebpf::{NO_PREALLOC, block::RqEvent, count};

tracer_ebpf::license!();

#[unsafe(no_mangle)]
static CONFIG: Global<BlockConfig> = Global::new(BlockConfig::INITIAL);

/// Sector just after each disk's previous I/O; shared across CPUs, since
/// sequentiality is about the order the disk sees.
#[map]
static NEXT_SECTOR: HashMap<u32, u64> = HashMap::with_max_entries(1024, NO_PREALLOC);
#[map]
static PATTERN: PerCpuHashMap<u32, PatternValue> =
    PerCpuHashMap::with_max_entries(1024, NO_PREALLOC);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

tracer_ebpf::block_hook!(CONFIG, complete, complete);

#[inline(always)]
fn complete(cfg: &BlockConfig, e: &impl RqEvent) {
    let dev = e.dev(cfg);
    if dev == 0 || cfg.dev != 0 && dev != cfg.dev {
        return;
    }
    let sectors = (e.done_bytes(cfg) >> 9) as u64;
    if sectors == 0 {
        // Flushes and other data-less requests have no position.
        return;
    }
    let sector = e.sector(cfg);
    // The first I/O seen on a disk is neither sequential nor random. Updated
    // in place: an update of a BPF_F_NO_PREALLOC hash map allocates.
    let next = sector + sectors;
    let previous = match NEXT_SECTOR.get_ptr_mut(dev) {
        Some(p) => {
            // SAFETY: map value pointer; a racing CPU's write is as good as ours.
            let previous = unsafe { *p };
            unsafe { *p = next };
            Some(previous)
        }
        None => {
            if NEXT_SECTOR.insert(dev, next, BPF_ANY as u64).is_err() {
                count(&COUNTERS, Counter::MapFull);
            }
            None
        }
    };
    let (sequential, random) = match previous {
        None => (0, 0),
        Some(next) if next == sector => (1, 0),
        Some(_) => (0, 1),
    };
    match PATTERN.get_ptr_mut(dev) {
        Some(p) => {
            // SAFETY: per-CPU value, only this CPU writes it.
            let p = unsafe { &mut *p };
            p.sequential += sequential;
            p.random += random;
            p.bytes += sectors << 9;
        }
        None => {
            let v = PatternValue {
                sequential,
                random,
                bytes: sectors << 9,
            };
            if PATTERN.insert(dev, v, BPF_ANY as u64).is_err() {
                count(&COUNTERS, Counter::MapFull);
            }
        }
    }
}
