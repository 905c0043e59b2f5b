//! Sets of numbers kept as sorted runs, for checking what a stream claims.
//!
//! A stream is untrusted: a hostile one can claim a file of 2^50 blocks or
//! a VBN near 2^64. Dense bit planes indexed by such numbers, or loops over
//! every block, would exhaust memory or never end. A [`RunSet`] costs memory
//! and time by the number of runs, which the stream's own size bounds.

use std::collections::BTreeMap;

/// A set of u64 values as disjoint, sorted, maximal runs `(start, count)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSet {
    runs: Vec<(u64, u64)>,
}

impl RunSet {
    /// Builds a set from runs in any order, merging overlaps; runs that
    /// would wrap past u64::MAX are cut at the end of the range.
    pub fn from_runs(it: impl IntoIterator<Item = (u64, u64)>) -> RunSet {
        let mut v: Vec<(u64, u64)> = it.into_iter().filter(|r| r.1 > 0).collect();
        v.sort_unstable();
        let mut runs: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (s, n) in v {
            let e = s.saturating_add(n);
            match runs.last_mut() {
                Some(l) if l.0 + l.1 >= s => l.1 = l.1.max(e - l.0),
                _ => runs.push((s, e - s)),
            }
        }
        RunSet { runs }
    }
    /// The runs, ascending.
    pub fn runs(&self) -> &[(u64, u64)] {
        &self.runs
    }
    /// Number of values in the set.
    pub fn total(&self) -> u128 {
        self.runs.iter().map(|r| r.1 as u128).sum()
    }
    /// Whether every value of `start..start+count` is in the set.
    pub fn contains_run(&self, start: u64, count: u64) -> bool {
        let i = self.runs.partition_point(|r| r.0 + r.1 <= start);
        self.runs
            .get(i)
            .is_some_and(|r| r.0 <= start && start.saturating_add(count) <= r.0 + r.1)
    }
    /// Whether `v` is in the set.
    pub fn contains(&self, v: u64) -> bool {
        self.contains_run(v, 1)
    }
    /// Whether every value of `self` is in `other`.
    pub fn is_subset_of(&self, other: &RunSet) -> bool {
        self.runs.iter().all(|r| other.contains_run(r.0, r.1))
    }
    /// Splits `start..start+count` into pieces `(start, count, inside)`,
    /// in order, telling which lie in the set.
    pub fn split(&self, start: u64, count: u64) -> Vec<(u64, u64, bool)> {
        let mut out = Vec::new();
        let end = start.saturating_add(count);
        let mut at = start;
        let mut i = self.runs.partition_point(|r| r.0 + r.1 <= start);
        while at < end {
            match self.runs.get(i) {
                Some(&(s, n)) if s <= at => {
                    let e = (s + n).min(end);
                    out.push((at, e - at, true));
                    at = e;
                    i += 1;
                }
                Some(&(s, _)) if s < end => {
                    out.push((at, s - at, false));
                    at = s;
                }
                _ => {
                    out.push((at, end - at, false));
                    at = end;
                }
            }
        }
        out
    }
    /// The values in either set.
    pub fn union(&self, other: &RunSet) -> RunSet {
        RunSet::from_runs(self.runs.iter().chain(&other.runs).copied())
    }
    /// The values in both sets.
    pub fn intersect(&self, other: &RunSet) -> RunSet {
        let mut out = Vec::new();
        for &(s, n) in &self.runs {
            out.extend(
                other
                    .split(s, n)
                    .into_iter()
                    .filter(|p| p.2)
                    .map(|p| (p.0, p.1)),
            );
        }
        RunSet::from_runs(out)
    }
    /// The values of `self` not in `other`.
    pub fn minus(&self, other: &RunSet) -> RunSet {
        let mut out = Vec::new();
        for &(s, n) in &self.runs {
            out.extend(
                other
                    .split(s, n)
                    .into_iter()
                    .filter(|p| !p.2)
                    .map(|p| (p.0, p.1)),
            );
        }
        RunSet::from_runs(out)
    }
}

/// Records disjoint runs as they arrive, refusing any overlap (a VBN seen
/// twice); memory grows with the number of separate runs only.
#[derive(Default)]
pub struct Disjoint {
    runs: BTreeMap<u64, u64>,
}

impl Disjoint {
    /// Number of values recorded.
    #[cfg(test)]
    fn total(&self) -> u128 {
        self.runs.iter().map(|(s, e)| (e - s) as u128).sum()
    }

    /// Splits `start..start+count` into pieces `(start, count, inside)`,
    /// in order, telling which were recorded.
    pub fn split(&self, start: u64, count: u64) -> Vec<(u64, u64, bool)> {
        let end = start.saturating_add(count);
        let mut out = Vec::new();
        let mut at = start;
        let first = self
            .runs
            .range(..=start)
            .next_back()
            .map(|(&s, _)| s)
            .unwrap_or(start);
        for (&s, &e) in self.runs.range(first..end) {
            if e <= at {
                continue;
            }
            if s > at {
                out.push((at, s - at, false));
            }
            let b = s.max(at);
            let f = e.min(end);
            out.push((b, f - b, true));
            at = f;
        }
        if at < end {
            out.push((at, end - at, false));
        }
        out
    }

