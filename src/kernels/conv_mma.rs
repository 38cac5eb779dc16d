//! `conv3x3_mma`: the tensor-core 3×3 convolution of `conv::conv3x3_tiles_async` with its
//! fragments in registers, through PTX `mma.sync` (m16n8k16) and `ldmatrix` (CUDA from sm_80).
//! Holding the sums itself, a plane starts each at the layer's bias and finishes it in
//! registers (PReLU, f16, stored straight to global memory), with no f32 stage in shared memory;
//! the weights are staged with swizzled rows, so that its `ldmatrix` reads have no bank conflicts.

use cubecl::cmma::{MatrixIdent, MmaDefinition};
use cubecl::prelude::barrier::Barrier;
use cubecl::prelude::*;
use half::f16;

use super::conv::{
    halo_vectors, load_halo, next_tap_weights, prelu_if, stage_weights, tile_place, Half8,
    TilePlace, TILE_X,
};

/// Two halves: one register of an `mma` operand, and the unit of the output's stores.
pub type Half2 = Vector<f16, Const<2>>;
/// Two floats: half an accumulator fragment's registers, and a channel pair of bias or slopes.
pub type Float2 = Vector<f32, Const<2>>;

#[cube]
fn definition() -> MmaDefinition<f16, f16, f32> {
    MmaDefinition::<f16, f16, f32>::new(16usize, 8usize, 16usize)
}

/// One 16-pixel × 8-channel accumulator per (row, 16-pixel block, 8 channels), each starting at
/// the bias. A lane holds channels 2t and 2t + 1 (t = lane % 4) of pixels g and g + 8
/// (g = lane / 4).
#[cube]
fn bias_accumulators(
    bias: &Array<Float2>,
    lane: usize,
    #[comptime] rows: usize,
    #[comptime] cout: usize,
) -> Sequence<Array<Float2>> {
    let blocks = comptime![rows * TILE_X as usize / 16];
    let n8 = comptime![cout / 8];
    let mut acc = Sequence::<Array<Float2>>::new();
    #[unroll]
    for _ in 0..blocks {
        #[unroll]
        for nb in 0..n8 {
            let b = bias[nb * 4 + lane % 4];
            let mut c = Array::<Float2>::new(2usize);
            c[0] = b;
            c[1] = b;
            acc.push(c);
        }
    }
    acc
}

/// Adds tap (`dy`, `dx`) to the plane's sums. `ldmatrix` x4 loads a 16×16 operand: lane l gives
/// the address of row l % 16 (a pixel of the halo for A, an input channel of the staged weights
/// for B), 8-channel half l / 16. One B load holds two 8-channel blocks.
#[cube]
#[allow(clippy::too_many_arguments)]
fn multiply_tap_mma(
    halo: &SharedMemory<Half8>,
    weights: &Slice<Half8>,
    acc: &mut Sequence<Array<Float2>>,
    plane: usize,
    lane: usize,
    dy: usize,
    dx: usize,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] pad: usize,
    #[comptime] rows: usize,
) {
    let def = definition();
    let pixel_vectors = comptime![(cin + pad) / 8];
    let halo_w = comptime![TILE_X as usize + 2];
    let m_frags = comptime![TILE_X as usize / 16];
    let n_frags = comptime![cout / 16];
    let k_frags = comptime![cin / 16];
    let row = lane % 16;
    let half = lane / 16;
    let swizzled_half = half ^ ((row / 4) % 2);
    #[unroll]
    for kf in 0..k_frags {
        let mut a = Sequence::<Array<Half2>>::new();
        #[unroll]
        for r in 0..rows {
            #[unroll]
            for mf in 0..m_frags {
                let y = plane * rows + r + dy;
                let at = (y * halo_w + mf * 16 + row + dx) * pixel_vectors + kf * 2 + half;
                a.push(def.load_matrix::<Half8, Const<2>>(
                    &halo.slice(at, at + 1),
                    MatrixIdent::A,
                    4usize,
                    false,
                ));
            }
        }
        #[unroll]
        for nf in 0..n_frags {
            let at = (kf * n_frags + nf) * 32 + row * 2 + swizzled_half;
            let b4 = def.load_matrix::<Half8, Const<2>>(
                &weights.slice(at, at + 1),
                MatrixIdent::B,
                4usize,
                true,
            );
            #[unroll]
            for j in 0..2usize {
                let mut b = Array::<Half2>::new(2usize);
                b[0] = b4[2 * j];
                b[1] = b4[2 * j + 1];
                #[unroll]
                for m in 0..rows * m_frags {
                    def.execute_inplace(a.index(m), &b, acc.index_mut((m * n_frags + nf) * 2 + j));
                }
            }
        }
    }
}

