//! Runs a recognised SRVGG network on our kernels: weights uploaded once, then per picture one
//! launch for the head, one per convolution, one for the tail, and one read-back of the kept
//! region, already quantised.

use cubecl::prelude::*;
use cubecl::server::Handle;
use cubecl::{calculate_cube_count_elemwise, CubeElement};
use half::f16;
use std::time::{Duration, Instant};

use super::conv::{self, BlockedLayout, TileShape, WeightLayout, TILE_X};
use super::conv_mma;
use super::picture;
use super::srvgg::Srvgg;
use super::{Fused, FusedOutput, Keep, Timing};
use crate::model::forward::Precision;

struct DeviceLayer {
    cin: usize,
    cout: usize,
    weight: Handle,
    bias: Handle,
    slope: Handle,
    prelu: bool,
}

pub struct Engine<R: Runtime> {
    client: ComputeClient<R>,
    layers: Vec<DeviceLayer>,
    scale: usize,
    precision: Precision,
    tensor_cores: bool,
    /// How `conv3x3_tiles` divides the picture.
    shape: TileShape,
    /// The backend's default shape, which `describe` names differences from.
    preferred: TileShape,
    /// `LeftOut`'s bits: launches left out, for timing only.
    left_out: u32,
}

/// Launches of a forward that `UPFRAME_LAUNCHES_LEFT_OUT` leaves out, to time the rest on any
/// backend: its results are then wrong.
pub struct LeftOut;

impl LeftOut {
    pub const HEAD: u32 = 1;
    pub const TAIL: u32 = 2;
    pub const CONVOLUTIONS: u32 = 4;
}

/// f16 operands, f32 sums, in `m`×`n`×`k` steps.
fn f16_into_f32(m: u32, n: u32, k: u32) -> cubecl::ir::features::MmaConfig {
    use cubecl::ir::{ElemType, FloatKind};
    cubecl::ir::features::MmaConfig {
        a_type: ElemType::Float(FloatKind::F16).into(),
        b_type: ElemType::Float(FloatKind::F16).into(),
        cd_type: ElemType::Float(FloatKind::F32).into(),
        m,
        k,
        n,
    }
}

/// Whether the device multiplies 16×16×16 f16 matrices into f32 (tensor cores, or Vulkan's
/// cooperative matrices) with 32-wide planes, the shape `conv3x3_tiles` is written for.
pub fn has_tensor_cores<R: Runtime>(client: &ComputeClient<R>) -> bool {
    let hardware = &client.properties().hardware;
    client
        .properties()
        .features
        .matmul
        .cmma
        .contains(&f16_into_f32(16, 16, 16))
        && hardware.plane_size_min <= 32
        && hardware.plane_size_max >= 32
}

/// Whether the device runs PTX `mma.sync` m16n8k16 on f16 into f32 and asynchronous copies,
/// what `conv_mma::conv3x3_mma` needs.
fn has_register_mma<R: Runtime>(client: &ComputeClient<R>) -> bool {
    let features = &client.properties().features;
    features.matmul.mma.contains(&f16_into_f32(16, 8, 16)) && features.copy_async
}

/// Whether the device copies tensor-map boxes and bulk bytes into shared memory (Hopper's
/// tensor memory accelerator), what `conv_mma::conv3x3_mma_tma` needs.
fn has_tma<R: Runtime>(client: &ComputeClient<R>) -> bool {
    client
        .properties()
        .features
        .tma
        .contains(cubecl::ir::features::Tma::Base)
}

/// A tiled tensor map over `handle`, a contiguous tensor of halves shaped `shape` (outermost
/// first), copied `box_` elements at a time.
///
/// # Safety
/// `handle` must hold at least the product of `shape` halves.
unsafe fn half_tensor_map<R: Runtime>(
    handle: &Handle,
    shape: Vec<usize>,
    box_: Vec<usize>,
) -> TensorMapArg<R, Tiled> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len() - 1).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let tensor = unsafe { TensorArg::from_raw_parts(handle.clone(), strides.into(), shape.into()) };
    TensorMapArg::new(
        TiledArgs {
            tile_size: box_.into(),
        },
        tensor,
        f16::as_type_native_unchecked(),
    )
}

