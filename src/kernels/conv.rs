//! The SRVGG network's kernels in CubeCL, written once for CUDA and wgpu. Activations are
//! channels-last (height × width × channels) in the storage float `F`; every sum is accumulated in
//! f32. Weights are laid out tap × in × out, so that one tap's weights are an in × out matrix.
//!
//! - `head`: the first 3×3 convolution, read straight from the planar f32 picture, + PReLU.
//! - `conv3x3_tiles`: a 3×3 convolution + bias + PReLU on tensor cores (cooperative matrices).
//!   A cube of planes computes a few rows × 32 pixels × every output channel. The input tile and
//!   its one-pixel halo sit in shared memory; because a pixel's channels are contiguous, the
//!   16-pixel × 16-channel operand for tap (dy, dx) is that tile read from a shifted start, so no
//!   im2col buffer exists. Each tap's weights are staged in shared memory by the whole cube, so
//!   that its planes share one coalesced read of them. Over Vulkan a cube computes several tiles
//!   down a column, its halo a ring of rows.
//! - `conv3x3_tiles_async`: the same on CUDA from sm_80, with asynchronous copies (`cp.async`):
//!   the next tap's weights land in a second buffer while this tap multiplies. `conv_mma` has
//!   its successor there, with the fragments in registers.
//! - `conv3x3_direct`: the same convolution for devices without cooperative matrices.
//! - `tail`: pixel shuffle + nearest-neighbour base + clamp, into 8-bit RGB0 or f32 planes.
//!
//! Each kernel takes a batch of `frames` pictures stored one after another, so that small frames
//! still fill the device. `batched` is comptime: a single picture compiles without the per-frame
//! offsets, which cost the tensor-core convolution 28% over Vulkan (BENCHMARKS.md, lease Z).

use cubecl::prelude::barrier::{copy_async, copy_async_checked, Barrier};
use cubecl::prelude::*;
use half::f16;

/// Pixels per row of a `conv3x3_tiles` cube.
pub const TILE_X: u32 = 32;
/// The first layer's outputs must be a multiple of this: `head` stores four at a time.
pub const HEAD_QUAD: usize = 4;

#[cube]
pub(super) fn prelu_if(value: f32, slope: f32, #[comptime] prelu: bool) -> f32 {
    if comptime![prelu] {
        if value < 0.0 {
            value * slope
        } else {
            value
        }
    } else {
        value
    }
}

/// How `head` divides the first layer of `cout` outputs, as (`split`, `px`): each unit sums `px`
/// neighbouring pixels of a row for a quarter of their outputs where `cout` is a multiple of 16,
/// else for all. One weight loaded from shared memory then serves `px` sums.
pub fn head_units(cout: usize) -> (usize, usize) {
    let split = if cout.is_multiple_of(16) { 4 } else { 1 };
    (split, 4)
}

/// Four floats: the head's unit of weights, sums and stores.
type Quad<F> = Vector<F, Const<4>>;

/// The first layer, on plain arithmetic (it has only three input channels): a unit sums `px`
/// neighbouring pixels of a row for every `split`-th group of four outputs, so that each weight
/// it loads from shared memory serves `px` sums (one load per 4·px multiply-adds), and a
/// pixel's `split` units store its outputs side by side.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil)] // CubeCL expands arithmetic, not `div_ceil`.
pub fn head<F: Float>(
    input: &Array<f32>,
    weight: &Array<Quad<f32>>,
    bias: &Array<f32>,
    slope: &Array<f32>,
    output: &mut Array<Quad<F>>,
    height: u32,
    width: u32,
    frames: u32,
    padded_width: u32,
    padded_rows: u32,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] split: usize,
    #[comptime] px: usize,
    #[comptime] batched: bool,
    #[comptime] blocked: bool,
) {
    let quads = comptime![cout / 4];
    let mine = comptime![cout / 4 / split];
    let weight_quads = comptime![9 * cin * cout / 4];
    let mut weights = SharedMemory::<Quad<f32>>::new(weight_quads);
    let mut epilogue = SharedMemory::<f32>::new(comptime![2 * cout]);
    let mut i = UNIT_POS as usize;
    while i < weight_quads {
        weights[i] = weight[i];
        i += CUBE_DIM as usize;
    }
    let mut c = UNIT_POS as usize;
    while c < cout {
        epilogue[c] = bias[c];
        epilogue[cout + c] = slope[c];
        c += CUBE_DIM as usize;
    }
    sync_cube();

    let w = width as usize;
    let h = height as usize;
    let plane = w * h;
    let mut rows = h;
    if comptime![batched] {
        rows = h * frames as usize;
    }
    let group = ABSOLUTE_POS % split;
    let block = ABSOLUTE_POS / split;
    let blocks_per_row = (w + px - 1) / px;
    if block < blocks_per_row * rows {
        let row = block / blocks_per_row;
        let x0 = (block % blocks_per_row * px) as i32;
        // A single picture skips the per-frame arithmetic.
        let mut y = row;
        let mut frame = 0usize;
        let mut first_plane = 0usize;
        let mut first_pixel = 0usize;
        if comptime![batched] {
            y = row % h;
            frame = row / h;
            first_plane = frame * cin * plane;
            first_pixel = frame * plane;
        }
        let y = y as i32;
        let mut acc = Array::<Quad<f32>>::new(comptime![px * mine]);
        #[unroll]
        for k in 0..comptime![px * mine] {
            acc[k] = Quad::<f32>::new(0.0);
        }
        #[unroll]
        for tap in 0..9usize {
            let sy = y + (tap / 3) as i32 - 1;
            if sy >= 0 && sy < height as i32 {
                #[unroll]
                for ci in 0..cin {
                    let row_w = (tap * cin + ci) * quads + group;
                    let mut wq = Array::<Quad<f32>>::new(mine);
                    #[unroll]
                    for k in 0..mine {
                        wq[k] = weights[row_w + k * split];
                    }
                    #[unroll]
                    for p in 0..px {
                        let sx = x0 + p as i32 + (tap % 3) as i32 - 1;
                        if sx >= 0 && sx < width as i32 {
                            let at = first_plane + ci * plane + sy as usize * w + sx as usize;
                            let v = Quad::<f32>::new(input[at]);
                            #[unroll]
                            for k in 0..mine {
                                acc[p * mine + k] += v * wq[k];
                            }
                        }
                    }
                }
            }
        }
        #[unroll]
        for p in 0..px {
            let x = x0 as usize + p;
            if x < w {
                let pixel = first_pixel + y as usize * w + x;
                #[unroll]
                for k in 0..mine {
                    let q = group + k * split;
                    let sums = acc[p * mine + k];
                    let mut out = Quad::<F>::empty();
                    #[unroll]
                    for j in 0..4usize {
                        let ch = q * 4 + j;
                        let value = sums[j] + epilogue[ch];
                        out[j] = F::cast_from(prelu_if(value, epilogue[cout + ch], true));
                    }
                    if comptime![blocked] {
                        let blocks = comptime![cout / 16];
                        let (xi, yi) = (x as i32, y);
                        let block =
                            blocked_index(frame, yi, xi, q / 4, blocks, padded_width, padded_rows);
                        output[block * 4 + q % 4] = out;
                        // Edge pixels zero the border beside them, corners included.
                        if xi == 0 || x == w - 1 || yi == 0 || yi == height as i32 - 1 {
                            #[unroll]
                            for n in 0..9usize {
                                let ny = yi + (n / 3) as i32 - 1;
                                let nx = xi + (n % 3) as i32 - 1;
                                if ny < 0 || ny >= height as i32 || nx < 0 || nx >= width as i32 {
                                    let border = blocked_index(
                                        frame,
                                        ny,
                                        nx,
                                        q / 4,
                                        blocks,
                                        padded_width,
                                        padded_rows,
                                    );
                                    output[border * 4 + q % 4] = Quad::<F>::new(F::new(0.0));
                                }
                            }
                        }
                    } else {
                        output[pixel * quads + q] = out;
                    }
                }
            }
        }
    }
}

/// One unit per (pixel, group of `group` output channels), straight from global memory.
#[cube(launch_unchecked)]
pub fn conv3x3_direct<F: Float>(
    input: &Array<F>,
    weight: &Array<F>,
    bias: &Array<f32>,
    slope: &Array<f32>,
    output: &mut Array<F>,
    height: u32,
    width: u32,
    frames: u32,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] group: usize,
    #[comptime] prelu: bool,
    #[comptime] batched: bool,
) {
    let w = width as usize;
    let h = height as usize;
    let groups = cout / group;
    let index = ABSOLUTE_POS;
    let mut units = w * h * groups;
    if comptime![batched] {
        units *= frames as usize;
    }
    if index < units {
        let first = (index % groups) * group;
        let pixel = index / groups;
        let mut frame_start = 0usize;
        let mut within = pixel;
        if comptime![batched] {
            frame_start = (pixel / (w * h)) * w * h;
            within = pixel % (w * h);
        }
        let x = (within % w) as i32;
        let y = (within / w) as i32;
        let mut acc = Array::<f32>::new(group);
        #[unroll]
        for j in 0..group {
            acc[j] = bias[first + j];
        }
        for tap in 0..9usize {
            let sx = x + (tap % 3) as i32 - 1;
            let sy = y + (tap / 3) as i32 - 1;
            if sx >= 0 && sx < width as i32 && sy >= 0 && sy < height as i32 {
                let at = (frame_start + sy as usize * w + sx as usize) * cin;
                let taps = tap * cin * cout + first;
                for ci in 0..cin {
                    let v = f32::cast_from(input[at + ci]);
                    let row = taps + ci * cout;
                    #[unroll]
                    for j in 0..group {
                        acc[j] += v * f32::cast_from(weight[row + j]);
                    }
                }
            }
        }
        let out = pixel * cout + first;
        #[unroll]
        for j in 0..group {
            output[out + j] = F::cast_from(prelu_if(acc[j], slope[first + j], prelu));
        }
    }
}

/// Eight halves: 16 bytes, the widest load and store a unit makes.
pub type Half8 = Vector<f16, Const<8>>;
type Float4 = Vector<f32, Const<4>>;

/// Where a cube of `conv3x3_tiles` works: its first pixel, its frame, and which unit this is.
#[derive(CubeType, Clone, Copy)]
pub(super) struct TilePlace {
    pub(super) x0: i32,
    pub(super) y0: i32,
    pub(super) frame_start: usize,
    /// The frame's index in a batch (0 for a single picture).
    pub(super) frame: usize,
    /// A channel-blocked activation buffer's row of pixels and a frame's rows
    /// (`BlockedLayout`), zero where activations are laid out pixel after pixel.
    pub(super) padded_width: u32,
    pub(super) padded_rows: u32,
    pub(super) plane: usize,
    pub(super) lane: usize,
    pub(super) unit: usize,
}

