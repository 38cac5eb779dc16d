//! The features and comparisons of `features.rs` as CubeCL kernels (cuda; tested on wgpu too).
//! Kept frames' cells stay on the device, in a ring of slots: per frame, one launch sums the new
//! frame's cells into a free slot, one sums the hash's regions, one compares the cells with every
//! kept slot, and one read-back returns the region sums and two numbers per cube and kept frame,
//! never the cells.

use cubecl::prelude::*;
use cubecl::server::Handle;
use cubecl::{calculate_cube_count_elemwise, CubeElement};

use super::decide::{Decision, Look};
use super::features::{Change, Features, Packed, REGIONS};
use super::slots::Slots;

/// One unit per word of a row pair: the pair of 2x2 cells under it (left in the low 16 bits),
/// written at `at` in `ring`.
#[cube(launch_unchecked)]
fn cells(frame: &Array<u32>, ring: &mut Array<u32>, words_per_row: u32, rows: u32, at: u32) {
    let index = ABSOLUTE_POS;
    let wq = words_per_row as usize;
    let cell_rows = rows as usize / 2;
    if index < 3 * cell_rows * wq {
        let pair = index % wq;
        let row = (index / wq) % cell_rows;
        let plane = index / (wq * cell_rows);
        let top_at = (plane * rows as usize + 2 * row) * wq + pair;
        let top = frame[top_at];
        let bottom = frame[top_at + wq];
        let left = byte(top, 0u32) + byte(top, 1u32) + byte(bottom, 0u32) + byte(bottom, 1u32);
        let right = byte(top, 2u32) + byte(top, 3u32) + byte(bottom, 2u32) + byte(bottom, 3u32);
        ring[at as usize + index] = left | (right << 16);
    }
}

#[cube]
fn byte(word: u32, #[comptime] i: u32) -> u32 {
    (word >> (8 * i)) & 255
}

#[cube]
fn luma(r: u32, g: u32, b: u32, shift: u32) -> u32 {
    let red = (r >> shift) & 65535;
    let green = (g >> shift) & 65535;
    let blue = (b >> shift) & 65535;
    (red + 2 * green + blue) / 16
}

/// One cube per region k of the 8x8 grid over the cells at `at`: its units share the region's
/// cell pairs, and the region's luma sum goes to `result[k]`.
#[cube(launch_unchecked)]
#[allow(clippy::manual_div_ceil)] // CubeCL expands arithmetic, not `div_ceil`.
fn regions(
    ring: &Array<u32>,
    result: &mut Array<u32>,
    pairs_per_row: u32,
    cell_rows: u32,
    at: u32,
) {
    let k = CUBE_POS_X as usize;
    let u = UNIT_POS as usize;
    let (wq, ch) = (pairs_per_row as usize, cell_rows as usize);
    let base = at as usize;
    let (rh, rw) = (ch / 8, wq / 8);
    let (i, j) = (k / 8, k % 8);
    let n = rh * rw;
    let group = GROUP as usize;
    let mut sum = 0u32;
    for step in 0..(n + group - 1) / group {
        let item = step * group + u;
        if item < n {
            let row = i * rh + item / rw;
            let pair = j * rw + item % rw;
            let r = ring[base + row * wq + pair];
            let g = ring[base + (ch + row) * wq + pair];
            let b = ring[base + (2 * ch + row) * wq + pair];
            sum += luma(r, g, b, 0) + luma(r, g, b, 16);
        }
    }
    let mut sums = SharedMemory::<u32>::new(GROUP as usize);
    sums[u] = sum;
    sync_cube();
    add_upper(&mut sums, u, 128usize);
    add_upper(&mut sums, u, 64usize);
    add_upper(&mut sums, u, 32usize);
    add_upper(&mut sums, u, 16usize);
    add_upper(&mut sums, u, 8usize);
    add_upper(&mut sums, u, 4usize);
    add_upper(&mut sums, u, 2usize);
    add_upper(&mut sums, u, 1usize);
    if u == 0 {
        result[k] = sums[0];
    }
}

/// One step of a cube's sum: the lower `stride` units add in the upper ones' values.
#[cube]
fn add_upper(sums: &mut SharedMemory<u32>, u: usize, #[comptime] stride: usize) {
    if u < stride {
        sums[u] += sums[u + stride];
    }
    sync_cube();
}

