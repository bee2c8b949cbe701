//! Sliding replay window over the 64-bit data counters of one session.
//!
//! A bitmap of 8192 bits kept as a ring of 64-bit blocks (the scheme of
//! RFC 6479): moving the window forward clears whole blocks instead of
//! shifting bits, so each check is O(1). Packets may arrive reordered by up
//! to [`WINDOW`] counters; anything older, or seen before, is rejected.
//!
//! The check is split in two so the hot path can test a counter *before*
//! spending a decryption on it and record it only *after* the AEAD tag
//! verified: a forged packet must not move the window.

const BLOCK_BITS: u64 = 64;
const RING_BLOCKS: usize = 128;
/// Ring capacity in bits.
const RING_BITS: u64 = BLOCK_BITS * RING_BLOCKS as u64;
/// How far behind the highest counter a packet may still be accepted. One
/// block is kept back so the block being cleared never holds live bits.
pub const WINDOW: u64 = RING_BITS - BLOCK_BITS;

// The design asks for a window of at least 2048 packets.
const _: () = assert!(WINDOW >= 2048);

#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest counter accepted so far (meaningless while `empty`).
    last: u64,
    empty: bool,
    ring: [u64; RING_BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            last: 0,
            empty: true,
            ring: [0; RING_BLOCKS],
        }
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

fn slot(counter: u64) -> (usize, u64) {
    (
        ((counter / BLOCK_BITS) % RING_BLOCKS as u64) as usize,
        1u64 << (counter % BLOCK_BITS),
    )
}

impl ReplayWindow {
    /// Would `counter` be accepted? Does not change the window.
    pub fn check(&self, counter: u64) -> bool {
        if self.empty || counter > self.last {
            return true;
        }
        if self.last - counter >= WINDOW {
            return false;
        }
        let (block, bit) = slot(counter);
        self.ring[block] & bit == 0
    }

    /// Record `counter` as seen. Returns false (and changes nothing) if it
    /// would have been rejected by [`check`](Self::check).
    pub fn mark(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if self.empty || counter > self.last {
            let (old_block, new_block) = if self.empty {
                (counter / BLOCK_BITS, counter / BLOCK_BITS)
            } else {
                (self.last / BLOCK_BITS, counter / BLOCK_BITS)
            };
            if self.empty {
                self.ring = [0; RING_BLOCKS];
            }
            // Clear every block the window moved past (at most the whole ring).
            let advance = (new_block - old_block).min(RING_BLOCKS as u64);
            for i in 1..=advance {
                let b = ((old_block + i) % RING_BLOCKS as u64) as usize;
                self.ring[b] = 0;
            }
            self.last = counter;
            self.empty = false;
        }
        let (block, bit) = slot(counter);
        self.ring[block] |= bit;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn in_order_and_duplicates() {
        let mut w = ReplayWindow::default();
        for c in 0..20_000u64 {
            assert!(w.check(c));
            assert!(w.mark(c));
            assert!(!w.check(c), "duplicate {c} accepted");
            assert!(!w.mark(c));
        }
    }

    #[test]
    fn reordering_within_window_accepted_beyond_rejected() {
        let mut w = ReplayWindow::default();
        assert!(w.mark(10_000));
        assert!(
            w.mark(10_000 - (WINDOW - 1)),
            "oldest in-window counter rejected"
        );
        assert!(!w.check(10_000 - WINDOW), "counter outside window accepted");
        assert!(!w.check(0));
        assert!(w.mark(9_999));
        assert!(!w.mark(9_999));
    }

    #[test]
    fn large_jump_clears_ring() {
        let mut w = ReplayWindow::default();
        for c in 0..100 {
            w.mark(c);
        }
        assert!(w.mark(1_000_000));
        // Counters that map to the same ring slots as old ones, but are new.
        for c in (1_000_000 - 100)..1_000_000 {
            assert!(w.check(c), "{c} wrongly seen as a replay");
        }
    }

    /// Exhaustive against a reference model: every counter in a scrambled
    /// sequence is accepted iff it is new and within the window.
    #[test]
    fn matches_reference_model() {
        let mut w = ReplayWindow::default();
        let mut seen = HashSet::new();
        let mut highest: Option<u64> = None;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly forward with jitter back, sometimes far back, sometimes repeats.
            let base = step * 3;
            let c = match x % 10 {
                0 => base.saturating_sub(x % 20_000),
                1 => base.saturating_sub(x % 9_000),
                _ => base + (x % 64),
            };
            let expect = !seen.contains(&c) && highest.is_none_or(|h| c > h || h - c < WINDOW);
            assert_eq!(w.check(c), expect, "check({c}) at step {step}");
            assert_eq!(w.mark(c), expect, "mark({c}) at step {step}");
            if expect {
                seen.insert(c);
                highest = Some(highest.map_or(c, |h| h.max(c)));
            }
        }
    }
}