#[cube]
pub(super) fn tile_place(
    width: u32,
    height: u32,
    padded_width: u32,
    padded_rows: u32,
    #[comptime] tile_y: usize,
    #[comptime] batched: bool,
) -> TilePlace {
    // Frames of a batch follow each other; each has its own layer of cubes in z.
    let mut frame_start = 0usize;
    let mut frame = 0usize;
    if comptime![batched] {
        frame = CUBE_POS_Z as usize;
        frame_start = frame * width as usize * height as usize;
    }
    let plane = UNIT_POS_Y as usize;
    let lane = UNIT_POS_X as usize;
    TilePlace {
        x0: (CUBE_POS_X * TILE_X) as i32,
        y0: CUBE_POS_Y as i32 * tile_y as i32,
        frame_start,
        frame,
        padded_width,
        padded_rows,
        plane,
        lane,
        unit: plane * 32 + lane,
    }
}

/// `place` for the tile whose first row is `y0`, in the same column.
#[cube]
fn tile_at_row(place: TilePlace, y0: i32) -> TilePlace {
    TilePlace {
        x0: place.x0,
        y0,
        frame_start: place.frame_start,
        frame: place.frame,
        padded_width: place.padded_width,
        padded_rows: place.padded_rows,
        plane: place.plane,
        lane: place.lane,
        unit: place.unit,
    }
}

/// The tiles of a column a `conv3x3_tiles` cube computes, one below the other: the first, and
/// how many.
#[derive(CubeType, Clone, Copy)]
pub(super) struct RunOfTiles {
    pub(super) first: u32,
    pub(super) tiles: u32,
}

/// This cube's run (`ColumnRuns`): the `long_runs` cubes at the top of a column take `column`
/// tiles each, the cubes after them one tile each.
#[cube]
#[allow(clippy::manual_div_ceil)] // CubeCL expands arithmetic, not `div_ceil`.
fn run_of_tiles(
    height: u32,
    long_runs: u32,
    #[comptime] tile_y: usize,
    #[comptime] column: usize,
) -> RunOfTiles {
    let (rows, column) = comptime![(tile_y as u32, column as u32)];
    let down = (height + rows - 1) / rows;
    let index = CUBE_POS_Y;
    let mut first = index * column;
    let mut tiles = column.runtime();
    if index >= long_runs {
        first = long_runs * column + (index - long_runs);
        tiles = 1u32;
    }
    if tiles > down - first {
        tiles = down - first;
    }
    RunOfTiles { first, tiles }
}

/// Copies the cube's input tile and its one-pixel halo into shared memory with `cp.async`
/// copies (a zero-length source writes zeros, outside the picture), which a barrier must then
/// wait for. `conv3x3_tiles` loads its halo through `fetch_halo_rows` and `put_halo_rows`.
#[cube]
pub(super) fn load_halo(
    input: &Array<Half8>,
    halo: &mut SharedMemory<Half8>,
    place: TilePlace,
    width: u32,
    height: u32,
    #[comptime] cin: usize,
    #[comptime] pad: usize,
    #[comptime] tile_y: usize,
    #[comptime] units: usize,
) {
    let halo_pixels = comptime![(tile_y + 2) * (TILE_X as usize + 2)];
    let vectors = comptime![halo_pixels * cin / 8];
    let halves = comptime![8u32];
    #[unroll]
    for load in 0..comptime![vectors.div_ceil(units)] {
        let i = load * units + place.unit;
        if i < vectors {
            let v = halo_vector(i, place, width, height, cin, pad, 0usize);
            let len = usize::cast_from(v.inside);
            copy_async_checked(
                &input.slice(v.from, v.from + len),
                &mut halo.slice_mut(v.to, v.to + 1),
                halves,
            );
        }
    }
}

/// Where vector `i` of the halo from row `first_row` on lies in shared memory (`to`) and in
/// `input` (`from`, where `inside` the picture).
#[derive(CubeType, Clone, Copy)]
pub(super) struct HaloVector {
    to: usize,
    from: usize,
    inside: bool,
}

#[cube]
fn halo_vector(
    i: usize,
    place: TilePlace,
    width: u32,
    height: u32,
    #[comptime] cin: usize,
    #[comptime] pad: usize,
    #[comptime] first_row: usize,
) -> HaloVector {
    let halo_w = comptime![TILE_X as usize + 2];
    let vectors_in = comptime![cin / 8];
    let pixel_vectors = comptime![(cin + pad) / 8];
    let c = i % vectors_in;
    let pixel = i / vectors_in + comptime![first_row * halo_w];
    let sx = place.x0 + (pixel % halo_w) as i32 - 1;
    let sy = place.y0 + (pixel / halo_w) as i32 - 1;
    let inside = sx >= 0 && sx < width as i32 && sy >= 0 && sy < height as i32;
    let mut from = 0usize;
    if inside {
        from = (place.frame_start + sy as usize * width as usize + sx as usize) * vectors_in + c;
    }
    HaloVector {
        to: pixel * pixel_vectors + c,
        from,
        inside,
    }
}

/// This unit's share of `rows` halo rows from `first_row` on, loaded into registers (zeros
/// outside the picture).
#[cube]
#[allow(clippy::too_many_arguments)]
fn fetch_halo_rows(
    input: &Array<Half8>,
    place: TilePlace,
    width: u32,
    height: u32,
    #[comptime] cin: usize,
    #[comptime] pad: usize,
    #[comptime] first_row: usize,
    #[comptime] rows: usize,
    #[comptime] units: usize,
) -> Sequence<Half8> {
    let vectors = comptime![rows * (TILE_X as usize + 2) * cin / 8];
    let mut fetched = Sequence::<Half8>::new();
    #[unroll]
    for load in 0..comptime![vectors.div_ceil(units)] {
        let i = load * units + place.unit;
        let mut value = Half8::new(f16::new(0.0));
        if i < vectors {
            let v = halo_vector(i, place, width, height, cin, pad, first_row);
            if v.inside {
                value = input[v.from];
            }
        }
        fetched.push(value);
    }
    fetched
}

/// Stores what `fetch_halo_rows` fetched into the halo, row `r` into slot `ring_slot(base, r,
/// ring)`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn put_halo_rows(
    fetched: &Sequence<Half8>,
    halo: &mut SharedMemory<Half8>,
    place: TilePlace,
    base: usize,
    #[comptime] cin: usize,
    #[comptime] pad: usize,
    #[comptime] first_row: usize,
    #[comptime] rows: usize,
    #[comptime] units: usize,
    #[comptime] ring: usize,
) {
    let halo_w = comptime![TILE_X as usize + 2];
    let vectors_in = comptime![cin / 8];
    let pixel_vectors = comptime![(cin + pad) / 8];
    let row_vectors = comptime![halo_w * vectors_in];
    let vectors = comptime![rows * row_vectors];
    #[unroll]
    for load in 0..comptime![vectors.div_ceil(units)] {
        let i = load * units + place.unit;
        if i < vectors {
            let mut pixel = i / vectors_in + comptime![first_row * halo_w];
            if comptime![ring > 0] {
                let row = ring_slot(base, i / row_vectors + first_row, ring);
                pixel = row * halo_w + (i % row_vectors) / vectors_in;
            }
            halo[pixel * pixel_vectors + i % vectors_in] = *fetched.index(load);
        }
    }
}

/// Where halo row `row` lies when the halo is a ring of `ring` rows whose row 0 is in slot
/// `base` (`ring` 0: no ring, row `row` in slot `row`). `base` + `row` stays below 2 × `ring`.
#[cube]
#[allow(clippy::collapsible_if)] // One test is comptime, the other not.
fn ring_slot(base: usize, row: usize, #[comptime] ring: usize) -> usize {
    let mut slot = base + row;
    if comptime![ring > 0] {
        if slot >= ring {
            slot -= ring;
        }
    }
    slot
}

/// Copies one tap's weights (16×16 operands of 32 vectors each, in fragment order) into shared
/// memory from `start`, laid out as `operand_vector` says.
#[cube]
pub(super) fn stage_weights(
    weight: &Array<Half8>,
    staged: &mut SharedMemory<Half8>,
    tap: usize,
    start: usize,
    unit: usize,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] weight_row: usize,
    #[comptime] units: usize,
    #[comptime] asynchronous: bool,
    #[comptime] swizzled: bool,
) {
    let tap_vectors = comptime![cin / 16 * cout / 16 * 32];
    let halves = comptime![8u32];
    #[unroll]
    for load in 0..comptime![tap_vectors.div_ceil(units)] {
        let v = load * units + unit;
        if v < tap_vectors {
            let to = start + staged_vector(v, cout, weight_row, swizzled);
            let from = tap * tap_vectors + v;
            if comptime![asynchronous] {
                copy_async(
                    &weight.slice(from, from + 1),
                    &mut staged.slice_mut(to, to + 1),
                    halves,
                );
            } else {
                staged[to] = weight[from];
            }
        }
    }
}

/// The next tap's weights, fetched from global memory into registers: this unit's share of
/// `stage_weights`, issued before a tap's multiplies so that their latency hides behind them.
#[cube]
fn fetch_weights(
    weight: &Array<Half8>,
    tap: usize,
    unit: usize,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] units: usize,
) -> Sequence<Half8> {
    let tap_vectors = comptime![cin / 16 * cout / 16 * 32];
    let mut fetched = Sequence::<Half8>::new();
    #[unroll]
    for load in 0..comptime![tap_vectors.div_ceil(units)] {
        let v = load * units + unit;
        let mut value = Half8::new(f16::new(0.0));
        if v < tap_vectors {
            value = weight[tap * tap_vectors + v];
        }
        fetched.push(value);
    }
    fetched
}

/// Stores what `fetch_weights` fetched where `stage_weights` would have put it.
#[cube]
fn put_weights(
    fetched: &Sequence<Half8>,
    staged: &mut SharedMemory<Half8>,
    start: usize,
    unit: usize,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] weight_row: usize,
    #[comptime] units: usize,
) {
    let tap_vectors = comptime![cin / 16 * cout / 16 * 32];
    #[unroll]
    for load in 0..comptime![tap_vectors.div_ceil(units)] {
        let v = load * units + unit;
        if v < tap_vectors {
            staged[start + staged_vector(v, cout, weight_row, false)] = *fetched.index(load);
        }
    }
}

#[cube]
fn f16_operand(#[comptime] ident: cmma::MatrixIdent) -> cmma::Matrix<f16> {
    unsafe {
        cmma::Matrix::<f16>::uninitialized(
            ident,
            16usize,
            16usize,
            16usize,
            cmma::MatrixLayout::RowMajor,
        )
    }
}