    /// Adds `start..start+count`; false if it overlaps what was added.
    pub fn insert(&mut self, start: u64, count: u64) -> bool {
        let end = start.saturating_add(count);
        if let Some((&s, &e)) = self.runs.range(..end).next_back() {
            if e > start && s < end {
                return false;
            }
        }
        // Merge with a run ending exactly at `start`, and one starting at `end`.
        let mut s = start;
        let mut e = end;
        if let Some((&ps, &pe)) = self.runs.range(..start).next_back() {
            if pe == start {
                self.runs.remove(&ps);
                s = ps;
            }
        }
        if let Some(&ne) = self.runs.get(&end) {
            self.runs.remove(&end);
            e = ne;
        }
        self.runs.insert(s, e);
        true
    }
}

/// Items tagged with VBN intervals, answering "which items overlap
/// `start..end`" in logarithmic time plus the answer's size. Intervals may
/// overlap (a hostile stream can make them), so a plain binary search on
/// starts is not enough: a running maximum of the ends is kept beside them.
pub struct IntervalIndex<T> {
    items: Vec<(u64, u64, T)>,
    max_end: Vec<u64>,
}

impl<T> IntervalIndex<T> {
    /// Indexes `(start, count, item)` triples given in any order.
    pub fn new(mut items: Vec<(u64, u64, T)>) -> Self {
        items.sort_by_key(|i| i.0);
        let mut max_end = Vec::with_capacity(items.len());
        let mut m = 0u64;
        for (s, c, _) in &items {
            m = m.max(s.saturating_add(*c));
            max_end.push(m);
        }
        IntervalIndex { items, max_end }
    }

    /// The items whose interval overlaps `start..start+count`, by start.
    pub fn overlapping(&self, start: u64, count: u64) -> impl Iterator<Item = &(u64, u64, T)> {
        let end = start.saturating_add(count);
        let first = self.max_end.partition_point(|&e| e <= start);
        self.items[first..]
            .iter()
            .take_while(move |i| i.0 < end)
            .filter(move |i| i.0.saturating_add(i.1) > start)
    }

    /// Every item, by start.
    pub fn items(&self) -> &[(u64, u64, T)] {
        &self.items
    }
}

/// Block runs as "0-3,7,9-12" for one-line displays.
pub fn block_ranges(runs: &[(u64, u64)]) -> String {
    runs.iter()
        .map(|&(s, n)| {
            if n == 1 {
                s.to_string()
            } else {
                format!("{s}-{}", s + n - 1)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_work_on_runs() {
        let a = RunSet::from_runs([(1, 10), (20, 5)]);
        let b = RunSet::from_runs([(5, 20)]);
        assert_eq!(a.union(&b).runs(), &[(1, 24)]);
        assert_eq!(a.intersect(&b).runs(), &[(5, 6), (20, 5)]);
        assert_eq!(a.minus(&b).runs(), &[(1, 4)]);
        assert_eq!(b.minus(&a).runs(), &[(11, 9)]);
        assert!(a.minus(&a).runs().is_empty());
    }

    #[test]
    fn sets_and_splits() {
        let s = RunSet::from_runs([(10, 5), (3, 2), (12, 10), (u64::MAX - 1, 10)]);
        assert_eq!(s.runs()[..2], [(3, 2), (10, 12)]);
        assert!(s.contains_run(10, 12) && !s.contains_run(9, 2) && s.contains(4) && !s.contains(5));
        assert_eq!(
            s.split(0, 30),
            vec![
                (0, 3, false),
                (3, 2, true),
                (5, 5, false),
                (10, 12, true),
                (22, 8, false)
            ]
        );
        assert!(RunSet::from_runs([(11, 2)]).is_subset_of(&s));
        assert_eq!(RunSet::from_runs([(1, 1u64 << 60)]).total(), 1u128 << 60);
        let mut d = Disjoint::default();
        assert!(d.insert(5, 5) && d.insert(10, 2) && d.insert(0, 5));
        assert!(!d.insert(11, 1) && !d.insert(4, 2) && d.insert(12, 1 << 62));
    }

    #[test]
    fn interval_index_finds_overlaps_even_when_intervals_nest() {
        let idx = IntervalIndex::new(vec![
            (10, 100, 'a'),
            (20, 5, 'b'),
            (50, 10, 'c'),
            (200, 1, 'd'),
        ]);
        let hits = |s, c| idx.overlapping(s, c).map(|i| i.2).collect::<String>();
        assert_eq!(hits(0, 10), "");
        assert_eq!(hits(0, 11), "a");
        assert_eq!(hits(26, 1), "a");
        assert_eq!(hits(22, 30), "abc");
        assert_eq!(hits(110, 90), "");
        assert_eq!(hits(110, 91), "d");
        assert_eq!(hits(u64::MAX - 1, 5), "");
    }

    #[test]
    fn disjoint_split_marks_recorded_pieces() {
        let mut d = Disjoint::default();
        assert!(d.insert(10, 5));
        assert!(d.insert(20, 5));
        assert_eq!(
            d.split(0, 30),
            vec![
                (0, 10, false),
                (10, 5, true),
                (15, 5, false),
                (20, 5, true),
                (25, 5, false)
            ]
        );
        assert_eq!(d.split(12, 2), vec![(12, 2, true)]);
        assert_eq!(d.split(30, 5), vec![(30, 5, false)]);
        assert_eq!(d.total(), 10);
    }
}