/// The tensor-core convolution's tile shapes measured best on an H200 (BENCHMARKS.md, "Tile
/// shapes", "Weights staged in shared memory", "Asynchronous weight copies", "Register
/// fragments" and "Tensor memory accelerator"): through CUDA, `conv_mma::conv3x3_mma_tma`
/// where the device has Hopper's tensor memory accelerator (else `conv_mma::conv3x3_mma`, its
/// copies by `cp.async`), 2 rows x 4 planes, each tap's weights copied into one of two buffers
/// of packed operands, the taps in a loop (faster than unrolled with these copies); through
/// wgpu (over Vulkan, which has 48 KiB of shared memory and no asynchronous copies),
/// `conv3x3_tiles`, 2 rows x 4 planes, its input operands read straight from channel-blocked
/// activations in global memory, with no halo in shared memory ("Operands read from global
/// memory"; without that layout, 1 row x 4 planes is the largest tile whose halo fits), each
/// unit fetching its share of the next tap's weights into registers before this tap's
/// multiplies and storing it into the second of two buffers (one matrix with padded rows), one
/// barrier a tap, the taps unrolled ("Where Vulkan's time goes"), its outputs stored 16 pixels
/// at a time through the free buffer, each cube computing up to 4 tiles down a column ("Cubes
/// that walk down a column"), about 240 tiles at the bottom of the columns left to cubes of one
/// tile each ("A layer's last cubes"). Both pad a pixel's channels by 8 halves where they
/// stage a halo.
pub const CUDA_SHAPE: TileShape = TileShape {
    rows: 2,
    planes: 4,
    unroll_taps: false,
    pad: 8,
    weights_shared: true,
    weights: WeightLayout::Packed,
    prefetch: false,
    asynchronous: true,
    mma: true,
    double_buffered: false,
    tma: true,
    wide_epilogue: false,
    splits: 1,
    ablate: 0,
    late_halo: false,
    column: 1,
    singles: 0,
    blocked: false,
};
pub const WGPU_SHAPE: TileShape = TileShape {
    rows: 2,
    planes: 4,
    unroll_taps: true,
    pad: 8,
    weights_shared: true,
    weights: WeightLayout::Matrix,
    prefetch: true,
    asynchronous: false,
    mma: false,
    double_buffered: true,
    tma: false,
    wide_epilogue: true,
    splits: 1,
    ablate: 0,
    late_halo: false,
    column: 4,
    singles: 240,
    blocked: true,
};

