//! Log-linear histogram buckets, shared by the kernel (which counts) and userspace
//! (which prints log2 histograms and percentiles from the same buckets).
//!
//! Values below 16 get one bucket each; above, every power of two [2^k, 2^(k+1)) is
//! split into 16 equal sub-buckets, so a bucket's width is at most 1/16 of its lower
//! bound (relative error <= 6.25%). Each power of two maps onto whole buckets, so the
//! BCC-style log2 histogram is an exact regrouping of these counts.

/// log2 of the number of sub-buckets per power of two.
pub const SUB_BITS: u32 = 4;
pub const SUB_COUNT: u64 = 1 << SUB_BITS;
/// Number of buckets covering all of u64.
pub const NUM_BUCKETS: u32 = (64 - SUB_BITS + 1) * SUB_COUNT as u32;

/// Bucket index of `v`.
#[inline(always)]
pub const fn bucket_of(v: u64) -> u32 {
    if v < SUB_COUNT {
        return v as u32;
    }
    let msb = 63 - v.leading_zeros();
    let sub = (v >> (msb - SUB_BITS)) & (SUB_COUNT - 1);
    (msb - SUB_BITS + 1) * SUB_COUNT as u32 + sub as u32
}

/// Smallest value in bucket `b`.
pub const fn bucket_low(b: u32) -> u64 {
    if (b as u64) < SUB_COUNT {
        return b as u64;
    }
    let msb = b / SUB_COUNT as u32 + SUB_BITS - 1;
    let sub = (b as u64) & (SUB_COUNT - 1);
    (SUB_COUNT + sub) << (msb - SUB_BITS)
}

/// Largest value in bucket `b`.
pub const fn bucket_high(b: u32) -> u64 {
    if (b as u64) < SUB_COUNT {
        return b as u64;
    }
    let msb = b / SUB_COUNT as u32 + SUB_BITS - 1;
    bucket_low(b) + ((1u64 << (msb - SUB_BITS)) - 1)
}

/// The log2 slot (libbpf-tools numbering: slot 0 holds 0 and 1, slot k >= 1 holds
/// [2^k, 2^(k+1) - 1]) that contains every value of bucket `b`.
pub const fn log2_slot_of_bucket(b: u32) -> u32 {
    let low = bucket_low(b);
    if low <= 1 {
        0
    } else {
        63 - low.leading_zeros()
    }
}

/// Key of one histogram bucket: the tool's grouping (disk, flags, comm...) plus the
/// bucket index. `G` must be a padding-free `repr(C)` type whose size is a multiple
/// of 8 bytes, so the key has no hidden padding either.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HistKey<G> {
    pub group: G,
    pub bucket: u32,
    pub _pad: u32,
}

/// Exact totals per histogram group, kept beside the buckets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistStats {
    pub count: u64,
    pub sum: u64,
    pub max: u64,
}
crate::assert_size!(HistStats, 24);
crate::pod!(HistStats);

/// A whole histogram in one per-CPU array slot: the fast path for histograms that
/// are not grouped by a runtime key (one array lookup per event instead of two
/// hash lookups).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotHist {
    pub count: u64,
    pub sum: u64,
    pub max: u64,
    pub buckets: [u64; NUM_BUCKETS as usize],
}
crate::assert_size!(SlotHist, 24 + 8 * NUM_BUCKETS as usize);
crate::pod!(SlotHist);

/// A histogram with no grouping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NoGroup {
    pub _unused: u64,
}
crate::assert_size!(NoGroup, 8);
crate::assert_size!(HistKey<NoGroup>, 16);
crate::pod!(NoGroup, HistKey<NoGroup>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(u64::MAX), NUM_BUCKETS - 1);
        assert_eq!(bucket_high(NUM_BUCKETS - 1), u64::MAX);
        for b in 0..NUM_BUCKETS - 1 {
            assert_eq!(
                bucket_high(b) + 1,
                bucket_low(b + 1),
                "gap after bucket {b}"
            );
            assert_eq!(bucket_of(bucket_low(b)), b);
            assert_eq!(bucket_of(bucket_high(b)), b);
        }
    }

    #[test]
    fn bucket_width_is_within_one_sixteenth() {
        for b in SUB_COUNT as u32..NUM_BUCKETS {
            let width = bucket_high(b) - bucket_low(b) + 1;
            assert!(width * SUB_COUNT <= bucket_low(b), "bucket {b}");
        }
    }

    #[test]
    fn log2_slots_match_libbpf_tools() {
        // slot 0 = 0..1, slot 1 = 2..3, slot 2 = 4..7, slot 10 = 1024..2047
        for (v, slot) in [
            (0u64, 0u32),
            (1, 0),
            (2, 1),
            (3, 1),
            (4, 2),
            (7, 2),
            (8, 3),
            (15, 3),
            (16, 4),
            (1023, 9),
            (1024, 10),
            (2047, 10),
            (u64::MAX, 63),
        ] {
            assert_eq!(log2_slot_of_bucket(bucket_of(v)), slot, "value {v}");
        }
    }
}
