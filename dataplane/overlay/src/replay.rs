//! The anti-replay window: which packet counters of a sender were already seen.
//!
//! A bitmap ring in the style of RFC 6479: [`WINDOW`] bits, kept in 64-bit
//! words, sliding forward with the highest counter seen. Counters may arrive
//! out of order by up to `WINDOW - 64` positions (4032, well above the 2048 the
//! overlay needs with GRO batches and several queues); anything older, or
//! anything already marked, is a replay.
//!
//! [`ReplayWindow::check`] is asked before decrypting (cheap rejection) and
//! [`ReplayWindow::accept`] only after the frame authenticated, so forged frames
//! can never move the window.

/// Bits in the window.
pub const WINDOW: u64 = 4096;
const WORDS: usize = (WINDOW / 64) as usize;

/// The sliding window of one sender session.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    bits: [u64; WORDS],
    /// One past the highest counter accepted (0 when none was).
    next: u64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window: every counter is acceptable once.
    pub fn new() -> Self {
        ReplayWindow {
            bits: [0; WORDS],
            next: 0,
        }
    }

    /// How far behind the highest counter accepted an old one may still arrive.
    pub const fn tolerance() -> u64 {
        WINDOW - 64
    }

    fn slot(counter: u64) -> (usize, u64) {
        (((counter / 64) as usize) % WORDS, 1u64 << (counter % 64))
    }

    /// True if `counter` would be accepted: ahead of the window, or inside it
    /// and not yet seen.
    pub fn check(&self, counter: u64) -> bool {
        if counter >= self.next {
            return true;
        }
        if (self.next - 1) - counter > Self::tolerance() {
            return false;
        }
        let (word, bit) = Self::slot(counter);
        self.bits[word] & bit == 0
    }

    /// Marks `counter` as seen; false (and no change) if it is a replay or too old.
    pub fn accept(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.next {
            // Clear the words the window slides over: those after the block of
            // the highest counter so far, up to the new one's (at most all).
            let to = counter / 64;
            if self.next == 0 {
                self.bits = [0; WORDS];
            } else {
                let top = (self.next - 1) / 64;
                for w in (top + 1)..=to.min(top + WORDS as u64) {
                    self.bits[(w as usize) % WORDS] = 0;
                }
            }
            self.next = counter + 1;
        }
        let (word, bit) = Self::slot(counter);
        self.bits[word] |= bit;
        true
    }

    /// One past the highest counter accepted.
    pub fn next_expected(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn in_order_duplicates_and_reordering() {
        let mut w = ReplayWindow::new();
        for c in 0..10_000 {
            assert!(w.accept(c));
        }
        assert!(!w.accept(9_999));
        assert!(!w.accept(5_000));
        assert!(w.accept(10_010));
        assert!(w.accept(10_005), "late but inside the window");
        assert!(!w.accept(10_005));
    }

    #[test]
    fn too_old_and_big_jumps() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(0));
        assert!(w.accept(1_000_000));
        assert!(!w.accept(0), "far behind the window");
        assert!(w.accept(1_000_000 - ReplayWindow::tolerance()));
        assert!(!w.accept(1_000_000 - ReplayWindow::tolerance() - 1));
        // A jump clears what the window slid over: nothing stale stays marked.
        assert!(w.accept(1_000_000 + WINDOW * 3 + 7));
        assert!(w.accept(1_000_000 + WINDOW * 3));
        assert!(w.accept(u64::MAX - 1));
        assert!(!w.accept(u64::MAX - 1));
    }

    #[test]
    fn tolerance_is_at_least_2048() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(5000));
        for c in (5000 - 2048)..5000 {
            assert!(w.accept(c), "{c}");
        }
    }

    proptest! {
        /// Against a model: accepted iff unseen and no more than the tolerance
        /// behind the highest counter accepted so far.
        #[test]
        fn matches_the_reference_model(ops in proptest::collection::vec(0u64..20_000, 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = HashSet::new();
            let mut top: Option<u64> = None;
            for c in ops {
                let fresh = !seen.contains(&c);
                let in_range = top.is_none_or(|t| c > t || t - c <= ReplayWindow::tolerance());
                let expect = fresh && in_range;
                prop_assert_eq!(w.check(c), expect, "check {}", c);
                prop_assert_eq!(w.accept(c), expect, "accept {}", c);
                if expect {
                    seen.insert(c);
                    top = Some(top.map_or(c, |t| t.max(c)));
                }
            }
        }
    }
}
