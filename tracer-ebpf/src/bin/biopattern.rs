//! biopattern: sequential vs random I/O per disk, counted at completion.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, PerCpuArray},
};
use tracer_common::{
    biopattern::{DISK_PROBES, DISK_SLOTS, DiskSlot, PatternValue, disk_slot},
    block::BlockConfig,
    counters::{Counter, NUM_COUNTERS},
};
use tracer_ebpf::{block::RqEvent, count};

tracer_ebpf::license!();

#[unsafe(no_mangle)]
static CONFIG: Global<BlockConfig> = Global::new(BlockConfig::INITIAL);

/// Sector just after each disk's previous I/O; shared across CPUs, since
/// sequentiality is about the order the disk sees.
#[map]
static NEXT_SECTOR: Array<DiskSlot<u64>> = Array::with_max_entries(DISK_SLOTS, 0);
#[map]
static PATTERN: PerCpuArray<DiskSlot<PatternValue>> = PerCpuArray::with_max_entries(DISK_SLOTS, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

tracer_ebpf::block_hook!(CONFIG, complete, complete);

/// Disk `dev`'s slot, and whether it was taken just now. Two CPUs taking one
/// free slot for two disks at once (their first I/Os, at the same moment)
/// would leave one disk to take its next candidate, one I/O later: that
/// I/O counts as a first one. Only NEXT_SECTOR is shared; PATTERN is per-CPU.
#[inline(always)]
fn find<V>(
    slot: impl Fn(u32) -> Option<*mut DiskSlot<V>>,
    dev: u32,
) -> Option<(*mut DiskSlot<V>, bool)> {
    for probe in 0..DISK_PROBES {
        let p = slot(disk_slot(dev, probe))?;
        // SAFETY: array value pointer.
        let s = unsafe { &mut *p };
        if s.dev == dev {
            return Some((p, false));
        }
        if s.dev == 0 {
            s.dev = dev;
            return Some((p, true));
        }
    }
    None
}

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
    // The first I/O seen on a disk is neither sequential nor random.
    let next = sector + sectors;
    let previous = match find(|i| NEXT_SECTOR.get_ptr_mut(i), dev) {
        Some((p, taken)) => {
            // SAFETY: array value pointer; a racing CPU's write is as good as ours.
            let s = unsafe { &mut *p };
            let previous = s.value;
            s.value = next;
            (!taken).then_some(previous)
        }
        None => {
            count(&COUNTERS, Counter::MapFull);
            None
        }
    };
    let (sequential, random) = match previous {
        None => (0, 0),
        Some(next) if next == sector => (1, 0),
        Some(_) => (0, 1),
    };
    match find(|i| PATTERN.get_ptr_mut(i), dev) {
        Some((p, _)) => {
            // SAFETY: per-CPU value, only this CPU writes it.
            let v = &mut unsafe { &mut *p }.value;
            v.sequential += sequential;
            v.random += random;
            v.bytes += sectors << 9;
        }
        None => count(&COUNTERS, Counter::MapFull),
    }
}
