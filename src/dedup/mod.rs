//! Duplicate frames: held drawings (animation on twos and threes, still shots) are found on the
//! device, so that each unique picture is upscaled once and its duplicates re-use the result.
//!
//! - `features`: what is computed per frame (integer 2x2 cell sums and a 64-bit hash) and how two
//!   frames' cells are compared, defined on the host.
//! - `cubecl_path`: the same as CubeCL kernels (cuda), kept frames' cells held on the device.
//! - `wgsl`: the same as WGSL shaders on burn's own wgpu device, cells held there too.
//! - `burn_path`: the features with burn's tensor ops (cpu; wgpu when the WGSL path cannot run),
//!   compared on the host.
//! - `slots`: which device slot holds which kept frame's cells.
//! - `decide`: the decision against a window of kept frames.
//! - `pictures`: the same for a folder of images, whose duplicates become hard links.

pub mod burn_path;
pub mod cubecl_path;
pub mod decide;
pub mod features;
pub mod pictures;
pub mod slots;
pub mod wgsl;

use std::any::Any;
use std::collections::HashMap;

use burn::backend::cuda::CudaDevice;
use burn::backend::wgpu::WgpuSetup;
use burn::tensor::backend::Backend;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::Runtime;

use cubecl_path::DeviceCells;
pub use decide::{Decision, Deduplicator, Look, Thresholds};
use features::{Features, Packed};
use wgsl::WgslCells;

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

/// Kept frames each frame is compared with, unless `--dedup-window` says otherwise (or, for a
/// video, the upscaled pictures kept for re-use would take too much memory).
pub const WINDOW: usize = 16;

/// A frame as the detector takes it.
pub enum Frame<'a> {
    Packed(&'a Packed),
    /// Decoded and packed on the CUDA device.
    Device(&'a DevicePicture),
}

/// Duplicate detection for a run: features and comparisons on the device, decisions on the host.
pub struct Dedup<B: Backend> {
    pub detector: Detector<B>,
    pub decider: Deduplicator,
}

impl<B: Backend> Dedup<B>
where
    B::Device: Any,
{
    /// `window` kept frames are compared with each frame.
    pub fn new(
        device: &B::Device,
        wgpu: Option<&WgpuSetup>,
        thresholds: Thresholds,
        window: usize,
    ) -> Self {
        Self {
            detector: Detector::new(device, wgpu, &thresholds, window),
            decider: Deduplicator::new(thresholds, window),
        }
    }

    pub fn decide(&mut self, index: u64, frame: Frame<'_>) -> Decision {
        let decider = &self.decider;
        let look = self
            .detector
            .look(frame, &|hash| decider.candidates_for(hash));
        let decision = self.decider.decide(index, &look);
        self.detector.settle(index, &decision);
        decision
    }
}

/// Measures frames against the kept ones, on the device that runs the model.
pub struct Detector<B: Backend> {
    way: Way<B>,
}

// One detector per run: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Way<B: Backend> {
    Cuda(DeviceCells<CudaRuntime>),
    /// WGSL where a frame fits the device's bindings, burn's ops otherwise.
    Wgsl(WgslCells, HostCells<B>),
    Host(HostCells<B>),
}