const GROUP: u32 = 256;

#[cube]
fn distance(a: u32, b: u32) -> u32 {
    let mut high = a;
    let mut low = b;
    if b > a {
        high = b;
        low = a;
    }
    high - low
}

/// One unit per 8x8 block, one cube row per slot (`CUBE_POS_Z`): the block's largest cell change
/// against the new frame's cells, and whether its summed change in some plane exceeds
/// `mean_limit`. Each cube writes its largest change and its count of changed blocks after the
/// region sums in `result`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil)] // CubeCL expands arithmetic, not `div_ceil`.
fn compare(
    ring: &Array<u32>,
    result: &mut Array<u32>,
    pairs_per_row: u32,
    cell_rows: u32,
    slot_words: u32,
    new_slot: u32,
    mean_limit: u32,
) {
    let (wq, ch) = (pairs_per_row as usize, cell_rows as usize);
    let (bw, bh) = ((wq + 1) / 2, (ch + 3) / 4);
    let u = UNIT_POS as usize;
    let block = CUBE_POS_X as usize * GROUP as usize + u;
    let kept_at = CUBE_POS_Z as usize * slot_words as usize;
    let new_at = new_slot as usize * slot_words as usize;
    let mut peak = 0u32;
    let mut changed = 0u32;
    if block < bw * bh {
        let (bx, by) = (block % bw, block / bw);
        for plane in 0..3usize {
            let mut sum = 0u32;
            for r in 0..4usize {
                let row = 4 * by + r;
                for p in 0..2usize {
                    let pair = 2 * bx + p;
                    if row < ch && pair < wq {
                        let at = (plane * ch + row) * wq + pair;
                        let (x, y) = (ring[kept_at + at], ring[new_at + at]);
                        let low = distance(x & 65535, y & 65535);
                        let high = distance(x >> 16, y >> 16);
                        if low > peak {
                            peak = low;
                        }
                        if high > peak {
                            peak = high;
                        }
                        sum += low + high;
                    }
                }
            }
            if sum > mean_limit {
                changed = 1;
            }
        }
    }
    let mut peaks = SharedMemory::<u32>::new(GROUP as usize);
    let mut counts = SharedMemory::<u32>::new(GROUP as usize);
    peaks[u] = peak;
    counts[u] = changed;
    sync_cube();
    fold(&mut peaks, &mut counts, u, 128usize);
    fold(&mut peaks, &mut counts, u, 64usize);
    fold(&mut peaks, &mut counts, u, 32usize);
    fold(&mut peaks, &mut counts, u, 16usize);
    fold(&mut peaks, &mut counts, u, 8usize);
    fold(&mut peaks, &mut counts, u, 4usize);
    fold(&mut peaks, &mut counts, u, 2usize);
    fold(&mut peaks, &mut counts, u, 1usize);
    if u == 0 {
        let out = REGIONS + (CUBE_POS_Z as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize) * 2;
        result[out] = peaks[0];
        result[out + 1] = counts[0];
    }
}

/// One step of the cube's reduction: the lower `stride` units take in the upper ones' results.
#[cube]
fn fold(
    peaks: &mut SharedMemory<u32>,
    counts: &mut SharedMemory<u32>,
    u: usize,
    #[comptime] stride: usize,
) {
    if u < stride {
        if peaks[u + stride] > peaks[u] {
            peaks[u] = peaks[u + stride];
        }
        counts[u] += counts[u + stride];
    }
    sync_cube();
}

/// Kept frames' cells on one device, and the kernels that measure new frames against them.
pub struct DeviceCells<R: Runtime> {
    client: ComputeClient<R>,
    mean_limit: u32,
    slots: Slots,
    ring: Option<Ring>,
}

/// Slots for frames of one size.
struct Ring {
    layout: (usize, usize),
    cells: Handle,
}

impl<R: Runtime> DeviceCells<R> {
    /// Room for `window` kept frames; `mean_limit` as `Thresholds::mean_limit`.
    pub fn new(client: ComputeClient<R>, window: usize, mean_limit: u32) -> Self {
        Self {
            client,
            mean_limit,
            slots: Slots::new(window),
            ring: None,
        }
    }

