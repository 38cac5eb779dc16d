//! upframe: AI upscaling of videos and images with Real-ESRGAN-family ncnn models, written once in
//! burn and run on CUDA, wgpu or the CPU. `run` takes a validated `Config`; the binary is a thin
//! shell around it.

pub mod backend;
pub mod bench;
pub mod cli;
pub mod dedup;
pub mod error;
pub mod frame;
pub mod images;
pub mod kernels;
pub mod model;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod upscale;
pub mod video;
mod video_job;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::{Cuda, NdArray, Wgpu};
use burn::tensor::backend::Backend;

use backend::{BackendKind, DeviceInfo, Selected};
use cli::{Config, PrecisionArg};
use error::{Error, Result};
use kernels::Kernels;
use model::forward::{supports_f16, Precision};
use model::Model;
use upscale::{MemoryBudget, Upscaler};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks running work to stop at the next tile or file; outputs in progress are discarded.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// What a run did, for the closing summary.
#[derive(Debug, Clone)]
pub struct Summary {
    pub files: usize,
    pub input_pixels: u64,
    pub output_pixels: u64,
    pub elapsed: Duration,
    pub device: String,
    pub backend: BackendKind,
    pub precision: Precision,
    /// What ran the network: upframe's kernels or burn's operations.
    pub kernels: String,
    pub tile: usize,
    pub model: String,
    pub scale: usize,
    pub forwards: u64,
    pub outputs: Vec<PathBuf>,
    pub video: Option<VideoSummary>,
    /// How duplicates were found, when they were looked for.
    pub dedup: Option<DedupSummary>,
    /// Pictures of a folder written as a link to an earlier one's output (duplicates).
    pub linked: usize,
}

