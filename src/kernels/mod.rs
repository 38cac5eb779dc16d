//! Our own GPU kernels for the SRVGG family (CubeCL, one source for CUDA and wgpu), used in place
//! of burn's generic operations when the loaded model has that shape. The CPU, and every other
//! model, keep the generic path in `model::forward`.

pub mod conv;
pub mod conv_mma;
pub mod engine;
pub mod picture;
pub mod srvgg;

use std::any::Any;

use burn::backend::cuda::CudaDevice;
use burn::backend::wgpu::WgpuDevice;
use cubecl::cuda::CudaRuntime;
use cubecl::wgpu::WgpuRuntime;

use crate::model::forward::Precision;
use crate::model::graph::Graph;

/// The region of the upscaled picture to return: x, y, width, height in output pixels.
pub type Keep = (usize, usize, usize, usize);

pub enum FusedOutput {
    /// R | G << 8 | B << 16 per pixel.
    Rgb8(Vec<u32>),
    /// Three f32 planes.
    Planes(Vec<f32>),
}

/// Which kernels run the model: `Auto` takes ours where the model and device allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    Auto,
    Generic,
}

/// How `Fused::time_forward` times: `runs` samples, each of `queue` forwards of `batch` frames
/// queued back to back and ended by one device sync (the mean forward of the sample). A queue of
/// 1 times each forward with the sync's round trip; a longer one measures throughput, as
/// PyTorch's peers (`benches/`) are timed.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub runs: usize,
    pub batch: usize,
    pub queue: usize,
}

/// A network running on our kernels, whatever the runtime.
pub trait Fused: Send {
    /// `planes` is 3×`height`×`width` f32.
    fn run(
        &self,
        planes: &[f32],
        width: usize,
        height: usize,
        keep: Keep,
        packed: bool,
    ) -> Result<FusedOutput, String> {
        self.run_frames(planes, 1, width, height, keep, packed)
    }
    /// As `run`, for `frames` pictures of the same size at once (one after another in `planes`,
    /// and so in the output): one launch per layer for all of them, which fills a large device
    /// better than one picture of a small size does.
    fn run_frames(
        &self,
        planes: &[f32],
        frames: usize,
        width: usize,
        height: usize,
        keep: Keep,
        packed: bool,
    ) -> Result<FusedOutput, String>;
    /// Whether `run_on_device` takes buffers of burn's CUDA client (those `video::device_frames`
    /// fills from NVDEC).
    fn on_cuda(&self) -> bool;
    /// As `run`, from three f32 planes already on this engine's device, mirrored `pad` pixels
    /// out on every side first (`keep` is in the padded picture's upscaled pixels).
    #[allow(clippy::too_many_arguments)]
    fn run_on_device(
        &self,
        planes: &cubecl::server::Handle,
        width: usize,
        height: usize,
        pad: usize,
        keep: Keep,
        packed: bool,
    ) -> Result<FusedOutput, String>;
    /// What runs, for logs and reports: e.g. "fused SRVGG kernels, tensor cores".
    fn describe(&self) -> String;

    /// Whether parts of the kernels are left out for timing (their results are then wrong).
    fn timing_only(&self) -> bool {
        false
    }
    /// Model-only times at `width`×`height`, one per forward of `timing.batch` frames, after a
    /// warm-up.
    fn time_forward(&self, width: usize, height: usize, timing: Timing)
        -> Vec<std::time::Duration>;
    /// Device memory the runtime holds, in bytes.
    fn memory_reserved(&self) -> Option<u64>;
}

/// Our kernels for `graph` on `device`, when the graph is an SRVGG network and the device is a
/// CUDA or wgpu one (burn's own device types, so the same runtime client and memory are shared).
pub fn fused_for<D: Any>(
    graph: &Graph,
    precision: Precision,
    device: &D,
) -> Option<Box<dyn Fused>> {
    let (fused, scale) = unverified(graph, precision, device)?;
    verified(fused, graph, scale)
}

/// `fused_for` for `upframe bench`: kernels with parts left out (`UPFRAME_CONV_ABLATE`,
/// `UPFRAME_LAUNCHES_LEFT_OUT`) are
/// wrong on purpose, so they are timed without the check (and `fused_for` refuses them).
pub fn fused_for_timing<D: Any>(
    graph: &Graph,
    precision: Precision,
    device: &D,
) -> Option<Box<dyn Fused>> {
    let (fused, scale) = unverified(graph, precision, device)?;
    if fused.timing_only() {
        log::warn!(
            "{}: its results are wrong, for timing only",
            fused.describe()
        );
        return Some(fused);
    }
    verified(fused, graph, scale)
}

/// Our kernels for `graph` on `device` and the network's scale, before `verify`.
fn unverified<D: Any>(
    graph: &Graph,
    precision: Precision,
    device: &D,
) -> Option<(Box<dyn Fused>, usize)> {
    let net = srvgg::recognise(graph)?;
    if net.layers[0].cout % conv::HEAD_QUAD != 0 {
        return None;
    }
    let device: &dyn Any = device;
    let fused: Box<dyn Fused> = if let Some(d) = device.downcast_ref::<CudaDevice>() {
        Box::new(engine::Engine::<CudaRuntime>::new(
            &net,
            precision,
            d,
            engine::CUDA_SHAPE,
        ))
    } else if let Some(d) = device.downcast_ref::<WgpuDevice>() {
        Box::new(engine::Engine::<WgpuRuntime>::new(
            &net,
            precision,
            d,
            engine::WGPU_SHAPE,
        ))
    } else {
        return None;
    };
    Some((fused, net.scale))
}

