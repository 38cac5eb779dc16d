//! One video run: check the paths, open the input, set up the save phase (a video or a frames
//! folder) and the upscaler, run the pipeline, and sum it up.

use std::any::Any;
use std::time::{Duration, Instant};

use burn::backend::cuda::CudaDevice;

use burn::backend::wgpu::WgpuSetup;
use burn::tensor::backend::Backend;

use crate::backend::{BackendKind, DeviceInfo};
use crate::cli::{Config, HwDecArg};
use crate::dedup::{self, Dedup};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::pipeline::{self, Save};
use crate::progress::Progress;
use crate::upscale::Upscaler;
use crate::video::colour;
use crate::video::decode::{self, HwDecode};
use crate::video::device_frames::DeviceFrames;
use crate::video::encode::{self, Sink};
use crate::video::frames_dir::FramesDir;
use crate::{memory_budget, report, resolve_precision_for, DedupSummary, Summary, VideoSummary};

/// Upscale threads on a GPU backend.
const UPSCALE_THREADS: usize = 2;

/// Host memory for upscaled pictures kept for later duplicates: it bounds the dedup window.
const SOURCE_CACHE_BYTES: usize = 1 << 30;

/// Refuses, before any work, what would fail or destroy data at the end.
pub fn check_paths(config: &Config) -> Result<()> {
    let (input, output) = (&config.input, &config.output);
    if !input.exists() {
        return Err(Error::InputMissing {
            path: input.clone(),
        });
    }
    if config.video.frames.is_some() {
        return if output.is_file() {
            Err(Error::Usage(format!(
                "{}: --frames writes a folder, and this is a file",
                output.display()
            )))
        } else {
            Ok(())
        };
    }
    if output.is_dir() {
        return Err(Error::Usage(format!(
            "{}: is a folder; give a video file name, or add --frames png to write pictures",
            output.display()
        )));
    }
    encode::container_for(output)?;
    if crate::images::same_file(input, output) {
        return Err(Error::OutputIsInput {
            path: output.clone(),
        });
    }
    if output.exists() && !config.overwrite {
        return Err(Error::OutputExists {
            path: output.clone(),
        });
    }
    Ok(())
}

/// Frames are converted on the GPU where every upscaler takes them there (our kernels on cuda,
/// no tiles): NVDEC's stay there, software-decoded ones are uploaded as Y'CbCr.
/// UPFRAME_CONVERT_ON_HOST=1 sends them through the host instead, for comparisons.
fn device_frames<B: Backend>(
    device: &B::Device,
    upscalers: &[Upscaler<B>],
    width: u32,
    height: u32,
) -> Option<DeviceFrames> {
    let (w, h) = (width as usize, height as usize);
    let device: &dyn Any = device;
    let cuda = device.downcast_ref::<CudaDevice>()?;
    if std::env::var_os("UPFRAME_CONVERT_ON_HOST").is_some()
        || !upscalers.iter().all(|u| u.takes_device_pictures(w, h))
    {
        log::info!("frames are converted to RGB on the host");
        return None;
    }
    match DeviceFrames::new(cuda) {
        Ok(frames) => {
            log::info!("frames are converted to RGB on the GPU");
            Some(frames)
        }
        Err(reason) => {
            log::warn!("{reason}; frames are converted on the host");
            None
        }
    }
}

