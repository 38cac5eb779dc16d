//! `upframe bench`: model-only speed on the user's own hardware. The input stays on the device, so
//! this measures the network, not uploads or image files: warm-up first (autotuning happens
//! there), then the median of timed forwards, each ended by a device sync.

use std::time::{Duration, Instant};

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::{Cuda, NdArray, Wgpu};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use cubecl::cuda::CudaRuntime;

use crate::backend::{self, BackendChoice, BackendKind, DeviceClass, DeviceInfo, Selected};
use crate::cli::PrecisionArg;
use crate::error::Result;
use crate::kernels::{self, Kernels};
use crate::model::forward::{Network, Precision};
use crate::model::Model;

#[derive(Debug, Clone)]
pub struct BenchRow {
    pub backend: BackendKind,
    pub device: String,
    pub precision: Precision,
    /// Which kernels ran the network (see `--kernels`).
    pub kernels: String,
    /// Device memory the runtime held after the runs, where the runtime tells.
    pub memory: Option<u64>,
    pub width: usize,
    pub height: usize,
    /// Frames per forward; `median` and `min` are per forward.
    pub batch: usize,
    /// Threads timing forwards side by side, each on its own stream.
    pub streams: usize,
    /// Forwards queued back to back before each sync; `median` and `min` are their mean.
    pub queue: usize,
    pub median: Duration,
    pub min: Duration,
    pub runs: usize,
}

impl BenchRow {
    pub fn fps(&self) -> f64 {
        (self.streams * self.batch) as f64 / self.median.as_secs_f64()
    }

    /// Achieved arithmetic rate, from the convolutions' multiply-adds.
    pub fn tflops(&self, flop_per_pixel: f64) -> f64 {
        flop_per_pixel * (self.width * self.height) as f64 * self.fps() / 1e12
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
    /// `Auto` times our kernels (where they apply) and burn's generic operations.
    pub kernels: Kernels,
    /// Frames per forward of our kernels.
    pub batch: usize,
    /// Threads running our kernels side by side.
    pub streams: usize,
    /// Forwards of our kernels queued back to back per timed sample (see `kernels::Timing`).
    pub queue: usize,
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
    let targets = targets(plan)?;
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

/// The devices a plan times: the one asked for, or every GPU (else the CPU) for auto.
fn targets(plan: &BenchPlan) -> Result<Vec<Selected>> {
    Ok(match plan.backend {
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
    })
}

fn bench_on<B: Backend>(
    device: &B::Device,
    info: &DeviceInfo,
    model: &Model,
    plan: &BenchPlan,
    sizes: &[(usize, usize)],
    each: &mut dyn FnMut(BenchRow),
) -> Result<()> {
    let resolve =
        |asked| crate::resolve_precision_for::<B>(asked, info, device, model, plan.kernels);
    let precisions = match plan.precision {
        PrecisionArg::Auto => {
            let mut p = vec![resolve(PrecisionArg::Auto)?];
            if p[0] != Precision::F32 {
                p.push(Precision::F32);
            }
            p
        }
        asked => vec![resolve(asked)?],
    };
    for precision in precisions {
        // burn's operations are not timed in a precision they compute wrongly (fp16 on cuda).
        let asked = match precision {
            Precision::F16 => PrecisionArg::Fp16,
            Precision::F32 => PrecisionArg::Fp32,
        };
        let generic_ok = crate::resolve_precision::<B>(asked, info, device).is_ok();
        let fused = match plan.kernels {
            Kernels::Auto => kernels::fused_for_timing(&model.graph, precision, device),
            Kernels::Generic => None,
        };
        let net = Network::<B>::new(model.graph.clone(), precision, device);
        for &(w, h) in sizes {
            // Each case's times, and the device memory held after them.
            type Timed = (Vec<Duration>, Option<u64>);
            type Case<'a> = (String, usize, usize, usize, Box<dyn Fn() -> Timed + 'a>);
            let held = || backend::memory_reserved(device);
            let mut cases: Vec<Case> = Vec::new();
            if let Some(fused) = &fused {
                let timing = kernels::Timing {
                    runs: plan.runs,
                    batch: plan.batch,
                    queue: plan.queue,
                };
                let time: Box<dyn Fn() -> Timed> = match plan.streams {
                    1 => Box::new(move || (fused.time_forward(w, h, timing), held())),
                    streams => Box::new(move || {
                        let (times, memory) =
                            side_by_side(&model.graph, precision, device, streams, |engine| {
                                engine.time_forward(w, h, timing)
                            });
                        (times, memory.map(|m| m + held().unwrap_or(0)))
                    }),
                };
                cases.push((fused.describe(), plan.batch, plan.streams, plan.queue, time));
            }
            if generic_ok {
                cases.push((
                    "burn's generic operations".into(),
                    1,
                    1,
                    1,
                    Box::new(|| (time_forward(&net, w, h, plan.runs), held())),
                ));
            }
            for (kernels, batch, streams, queue, time) in cases {
                let timed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&time));
                let (mut times, memory) = match timed {
                    Ok(t) => t,
                    Err(payload) => {
                        // One case failing (device memory, binding limits) must not hide the others.
                        log::warn!(
                            "{w}x{h} on {} in {precision} with {kernels} failed: {}",
                            info.name,
                            crate::panic_message(&payload)
                        );
                        continue;
                    }
                };
                times.sort();
                each(BenchRow {
                    backend: info.backend,
                    device: info.name.clone(),
                    precision,
                    kernels,
                    memory,
                    width: w,
                    height: h,
                    batch,
                    streams,
                    queue,
                    median: times[times.len() / 2],
                    min: times[0],
                    runs: plan.runs,
                });
            }
        }
    }
    Ok(())
}