/// Adds part `part` of `splits` of tap (`dy`, `dx`) (that share of the input channels) to the
/// plane's accumulators: its 16-pixel operands are the halo read from a shifted start (its rows
/// a ring as `ring_slot` says); `weights` holds that part's operands, `weight_row` halves a row.
#[cube]
fn multiply_tap(
    halo: &SharedMemory<Half8>,
    weights: &Slice<Half8>,
    acc: &Sequence<cmma::Matrix<f32>>,
    plane: usize,
    dy: usize,
    dx: usize,
    part: usize,
    base: usize,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] pad: usize,
    #[comptime] rows: usize,
    #[comptime] weight_row: usize,
    #[comptime] splits: usize,
    #[comptime] ring: usize,
) {
    let stride = comptime![cin + pad];
    let pixel_vectors = comptime![stride / 8];
    let halo_w = comptime![TILE_X as usize + 2];
    let m_frags = comptime![TILE_X as usize / 16];
    let n_frags = comptime![cout / 16];
    let k_frags = comptime![cin / 16 / splits];
    let row_vectors = comptime![weight_row / 8];
    let first_channel_vector = part * k_frags * 2;
    #[unroll]
    for kf in 0..k_frags {
        let mut a = Sequence::<cmma::Matrix<f16>>::new();
        #[unroll]
        for r in 0..rows {
            #[unroll]
            for mf in 0..m_frags {
                let row = ring_slot(base, plane * rows + r + dy, ring);
                let start =
                    (row * halo_w + mf * 16 + dx) * pixel_vectors + first_channel_vector + kf * 2;
                let operand = f16_operand(cmma::MatrixIdent::A);
                cmma::load(
                    &operand,
                    &halo.slice(start, start + 16 * pixel_vectors),
                    stride as u32,
                );
                a.push(operand);
            }
        }
        #[unroll]
        for nf in 0..n_frags {
            let at = operand_vector(kf, nf, cout, weight_row);
            let b = f16_operand(cmma::MatrixIdent::B);
            cmma::load(
                &b,
                &weights.slice(at, at + 15 * row_vectors + 2),
                weight_row as u32,
            );
            #[unroll]
            for m in 0..rows * m_frags {
                let c = acc.index(m * n_frags + nf);
                cmma::execute::<f16, f16, f32, f32>(a.index(m), &b, c, c);
            }
        }
    }
}

/// Activations between our kernels where `TileShape::blocked` holds. A frame has `padded_rows`
/// rows, from the row above the picture to the one below its last tile; a row holds each
/// 16-channel block of `padded_width` pixels in turn, from the column left of the picture to
/// the one right of its last tile, 16 halves a pixel. So 16 neighbouring pixels' block is 512
/// contiguous bytes: one tensor-core operand, read from global memory without a halo in shared
/// memory. The kernel that writes a buffer zeros the picture's border (the row and column
/// beside each edge); what lies further out only meets outputs that are never kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockedLayout {
    pub padded_width: usize,
    pub padded_rows: usize,
}

impl BlockedLayout {
    /// The layout of a `width` × `height` picture in tiles `tile_y` rows high.
    pub fn new(width: usize, height: usize, tile_y: usize) -> Self {
        let tile_x = TILE_X as usize;
        Self {
            padded_width: width.div_ceil(tile_x) * tile_x + 2,
            padded_rows: height.div_ceil(tile_y) * tile_y + 2,
        }
    }

    /// Halves of `frames` such pictures of `channels` (a multiple of 16).
    pub fn halves(&self, frames: usize, channels: usize) -> usize {
        frames * self.padded_rows * self.padded_width * channels
    }
}

/// Where 16-channel block `block` of pixel (`x`, `y`) of the tile's frame starts in a
/// channel-blocked activation buffer (`BlockedLayout`), in units of 16 halves. `x` and `y` may
/// be -1 or one past the picture: its border of zeros.
#[cube]
pub(super) fn blocked_at(
    place: TilePlace,
    frame: usize,
    y: i32,
    x: i32,
    block: usize,
    #[comptime] blocks: usize,
) -> usize {
    blocked_index(
        frame,
        y,
        x,
        block,
        blocks,
        place.padded_width,
        place.padded_rows,
    )
}

/// `blocked_at` for a buffer of `padded_rows` rows a frame, `padded_width` pixels a row.
#[cube]
pub(super) fn blocked_index(
    frame: usize,
    y: i32,
    x: i32,
    block: usize,
    #[comptime] blocks: usize,
    padded_width: u32,
    padded_rows: u32,
) -> usize {
    let row = frame * padded_rows as usize + (y + 1) as usize;
    (row * blocks + block) * padded_width as usize + (x + 1) as usize
}

/// `multiply_tap` with each 16-pixel operand read straight from a channel-blocked input in
/// global memory (512 contiguous bytes), whose border of zeros stands in for the halo's.
#[cube]
#[allow(clippy::too_many_arguments)]
fn multiply_tap_blocked(
    input: &Array<Half8>,
    weights: &Slice<Half8>,
    acc: &Sequence<cmma::Matrix<f32>>,
    place: TilePlace,
    dy: usize,
    dx: usize,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] rows: usize,
    #[comptime] weight_row: usize,
) {
    let m_frags = comptime![TILE_X as usize / 16];
    let n_frags = comptime![cout / 16];
    let k_frags = comptime![cin / 16];
    let row_vectors = comptime![weight_row / 8];
    #[unroll]
    for kf in 0..k_frags {
        let mut a = Sequence::<cmma::Matrix<f16>>::new();
        #[unroll]
        for r in 0..rows {
            let y = place.y0 + (place.plane * rows + r + dy) as i32 - 1;
            #[unroll]
            for mf in 0..m_frags {
                let x = place.x0 + (mf * 16 + dx) as i32 - 1;
                let start = blocked_at(place, place.frame, y, x, kf, k_frags) * 2;
                let operand = f16_operand(cmma::MatrixIdent::A);
                cmma::load(&operand, &input.slice(start, start + 32), 16u32);
                a.push(operand);
            }
        }
        #[unroll]
        for nf in 0..n_frags {
            let at = operand_vector(kf, nf, cout, weight_row);
            let b = f16_operand(cmma::MatrixIdent::B);
            cmma::load(
                &b,
                &weights.slice(at, at + 15 * row_vectors + 2),
                weight_row as u32,
            );
            #[unroll]
            for m in 0..rows * m_frags {
                let c = acc.index(m * n_frags + nf);
                cmma::execute::<f16, f16, f32, f32>(a.index(m), &b, c, c);
            }
        }
    }
}

/// Zeros the border of a channel-blocked output next to this tile: the column left of the
/// picture and the one right of it beside the tile's rows, and the rows above and below the
/// picture across the tile's columns and the corners. Other cubes write the rest; the memory
/// such a buffer reuses holds anything.
#[cube]
#[allow(clippy::too_many_arguments)]
fn zero_border(
    output: &mut Array<Half8>,
    place: TilePlace,
    width: u32,
    height: u32,
    #[comptime] cout: usize,
    #[comptime] tile_y: usize,
    #[comptime] units: usize,
) {
    let blocks = comptime![cout / 16];
    let pixel_vectors = comptime![cout / 8];
    let (w, h) = (width as i32, height as i32);
    let zero = Half8::new(f16::new(0.0));
    let left = place.x0 == 0;
    let right = place.x0 + TILE_X as i32 >= w;
    if left || right {
        let column = comptime![tile_y * pixel_vectors];
        #[unroll]
        for load in 0..comptime![(2 * column).div_ceil(units)] {
            let i = load * units + place.unit;
            let side = i / column;
            let r = (i % column) / pixel_vectors;
            let v = i % pixel_vectors;
            let y = place.y0 + r as i32;
            let mut x = comptime![-1i32].runtime();
            let mut wanted = left;
            if side == 1 {
                x = w;
                wanted = right;
            }
            if i < 2 * column && wanted && y < h {
                output[blocked_at(place, place.frame, y, x, v / 2, blocks) * 2 + v % 2] = zero;
            }
        }
    }
    let top = place.y0 == 0;
    let bottom = place.y0 + tile_y as i32 >= h;
    if top || bottom {
        let row = comptime![(TILE_X as usize + 2) * pixel_vectors];
        #[unroll]
        for load in 0..comptime![(2 * row).div_ceil(units)] {
            let i = load * units + place.unit;
            let side = i / row;
            let x = place.x0 - 1 + ((i % row) / pixel_vectors) as i32;
            let v = i % pixel_vectors;
            let mut y = comptime![-1i32].runtime();
            let mut wanted = top;
            if side == 1 {
                y = h;
                wanted = bottom;
            }
            if i < 2 * row && wanted && x <= w {
                output[blocked_at(place, place.frame, y, x, v / 2, blocks) * 2 + v % 2] = zero;
            }
        }
    }
}

#[cube]
fn zero_accumulators(#[comptime] count: usize) -> Sequence<cmma::Matrix<f32>> {
    let mut acc = Sequence::<cmma::Matrix<f32>>::new();
    #[unroll]
    for _ in 0..count {
        acc.push(cmma::Matrix::<f32>::from_value(
            cmma::MatrixIdent::Accumulator,
            16usize,
            16usize,
            16usize,
            cmma::MatrixLayout::Undefined,
            0.0,
        ));
    }
    acc
}

/// Bias and PReLU slopes, staged once per cube for the epilogue.
#[cube]
fn load_epilogue(
    bias: &Array<f32>,
    slope: &Array<f32>,
    epilogue: &mut SharedMemory<f32>,
    unit: usize,
    #[comptime] cout: usize,
) {
    if unit < cout {
        epilogue[unit] = bias[unit];
        epilogue[cout + unit] = slope[unit];
    }
}

