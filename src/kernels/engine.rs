//! Runs a recognised SRVGG network on our kernels: weights uploaded once, then per picture one
//! launch for the head, one per convolution, one for the tail, and one read-back of the kept
//! region, already quantised.

use cubecl::prelude::*;
use cubecl::server::Handle;
use cubecl::{calculate_cube_count_elemwise, CubeElement};
use half::f16;
use std::time::{Duration, Instant};

use super::conv::{self, HEAD_GROUP, PLANES, TILE_X};
use super::srvgg::Srvgg;
use super::{Fused, FusedOutput, Keep};
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
    /// Rows each plane of `conv3x3_tiles` computes: 2 where shared memory allows.
    rows: usize,
}

/// Whether the device multiplies 16×16×16 f16 matrices into f32 (tensor cores, or Vulkan's
/// cooperative matrices) with 32-wide planes, the shape `conv3x3_tiles` is written for.
pub fn has_tensor_cores<R: Runtime>(client: &ComputeClient<R>) -> bool {
    use cubecl::ir::features::MmaConfig;
    use cubecl::ir::{ElemType, FloatKind};
    let config = MmaConfig {
        a_type: ElemType::Float(FloatKind::F16).into(),
        b_type: ElemType::Float(FloatKind::F16).into(),
        cd_type: ElemType::Float(FloatKind::F32).into(),
        m: 16,
        k: 16,
        n: 16,
    };
    let hardware = &client.properties().hardware;
    client.properties().features.matmul.cmma.contains(&config)
        && hardware.plane_size_min <= 32
        && hardware.plane_size_max >= 32
}

/// Rows per plane for `conv3x3_tiles`: two halve the operand loads per multiply, where the
/// input tile fits the device's shared memory (not Vulkan's usual 48 KiB); `UPFRAME_CONV_ROWS`
/// overrides it for measurements.
fn tile_rows<R: Runtime>(client: &ComputeClient<R>, cin: usize) -> usize {
    let bytes = |rows: usize| {
        (PLANES as usize * rows + 2) * (TILE_X as usize + 2) * (cin + 16) * 2
            + PLANES as usize * 1024
    };
    let limit = client.properties().hardware.max_shared_memory_size;
    let asked = std::env::var("UPFRAME_CONV_ROWS")
        .ok()
        .and_then(|v| v.parse().ok());
    let rows = asked.unwrap_or(2);
    (1..=rows).rev().find(|&r| bytes(r) <= limit).unwrap_or(1)
}