/// A measurement knob: the environment variable `name` as a number, else `default`.
fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The tile shape of `conv3x3_tiles`: `preferred` where its input tile fits the device's shared
/// memory (Vulkan often allows 48 KiB), else the largest smaller one, with one weight buffer if
/// two do not fit. `UPFRAME_CONV_ROWS`,
/// `UPFRAME_CONV_PLANES`, `UPFRAME_CONV_UNROLL` (0 or 1), `UPFRAME_CONV_PAD` (halves) and
/// `UPFRAME_CONV_WEIGHTS_SHARED` (0 or 1), `UPFRAME_CONV_WEIGHTS` (packed, padded or matrix),
/// `UPFRAME_CONV_PREFETCH` (0 or 1), `UPFRAME_CONV_DOUBLE` (0 or 1: two weight buffers with the
/// prefetch), `UPFRAME_CONV_ASYNC` (0 or 1; only where the device has asynchronous copies) and
/// `UPFRAME_CONV_MMA` (0 or 1; only where it also runs `mma.sync`) and `UPFRAME_CONV_TMA` (0
/// or 1; with `mma`, only where the device has a tensor memory accelerator) and
/// `UPFRAME_CONV_WIDE` (0 or 1: `conv3x3_tiles` stores 16 pixels at a time) and
/// `UPFRAME_CONV_SPLITS` (1, 2 or 4: parts a tap's weights are staged in) and
/// `UPFRAME_CONV_LATE_HALO` (0 or 1: the halo's last two rows loaded during the first taps)
/// and `UPFRAME_CONV_COLUMN` (the most tiles a cube computes one below the other; 1: none)
/// and `UPFRAME_CONV_SINGLES` (about how many one-tile cubes end a walking layer; 0: none)
/// override it for measurements. `UPFRAME_CONV_ABLATE` (`conv::Ablation`'s bits) leaves parts
/// of `conv3x3_tiles` out, to time the rest: its results are then wrong.
fn tile_shape<R: Runtime>(
    client: &ComputeClient<R>,
    preferred: TileShape,
    cin: usize,
    cout: usize,
) -> TileShape {
    // Without asynchronous copies, the synchronous kernel's own best (not the asynchronous
    // shape with its copies turned off: packed weights lose there).
    let preferred = if preferred.asynchronous && !client.properties().features.copy_async {
        preferred.synchronous()
    } else {
        preferred
    };
    let asked = TileShape {
        rows: knob("UPFRAME_CONV_ROWS", preferred.rows),
        planes: knob("UPFRAME_CONV_PLANES", preferred.planes),
        unroll_taps: knob("UPFRAME_CONV_UNROLL", preferred.unroll_taps as usize) != 0,
        pad: knob("UPFRAME_CONV_PAD", preferred.pad),
        weights_shared: knob(
            "UPFRAME_CONV_WEIGHTS_SHARED",
            preferred.weights_shared as usize,
        ) != 0,
        weights: std::env::var("UPFRAME_CONV_WEIGHTS")
            .ok()
            .and_then(|v| WeightLayout::parse(&v))
            .unwrap_or(preferred.weights),
        prefetch: knob("UPFRAME_CONV_PREFETCH", preferred.prefetch as usize) != 0,
        asynchronous: knob("UPFRAME_CONV_ASYNC", preferred.asynchronous as usize) != 0
            && client.properties().features.copy_async,
        mma: knob("UPFRAME_CONV_MMA", preferred.mma as usize) != 0 && has_register_mma(client),
        double_buffered: knob("UPFRAME_CONV_DOUBLE", preferred.double_buffered as usize) != 0,
        tma: knob("UPFRAME_CONV_TMA", preferred.tma as usize) != 0 && has_tma(client),
        wide_epilogue: knob("UPFRAME_CONV_WIDE", preferred.wide_epilogue as usize) != 0,
        splits: knob("UPFRAME_CONV_SPLITS", preferred.splits),
        ablate: knob("UPFRAME_CONV_ABLATE", preferred.ablate as usize) as u32,
        late_halo: knob("UPFRAME_CONV_LATE_HALO", preferred.late_halo as usize) != 0,
        column: knob("UPFRAME_CONV_COLUMN", preferred.column),
        singles: knob("UPFRAME_CONV_SINGLES", preferred.singles),
        blocked: preferred.blocked && knob("UPFRAME_CONV_BLOCKED", 1) != 0,
    };
    // One box a side holds at most 256 elements: the halo's pixel, a tap's weight rows.
    let boxes_fit = cin + asked.pad <= 256 && cin * cout <= 256 * conv_mma::WEIGHT_ROW;
    let asked = TileShape {
        tma: asked.tma && asked.mma && boxes_fit,
        ..asked
    };
    let limit = client.properties().hardware.max_shared_memory_size;
    let fits = |shape: &TileShape| shape.shared_bytes(cin, cout) <= limit;
    let one_buffer = TileShape {
        double_buffered: false,
        ..asked
    };
    let sizes = [(asked.rows, asked.planes), (1, asked.planes), (1, 2)];
    sizes
        .into_iter()
        .flat_map(|(rows, planes)| {
            [asked, one_buffer].map(|shape| TileShape {
                rows,
                planes,
                ..shape
            })
        })
        .find(fits)
        .unwrap_or(TileShape {
            rows: 1,
            planes: 1,
            ..one_buffer
        })
}