/// Each fragment goes through the plane's 16 × 16 f32 stage; a lane then finishes 8 channels
/// of one pixel (bias, PReLU, f16) and writes them as one 16-byte store.
#[cube]
fn store_tile(
    acc: &Sequence<cmma::Matrix<f32>>,
    stage: &mut SharedMemory<Float4>,
    epilogue: &SharedMemory<f32>,
    output: &mut Array<Half8>,
    place: TilePlace,
    width: u32,
    height: u32,
    #[comptime] cout: usize,
    #[comptime] rows: usize,
    #[comptime] prelu: bool,
) {
    let m_frags = comptime![TILE_X as usize / 16];
    let n_frags = comptime![cout / 16];
    let vectors_out = comptime![cout / 8];
    let w = width as usize;
    let stage_start = place.plane * 64;
    let px = place.lane / 2;
    let half = place.lane % 2;
    #[unroll]
    for r in 0..rows {
        let y = place.y0 as usize + place.plane * rows + r;
        #[unroll]
        for mf in 0..m_frags {
            let x = place.x0 as usize + mf * 16 + px;
            #[unroll]
            for nf in 0..n_frags {
                cmma::store(
                    &mut stage.slice_mut(stage_start, stage_start + 64),
                    acc.index((r * m_frags + mf) * n_frags + nf),
                    16,
                    cmma::MatrixLayout::RowMajor,
                );
                sync_plane();
                if x < w && y < height as usize {
                    let first = nf * 16 + half * 8;
                    let mut out = Half8::new(f16::new(0.0));
                    #[unroll]
                    for part in 0..2usize {
                        let sums = stage[stage_start + px * 4 + half * 2 + part];
                        #[unroll]
                        for j in 0..4usize {
                            let ch = first + part * 4 + j;
                            let v = sums[j] + epilogue[ch];
                            out[part * 4 + j] =
                                f16::cast_from(prelu_if(v, epilogue[cout + ch], prelu));
                        }
                    }
                    output[(place.frame_start + y * w + x) * vectors_out + nf * 2 + half] = out;
                }
                sync_plane();
            }
        }
    }
}

/// Tensor-core 3×3 convolution (see the module comment). `cin` and `cout` are multiples of 16;
/// activations are read and written 16 bytes at a time. Each of the cube's `planes` planes
/// computes `rows` rows of 32 pixels × every output channel; `TilePlan` says how, from `shape`.
/// Weights come in fragment order (`fragment_weights`): each 16×16 operand is 512 contiguous
/// bytes. With `weights_shared`, the whole cube stages each tap's weights in shared memory
/// between two barriers; otherwise each plane reads its operands from global memory. With the
/// prefetch, `tile_steps` multiplies. Where the plan's `column` exceeds 1, a cube computes that
/// many tiles, one below the other: it keeps the halo's rows as a ring, so that the next tile's
/// first two rows stay, and fetches the others during this tile's products. `ablate`
/// (`Ablation`'s bits) leaves parts out, to time the rest: its results are wrong.
#[cube(launch_unchecked)]
pub fn conv3x3_tiles(
    input: &Array<Half8>,
    weight: &Array<Half8>,
    bias: &Array<f32>,
    slope: &Array<f32>,
    output: &mut Array<Half8>,
    height: u32,
    width: u32,
    long_runs: u32,
    padded_width: u32,
    padded_rows: u32,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] shape: TileShape,
    #[comptime] prelu: bool,
    #[comptime] batched: bool,
) {
    let plan = comptime![TilePlan::new(shape, cin, cout, prelu)];
    let (tile_y, units, weight_row, pad) =
        comptime![(plan.tile_y, plan.units, plan.weight_row, plan.pad)];
    let run = run_of_tiles(height, long_runs, tile_y, comptime![plan.column]);
    let place = tile_at_row(
        tile_place(width, height, padded_width, padded_rows, tile_y, batched),
        (run.first * comptime![tile_y as u32]) as i32,
    );

    let mut halo = SharedMemory::<Half8>::new(comptime![plan.halo_vectors]);
    let mut stage = SharedMemory::<Float4>::new(comptime![plan.f32_stage_vectors]);
    let mut epilogue = SharedMemory::<f32>::new(comptime![2 * cout]);
    let mut staged = SharedMemory::<Half8>::new(comptime![plan.staged_vectors]);

    if comptime![plan.load_halo] {
        let rows = comptime![plan.early_rows];
        let early = fetch_halo_rows(input, place, width, height, cin, pad, 0usize, rows, units);
        put_halo_rows(
            &early, &mut halo, place, 0usize, cin, pad, 0usize, rows, units, 0usize,
        );
    }
    load_epilogue(bias, slope, &mut epilogue, place.unit, cout);
    if comptime![plan.prefetch] {
        stage_weights(
            weight,
            &mut staged,
            0usize,
            0usize,
            place.unit,
            comptime![plan.part_in],
            cout,
            weight_row,
            units,
            false,
            false,
        );
    }
    sync_cube();

    if comptime![plan.prefetch && plan.column > 1] {
        let mut y0 = place.y0;
        // The ring's slot of this tile's first halo row.
        let mut base = 0usize;
        for tile in 0..comptime![plan.column] {
            if (tile as u32) < run.tiles {
                let here = tile_at_row(place, y0);
                // Rows below this tile are fetched only for a next tile of the run.
                let mut next_height = 0u32;
                if (tile as u32) + 1 < run.tiles {
                    next_height = height;
                }
                tile_steps(
                    input,
                    weight,
                    &mut halo,
                    &mut staged,
                    &mut stage,
                    &epilogue,
                    output,
                    here,
                    base,
                    width,
                    height,
                    next_height,
                    plan,
                );
            }
            y0 += comptime![tile_y as i32];
            base = ring_slot(base, tile_y, comptime![plan.ring]);
        }
    } else if comptime![plan.prefetch] {
        tile_steps(
            input,
            weight,
            &mut halo,
            &mut staged,
            &mut stage,
            &epilogue,
            output,
            place,
            0usize,
            width,
            height,
            0u32,
            plan,
        );
    } else {
        let acc = zero_accumulators(comptime![plan.accumulators]);
        #[unroll(plan.unroll_taps)]
        for tap in 0..9usize {
            if comptime![plan.weights_shared] {
                // Every plane is done with the previous tap's operands.
                sync_cube();
                stage_weights(
                    weight,
                    &mut staged,
                    tap,
                    0usize,
                    place.unit,
                    cin,
                    cout,
                    weight_row,
                    units,
                    false,
                    false,
                );
                sync_cube();
                multiply_tap(
                    &halo,
                    &staged.to_slice(),
                    &acc,
                    place.plane,
                    tap / 3,
                    tap % 3,
                    0usize,
                    0usize,
                    cin,
                    cout,
                    pad,
                    comptime![plan.rows],
                    weight_row,
                    1usize,
                    0usize,
                );
            } else {
                let tap_vectors = comptime![cin / 16 * cout / 16 * 32];
                let start = tap * tap_vectors;
                multiply_tap(
                    &halo,
                    &weight.slice(start, start + tap_vectors),
                    &acc,
                    place.plane,
                    tap / 3,
                    tap % 3,
                    0usize,
                    0usize,
                    cin,
                    cout,
                    pad,
                    comptime![plan.rows],
                    16usize,
                    1usize,
                    0usize,
                );
            }
        }
        finish_tile(
            &acc,
            &mut staged,
            &mut halo,
            &mut stage,
            &epilogue,
            output,
            place,
            width,
            height,
            comptime![plan.finish],
        );
    }
}

/// One tile of `conv3x3_tiles` with the prefetch: its halo is in shared memory (its rows from
/// slot `base` of the ring, where the plan walks), the first part's weights in buffer 0. Each
/// part's weights are multiplied while the next part's travel into registers; then the tile is
/// finished. Walking on, the tile leaves the next tile's halo and first part where it found its
/// own.
#[cube]
#[allow(clippy::too_many_arguments)]
fn tile_steps(
    input: &Array<Half8>,
    weight: &Array<Half8>,
    halo: &mut SharedMemory<Half8>,
    staged: &mut SharedMemory<Half8>,
    stage: &mut SharedMemory<Float4>,
    epilogue: &SharedMemory<f32>,
    output: &mut Array<Half8>,
    place: TilePlace,
    base: usize,
    width: u32,
    height: u32,
    next_height: u32,
    #[comptime] plan: TilePlan,
) {
    let (cin, cout, pad, rows, units) =
        comptime![(plan.cin, plan.cout, plan.pad, plan.rows, plan.units)];
    let (splits, parts, part_in, buffer, weight_row) = comptime![(
        plan.splits,
        plan.parts,
        plan.part_in,
        plan.buffer_vectors,
        plan.weight_row
    )];
    let (double_buffered, walks, ring, ablate) = comptime![(
        plan.double_buffered,
        plan.column > 1,
        plan.ring,
        plan.ablate
    )];
    let (early_rows, late_rows, late_halo) =
        comptime![(plan.early_rows, plan.late_rows, plan.late_rows > 0)];
    let acc = zero_accumulators(comptime![plan.accumulators]);
    let late = fetch_halo_rows(
        input, place, width, height, cin, pad, early_rows, late_rows, units,
    );
    // The next tile's halo rows below this tile's last two, which stay.
    let below = tile_at_row(place, place.y0 + comptime![plan.tile_y as i32]);
    let next_rows = fetch_halo_rows(
        input,
        below,
        width,
        next_height,
        cin,
        pad,
        2usize,
        comptime![if walks && plan.load_halo {
            plan.tile_y
        } else {
            0
        }],
        units,
    );
    #[unroll(plan.unroll_taps)]
    for step in 0..parts {
        let tap = step / splits;
        // The next part's weights travel into registers while this one multiplies. After the
        // last part, walking on, they are the next tile's first; else the last part's own
        // again (one read, and a simpler loop). (Timing without staging leaves these loads
        // dead, so the compiler drops them.)
        let next = if comptime![walks] {
            (step + 1) % parts
        } else {
            step + usize::cast_from(step + 1 < parts)
        };
        let fetched = fetch_weights(weight, next, place.unit, part_in, cout, units);
        // With two buffers, part p reads buffer p % 2 while the other, last read at part
        // p - 1 (before the barrier that ended it), takes part p + 1: one barrier a part.
        let mut current = 0usize;
        if comptime![double_buffered] {
            current = step % 2;
        }
        let start = current * buffer;
        if comptime![plan.blocked && ablate & Ablation::PRODUCTS == 0] {
            multiply_tap_blocked(
                input,
                &staged.slice(start, start + buffer),
                &acc,
                place,
                tap / 3,
                tap % 3,
                cin,
                cout,
                rows,
                weight_row,
            );
        } else if comptime![ablate & Ablation::PRODUCTS == 0] {
            multiply_tap(
                halo,
                &staged.slice(start, start + buffer),
                &acc,
                place.plane,
                tap / 3,
                tap % 3,
                step % splits,
                base,
                cin,
                cout,
                pad,
                rows,
                weight_row,
                splits,
                ring,
            );
        }
        if step + 1 < parts {
            if comptime![!double_buffered && ablate & Ablation::BARRIERS == 0] {
                sync_cube();
            }
            if comptime![late_halo] {
                // The barrier below ends the first row of taps.
                if step + 1 == 3 * splits {
                    put_halo_rows(
                        &late, halo, place, 0usize, cin, pad, early_rows, late_rows, units, 0usize,
                    );
                }
            }
            if comptime![ablate & Ablation::STAGING == 0] {
                put_weights(
                    &fetched,
                    staged,
                    (1 - current) * buffer * usize::cast_from(double_buffered),
                    place.unit,
                    part_in,
                    cout,
                    weight_row,
                    units,
                );
            }
            if comptime![ablate & Ablation::BARRIERS == 0] {
                sync_cube();
            }
        } else if comptime![walks] {
            // Every plane is done with this tile's halo rows but the last two, and with the
            // last part's buffer: buffer 0 (the parts are odd), where the next tile's first
            // part goes. The other stays free for the epilogue.
            sync_cube();
            if comptime![plan.load_halo] {
                put_halo_rows(
                    &next_rows,
                    halo,
                    place,
                    ring_slot(base, comptime![plan.tile_y], ring),
                    cin,
                    pad,
                    2usize,
                    comptime![plan.tile_y],
                    units,
                    ring,
                );
            }
            put_weights(
                &fetched, staged, start, place.unit, part_in, cout, weight_row, units,
            );
        }
    }
    finish_tile(
        &acc,
        staged,
        halo,
        stage,
        epilogue,
        output,
        place,
        width,
        height,
        comptime![plan.finish],
    );
    if comptime![plan.blocked] {
        zero_border(
            output,
            place,
            width,
            height,
            cout,
            comptime![plan.tile_y],
            units,
        );
    }
    if comptime![walks] {
        // The epilogue's stage is the next tile's second buffer.
        sync_cube();
    }
}