/// `time` run by `streams` threads at once, each with an engine of its own (and so its own
/// stream), as the video pipeline's upscale threads run: every thread's times, together, and the
/// device memory the threads' streams hold (the runtime counts it per stream).
fn side_by_side<D: std::any::Any + Sync>(
    graph: &crate::model::graph::Graph,
    precision: Precision,
    device: &D,
    streams: usize,
    time: impl Fn(&dyn kernels::Fused) -> Vec<Duration> + Sync,
) -> (Vec<Duration>, Option<u64>) {
    let engines: Vec<_> = (0..streams)
        .filter_map(|_| kernels::fused_for_timing(graph, precision, device))
        .collect();
    let start = std::sync::Barrier::new(engines.len());
    std::thread::scope(|scope| {
        let threads: Vec<_> = engines
            .into_iter()
            .map(|engine| {
                let (time, start) = (&time, &start);
                scope.spawn(move || {
                    start.wait();
                    (time(engine.as_ref()), engine.memory_reserved())
                })
            })
            .collect();
        let mut all = (Vec::new(), Some(0));
        for thread in threads {
            let (times, memory) = thread.join().expect("a timing thread");
            all.0.extend(times);
            all.1 = all.1.zip(memory).map(|(a, b)| a + b);
        }
        all
    })
}

fn time_forward<B: Backend>(net: &Network<B>, w: usize, h: usize, runs: usize) -> Vec<Duration> {
    let device = net.device();
    let input = Tensor::<B, 4>::random([1, 3, h, w], Distribution::Uniform(0.0, 1.0), device);
    let sync = || B::sync(device).expect("device sync");
    // Warm-up: kernel compilation and autotuning happen on the first calls.
    for _ in 0..3 {
        let out = net.forward(input.clone());
        sync();
        drop(out);
    }
    (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            // Held until after the sync, so a lazy backend cannot skip the work.
            let out = net.forward(input.clone());
            sync();
            let elapsed = start.elapsed();
            drop(out);
            elapsed
        })
        .collect()
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

