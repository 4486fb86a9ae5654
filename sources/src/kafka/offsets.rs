//! Which offset of a partition may be committed while its records are delivered out of order.
//!
//! Records are handed out in offset order and may finish in any order (unordered delivery). The
//! committed position must never pass a record that is not done yet, or a crash would lose it:
//! it is the lowest offset still in flight, or one past the highest handed out when none is.
//! Offsets need not be contiguous (compacted topics, transaction markers), so only the offsets
//! actually handed out count.

use std::collections::BTreeSet;

/// The in-flight records of one partition.
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    in_flight: BTreeSet<i64>,
    /// The highest offset handed out so far.
    highest: Option<i64>,
    /// The last position [`OffsetTracker::finish`] reported (at first, the first offset).
    reported: Option<i64>,
}

impl OffsetTracker {
    pub fn new() -> OffsetTracker {
        OffsetTracker::default()
    }

    /// A record is handed out. Offsets arrive in increasing order; an offset at or below one seen
    /// before (the consumer fetching again after a rebalance) is ignored.
    pub fn begin(&mut self, offset: i64) -> bool {
        match self.highest {
            Some(highest) if offset <= highest => return false,
            // Where the partition was read from: nothing before it is this tracker's to commit.
            None => self.reported = Some(offset),
            Some(_) => {}
        }
        self.highest = Some(offset);
        self.in_flight.insert(offset);
        true
    }

    /// A record is done (accepted, or given up). Returns the new position to commit (the next
    /// offset to read) when it moved.
    pub fn finish(&mut self, offset: i64) -> Option<i64> {
        if !self.in_flight.remove(&offset) {
            return None;
        }
        let position = self.position()?;
        if self.reported.is_some_and(|reported| reported >= position) {
            return None;
        }
        self.reported = Some(position);
        Some(position)
    }

    /// The position every record before which is done; `None` before the first record.
    pub fn position(&self) -> Option<i64> {
        match self.in_flight.first() {
            Some(lowest) => Some(*lowest),
            None => self.highest.map(|highest| highest + 1),
        }
    }

    /// Records handed out and not yet done.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_position_waits_for_the_lowest_record_in_flight() {
        let mut tracker = OffsetTracker::new();
        assert_eq!(tracker.position(), None);
        for offset in [10, 11, 12, 15] {
            assert!(tracker.begin(offset));
        }
        assert_eq!(tracker.finish(12), None);
        assert_eq!(tracker.finish(11), None);
        assert_eq!(tracker.position(), Some(10));
        // 10 done: 11 and 12 are too, 15 is in flight.
        assert_eq!(tracker.finish(10), Some(15));
        assert_eq!(tracker.finish(15), Some(16));
        assert_eq!(tracker.in_flight(), 0);
    }

    #[test]
    fn offsets_seen_before_and_unknown_ones_are_ignored() {
        let mut tracker = OffsetTracker::new();
        assert!(tracker.begin(5));
        assert!(!tracker.begin(5));
        assert!(!tracker.begin(3));
        assert_eq!(tracker.finish(4), None);
        assert_eq!(tracker.finish(5), Some(6));
        assert_eq!(tracker.finish(5), None);
    }

    proptest! {
        /// Whatever order records finish in, the reported position only grows, never passes a
        /// record in flight, and ends one past the last record.
        #[test]
        fn the_position_never_passes_a_record_in_flight(
            gaps in proptest::collection::vec(1i64..4, 1..60),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 60),
        ) {
            let mut offset = 100;
            let mut tracker = OffsetTracker::new();
            let mut pending = Vec::new();
            for gap in &gaps {
                offset += gap;
                prop_assert!(tracker.begin(offset));
                pending.push(offset);
            }
            let last = offset;
            let mut reported = i64::MIN;
            let mut step = 0;
            while !pending.is_empty() {
                let index = order[step % order.len()].index(pending.len());
                step += 1;
                let done = pending.swap_remove(index);
                if let Some(position) = tracker.finish(done) {
                    prop_assert!(position > reported);
                    reported = position;
                    prop_assert!(pending.iter().all(|p| *p >= position));
                }
            }
            prop_assert_eq!(reported, last + 1);
            prop_assert_eq!(tracker.position(), Some(last + 1));
        }
    }
}