impl<R: Runtime> Engine<R> {
    pub fn new(net: &Srvgg, precision: Precision, device: &R::Device, shape: TileShape) -> Self {
        let client = R::client(device);
        let tensor_cores = precision == Precision::F16
            && has_tensor_cores(&client)
            && net.layers[1..]
                .iter()
                .all(|l| l.cin % 16 == 0 && l.cout % 16 == 0);
        let widest = |f: fn(&super::srvgg::Layer) -> usize| {
            net.layers[1..].iter().map(f).max().unwrap_or(16)
        };
        let preferred = shape;
        let fitted = |shape| tile_shape(&client, shape, widest(|l| l.cin), widest(|l| l.cout));
        let shape = fitted(shape);
        // One layout between all layers: blocked only where every convolution reads it.
        let blocked = tensor_cores
            && net.layers[1..]
                .iter()
                .all(|l| shape.uses_blocked(l.cin, l.cout));
        let shape = if shape.blocked && !blocked {
            fitted(TileShape {
                blocked: false,
                ..preferred
            })
        } else {
            shape
        };
        let floats = |v: &[f32]| client.create_from_slice(f32::as_bytes(v));
        let halves = |v: &[f32]| {
            let v: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            client.create_from_slice(f16::as_bytes(&v))
        };
        let operands = |l: &super::srvgg::Layer| {
            let fragments = conv::fragment_weights(&l.weight, l.cin, l.cout);
            if shape.tma {
                conv_mma::swizzled_operands(&fragments)
            } else {
                fragments
            }
        };
        let layers = net
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| DeviceLayer {
                cin: l.cin,
                cout: l.cout,
                // The head reads f32 weights; the rest read the storage type.
                weight: match (i, precision) {
                    (0, _) | (_, Precision::F32) => floats(&l.weight),
                    _ if tensor_cores => halves(&operands(l)),
                    _ => halves(&l.weight),
                },
                bias: floats(&l.bias),
                slope: floats(l.slopes.as_deref().unwrap_or(&l.bias)),
                prelu: l.slopes.is_some(),
            })
            .collect();
        let left_out = knob("UPFRAME_LAUNCHES_LEFT_OUT", 0) as u32;
        Self {
            preferred,
            left_out,
            client,
            layers,
            scale: net.scale,
            precision,
            tensor_cores,
            shape,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_as<F: Float + CubeElement>(
        &self,
        input: &Handle,
        frames: usize,
        width: usize,
        height: usize,
        keep: Keep,
        packed: bool,
    ) -> Result<FusedOutput, String> {
        let output = self.forward::<F>(input, width, height, frames, keep, packed);
        let bytes = self
            .client
            .read_one(output)
            .map_err(|e| format!("reading the result back: {e:?}"))?;
        Ok(if packed {
            FusedOutput::Rgb8(bytemuck::pod_collect_to_vec(&bytes))
        } else {
            FusedOutput::Planes(bytemuck::pod_collect_to_vec(&bytes))
        })
    }

    fn run_handle(
        &self,
        input: &Handle,
        frames: usize,
        width: usize,
        height: usize,
        keep: Keep,
        packed: bool,
    ) -> Result<FusedOutput, String> {
        match self.precision {
            Precision::F16 => self.run_as::<f16>(input, frames, width, height, keep, packed),
            Precision::F32 => self.run_as::<f32>(input, frames, width, height, keep, packed),
        }
    }

    fn time_as<F: Float + CubeElement>(
        &self,
        width: usize,
        height: usize,
        timing: Timing,
    ) -> Vec<Duration> {
        let batch = timing.batch;
        let planes: Vec<f32> = (0..3 * width * height * batch)
            .map(|i| (i.wrapping_mul(2654435761) % 1000) as f32 / 1000.0)
            .collect();
        let input = self.client.create_from_slice(f32::as_bytes(&planes));
        let keep = (0, 0, width * self.scale, height * self.scale);
        let queue = timing.queue.max(1);
        let sample = || {
            let start = Instant::now();
            // Held until after the sync, so that no output's memory is reused while queued.
            let outs: Vec<Handle> = (0..queue)
                .map(|_| self.forward::<F>(&input, width, height, batch, keep, true))
                .collect();
            cubecl::future::block_on(self.client.sync()).expect("device sync");
            drop(outs);
            start.elapsed() / queue as u32
        };
        for _ in 0..3 {
            sample();
        }
        (0..timing.runs.max(1)).map(|_| sample()).collect()
    }

    /// Queues the whole network on `input` (`frames` pictures of 3 f32 planes, one after
    /// another) and returns the handle of the results, one after another.
    fn forward<F: Float + CubeElement>(
        &self,
        input: &Handle,
        width: usize,
        height: usize,
        frames: usize,
        keep: Keep,
        packed: bool,
    ) -> Handle {
        let client = &self.client;
        let pixels = width * height * frames;
        let (h, w, n) = (height as u32, width as u32, frames as u32);
        let head = &self.layers[0];
        let blocked = self.tensor_cores && self.shape.blocked;
        let layout = BlockedLayout::new(width, height, self.shape.rows * self.shape.planes);
        let (pw, pr) = match blocked {
            true => (layout.padded_width as u32, layout.padded_rows as u32),
            false => (0, 0),
        };
        // Elements of an activation buffer of `channels`.
        let activations = |channels: usize| match blocked {
            true => layout.halves(frames, channels),
            false => pixels * channels,
        };
        let mut x = client.empty(activations(head.cout) * size_of::<F>());
        let cube = CubeDim::new_1d(256);
        if self.left_out & LeftOut::HEAD == 0 {
            let (split, px) = conv::head_units(head.cout);
            let units = width.div_ceil(px) * height * frames * split;
            unsafe {
                conv::head::launch_unchecked::<F, R>(
                    client,
                    calculate_cube_count_elemwise(client, units, cube),
                    cube,
                    ArrayArg::from_raw_parts(input.clone(), 3 * pixels),
                    ArrayArg::from_raw_parts(head.weight.clone(), 9 * head.cin * head.cout / 4),
                    ArrayArg::from_raw_parts(head.bias.clone(), head.cout),
                    ArrayArg::from_raw_parts(head.slope.clone(), head.cout),
                    ArrayArg::from_raw_parts(x.clone(), activations(head.cout) / 4),
                    h,
                    w,
                    n,
                    pw,
                    pr,
                    head.cin,
                    head.cout,
                    split,
                    px,
                    frames > 1,
                    blocked,
                )
            };
        }
        let convolutions = match self.left_out & LeftOut::CONVOLUTIONS {
            0 => &self.layers[1..],
            _ => &[],
        };
        for layer in convolutions {
            let y = client.empty(activations(layer.cout) * size_of::<F>());
            // Safety: each length is the element count of the buffer created for it above.
            let params = unsafe {
                (
                    ArrayArg::from_raw_parts(layer.weight.clone(), 9 * layer.cin * layer.cout),
                    ArrayArg::from_raw_parts(layer.bias.clone(), layer.cout),
                    ArrayArg::from_raw_parts(layer.slope.clone(), layer.cout),
                )
            };
            if self.tensor_cores {
                let shape = self.shape.for_picture(width, height, frames);
                // Cubes that walk compute runs of up to `column` tiles, one below the other
                // (with a column of 1, one cube a tile).
                let column = shape.column_for(layer.cin, layer.cout);
                let runs = shape.column_runs(width, height, frames, column);
                let count = CubeCount::Static(w.div_ceil(TILE_X), runs.cubes() as u32, n);
                let dim = CubeDim::new_2d(32, shape.planes as u32);
                // Safety: 16-byte vectors, 8 halves each; channel counts are multiples of 16.
                let (input, weight, output) = unsafe {
                    (
                        ArrayArg::from_raw_parts(x.clone(), activations(layer.cin) / 8),
                        ArrayArg::from_raw_parts(
                            layer.weight.clone(),
                            9 * layer.cin * layer.cout / 8,
                        ),
                        ArrayArg::from_raw_parts(y.clone(), activations(layer.cout) / 8),
                    )
                };
                let (bias, slope) = (params.1, params.2);
                let (cin, cout, batched) = (layer.cin, layer.cout, frames > 1);
                if shape.mma {
                    // Safety: channel pairs of the same buffers (counts are multiples of 16).
                    let (bias, slope, output) = unsafe {
                        (
                            ArrayArg::from_raw_parts(layer.bias.clone(), cout / 2),
                            ArrayArg::from_raw_parts(layer.slope.clone(), cout / 2),
                            ArrayArg::from_raw_parts(y.clone(), pixels * cout / 2),
                        )
                    };
                    if shape.tma {
                        let halo = [1, shape.planes * shape.rows + 2, TILE_X as usize + 2];
                        let rows = cin * cout / conv_mma::WEIGHT_ROW;
                        // Safety: `x` holds the layer's input, frames × height × width × cin
                        // halves; the weights 9 taps of cin × cout.
                        let (map, weight) = unsafe {
                            (
                                half_tensor_map(
                                    &x,
                                    vec![frames, height, width, cin],
                                    vec![halo[0], halo[1], halo[2], cin + shape.pad],
                                ),
                                half_tensor_map(
                                    &layer.weight,
                                    vec![9, rows, conv_mma::WEIGHT_ROW],
                                    vec![1, rows, conv_mma::WEIGHT_ROW],
                                ),
                            )
                        };
                        unsafe {
                            conv_mma::conv3x3_mma_tma::launch_unchecked::<R>(
                                client,
                                count,
                                dim,
                                map,
                                weight,
                                bias,
                                slope,
                                output,
                                h,
                                w,
                                cin,
                                cout,
                                shape.rows,
                                shape.planes,
                                shape.unroll_taps,
                                shape.pad,
                                layer.prelu,
                                batched,
                            )
                        };
                    } else {
                        unsafe {
                            conv_mma::conv3x3_mma::launch_unchecked::<R>(
                                client,
                                count,
                                dim,
                                input,
                                weight,
                                bias,
                                slope,
                                output,
                                h,
                                w,
                                cin,
                                cout,
                                shape.rows,
                                shape.planes,
                                shape.unroll_taps,
                                shape.pad,
                                layer.prelu,
                                batched,
                            )
                        };
                    }
                } else if shape.asynchronous {
                    unsafe {
                        conv::conv3x3_tiles_async::launch_unchecked::<R>(
                            client,
                            count,
                            dim,
                            input,
                            weight,
                            bias,
                            slope,
                            output,
                            h,
                            w,
                            cin,
                            cout,
                            shape.rows,
                            shape.planes,
                            shape.unroll_taps,
                            shape.pad,
                            shape.weight_row(cout),
                            layer.prelu,
                            batched,
                        )
                    };
                } else {
                    unsafe {
                        conv::conv3x3_tiles::launch_unchecked::<R>(
                            client,
                            count,
                            dim,
                            input,
                            weight,
                            bias,
                            slope,
                            output,
                            h,
                            w,
                            runs.long_runs as u32,
                            pw,
                            pr,
                            cin,
                            cout,
                            shape,
                            layer.prelu,
                            batched,
                        )
                    };
                }
            } else {
                let group = [8, 4, 3, 2, 1]
                    .into_iter()
                    .find(|g| layer.cout % g == 0)
                    .unwrap_or(1);
                let units = pixels * layer.cout / group;
                unsafe {
                    conv::conv3x3_direct::launch_unchecked::<F, R>(
                        client,
                        calculate_cube_count_elemwise(client, units, cube),
                        cube,
                        ArrayArg::from_raw_parts(x.clone(), pixels * layer.cin),
                        params.0,
                        params.1,
                        params.2,
                        ArrayArg::from_raw_parts(y.clone(), pixels * layer.cout),
                        h,
                        w,
                        n,
                        layer.cin,
                        layer.cout,
                        group,
                        layer.prelu,
                        frames > 1,
                    )
                };
            }
            x = y;
        }
        let (kx, ky, kw, kh) = keep;
        let kept = kw * kh * frames;
        let (rgb, rgb_len, out_planes, planes_len) = if packed {
            (client.empty(kept * 4), kept, client.empty(4), 1)
        } else {
            (client.empty(4), 1, client.empty(kept * 3 * 4), kept * 3)
        };
        let last = self.layers.last().expect("a recognised network has layers");
        if convolutions.is_empty() {
            // The tail reads a buffer of the last convolution's size.
            x = client.empty(activations(last.cout) * size_of::<F>());
        }
        if self.left_out & LeftOut::TAIL == 0 {
            unsafe {
                conv::tail::launch_unchecked::<F, R>(
                    client,
                    calculate_cube_count_elemwise(client, kept, cube),
                    cube,
                    ArrayArg::from_raw_parts(x.clone(), activations(last.cout)),
                    ArrayArg::from_raw_parts(input.clone(), 3 * pixels),
                    ArrayArg::from_raw_parts(rgb.clone(), rgb_len),
                    ArrayArg::from_raw_parts(out_planes.clone(), planes_len),
                    h,
                    w,
                    kx as u32,
                    ky as u32,
                    kw as u32,
                    kh as u32,
                    n,
                    pw,
                    pr,
                    self.scale,
                    packed,
                    frames > 1,
                    blocked,
                )
            };
        }
        if packed {
            rgb
        } else {
            out_planes
        }
    }
}

impl<R: Runtime> Fused for Engine<R> {
    /// `channels`×`height`×`width` f32 planes in, the `keep` region of the upscaled result out.
    fn run_frames(
        &self,
        planes: &[f32],
        frames: usize,
        width: usize,
        height: usize,
        keep: Keep,
        packed: bool,
    ) -> Result<FusedOutput, String> {
        let planes = &planes[..3 * width * height * frames];
        let input = self.client.create_from_slice(f32::as_bytes(planes));
        self.run_handle(&input, frames, width, height, keep, packed)
    }

