//! The decision, on the host from what the detector measured: frame i is a duplicate of a kept
//! frame k only if, 8x8-pixel block by block (4x4 cells, every plane), no cell of i differs from
//! k's by more than `peak` levels per pixel, and no more than `fraction` of the blocks differ on
//! average by more than `mean` levels per pixel (the logic of FFmpeg's mpdecimate, with a peak
//! test that catches one small changed spot in a block).
//!
//! i is always compared with kept frames themselves, never along a chain of duplicates, so slow
//! drift is never merged. Candidates are the window of recently used kept frames: the most recent
//! one always, the others when their hash is near i's (a blink, a cut back to a shot).

use std::collections::VecDeque;

use super::features::{hash_from_regions, Change, REGIONS};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Thresholds {
    /// Largest change allowed in any 2x2 cell, in levels per pixel (0..255).
    pub peak: f32,
    /// A block whose mean change exceeds this (levels per pixel) counts as changed...
    pub mean: f32,
    /// ...and at most this fraction of blocks may have changed.
    pub fraction: f32,
    /// Hash bits that may differ for a kept frame other than the most recent to be checked.
    pub hash_bits: u32,
}

impl Thresholds {
    /// `peak` in the cells' unit, a sum of 4 pixels.
    pub fn peak_limit(&self) -> u32 {
        (self.peak * 4.0).floor() as u32
    }

    /// `mean` in the blocks' unit, a sum of 64 pixels: what the detector compares on the device.
    pub fn mean_limit(&self) -> u32 {
        (self.mean * 64.0).floor() as u32
    }

    pub fn same_picture(&self, change: &Change) -> bool {
        change.peak <= self.peak_limit()
            && f64::from(change.changed_blocks)
                <= f64::from(self.fraction) * f64::from(change.blocks)
    }
}

/// What the detector saw of a new frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Look {
    pub hash: u64,
    /// How it differs from each kept frame of its size, by the kept frame's index.
    pub changes: Vec<(u64, Change)>,
}

impl Look {
    /// What a device read back: the hash's `REGIONS` region sums (unset when the frame is too
    /// small for a hash), then for each slot, per cube of blocks, its largest change and its
    /// count of changed blocks. `kept` are the slots holding kept frames, and their indices.
    pub fn from_read_back(
        words: &[u32],
        has_hash: bool,
        kept: Vec<(usize, u64)>,
        cubes: usize,
        blocks: usize,
    ) -> Self {
        let hash = if has_hash {
            hash_from_regions(&words[..REGIONS])
        } else {
            0
        };
        let changes = kept
            .into_iter()
            .map(|(slot, index)| {
                let at = REGIONS + slot * cubes * 2;
                let partials = &words[at..at + cubes * 2];
                (index, Change::from_partials(partials, blocks))
            })
            .collect();
        Self { hash, changes }
    }

    fn change(&self, kept: u64) -> Option<&Change> {
        self.changes
            .iter()
            .find_map(|(index, change)| (*index == kept).then_some(change))
    }
}

/// What to do with one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The kept frame whose upscaled picture this one uses: its own index when it is kept.
    pub source: u64,
    /// Kept frames that no later frame can use any more (they left the window).
    pub released: Vec<u64>,
}

impl Decision {
    pub fn keeps(&self, index: u64) -> bool {
        self.source == index
    }
}

struct Kept {
    index: u64,
    hash: u64,
}

pub struct Deduplicator {
    thresholds: Thresholds,
    capacity: usize,
    /// Least recently used first.
    window: VecDeque<Kept>,
}

