//! Which bytes of a staging copy a write session changed: the ranges a
//! publish must hash again, every other byte being the base version's.

use std::collections::BTreeMap;

/// Changed ranges are kept in blocks of this size (the smallest piece
/// length): no piece is split by a block, so nothing is lost by rounding,
/// and a burst of small writes stays a small map.
pub(super) const BLOCK: u64 = 16 * 1024;

/// Sorted, disjoint, non-adjacent `[start, end)` ranges, rounded out to
/// whole blocks (the last may end at `u64::MAX`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Dirty {
    ranges: BTreeMap<u64, u64>,
}

impl Dirty {
    /// `len` bytes written at `offset`.
    pub fn write(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let start = offset / BLOCK * BLOCK;
        let end = offset.saturating_add(len).div_ceil(BLOCK).saturating_mul(BLOCK);
        self.add(start, if end < offset { u64::MAX } else { end });
    }

    /// The file's size set to `size`: whatever lies past it now is not the
    /// base's any more (zeros if it grows again, or bytes written later).
    pub fn truncate(&mut self, size: u64) {
        self.add(size / BLOCK * BLOCK, u64::MAX);
    }

    fn add(&mut self, mut start: u64, mut end: u64) {
        // The range that starts at or before `start` may overlap or touch it.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.ranges.remove(&s);
            }
        }
        // Those starting inside are swallowed.
        let inside: Vec<(u64, u64)> = self.ranges.range(start..=end).map(|(s, e)| (*s, *e)).collect();
        for (s, e) in inside {
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
    }

    /// The parts of `[start, end)` no range covers, in order.
    pub fn gaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        if start >= end {
            return gaps;
        }
        let mut at = start;
        let first = self.ranges.range(..=start).next_back().map(|(s, e)| (*s, *e));
        for (s, e) in first.into_iter().chain(self.ranges.range(start + 1..end).map(|(s, e)| (*s, *e))) {
            if s > at {
                gaps.push((at, s.min(end)));
            }
            at = at.max(e);
            if at >= end {
                return gaps;
            }
        }
        if at < end {
            gaps.push((at, end));
        }
        gaps
    }

    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.ranges.iter().map(|(s, e)| (*s, *e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_merge_into_blocks() {
        let mut d = Dirty::default();
        d.write(100, 10);
        assert_eq!(d.ranges(), vec![(0, BLOCK)]);
        d.write(BLOCK * 4 + 1, BLOCK);
        assert_eq!(d.ranges(), vec![(0, BLOCK), (BLOCK * 4, BLOCK * 6)]);
        // Touching blocks merge; one write over several ranges swallows them.
        d.write(BLOCK, 1);
        assert_eq!(d.ranges(), vec![(0, BLOCK * 2), (BLOCK * 4, BLOCK * 6)]);
        d.write(BLOCK * 3, BLOCK * 10);
        assert_eq!(d.ranges(), vec![(0, BLOCK * 2), (BLOCK * 3, BLOCK * 13)]);
        d.write(0, 0);
        assert_eq!(d.ranges().len(), 2, "an empty write changes nothing");
    }

    #[test]
    fn a_truncate_dirties_everything_past_the_new_size() {
        let mut d = Dirty::default();
        d.write(BLOCK * 10, 5);
        d.truncate(BLOCK * 3 + 7);
        assert_eq!(d.ranges(), vec![(BLOCK * 3, u64::MAX)]);
        d.write(BLOCK * 20, 5);
        assert_eq!(d.ranges(), vec![(BLOCK * 3, u64::MAX)]);
        d.write(0, 1);
        assert_eq!(d.ranges(), vec![(0, BLOCK), (BLOCK * 3, u64::MAX)]);
        d.write(u64::MAX - 3, 10);
        assert_eq!(d.ranges(), vec![(0, BLOCK), (BLOCK * 3, u64::MAX)], "no overflow at the top");
    }

    #[test]
    fn gaps_are_what_no_range_covers() {
        let mut d = Dirty::default();
        assert_eq!(d.gaps(5, 9), vec![(5, 9)]);
        d.write(BLOCK, BLOCK);
        d.write(BLOCK * 4, BLOCK * 2);
        assert_eq!(d.gaps(0, BLOCK * 8), vec![(0, BLOCK), (BLOCK * 2, BLOCK * 4), (BLOCK * 6, BLOCK * 8)]);
        assert_eq!(d.gaps(BLOCK + 5, BLOCK * 2), vec![], "inside one range");
        assert_eq!(d.gaps(BLOCK + 5, BLOCK * 4 + 1), vec![(BLOCK * 2, BLOCK * 4)]);
        assert_eq!(d.gaps(BLOCK * 3, BLOCK * 3 + 7), vec![(BLOCK * 3, BLOCK * 3 + 7)]);
        assert_eq!(d.gaps(BLOCK * 5, BLOCK * 7), vec![(BLOCK * 6, BLOCK * 7)]);
        assert_eq!(d.gaps(7, 7), vec![], "an empty range has no gap");
    }

    #[test]
    fn a_random_burst_stays_sorted_and_disjoint() {
        let mut d = Dirty::default();
        let mut x = 12345u64;
        let mut touched = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let off = (x >> 20) % (BLOCK * 500);
            let len = (x >> 8) % 5000 + 1;
            d.write(off, len);
            for b in off / BLOCK..=(off + len - 1) / BLOCK {
                touched.insert(b);
            }
        }
        let r = d.ranges();
        assert!(r.windows(2).all(|w| w[0].1 < w[1].0), "sorted, disjoint, not touching");
        let blocks: std::collections::BTreeSet<u64> = r.iter().flat_map(|(s, e)| s / BLOCK..e / BLOCK).collect();
        assert_eq!(blocks, touched);
    }
}
