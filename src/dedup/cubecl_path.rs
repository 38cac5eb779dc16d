//! The features of `features.rs` as two CubeCL kernels, for the cuda backend: one launch sums
//! the cells, one hashes them, and one read-back returns both. burn's integer tensor ops take
//! about thirty launches and their own read-backs for the same numbers.

use cubecl::prelude::*;
use cubecl::server::Handle;
use cubecl::{calculate_cube_count_elemwise, CubeElement};

use super::features::{hash_from_chunks, Features, Packed};

/// One unit per word of a row pair: the pair of 2x2 cells under it (left in the low 16 bits).
#[cube(launch_unchecked)]
fn cells(frame: &Array<u32>, cells: &mut Array<u32>, words_per_row: u32, rows: u32) {
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
        cells[index] = left | (right << 16);
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

/// One cube of 64 units: unit k sums region k of the 8x8 grid; the hash's four 16-bit chunks are
/// written after the cells (`chunks_at`), so that one read-back returns everything.
#[cube(launch_unchecked)]
fn hash(cells: &mut Array<u32>, pairs_per_row: u32, cell_rows: u32, chunks_at: u32) {
    let k = UNIT_POS as usize;
    let wq = pairs_per_row as usize;
    let ch = cell_rows as usize;
    let (rh, rw) = (ch / 8, wq / 8);
    let (i, j) = (k / 8, k % 8);
    let mut regions = SharedMemory::<u32>::new(64usize);
    let mut sum = 0u32;
    for row in i * rh..(i + 1) * rh {
        for pair in j * rw..(j + 1) * rw {
            let r = cells[row * wq + pair];
            let g = cells[(ch + row) * wq + pair];
            let b = cells[(2 * ch + row) * wq + pair];
            sum += luma(r, g, b, 0) + luma(r, g, b, 16);
        }
    }
    regions[k] = sum;
    sync_cube();
    if k < 4 {
        let mut total = 0u32;
        for n in 0..64usize {
            total += regions[n];
        }
        let mean = total / 64;
        let mut chunk = 0u32;
        for bit in 0..16usize {
            if regions[16 * k + bit] > mean {
                chunk |= 1u32 << bit as u32;
            }
        }
        cells[chunks_at as usize + k] = chunk;
    }
}

/// Computes a frame's features on `client`'s device.
pub fn features<R: Runtime>(client: &ComputeClient<R>, frame: &Packed) -> Features {
    let input = client.create_from_slice(u32::as_bytes(&frame.words));
    features_of_words(client, input, frame.words_per_row, frame.rows)
}

/// As `features`, from `Packed`'s words already on the device (`words_per_row` x `rows` per
/// plane), as `video::device_frames` leaves them.
pub fn features_of_words<R: Runtime>(
    client: &ComputeClient<R>,
    input: Handle,
    words_per_row: usize,
    rows: usize,
) -> Features {
    let frame = Packed {
        words: Vec::new(),
        words_per_row,
        rows,
    };
    let (wq, ch) = (frame.words_per_row, frame.cell_rows());
    let count = 3 * ch * wq;
    let output = client.empty((count + 4) * size_of::<u32>());
    let cube = CubeDim::new_1d(256);
    // Safety: the lengths are those of the buffers just created; each kernel bounds its indices.
    unsafe {
        cells::launch_unchecked::<R>(
            client,
            calculate_cube_count_elemwise(client, count, cube),
            cube,
            ArrayArg::from_raw_parts(input, 3 * rows * wq),
            ArrayArg::from_raw_parts(output.clone(), count + 4),
            wq as u32,
            frame.rows as u32,
        );
        if frame.has_hash() {
            hash::launch_unchecked::<R>(
                client,
                CubeCount::Static(1, 1, 1),
                CubeDim::new_1d(64),
                ArrayArg::from_raw_parts(output.clone(), count + 4),
                wq as u32,
                ch as u32,
                count as u32,
            );
        }
    }
    let bytes = client
        .read_one(output)
        .expect("reading duplicate-frame features back from the device");
    let mut values: Vec<u32> = u32::from_bytes(&bytes).to_vec();
    let chunks = values.split_off(count);
    let hash = if frame.has_hash() {
        hash_from_chunks([chunks[0], chunks[1], chunks[2], chunks[3]])
    } else {
        0
    };
    Features {
        pairs_per_row: wq,
        cell_rows: ch,
        cells: values,
        hash,
    }
}
