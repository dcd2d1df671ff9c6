//! Per-CPU counters every tool keeps in its `COUNTERS` array map, so drops, lost
//! records and unmatched events are always reported, never silent.

/// Index into the `COUNTERS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Records that did not fit in the ring buffer.
    Lost = 0,
    /// End events (completion, fault end) with no start recorded.
    Unmatched = 1,
    /// Starts recorded in an in-flight map.
    Started = 2,
    /// Starts matched by their end event.
    Matched = 3,
    /// Hash map inserts that failed (map full).
    MapFull = 4,
    /// Events whose submitting task was not seen (attributed to the task at issue).
    Unattributed = 5,
    /// A start found its key already in flight (the older start was replaced).
    Replaced = 6,
    /// Tool-specific.
    Other = 7,
}

pub const NUM_COUNTERS: u32 = 8;

impl Counter {
    pub const ALL: [Counter; NUM_COUNTERS as usize] = [
        Counter::Lost,
        Counter::Unmatched,
        Counter::Started,
        Counter::Matched,
        Counter::MapFull,
        Counter::Unattributed,
        Counter::Replaced,
        Counter::Other,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::Lost => "lost",
            Counter::Unmatched => "unmatched",
            Counter::Started => "started",
            Counter::Matched => "matched",
            Counter::MapFull => "map_full",
            Counter::Unattributed => "unattributed",
            Counter::Replaced => "replaced",
            Counter::Other => "other",
        }
    }
}