impl<B: Backend> Detector<B>
where
    B::Device: Any,
{
    pub fn new(
        device: &B::Device,
        wgpu: Option<&WgpuSetup>,
        thresholds: &Thresholds,
        window: usize,
    ) -> Self {
        let any: &dyn Any = device;
        let mean_limit = thresholds.mean_limit();
        let host = || HostCells::new(device, mean_limit, false);
        // For comparisons: the definition on the host's CPU, whatever the device.
        if std::env::var_os("UPFRAME_DEDUP_ON_HOST").is_some_and(|v| v == "1") {
            return Self {
                way: Way::Host(HostCells::new(device, mean_limit, true)),
            };
        }
        let way = match (any.downcast_ref::<CudaDevice>(), wgpu) {
            (Some(cuda), _) => Way::Cuda(DeviceCells::new(
                CudaRuntime::client(cuda),
                window,
                mean_limit,
            )),
            (None, Some(setup)) => Way::Wgsl(WgslCells::new(setup, window, mean_limit), host()),
            (None, None) => Way::Host(host()),
        };
        Self { way }
    }

    pub fn name(&self) -> &'static str {
        match &self.way {
            Way::Cuda(_) => "CubeCL kernels",
            Way::Wgsl(..) => "WGSL shaders",
            Way::Host(host) if host.on_cpu => "the definition on the CPU",
            Way::Host(_) => "burn tensor ops",
        }
    }

    /// Computes a frame's hash and how it differs from kept frames: on a device, from every kept
    /// frame (one pass over all costs less than a second read-back); on the host, from those
    /// that `candidates` gives for the hash.
    pub fn look(&mut self, frame: Frame<'_>, candidates: &dyn Fn(u64) -> Vec<u64>) -> Look {
        match (&mut self.way, frame) {
            (Way::Cuda(cells), Frame::Device(picture)) => {
                let (words_per_row, rows) = picture.packed_layout();
                cells.look_at_words(picture_words(picture), words_per_row, rows)
            }
            (Way::Cuda(cells), Frame::Packed(frame)) => cells.look(frame),
            (Way::Wgsl(shaders, host), frame) => {
                let frame = packed_on_host(frame);
                if shaders.fits(&frame) {
                    shaders.look(&frame)
                } else {
                    host.look(&frame, candidates)
                }
            }
            (Way::Host(host), frame) => host.look(&packed_on_host(frame), candidates),
        }
    }

    /// Asks the WGSL shaders to time each later look on the device; false for other ways, or
    /// where the device writes no timestamps.
    pub fn time_on_device(&mut self) -> bool {
        match &mut self.way {
            Way::Wgsl(shaders, _) => shaders.time_on_device(),
            _ => false,
        }
    }

    /// The last look's device time, where `time_on_device` was granted.
    pub fn device_time(&self) -> Option<std::time::Duration> {
        match &self.way {
            Way::Wgsl(shaders, _) => shaders.device_time(),
            _ => None,
        }
    }

    /// Keeps the frame looked at last if the decision kept it; forgets released ones.
    pub fn settle(&mut self, index: u64, decision: &Decision) {
        match &mut self.way {
            Way::Cuda(cells) => cells.settle(index, decision),
            Way::Wgsl(shaders, host) => {
                shaders.settle(index, decision);
                host.settle(index, decision);
            }
            Way::Host(host) => host.settle(index, decision),
        }
    }

    /// Compiles the kernels for `width` x `height` frames, before the first frame waits for it:
    /// a frame kept, a second one compared with it, then both forgotten.
    pub fn warm_up(&mut self, width: usize, height: usize) {
        let frame = Packed::new(width, height);
        let none = |_| Vec::new();
        self.look(Frame::Packed(&frame), &none);
        self.settle(
            0,
            &Decision {
                source: 0,
                released: Vec::new(),
            },
        );
        self.look(Frame::Packed(&frame), &none);
        self.settle(
            1,
            &Decision {
                source: 0,
                released: vec![0],
            },
        );
    }
}

fn picture_words(picture: &DevicePicture) -> cubecl::server::Handle {
    picture
        .packed
        .clone()
        .expect("device pictures are packed when duplicates are looked for")
}

/// A device picture read back, for a detector on another device (which never receives such
/// pictures in practice).
fn packed_on_host(frame: Frame<'_>) -> std::borrow::Cow<'_, Packed> {
    match frame {
        Frame::Packed(packed) => std::borrow::Cow::Borrowed(packed),
        Frame::Device(picture) => {
            let (words_per_row, rows) = picture.packed_layout();
            let bytes = picture
                .client
                .read_one(picture_words(picture))
                .expect("reading a packed frame back from the device");
            std::borrow::Cow::Owned(Packed {
                words: bytemuck::pod_collect_to_vec(&bytes),
                words_per_row,
                rows,
            })
        }
    }
}

/// Features by burn's tensor ops (or the definition itself, `on_cpu`), kept and compared on the
/// host.
struct HostCells<B: Backend> {
    device: B::Device,
    on_cpu: bool,
    mean_limit: u32,
    kept: HashMap<u64, Features>,
    looking: Option<Features>,
}

impl<B: Backend> HostCells<B> {
    fn new(device: &B::Device, mean_limit: u32, on_cpu: bool) -> Self {
        Self {
            device: device.clone(),
            on_cpu,
            mean_limit,
            kept: HashMap::new(),
            looking: None,
        }
    }

    fn look(&mut self, frame: &Packed, candidates: &dyn Fn(u64) -> Vec<u64>) -> Look {
        let new = if self.on_cpu {
            features::reference(frame)
        } else {
            burn_path::features::<B>(frame, &self.device)
        };
        let size = (new.pairs_per_row, new.cell_rows);
        // As on the devices: a new frame size forgets the kept frames.
        self.kept
            .retain(|_, kept| (kept.pairs_per_row, kept.cell_rows) == size);
        let changes = candidates(new.hash)
            .into_iter()
            .filter_map(|index| {
                let kept = self.kept.get(&index)?;
                Some((index, features::change(kept, &new, self.mean_limit)))
            })
            .collect();
        let look = Look {
            hash: new.hash,
            changes,
        };
        self.looking = Some(new);
        look
    }

    fn settle(&mut self, index: u64, decision: &Decision) {
        if let Some(looked) = self.looking.take() {
            if decision.keeps(index) {
                self.kept.insert(index, looked);
            }
        }
        for released in &decision.released {
            self.kept.remove(released);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn warming_up_leaves_no_kept_frame_behind() {
        let t = Level::Normal.thresholds().expect("normal");
        let mut detector = Detector::<NdArray>::new(&Default::default(), None, &t, 4);
        detector.warm_up(32, 16);
        let frame = Packed::new(32, 16);
        let everyone = |_| (0..4).collect();
        assert!(detector
            .look(Frame::Packed(&frame), &everyone)
            .changes
            .is_empty());
    }
}
