//! biopattern: random vs sequential I/O per disk.
use crate::{assert_size, pod};

/// Per-disk counts (per-CPU in the kernel, summed by userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatternValue {
    pub sequential: u64,
    pub random: u64,
    pub bytes: u64,
}
assert_size!(PatternValue, 24);
pod!(PatternValue);

/// Slots of the per-disk arrays. A disk takes the first free one of its
/// DISK_PROBES candidates: arrays, because a hash-map lookup costs ~60 ns
/// here and an array access a few.
pub const DISK_SLOTS: u32 = 1024;
pub const DISK_PROBES: u32 = 4;

/// The `probe`th candidate slot of disk `dev`.
pub const fn disk_slot(dev: u32, probe: u32) -> u32 {
    ((dev.wrapping_mul(0x9E37_79B1) >> 22) + probe) & (DISK_SLOTS - 1)
}

/// A disk's entry in a per-disk array: the sector just after its previous
/// I/O (u64, shared by all CPUs), or one CPU's counts. `dev` 0: a free slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskSlot<V> {
    pub dev: u32,
    pub _pad: u32,
    pub value: V,
}
assert_size!(DiskSlot<u64>, 16);
assert_size!(DiskSlot<PatternValue>, 32);
pod!(DiskSlot<PatternValue>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_candidates_are_distinct_slots() {
        // sda, loop0..2, nvme0n1: dev_t as the kernel packs it (major << 20).
        for dev in [8 << 20, 7 << 20, (7 << 20) + 1, (7 << 20) + 2, 259 << 20] {
            let slots = [0, 1, 2, 3].map(|p| disk_slot(dev, p));
            assert_eq!(slots.len() as u32, DISK_PROBES);
            for (i, a) in slots.iter().enumerate() {
                assert!(*a < DISK_SLOTS);
                assert!(slots[i + 1..].iter().all(|b| b != a), "{dev}");
            }
        }
        // Neighbouring disks start at different slots.
        assert_ne!(disk_slot(7 << 20, 0), disk_slot((7 << 20) + 1, 0));
    }
}