    fn on_cuda(&self) -> bool {
        std::any::TypeId::of::<R>() == std::any::TypeId::of::<cubecl::cuda::CudaRuntime>()
    }

    fn run_on_device(
        &self,
        planes: &Handle,
        width: usize,
        height: usize,
        pad: usize,
        keep: Keep,
        packed: bool,
    ) -> Result<FusedOutput, String> {
        let input = match pad {
            0 => planes.clone(),
            _ => picture::pad(&self.client, planes, width, height, pad),
        };
        self.run_handle(&input, 1, width + 2 * pad, height + 2 * pad, keep, packed)
    }

    /// Model-only timings of forwards over `batch` frames at once: the input stays on the device,
    /// forwards are queued and synced as `timing` says.
    fn time_forward(&self, width: usize, height: usize, timing: Timing) -> Vec<Duration> {
        match self.precision {
            Precision::F16 => self.time_as::<f16>(width, height, timing),
            Precision::F32 => self.time_as::<f32>(width, height, timing),
        }
    }

    /// Bytes the runtime holds on the device (ours and burn's: they share the client).
    fn memory_reserved(&self) -> Option<u64> {
        self.client.memory_usage().ok().map(|m| m.bytes_reserved)
    }

    fn timing_only(&self) -> bool {
        let s = self.shape;
        self.left_out != 0 || self.tensor_cores && s.ablate != 0 && !s.asynchronous && !s.mma
    }