pub fn run<B: Backend>(
    device: &B::Device,
    info: &DeviceInfo,
    wgpu: Option<WgpuSetup>,
    config: &Config,
    model: &Model,
) -> Result<Summary> {
    let start = Instant::now();
    let precision =
        resolve_precision_for::<B>(config.precision, info, device, model, config.kernels)?;
    let hwdec = match (config.video.hwdec, info.backend) {
        (HwDecArg::Auto | HwDecArg::Cuda, BackendKind::Cuda) => {
            HwDecode::Cuda { device: info.index }
        }
        (HwDecArg::Cuda, _) => HwDecode::Cuda {
            device: config.device.unwrap_or(0),
        },
        (HwDecArg::Auto, _) => {
            log::debug!("decoding in software: NVDEC is used with the cuda backend (--hwdec cuda forces it)");
            HwDecode::None
        }
        (HwDecArg::None, _) => HwDecode::None,
    };
    let errors_before = crate::video::ffmpeg_errors();
    let mut source = decode::open(&config.input, hwdec)?;
    source.pack = config.video.dedup.is_some();
    let v = source.info.clone();
    log::info!(
        "input {} {}x{} {:?}, {:.3} fps, {:?} {} range; decoding with {}",
        v.codec,
        v.width,
        v.height,
        v.format,
        f64::from(v.frame_rate),
        v.colour.matrix,
        if v.colour.full_range {
            "full"
        } else {
            "limited"
        },
        v.decoder
    );
    let deep = colour::bit_depth(v.format) > 8;
    let (save, encoder) = match &config.video.frames {
        Some(extension) => (
            Save::Frames(FramesDir::create(
                &config.output,
                extension,
                v.frames_estimate,
                deep,
                config.overwrite,
                config.jpeg_quality,
            )?),
            format!("{extension} pictures"),
        ),
        None => {
            let sink = Sink::create(
                &source.input,
                &v,
                model.scale,
                &config.output,
                &config.video.encode,
            )?;
            let name = sink.encoder_name.clone();
            (Save::Video(Box::new(sink)), name)
        }
    };
    // Two upscalers on a GPU: while one waits for its result or works on the host, the other's
    // frame runs on the device. The CPU backend parallelises inside each operation instead.
    let workers = if info.backend == BackendKind::Cpu {
        1
    } else {
        UPSCALE_THREADS
    };
    let mut upscalers: Vec<Upscaler<B>> = (0..workers)
        .map(|_| {
            Upscaler::<B>::new(
                model,
                precision,
                device,
                config.tile,
                memory_budget(info),
                config.kernels,
            )
        })
        .collect();
    source.device_frames = device_frames(device, &upscalers, v.width, v.height);
    log::info!(
        "model {} x{} in {} on {}, tiles up to {} px, {workers} upscale thread(s)",
        model.name,
        model.scale,
        upscalers[0].precision(),
        upscalers[0].kernels(),
        upscalers[0].tile()
    );
    let mut dedup_summary = None;
    let dedup = config.video.dedup.map(|thresholds| {
        // The sink keeps converted frames: at most 4:4:4, 16 bits deep for deep output.
        let sample_bytes = if save.takes_rgb8() { 3 } else { 6 };
        let picture_bytes =
            (v.width * v.height) as usize * model.scale * model.scale * sample_bytes;
        let window = config.video.dedup_window.unwrap_or(match save {
            Save::Frames(_) => dedup::WINDOW,
            Save::Video(_) => (SOURCE_CACHE_BYTES / picture_bytes).clamp(1, dedup::WINDOW),
        });
        let mut dedup = Dedup::<B>::new(device, wgpu.as_ref(), thresholds, window);
        // Kernels compile on first use: do it before the first frame waits for it.
        let warming = Instant::now();
        dedup.detector.warm_up(v.width as usize, v.height as usize);
        log::debug!(
            "duplicate detection ready in {:.2} s",
            warming.elapsed().as_secs_f64()
        );
        log::info!(
            "duplicate frames: a frame is one picture with a kept one when no 2x2 cell changed by more than {} levels, and at most {:.1}% of 8x8 blocks by more than {} on average; {window} kept frames compared, by {}",
            thresholds.peak,
            thresholds.fraction * 100.0,
            thresholds.mean,
            dedup.detector.name()
        );
        dedup_summary = Some(DedupSummary {
            thresholds,
            window,
            features: dedup.detector.name().to_string(),
        });
        dedup
    });
    let mut progress = Progress::frames(v.frames_estimate, config.quiet);
    let outcome = pipeline::run(
        &mut upscalers,
        source,
        dedup,
        save,
        config.video.preload,
        &mut progress,
        &crate::interrupted,
    );
    progress.finish();
    let outcome = outcome?;
    for (i, upscaler) in upscalers.iter().enumerate() {
        log::debug!("upscale thread {i} profile: {:?}", upscaler.profile);
    }
    let ffmpeg_errors = crate::video::ffmpeg_errors() - errors_before;
    if outcome.decode.damaged_packets > 0 || ffmpeg_errors > 0 {
        log::warn!(
            "the input has damaged data: FFmpeg reported {ffmpeg_errors} error(s), {} video packet(s) were skipped; \
the frames around them may be missing or show errors (UPFRAME_FFMPEG_LOG=warning shows them)",
            outcome.decode.damaged_packets
        );
    }
    let frames = outcome.frames.len() as u64;
    let unique = outcome
        .frames
        .iter()
        .filter(|f| f.source == f.index)
        .count() as u64;
    let summary = Summary {
        files: 1,
        input_pixels: frames * u64::from(v.width) * u64::from(v.height),
        output_pixels: frames
            * u64::from(v.width)
            * u64::from(v.height)
            * (model.scale * model.scale) as u64,
        elapsed: start.elapsed().max(Duration::from_nanos(1)),
        device: info.name.clone(),
        backend: info.backend,
        precision: upscalers[0].precision(),
        kernels: upscalers[0].kernels(),
        tile: upscalers.iter().map(|u| u.tile()).min().unwrap_or(0),
        model: model.name.clone(),
        scale: model.scale,
        forwards: upscalers.iter().map(|u| u.forwards).sum(),
        outputs: vec![outcome.output.clone()],
        video: Some(VideoSummary {
            frames,
            unique,
            phases: outcome.phases.clone(),
            decoder: v.decoder.clone(),
            encoder,
            damaged_packets: outcome.decode.damaged_packets,
            ffmpeg_errors,
            hardware_frames: outcome.decode.hardware_frames,
            converted_on_device: outcome.decode.converted_on_device,
        }),
        dedup: dedup_summary,
        linked: 0,
    };
    if let Some(path) = &config.report {
        report::write(path, config, &summary, Some(&outcome.frames))?;
    }
    Ok(summary)
}
