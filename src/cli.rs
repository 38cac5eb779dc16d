//! The command line: clap definitions, whose doc comments are the `--help` text, and their
//! validation into a `Config` before any work starts.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::backend::{BackendChoice, BackendKind};
use crate::dedup::{Level as DedupLevel, Thresholds};
use crate::error::{Error, Result};
use crate::kernels::Kernels;
use crate::model::DEFAULT_MODEL;
use crate::upscale::TileSize;
use crate::video::encode::{EncodeSettings, VideoCodec};

const AFTER_HELP: &str = "\
Examples:
  upframe episode.mkv -o episode-x4.mkv
  upframe clip.mp4 -o clip-x2.mp4 --scale 2 --codec hevc --crf 20
  upframe clip.mp4 -o frames/ --frames png
  upframe photo.png -o photo-x4.png
  upframe frames/ -o upscaled/ --format png
  upframe art.jpg -o art.png --model bicubic --scale 2
  upframe art.png -o art-x4.png --model ./realesrgan-x4plus-anime.param

Exit codes:
  0    success
  1    failure while running (device error, decoding stopped, cannot write the output)
  2    usage or input error (bad option, missing or unreadable input, not a video, no video
       stream, output exists, bad model)
  130  interrupted (Ctrl-C); no partial output is left behind";

