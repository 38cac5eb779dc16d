//! The upscale stage: a planar RGB image in, the model's output out, cut into overlapping tiles
//! when the image would not fit the device. Tiles overlap by the model's receptive radius, so tiled
//! and untiled output agree; an out-of-memory at one tile size retries at half the size.

use std::panic::{catch_unwind, AssertUnwindSafe};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::kernels::{self, Fused, FusedOutput, Kernels};
use crate::model::forward::{Network, Precision};
use crate::model::Model;
use crate::video::device_frames::DevicePicture;

/// Channels × height × width, values nominally in 0..1.
#[derive(Debug, Clone, PartialEq)]
pub struct Planar {
    pub channels: usize,
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Planar {
    pub fn new(channels: usize, width: usize, height: usize) -> Self {
        Self {
            channels,
            width,
            height,
            data: vec![0.0; channels * width * height],
        }
    }

    fn crop(&self, x0: usize, y0: usize, w: usize, h: usize) -> Planar {
        let mut out = Planar::new(self.channels, w, h);
        for c in 0..self.channels {
            for y in 0..h {
                let src = (c * self.height + y0 + y) * self.width + x0;
                let dst = (c * h + y) * w;
                out.data[dst..dst + w].copy_from_slice(&self.data[src..src + w]);
            }
        }
        out
    }

    /// Copies `src`'s rectangle at (sx, sy) of size w×h to (dx, dy) in self.
    #[allow(clippy::too_many_arguments)]
    fn paste(
        &mut self,
        src: &Planar,
        sx: usize,
        sy: usize,
        w: usize,
        h: usize,
        dx: usize,
        dy: usize,
    ) {
        for c in 0..self.channels {
            for y in 0..h {
                let s = (c * src.height + sy + y) * src.width + sx;
                let d = (c * self.height + dy + y) * self.width + dx;
                self.data[d..d + w].copy_from_slice(&src.data[s..s + w]);
            }
        }
    }
}

/// 8-bit RGB, one u32 per pixel holding R | G << 8 | B << 16: FFmpeg's RGB0 layout on a
/// little-endian host. The model's output is quantised and packed on the device, so a quarter of
/// the bytes of f32 planes cross the bus and the encoder reads it without another pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u32>,
}

impl Rgb8 {
    pub fn rgb(&self, x: usize, y: usize) -> [u8; 3] {
        let v = self.data[y * self.width + x];
        [v as u8, (v >> 8) as u8, (v >> 16) as u8]
    }
}

/// What a tile's output is read back as, and how tiles are put together.
pub trait TileOutput: Sized {
    /// Whether our kernels should quantise and pack the result.
    const PACKED: bool;
    fn blank(width: usize, height: usize) -> Self;
    fn read<B: Backend>(output: Tensor<B, 4>) -> Result<Self, String>;
    fn from_fused(output: FusedOutput, width: usize, height: usize) -> Result<Self, String>;
    #[allow(clippy::too_many_arguments)]
    fn paste(&mut self, src: &Self, sx: usize, sy: usize, w: usize, h: usize, dx: usize, dy: usize);
    fn crop(&self, x0: usize, y0: usize, w: usize, h: usize) -> Self;
}

impl TileOutput for Planar {
    const PACKED: bool = false;
    fn blank(width: usize, height: usize) -> Self {
        Planar::new(3, width, height)
    }
    fn from_fused(output: FusedOutput, width: usize, height: usize) -> Result<Self, String> {
        match output {
            FusedOutput::Planes(data) => Ok(Planar {
                channels: 3,
                width,
                height,
                data,
            }),
            FusedOutput::Rgb8(_) => Err("the kernels returned packed pixels for planes".into()),
        }
    }
    fn read<B: Backend>(output: Tensor<B, 4>) -> Result<Self, String> {
        let [_, c, h, w] = output.dims();
        let values = output
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| format!("reading the result back: {e:?}"))?;
        Ok(Planar {
            channels: c,
            width: w,
            height: h,
            data: values,
        })
    }
    fn paste(
        &mut self,
        src: &Self,
        sx: usize,
        sy: usize,
        w: usize,
        h: usize,
        dx: usize,
        dy: usize,
    ) {
        Planar::paste(self, src, sx, sy, w, h, dx, dy)
    }
    fn crop(&self, x0: usize, y0: usize, w: usize, h: usize) -> Self {
        Planar::crop(self, x0, y0, w, h)
    }
}