/// Duplicate detection's cost per frame on one device and size: medians of each step.
#[derive(Debug, Clone)]
pub struct DedupRow {
    pub backend: BackendKind,
    pub device: String,
    /// Where the features were computed (WGSL shaders or burn ops).
    pub features: String,
    pub width: usize,
    pub height: usize,
    /// Packing the decoded 8-bit planes on the host (the decoder does this while converting).
    pub pack: Duration,
    /// Upload, features and comparisons with a full window of kept frames on the device,
    /// read-back.
    pub detect: Duration,
    /// The decision on the host from what the device returned.
    pub decide: Duration,
    /// On cuda, `detect` for a frame already packed on the device, as NVDEC frames are and as
    /// software-decoded frames are once uploaded.
    pub resident: Option<Duration>,
    /// On wgpu, the device time of `detect`'s shaders, from timestamps the device writes (the
    /// frame's upload before them is not included).
    pub shaders: Option<Duration>,
    /// On cuda, the upload of a software-decoded yuv420p frame with its conversion and packing on
    /// the device (shared by the model and the detector), and the f32 planes' upload the model
    /// made before.
    pub upload: Option<(Duration, Duration)>,
}

impl DedupRow {
    pub fn total(&self) -> Duration {
        self.pack + self.detect + self.decide
    }
}

