//! Per-interval totals from counter maps the kernel keeps adding to (top-like
//! tools). Maps are never cleared under the kernel's feet: each read is compared
//! with the previous one, and only keys that stayed idle for a whole interval are
//! deleted, which keeps the map bounded without losing live counts.

use std::{collections::HashMap, hash::Hash};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, Pod,
    maps::{MapData, PerCpuHashMap},
};

/// A value that can be summed across CPUs and differenced across reads.
pub trait Tally: Pod + Default + PartialEq {
    fn add(&mut self, other: &Self);
    fn minus(&self, earlier: &Self) -> Self;
}

impl Tally for u64 {
    fn add(&mut self, other: &Self) {
        *self += other;
    }
    fn minus(&self, earlier: &Self) -> Self {
        self.saturating_sub(*earlier)
    }
}

/// Remembers the last totals of a map.
pub struct Deltas<K, V> {
    prev: HashMap<K, V>,
}

impl<K, V> Default for Deltas<K, V> {
    fn default() -> Self {
        Deltas {
            prev: HashMap::new(),
        }
    }
}

impl<K: Pod + Eq + Hash, V: Tally> Deltas<K, V> {
    /// Returns what changed since the last read, and the keys that did not change
    /// (to be deleted from the map).
    pub fn update(&mut self, current: Vec<(K, V)>) -> (Vec<(K, V)>, Vec<K>) {
        self.update_keeping(current, |_| false)
    }

    /// Like `update`, but idle keys for which `keep` holds are neither returned
    /// nor forgotten (their counts live on elsewhere, e.g. in a kernel cache).
    pub fn update_keeping(
        &mut self,
        current: Vec<(K, V)>,
        keep: impl Fn(&K) -> bool,
    ) -> (Vec<(K, V)>, Vec<K>) {
        let mut changed = Vec::new();
        let mut idle = Vec::new();
        for (k, v) in current {
            let before = self.prev.get(&k).copied().unwrap_or_default();
            if v == before {
                if !keep(&k) {
                    idle.push(k);
                    self.prev.remove(&k);
                }
            } else {
                changed.push((k, v.minus(&before)));
                self.prev.insert(k, v);
            }
        }
        (changed, idle)
    }

    /// Reads a per-CPU hash map, returns this interval's deltas, deletes idle keys.
    pub fn read_percpu(&mut self, ebpf: &mut Ebpf, name: &str) -> Result<Vec<(K, V)>> {
        let current = crate::bpf::mapdump::entries::<K, V>(
            ebpf.map(name)
                .with_context(|| format!("map {name} missing"))?,
        )?
        .into_iter()
        .map(|(k, per_cpu)| {
            let mut total = V::default();
            for v in &per_cpu {
                total.add(v);
            }
            (k, total)
        })
        .collect();
        let (changed, idle) = self.update(current);
        let mut map: PerCpuHashMap<&mut MapData, K, V> =
            PerCpuHashMap::try_from(ebpf.map_mut(name).expect("found above"))?;
        for k in idle {
            let _ = map.remove(&k);
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_and_idle_keys() {
        let mut d = Deltas::<u64, u64>::default();
        let (changed, idle) = d.update(vec![(1, 10), (2, 5)]);
        assert_eq!((changed, idle), (vec![(1, 10), (2, 5)], vec![]));
        let (changed, idle) = d.update(vec![(1, 15), (2, 5)]);
        assert_eq!((changed, idle), (vec![(1, 5)], vec![2]));
        // Key 2 was deleted from the map; if it comes back it counts from zero.
        let (changed, idle) = d.update(vec![(1, 15), (2, 3)]);
        assert_eq!((changed, idle), (vec![(2, 3)], vec![1]));
    }
}