/// What `conv3x3_tiles` does for a `TileShape` and a layer of `cin` inputs and `cout` outputs,
/// worked out on the host. Sizes of shared memory are in vectors of 8 halves (`Half8`), or of
/// 4 floats for the f32 stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TilePlan {
    pub cin: usize,
    pub cout: usize,
    pub pad: usize,
    pub rows: usize,
    /// Pixel rows of a tile.
    pub tile_y: usize,
    pub units: usize,
    pub unroll_taps: bool,
    pub weights_shared: bool,
    /// Each tap's weights staged by the cube, the next part fetched while this one multiplies.
    pub prefetch: bool,
    pub double_buffered: bool,
    pub weight_row: usize,
    pub splits: usize,
    /// Input channels of a part, and parts of the 9 taps.
    pub part_in: usize,
    pub parts: usize,
    pub accumulators: usize,
    pub buffer_vectors: usize,
    pub staged_vectors: usize,
    pub halo_vectors: usize,
    pub f32_stage_vectors: usize,
    /// Halo rows loaded before the taps, and during the first row of taps (late halo).
    pub early_rows: usize,
    pub late_rows: usize,
    /// Tiles a cube computes down a column (`TileShape::column_for`), and the halo's ring of
    /// rows when it exceeds 1 (else 0).
    pub column: usize,
    pub ring: usize,
    pub ablate: u32,
    /// Input operands read from a channel-blocked input in global memory
    /// (`TileShape::blocked`); the halo is then neither loaded nor kept.
    pub blocked: bool,
    pub load_halo: bool,
    pub finish: TileFinish,
}

impl TilePlan {
    /// Shared memory one cube uses: the halo, the weight buffers, the f32 stage, the bias and
    /// slopes.
    pub fn shared_bytes(&self) -> usize {
        let vectors = self.halo_vectors + self.staged_vectors + self.f32_stage_vectors;
        vectors * 16 + 2 * self.cout * 4
    }

    pub fn new(shape: TileShape, cin: usize, cout: usize, prelu: bool) -> Self {
        let tile_y = shape.planes * shape.rows;
        let prefetch = shape.weights_shared && shape.prefetch;
        // Two weight buffers only with the prefetch; their f16 stage then replaces the f32 one.
        let double_buffered = shape.double_buffered && prefetch;
        let weight_row = shape.weight_row(cout);
        let splits = shape.splits_for(cin);
        let part_in = cin / splits;
        let parts = 9 * splits;
        let buffer_vectors = staged_halves(part_in, cout, weight_row) / 8;
        let wide = shape.wide_stage_for(cin, cout);
        let wide_in_buffer = wide == Some(WideStage::WeightBuffer);
        let wide_in_halo = wide == Some(WideStage::Halo);
        let ablate = shape.ablate;
        let blocked = shape.uses_blocked(cin, cout);
        let load_halo = !blocked && ablate & Ablation::HALO == 0;
        // With the late halo, the halo's last two rows, which the first row of taps (dy = 0)
        // does not read, are loaded while those taps multiply.
        let late_halo = shape.late_halo && prefetch && load_halo;
        let (early_rows, late_rows) = if late_halo {
            (tile_y, 2)
        } else {
            (tile_y + 2, 0)
        };
        let column = shape.column_for(cin, cout);
        Self {
            cin,
            cout,
            pad: shape.pad,
            rows: shape.rows,
            tile_y,
            units: 32 * shape.planes,
            unroll_taps: shape.unroll_taps,
            weights_shared: shape.weights_shared,
            prefetch,
            double_buffered,
            weight_row,
            splits,
            part_in,
            parts,
            accumulators: shape.rows * TILE_X as usize / 16 * cout / 16,
            buffer_vectors,
            staged_vectors: match (shape.weights_shared, double_buffered) {
                (true, true) => 2 * buffer_vectors,
                (true, false) => buffer_vectors,
                _ => 1,
            },
            halo_vectors: if blocked {
                1
            } else {
                halo_vectors(tile_y, cin, shape.pad)
            },
            f32_stage_vectors: if double_buffered || wide.is_some() {
                1
            } else {
                shape.planes * 64
            },
            early_rows,
            late_rows,
            column,
            ring: if column > 1 { tile_y + 2 } else { 0 },
            ablate,
            blocked,
            load_halo,
            finish: TileFinish {
                // With two buffers, the last part read buffer (parts - 1) % 2, and the other
                // has been free since the barrier that ended the part before it; one buffer is
                // free once every plane is done with the last part.
                free: if double_buffered {
                    (parts % 2) * buffer_vectors
                } else {
                    0
                },
                double_buffered,
                wide_in_buffer,
                wide_in_halo,
                blocked,
                cout,
                rows: shape.rows,
                prelu,
                left_out: ablate & Ablation::EPILOGUE != 0,
            },
        }
    }
}

/// How `conv3x3_tiles` ends: where the outputs are staged (`free`: the weight buffer the last
/// part left free), the layer's shape, and whether the epilogue is `left_out` (for timing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileFinish {
    free: usize,
    double_buffered: bool,
    wide_in_buffer: bool,
    wide_in_halo: bool,
    blocked: bool,
    cout: usize,
    rows: usize,
    prelu: bool,
    left_out: bool,
}

/// Bias, PReLU and f16 stores of a `conv3x3_tiles` tile's sums, through the stage `finish`
/// says.
#[cube]
#[allow(clippy::too_many_arguments)]
fn finish_tile(
    acc: &Sequence<cmma::Matrix<f32>>,
    staged: &mut SharedMemory<Half8>,
    halo: &mut SharedMemory<Half8>,
    stage: &mut SharedMemory<Float4>,
    epilogue: &SharedMemory<f32>,
    output: &mut Array<Half8>,
    place: TilePlace,
    width: u32,
    height: u32,
    #[comptime] finish: TileFinish,
) {
    if comptime![finish.left_out] {
        // Never taken: it keeps the products alive when the epilogue is left out.
        if height == 0 {
            store_finished(
                acc, staged, halo, stage, epilogue, output, place, width, height, finish,
            );
        }
    } else {
        store_finished(
            acc, staged, halo, stage, epilogue, output, place, width, height, finish,
        );
    }
}

/// `finish_tile`'s stores.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_finished(
    acc: &Sequence<cmma::Matrix<f32>>,
    staged: &mut SharedMemory<Half8>,
    halo: &mut SharedMemory<Half8>,
    stage: &mut SharedMemory<Float4>,
    epilogue: &SharedMemory<f32>,
    output: &mut Array<Half8>,
    place: TilePlace,
    width: u32,
    height: u32,
    #[comptime] finish: TileFinish,
) {
    let (cout, rows, prelu) = comptime![(finish.cout, finish.rows, finish.prelu)];
    if comptime![finish.wide_in_buffer] {
        // With one buffer, every plane must first be done with the last part.
        if comptime![!finish.double_buffered] {
            sync_cube();
        }
        store_tile_wide(
            acc,
            staged,
            comptime![finish.free],
            epilogue,
            output,
            place,
            width,
            height,
            cout,
            rows,
            prelu,
            comptime![finish.blocked],
        );
    } else if comptime![finish.wide_in_halo] {
        // Every plane must first be done reading the halo.
        sync_cube();
        store_tile_wide(
            acc, halo, 0usize, epilogue, output, place, width, height, cout, rows, prelu, false,
        );
    } else if comptime![finish.double_buffered] {
        store_tile_halves(
            acc,
            staged,
            comptime![finish.free],
            epilogue,
            output,
            place,
            width,
            height,
            cout,
            rows,
            prelu,
        );
    } else {
        store_tile(
            acc, stage, epilogue, output, place, width, height, cout, rows, prelu,
        );
    }
}

/// Parts of `conv3x3_tiles` that `ablate` leaves out, one bit each, to time the rest.
pub struct Ablation;

impl Ablation {
    /// No input tile loaded into shared memory.
    pub const HALO: u32 = 1;
    /// No weights staged after the first part (their loads then go unused).
    pub const STAGING: u32 = 2;
    /// No barrier between parts.
    pub const BARRIERS: u32 = 4;
    /// No tensor-core loads or products.
    pub const PRODUCTS: u32 = 8;
    /// No epilogue (bias, PReLU, stores).
    pub const EPILOGUE: u32 = 16;
}

/// `store_tile` through an f16 stage (512 bytes a plane, from `stage_start` in `staged`): each
/// fragment is rounded to f16, then a lane adds the bias to 8 channels of one pixel, applies
/// PReLU and writes them as one 16-byte store.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_tile_halves(
    acc: &Sequence<cmma::Matrix<f32>>,
    staged: &mut SharedMemory<Half8>,
    stage_start: usize,
    epilogue: &SharedMemory<f32>,
    output: &mut Array<Half8>,
    place: TilePlace,
    width: u32,
    height: u32,
    #[comptime] cout: usize,
    #[comptime] rows: usize,
    #[comptime] prelu: bool,
) {
    let m_frags = comptime![TILE_X as usize / 16];
    let n_frags = comptime![cout / 16];
    let vectors_out = comptime![cout / 8];
    let w = width as usize;
    let start = stage_start + place.plane * 32;
    let px = place.lane / 2;
    let half = place.lane % 2;
    #[unroll]
    for r in 0..rows {
        let y = place.y0 as usize + place.plane * rows + r;
        #[unroll]
        for mf in 0..m_frags {
            let x = place.x0 as usize + mf * 16 + px;
            #[unroll]
            for nf in 0..n_frags {
                let sums = cmma::cast::<f32, f16>(acc.index((r * m_frags + mf) * n_frags + nf));
                cmma::store(
                    &mut staged.slice_mut(start, start + 32),
                    &sums,
                    16,
                    cmma::MatrixLayout::RowMajor,
                );
                sync_plane();
                if x < w && y < height as usize {
                    let first = nf * 16 + half * 8;
                    let sums = staged[start + px * 2 + half];
                    let mut out = Half8::new(f16::new(0.0));
                    #[unroll]
                    for j in 0..8usize {
                        let ch = first + j;
                        let v = f32::cast_from(sums[j]) + epilogue[ch];
                        out[j] = f16::cast_from(prelu_if(v, epilogue[cout + ch], prelu));
                    }
                    output[(place.frame_start + y * w + x) * vectors_out + nf * 2 + half] = out;
                }
                sync_plane();
            }
        }
    }
}