/// AI upscaling of videos, images and folders of images with Real-ESRGAN-family models, on CUDA,
/// any Vulkan/Metal/DX12 GPU through wgpu, or the CPU. Videos keep their audio, subtitles,
/// chapters, timestamps and colour.
#[derive(Debug, Parser)]
#[command(name = "upframe", version, after_help = AFTER_HELP)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Input video (anything FFmpeg reads), image (.png, .jpg, .jpeg, .webp) or folder of images
    /// (searched recursively)
    #[arg(required = true)]
    pub input: Option<PathBuf>,

    /// Output video (.mp4, .mkv, .mov, .webm), image, or folder when the input is a folder or
    /// --frames is given; the extension picks the format
    #[arg(short, long, required = true)]
    pub output: Option<PathBuf>,

    /// Replace outputs that already exist
    #[arg(short = 'y', long)]
    pub overwrite: bool,

    /// Model: a built-in name (see `upframe models`) or an ncnn .param file with its .bin beside it
    #[arg(short, long, default_value = DEFAULT_MODEL, help_heading = "Model")]
    pub model: String,

    /// Upscale factor; below the model's own, its output is scaled down with bicubic
    /// [default: the model's own, 4 for the built-in resizes]
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..=16), help_heading = "Model")]
    pub scale: Option<u16>,

    /// Compute backend: auto takes CUDA on NVIDIA, else the best wgpu GPU, else the CPU
    #[arg(short, long, value_enum, default_value_t = BackendArg::Auto, help_heading = "Device")]
    pub backend: BackendArg,

    /// Device index within the backend (see `upframe devices`)
    #[arg(long, help_heading = "Device")]
    pub device: Option<usize>,

    /// Arithmetic precision: auto is fp16 on GPUs that support it, fp32 elsewhere
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto, help_heading = "Device")]
    pub precision: PrecisionArg,

    /// Which kernels run the model: auto takes upframe's fused kernels for SRVGG models
    /// (realesr-animevideov3, realesr-general) on cuda and wgpu; generic forces burn's operations
    #[arg(long, value_enum, default_value_t = Kernels::Auto, help_heading = "Device")]
    pub kernels: Kernels,

    /// Tile side in input pixels for large images; 0 picks it from device memory.
    /// Tiles overlap by the model's receptive field, so they leave no seams
    #[arg(short, long, default_value_t = 0, help_heading = "Device")]
    pub tile: usize,

    /// Output format for folders (png, jpg, webp) [default: each input's own]
    #[arg(long, value_parser = ["png", "jpg", "jpeg", "webp"], help_heading = "Output")]
    pub format: Option<String>,

    /// JPEG quality, 1-100
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100), help_heading = "Output")]
    pub quality: u8,

    /// Video codec [default: h264; vp9 for .webm]
    #[arg(long, value_enum, help_heading = "Video")]
    pub codec: Option<VideoCodec>,

    /// Any FFmpeg video encoder by name (libx265, libsvtav1, h264_nvenc, ...); overrides --codec
    #[arg(long, help_heading = "Video")]
    pub encoder: Option<String>,

    /// Constant quality, lower is better [default: 18 for x264 (visually lossless), the
    /// equivalent for the other encoders]
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=63), help_heading = "Video")]
    pub crf: Option<u8>,

    /// Encoder speed preset: x264/x265 ultrafast..veryslow, SVT-AV1 0-13, NVENC p1-p7
    /// [default: medium, or the encoder's equivalent]
    #[arg(long, help_heading = "Video")]
    pub preset: Option<String>,

    /// Hardware video decoding: auto uses NVDEC with the cuda backend (software where NVDEC lacks
    /// the codec), software with the others; cuda forces NVDEC, none forces software
    #[arg(long, value_enum, default_value_t = HwDecArg::Auto, help_heading = "Video")]
    pub hwdec: HwDecArg,

    /// Decoded frames buffered ahead of the GPU
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256), help_heading = "Video")]
    pub preload: u16,

    /// Write one picture per frame (000000.png, 000001.png, ...) into the -o folder instead of
    /// a video
    #[arg(long, value_parser = ["png", "jpg", "webp"], help_heading = "Video")]
    pub frames: Option<String>,

    /// Find held frames (duplicates) on the GPU and upscale each picture once; a duplicate is
    /// written from its source's result (in a folder of images, as a hard link to its output).
    /// Neither level merges a visible change
    #[arg(long, value_enum, default_value_t = DedupLevel::Normal, help_heading = "Duplicate frames")]
    pub dedup: DedupLevel,

    /// Expert: the largest change allowed in any 2x2-pixel cell, in levels per pixel (0-255)
    #[arg(long, value_name = "LEVELS", help_heading = "Duplicate frames")]
    pub dedup_peak: Option<f32>,

    /// Expert: an 8x8 block whose mean change exceeds this many levels per pixel counts as changed
    #[arg(long, value_name = "LEVELS", help_heading = "Duplicate frames")]
    pub dedup_mean: Option<f32>,

    /// Expert: the fraction of blocks (0-1) that may have changed in a duplicate
    #[arg(long, value_name = "FRACTION", help_heading = "Duplicate frames")]
    pub dedup_fraction: Option<f32>,

    /// Expert: kept frames a frame is compared with (a blink, a cut back to a shot); the default
    /// is 16, fewer when the upscaled frames are large (they are kept in memory for re-use)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256), help_heading = "Duplicate frames")]
    pub dedup_window: Option<u16>,

    /// Write a JSON report: settings, device, per-phase timings and one record per frame
    #[arg(long, value_name = "FILE.json", help_heading = "Output")]
    pub report: Option<PathBuf>,

    /// Print only errors
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more detail (repeat for debug output)
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the built-in models
    Models,
    /// List the devices each backend sees
    Devices,
    /// Model-only speed on this machine's devices (input kept on the device)
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Model to time (as for upscaling)
    #[arg(short, long, default_value = DEFAULT_MODEL)]
    pub model: String,

    /// Backend: auto times every GPU found (CUDA and wgpu), or the CPU when there is none
    #[arg(short, long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,

    /// Device index within the backend
    #[arg(long)]
    pub device: Option<usize>,

    /// Precision: auto times fp16 (where supported) and fp32
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub precision: PrecisionArg,

    /// Input sizes on GPUs, WxH, comma-separated
    #[arg(long, default_value = "640x480,1920x1080", value_delimiter = ',', value_parser = parse_size)]
    pub sizes: Vec<(usize, usize)>,

    /// Input size on the CPU and software Vulkan, which are far slower
    #[arg(long, default_value = "160x120", value_parser = parse_size)]
    pub small: (usize, usize),

    /// Kernels to time: auto times upframe's fused kernels (where the model and device allow)
    /// and burn's generic operations; generic only the latter
    #[arg(long, value_enum, default_value_t = Kernels::Auto)]
    pub kernels: Kernels,

    /// Timed runs per case (the median is reported)
    #[arg(short = 'n', long, default_value_t = 20)]
    pub runs: usize,

    /// Frames per forward for upframe's fused kernels, which take several at once (burn's
    /// generic operations are timed one frame at a time); fps counts every frame
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub batch: u16,

    /// Threads running upframe's fused kernels side by side, each with its own engine and
    /// stream, as the video pipeline's upscale threads do; fps is their sum
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub streams: u8,

    /// Forwards of upframe's fused kernels queued back to back per timed run, ended by one sync,
    /// as the PyTorch peers in benches/ are timed; ms is then the mean per forward. 1 times each
    /// forward with the sync's round trip
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub queue: u16,

    /// Also write the rows as JSON lines to this file
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Instead of the model, time duplicate-frame detection per frame at --sizes (every backend)
    #[arg(long, conflicts_with = "decode")]
    pub dedup: bool,

    /// Instead of the model, time decoding this video (software, then NVDEC where present)
    #[arg(long, value_name = "VIDEO")]
    pub decode: Option<PathBuf>,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("'{s}' is not WxH"))?;
    let w: usize = w.parse().map_err(|_| format!("'{w}' is not a width"))?;
    let h: usize = h.parse().map_err(|_| format!("'{h}' is not a height"))?;
    if w == 0 || h == 0 {
        return Err("sizes must be positive".into());
    }
    Ok((w, h))
}