impl TileOutput for Rgb8 {
    const PACKED: bool = true;
    fn from_fused(output: FusedOutput, width: usize, height: usize) -> Result<Self, String> {
        match output {
            FusedOutput::Rgb8(data) => Ok(Rgb8 {
                width,
                height,
                data,
            }),
            FusedOutput::Planes(_) => Err("the kernels returned planes for packed pixels".into()),
        }
    }
    fn blank(width: usize, height: usize) -> Self {
        Rgb8 {
            width,
            height,
            data: vec![0; width * height],
        }
    }
    fn read<B: Backend>(output: Tensor<B, 4>) -> Result<Self, String> {
        let [_, _, h, w] = output.dims();
        let q = output.clamp(0.0, 1.0).mul_scalar(255.0).round();
        let channel = |c: usize| q.clone().slice([0..1, c..c + 1, 0..h, 0..w]);
        // Below 2^24, so exact in f32.
        let packed = channel(0) + channel(1).mul_scalar(256.0) + channel(2).mul_scalar(65536.0);
        let values = packed
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| format!("reading the result back: {e:?}"))?;
        Ok(Rgb8 {
            width: w,
            height: h,
            data: values.into_iter().map(|v| v as u32).collect(),
        })
    }
    fn paste(
        &mut self,
        src: &Self,
        sx: usize,
        sy: usize,
        w: usize,
        h: usize,
        dx: usize,
        dy: usize,
    ) {
        for y in 0..h {
            let s = (sy + y) * src.width + sx;
            let d = (dy + y) * self.width + dx;
            self.data[d..d + w].copy_from_slice(&src.data[s..s + w]);
        }
    }
    fn crop(&self, x0: usize, y0: usize, w: usize, h: usize) -> Self {
        let mut out = Rgb8::blank(w, h);
        out.paste(self, x0, y0, w, h, 0, 0);
        out
    }
}

/// How big a tile may be, in input pixels per side. `Auto` derives it from device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileSize {
    Auto,
    Fixed(usize),
}

/// What the upscaler knows of the device's memory, for automatic tiles.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBudget {
    /// Bytes the model's working set may take.
    pub bytes: u64,
    /// The largest single buffer the device binds, if limited.
    pub max_binding: Option<u64>,
}

const MIN_TILE: usize = 32;

/// Mirror padding added around a picture before the network and cut off after, as
/// realesrgan-ncnn-vulkan and Real-ESRGAN's scripts do: edges then see picture-like context instead
/// of the convolutions' zeros, which would darken them.
pub const EDGE_PAD: usize = 10;

pub struct Upscaler<B: Backend> {
    net: Network<B>,
    /// Our kernels, when the model and device allow them; `net` runs otherwise.
    fused: Option<Box<dyn Fused>>,
    scale: usize,
    overlap: usize,
    edge_pad: usize,
    tile: usize,
    /// Forward calls made, counted so tests can assert the model ran exactly as often as needed.
    pub forwards: u64,
    /// Where the time goes, for `-v` and the report.
    pub profile: Profile,
}

/// Time spent in each step of upscaling, summed over calls.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Profile {
    /// Mirror padding, cropping and pasting tiles on the host.
    pub host_s: f64,
    /// Creating the input tensor (the upload is queued).
    pub upload_s: f64,
    /// Queueing the network (asynchronous backends return before it has run).
    pub queue_s: f64,
    /// Waiting for the result and reading it back (includes the network's run time).
    pub readback_s: f64,
}

impl<B: Backend> Upscaler<B> {
    pub fn new(
        model: &Model,
        precision: Precision,
        device: &B::Device,
        tile: TileSize,
        budget: MemoryBudget,
        kernels: Kernels,
    ) -> Self {
        let tile = match tile {
            TileSize::Fixed(0) | TileSize::Auto => auto_tile(model, precision, budget),
            TileSize::Fixed(n) => n.max(MIN_TILE),
        };
        let fused = match kernels {
            Kernels::Auto => kernels::fused_for(&model.graph, precision, device),
            Kernels::Generic => None,
        };
        let generic = match fused {
            Some(_) => precision,
            None => kernels::generic_precision(device, precision),
        };
        Self {
            net: Network::new(model.graph.clone(), generic, device),
            fused,
            scale: model.scale,
            overlap: model.graph.receptive_radius(),
            edge_pad: if model.is_resize { 0 } else { EDGE_PAD },
            tile,
            forwards: 0,
            profile: Profile::default(),
        }
    }

