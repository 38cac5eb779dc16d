//! What duplicate detection knows of a frame, defined once in integer arithmetic so that every
//! backend computes exactly the same numbers (and so takes exactly the same decisions):
//!
//! - **cells**: for each plane (R, G, B), the sum of each 2x2-pixel cell of the 8-bit frame, a
//!   half-size thumbnail that keeps local detail (a small object moving one pixel changes it).
//!   Cells come in pairs: one 32-bit word holds the cells under 4 pixels of a row pair, the left
//!   one in its low 16 bits.
//! - **hash**: a 64-bit average hash of the luma thumbnail ((R + 2G + B) / 16 per cell, summed per
//!   pair), 8x8 regions, one bit per region: set when the region is brighter than the regions'
//!   mean. The devices sum the regions, the host sets the bits. It only finds candidates; the
//!   cells decide.
//!
//! The frame is uploaded as packed bytes: each plane is padded with zeros to a width that is a
//! multiple of 4 and an even height, four pixels per little-endian word.

use crate::upscale::Planar;

/// An 8-bit RGB frame packed four pixels to a word, plane after plane.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    pub words: Vec<u32>,
    /// Words per row (padded width / 4); also the cell pairs per cell row.
    pub words_per_row: usize,
    /// Padded height (even).
    pub rows: usize,
}

impl Packed {
    /// Words per row and rows (per plane) of a `width` x `height` frame, without its words.
    pub fn layout(width: usize, height: usize) -> (usize, usize) {
        (width.div_ceil(4), height + height % 2)
    }

    /// A zero frame for `width` x `height` pixels, to be filled with `set_row`.
    pub fn new(width: usize, height: usize) -> Self {
        let (words_per_row, rows) = Self::layout(width, height);
        Self {
            words: vec![0; 3 * rows * words_per_row],
            words_per_row,
            rows,
        }
    }

    /// Stores one row of 8-bit samples of a plane (0 = R, 1 = G, 2 = B).
    pub fn set_row(&mut self, plane: usize, y: usize, samples: &[u8]) {
        let at = (plane * self.rows + y) * self.words_per_row;
        let out = &mut self.words[at..at + self.words_per_row];
        let mut chunks = samples.chunks_exact(4);
        for (word, four) in out.iter_mut().zip(&mut chunks) {
            *word = u32::from_le_bytes([four[0], four[1], four[2], four[3]]);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 4];
            last[..rest.len()].copy_from_slice(rest);
            out[samples.len() / 4] = u32::from_le_bytes(last);
        }
    }

    /// Quantises a planar 0..1 frame to 8 bits (as an 8-bit source was) and packs it.
    pub fn from_planar(image: &Planar) -> Self {
        let (w, h) = (image.width, image.height);
        let mut packed = Self::new(w, h);
        let mut bytes = vec![0u8; w];
        for plane in 0..3 {
            let src = &image.data[plane * w * h..(plane + 1) * w * h];
            for (y, row) in src.chunks_exact(w).enumerate() {
                for (b, &v) in bytes.iter_mut().zip(row) {
                    *b = (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
                }
                packed.set_row(plane, y, &bytes);
            }
        }
        packed
    }

    pub fn cell_rows(&self) -> usize {
        self.rows / 2
    }

    /// Whether the frame is large enough for an 8x8-region hash (else the hash is 0).
    pub fn has_hash(&self) -> bool {
        self.cell_rows() >= 8 && self.words_per_row >= 8
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// Cell pairs per cell row.
    pub pairs_per_row: usize,
    pub cell_rows: usize,
    /// Plane after plane, row after row; see the module's description.
    pub cells: Vec<u32>,
    pub hash: u64,
}

impl Features {
    /// The sum of one cell.
    pub fn cell(&self, plane: usize, row: usize, column: usize) -> u32 {
        let word = self.cells[(plane * self.cell_rows + row) * self.pairs_per_row + column / 2];
        if column.is_multiple_of(2) {
            word & 0xffff
        } else {
            word >> 16
        }
    }

    /// Cells per cell row.
    pub fn cell_columns(&self) -> usize {
        2 * self.pairs_per_row
    }
}

/// How a new frame differs from one kept frame of the same size: all the decision needs, and
/// few enough numbers to come back from the device where the cells stay. Blocks are 8x8 pixels
/// (4x4 cells, two cell pairs wide), the last row and column of blocks possibly partial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The largest change of one 2x2 cell in one plane (a sum of four pixels: 0..1020).
    pub peak: u32,
    /// Blocks whose summed change in some plane exceeds the mean limit.
    pub changed_blocks: u32,
    pub blocks: u32,
}