/// The layer's PReLU slopes (channel pairs), copied into shared memory at the start so that the
/// epilogue reads them there: read from global memory where they are used, they stalled it.
#[cube]
fn stage_slopes(
    slope: &Array<Float2>,
    slopes: &mut SharedMemory<Float2>,
    unit: usize,
    #[comptime] cout: usize,
    #[comptime] units: usize,
) {
    #[unroll]
    for i in 0..comptime![(cout / 2).div_ceil(units)] {
        let pair = i * units + unit;
        if pair < cout / 2 {
            slopes[pair] = slope[pair];
        }
    }
}

/// PReLU and f16 in registers; each lane stores its channel pairs (a quad of lanes fills 16
/// contiguous bytes of a pixel).
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_registers(
    acc: &Sequence<Array<Float2>>,
    slope: &SharedMemory<Float2>,
    output: &mut Array<Half2>,
    place: TilePlace,
    width: u32,
    height: u32,
    #[comptime] cout: usize,
    #[comptime] rows: usize,
    #[comptime] prelu: bool,
) {
    let m_frags = comptime![TILE_X as usize / 16];
    let n8 = comptime![cout / 8];
    let pairs = comptime![cout / 2];
    let w = width as usize;
    let g = place.lane / 4;
    let t = place.lane % 4;
    #[unroll]
    for r in 0..rows {
        let y = place.y0 as usize + place.plane * rows + r;
        #[unroll]
        for mf in 0..m_frags {
            #[unroll]
            for i in 0..2usize {
                let x = place.x0 as usize + mf * 16 + g + i * 8;
                if x < w && y < height as usize {
                    let pixel = place.frame_start + y * w + x;
                    #[unroll]
                    for nb in 0..n8 {
                        let pair = nb * 4 + t;
                        let sums = acc.index((r * m_frags + mf) * n8 + nb)[i];
                        let s = slope[pair];
                        let mut out = Half2::empty();
                        #[unroll]
                        for j in 0..2usize {
                            out[j] = f16::cast_from(prelu_if(sums[j], s[j], prelu));
                        }
                        output[pixel * pairs + pair] = out;
                    }
                }
            }
        }
    }
}