/// Halves of `store_tile_wide`'s stage: 16 pixels × `cout` + 8 a plane.
pub fn wide_stage_halves(planes: usize, cout: usize) -> usize {
    planes * 16 * (cout + 8)
}

/// Where `store_tile_wide` stages its outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WideStage {
    /// The weight buffer the last part left free.
    WeightBuffer,
    /// The halo, once every plane is done reading it.
    Halo,
}

/// Where `store_tile_wide`'s stage fits: a weight buffer of `buffer_halves` (with
/// `weights_shared`), else the halo of `halo_halves`, else nowhere.
pub fn wide_stage(
    planes: usize,
    cout: usize,
    weights_shared: bool,
    buffer_halves: usize,
    halo_halves: usize,
) -> Option<WideStage> {
    let stage = wide_stage_halves(planes, cout);
    if weights_shared && stage <= buffer_halves {
        Some(WideStage::WeightBuffer)
    } else if stage <= halo_halves {
        Some(WideStage::Halo)
    } else {
        None
    }
}

/// The epilogue through an f16 stage of 16 whole pixels a plane (from `stage_start` in
/// `staged`, `cout` + 8 halves a pixel): the plane stores every output fragment of 16 pixels,
/// then each lane finishes 16-byte vectors (bias, PReLU, f16) so that consecutive lanes write
/// consecutive vectors of the output, 512 bytes a store. Where a pixel's vectors divide 32, a
/// lane always finishes the same 8 channels and keeps their bias and slopes in registers.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_tile_wide(
    acc: &Sequence<cmma::Matrix<f32>>,
    staged: &mut SharedMemory<Half8>,
    stage_start: usize,
    epilogue: &SharedMemory<f32>,
    output: &mut Array<Half8>,
    place: TilePlace,
    width: u32,
    height: u32,
    #[comptime] cout: usize,
    #[comptime] rows: usize,
    #[comptime] prelu: bool,
    #[comptime] blocked: bool,
) {
    let m_frags = comptime![TILE_X as usize / 16];
    let n_frags = comptime![cout / 16];
    let vectors_out = comptime![cout / 8];
    let stride = comptime![cout + 8];
    let pixel_vectors = comptime![stride / 8];
    let plane_vectors = comptime![16 * pixel_vectors];
    let tile_vectors = comptime![16 * vectors_out];
    let per_lane = comptime![tile_vectors.div_ceil(32)];
    let fixed = comptime![32 % vectors_out == 0];
    let w = width as usize;
    let start = stage_start + place.plane * plane_vectors;
    let mut terms = Array::<f32>::new(16usize);
    if comptime![fixed] {
        let first = (place.lane % vectors_out) * 8;
        #[unroll]
        for j in 0..8usize {
            terms[j] = epilogue[first + j];
            terms[8 + j] = epilogue[cout + first + j];
        }
    }
    #[unroll]
    for r in 0..rows {
        let y = place.y0 as usize + place.plane * rows + r;
        #[unroll]
        for mf in 0..m_frags {
            #[unroll]
            for nf in 0..n_frags {
                let sums = cmma::cast::<f32, f16>(acc.index((r * m_frags + mf) * n_frags + nf));
                let at = start + nf * 2;
                cmma::store(
                    &mut staged.slice_mut(at, at + 15 * pixel_vectors + 2),
                    &sums,
                    stride as u32,
                    cmma::MatrixLayout::RowMajor,
                );
            }
            sync_plane();
            #[unroll]
            for i in 0..per_lane {
                let index = i * 32 + place.lane;
                let px = index / vectors_out;
                let v = index % vectors_out;
                let x = place.x0 as usize + mf * 16 + px;
                if index < tile_vectors && x < w && y < height as usize {
                    let sums = staged[start + px * pixel_vectors + v];
                    let mut out = Half8::new(f16::new(0.0));
                    #[unroll]
                    for j in 0..8usize {
                        let (bias, slope) = if comptime![fixed] {
                            (terms[j], terms[8 + j])
                        } else {
                            (epilogue[v * 8 + j], epilogue[cout + v * 8 + j])
                        };
                        let value = f32::cast_from(sums[j]) + bias;
                        out[j] = f16::cast_from(prelu_if(value, slope, prelu));
                    }
                    if comptime![blocked] {
                        let block =
                            blocked_at(place, place.frame, y as i32, x as i32, v / 2, n_frags);
                        output[block * 2 + v % 2] = out;
                    } else {
                        output[(place.frame_start + y * w + x) * vectors_out + v] = out;
                    }
                }
            }
            sync_plane();
        }
    }
}

/// One tap's turn in the asynchronous kernels (`conv3x3_tiles_async`, `conv_mma::conv3x3_mma`):
/// waits until tap `tap`'s weights have landed in buffer `tap % 2` and every unit has finished
/// the tap before (`ready_even` and `ready_odd` guard buffers 0 and 1), copies tap `tap + 1`'s
/// weights into the other buffer, which is now free, and returns where tap `tap`'s buffer
/// starts.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn next_tap_weights(
    weight: &Array<Half8>,
    staged: &mut SharedMemory<Half8>,
    ready_even: &Barrier,
    ready_odd: &Barrier,
    tap: usize,
    unit: usize,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] weight_row: usize,
    #[comptime] units: usize,
    #[comptime] swizzled: bool,
) -> usize {
    let buffer = comptime![staged_halves(cin, cout, weight_row) / 8];
    let current = tap % 2;
    if current == 0 {
        ready_even.arrive_and_wait();
    } else {
        ready_odd.arrive_and_wait();
    }
    if tap < 8 {
        stage_weights(
            weight,
            staged,
            tap + 1,
            (1 - current) * buffer,
            unit,
            cin,
            cout,
            weight_row,
            units,
            true,
            swizzled,
        );
        if current == 0 {
            ready_odd.commit_copy_async();
        } else {
            ready_even.commit_copy_async();
        }
    }
    current * buffer
}

/// `conv3x3_tiles` with asynchronous copies (CUDA's `cp.async`, sm_80 and later): the halo and
/// the first tap's weights are copied together, then each tap's weights are copied into one of
/// two buffers while the planes multiply the previous tap from the other. One barrier per tap.
#[cube(launch_unchecked)]
pub fn conv3x3_tiles_async(
    input: &Array<Half8>,
    weight: &Array<Half8>,
    bias: &Array<f32>,
    slope: &Array<f32>,
    output: &mut Array<Half8>,
    height: u32,
    width: u32,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] rows: usize,
    #[comptime] planes: usize,
    #[comptime] unroll_taps: bool,
    #[comptime] pad: usize,
    #[comptime] weight_row: usize,
    #[comptime] prelu: bool,
    #[comptime] batched: bool,
) {
    let tile_y = comptime![planes * rows];
    let units = comptime![32 * planes];
    let buffer = comptime![staged_halves(cin, cout, weight_row) / 8];
    let place = tile_place(width, height, 0u32, 0u32, tile_y, batched);

    let mut halo = SharedMemory::<Half8>::new(comptime![halo_vectors(tile_y, cin, pad)]);
    let mut stage = SharedMemory::<Float4>::new(comptime![planes * 64]);
    let mut epilogue = SharedMemory::<f32>::new(comptime![2 * cout]);
    let mut staged = SharedMemory::<Half8>::new(comptime![2 * buffer]);
    // `ready[b]` completes a phase when every unit's copies into buffer b have landed and every
    // unit has arrived, that is, has finished multiplying the tap before.
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
        weight_row,
        units,
        true,
        false,
    );
    ready_even.commit_copy_async();
    load_epilogue(bias, slope, &mut epilogue, place.unit, cout);
    let acc = zero_accumulators(comptime![rows * TILE_X as usize / 16 * cout / 16]);

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
            weight_row,
            units,
            false,
        );
        multiply_tap(
            &halo,
            &staged.slice(start, start + buffer),
            &acc,
            place.plane,
            tap / 3,
            tap % 3,
            0usize,
            0usize,
            cin,
            cout,
            pad,
            rows,
            weight_row,
            1usize,
            0usize,
        );
    }
    store_tile(
        &acc, &mut stage, &epilogue, output, place, width, height, cout, rows, prelu,
    );
}

/// Where a tap's staged weights put operand (`kf`, `nf`) (its first 16-byte vector), its rows
/// `weight_row` halves apart. Below `cout`, each operand has rows of its own (16: packed, rows
/// four apart share banks; 24: eight rows in distinct banks, a third of the bytes padding); from
/// `cout` on, the tap is one `cin` × `cout` matrix whose rows are padded to `weight_row` (with
/// `cout` + 8, eight rows in distinct banks for an eighth of the bytes).
#[cube]
fn operand_vector(
    kf: usize,
    nf: usize,
    #[comptime] cout: usize,
    #[comptime] weight_row: usize,
) -> usize {
    let row_vectors = comptime![weight_row / 8];
    if comptime![weight_row >= cout] {
        kf * 16 * row_vectors + nf * 2
    } else {
        (kf * (cout / 16) + nf) * 16 * row_vectors
    }
}

/// Where vector `v` of a tap's weights in fragment order (operand `v / 32`, row `v % 32 / 2`,
/// half `v % 2`) lies among the staged weights. `swizzled` (packed operands only) swaps the
/// halves of rows 4-7 and 12-15, so that the eight rows one `ldmatrix` phase reads fall in
/// distinct banks.
#[cube]
pub(super) fn staged_vector(
    v: usize,
    #[comptime] cout: usize,
    #[comptime] weight_row: usize,
    #[comptime] swizzled: bool,
) -> usize {
    let n_frags = comptime![cout / 16];
    let row_vectors = comptime![weight_row / 8];
    let within = v % 32;
    let operand = v / 32;
    let row = within / 2;
    let mut half = within % 2;
    if comptime![swizzled] {
        half ^= (row / 4) % 2;
    }
    operand_vector(operand / n_frags, operand % n_frags, cout, weight_row)
        + row * row_vectors
        + half
}