impl Change {
    /// Blocks of a frame with `pairs_per_row` x `cell_rows` cells.
    pub fn blocks_of(pairs_per_row: usize, cell_rows: usize) -> (usize, usize) {
        (pairs_per_row.div_ceil(2), cell_rows.div_ceil(4))
    }

    /// Partial results, one `(peak, changed_blocks)` pair per group of blocks, combined.
    pub fn from_partials(partials: &[u32], blocks: usize) -> Self {
        let (peak, changed_blocks) = partials
            .chunks_exact(2)
            .fold((0, 0), |(peak, count), p| (peak.max(p[0]), count + p[1]));
        Self {
            peak,
            changed_blocks,
            blocks: blocks as u32,
        }
    }
}

/// The definition of `Change`, computed on the host. `mean_limit` is in block sums (64 pixels):
/// a block changed when the absolute differences of its cells in one plane add up to more.
pub fn change(kept: &Features, new: &Features, mean_limit: u32) -> Change {
    let (wq, ch) = (new.pairs_per_row, new.cell_rows);
    let (bw, bh) = Change::blocks_of(wq, ch);
    let mut changed = vec![false; bw * bh];
    let mut sums = vec![0u32; bw * bh];
    let mut peak = 0;
    for plane in 0..3 {
        sums.iter_mut().for_each(|s| *s = 0);
        let at = plane * ch * wq;
        let (a, b) = (&kept.cells[at..at + ch * wq], &new.cells[at..at + ch * wq]);
        for row in 0..ch {
            let (ra, rb) = (&a[row * wq..(row + 1) * wq], &b[row * wq..(row + 1) * wq]);
            let sums = &mut sums[(row / 4) * bw..(row / 4 + 1) * bw];
            for (pair, (&x, &y)) in ra.iter().zip(rb).enumerate() {
                let low = (x & 0xffff).abs_diff(y & 0xffff);
                let high = (x >> 16).abs_diff(y >> 16);
                peak = peak.max(low).max(high);
                sums[pair / 2] += low + high;
            }
        }
        for (c, &s) in changed.iter_mut().zip(&sums) {
            *c |= s > mean_limit;
        }
    }
    Change {
        peak,
        changed_blocks: changed.iter().filter(|&&c| c).count() as u32,
        blocks: (bw * bh) as u32,
    }
}

/// Builds the hash from its four 16-bit chunks (bits 0..15 first), the form the devices return.
pub fn hash_from_chunks(chunks: [u32; 4]) -> u64 {
    chunks.iter().enumerate().fold(0, |hash, (i, &c)| {
        hash | (u64::from(c & 0xffff) << (16 * i))
    })
}

fn byte(word: u32, i: usize) -> u32 {
    (word >> (8 * i)) & 0xff
}

/// The definition, computed on the host: what the device paths are tested against.
pub fn reference(frame: &Packed) -> Features {
    let (wq, ch) = (frame.words_per_row, frame.cell_rows());
    let mut cells = vec![0u32; 3 * ch * wq];
    for plane in 0..3 {
        for row in 0..ch {
            for pair in 0..wq {
                let at = |r: usize| frame.words[(plane * frame.rows + r) * wq + pair];
                let (top, bottom) = (at(2 * row), at(2 * row + 1));
                let left = byte(top, 0) + byte(top, 1) + byte(bottom, 0) + byte(bottom, 1);
                let right = byte(top, 2) + byte(top, 3) + byte(bottom, 2) + byte(bottom, 3);
                cells[(plane * ch + row) * wq + pair] = left | (right << 16);
            }
        }
    }
    let hash = if frame.has_hash() {
        reference_hash(&cells, wq, ch)
    } else {
        0
    };
    Features {
        pairs_per_row: wq,
        cell_rows: ch,
        cells,
        hash,
    }
}

/// The luma of a cell pair: (R + 2G + B) / 16 of each cell, added.
pub fn pair_luma(r: u32, g: u32, b: u32) -> u32 {
    let half = |shift: u32| {
        let c = |w: u32| (w >> shift) & 0xffff;
        (c(r) + 2 * c(g) + c(b)) / 16
    };
    half(0) + half(16)
}

