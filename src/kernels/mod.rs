//! Our own GPU kernels for the SRVGG family (CubeCL, one source for CUDA and wgpu), used in place
//! of burn's generic operations when the loaded model has that shape. The CPU, and every other
//! model, keep the generic path in `model::forward`.

pub mod conv;
pub mod engine;
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
    ) -> Result<FusedOutput, String>;
    /// What runs, for logs and reports: e.g. "fused SRVGG kernels, tensor cores".
    fn describe(&self) -> String;
    /// Model-only times of `runs` forwards at `width`×`height`, after a warm-up.
    fn time_forward(&self, width: usize, height: usize, runs: usize) -> Vec<std::time::Duration>;
    /// Device memory the runtime holds, in bytes.
    fn memory_reserved(&self) -> Option<u64>;
}

impl<R: cubecl::Runtime> Fused for engine::Engine<R> {
    fn run(
        &self,
        planes: &[f32],
        width: usize,
        height: usize,
        keep: Keep,
        packed: bool,
    ) -> Result<FusedOutput, String> {
        engine::Engine::run(self, planes, width, height, keep, packed)
    }

    fn time_forward(&self, width: usize, height: usize, runs: usize) -> Vec<std::time::Duration> {
        engine::Engine::time_forward(self, width, height, runs)
    }

    fn memory_reserved(&self) -> Option<u64> {
        engine::Engine::memory_reserved(self)
    }

    fn describe(&self) -> String {
        if self.tensor_cores() {
            "fused SRVGG kernels, tensor cores".into()
        } else {
            "fused SRVGG kernels, direct".into()
        }
    }
}

/// Our kernels for `graph` on `device`, when the graph is an SRVGG network and the device is a
/// CUDA or wgpu one (burn's own device types, so the same runtime client and memory are shared).
pub fn fused_for<D: Any>(
    graph: &Graph,
    precision: Precision,
    device: &D,
) -> Option<Box<dyn Fused>> {
    let net = srvgg::recognise(graph)?;
    if net.layers[0].cout % conv::HEAD_GROUP != 0 {
        return None;
    }
    let device: &dyn Any = device;
    if let Some(d) = device.downcast_ref::<CudaDevice>() {
        return Some(Box::new(engine::Engine::<CudaRuntime>::new(
            &net, precision, d, true,
        )));
    }
    if let Some(d) = device.downcast_ref::<WgpuDevice>() {
        return Some(Box::new(engine::Engine::<WgpuRuntime>::new(
            &net, precision, d, true,
        )));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