    pub fn tile(&self) -> usize {
        self.tile
    }

    pub fn precision(&self) -> Precision {
        self.net.precision()
    }

    /// What runs the network, for logs, reports and benchmarks.
    pub fn kernels(&self) -> String {
        match &self.fused {
            Some(fused) => fused.describe(),
            None => "burn's generic operations".into(),
        }
    }

    /// Upscales a 3-channel image. On a device out-of-memory the tile size halves and the whole
    /// image is redone, down to 32 pixels; then it fails.
    pub fn upscale(&mut self, image: &Planar, interrupted: &dyn Fn() -> bool) -> Result<Planar> {
        self.upscale_as(image, interrupted)
    }

    /// As `upscale`, quantised to 8 bits and packed on the device.
    pub fn upscale_rgb8(&mut self, image: &Planar, interrupted: &dyn Fn() -> bool) -> Result<Rgb8> {
        self.upscale_as(image, interrupted)
    }

    /// Whether pictures decoded on the GPU (`video::device_frames`) can stay there: our kernels
    /// run on burn's CUDA client, and a `width` x `height` picture needs no tiles.
    pub fn takes_device_pictures(&self, width: usize, height: usize) -> bool {
        let pad = self.pad_for(width, height);
        self.fused.as_ref().is_some_and(|f| f.on_cuda())
            && tiles(width + 2 * pad, height + 2 * pad, self.tile).len() == 1
    }

    fn pad_for(&self, width: usize, height: usize) -> usize {
        self.edge_pad.min(width - 1).min(height - 1)
    }