fn verified(fused: Box<dyn Fused>, graph: &Graph, scale: usize) -> Option<Box<dyn Fused>> {
    match verify(fused.as_ref(), graph, scale) {
        Ok(()) => Some(fused),
        Err(reason) => {
            log::warn!(
                "upframe's kernels are not used ({reason}); burn's operations run the model"
            );
            None
        }
    }
}

/// The precision burn's operations run in when our kernels do not: fp16 on cuda is wrong in
/// burn 0.21 (`crate::CUDA_FP16_BROKEN`), so fp32 there.
pub fn generic_precision<D: Any>(device: &D, precision: Precision) -> Precision {
    let device: &dyn Any = device;
    if device.downcast_ref::<CudaDevice>().is_some() {
        Precision::F32
    } else {
        precision
    }
}

/// Runs `fused` once on a small picture and compares it with burn's fp32 operations on the CPU,
/// within the fp16 bound the tests use (4 8-bit steps at most, 0.5 on average). A kernel that
/// failed to compile (the runtime only logs that) or a driver that computes a cooperative matrix
/// wrongly must fall back, never write a picture.
pub fn verify(fused: &dyn Fused, graph: &Graph, scale: usize) -> Result<(), String> {
    use burn::backend::ndarray::NdArrayDevice;
    use burn::backend::NdArray;
    use burn::tensor::{Tensor, TensorData};

    let (w, h) = (20, 12);
    let planes: Vec<f32> = (0..3 * w * h)
        .map(|i| ((i * 37 + (i / w) * 11) % 101) as f32 / 100.0)
        .collect();
    let whole = (0, 0, w * scale, h * scale);
    let ours = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fused.run(&planes, w, h, whole, false)
    }))
    .map_err(|payload| crate::panic_message(&payload))??;
    let FusedOutput::Planes(ours) = ours else {
        return Err("the kernels returned packed pixels for planes".into());
    };
    let net = crate::model::forward::Network::<NdArray>::new(
        graph.clone(),
        Precision::F32,
        &NdArrayDevice::Cpu,
    );
    let input =
        Tensor::<NdArray, 4>::from_data(TensorData::new(planes, [1, 3, h, w]), &NdArrayDevice::Cpu);
    let reference = net
        .forward(input)
        .clamp(0.0, 1.0)
        .into_data()
        .to_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    if ours.len() != reference.len() {
        return Err(format!(
            "{} values where {} were expected",
            ours.len(),
            reference.len()
        ));
    }
    let steps: Vec<f32> = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| {
            if a.is_finite() {
                (a - b).abs() * 255.0
            } else {
                f32::INFINITY
            }
        })
        .collect();
    let max = steps.iter().cloned().fold(0.0, f32::max);
    let mean = steps.iter().sum::<f32>() / steps.len() as f32;
    if max <= 4.0 && mean <= 0.5 {
        Ok(())
    } else {
        Err(format!(
            "their result differs from the reference by up to {max:.1} 8-bit steps, {mean:.2} on average"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands for kernels that failed to compile: the runtime leaves the output as it found it.
    struct Unwritten;

    impl Fused for Unwritten {
        fn run_frames(
            &self,
            _: &[f32],
            frames: usize,
            _: usize,
            _: usize,
            keep: Keep,
            _: bool,
        ) -> Result<FusedOutput, String> {
            Ok(FusedOutput::Planes(vec![0.0; frames * 3 * keep.2 * keep.3]))
        }
        fn on_cuda(&self) -> bool {
            false
        }
        fn run_on_device(
            &self,
            _: &cubecl::server::Handle,
            _: usize,
            _: usize,
            _: usize,
            _: Keep,
            _: bool,
        ) -> Result<FusedOutput, String> {
            Err("no device".into())
        }
        fn describe(&self) -> String {
            "unwritten".into()
        }
        fn time_forward(&self, _: usize, _: usize, _: Timing) -> Vec<std::time::Duration> {
            Vec::new()
        }
        fn memory_reserved(&self) -> Option<u64> {
            None
        }
    }

    #[test]
    fn kernels_that_leave_their_output_unwritten_are_refused() {
        let model = crate::model::load(crate::model::DEFAULT_MODEL, None).unwrap();
        let reason = verify(&Unwritten, &model.graph, 4).unwrap_err();
        assert!(reason.contains("differs from the reference"), "{reason}");
    }

    #[test]
    fn the_embedded_model_is_recognised_as_srvgg() {
        let model = crate::model::load(crate::model::DEFAULT_MODEL, None).unwrap();
        let net = srvgg::recognise(&model.graph).expect("realesr-animevideov3 is an SRVGG network");
        assert_eq!(net.scale, 4);
        assert_eq!(net.layers.len(), 18);
        assert_eq!((net.layers[0].cin, net.layers[0].cout), (3, 64));
        assert_eq!(net.layers[17].cout, 48);
        assert!(net.layers[17].slopes.is_none());
        assert!(net.layers[..17].iter().all(|l| l.slopes.is_some()));
    }
}