fn reference_hash(cells: &[u32], wq: usize, ch: usize) -> u64 {
    let (rh, rw) = (ch / 8, wq / 8);
    let mut regions = [0u32; 64];
    for (k, region) in regions.iter_mut().enumerate() {
        let (i, j) = (k / 8, k % 8);
        for row in i * rh..(i + 1) * rh {
            for pair in j * rw..(j + 1) * rw {
                let at = |plane: usize| cells[(plane * ch + row) * wq + pair];
                *region += pair_luma(at(0), at(1), at(2));
            }
        }
    }
    hash_from_regions(&regions)
}

/// Regions of the hash: an 8x8 grid.
pub const REGIONS: usize = 64;

/// The hash from the luma sums of its 64 regions (row by row of the 8x8 grid), as the devices
/// return them: bit k is set when region k is brighter than the regions' mean.
pub fn hash_from_regions(regions: &[u32]) -> u64 {
    let mean = regions.iter().sum::<u32>() / 64;
    regions
        .iter()
        .enumerate()
        .filter(|(_, &r)| r > mean)
        .fold(0, |hash, (k, _)| hash | 1 << k)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A deterministic test picture with detail at every scale.
    pub fn picture(width: usize, height: usize, seed: u32) -> Planar {
        let mut image = Planar::new(3, width, height);
        let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
        for (i, v) in image.data.iter_mut().enumerate() {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let x = (i % width) as f32 / width as f32;
            *v = (0.5 * x + 0.5 * (state % 256) as f32 / 255.0).min(1.0);
        }
        image
    }

    #[test]
    fn packing_quantises_and_pads_with_zeros() {
        let mut image = Planar::new(3, 5, 3);
        image.data[0] = 1.0; // R(0,0)
        image.data[4] = 0.5; // R(4,0): the second word of row 0
        image.data[15 + 1] = 2.0 / 255.0; // G(1,0)
        let packed = Packed::from_planar(&image);
        assert_eq!((packed.words_per_row, packed.rows), (2, 4));
        assert_eq!(packed.words.len(), 3 * 4 * 2);
        assert_eq!(packed.words[0], 255);
        assert_eq!(packed.words[1], 128);
        assert_eq!(packed.words[8], 2 << 8);
        assert!(packed.words[2..8].iter().all(|&w| w == 0));
    }

    #[test]
    fn cells_sum_each_2x2_block_of_each_plane() {
        let image = picture(13, 9, 7);
        let features = reference(&Packed::from_planar(&image));
        let (w, h) = (13, 9);
        let px = |p: usize, x: usize, y: usize| {
            if x < w && y < h {
                (image.data[p * w * h + y * w + x] * 255.0).round() as u32
            } else {
                0
            }
        };
        for p in 0..3 {
            for r in 0..features.cell_rows {
                for c in 0..features.cell_columns() {
                    let (x, y) = (2 * c, 2 * r);
                    let sum = px(p, x, y) + px(p, x + 1, y) + px(p, x, y + 1) + px(p, x + 1, y + 1);
                    assert_eq!(features.cell(p, r, c), sum, "plane {p} cell {r},{c}");
                }
            }
        }
        assert_eq!(features.hash, 0, "too small for a hash");
    }

    #[test]
    fn the_hash_follows_brightness_and_ignores_small_noise() {
        let a = picture(160, 96, 1);
        let mut b = a.clone();
        // A bright left half and the same picture with a tiny change.
        for p in 0..3 {
            for y in 0..96 {
                for x in 0..80 {
                    b.data[p * 160 * 96 + y * 160 + x] = 1.0;
                }
            }
        }
        let mut c = b.clone();
        c.data[500] = 0.0;
        let (hb, hc) = (
            reference(&Packed::from_planar(&b)).hash,
            reference(&Packed::from_planar(&c)).hash,
        );
        assert_eq!(hb, hc);
        // Left half bright: the four left regions of each row are set.
        assert_eq!(hb, 0x0f0f_0f0f_0f0f_0f0f);
        assert_eq!(hash_from_chunks([0x0f0f, 0x0f0f, 0x0f0f, 0x0f0f]), hb);
    }
}