    /// Upscales a picture decoded on the GPU: there, when `takes_device_pictures`, else through
    /// the host like any other (a device out-of-memory also retries there, in tiles).
    pub fn upscale_device<O: TileOutput>(
        &mut self,
        picture: &DevicePicture,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<O> {
        let (w, h) = (picture.width, picture.height);
        if self.takes_device_pictures(w, h) {
            let fused = self
                .fused
                .as_ref()
                .expect("takes_device_pictures checked it");
            let (pad, s) = (self.pad_for(w, h), self.scale);
            let keep = (pad * s, pad * s, w * s, h * s);
            let t0 = std::time::Instant::now();
            let attempt = sort_failure(catch_unwind(AssertUnwindSafe(|| {
                fused.run_on_device(&picture.planes, w, h, pad, keep, O::PACKED)
            })));
            self.profile.readback_s += t0.elapsed().as_secs_f64();
            let device_error = |reason| Error::Device {
                context: format!("running the model on a {w}x{h} image"),
                reason,
            };
            match attempt {
                Ok(out) => {
                    self.forwards += 1;
                    return O::from_fused(out, w * s, h * s).map_err(device_error);
                }
                Err(Failure::OutOfMemory(reason)) => log::warn!(
                    "out of device memory on a whole frame ({reason}); retrying in tiles"
                ),
                Err(Failure::Device(reason)) => return Err(device_error(reason)),
                Err(Failure::Interrupted) => return Err(Error::Interrupted),
            }
        }
        let planar = picture.to_planar().map_err(|reason| Error::Device {
            context: "reading a decoded frame".into(),
            reason,
        })?;
        self.upscale_as(&planar, interrupted)
    }

    fn upscale_as<O: TileOutput>(
        &mut self,
        image: &Planar,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<O> {
        let started = std::time::Instant::now();
        let pad = self.pad_for(image.width, image.height);
        let padded = reflect_pad(image, pad);
        self.profile.host_s += started.elapsed().as_secs_f64();
        let s = self.scale;
        // The part of the padded result that is the picture.
        let keep = (pad * s, pad * s, image.width * s, image.height * s);
        loop {
            match self.try_upscale::<O>(&padded, keep, interrupted) {
                Ok(out) => return Ok(out),
                Err(Failure::OutOfMemory(reason)) if self.tile > MIN_TILE => {
                    let smaller = (self.tile / 2).max(MIN_TILE);
                    log::warn!(
                        "out of device memory with {0}x{0} tiles ({reason}); retrying with {1}x{1}",
                        self.tile,
                        smaller
                    );
                    self.tile = smaller;
                }
                Err(Failure::OutOfMemory(reason)) | Err(Failure::Device(reason)) => {
                    return Err(Error::Device {
                        context: format!(
                            "running the model on a {}x{} image",
                            image.width, image.height
                        ),
                        reason,
                    })
                }
                Err(Failure::Interrupted) => return Err(Error::Interrupted),
            }
        }
    }

    /// The upscaled picture, `keep` cut out of it: on the device when one tile covers the
    /// picture, so that the padding is never read back.
    fn try_upscale<O: TileOutput>(
        &mut self,
        image: &Planar,
        keep: (usize, usize, usize, usize),
        interrupted: &dyn Fn() -> bool,
    ) -> Result<O, Failure> {
        let s = self.scale;
        let tiles = tiles(image.width, image.height, self.tile);
        if tiles.len() == 1 {
            return self.run::<O>(image, Some(keep));
        }
        let mut out = O::blank(image.width * s, image.height * s);
        for (x0, y0, w, h) in tiles {
            if interrupted() {
                return Err(Failure::Interrupted);
            }
            let px0 = x0.saturating_sub(self.overlap);
            let py0 = y0.saturating_sub(self.overlap);
            let px1 = (x0 + w + self.overlap).min(image.width);
            let py1 = (y0 + h + self.overlap).min(image.height);
            let region = image.crop(px0, py0, px1 - px0, py1 - py0);
            let result = self.run::<O>(&region, None)?;
            out.paste(
                &result,
                (x0 - px0) * s,
                (y0 - py0) * s,
                w * s,
                h * s,
                x0 * s,
                y0 * s,
            );
        }
        let started = std::time::Instant::now();
        let (x, y, w, h) = keep;
        let whole = (0, 0, image.width * s, image.height * s);
        let out = if keep == whole {
            out
        } else {
            out.crop(x, y, w, h)
        };
        self.profile.host_s += started.elapsed().as_secs_f64();
        Ok(out)
    }

    fn run<O: TileOutput>(
        &mut self,
        region: &Planar,
        keep: Option<(usize, usize, usize, usize)>,
    ) -> Result<O, Failure> {
        self.forwards += 1;
        let net = &self.net;
        let profile = &mut self.profile;
        let attempt = catch_unwind(AssertUnwindSafe(|| {
            if let Some(fused) = &self.fused {
                let t0 = std::time::Instant::now();
                let s = self.scale;
                let keep = keep.unwrap_or((0, 0, region.width * s, region.height * s));
                let out = fused.run(&region.data, region.width, region.height, keep, O::PACKED);
                profile.readback_s += t0.elapsed().as_secs_f64();
                return O::from_fused(out?, keep.2, keep.3);
            }
            let t0 = std::time::Instant::now();
            let shape = [1, region.channels, region.height, region.width];
            let input = Tensor::<B, 4>::from_data(
                TensorData::new(region.data.clone(), shape),
                net.device(),
            );
            let t1 = std::time::Instant::now();
            let mut output = net.forward(input);
            if let Some((x, y, w, h)) = keep {
                let c = output.dims()[1];
                output = output.slice([0..1, 0..c, y..y + h, x..x + w]);
            }
            let t2 = std::time::Instant::now();
            let result = O::read(output);
            profile.upload_s += (t1 - t0).as_secs_f64();
            profile.queue_s += (t2 - t1).as_secs_f64();
            profile.readback_s += t2.elapsed().as_secs_f64();
            result
        }));
        sort_failure(attempt)
    }
}

/// A model run's error or panic, sorted: out of device memory (worth retrying in smaller tiles),
/// or any other failure.
fn sort_failure<T>(attempt: std::thread::Result<Result<T, String>>) -> Result<T, Failure> {
    let message = match attempt {
        Ok(result) => return result.map_err(Failure::sorted),
        Err(payload) => crate::panic_message(&payload),
    };
    Err(Failure::sorted(message))
}

enum Failure {
    OutOfMemory(String),
    Device(String),
    Interrupted,
}

impl Failure {
    fn sorted(message: String) -> Self {
        if is_out_of_memory(&message) {
            Failure::OutOfMemory(message)
        } else {
            Failure::Device(message)
        }
    }
}

fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "out of memory",
        "outofmemory",
        "out_of_memory",
        "failed to allocate",
        "allocation",
        "too large",
        "exceeds",
        "max_storage_buffer_binding_size",
        "buffer size",
    ]
    .iter()
    .any(|k| m.contains(k))
}

