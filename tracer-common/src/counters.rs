//! Per-CPU counters every tool keeps in its `COUNTERS` array map, so drops, lost
//! records and unmatched events are always reported, never silent.

/// Index into the `COUNTERS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Records that did not fit in the ring buffer.
    Lost = 0,
    /// End events (completion, fault end) with no start recorded (e.g. started
    /// before tracing did, or their start was displaced).
    Unmatched = 1,
    /// Hash map inserts that failed (map full).
    MapFull = 2,
    /// Events whose submitting task was not seen (attributed to the task at issue).
    Unattributed = 3,
    /// A start whose previous entry never ended was replaced (a failed fault, a
    /// requeued request, a stale in-flight slot).
    Replaced = 4,
    /// Records sent without the kernel stack they were to carry.
    NoStack = 5,
}

pub const NUM_COUNTERS: u32 = 6;

impl Counter {
    pub const ALL: [Counter; NUM_COUNTERS as usize] = [
        Counter::Lost,
        Counter::Unmatched,
        Counter::MapFull,
        Counter::Unattributed,
        Counter::Replaced,
        Counter::NoStack,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::Lost => "lost",
            Counter::Unmatched => "unmatched",
            Counter::MapFull => "map_full",
            Counter::Unattributed => "unattributed",
            Counter::Replaced => "replaced",
            Counter::NoStack => "no_stack",
        }
    }
}