/// Tensor-core 3×3 convolution with register fragments (see the module comment): the cube and
/// its copies as in `conv3x3_tiles_async` (halo and each tap's weights by `cp.async`, two weight
/// buffers, one barrier a tap), weights as packed, swizzled operands. `unroll_taps` unrolls the
/// nine taps, so that each tap's buffer and barrier are known when it is compiled.
#[cube(launch_unchecked)]
pub fn conv3x3_mma(
    input: &Array<Half8>,
    weight: &Array<Half8>,
    bias: &Array<Float2>,
    slope: &Array<Float2>,
    output: &mut Array<Half2>,
    height: u32,
    width: u32,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] rows: usize,
    #[comptime] planes: usize,
    #[comptime] unroll_taps: bool,
    #[comptime] pad: usize,
    #[comptime] prelu: bool,
    #[comptime] batched: bool,
) {
    let tile_y = comptime![planes * rows];
    let units = comptime![32 * planes];
    let buffer = comptime![cin / 16 * cout / 16 * 32];
    let place = tile_place(width, height, 0u32, 0u32, tile_y, batched);

    let mut halo = SharedMemory::<Half8>::new(comptime![halo_vectors(tile_y, cin, pad)]);
    let mut staged = SharedMemory::<Half8>::new(comptime![2 * buffer]);
    // `ready_even` (`ready_odd`) completes a phase when the copies into buffer 0 (1) have landed
    // and every unit has arrived, that is, has finished multiplying the tap before.
    let ready_even = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let ready_odd = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    sync_cube();

    load_halo(
        input, &mut halo, place, width, height, cin, pad, tile_y, units,
    );
    stage_weights(
        weight,
        &mut staged,
        0usize,
        0usize,
        place.unit,
        cin,
        cout,
        16usize,
        units,
        true,
        true,
    );
    ready_even.commit_copy_async();
    let mut slopes = SharedMemory::<Float2>::new(comptime![cout / 2]);
    stage_slopes(slope, &mut slopes, place.unit, cout, units);
    let mut acc = bias_accumulators(bias, place.lane, rows, cout);

    #[unroll(unroll_taps)]
    for tap in 0..9usize {
        let start = next_tap_weights(
            weight,
            &mut staged,
            &ready_even,
            &ready_odd,
            tap,
            place.unit,
            cin,
            cout,
            16usize,
            units,
            true,
        );
        multiply_tap_mma(
            &halo,
            &staged.slice(start, start + buffer),
            &mut acc,
            place.plane,
            place.lane,
            tap / 3,
            tap % 3,
            cin,
            cout,
            pad,
            rows,
        );
    }
    store_registers(
        &acc, &slopes, output, place, width, height, cout, rows, prelu,
    );
}

/// The weights of `conv::fragment_weights` in the order `conv3x3_mma` stages them (rows 4-7 and
/// 12-15 of each operand with their halves swapped), so that one linear copy of a tap's weights
/// lands them as `staged_vector(.., swizzled)` places them.
pub fn swizzled_operands(fragments: &[f32]) -> Vec<f32> {
    let mut out = fragments.to_vec();
    for (i, row) in out.chunks_exact_mut(16).enumerate() {
        if (i % 16 / 4) % 2 == 1 {
            row.rotate_left(8);
        }
    }
    out
}

/// Halves a row of the weights' tensor map: a tap's weights are `cin × cout / WEIGHT_ROW` rows
/// of it, so that one box holds a tap (a box is at most 256 elements a side).
pub const WEIGHT_ROW: usize = 128;

/// Starts copying tap `tap`'s weights (`swizzled_operands`; one box of the weights' tensor map,
/// tap × row × `WEIGHT_ROW`) into `staged` from `start`, counted in bytes by `ready`. One unit
/// calls it.
#[cube]
fn copy_tap_weights(
    weights: &TensorMap<f16, Tiled>,
    staged: &mut SharedMemory<Half8>,
    ready: &Barrier,
    tap: usize,
    start: usize,
    #[comptime] buffer: usize,
) {
    ready.expect_tx(comptime![buffer as u32 * 16]);
    ready.tma_load_3d(
        weights,
        &mut staged.slice_mut(start, start + buffer),
        tap as i32,
        0i32,
        0i32,
    );
}

/// One tap's turn in `conv3x3_mma_tma`, as `conv::next_tap_weights` is in `conv3x3_mma`:
/// waits until tap `tap`'s weights have landed in buffer `tap % 2` and every unit has finished
/// the tap before, has unit 0 box tap `tap + 1`'s weights into the other buffer, which is now
/// free, and returns where tap `tap`'s buffer starts.
#[cube]
fn next_tap_box(
    weight: &TensorMap<f16, Tiled>,
    staged: &mut SharedMemory<Half8>,
    ready_even: &Barrier,
    ready_odd: &Barrier,
    tap: usize,
    unit: usize,
    #[comptime] buffer: usize,
) -> usize {
    let current = tap % 2;
    let next = (1 - current) * buffer;
    if current == 0 {
        ready_even.arrive_and_wait();
        if tap < 8 && unit == 0 {
            copy_tap_weights(weight, staged, ready_odd, tap + 1, next, buffer);
        }
    } else {
        ready_odd.arrive_and_wait();
        if unit == 0 {
            copy_tap_weights(weight, staged, ready_even, tap + 1, next, buffer);
        }
    }
    current * buffer
}