    fn describe(&self) -> String {
        let kernels = self.describe_kernels();
        match self.left_out {
            0 => kernels,
            bits => format!("{kernels}, launches left out ({bits:#x}; timing only)"),
        }
    }
}

impl<R: Runtime> Engine<R> {
    fn describe_kernels(&self) -> String {
        if self.tensor_cores {
            let (s, p) = (self.shape, self.preferred);
            let mut variants = String::new();
            if s.unroll_taps != p.unroll_taps {
                variants += if s.unroll_taps {
                    ", taps unrolled"
                } else {
                    ", taps in a loop"
                };
            }
            if s.pad != p.pad {
                variants += &format!(", channels padded by {}", s.pad);
            }
            if s.blocked != p.blocked {
                variants += if s.blocked {
                    ", operands read from global memory"
                } else {
                    ", operands read from the halo in shared memory"
                };
            }
            if s.tma != p.tma {
                variants += if s.tma {
                    ", copies by the tensor memory accelerator"
                } else {
                    ", copies by every unit"
                };
            }
            if s.mma != p.mma {
                variants += if s.mma {
                    ", register fragments (mma.sync)"
                } else {
                    ", cooperative matrices (wmma)"
                };
            }
            if s.asynchronous != p.asynchronous {
                variants += if s.asynchronous {
                    ", weights copied asynchronously"
                } else {
                    ", weights copied between barriers"
                };
            }
            if s.prefetch != p.prefetch && !s.asynchronous {
                variants += if s.prefetch {
                    ", next tap's weights prefetched"
                } else {
                    ", weights not prefetched"
                };
            }
            if s.double_buffered != p.double_buffered && !s.asynchronous && !s.mma {
                variants += if s.double_buffered {
                    ", two weight buffers"
                } else {
                    ", one weight buffer"
                };
            }
            if s.wide_epilogue != p.wide_epilogue && !s.asynchronous && !s.mma {
                variants += if s.wide_epilogue {
                    ", outputs stored 16 pixels at a time"
                } else {
                    ", outputs stored a fragment at a time"
                };
            }
            if s.weights != p.weights {
                variants += &format!(", weights {}", s.weights.name());
            }
            if s.splits != p.splits && !s.asynchronous && !s.mma {
                variants += &format!(", each tap's weights staged in {} parts", s.splits);
            }
            if s.late_halo != p.late_halo && !s.asynchronous && !s.mma {
                variants += if s.late_halo {
                    ", halo's last rows loaded during the first taps"
                } else {
                    ", halo loaded before the first tap"
                };
            }
            if s.column != p.column && !s.asynchronous && !s.mma {
                variants += &format!(", up to {} tiles a cube down a column", s.column.max(1));
            }
            if s.singles != p.singles && !s.asynchronous && !s.mma {
                variants += &format!(", about {} one-tile cubes end a walking layer", s.singles);
            }
            if s.ablate != 0 && !s.asynchronous && !s.mma {
                variants += &format!(", parts left out ({:#x}; timing only)", s.ablate);
            }
            if s.weights_shared != p.weights_shared {
                variants += if s.weights_shared {
                    ", weights staged in shared memory"
                } else {
                    ", weights read from global memory"
                };
            }
            format!(
                "fused SRVGG kernels, tensor cores ({} row(s) x {} planes{variants})",
                s.rows, s.planes
            )
        } else {
            "fused SRVGG kernels, direct".into()
        }
    }
}