/// Halves one tap's staged weights take (see `operand_vector`).
pub fn staged_halves(cin: usize, cout: usize, weight_row: usize) -> usize {
    if weight_row >= cout {
        cin * weight_row
    } else {
        cin / 16 * cout / 16 * 16 * weight_row
    }
}

/// 16-byte vectors of a cube's input tile and halo: `tile_y` + 2 rows of 34 pixels, each
/// pixel's channels padded by `pad` halves. With 8 (144 bytes a pixel), the eight 16-byte rows
/// a tensor-core load reads at once fall in distinct shared memory banks (a 128-byte stride put
/// them all in the same ones; 16 halves, in two). An operand then starts on a 16-byte boundary
/// only: what `ldmatrix` and Vulkan's cooperative matrix loads need, tested on cuda and Vulkan
/// (tests/backends.rs).
pub(super) fn halo_vectors(tile_y: usize, cin: usize, pad: usize) -> usize {
    (tile_y + 2) * (TILE_X as usize + 2) * (cin + pad) / 8
}

/// How the cubes of a walking layer share each column of tiles: from the top, `long_runs` cubes
/// of `column` tiles each (the last may be cut short by the picture's edge), then `singles`
/// cubes of one tile each. The device starts cubes about in order, so the long runs start first
/// and the single tiles fill the processors that finish early, wherever the long runs left
/// them unevenly loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnRuns {
    pub long_runs: usize,
    pub singles: usize,
}

impl ColumnRuns {
    /// Cubes down each column.
    pub fn cubes(&self) -> usize {
        self.long_runs + self.singles
    }
}

/// Cubes a layer of walking cubes (`TileShape::column`) keeps at least: an H200 holds 528 of
/// Vulkan's cubes at once (132 SMs × 4), and 400 walking cubes at 640x480 lost 10% to 480
/// (BENCHMARKS.md, "Cubes that walk down a column"). Without a count of the device's
/// processors (wgpu has none), this is a floor for large GPUs that costs small ones only some
/// of the walk's gain.
pub const MIN_WALKING_CUBES: usize = 480;

/// How `conv3x3_tiles` divides the picture: each cube has `planes` planes of 32 units, each
/// plane computes `rows` rows of 32 pixels; `unroll_taps` unrolls the loop over the 9 taps. A
/// pixel's channels are `pad` halves apart beyond `cin` in shared memory. `weights_shared`
/// stages each tap's weights in shared memory instead of reading them from global memory per
/// plane, laid out as `weights` says; with `prefetch`, each unit fetches its share of the next
/// tap's weights into registers before this tap's multiplies. `asynchronous` runs
/// `conv3x3_tiles_async` (which always stages weights, through `cp.async`); `mma` runs
/// `conv_mma::conv3x3_mma` (the same copies, register fragments, swizzled packed weights, taps
/// in a loop or unrolled) in its place, and with `tma` `conv_mma::conv3x3_mma_tma` (Hopper's
/// tensor memory accelerator copies the halo and each tap's weights, each with one instruction).
/// `double_buffered` (synchronous kernel with the prefetch) stages taps in two buffers, one
/// barrier a tap. `wide_epilogue` (synchronous kernel, weights staged) stores the outputs
/// through `store_tile_wide` where its stage fits in a weight buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileShape {
    pub rows: usize,
    /// Parts a tap's weights are staged in, with the prefetch (1, 2 or 4; a part is a share of
    /// the input channels).
    pub splits: usize,
    /// `Ablation`'s bits: parts of the synchronous kernel left out, for timing only.
    pub ablate: u32,
    /// With the prefetch, the halo's last two rows are loaded during the first three taps.
    pub late_halo: bool,
    /// Tiles a cube computes one below the other, where `column_for` allows (else 1).
    pub column: usize,
    /// Cubes of one tile each that end a walking layer (about; `ColumnRuns`), 0 for none.
    pub singles: usize,
    pub planes: usize,
    pub unroll_taps: bool,
    pub pad: usize,
    pub weights_shared: bool,
    pub weights: WeightLayout,
    pub prefetch: bool,
    pub asynchronous: bool,
    pub mma: bool,
    pub double_buffered: bool,
    pub tma: bool,
    pub wide_epilogue: bool,
    /// The synchronous kernel reads its input operands straight from global memory, where
    /// activations are channel-blocked (`BlockedLayout`), and keeps no halo in shared memory,
    /// where `uses_blocked` allows; the engine decides for the whole network.
    pub blocked: bool,
}

/// How a tap's weights lie in shared memory (`operand_vector`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightLayout {
    /// Each 16×16 operand on its own, rows 32 bytes apart.
    Packed,
    /// Each operand on its own, rows 48 bytes apart.
    Padded,
    /// One matrix, rows `cout` + 8 halves apart.
    Matrix,
}

impl WeightLayout {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "packed" => Some(Self::Packed),
            "padded" => Some(Self::Padded),
            "matrix" => Some(Self::Matrix),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Packed => "packed",
            Self::Padded => "padded",
            Self::Matrix => "matrix",
        }
    }
}

impl TileShape {
    /// This shape for `conv3x3_tiles` where `conv3x3_tiles_async` cannot run: weights staged as
    /// padded operands, taps in a loop (measured best without asynchronous copies on CUDA;
    /// BENCHMARKS.md, "Asynchronous weight copies").
    pub fn synchronous(self) -> Self {
        Self {
            asynchronous: false,
            mma: false,
            double_buffered: false,
            tma: false,
            weights: WeightLayout::Padded,
            unroll_taps: false,
            prefetch: false,
            ..self
        }
    }

    /// Halves between a staged operand's rows, as the kernels take it.
    pub fn weight_row(&self, cout: usize) -> usize {
        match self.weights {
            WeightLayout::Packed => 16,
            WeightLayout::Padded => 24,
            WeightLayout::Matrix => cout + 8,
        }
    }

    /// Shared memory one cube uses for `cin` input channels and `cout` outputs.
    pub fn shared_bytes(&self, cin: usize, cout: usize) -> usize {
        let halo = halo_vectors(self.planes * self.rows, cin, self.pad) * 16;
        if self.mma {
            // Two weight buffers, the slopes, two barriers, and the tensor copies' alignment.
            let aligned = if self.tma { 256 } else { 0 };
            return halo + 2 * staged_halves(cin, cout, 16) * 2 + cout * 4 + 16 + aligned;
        }
        if self.asynchronous {
            // Two weight buffers, the f32 stage, the bias and slopes, and the barriers.
            let buffer = staged_halves(cin, cout, self.weight_row(cout)) * 2;
            return halo + self.planes * 1024 + 2 * cout * 4 + 2 * buffer + 16;
        }
        TilePlan::new(*self, cin, cout, false).shared_bytes()
    }

    /// Where `conv3x3_tiles` stages its outputs for `store_tile_wide` (None: it does not).
    pub fn wide_stage_for(&self, cin: usize, cout: usize) -> Option<WideStage> {
        if !self.wide_epilogue {
            return None;
        }
        let buffer = staged_halves(cin / self.splits_for(cin), cout, self.weight_row(cout));
        let halo = halo_vectors(self.planes * self.rows, cin, self.pad) * 8;
        wide_stage(self.planes, cout, self.weights_shared, buffer, halo)
    }

    /// The tiles a `conv3x3_tiles` cube computes down a column for `cin` inputs and `cout`
    /// outputs: `column` where the tile's last part leaves buffer 0 to the next tile's first
    /// and buffer 1 to the epilogue (two buffers, the prefetch, whole taps, no late halo) and
    /// the epilogue does not stage in the halo, which then holds the next tile's first rows;
    /// else 1.
    pub fn column_for(&self, cin: usize, cout: usize) -> usize {
        let synchronous = !self.asynchronous && !self.mma;
        let double = self.double_buffered && self.weights_shared && self.prefetch;
        let walks = synchronous
            && double
            && self.splits_for(cin) == 1
            && !self.late_halo
            && self.wide_stage_for(cin, cout) != Some(WideStage::Halo);
        if walks {
            self.column.max(1)
        } else {
            1
        }
    }

    /// Whether `blocked` can hold for a layer of `cin` inputs and `cout` outputs: the
    /// synchronous kernel with the prefetch, whole taps and the wide epilogue staged in a weight
    /// buffer (the halo it would otherwise use is gone).
    pub fn uses_blocked(&self, cin: usize, cout: usize) -> bool {
        let synchronous = !self.asynchronous && !self.mma;
        self.blocked
            && synchronous
            && self.weights_shared
            && self.prefetch
            && !self.late_halo
            && self.splits_for(cin) == 1
            && self.wide_stage_for(cin, cout) == Some(WideStage::WeightBuffer)
    }

    /// Tiles across `frames` pictures of `width` × `height` side by side, and tiles down.
    fn tiles(&self, width: usize, height: usize, frames: usize) -> (usize, usize) {
        (
            width.div_ceil(TILE_X as usize) * frames,
            height.div_ceil(self.planes * self.rows),
        )
    }

    /// This shape for a batch of `frames` pictures of `width` × `height`: its column shortened
    /// until the picture's tiles spread over `MIN_WALKING_CUBES` cubes, or, for a picture of
    /// fewer tiles than that, over half as many cubes as tiles. Such a picture leaves a large
    /// device mostly idle anyway; walking there costs it at most a second tile a cube, and
    /// `verify`'s small picture runs walking cubes.
    pub fn for_picture(self, width: usize, height: usize, frames: usize) -> Self {
        let (across, down) = self.tiles(width, height, frames);
        let floor = MIN_WALKING_CUBES.min((across * down).div_ceil(2));
        let column = (1..=self.column.max(1))
            .rev()
            .find(|&c| across * down.div_ceil(c) >= floor)
            .unwrap_or(1);
        Self { column, ..self }
    }

    /// How the cubes of a layer whose cubes walk `column` tiles share the columns of `frames`
    /// pictures `height` high and `width` wide (`ColumnRuns`).
    pub fn column_runs(
        &self,
        width: usize,
        height: usize,
        frames: usize,
        column: usize,
    ) -> ColumnRuns {
        let (across, down) = self.tiles(width, height, frames);
        let all_long = ColumnRuns {
            long_runs: down.div_ceil(column),
            singles: 0,
        };
        if column <= 1 || self.singles == 0 {
            return all_long;
        }
        let single_rows = self.singles.div_ceil(across);
        if down < single_rows + column {
            return all_long;
        }
        let long_runs = (down - single_rows) / column;
        ColumnRuns {
            long_runs,
            singles: down - long_runs * column,
        }
    }