impl Deduplicator {
    /// `capacity` kept frames stay candidates (at least 1).
    pub fn new(thresholds: Thresholds, capacity: usize) -> Self {
        Self {
            thresholds,
            capacity: capacity.max(1),
            window: VecDeque::new(),
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    pub fn decide(&mut self, index: u64, look: &Look) -> Decision {
        if let Some(last) = self.window.back() {
            if let Some(change) = look.change(last.index) {
                log::trace!(
                    "frame {index} vs kept {}: peak {:.2}, {:.2}% of blocks over {}, hash bits {}",
                    last.index,
                    change.peak as f32 / 4.0,
                    100.0 * change.changed_blocks as f32 / change.blocks.max(1) as f32,
                    self.thresholds.mean,
                    (last.hash ^ look.hash).count_ones()
                );
            }
        }
        let found = self.candidates(look.hash).into_iter().find(|&at| {
            look.change(self.window[at].index)
                .is_some_and(|change| self.thresholds.same_picture(change))
        });
        if let Some(at) = found {
            let kept = self.window.remove(at).expect("found in the window");
            let source = kept.index;
            self.window.push_back(kept);
            return Decision {
                source,
                released: Vec::new(),
            };
        }
        self.window.push_back(Kept {
            index,
            hash: look.hash,
        });
        let mut released = Vec::new();
        while self.window.len() > self.capacity {
            released.extend(self.window.pop_front().map(|k| k.index));
        }
        Decision {
            source: index,
            released,
        }
    }

    /// The kept frames that a frame with this hash is compared with.
    pub fn candidates_for(&self, hash: u64) -> Vec<u64> {
        self.candidates(hash)
            .into_iter()
            .map(|at| self.window[at].index)
            .collect()
    }

    /// Where to look, in order: the most recently used kept frame, then up to
    /// `HASH_CANDIDATES` others whose hash is within `hash_bits`, nearest first.
    fn candidates(&self, hash: u64) -> Vec<usize> {
        let Some(last) = self.window.len().checked_sub(1) else {
            return Vec::new();
        };
        let mut near: Vec<(u32, usize)> = (0..last)
            .map(|at| ((self.window[at].hash ^ hash).count_ones(), at))
            .filter(|&(bits, _)| bits <= self.thresholds.hash_bits)
            .collect();
        // Nearest hash first; among equals, the most recently used.
        near.sort_by_key(|&(bits, at)| (bits, std::cmp::Reverse(at)));
        std::iter::once(last)
            .chain(near.into_iter().take(HASH_CANDIDATES).map(|(_, at)| at))
            .collect()
    }
}

/// Kept frames beyond the most recent one checked per frame: bounds the cost in still scenes,
/// where every kept frame's hash is near.
const HASH_CANDIDATES: usize = 4;

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::features::{change, Features};
    use super::*;

    fn same_picture(kept: &Features, new: &Features, t: &Thresholds) -> bool {
        t.same_picture(&change(kept, new, t.mean_limit()))
    }

    /// A deduplicator with the kept frames' cells on the host, as the detector holds them.
    struct Run {
        decider: Deduplicator,
        kept: HashMap<u64, Features>,
    }

    impl Run {
        fn new(t: Thresholds, capacity: usize) -> Self {
            Self {
                decider: Deduplicator::new(t, capacity),
                kept: HashMap::new(),
            }
        }

        fn decide(&mut self, index: u64, features: Features) -> Decision {
            let mean = self.decider.thresholds().mean_limit();
            let look = Look {
                hash: features.hash,
                changes: self
                    .kept
                    .iter()
                    .map(|(&k, kept)| (k, change(kept, &features, mean)))
                    .collect(),
            };
            let decision = self.decider.decide(index, &look);
            for released in &decision.released {
                self.kept.remove(released);
            }
            if decision.keeps(index) {
                self.kept.insert(index, features);
            }
            decision
        }
    }

    const T: Thresholds = Thresholds {
        peak: 8.0,
        mean: 2.0,
        fraction: 0.1,
        hash_bits: 8,
    };

    /// A flat frame of cells 8 pairs wide and 8 rows high (4x2 blocks), every cell `level`.
    fn flat(level: u32, hash: u64) -> Features {
        Features {
            pairs_per_row: 8,
            cell_rows: 8,
            cells: vec![level | level << 16; 3 * 64],
            hash,
        }
    }

    fn set_cell(f: &mut Features, plane: usize, row: usize, column: usize, value: u32) {
        let w = &mut f.cells[(plane * 8 + row) * 8 + column / 2];
        let shift = 16 * (column % 2);
        *w = (*w & !(0xffff << shift)) | value << shift;
    }

    #[test]
    fn one_changed_cell_above_the_peak_is_a_different_picture() {
        let a = flat(400, 0);
        let mut b = a.clone();
        set_cell(&mut b, 2, 5, 3, 400 + 33); // 8.25 levels per pixel, blue only
        assert!(!same_picture(&a, &b, &T));
        set_cell(&mut b, 2, 5, 3, 400 + 32);
        assert!(same_picture(&a, &b, &T));
    }

    #[test]
    fn widespread_small_change_is_a_different_picture() {
        let a = flat(400, 0);
        // 3 levels per pixel everywhere: under the peak, over the mean in every block.
        let b = flat(412, 0);
        assert!(!same_picture(&a, &b, &T));
        // The same change in one block of eight is within the fraction? 1/8 > 0.1: no.
        let mut c = a.clone();
        for row in 0..4 {
            for column in 0..4 {
                set_cell(&mut c, 0, row, column, 412);
            }
        }
        assert!(!same_picture(&a, &c, &T));
        let loose = Thresholds { fraction: 0.2, ..T };
        assert!(same_picture(&a, &c, &loose));
    }

    #[test]
    fn duplicates_point_at_the_kept_frame_never_along_a_chain() {
        let mut d = Run::new(T, 4);
        // A slow fade of 1 level per pixel per frame: each step is small, the sum is not.
        let decisions: Vec<u64> = (0..8)
            .map(|i| d.decide(i, flat(400 + 4 * i as u32, 0)).source)
            .collect();
        assert_eq!(decisions, [0, 0, 0, 3, 3, 3, 6, 6]);
    }

    #[test]
    fn a_blink_finds_the_open_eyes_again_through_the_hash() {
        let mut d = Run::new(T, 4);
        let open = flat(400, 0xff00);
        let mut closed = open.clone();
        set_cell(&mut closed, 0, 2, 2, 0);
        closed.hash = 0xff01;
        let mut far = open.clone();
        far.hash = !0xff00; // same cells, but the hash says it is elsewhere
        assert_eq!(d.decide(0, open.clone()).source, 0);
        assert_eq!(d.decide(1, closed.clone()).source, 1);
        assert_eq!(d.decide(2, open.clone()).source, 0);
        // Frame 0 is now the most recent: checked without the hash.
        assert_eq!(d.decide(3, far).source, 0);
        assert_eq!(d.decide(4, closed).source, 1);
    }

    #[test]
    fn frames_leaving_the_window_are_released_least_recently_used_first() {
        let mut d = Run::new(T, 2);
        let f = |level| flat(level, 0);
        assert_eq!(d.decide(0, f(0)).released, Vec::<u64>::new());
        assert_eq!(d.decide(1, f(100)).released, Vec::<u64>::new());
        assert_eq!(d.decide(2, f(0)).source, 0); // 0 becomes the most recent
        let third = d.decide(3, f(200));
        assert_eq!((third.source, third.released), (3, vec![1]));
    }
}
