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

/// PReLU and f16 in registers; each lane stores its channel pairs (a quad of lanes fills 16
/// contiguous bytes of a pixel).
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_registers(
    acc: &Sequence<Array<Float2>>,
    slope: &Array<Float2>,
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
    let place = tile_place(width, height, tile_y, batched);

    let mut halo = SharedMemory::<Half8>::new(comptime![halo_vectors(tile_y, cin, pad)]);
    let mut staged = SharedMemory::<Half8>::new(comptime![2 * buffer]);
    // `ready_even` (`ready_odd`) completes a phase when the copies into buffer 0 (1) have landed
    // and every unit has arrived, that is, has finished multiplying the tap before.
    let ready_even = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let ready_odd = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    sync_cube();

    load_halo(
        input, &mut halo, place, width, height, cin, pad, tile_y, units, true,
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
    store_registers(&acc, slope, output, place, width, height, cout, rows, prelu);
}
