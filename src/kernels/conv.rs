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
//!   that its planes share one coalesced read of them.
//! - `conv3x3_direct`: the same convolution for devices without cooperative matrices.
//! - `tail`: pixel shuffle + nearest-neighbour base + clamp, into 8-bit RGB0 or f32 planes.
//!
//! Each kernel takes a batch of `frames` pictures stored one after another, so that small frames
//! still fill the device. `batched` is comptime: a single picture compiles without the per-frame
//! offsets, which cost the tensor-core convolution 28% over Vulkan (BENCHMARKS.md, lease Z).

use cubecl::prelude::*;
use half::f16;

/// Pixels per row of a `conv3x3_tiles` cube.
pub const TILE_X: u32 = 32;
/// The first layer's outputs must be a multiple of this: `head` stores four at a time.
pub const HEAD_QUAD: usize = 4;

#[cube]
fn prelu_if(value: f32, slope: f32, #[comptime] prelu: bool) -> f32 {
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

/// Four floats: the head's unit of weights, sums and stores.
type Quad<F> = Vector<F, Const<4>>;

/// One unit per pixel, all output channels: the first layer has only three input channels, so a
/// unit reads its 27 inputs once and reuses each for every output. The cube's units share the
/// weights through shared memory (the same address for the whole plane: one broadcast read) and
/// write a pixel's outputs four channels per store.
#[cube(launch_unchecked)]
pub fn head<F: Float>(
    input: &Array<f32>,
    weight: &Array<Quad<f32>>,
    bias: &Array<f32>,
    slope: &Array<f32>,
    output: &mut Array<Quad<F>>,
    height: u32,
    width: u32,
    frames: u32,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] batched: bool,
) {
    let quads = comptime![cout / 4];
    let weight_quads = comptime![9 * cin * cout / 4];
    let mut weights = SharedMemory::<Quad<f32>>::new(weight_quads);
    let mut i = UNIT_POS as usize;
    while i < weight_quads {
        weights[i] = weight[i];
        i += CUBE_DIM as usize;
    }
    sync_cube();

    let w = width as usize;
    let plane = w * height as usize;
    let pixel = ABSOLUTE_POS;
    let mut pixels = plane;
    if comptime![batched] {
        pixels = plane * frames as usize;
    }
    if pixel < pixels {
        let mut first_plane = 0usize;
        let mut within = pixel;
        if comptime![batched] {
            first_plane = (pixel / plane) * cin * plane;
            within = pixel % plane;
        }
        let x = (within % w) as i32;
        let y = (within / w) as i32;
        let mut acc = Array::<Quad<f32>>::new(quads);
        #[unroll]
        for q in 0..quads {
            acc[q] = Quad::<f32>::new(0.0);
        }
        #[unroll]
        for tap in 0..9usize {
            let sx = x + (tap % 3) as i32 - 1;
            let sy = y + (tap / 3) as i32 - 1;
            if sx >= 0 && sx < width as i32 && sy >= 0 && sy < height as i32 {
                let at = sy as usize * w + sx as usize;
                #[unroll]
                for ci in 0..cin {
                    let v = Quad::<f32>::new(input[first_plane + ci * plane + at]);
                    let row = (tap * cin + ci) * quads;
                    #[unroll]
                    for q in 0..quads {
                        acc[q] += v * weights[row + q];
                    }
                }
            }
        }
        #[unroll]
        for q in 0..quads {
            let sums = acc[q];
            let mut out = Quad::<F>::empty();
            #[unroll]
            for j in 0..4usize {
                let ch = q * 4 + j;
                out[j] = F::cast_from(prelu_if(sums[j] + bias[ch], slope[ch], true));
            }
            output[pixel * quads + q] = out;
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

/// Tensor-core 3×3 convolution (see the module comment). `cin` and `cout` are multiples of 16;
/// activations are read and written 16 bytes at a time. Each of the cube's `planes` planes
/// computes `rows` rows of 32 pixels × every output channel. Weights come in fragment order
/// (`fragment_weights`): each 16×16 operand is 512 contiguous bytes.
#[cube(launch_unchecked)]
pub fn conv3x3_tiles(
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
    #[comptime] weights_shared: bool,
    #[comptime] prelu: bool,
    #[comptime] batched: bool,
) {
    let tile_x = comptime![TILE_X as usize];
    let tile_y = comptime![planes * rows];
    let halo_w = comptime![tile_x + 2];
    let halo_pixels = comptime![(tile_y + 2) * halo_w];
    // A pixel's channels padded by `pad` halves: with 8 (144 bytes a pixel), the eight 16-byte
    // rows a tensor-core load reads at once fall in distinct shared memory banks (a 128-byte
    // stride put them all in the same ones; 16 halves, in two). An operand then starts on a
    // 16-byte boundary only: what `ldmatrix` and Vulkan's cooperative matrix loads need, tested
    // on cuda and Vulkan (tests/backends.rs).
    let stride = comptime![cin + pad];
    let vectors_in = comptime![cin / 8];
    let vectors_out = comptime![cout / 8];
    let pixel_vectors = comptime![stride / 8];
    let m_frags = comptime![tile_x / 16];
    let n_frags = comptime![cout / 16];
    let k_frags = comptime![cin / 16];
    let units = comptime![32 * planes];
    let loads = comptime![(halo_pixels * vectors_in).div_ceil(units)];

    let w = width as usize;
    // Frames of a batch follow each other; each has its own layer of cubes in z.
    let mut frame_start = 0usize;
    if comptime![batched] {
        frame_start = CUBE_POS_Z as usize * w * height as usize;
    }
    let x0 = (CUBE_POS_X * TILE_X) as i32;
    let y0 = CUBE_POS_Y as i32 * tile_y as i32;
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let unit = plane * 32 + lane;

    let mut halo = SharedMemory::<Half8>::new(comptime![halo_pixels * pixel_vectors]);
    let mut stage = SharedMemory::<Float4>::new(comptime![planes * 64]);
    let mut epilogue = SharedMemory::<f32>::new(comptime![2 * cout]);
    // With `weights_shared`, one tap's weights at a time, each 16x16 operand's rows 48 bytes
    // apart (3 vectors): eight rows then fall in distinct banks, and operands stay 256-byte
    // aligned. The cube loads them with 16-byte loads instead of each plane reading operands
    // from global memory.
    let tap_operands = comptime![k_frags * n_frags];
    let tap_vectors = comptime![tap_operands * 32];
    let staged_vectors = comptime![if weights_shared { tap_operands * 48 } else { 1 }];
    let mut staged = SharedMemory::<Half8>::new(staged_vectors);

    #[unroll]
    for load in 0..loads {
        let i = load * units + unit;
        if i < halo_pixels * vectors_in {
            let c = i % vectors_in;
            let pixel = i / vectors_in;
            let sx = x0 + (pixel % halo_w) as i32 - 1;
            let sy = y0 + (pixel / halo_w) as i32 - 1;
            let mut v = Half8::new(f16::new(0.0));
            if sx >= 0 && sx < width as i32 && sy >= 0 && sy < height as i32 {
                v = input[(frame_start + sy as usize * w + sx as usize) * vectors_in + c];
            }
            halo[pixel * pixel_vectors + c] = v;
        }
    }
    if unit < cout {
        epilogue[unit] = bias[unit];
        epilogue[cout + unit] = slope[unit];
    }
    sync_cube();

    let mut acc = Sequence::<cmma::Matrix<f32>>::new();
    #[unroll]
    for _ in 0..rows * m_frags * n_frags {
        acc.push(cmma::Matrix::<f32>::from_value(
            cmma::MatrixIdent::Accumulator,
            16usize,
            16usize,
            16usize,
            cmma::MatrixLayout::Undefined,
            0.0,
        ));
    }

    #[unroll(unroll_taps)]
    for tap in 0..9usize {
        let dy = tap / 3;
        let dx = tap % 3;
        if comptime![weights_shared] {
            // Every plane is done with the previous tap's operands.
            sync_cube();
            #[unroll]
            for load in 0..comptime![tap_vectors.div_ceil(units)] {
                let v = load * units + unit;
                if v < tap_vectors {
                    let within = v % 32;
                    staged[(v / 32) * 48 + (within / 2) * 3 + within % 2] =
                        weight[tap * tap_vectors + v];
                }
            }
            sync_cube();
        }
        #[unroll]
        for kf in 0..k_frags {
            let mut a = Sequence::<cmma::Matrix<f16>>::new();
            #[unroll]
            for r in 0..rows {
                #[unroll]
                for mf in 0..m_frags {
                    let row = plane * rows + r;
                    let start = ((row + dy) * halo_w + mf * 16 + dx) * pixel_vectors + kf * 2;
                    let operand = unsafe {
                        cmma::Matrix::<f16>::uninitialized(
                            cmma::MatrixIdent::A,
                            16usize,
                            16usize,
                            16usize,
                            cmma::MatrixLayout::RowMajor,
                        )
                    };
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
                let op = kf * n_frags + nf;
                let b = unsafe {
                    cmma::Matrix::<f16>::uninitialized(
                        cmma::MatrixIdent::B,
                        16usize,
                        16usize,
                        16usize,
                        cmma::MatrixLayout::RowMajor,
                    )
                };
                if comptime![weights_shared] {
                    cmma::load(&b, &staged.slice(op * 48, op * 48 + 48), 24);
                } else {
                    let start = (tap * tap_operands + op) * 32;
                    cmma::load(&b, &weight.slice(start, start + 32), 16);
                }
                #[unroll]
                for m in 0..rows * m_frags {
                    let c = acc.index(m * n_frags + nf);
                    cmma::execute::<f16, f16, f32, f32>(a.index(m), &b, c, c);
                }
            }
        }
    }

    // Each fragment goes through the plane's 16 × 16 f32 stage; a lane then finishes 8 channels
    // of one pixel and writes them as one 16-byte store.
    let stage_start = plane * 64;
    let px = lane / 2;
    let half = lane % 2;
    #[unroll]
    for r in 0..rows {
        let y = y0 as usize + plane * rows + r;
        #[unroll]
        for mf in 0..m_frags {
            let x = x0 as usize + mf * 16 + px;
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
                    output[(frame_start + y * w + x) * vectors_out + nf * 2 + half] = out;
                }
                sync_plane();
            }
        }
    }
}

/// How `conv3x3_tiles` divides the picture: each cube has `planes` planes of 32 units, each
/// plane computes `rows` rows of 32 pixels; `unroll_taps` unrolls the loop over the 9 taps. A
/// pixel's channels are `pad` halves apart beyond `cin` in shared memory; `weights_shared` stages
/// each tap's weights in shared memory instead of reading them from global memory per plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileShape {
    pub rows: usize,
    pub planes: usize,
    pub unroll_taps: bool,
    pub pad: usize,
    pub weights_shared: bool,
}

impl TileShape {
    /// Shared memory one cube uses for `cin` input channels and `cout` outputs.
    pub fn shared_bytes(&self, cin: usize, cout: usize) -> usize {
        let halo = (self.planes * self.rows + 2) * (TILE_X as usize + 2) * (cin + self.pad) * 2;
        let staged = if self.weights_shared {
            cin / 16 * cout / 16 * 768
        } else {
            16
        };
        halo + self.planes * 1024 + 2 * cout * 4 + staged
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
    #[comptime] scale: usize,
    #[comptime] packed: bool,
    #[comptime] batched: bool,
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
            let r =
                f32::cast_from(residual[(frame * plane + at) * channels + c * scale * scale + sub]);
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
