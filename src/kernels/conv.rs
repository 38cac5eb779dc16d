//! The SRVGG network's kernels in CubeCL, written once for CUDA and wgpu. Activations are
//! channels-last (height × width × channels) in the storage float `F`; every sum is accumulated in
//! f32. Weights are laid out tap × in × out, so that one tap's weights are an in × out matrix.
//!
//! - `head`: the first 3×3 convolution, read straight from the planar f32 picture, + PReLU.
//! - `conv3x3_tiles`: a 3×3 convolution + bias + PReLU on tensor cores (cooperative matrices).
//!   A cube of 4 planes computes 4 rows × 32 pixels × every output channel. The input tile and
//!   its one-pixel halo sit in shared memory; because a pixel's channels are contiguous, the
//!   16-pixel × 16-channel operand for tap (dy, dx) is that tile read from a shifted start, so no
//!   im2col buffer exists.
//! - `conv3x3_direct`: the same convolution for devices without cooperative matrices.
//! - `tail`: pixel shuffle + nearest-neighbour base + clamp, into 8-bit RGB0 or f32 planes.

use cubecl::prelude::*;
use half::f16;

/// Pixels per row of a `conv3x3_tiles` cube, and its planes (32 units each).
pub const TILE_X: u32 = 32;
pub const PLANES: u32 = 4;
/// Output channels per unit of `head`; the first layer's outputs must be a multiple of it.
pub const HEAD_GROUP: usize = 16;

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