impl BackendArg {
    pub fn choice(self) -> BackendChoice {
        match self {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Cuda => BackendChoice::Only(BackendKind::Cuda),
            BackendArg::Wgpu => BackendChoice::Only(BackendKind::Wgpu),
            BackendArg::Cpu => BackendChoice::Only(BackendKind::Cpu),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    Auto,
    Cuda,
    Wgpu,
    Cpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HwDecArg {
    Auto,
    Cuda,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    Auto,
    Fp16,
    Fp32,
}

/// A validated upscale request.
#[derive(Debug, Clone)]
pub struct Config {
    pub input: PathBuf,
    pub output: PathBuf,
    pub overwrite: bool,
    pub model: String,
    pub scale: Option<usize>,
    pub backend: BackendChoice,
    pub device: Option<usize>,
    pub precision: PrecisionArg,
    pub kernels: Kernels,
    pub tile: TileSize,
    pub format: Option<String>,
    pub jpeg_quality: u8,
    pub quiet: bool,
    pub video: VideoOptions,
    pub report: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct VideoOptions {
    pub encode: EncodeSettings,
    pub hwdec: HwDecArg,
    pub preload: usize,
    pub frames: Option<String>,
    /// None with `--dedup off`.
    pub dedup: Option<Thresholds>,
    pub dedup_window: Option<usize>,
}

impl Cli {
    pub fn into_config(self) -> Result<Config> {
        let (Some(input), Some(output)) = (self.input, self.output) else {
            return Err(Error::Usage("an input and -o OUTPUT are required".into()));
        };
        let format = self
            .format
            .map(|f| if f == "jpeg" { "jpg".into() } else { f });
        let thresholds = self.dedup.thresholds().map(|t| Thresholds {
            peak: self.dedup_peak.unwrap_or(t.peak),
            mean: self.dedup_mean.unwrap_or(t.mean),
            fraction: self.dedup_fraction.unwrap_or(t.fraction),
            ..t
        });
        if let Some(t) = &thresholds {
            let levels = 0.0..=255.0;
            if !levels.contains(&t.peak)
                || !levels.contains(&t.mean)
                || !(0.0..=1.0).contains(&t.fraction)
            {
                return Err(Error::Usage(
                    "--dedup-peak and --dedup-mean take 0 to 255 levels, --dedup-fraction 0 to 1"
                        .into(),
                ));
            }
        }
        Ok(Config {
            input,
            output,
            overwrite: self.overwrite,
            model: self.model,
            scale: self.scale.map(usize::from),
            backend: self.backend.choice(),
            device: self.device,
            precision: self.precision,
            kernels: self.kernels,
            tile: if self.tile == 0 {
                TileSize::Auto
            } else {
                TileSize::Fixed(self.tile)
            },
            format,
            jpeg_quality: self.quality,
            quiet: self.quiet,
            video: VideoOptions {
                encode: EncodeSettings {
                    codec: self.codec,
                    encoder: self.encoder,
                    crf: self.crf,
                    preset: self.preset,
                },
                hwdec: self.hwdec,
                preload: usize::from(self.preload),
                frames: self
                    .frames
                    .map(|f| if f == "jpeg" { "jpg".into() } else { f }),
                dedup: thresholds,
                dedup_window: self.dedup_window.map(usize::from),
            },
            report: self.report,
        })
    }
}
