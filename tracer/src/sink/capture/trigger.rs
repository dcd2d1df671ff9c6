//! Capture triggers for `tracer record`: `block.lat>50ms`, `fault.lat>10ms`,
//! `kvm.lat>5ms`, `tcp.connlat>1s`, `tcp.retrans`, `tcp.drop`, and one
//! excursion form, `block.p99>3x` (the p99 of the last second above three times
//! the p99 of the minute before). SIGUSR2 always triggers.

use std::{fmt, time::Duration};

use anyhow::{Result, bail};

use crate::cli::parse_duration;

/// What an event or a statistic is compared on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subsystem {
    Block,
    Fault,
    Kvm,
    Tcp,
}

impl Subsystem {
    pub fn name(self) -> &'static str {
        match self {
            Subsystem::Block => "block",
            Subsystem::Fault => "fault",
            Subsystem::Kvm => "kvm",
            Subsystem::Tcp => "tcp",
        }
    }

    pub fn parse(s: &str) -> Option<Subsystem> {
        Some(match s {
            "block" => Subsystem::Block,
            "fault" | "faults" => Subsystem::Fault,
            "kvm" => Subsystem::Kvm,
            "tcp" => Subsystem::Tcp,
            _ => return None,
        })
    }
}

/// The kind of record an event trigger matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An operation with a duration (an I/O, a fault, an exit to the VMM).
    Op,
    Retransmit,
    Drop,
    Connect,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Trigger {
    /// An event of `family` and `kind` lasting more than `min`.
    Slower {
        family: Subsystem,
        kind: EventKind,
        min: Duration,
    },
    /// Any event of this kind (TCP retransmits and drops).
    Any { family: Subsystem, kind: EventKind },
    /// p99 of the family's operations over the last second above `factor`
    /// times their p99 over the minute before.
    Excursion { family: Subsystem, factor: f64 },
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Slower { family, kind, min } => {
                let what = if *kind == EventKind::Connect {
                    "connlat"
                } else {
                    "lat"
                };
                write!(f, "{}.{what}>{}", family.name(), fmt_duration(*min))
            }
            Trigger::Any { family, kind } => write!(
                f,
                "{}.{}",
                family.name(),
                if *kind == EventKind::Drop {
                    "drop"
                } else {
                    "retrans"
                }
            ),
            Trigger::Excursion { family, factor } => {
                write!(f, "{}.p99>{factor}x", family.name())
            }
        }
    }
}

fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1000) {
        format!("{}us", ns / 1000)
    } else {
        format!("{ns}ns")
    }
}

impl Trigger {
    pub fn parse(s: &str) -> Result<Trigger> {
        let s = s.trim();
        let syntax = "a trigger is FAMILY.lat>DURATION (block, fault, kvm), tcp.connlat>DURATION, \
                      tcp.retrans, tcp.drop or FAMILY.p99>FACTORx";
        let (lhs, rhs) = match s.split_once('>') {
            Some((l, r)) => (l.trim(), Some(r.trim())),
            None => (s, None),
        };
        let Some((fam, what)) = lhs.split_once('.') else {
            bail!("bad trigger '{s}': {syntax}");
        };
        let Some(family) = Subsystem::parse(fam) else {
            bail!("bad trigger '{s}': unknown source '{fam}' (block, fault, kvm, tcp)");
        };
        Ok(match (family, what, rhs) {
            (Subsystem::Tcp, "retrans", None) => Trigger::Any {
                family,
                kind: EventKind::Retransmit,
            },
            (Subsystem::Tcp, "drop", None) => Trigger::Any {
                family,
                kind: EventKind::Drop,
            },
            (Subsystem::Tcp, "connlat", Some(d)) => Trigger::Slower {
                family,
                kind: EventKind::Connect,
                min: parse_duration(d).map_err(|e| anyhow::anyhow!("bad trigger '{s}': {e}"))?,
            },
            (Subsystem::Block | Subsystem::Fault | Subsystem::Kvm, "lat", Some(d)) => {
                Trigger::Slower {
                    family,
                    kind: EventKind::Op,
                    min: parse_duration(d)
                        .map_err(|e| anyhow::anyhow!("bad trigger '{s}': {e}"))?,
                }
            }
            (Subsystem::Block | Subsystem::Fault | Subsystem::Kvm, "p99", Some(f)) => {
                let Some(factor) = f.strip_suffix('x').and_then(|v| v.parse::<f64>().ok()) else {
                    bail!(
                        "bad trigger '{s}': the excursion factor is a number followed by x, e.g. 3x"
                    );
                };
                if !(factor > 1.0 && factor.is_finite()) {
                    bail!("bad trigger '{s}': the excursion factor must be above 1");
                }
                Trigger::Excursion { family, factor }
            }
            (_, _, Some(_)) | (_, _, None) => bail!("bad trigger '{s}': {syntax}"),
        })
    }

    pub fn family(&self) -> Subsystem {
        match self {
            Trigger::Slower { family, .. }
            | Trigger::Any { family, .. }
            | Trigger::Excursion { family, .. } => *family,
        }
    }