/// `conv3x3_mma` with its copies made by Hopper's tensor memory accelerator: one unit copies
/// the halo as one box of the input's tensor map (frame, row, column, channel; zeros outside
/// the picture, and in the `pad` channels past `cin`, which the box reads beyond the tensor's
/// last channel) and each tap's weights (in `swizzled_operands` order) as one box of theirs,
/// instead of every unit copying 16 bytes at a time with its own address arithmetic and bounds
/// checks.
#[cube(launch_unchecked)]
pub fn conv3x3_mma_tma(
    input: &TensorMap<f16, Tiled>,
    weight: &TensorMap<f16, Tiled>,
    bias: &Array<Float2>,
    slope: &Array<Float2>,
    output: &mut Array<Half2>,
    height: u32,
    width: u32,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] rows: usize,
    #[comptime] planes: usize,
    #[comptime] unroll_taps: bool,
    #[comptime] pad: usize,
    #[comptime] prelu: bool,
    #[comptime] batched: bool,
) {
    let tile_y = comptime![planes * rows];
    let units = comptime![32 * planes];
    let buffer = comptime![cin / 16 * cout / 16 * 32];
    let halo_size = comptime![halo_vectors(tile_y, cin, pad)];
    let place = tile_place(width, height, 0u32, 0u32, tile_y, batched);
    let mut frame = 0i32;
    if comptime![batched] {
        frame = CUBE_POS_Z as i32;
    }

    let mut halo = SharedMemory::<Half8>::new_aligned(halo_size, 128usize);
    let mut staged = SharedMemory::<Half8>::new_aligned(comptime![2 * buffer], 128usize);
    // `ready_even` (`ready_odd`) completes a phase when the bytes copied into buffer 0 (1) have
    // landed and every unit has arrived, that is, has finished multiplying the tap before.
    let ready_even = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let ready_odd = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    sync_async_proxy_shared();

    if place.unit == 0 {
        ready_even.expect_tx(comptime![halo_size as u32 * 16]);
        ready_even.tma_load_4d(
            input,
            &mut halo.to_slice_mut(),
            frame,
            place.y0 - 1,
            place.x0 - 1,
            0i32,
        );
        copy_tap_weights(weight, &mut staged, &ready_even, 0usize, 0usize, buffer);
    }
    // Seen by every unit once the first tap's barrier completes.
    let mut slopes = SharedMemory::<Float2>::new(comptime![cout / 2]);
    stage_slopes(slope, &mut slopes, place.unit, cout, units);
    let mut acc = bias_accumulators(bias, place.lane, rows, cout);

    #[unroll(unroll_taps)]
    for tap in 0..9usize {
        let start = next_tap_box(
            weight,
            &mut staged,
            &ready_even,
            &ready_odd,
            tap,
            place.unit,
            buffer,
        );
        multiply_tap_mma(
            &halo,
            &staged.slice(start, start + buffer),
            &mut acc,
            place.plane,
            place.lane,
            tap / 3,
            tap % 3,
            cin,
            cout,
            pad,
            rows,
        );
    }
    store_registers(
        &acc, &slopes, output, place, width, height, cout, rows, prelu,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operand `o`, row `r`, half `h` of fragment-order weights must land where
    /// `staged_vector(.., swizzled)` stages it: same operand and row, half `h ^ (r / 4 % 2)`.
    #[test]
    fn swizzled_operands_place_halves_as_staged() {
        let (cin, cout) = (32, 48);
        let fragments: Vec<f32> = (0..9 * cin * cout).map(|i| i as f32).collect();
        let staged = swizzled_operands(&fragments);
        for operand in 0..9 * (cin / 16) * (cout / 16) {
            for row in 0..16 {
                for half in 0..2 {
                    let from = operand * 256 + row * 16 + half * 8;
                    let to = operand * 256 + row * 16 + (half ^ (row / 4 % 2)) * 8;
                    assert_eq!(fragments[from..from + 8], staged[to..to + 8]);
                }
            }
        }
    }
}