/// One unit per (pixel, 16 output channels): the first layer has only three input channels, so
/// each unit reads its 27 inputs once and reuses them for all its outputs.
#[cube(launch_unchecked)]
pub fn head<F: Float>(
    input: &Array<f32>,
    weight: &Array<f32>,
    bias: &Array<f32>,
    slope: &Array<f32>,
    output: &mut Array<F>,
    height: u32,
    width: u32,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
) {
    let group = comptime![HEAD_GROUP];
    let groups = comptime![cout / HEAD_GROUP];
    let w = width as usize;
    let h = height as usize;
    let index = ABSOLUTE_POS;
    if index < w * h * groups {
        let first = (index % groups) * group;
        let pixel = index / groups;
        let x = (pixel % w) as i32;
        let y = (pixel / w) as i32;
        let plane = w * h;
        let mut acc = Array::<f32>::new(group);
        #[unroll]
        for j in 0..group {
            acc[j] = bias[first + j];
        }
        #[unroll]
        for tap in 0..9usize {
            let sx = x + (tap % 3) as i32 - 1;
            let sy = y + (tap / 3) as i32 - 1;
            if sx >= 0 && sx < width as i32 && sy >= 0 && sy < height as i32 {
                let at = sy as usize * w + sx as usize;
                #[unroll]
                for ci in 0..cin {
                    let v = input[ci * plane + at];
                    let row = (tap * cin + ci) * cout + first;
                    #[unroll]
                    for j in 0..group {
                        acc[j] += v * weight[row + j];
                    }
                }
            }
        }
        let out = pixel * cout + first;
        #[unroll]
        for j in 0..group {
            output[out + j] = F::cast_from(prelu_if(acc[j], slope[first + j], true));
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
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] group: usize,
    #[comptime] prelu: bool,
) {
    let w = width as usize;
    let h = height as usize;
    let groups = cout / group;
    let index = ABSOLUTE_POS;
    if index < w * h * groups {
        let first = (index % groups) * group;
        let pixel = index / groups;
        let x = (pixel % w) as i32;
        let y = (pixel / w) as i32;
        let mut acc = Array::<f32>::new(group);
        #[unroll]
        for j in 0..group {
            acc[j] = bias[first + j];
        }
        for tap in 0..9usize {
            let sx = x + (tap % 3) as i32 - 1;
            let sy = y + (tap / 3) as i32 - 1;
            if sx >= 0 && sx < width as i32 && sy >= 0 && sy < height as i32 {
                let at = (sy as usize * w + sx as usize) * cin;
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

/// Tensor-core 3×3 convolution (see the module comment). `cin` and `cout` are multiples of 16.
/// Each of the cube's 4 planes computes `rows` rows of 32 pixels × every output channel. Weights
/// come in fragment order (`fragment_weights`): each 16×16 operand is 512 contiguous bytes.
#[cube(launch_unchecked)]
pub fn conv3x3_tiles(
    input: &Array<f16>,
    weight: &Array<f16>,
    bias: &Array<f32>,
    slope: &Array<f32>,
    output: &mut Array<f16>,
    height: u32,
    width: u32,
    #[comptime] cin: usize,
    #[comptime] cout: usize,
    #[comptime] rows: usize,
    #[comptime] prelu: bool,
) {
    let tile_x = comptime![TILE_X as usize];
    let tile_y = comptime![PLANES as usize * rows];
    let halo_w = comptime![tile_x + 2];
    // A pixel's channels padded by 16 halves: rows of an operand then fall in different shared
    // memory banks (a 128-byte stride put all 16 in the same ones), and stay 32-byte aligned.
    let stride = comptime![cin + 16];
    let halo_pixels = comptime![(tile_y + 2) * halo_w];
    let m_frags = comptime![tile_x / 16];
    let n_frags = comptime![cout / 16];
    let k_frags = comptime![cin / 16];
    let units = comptime![32 * PLANES as usize];

    let w = width as usize;
    let x0 = (CUBE_POS_X * TILE_X) as i32;
    let y0 = CUBE_POS_Y as i32 * tile_y as i32;
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let unit = plane * 32 + lane;

    let mut halo = SharedMemory::<f16>::new(comptime![halo_pixels * (cin + 16)]);
    let mut stage = SharedMemory::<f32>::new(comptime![PLANES as usize * 256]);

    let mut i = unit;
    while i < halo_pixels * cin {
        let c = i % cin;
        let pixel = i / cin;
        let sx = x0 + (pixel % halo_w) as i32 - 1;
        let sy = y0 + (pixel / halo_w) as i32 - 1;
        let mut v = f16::new(0.0);
        if sx >= 0 && sx < width as i32 && sy >= 0 && sy < height as i32 {
            v = input[(sy as usize * w + sx as usize) * cin + c];
        }
        halo[pixel * stride + c] = v;
        i += units;
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

    #[unroll]
    for tap in 0..9usize {
        let dy = tap / 3;
        let dx = tap % 3;
        #[unroll]
        for kf in 0..k_frags {
            let mut a = Sequence::<cmma::Matrix<f16>>::new();
            #[unroll]
            for r in 0..rows {
                #[unroll]
                for mf in 0..m_frags {
                    let row = plane * rows + r;
                    let start = ((row + dy) * halo_w + mf * 16 + dx) * stride + kf * 16;
                    a.push(cmma::Matrix::<f16>::from_slice(
                        cmma::MatrixIdent::A,
                        16usize,
                        16usize,
                        16usize,
                        cmma::MatrixLayout::RowMajor,
                        &halo.slice(start, start + 16 * stride),
                        stride as u32,
                    ));
                }
            }
            #[unroll]
            for nf in 0..n_frags {
                let start = ((tap * k_frags + kf) * n_frags + nf) * 256;
                let b = cmma::Matrix::<f16>::from_slice(
                    cmma::MatrixIdent::B,
                    16usize,
                    16usize,
                    16usize,
                    cmma::MatrixLayout::RowMajor,
                    &weight.slice(start, start + 256),
                    16,
                );
                #[unroll]
                for m in 0..rows * m_frags {
                    let c = acc.index(m * n_frags + nf);
                    cmma::execute::<f16, f16, f32, f32>(a.index(m), &b, c, c);
                }
            }
        }
    }

    let stage_start = plane * 256;
    #[unroll]
    for r in 0..rows {
        let y = y0 as usize + plane * rows + r;
        #[unroll]
        for mf in 0..m_frags {
            #[unroll]
            for nf in 0..n_frags {
                cmma::store(
                    &mut stage.slice_mut(stage_start, stage_start + 256),
                    acc.index((r * m_frags + mf) * n_frags + nf),
                    16,
                    cmma::MatrixLayout::RowMajor,
                );
                sync_plane();
                #[unroll]
                for e in 0..8usize {
                    let at = e * 32 + lane;
                    let px = at / 16;
                    let ch = nf * 16 + at % 16;
                    let x = x0 as usize + mf * 16 + px;
                    if x < w && y < height as usize {
                        let v = stage[stage_start + at] + bias[ch];
                        output[(y * w + x) * cout + ch] =
                            f16::cast_from(prelu_if(v, slope[ch], prelu));
                    }
                }
                sync_plane();
            }
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
    #[comptime] scale: usize,
    #[comptime] packed: bool,
) {
    let index = ABSOLUTE_POS;
    let kw = keep_w as usize;
    let kh = keep_h as usize;
    if index < kw * kh {
        let ox = keep_x as usize + index % kw;
        let oy = keep_y as usize + index / kw;
        let w = width as usize;
        let sx = ox / scale;
        let sy = oy / scale;
        let sub = (oy % scale) * scale + ox % scale;
        let channels = comptime![3 * scale * scale];
        let at = sy * w + sx;
        let plane = w * height as usize;
        let mut word = 0u32;
        #[unroll]
        for c in 0..3usize {
            let r = f32::cast_from(residual[at * channels + c * scale * scale + sub]);
            let v = clamp(r + input[c * plane + at], 0.0, 1.0);
            if comptime![packed] {
                word |= u32::cast_from(f32::floor(v * 255.0 + 0.5)) << (8 * c) as u32;
            } else {
                planes[c * kw * kh + index] = v;
            }
        }
        if comptime![packed] {
            rgb[index] = word;
        }
    }
}