    /// Whether an event fires this trigger.
    pub fn fires_on(&self, family: Subsystem, kind: EventKind, dur_ns: u64) -> bool {
        match self {
            Trigger::Slower {
                family: f,
                kind: k,
                min,
            } => *f == family && *k == kind && dur_ns as u128 > min.as_nanos(),
            Trigger::Any { family: f, kind: k } => *f == family && *k == kind,
            Trigger::Excursion { .. } => false,
        }
    }
}

/// p99 of a set of durations (ns), from their sorted list.
pub fn p99(sorted: &[u64]) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * 0.99).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// An excursion check over per-100 ms duration samples: fires when the p99 of
/// the last second exceeds `factor` times the p99 of the minute before it.
/// Needs at least a full minute of history and some operations in both.
#[derive(Debug, Default)]
pub struct Excursion {
    /// (slice end in ns, durations of that 100 ms slice), oldest first.
    slices: std::collections::VecDeque<(u64, Vec<u64>)>,
}

pub const SLICE: Duration = Duration::from_millis(100);

impl Excursion {
    /// Adds one 100 ms slice; returns (recent p99, baseline p99) when they
    /// stand in `factor`'s excursion.
    pub fn push(
        &mut self,
        end_ns: u64,
        mut durations: Vec<u64>,
        factor: f64,
    ) -> Option<(u64, u64)> {
        durations.sort_unstable();
        self.slices.push_back((end_ns, durations));
        let keep = (61_000_000_000 / SLICE.as_nanos()) as usize;
        while self.slices.len() > keep {
            self.slices.pop_front();
        }
        if self.slices.len() < keep {
            return None;
        }
        let recent_n = (1_000_000_000 / SLICE.as_nanos()) as usize;
        let split = self.slices.len() - recent_n;
        let gather = |range: std::ops::Range<usize>| {
            let mut v: Vec<u64> = self
                .slices
                .range(range)
                .flat_map(|(_, d)| d.iter().copied())
                .collect();
            v.sort_unstable();
            v
        };
        let recent = p99(&gather(split..self.slices.len()))?;
        let baseline = p99(&gather(0..split))?;
        (recent as f64 > factor * baseline as f64).then_some((recent, baseline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_triggers() {
        for (text, canonical) in [
            ("block.lat>50ms", "block.lat>50ms"),
            ("fault.lat>10ms", "fault.lat>10ms"),
            ("faults.lat>1500us", "fault.lat>1500us"),
            ("kvm.lat>5ms", "kvm.lat>5ms"),
            ("tcp.connlat>1s", "tcp.connlat>1s"),
            ("tcp.retrans", "tcp.retrans"),
            (" tcp.drop ", "tcp.drop"),
            ("block.p99>3x", "block.p99>3x"),
            ("block.lat>0.5s", "block.lat>500ms"),
            ("block.lat>0s", "block.lat>0s"),
        ] {
            assert_eq!(
                Trigger::parse(text).unwrap().to_string(),
                canonical,
                "{text}"
            );
        }
        for (bad, says) in [
            ("disk.lat>5ms", "unknown source 'disk'"),
            ("block.lat>fast", "not a duration"),
            ("block.lat>-1ms", "out of range"),
            (
                "block.lat>50",
                "bad trigger 'block.lat>50': a duration needs a unit",
            ),
            ("tcp.connlat>1", "a duration needs a unit"),
            ("block.lat>99999999999999999999s", "out of range"),
            ("block.p99>3", "followed by x"),
            ("block.p99>0.5x", "above 1"),
            ("tcp.lat>5ms", "a trigger is"),
            ("block.retrans", "a trigger is"),
            ("blocklat", "a trigger is"),
        ] {
            let e = Trigger::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn event_triggers_fire_on_their_own_kind() {
        let t = Trigger::parse("block.lat>50ms").unwrap();
        assert!(t.fires_on(Subsystem::Block, EventKind::Op, 50_000_001));
        assert!(!t.fires_on(Subsystem::Block, EventKind::Op, 50_000_000));
        assert!(!t.fires_on(Subsystem::Fault, EventKind::Op, 90_000_000));
        let t = Trigger::parse("tcp.retrans").unwrap();
        assert!(t.fires_on(Subsystem::Tcp, EventKind::Retransmit, 0));
        assert!(!t.fires_on(Subsystem::Tcp, EventKind::Drop, 0));
    }

    #[test]
    fn excursion_needs_a_minute_and_a_jump() {
        let mut e = Excursion::default();
        let ms = 1_000_000;
        // 61 s less one slice of 1 ms operations: never fires (no jump).
        for i in 0..609 {
            assert_eq!(e.push(i * 100 * ms, vec![ms; 10], 3.0), None);
        }
        // One slow slice lifts the last second's p99.
        assert_eq!(
            e.push(609 * 100 * ms, vec![10 * ms; 10], 3.0),
            Some((10 * ms, ms))
        );
        assert_eq!(p99(&[1, 2, 3]), Some(3));
        assert_eq!(p99(&[]), None);
        assert_eq!(p99(&(1..=100).collect::<Vec<_>>()), Some(99));
    }
}
