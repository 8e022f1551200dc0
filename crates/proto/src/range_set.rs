//! `RangeSet`: a sorted set of disjoint half-open `u64` ranges, for acknowledged and received blocks.
//!
//! Stored as a `BTreeMap` from range start to range end, so a set of millions of blocks with few
//! gaps costs a few entries. Adjacent and overlapping ranges are always merged.

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::ops::Range;

/// A set of `u64` values kept as sorted, disjoint, non-adjacent half-open ranges.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end (exclusive); no two entries overlap or touch.
    ranges: BTreeMap<u64, u64>,
    /// Number of values covered by all ranges.
    covered: u64,
}

impl std::fmt::Debug for RangeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of values in the set (not the number of ranges).
    pub fn len(&self) -> u64 {
        self.covered
    }

    /// True when the set holds no value.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of disjoint ranges.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Removes every value.
    pub fn clear(&mut self) {
        self.ranges.clear();
        self.covered = 0;
    }

    /// True when `value` is in the set.
    pub fn contains(&self, value: u64) -> bool {
        self.range_containing(value).is_some()
    }

    /// True when every value of `range` is in the set (an empty range is always contained).
    pub fn contains_range(&self, range: Range<u64>) -> bool {
        if range.start >= range.end {
            return true;
        }
        self.range_containing(range.start)
            .is_some_and(|enclosing| enclosing.end >= range.end)
    }

    /// The stored range that holds `value`, if any.
    pub fn range_containing(&self, value: u64) -> Option<Range<u64>> {
        let (&start, &end) = self.ranges.range(..=value).next_back()?;
        (value < end).then_some(start..end)
    }

    /// Smallest value in the set.
    pub fn first(&self) -> Option<u64> {
        self.ranges.keys().next().copied()
    }

    /// The lowest range.
    pub fn first_range(&self) -> Option<Range<u64>> {
        self.ranges.iter().next().map(|(&start, &end)| start..end)
    }

    /// The highest range.
    pub fn last_range(&self) -> Option<Range<u64>> {
        self.ranges
            .iter()
            .next_back()
            .map(|(&start, &end)| start..end)
    }

    /// Removes and returns the smallest value.
    pub fn pop_first(&mut self) -> Option<u64> {
        let (start, end) = self.ranges.pop_first()?;
        if start + 1 < end {
            self.ranges.insert(start + 1, end);
        }
        self.covered -= 1;
        Some(start)
    }

    /// The smallest value `>= from` that is NOT in the set.
    pub fn first_missing_from(&self, from: u64) -> u64 {
        match self.range_containing(from) {
            Some(enclosing) => enclosing.end,
            None => from,
        }
    }

    /// Adds `range`; returns how many values were not in the set before.
    pub fn insert(&mut self, range: Range<u64>) -> u64 {
        if range.start >= range.end {
            return 0;
        }
        // Fast path: extending (or landing inside) the highest range, the common case when
        // blocks are sent or arrive mostly in order.
        if let Some(mut last) = self.ranges.last_entry() {
            let (last_start, last_end) = (*last.key(), *last.get());
            if last_start <= range.start && range.start <= last_end {
                if range.end <= last_end {
                    return 0;
                }
                *last.get_mut() = range.end;
                let added = range.end - last_end;
                self.covered += added;
                return added;
            }
        }
        let mut start = range.start;
        let mut end = range.end;
        let mut already_covered = 0;
        // A range starting at or before `start` may overlap or touch us.
        if let Some((&prev_start, &prev_end)) = self.ranges.range(..=start).next_back() {
            if prev_end >= start {
                if prev_end >= end {
                    return 0;
                }
                already_covered += prev_end - start;
                start = prev_start;
                self.ranges.remove(&prev_start);
                self.covered -= prev_end - prev_start;
                // Re-add the part of prev we merged, counted below as part of the new range.
                already_covered += range.start - prev_start;
            }
        }
        // Swallow every range starting inside (start, end].
        loop {
            let next = self
                .ranges
                .range(start..=end)
                .next()
                .map(|(&next_start, &next_end)| (next_start, next_end));
            let Some((next_start, next_end)) = next else {
                break;
            };
            self.ranges.remove(&next_start);
            self.covered -= next_end - next_start;
            let overlap_end = next_end.min(end);
            already_covered += overlap_end.saturating_sub(next_start);
            if next_end > end {
                // The part beyond `end` was not in `range`, and counts as merged, not new.
                already_covered += next_end - end;
                end = next_end;
            }
        }
        self.ranges.insert(start, end);
        self.covered += end - start;
        (end - start) - already_covered
    }

    /// Removes `range`; returns how many values were in the set.
    pub fn remove(&mut self, range: Range<u64>) -> u64 {
        if range.start >= range.end || self.ranges.is_empty() {
            return 0;
        }
        let mut removed = 0;
        // Split a range that starts before `range.start` and reaches into it.
        if let Some((&prev_start, &prev_end)) = self.ranges.range(..range.start).next_back() {
            if prev_end > range.start {
                self.ranges.insert(prev_start, range.start);
                let cut_end = prev_end.min(range.end);
                removed += cut_end - range.start;
                if prev_end > range.end {
                    self.ranges.insert(range.end, prev_end);
                }
            }
        }
        loop {
            let next = self
                .ranges
                .range(range.start..range.end)
                .next()
                .map(|(&next_start, &next_end)| (next_start, next_end));
            let Some((next_start, next_end)) = next else {
                break;
            };
            self.ranges.remove(&next_start);
            if next_end > range.end {
                self.ranges.insert(range.end, next_end);
                removed += range.end - next_start;
            } else {
                removed += next_end - next_start;
            }
        }
        self.covered -= removed;
        removed
    }

    /// Ranges in ascending order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            inner: self.ranges.iter(),
        }
    }

    /// Ranges of `within` that are NOT in the set, ascending.
    pub fn gaps(&self, within: Range<u64>) -> Gaps<'_> {
        // Start from the range that might contain within.start.
        let first_key = self
            .ranges
            .range(..=within.start)
            .next_back()
            .map_or(within.start, |(&start, _)| start);
        Gaps {
            inner: self.ranges.range(first_key..),
            cursor: within.start,
            end: within.end,
        }
    }

    /// Number of values of `range` that are in the set.
    pub fn count_in(&self, range: Range<u64>) -> u64 {
        let total = range.end.saturating_sub(range.start);
        let missing: u64 = self.gaps(range).map(|gap| gap.end - gap.start).sum();
        total - missing
    }
}