    pub fn look(&mut self, frame: &Packed) -> Look {
        let words = self.client.create_from_slice(u32::as_bytes(&frame.words));
        self.look_at_words(words, frame.words_per_row, frame.rows)
    }

    /// As `look`, from `Packed`'s words already on the device (`words_per_row` x `rows` per
    /// plane), as `video::device_frames` leaves them.
    pub fn look_at_words(&mut self, words: Handle, words_per_row: usize, rows: usize) -> Look {
        let (wq, ch) = (words_per_row, rows / 2);
        let slot_words = 3 * ch * wq;
        if self.ring.as_ref().map(|r| r.layout) != Some((wq, rows)) {
            self.slots.clear();
            self.ring = Some(Ring {
                layout: (wq, rows),
                cells: self.client.empty(self.slots.count() * slot_words * 4),
            });
        }
        let ring = self.ring.as_ref().expect("made just above").cells.clone();
        let ring_words = self.slots.count() * slot_words;
        let slot = self.slots.look();
        let kept: Vec<(usize, u64)> = self.slots.kept().collect();
        let (bw, bh) = Change::blocks_of(wq, ch);
        let cubes = (bw * bh).div_ceil(GROUP as usize);
        let compared = kept.iter().map(|&(s, _)| s + 1).max().unwrap_or(0);
        let result_words = REGIONS + self.slots.count() * cubes * 2;
        let result = self.client.empty(result_words * 4);
        let has_hash = ch >= 8 && wq >= 8;
        let cube = CubeDim::new_1d(256);
        // Safety: the lengths are those of the buffers made here; each kernel bounds its indices
        // (`compare` reads slots below `compared` only).
        unsafe {
            cells::launch_unchecked::<R>(
                &self.client,
                calculate_cube_count_elemwise(&self.client, slot_words, cube),
                cube,
                ArrayArg::from_raw_parts(words, 3 * rows * wq),
                ArrayArg::from_raw_parts(ring.clone(), ring_words),
                wq as u32,
                rows as u32,
                (slot * slot_words) as u32,
            );
            if has_hash {
                regions::launch_unchecked::<R>(
                    &self.client,
                    CubeCount::Static(REGIONS as u32, 1, 1),
                    CubeDim::new_1d(GROUP),
                    ArrayArg::from_raw_parts(ring.clone(), ring_words),
                    ArrayArg::from_raw_parts(result.clone(), result_words),
                    wq as u32,
                    ch as u32,
                    (slot * slot_words) as u32,
                );
            }
            if compared > 0 {
                compare::launch_unchecked::<R>(
                    &self.client,
                    CubeCount::Static(cubes as u32, 1, compared as u32),
                    CubeDim::new_1d(GROUP),
                    ArrayArg::from_raw_parts(ring, ring_words),
                    ArrayArg::from_raw_parts(result.clone(), result_words),
                    wq as u32,
                    ch as u32,
                    slot_words as u32,
                    slot as u32,
                    self.mean_limit,
                );
            }
        }
        let bytes = self
            .client
            .read_one(result)
            .expect("reading duplicate-frame measures back from the device");
        Look::from_read_back(u32::from_bytes(&bytes), has_hash, kept, cubes, bw * bh)
    }

    pub fn settle(&mut self, index: u64, decision: &Decision) {
        self.slots.settle(index, decision);
    }

    /// The cells of `slot`, read back (for tests).
    fn cells_of(&self, slot: usize) -> Vec<u32> {
        let ring = self.ring.as_ref().expect("a frame was looked at");
        let (wq, rows) = ring.layout;
        let slot_words = 3 * (rows / 2) * wq;
        let bytes = self
            .client
            .read_one(ring.cells.clone())
            .expect("reading cells back from the device");
        u32::from_bytes(&bytes)[slot * slot_words..(slot + 1) * slot_words].to_vec()
    }
}

/// A frame's features computed by these kernels and read back: what tests compare with the
/// definition.
pub fn features<R: Runtime>(client: &ComputeClient<R>, frame: &Packed) -> Features {
    let mut cells = DeviceCells::new(client.clone(), 1, 0);
    let look = cells.look(frame);
    Features {
        pairs_per_row: frame.words_per_row,
        cell_rows: frame.cell_rows(),
        cells: cells.cells_of(0),
        hash: look.hash,
    }
}
