//! Duplicate frames: held drawings (animation on twos and threes, still shots) are found on the
//! device, so that each unique picture is upscaled once and its duplicates re-use the result.
//!
//! - `features`: what is computed per frame (integer 2x2 cell sums and a 64-bit hash), and its
//!   definition on the host.
//! - `cubecl_path`: the same as two CubeCL kernels (cuda).
//! - `burn_path`: the same with burn's tensor ops (cpu; wgpu when the WGSL path cannot run).
//! - `wgsl`: the same as WGSL shaders on burn's own wgpu device.
//! - `decide`: the decision against a window of kept frames.
//! - `pictures`: the same for a folder of images, whose duplicates become hard links.

pub mod burn_path;
pub mod cubecl_path;
pub mod decide;
pub mod features;
pub mod pictures;
pub mod wgsl;

use std::any::Any;

use burn::backend::cuda::CudaDevice;
use burn::backend::wgpu::WgpuSetup;
use burn::tensor::backend::Backend;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::{ComputeClient, Runtime};

pub use decide::{Decision, Deduplicator, Thresholds};
use features::{Features, Packed};
use wgsl::WgslFeatures;

use crate::video::device_frames::DevicePicture;

/// `--dedup`: how alike two frames must be to be one picture. Tuned on x264-encoded animation
/// (tests/dedup.rs): held frames differed by up to 8 levels in a 2x2 cell (a dark fade after a
/// keyframe), while the faintest real change there, an 8x8 square 24 levels above its background
/// moving one pixel, changed a cell by 14; live-action clips never came under 19.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    /// Merge only frames that differ by light compression noise: no 2x2 cell by more than 5
    /// levels, 1% of 8x8 blocks by more than 1.5 on average.
    Strict,
    /// Tolerate the noise of ordinary encodes: no cell by more than 8 levels, 5% of blocks by
    /// more than 2.5 on average.
    Normal,
    /// Upscale every frame.
    Off,
}

impl Level {
    pub fn thresholds(self) -> Option<Thresholds> {
        match self {
            Level::Strict => Some(Thresholds {
                peak: 5.0,
                mean: 1.5,
                fraction: 0.01,
                hash_bits: 10,
            }),
            Level::Normal => Some(Thresholds {
                peak: 8.0,
                mean: 2.5,
                fraction: 0.05,
                hash_bits: 10,
            }),
            Level::Off => None,
        }
    }
}

/// Computes features on the device that runs the model.
pub struct Detector<B: Backend> {
    device: B::Device,
    /// On wgpu, when burn's device is known to us.
    shaders: Option<WgslFeatures>,
    /// On cuda.
    cuda: Option<ComputeClient<CudaRuntime>>,
}

impl<B: Backend> Detector<B>
where
    B::Device: Any,
{
    pub fn new(device: &B::Device, wgpu: Option<&WgpuSetup>) -> Self {
        let any: &dyn Any = device;
        Self {
            device: device.clone(),
            shaders: wgpu.map(WgslFeatures::new),
            cuda: any.downcast_ref::<CudaDevice>().map(CudaRuntime::client),
        }
    }

    pub fn name(&self) -> &'static str {
        match (&self.shaders, &self.cuda) {
            (Some(_), _) => "WGSL shaders",
            (_, Some(_)) => "CubeCL kernels",
            _ => "burn tensor ops",
        }
    }

    /// The features of a picture decoded on the CUDA device, computed there; read back to the
    /// host for another backend (which never receives such pictures in practice).
    pub fn features_on_device(&mut self, picture: &DevicePicture) -> Features {
        let (words_per_row, rows) = picture.packed_layout();
        let words = picture
            .packed
            .clone()
            .expect("device pictures are packed when duplicates are looked for");
        if let Some(client) = &self.cuda {
            return cubecl_path::features_of_words(client, words, words_per_row, rows);
        }
        let bytes = picture
            .client
            .read_one(words)
            .expect("reading a packed frame back from the device");
        self.features(&Packed {
            words: bytemuck::pod_collect_to_vec(&bytes),
            words_per_row,
            rows,
        })
    }

    pub fn features(&mut self, frame: &Packed) -> Features {
        if let Some(client) = &self.cuda {
            return cubecl_path::features(client, frame);
        }
        match &mut self.shaders {
            Some(shaders) if shaders.fits(frame) => shaders.features(frame),
            _ => burn_path::features::<B>(frame, &self.device),
        }
    }
}
