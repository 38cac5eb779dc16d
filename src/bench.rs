//! `upframe bench`: model-only speed on the user's own hardware. The input stays on the device, so
//! this measures the network, not uploads or image files: warm-up first (autotuning happens
//! there), then the median of timed forwards, each ended by a device sync.

use std::time::{Duration, Instant};

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::{Cuda, NdArray, Wgpu};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use crate::backend::{self, BackendChoice, BackendKind, DeviceClass, DeviceInfo, Selected};
use crate::cli::PrecisionArg;
use crate::error::Result;
use crate::model::forward::{Network, Precision};
use crate::model::Model;

#[derive(Debug, Clone)]
pub struct BenchRow {
    pub backend: BackendKind,
    pub device: String,
    pub precision: Precision,
    pub width: usize,
    pub height: usize,
    pub median: Duration,
    pub min: Duration,
    pub runs: usize,
}

impl BenchRow {
    pub fn fps(&self) -> f64 {
        1.0 / self.median.as_secs_f64()
    }

    /// Achieved arithmetic rate, from the convolutions' multiply-adds.
    pub fn tflops(&self, flop_per_pixel: f64) -> f64 {
        flop_per_pixel * (self.width * self.height) as f64 / self.median.as_secs_f64() / 1e12
    }
}

pub struct BenchPlan {
    pub backend: BackendChoice,
    pub device: Option<usize>,
    pub precision: PrecisionArg,
    /// Sizes for hardware GPUs; software devices get `small`.
    pub sizes: Vec<(usize, usize)>,
    pub small: (usize, usize),
    pub runs: usize,
}

/// Multiply-adds × 2 of the graph's convolutions per input pixel.
pub fn flop_per_pixel(model: &Model) -> f64 {
    let side = 64;
    let Ok(shapes) = model.graph.shapes(side, side) else {
        return 0.0;
    };
    model
        .graph
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            crate::model::graph::Op::Conv(c) => shapes[n.output].map(|s| {
                2.0 * (s.c * s.h * s.w * c.in_channels * c.kernel[0] * c.kernel[1]) as f64
            }),
            _ => None,
        })
        .sum::<f64>()
        / (side * side) as f64
}

pub fn run(
    model: &Model,
    plan: &BenchPlan,
    mut report: impl FnMut(&BenchRow),
) -> Result<Vec<BenchRow>> {
    let targets: Vec<Selected> = match plan.backend {
        BackendChoice::Only(_) => vec![backend::select(plan.backend, plan.device)?.0],
        BackendChoice::Auto => {
            let mut all = Vec::new();
            if let Ok(devices) = backend::cuda_devices() {
                let d = devices[plan.device.unwrap_or(0).min(devices.len() - 1)].clone();
                all.push(Selected::Cuda(
                    burn::backend::cuda::CudaDevice::new(d.index),
                    d,
                ));
            }
            all.extend(
                backend::wgpu_devices()
                    .into_iter()
                    .filter(|(_, i)| i.class != DeviceClass::SoftwareGpu)
                    .map(|(d, i)| Selected::Wgpu(d, i)),
            );
            if all.is_empty() {
                all.push(Selected::Cpu(backend::cpu_info()));
            }
            all
        }
    };
    let mut rows = Vec::new();
    for target in targets {
        let info = target.info().clone();
        let sizes = match info.class {
            DeviceClass::SoftwareGpu | DeviceClass::Cpu => vec![plan.small],
            _ => plan.sizes.clone(),
        };
        let mut each = |row: BenchRow| {
            report(&row);
            rows.push(row);
        };
        match target {
            Selected::Cuda(d, _) => bench_on::<Cuda>(&d, &info, model, plan, &sizes, &mut each)?,
            Selected::Wgpu(d, _) => bench_on::<Wgpu>(&d, &info, model, plan, &sizes, &mut each)?,
            Selected::Cpu(_) => {
                bench_on::<NdArray>(&NdArrayDevice::Cpu, &info, model, plan, &sizes, &mut each)?
            }
        }
    }
    Ok(rows)
}

fn bench_on<B: Backend>(
    device: &B::Device,
    info: &DeviceInfo,
    model: &Model,
    plan: &BenchPlan,
    sizes: &[(usize, usize)],
    each: &mut dyn FnMut(BenchRow),
) -> Result<()> {
    let precisions = match plan.precision {
        PrecisionArg::Auto => {
            let mut p = vec![crate::resolve_precision::<B>(
                PrecisionArg::Auto,
                info,
                device,
            )?];
            if p[0] != Precision::F32 {
                p.push(Precision::F32);
            }
            p
        }
        asked => vec![crate::resolve_precision::<B>(asked, info, device)?],
    };
    for precision in precisions {
        let net = Network::<B>::new(model.graph.clone(), precision, device);
        for &(w, h) in sizes {
            let timed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                time_forward(&net, w, h, plan.runs)
            }));
            let (median, min) = match timed {
                Ok(t) => t,
                Err(payload) => {
                    // One size failing (device memory, binding limits) must not hide the others.
                    log::warn!(
                        "{w}x{h} on {} in {precision} failed: {}",
                        info.name,
                        crate::panic_message(&payload)
                    );
                    continue;
                }
            };
            each(BenchRow {
                backend: info.backend,
                device: info.name.clone(),
                precision,
                width: w,
                height: h,
                median,
                min,
                runs: plan.runs,
            });
        }
    }
    Ok(())
}

fn time_forward<B: Backend>(
    net: &Network<B>,
    w: usize,
    h: usize,
    runs: usize,
) -> (Duration, Duration) {
    let device = net.device();
    let input = Tensor::<B, 4>::random([1, 3, h, w], Distribution::Uniform(0.0, 1.0), device);
    let sync = || B::sync(device).expect("device sync");
    // Warm-up: kernel compilation and autotuning happen on the first calls.
    for _ in 0..3 {
        let out = net.forward(input.clone());
        sync();
        drop(out);
    }
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            // Held until after the sync, so a lazy backend cannot skip the work.
            let out = net.forward(input.clone());
            sync();
            let elapsed = start.elapsed();
            drop(out);
            elapsed
        })
        .collect();
    times.sort();
    (times[times.len() / 2], times[0])
}

/// The decode phase alone (demux, decode, conversion to planar RGB) over a whole file: frames
/// and seconds, and whether NVDEC really decoded them.
pub fn decode_speed(
    path: &std::path::Path,
    hwdec: crate::video::decode::HwDecode,
) -> crate::error::Result<(u64, Duration, String)> {
    crate::video::init();
    let source = crate::video::decode::open(path, hwdec)?;
    let started = Instant::now();
    let stats = source.run(&[], &|| false, |_| true)?;
    let used = if stats.hardware_frames > 0 {
        format!(
            "nvdec ({} of {} frames)",
            stats.hardware_frames, stats.frames
        )
    } else {
        "software".to_string()
    };
    Ok((stats.frames, started.elapsed(), used))
}