/// Iterator over the ranges of a [`RangeSet`], ascending (also double-ended).
pub struct Iter<'a> {
    inner: btree_map::Iter<'a, u64, u64>,
}

impl Iterator for Iter<'_> {
    type Item = Range<u64>;
    fn next(&mut self) -> Option<Range<u64>> {
        self.inner.next().map(|(&start, &end)| start..end)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Range<u64>> {
        self.inner.next_back().map(|(&start, &end)| start..end)
    }
}

/// Iterator over the missing sub-ranges of a window, from [`RangeSet::gaps`].
pub struct Gaps<'a> {
    inner: btree_map::Range<'a, u64, u64>,
    cursor: u64,
    end: u64,
}

impl Iterator for Gaps<'_> {
    type Item = Range<u64>;
    fn next(&mut self) -> Option<Range<u64>> {
        while self.cursor < self.end {
            match self.inner.next() {
                Some((&start, &stop)) => {
                    if stop <= self.cursor {
                        continue;
                    }
                    if start > self.cursor {
                        let gap = self.cursor..start.min(self.end);
                        self.cursor = stop;
                        return Some(gap);
                    }
                    self.cursor = stop;
                }
                None => {
                    let gap = self.cursor..self.end;
                    self.cursor = self.end;
                    return Some(gap);
                }
            }
        }
        None
    }
}

impl FromIterator<Range<u64>> for RangeSet {
    fn from_iter<I: IntoIterator<Item = Range<u64>>>(iter: I) -> Self {
        let mut set = RangeSet::new();
        for range in iter {
            set.insert(range);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    #[test]
    fn insert_merges_and_counts_new_values() {
        let mut set = RangeSet::new();
        assert_eq!(set.insert(10..20), 10);
        assert_eq!(set.insert(30..40), 10);
        assert_eq!(set.insert(15..35), 10);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![10..40]);
        assert_eq!(set.insert(40..41), 1);
        assert_eq!(set.insert(5..10), 5);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![5..41]);
        assert_eq!(set.len(), 36);
        assert_eq!(set.insert(7..9), 0);
    }

    #[test]
    fn remove_splits() {
        let mut set = RangeSet::new();
        set.insert(0..100);
        assert_eq!(set.remove(10..20), 10);
        assert_eq!(set.remove(15..25), 5);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0..10, 25..100]);
        assert_eq!(set.len(), 85);
        assert_eq!(set.pop_first(), Some(0));
        assert_eq!(set.first(), Some(1));
    }

    #[test]
    fn gaps_within_window() {
        let set: RangeSet = [2..4, 6..8, 10..12].into_iter().collect();
        assert_eq!(
            set.gaps(0..13).collect::<Vec<_>>(),
            vec![0..2, 4..6, 8..10, 12..13]
        );
        assert_eq!(set.gaps(3..7).collect::<Vec<_>>(), vec![4..6]);
        assert_eq!(set.gaps(6..8).count(), 0);
        assert_eq!(set.count_in(0..13), 6);
        assert_eq!(set.first_missing_from(2), 4);
        assert_eq!(set.first_missing_from(5), 5);
        assert!(set.contains_range(10..12));
        assert!(!set.contains_range(10..13));
    }

    #[test]
    fn matches_a_naive_model_under_random_operations() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut set = RangeSet::new();
        let mut model = BTreeSet::new();
        for _ in 0..20_000 {
            let start = rng.gen_range(0..500u64);
            let end = start + rng.gen_range(0..20u64);
            if rng.gen_bool(0.6) {
                let fresh = (start..end).filter(|v| !model.contains(v)).count() as u64;
                assert_eq!(set.insert(start..end), fresh);
                model.extend(start..end);
            } else {
                let present = (start..end).filter(|v| model.contains(v)).count() as u64;
                assert_eq!(set.remove(start..end), present);
                for value in start..end {
                    model.remove(&value);
                }
            }
            assert_eq!(set.len(), model.len() as u64);
        }
        let rebuilt: BTreeSet<u64> = set.iter().flatten().collect();
        assert_eq!(rebuilt, model);
        let ranges: Vec<_> = set.iter().collect();
        for pair in ranges.windows(2) {
            assert!(pair[0].end < pair[1].start, "ranges must not touch");
        }
        let gaps: BTreeSet<u64> = set.gaps(0..520).flatten().collect();
        let expected: BTreeSet<u64> = (0..520).filter(|v| !model.contains(v)).collect();
        assert_eq!(gaps, expected);
    }
}