#[derive(Debug, Clone)]
pub struct VideoSummary {
    pub frames: u64,
    pub unique: u64,
    pub phases: pipeline::PhaseTimes,
    pub decoder: String,
    pub encoder: String,
    pub damaged_packets: u64,
    pub ffmpeg_errors: u64,
    /// Frames NVDEC decoded (the rest were decoded in software).
    pub hardware_frames: u64,
    /// Frames converted to RGB on the GPU: NVDEC's never copied to the host, software-decoded
    /// ones uploaded as Y'CbCr.
    pub converted_on_device: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DedupSummary {
    pub thresholds: dedup::Thresholds,
    /// Kept frames each frame was compared with.
    pub window: usize,
    /// Where the features were computed.
    pub features: String,
}

pub fn run(config: &Config) -> Result<Summary> {
    if video::is_video_input(&config.input) {
        return run_video(config);
    }
    let jobs = images::plan(
        &config.input,
        &config.output,
        config.format.as_deref(),
        config.overwrite,
    )?;
    let model = model::load(&config.model, config.scale)?;
    let selected = select_backend(config)?;
    match selected {
        Selected::Cuda(device, info) => run_on::<Cuda>(&device, &info, config, &model, &jobs),
        Selected::Wgpu(device, info) => run_on::<Wgpu>(&device, &info, config, &model, &jobs),
        Selected::Cpu(info) => run_on::<NdArray>(&NdArrayDevice::Cpu, &info, config, &model, &jobs),
    }
}

/// Why fp16 is refused on CUDA: on an H200 (2026-11-27), burn 0.21's autotuned f16 convolutions
/// (its `mma` implicit-GEMM kernels) returned wrong values, relative error about 1 on every layer,
/// while fp32 and wgpu's fp16 matched the CPU. Wrong pictures are worse than slower ones.
pub const CUDA_FP16_BROKEN: &str =
    "burn 0.21's CUDA fp16 convolutions return wrong values (seen on an H200); \
use --precision fp32 (the default on cuda) or --backend wgpu for fp16";

/// The precision a backend will really compute in: fp16 only where the device stores it and the
/// backend computes it correctly.
pub fn resolve_precision<B: Backend>(
    asked: PrecisionArg,
    info: &DeviceInfo,
    device: &B::Device,
) -> Result<Precision> {
    let gpu = info.backend != BackendKind::Cpu;
    let f16 = gpu && info.backend != BackendKind::Cuda && supports_f16::<B>(device);
    match asked {
        PrecisionArg::Fp32 => Ok(Precision::F32),
        PrecisionArg::Auto => Ok(if f16 { Precision::F16 } else { Precision::F32 }),
        PrecisionArg::Fp16 if f16 => Ok(Precision::F16),
        PrecisionArg::Fp16 => Err(Error::BackendUnavailable {
            backend: format!("{} with fp16", info.backend),
            reason: if info.backend == BackendKind::Cuda {
                CUDA_FP16_BROKEN.to_string()
            } else {
                format!(
                    "{} does not compute in fp16; use --precision fp32",
                    info.name
                )
            },
        }),
    }
}

/// As `resolve_precision`, for `model` run with `kernels`: our fused kernels compute fp16
/// correctly on CUDA, so there fp16 is allowed, and the default, where they run the model.
pub fn resolve_precision_for<B: Backend>(
    asked: PrecisionArg,
    info: &DeviceInfo,
    device: &B::Device,
    model: &Model,
    kernels: Kernels,
) -> Result<Precision> {
    let fused_on_cuda = info.backend == BackendKind::Cuda
        && kernels == Kernels::Auto
        && kernels::srvgg::recognise(&model.graph).is_some()
        && supports_f16::<B>(device);
    if fused_on_cuda {
        Ok(match asked {
            PrecisionArg::Fp32 => Precision::F32,
            PrecisionArg::Auto | PrecisionArg::Fp16 => Precision::F16,
        })
    } else {
        resolve_precision::<B>(asked, info, device)
    }
}

pub fn memory_budget(info: &DeviceInfo) -> MemoryBudget {
    const GIB: u64 = 1 << 30;
    let bytes = match info.backend {
        // Half the card: the rest is for the backend's pools, other programs and the display.
        BackendKind::Cuda => info.memory.map_or(4 * GIB, |m| m / 2),
        // wgpu does not report memory; 2 GiB fits nearly any GPU of the last decade.
        BackendKind::Wgpu => 2 * GIB,
        BackendKind::Cpu => 2 * GIB,
    };
    MemoryBudget {
        bytes,
        max_binding: info.max_binding,
    }
}

fn run_on<B: Backend>(
    device: &B::Device,
    info: &DeviceInfo,
    config: &Config,
    model: &Model,
    jobs: &[images::Job],
) -> Result<Summary> {
    let start = Instant::now();
    let precision =
        resolve_precision_for::<B>(config.precision, info, device, model, config.kernels)?;
    let mut upscaler = Upscaler::<B>::new(
        model,
        precision,
        device,
        config.tile,
        memory_budget(info),
        config.kernels,
    );
    let precision = upscaler.precision();
    log::info!(
        "model {} x{} in {precision} on {}, tiles up to {} px",
        model.name,
        model.scale,
        upscaler.kernels(),
        upscaler.tile()
    );
    let mut progress = progress::Progress::new(jobs.len() as u64, config.quiet);
    let mut summary = Summary {
        files: 0,
        input_pixels: 0,
        output_pixels: 0,
        elapsed: Duration::ZERO,
        device: info.name.clone(),
        backend: info.backend,
        precision,
        kernels: upscaler.kernels(),
        tile: 0,
        model: model.name.clone(),
        scale: model.scale,
        forwards: 0,
        outputs: Vec::new(),
        video: None,
        dedup: None,
        linked: 0,
    };
    let mut dedup = config
        .video
        .dedup
        .filter(|_| jobs.len() > 1)
        .map(|thresholds| {
            let window = config.video.dedup_window.unwrap_or(dedup::WINDOW);
            let found = dedup::pictures::PictureDedup::<B>::new(device, thresholds, window);
            summary.dedup = Some(DedupSummary {
                thresholds,
                window,
                features: found.features_by().to_string(),
            });
            found
        });
    for (index, job) in jobs.iter().enumerate() {
        if interrupted() {
            return Err(Error::Interrupted);
        }
        let decoded = images::read(&job.input)?;
        let source = dedup
            .as_mut()
            .and_then(|d| d.source_for(index as u64, &decoded, &job.output));
        if let Some(source) = source {
            images::link_duplicate(&source, &job.output, config.overwrite)?;
            summary.files += 1;
            summary.linked += 1;
            summary.outputs.push(job.output.clone());
            progress.step(&job.input.display().to_string());
            continue;
        }
        let rgb = upscaler.upscale(&decoded.rgb, &interrupted)?;
        let alpha = decoded
            .alpha
            .as_ref()
            .map(|a| images::upscale_alpha(a, model.scale));
        let image = images::assemble(&rgb, alpha.as_ref(), decoded.gray, decoded.sixteen_bit);
        images::write(image, &job.output, config.overwrite, config.jpeg_quality)?;
        summary.files += 1;
        summary.input_pixels += (decoded.rgb.width * decoded.rgb.height) as u64;
        summary.output_pixels += (rgb.width * rgb.height) as u64;
        summary.outputs.push(job.output.clone());
        progress.step(&job.input.display().to_string());
    }
    progress.finish();
    summary.elapsed = start.elapsed();
    summary.tile = upscaler.tile();
    summary.forwards = upscaler.forwards;
    if let Some(path) = &config.report {
        report::write(path, config, &summary, None)?;
    }
    Ok(summary)
}

/// The backend `config` asks for, logged with the reason it was chosen.
fn select_backend(config: &Config) -> Result<Selected> {
    let (selected, why) = backend::select(config.backend, config.device)?;
    log::info!(
        "backend {} on {} ({})",
        selected.info().backend,
        selected.info().name,
        why
    );
    Ok(selected)
}

fn run_video(config: &Config) -> Result<Summary> {
    video::init();
    video_job::check_paths(config)?;
    let model = model::load(&config.model, config.scale)?;
    let selected = select_backend(config)?;
    match selected {
        Selected::Cuda(device, info) => {
            video_job::run::<Cuda>(&device, &info, None, config, &model)
        }
        Selected::Wgpu(device, info) => {
            // Before burn opens the device, so that our shaders can share it.
            let setup = backend::wgpu_setup(&device);
            video_job::run::<Wgpu>(&device, &info, setup, config, &model)
        }
        Selected::Cpu(info) => {
            video_job::run::<NdArray>(&NdArrayDevice::Cpu, &info, None, config, &model)
        }
    }
}

/// Every device each backend can see, or why it sees none, for `upframe devices`.
pub fn describe_devices() -> String {
    let mut out = String::new();
    let line = |i: &DeviceInfo| {
        let memory = i
            .memory
            .map(|m| format!(", {:.1} GiB", m as f64 / (1u64 << 30) as f64))
            .unwrap_or_default();
        format!("  [{}] {} ({}{memory})\n", i.index, i.name, i.class)
    };
    out.push_str("cuda:\n");
    match backend::cuda_devices() {
        Ok(devices) => devices.iter().for_each(|d| out.push_str(&line(d))),
        Err(reason) => out.push_str(&format!("  none: {reason}\n")),
    }
    out.push_str("wgpu:\n");
    let wgpu = backend::wgpu_devices();
    if wgpu.is_empty() {
        out.push_str("  none: no Vulkan/Metal/DX12 adapter found\n");
    }
    wgpu.iter().for_each(|(_, d)| out.push_str(&line(d)));
    out.push_str("cpu:\n");
    out.push_str(&line(&backend::cpu_info()));
    out
}

/// The text of a panic payload, for turning backend panics into errors.
pub fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}