impl<R: Runtime> Engine<R> {
    pub fn new(
        net: &Srvgg,
        precision: Precision,
        device: &R::Device,
        allow_tensor_cores: bool,
    ) -> Self {
        let client = R::client(device);
        let tensor_cores = allow_tensor_cores
            && precision == Precision::F16
            && has_tensor_cores(&client)
            && net.layers[1..]
                .iter()
                .all(|l| l.cin % 16 == 0 && l.cout % 16 == 0);
        let floats = |v: &[f32]| client.create_from_slice(f32::as_bytes(v));
        let halves = |v: &[f32]| {
            let v: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            client.create_from_slice(f16::as_bytes(&v))
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
                    _ if tensor_cores => halves(&conv::fragment_weights(&l.weight, l.cin, l.cout)),
                    _ => halves(&l.weight),
                },
                bias: floats(&l.bias),
                slope: floats(l.slopes.as_deref().unwrap_or(&l.bias)),
                prelu: l.slopes.is_some(),
            })
            .collect();
        let widest = net.layers[1..].iter().map(|l| l.cin).max().unwrap_or(16);
        let rows = tile_rows(&client, widest);
        Self {
            client,
            layers,
            scale: net.scale,
            precision,
            tensor_cores,
            rows,
        }
    }

    fn run_as<F: Float + CubeElement>(
        &self,
        planes: &[f32],
        width: usize,
        height: usize,
        keep: Keep,
        packed: bool,
    ) -> Result<FusedOutput, String> {
        let input = self.client.create_from_slice(f32::as_bytes(planes));
        let output = self.forward::<F>(&input, width, height, keep, packed);
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

    fn time_as<F: Float + CubeElement>(
        &self,
        width: usize,
        height: usize,
        runs: usize,
    ) -> Vec<Duration> {
        let planes: Vec<f32> = (0..3 * width * height)
            .map(|i| (i.wrapping_mul(2654435761) % 1000) as f32 / 1000.0)
            .collect();
        let input = self.client.create_from_slice(f32::as_bytes(&planes));
        let keep = (0, 0, width * self.scale, height * self.scale);
        let once = || {
            let start = Instant::now();
            let out = self.forward::<F>(&input, width, height, keep, true);
            cubecl::future::block_on(self.client.sync()).expect("device sync");
            drop(out);
            start.elapsed()
        };
        for _ in 0..3 {
            once();
        }
        (0..runs.max(1)).map(|_| once()).collect()
    }

    /// Queues the whole network on `input` (3 f32 planes) and returns the handle of the result.
    fn forward<F: Float + CubeElement>(
        &self,
        input: &Handle,
        width: usize,
        height: usize,
        keep: Keep,
        packed: bool,
    ) -> Handle {
        let client = &self.client;
        let pixels = width * height;
        let (h, w) = (height as u32, width as u32);
        let head = &self.layers[0];
        let mut x = client.empty(pixels * head.cout * size_of::<F>());
        let cube = CubeDim::new_1d(256);
        unsafe {
            conv::head::launch_unchecked::<F, R>(
                client,
                calculate_cube_count_elemwise(client, pixels * head.cout / HEAD_GROUP, cube),
                cube,
                ArrayArg::from_raw_parts(input.clone(), 3 * pixels),
                ArrayArg::from_raw_parts(head.weight.clone(), 9 * head.cin * head.cout),
                ArrayArg::from_raw_parts(head.bias.clone(), head.cout),
                ArrayArg::from_raw_parts(head.slope.clone(), head.cout),
                ArrayArg::from_raw_parts(x.clone(), pixels * head.cout),
                h,
                w,
                head.cin,
                head.cout,
            )
        };
        for layer in &self.layers[1..] {
            let y = client.empty(pixels * layer.cout * size_of::<F>());
            // Safety: each length is the element count of the buffer created for it above.
            let args = unsafe {
                (
                    ArrayArg::from_raw_parts(x.clone(), pixels * layer.cin),
                    ArrayArg::from_raw_parts(layer.weight.clone(), 9 * layer.cin * layer.cout),
                    ArrayArg::from_raw_parts(layer.bias.clone(), layer.cout),
                    ArrayArg::from_raw_parts(layer.slope.clone(), layer.cout),
                    ArrayArg::from_raw_parts(y.clone(), pixels * layer.cout),
                )
            };
            if self.tensor_cores {
                let rows_per_cube = PLANES * self.rows as u32;
                let count = CubeCount::Static(w.div_ceil(TILE_X), h.div_ceil(rows_per_cube), 1);
                unsafe {
                    conv::conv3x3_tiles::launch_unchecked::<R>(
                        client,
                        count,
                        CubeDim::new_2d(32, PLANES),
                        args.0,
                        args.1,
                        args.2,
                        args.3,
                        args.4,
                        h,
                        w,
                        layer.cin,
                        layer.cout,
                        self.rows,
                        layer.prelu,
                    )
                };
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
                        args.0,
                        args.1,
                        args.2,
                        args.3,
                        args.4,
                        h,
                        w,
                        layer.cin,
                        layer.cout,
                        group,
                        layer.prelu,
                    )
                };
            }
            x = y;
        }
        let (kx, ky, kw, kh) = keep;
        let kept = kw * kh;
        let (rgb, rgb_len, out_planes, planes_len) = if packed {
            (client.empty(kept * 4), kept, client.empty(4), 1)
        } else {
            (client.empty(4), 1, client.empty(kept * 3 * 4), kept * 3)
        };
        let last = self.layers.last().expect("a recognised network has layers");
        unsafe {
            conv::tail::launch_unchecked::<F, R>(
                client,
                calculate_cube_count_elemwise(client, kept, cube),
                cube,
                ArrayArg::from_raw_parts(x.clone(), pixels * last.cout),
                ArrayArg::from_raw_parts(input.clone(), 3 * pixels),
                ArrayArg::from_raw_parts(rgb.clone(), rgb_len),
                ArrayArg::from_raw_parts(out_planes.clone(), planes_len),
                h,
                w,
                kx as u32,
                ky as u32,
                kw as u32,
                kh as u32,
                self.scale,
                packed,
            )
        };
        if packed {
            rgb
        } else {
            out_planes
        }
    }
}

impl<R: Runtime> Fused for Engine<R> {
    /// `channels`×`height`×`width` f32 planes in, the `keep` region of the upscaled result out.
    fn run(
        &self,
        planes: &[f32],
        width: usize,
        height: usize,
        keep: Keep,
        packed: bool,
    ) -> Result<FusedOutput, String> {
        match self.precision {
            Precision::F16 => self.run_as::<f16>(planes, width, height, keep, packed),
            Precision::F32 => self.run_as::<f32>(planes, width, height, keep, packed),
        }
    }

    /// Model-only timings: the input stays on the device, each forward ends with a device sync.
    fn time_forward(&self, width: usize, height: usize, runs: usize) -> Vec<Duration> {
        match self.precision {
            Precision::F16 => self.time_as::<f16>(width, height, runs),
            Precision::F32 => self.time_as::<f32>(width, height, runs),
        }
    }

    /// Bytes the runtime holds on the device (ours and burn's: they share the client).
    fn memory_reserved(&self) -> Option<u64> {
        self.client.memory_usage().ok().map(|m| m.bytes_reserved)
    }

    fn describe(&self) -> String {
        if self.tensor_cores {
            "fused SRVGG kernels, tensor cores".into()
        } else {
            "fused SRVGG kernels, direct".into()
        }
    }
}