/// Mirrors `pad` pixels around the image, the edge pixel itself not repeated (numpy's 'reflect').
pub fn reflect_pad(image: &Planar, pad: usize) -> Planar {
    if pad == 0 {
        return image.clone();
    }
    let (w, h) = (image.width, image.height);
    let (pw, ph) = (w + 2 * pad, h + 2 * pad);
    let mirror = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let i = if i < 0 { -i } else { i };
        (if i >= n { 2 * (n - 1) - i } else { i }) as usize
    };
    let mut out = Planar::new(image.channels, pw, ph);
    for c in 0..image.channels {
        for y in 0..ph {
            let sy = mirror(y as isize - pad as isize, h);
            for x in 0..pw {
                let sx = mirror(x as isize - pad as isize, w);
                out.data[(c * ph + y) * pw + x] = image.data[(c * h + sy) * w + sx];
            }
        }
    }
    out
}

/// Tiles covering a w×h image: (x, y, width, height), row by row.
pub fn tiles(width: usize, height: usize, tile: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut out = Vec::new();
    for y in (0..height).step_by(tile) {
        for x in (0..width).step_by(tile) {
            out.push((x, y, tile.min(width - x), tile.min(height - y)));
        }
    }
    out
}

/// The largest tile side whose working set fits the budget. The factor 4 stands for what is live
/// at once (a layer's input and output, the backend's workspace); the binding limit counts the
/// largest blob 9 times over, the size of an im2col buffer for a 3×3 convolution.
fn auto_tile(model: &Model, precision: Precision, budget: MemoryBudget) -> usize {
    let per_pixel =
        model.graph.peak_values_per_pixel().unwrap_or(64.0).max(1.0) * precision.bytes() as f64;
    let mut pixels = budget.bytes as f64 / (per_pixel * 4.0);
    if let Some(binding) = budget.max_binding {
        pixels = pixels.min(binding as f64 / (per_pixel * 9.0));
    }
    let side = pixels.sqrt() as usize;
    (side / 16 * 16).clamp(MIN_TILE, 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_image_once() {
        let (w, h) = (100, 37);
        let mut seen = vec![0u8; w * h];
        for (x, y, tw, th) in tiles(w, h, 32) {
            for yy in y..y + th {
                for xx in x..x + tw {
                    seen[yy * w + xx] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
    }

    #[test]
    fn crop_then_paste_round_trips() {
        let mut img = Planar::new(3, 7, 5);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = i as f32;
        }
        let part = img.crop(2, 1, 4, 3);
        let mut copy = Planar::new(3, 7, 5);
        copy.paste(&part, 0, 0, 4, 3, 2, 1);
        for c in 0..3 {
            for y in 1..4 {
                for x in 2..6 {
                    let i = (c * 5 + y) * 7 + x;
                    assert_eq!(copy.data[i], img.data[i]);
                }
            }
        }
    }

    #[test]
    fn reflect_pad_mirrors_without_repeating_the_edge() {
        let img = Planar {
            channels: 1,
            width: 3,
            height: 3,
            data: (1..=9).map(|v| v as f32).collect(),
        };
        let p = reflect_pad(&img, 2);
        assert_eq!((p.width, p.height), (7, 7));
        assert_eq!(&p.data[14..21], &[3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
        assert_eq!(&p.data[0..7], &[9.0, 8.0, 7.0, 8.0, 9.0, 8.0, 7.0]);
    }

    #[test]
    fn out_of_memory_messages_are_recognised() {
        assert!(is_out_of_memory("CUDA_ERROR_OUT_OF_MEMORY"));
        assert!(is_out_of_memory("Failed to allocate 3 GiB"));
        assert!(!is_out_of_memory("index out of bounds"));
    }

    #[test]
    fn failures_are_sorted_whether_returned_or_panicked() {
        let returned: std::thread::Result<Result<(), String>> =
            Ok(Err("CUDA_ERROR_OUT_OF_MEMORY".into()));
        assert!(matches!(
            sort_failure(returned),
            Err(Failure::OutOfMemory(_))
        ));
        let panicked = catch_unwind(|| -> Result<(), String> { panic!("kernel launch failed") });
        assert!(matches!(sort_failure(panicked), Err(Failure::Device(_))));
        assert!(matches!(sort_failure(Ok(Ok(7))), Ok(7)));
    }
}