/// Times duplicate detection per frame at each of `plan.sizes` (the CPU and software Vulkan
/// too: detection is cheap everywhere).
pub fn dedup_cost(plan: &BenchPlan, mut report: impl FnMut(&DedupRow)) -> Result<Vec<DedupRow>> {
    let mut rows = Vec::new();
    for target in targets(plan)? {
        let info = target.info().clone();
        for &(w, h) in &plan.sizes {
            let row = match &target {
                Selected::Cuda(d, _) => dedup_on::<Cuda>(d, None, Some(d), &info, w, h, plan.runs),
                Selected::Wgpu(d, _) => {
                    let setup = backend::wgpu_setup(d);
                    dedup_on::<Wgpu>(d, setup.as_ref(), None, &info, w, h, plan.runs)
                }
                Selected::Cpu(_) => {
                    dedup_on::<NdArray>(&NdArrayDevice::Cpu, None, None, &info, w, h, plan.runs)
                }
            };
            report(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

fn dedup_on<B: Backend>(
    device: &B::Device,
    wgpu: Option<&burn::backend::wgpu::WgpuSetup>,
    cuda: Option<&burn::backend::cuda::CudaDevice>,
    info: &DeviceInfo,
    w: usize,
    h: usize,
    runs: usize,
) -> DedupRow {
    use crate::dedup::{features::Packed, Dedup, Frame, Level, WINDOW};
    let thresholds = Level::Normal.thresholds().expect("normal has thresholds");
    let mut dedup = Dedup::<B>::new(device, wgpu, thresholds, WINDOW);
    // Noisy pictures, 8-bit planes as the decoder has them before it packs them: a full window
    // of kept ones, then the last of them with one level of noise more, a duplicate.
    let mut state = 0x9e37_79b9u32;
    let mut noise = |_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 250) as u8
    };
    let pictures: Vec<Vec<u8>> = (0..WINDOW)
        .map(|_| (0..3 * w * h).map(&mut noise).collect())
        .collect();
    let held: Vec<u8> = pictures[WINDOW - 1]
        .iter()
        .enumerate()
        .map(|(i, &v)| v + u8::from(i % 7 == 0))
        .collect();
    let pack = |planes: &[u8]| {
        let mut packed = Packed::new(w, h);
        for (i, row) in planes.chunks_exact(w).enumerate() {
            packed.set_row(i / h, i % h, row);
        }
        packed
    };
    for (i, picture) in pictures.iter().enumerate() {
        let decision = dedup.decide(i as u64, Frame::Packed(&pack(picture)));
        assert_eq!(decision.source, i as u64, "the pictures differ");
    }
    let last = WINDOW as u64 - 1;
    let mut next = WINDOW as u64;
    let mut decide_held = |dedup: &mut Dedup<B>, frame: Frame<'_>| {
        let t0 = Instant::now();
        let decider = &dedup.decider;
        let look = dedup
            .detector
            .look(frame, &|hash| decider.candidates_for(hash));
        let t1 = Instant::now();
        let decision = dedup.decider.decide(next, &look);
        dedup.detector.settle(next, &decision);
        let t2 = Instant::now();
        assert_eq!(decision.source, last, "the held picture is a duplicate");
        next += 1;
        (t1 - t0, t2 - t1)
    };
    let timed = dedup.detector.time_on_device();
    let mut shaders = Vec::new();
    let (mut pack_times, mut detect, mut decide) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs.max(1) + 3 {
        let t0 = Instant::now();
        let packed = pack(&held);
        let packing = t0.elapsed();
        let (looking, deciding) = decide_held(&mut dedup, Frame::Packed(&packed));
        if run >= 3 {
            // The first runs compile kernels and allocate.
            pack_times.push(packing);
            detect.push(looking);
            decide.push(deciding);
            if let Some(device) = dedup.detector.device_time().filter(|_| timed) {
                shaders.push(device);
            }
        }
    }
    // Frames decoded by NVDEC are packed on the device already: no packing, no upload. A
    // detector of its own, whose kept frames came the same way.
    let mut resident = Vec::new();
    let mut uploads = (Vec::new(), Vec::new());
    if let Some(cuda) = cuda {
        let client = &<CudaRuntime as cubecl::Runtime>::client(cuda);
        let on_device = |planes: &[u8]| {
            let words = client.create_from_slice(bytemuck::cast_slice(&pack(planes).words));
            crate::video::device_frames::DevicePicture {
                client: client.clone(),
                planes: words.clone(),
                packed: Some(words),
                width: w,
                height: h,
            }
        };
        let mut dedup = Dedup::<B>::new(device, wgpu, thresholds, WINDOW);
        for (i, picture) in pictures.iter().enumerate() {
            dedup.decide(i as u64, Frame::Device(&on_device(picture)));
        }
        let held = on_device(&held);
        for run in 0..runs.max(1) + 3 {
            let (looking, _) = decide_held(&mut dedup, Frame::Device(&held));
            if run >= 3 {
                resident.push(looking);
            }
        }
        uploads = upload_times(cuda, &pictures[WINDOW - 1], w, h, runs);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    DedupRow {
        backend: info.backend,
        device: info.name.clone(),
        features: dedup.detector.name().to_string(),
        width: w,
        height: h,
        pack: median(pack_times),
        detect: median(detect),
        decide: median(decide),
        resident: (!resident.is_empty()).then(|| median(resident)),
        shaders: (!shaders.is_empty()).then(|| median(shaders)),
        upload: (!uploads.0.is_empty()).then(|| (median(uploads.0), median(uploads.1))),
    }
}

/// A software-decoded frame's way onto the device, timed to the end of its work there: as
/// yuv420p samples, converted and packed by the kernels (what the decoder now does on cuda), and
/// as the f32 planes the model was given before.
fn upload_times(
    cuda: &burn::backend::cuda::CudaDevice,
    planes: &[u8],
    w: usize,
    h: usize,
    runs: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    use crate::video::colour::Colour;
    use crate::video::device_frames::DeviceFrames;
    use ffmpeg_next::format::Pixel;
    let client = <CudaRuntime as cubecl::Runtime>::client(cuda);
    let sync = || cubecl::future::block_on(client.sync()).expect("the GPU finishes");
    let mut yuv = ffmpeg_next::frame::Video::new(Pixel::YUV420P, w as u32, h as u32);
    for plane in 0..3 {
        let stride = yuv.stride(plane);
        let data = yuv.data_mut(plane);
        for (i, v) in data.iter_mut().enumerate() {
            *v = planes[(plane * w * h + i % stride + i / stride * w) % planes.len()];
        }
    }
    let colour = Colour {
        matrix: ffmpeg_next::color::Space::BT709,
        full_range: false,
    };
    let mut frames = DeviceFrames::new(cuda).expect("the CUDA device's context");
    let floats: Vec<f32> = planes.iter().map(|&v| f32::from(v) / 255.0).collect();
    let (mut as_yuv, mut as_planes) = (Vec::new(), Vec::new());
    for run in 0..runs.max(1) + 3 {
        sync();
        let t0 = Instant::now();
        let picture = frames
            .upload(&yuv, colour, true)
            .expect("yuv420p is uploaded");
        sync();
        let t1 = Instant::now();
        let floats = client.create_from_slice(bytemuck::cast_slice(&floats));
        sync();
        let t2 = Instant::now();
        drop((picture, floats));
        if run >= 3 {
            as_yuv.push(t1 - t0);
            as_planes.push(t2 - t1);
        }
    }
    (as_yuv, as_planes)
}