    /// The parts a tap's weights travel in for `cin` inputs: `splits` where they divide its
    /// 16-channel blocks and the prefetch stages them, else 1.
    pub fn splits_for(&self, cin: usize) -> usize {
        let staged = self.weights_shared && self.prefetch && !self.asynchronous && !self.mma;
        if staged && self.splits > 0 && (cin / 16).is_multiple_of(self.splits) {
            self.splits
        } else {
            1
        }
    }
}

/// Tap × in × out weights as `conv3x3_tiles` reads them: for each tap, 16-row block of inputs
/// and 16-column block of outputs, one row-major 16×16 operand.
pub fn fragment_weights(weight: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    let (kf, nf) = (cin / 16, cout / 16);
    let mut out = vec![0.0; weight.len()];
    for tap in 0..9 {
        for ci in 0..cin {
            for co in 0..cout {
                let frag = (tap * kf + ci / 16) * nf + co / 16;
                out[frag * 256 + (ci % 16) * 16 + co % 16] = weight[(tap * cin + ci) * cout + co];
            }
        }
    }
    out
}

/// One unit per output pixel of the kept region: pixel shuffle of the last convolution, plus the
/// input picture upscaled by nearest neighbour, clamped to 0..1. `packed` writes 8-bit RGB0 words
/// (R | G << 8 | B << 16) into `rgb`, otherwise f32 planes into `planes`.
#[cube(launch_unchecked)]
pub fn tail<F: Float>(
    residual: &Array<F>,
    input: &Array<f32>,
    rgb: &mut Array<u32>,
    planes: &mut Array<f32>,
    height: u32,
    width: u32,
    keep_x: u32,
    keep_y: u32,
    keep_w: u32,
    keep_h: u32,
    frames: u32,
    padded_width: u32,
    padded_rows: u32,
    #[comptime] scale: usize,
    #[comptime] packed: bool,
    #[comptime] batched: bool,
    #[comptime] blocked: bool,
) {
    let index = ABSOLUTE_POS;
    let kw = keep_w as usize;
    let kh = keep_h as usize;
    let mut outputs = kw * kh;
    if comptime![batched] {
        outputs *= frames as usize;
    }
    if index < outputs {
        let mut frame = 0usize;
        let mut within = index;
        if comptime![batched] {
            frame = index / (kw * kh);
            within = index % (kw * kh);
        }
        let ox = keep_x as usize + within % kw;
        let oy = keep_y as usize + within / kw;
        let w = width as usize;
        let sx = ox / scale;
        let sy = oy / scale;
        let sub = (oy % scale) * scale + ox % scale;
        let channels = comptime![3 * scale * scale];
        let plane = w * height as usize;
        let at = sy * w + sx;
        let mut word = 0u32;
        #[unroll]
        for c in 0..3usize {
            let channel = c * scale * scale + sub;
            let mut from = (frame * plane + at) * channels + channel;
            if comptime![blocked] {
                let block = blocked_index(
                    frame,
                    sy as i32,
                    sx as i32,
                    channel / 16,
                    comptime![channels / 16],
                    padded_width,
                    padded_rows,
                );
                from = block * 16 + channel % 16;
            }
            let r = f32::cast_from(residual[from]);
            let v = clamp(r + input[(frame * 3 + c) * plane + at], 0.0, 1.0);
            if comptime![packed] {
                word |= u32::cast_from(f32::floor(v * 255.0 + 0.5)) << (8 * c) as u32;
            } else {
                planes[(frame * 3 + c) * kw * kh + within] = v;
            }
        }
        if comptime![packed] {
            rgb[index] = word;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::engine::WGPU_SHAPE;

    /// Vulkan's kernel with its halo in shared memory: what runs where the blocked layout
    /// cannot.
    const HALO_SHAPE: TileShape = TileShape {
        rows: 1,
        column: 12,
        blocked: false,
        ..WGPU_SHAPE
    };

    #[test]
    fn blocked_operands_leave_room_for_two_rows_a_plane() {
        let limit = 48 * 1024;
        assert!(WGPU_SHAPE.uses_blocked(64, 64) && WGPU_SHAPE.uses_blocked(64, 48));
        assert!(WGPU_SHAPE.shared_bytes(64, 64) <= limit);
        let plan = TilePlan::new(WGPU_SHAPE, 64, 64, true);
        assert!(plan.blocked && !plan.load_halo && plan.finish.wide_in_buffer);
        // Without the blocked layout, the same tile's halo does not fit.
        let halo = TileShape {
            blocked: false,
            ..WGPU_SHAPE
        };
        assert!(halo.shared_bytes(64, 64) > limit);
        // The wide epilogue's stage needs a weight buffer, so 32 inputs keep the halo.
        assert!(!WGPU_SHAPE.uses_blocked(32, 32));
        assert!(!TilePlan::new(WGPU_SHAPE, 32, 32, true).blocked);
        // 640x480 in tiles of 32 x 8: rows of 642 pixels and frames of 482 rows, borders
        // included.
        let layout = BlockedLayout::new(640, 480, 8);
        assert_eq!((layout.padded_width, layout.padded_rows), (642, 482));
        let odd = BlockedLayout::new(37, 29, 8);
        assert_eq!((odd.padded_width, odd.padded_rows), (66, 34));
        assert_eq!(odd.halves(3, 64), 3 * 34 * 66 * 64);
    }

    #[test]
    fn head_units_share_every_output_quad_evenly() {
        for cout in (HEAD_QUAD..=256).step_by(HEAD_QUAD) {
            let (split, px) = head_units(cout);
            assert_eq!((cout / 4) % split, 0, "{cout} outputs");
            assert!(px >= 1);
        }
        assert_eq!(head_units(64), (4, 4));
    }

    /// Vulkan's 48 KiB a workgroup, against the shapes BENCHMARKS.md measured there (64 channels
    /// in and out): the default fits, and 2 rows x 3 planes with one weight buffer fits only
    /// because `store_tile_wide` stages in that buffer instead of an f32 stage.
    #[test]
    fn vulkan_shapes_fit_48_kib_as_measured() {
        let limit = 48 * 1024;
        assert!(HALO_SHAPE.shared_bytes(64, 64) <= limit);
        let two_by_three = TileShape {
            rows: 2,
            planes: 3,
            double_buffered: false,
            ..HALO_SHAPE
        };
        assert!(two_by_three.shared_bytes(64, 64) <= limit);
        let without_wide = TileShape {
            wide_epilogue: false,
            ..two_by_three
        };
        assert!(without_wide.shared_bytes(64, 64) > limit);
        // The last layer's 48 outputs: the stage still fits in its buffer.
        assert!(wide_stage_halves(4, 48) <= staged_halves(64, 48, 48 + 8));
        // Weights staged in two parts: two half-size buffers leave room for a 6-row tile.
        for (rows, planes) in [(1, 6), (2, 3)] {
            let split = TileShape {
                rows,
                planes,
                splits: 2,
                ..HALO_SHAPE
            };
            assert!(split.shared_bytes(64, 64) <= limit, "{rows} x {planes}");
        }
    }

    #[test]
    fn columns_shorten_for_small_pictures_and_walk_only_where_buffers_allow() {
        let shape = |width, height, frames| HALO_SHAPE.for_picture(width, height, frames);
        assert_eq!(shape(1920, 1080, 1).column, 12);
        // 20 tiles across, 120 down: 5 a cube is the longest column that keeps 480 cubes.
        assert_eq!(shape(640, 480, 1).column, 5);
        assert_eq!(shape(640, 480, 4).column, 12);
        // Too few tiles to fill an H200: half as many cubes (2 across x 6), and `verify`'s 20 x
        // 12 picture (3 tiles down) walks, its first cube into the ring's wrap.
        assert_eq!(shape(64, 48, 1).column, 2);
        assert_eq!(shape(20, 12, 1).column, 2);
        let full = shape(1920, 1080, 1);
        assert_eq!(full.column_for(64, 64), 12);
        assert_eq!(
            full.column_for(64, 48),
            12,
            "the last layer's stage fits its buffer"
        );
        for other in [
            TileShape {
                late_halo: true,
                ..full
            },
            TileShape { splits: 2, ..full },
            TileShape {
                double_buffered: false,
                ..full
            },
            TileShape {
                prefetch: false,
                ..full
            },
        ] {
            assert_eq!(other.column_for(64, 64), 1, "{other:?}");
        }
        // The last part leaves buffer 0 to the next tile's first and buffer 1 to the epilogue.
        let walking = TilePlan::new(full, 64, 64, true);
        assert_eq!((walking.column, walking.ring, walking.parts), (12, 6, 9));
        assert_eq!(walking.finish.free, walking.buffer_vectors);
        assert!(walking.finish.wide_in_buffer);
        let one = TileShape { column: 1, ..full };
        assert_eq!(TilePlan::new(one, 64, 64, true).ring, 0);
    }

    #[test]
    fn column_runs_cover_every_tile_once_long_runs_first() {
        let runs = |singles, (w, h), column| {
            TileShape {
                singles,
                ..HALO_SHAPE
            }
            .column_runs(w, h, 1, column)
        };
        let run = |long_runs, singles| ColumnRuns { long_runs, singles };
        // 640x480: 20 columns of 120 tiles. 480 single tiles are 24 rows; 19 runs of 5 take
        // 95 rows, and the 25 left are single tiles.
        assert_eq!(runs(480, (640, 480), 5), run(19, 25));
        // 1080p: 60 columns of 270 tiles; 8 rows of single tiles, 21 runs of 12, 18 rows left.
        assert_eq!(runs(480, (1920, 1080), 12), run(21, 18));
        // None asked for, a column of one tile, or too short a column: every cube walks its run,
        // the last cut short by the picture's edge.
        assert_eq!(runs(0, (640, 480), 5), run(24, 0));
        assert_eq!(runs(0, (1920, 1080), 12), run(23, 0));
        assert_eq!(runs(480, (640, 480), 1), run(120, 0));
        assert_eq!(runs(480, (20, 12), 2), run(2, 0));
        for singles in [0, 1, 6, 100, 480, 5000] {
            for (w, h) in [(20, 12), (40, 21), (640, 480), (1920, 1080), (37, 4000)] {
                for column in 1..=16 {
                    let r = runs(singles, (w, h), column);
                    let down = h.div_ceil(4);
                    if r.singles > 0 {
                        assert_eq!(r.long_runs * column + r.singles, down);
                    } else {
                        assert!(r.long_runs * column >= down && (r.long_runs - 1) * column < down);
                    }
                    assert_eq!(r.cubes(), r.long_runs + r.singles);
                }
            }
        }
    }
}
