//! Decoded frames turned into the model's RGB planes on the GPU, by `kernels::picture` with the
//! stream's matrix, range and chroma siting:
//!
//! - NVDEC frames never leave it: the decoded surface is copied (device to device) into a buffer
//!   of burn's CUDA client and converted there.
//! - Frames decoded in software (codecs or formats NVDEC lacks, such as H.264 4:4:4) are uploaded
//!   as their Y'CbCr samples, 1.5 to 3 bytes a pixel, and converted there.
//!
//! Either way, the model and duplicate detection then share the planes and their 8-bit packing on
//! the device. The host path converts with swscale and uploads f32 planes (12 bytes a pixel), and
//! duplicate detection uploads its own packing beside them.
//!
//! FFmpeg's CUDA device and burn's share the device's primary context (`hwdec::attach_cuda`), so a
//! surface's address is valid for both.

use burn::backend::cuda::CudaDevice;
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;
use cubecl::server::Handle;
use cudarc::driver::{result, sys};
use ffmpeg_next::ffi;
use ffmpeg_next::format::Pixel;
use ffmpeg_next::util::chroma::Location;
use ffmpeg_next::util::color::Space;
use ffmpeg_next::util::frame;

use super::colour::{self, Colour};
use crate::dedup::features::Packed;
use crate::kernels::picture::{self, YuvSurface, YuvToRgb};
use crate::upscale::Planar;

/// A decoded picture held on the CUDA device: three f32 planes in 0..1, and its 8-bit packing
/// for duplicate detection when that was asked for.
pub struct DevicePicture {
    pub client: ComputeClient<CudaRuntime>,
    pub planes: Handle,
    pub packed: Option<Handle>,
    pub width: usize,
    pub height: usize,
}

impl DevicePicture {
    /// The picture on the host, for the paths that work there (tiles, burn's operations).
    pub fn to_planar(&self) -> Result<Planar, String> {
        let bytes = self
            .client
            .read_one(self.planes.clone())
            .map_err(|e| format!("reading a decoded frame back from the GPU: {e:?}"))?;
        Ok(Planar {
            channels: 3,
            width: self.width,
            height: self.height,
            data: bytemuck::pod_collect_to_vec(&bytes),
        })
    }

    /// `Packed`'s words and their layout, still on the device.
    pub fn packed_layout(&self) -> (usize, usize) {
        Packed::layout(self.width, self.height)
    }
}

/// Kr and Kb of the matrices the kernel knows; others are converted on the host.
fn luma_weights(matrix: Space) -> Option<(f32, f32)> {
    match matrix {
        Space::BT709 => Some((0.2126, 0.0722)),
        Space::BT470BG | Space::SMPTE170M => Some((0.299, 0.114)),
        Space::BT2020NCL => Some((0.2627, 0.0593)),
        Space::SMPTE240M => Some((0.212, 0.087)),
        Space::FCC => Some((0.30, 0.11)),
        _ => None,
    }
}

/// How a Y'CbCr format's samples are stored: 16 bits wide, the value's shift, and Cb/Cr
/// interleaved in one plane.
fn sample_layout(format: Pixel) -> Option<(bool, u32, bool)> {
    const PLANAR_8: [Pixel; 6] = [
        Pixel::YUV420P,
        Pixel::YUVJ420P,
        Pixel::YUV422P,
        Pixel::YUVJ422P,
        Pixel::YUV444P,
        Pixel::YUVJ444P,
    ];
    const PLANAR_16: [Pixel; 9] = [
        Pixel::YUV420P10LE,
        Pixel::YUV422P10LE,
        Pixel::YUV444P10LE,
        Pixel::YUV420P12LE,
        Pixel::YUV422P12LE,
        Pixel::YUV444P12LE,
        Pixel::YUV420P16LE,
        Pixel::YUV422P16LE,
        Pixel::YUV444P16LE,
    ];
    match format {
        Pixel::NV12 => Some((false, 0, true)),
        Pixel::P010LE => Some((true, 6, true)),
        Pixel::P016LE => Some((true, 0, true)),
        f if PLANAR_8.contains(&f) => Some((false, 0, false)),
        f if PLANAR_16.contains(&f) => Some((true, 0, false)),
        _ => None,
    }
}

/// How frames in `format` are read and converted with `colour` and chroma at `location`, or why
/// the GPU path cannot take them.
pub fn conversion(format: Pixel, colour: Colour, location: Location) -> Result<Reading, String> {
    let (wide, shift, interleaved) = sample_layout(format)
        .ok_or_else(|| format!("{format:?} frames are converted on the host"))?;
    let (kr, kb) = luma_weights(colour.matrix)
        .ok_or_else(|| format!("the {:?} matrix is converted on the host", colour.matrix))?;
    let depth = colour::bit_depth(format);
    let (sx, sy) = colour::chroma_shift(format);
    let sited = colour::siting(location);
    // Where chroma is not subsampled, each sample sits on its pixel.
    let siting = (
        if sx == 0 { 0.0 } else { sited.0 },
        if sy == 0 { 0.0 } else { sited.1 },
    );
    Ok(Reading {
        wide,
        shift,
        interleaved,
        chroma_shift: (u32::from(sx), u32::from(sy)),
        yuv: YuvToRgb {
            kr,
            kb,
            full_range: colour.full_range,
            depth,
            siting,
            deep_output: depth > 8,
        },
    })
}

/// How a format's frames are read (`conversion`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub wide: bool,
    pub shift: u32,
    pub interleaved: bool,
    pub chroma_shift: (u32, u32),
    pub yuv: YuvToRgb,
}

/// The software format of an NVDEC frame's surface.
fn surface_format(frame: &frame::Video) -> Pixel {
    // SAFETY: a CUDA frame carries its frames context; its data is an AVHWFramesContext.
    unsafe {
        let frames = (*frame.as_ptr()).hw_frames_ctx;
        if frames.is_null() {
            return Pixel::None;
        }
        let frames = (*frames).data as *const ffi::AVHWFramesContext;
        Pixel::from((*frames).sw_format)
    }
}

/// Converts NVDEC frames on the device that decoded them; lives on the decode thread.
pub struct DeviceFrames {
    client: ComputeClient<CudaRuntime>,
    device: sys::CUdevice,
    context: sys::CUcontext,
    /// The surface copy the conversion reads; grown when a frame needs more.
    staging: Option<(Handle, usize)>,
}

// SAFETY: the context handle is only used by the thread that owns this value, pushed and popped
// around each use.
unsafe impl Send for DeviceFrames {}

impl DeviceFrames {
    pub fn new(device: &CudaDevice) -> Result<Self, String> {
        let client = CudaRuntime::client(device);
        // SAFETY: burn's CUDA client has initialised the driver; the device comes from it.
        unsafe {
            let cu = result::device::get(device.index as i32)
                .map_err(|e| format!("CUDA device {}: {e:?}", device.index))?;
            let context = result::primary_ctx::retain(cu)
                .map_err(|e| format!("CUDA device {}: {e:?}", device.index))?;
            Ok(Self {
                client,
                device: cu,
                context,
                staging: None,
            })
        }
    }

    /// The RGB planes of an NVDEC frame, on the device; `pack` adds the 8-bit packing.
    pub fn convert(
        &mut self,
        frame: &frame::Video,
        colour: Colour,
        pack: bool,
    ) -> Result<DevicePicture, String> {
        let format = surface_format(frame);
        let reading = conversion(format, colour, frame.chroma_location())?;
        if !reading.interleaved {
            return Err(format!(
                "NVDEC gave {format:?} frames, which the GPU path does not read"
            ));
        }
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        // SAFETY: reading the plane pointers and pitches of a valid frame.
        let (planes, pitches) = unsafe {
            let f = &*frame.as_ptr();
            (
                [f.data[0] as u64, f.data[1] as u64],
                [f.linesize[0], f.linesize[1]],
            )
        };
        if pitches.iter().any(|&p| p <= 0 || p % 4 != 0) {
            return Err(format!(
                "NVDEC frame pitches {pitches:?} are not whole words"
            ));
        }
        let layout = YuvSurface::semi_planar(
            (w, h),
            (pitches[0] as usize, pitches[1] as usize),
            reading.wide,
            reading.shift,
        );
        let luma_bytes = layout.cb_at * 4;
        let chroma_bytes = layout.chroma_pitch * 4 * layout.chroma_rows();
        let staging = self.staging(luma_bytes + chroma_bytes)?;
        // SAFETY: both ranges lie in their allocations (the surface's planes at their pitches,
        // the staging buffer sized above); the copy completes before the kernel is queued.
        unsafe { self.copy(planes, staging, luma_bytes, chroma_bytes)? };
        let staging = self
            .staging
            .as_ref()
            .expect("staging was just made")
            .0
            .clone();
        Ok(self.to_picture(&staging, &layout, &reading.yuv, pack))
    }

    /// The RGB planes of a frame decoded on the host, uploaded as its Y'CbCr samples and
    /// converted on the device; `pack` adds the 8-bit packing. Fails for formats and matrices
    /// the kernel does not read (`conversion`).
    pub fn upload(
        &mut self,
        frame: &frame::Video,
        colour: Colour,
        pack: bool,
    ) -> Result<DevicePicture, String> {
        let reading = conversion(frame.format(), colour, frame.chroma_location())?;
        let (words, layout) = host_surface(frame, &reading);
        let surface = self.client.create_from_slice(bytemuck::cast_slice(&words));
        Ok(self.to_picture(&surface, &layout, &reading.yuv, pack))
    }

    fn to_picture(
        &self,
        surface: &Handle,
        layout: &YuvSurface,
        yuv: &YuvToRgb,
        pack: bool,
    ) -> DevicePicture {
        let (w, h) = (layout.width, layout.height);
        let rgb = picture::to_planes(&self.client, surface, layout, yuv);
        let packed = pack.then(|| {
            let (words_per_row, rows) = Packed::layout(w, h);
            picture::pack(
                &self.client,
                &rgb,
                w,
                h,
                words_per_row,
                rows,
                yuv.deep_output,
            )
        });
        DevicePicture {
            client: self.client.clone(),
            planes: rgb,
            packed,
            width: w,
            height: h,
        }
    }

    /// The staging buffer's address, at least `bytes` long, once the conversion that last read
    /// it has run.
    fn staging(&mut self, bytes: usize) -> Result<u64, String> {
        cubecl::future::block_on(self.client.sync())
            .map_err(|e| format!("waiting for the GPU: {e:?}"))?;
        if self.staging.as_ref().is_none_or(|(_, size)| *size < bytes) {
            self.staging = Some((self.client.empty(bytes), bytes));
        }
        let handle = self.staging.as_ref().expect("made above").0.clone();
        let resource = self
            .client
            .get_resource(handle)
            .map_err(|e| format!("the frame buffer's address: {e:?}"))?;
        Ok(resource.resource().ptr)
    }

    /// # Safety
    /// `planes` must be the luma and chroma planes of a live surface, each as long as given.
    unsafe fn copy(
        &self,
        planes: [u64; 2],
        staging: u64,
        luma_bytes: usize,
        chroma_bytes: usize,
    ) -> Result<(), String> {
        let fail = |e: sys::CUresult| format!("copying an NVDEC frame on the GPU: {e:?}");
        let check = |r: sys::CUresult| match r {
            sys::CUresult::CUDA_SUCCESS => Ok(()),
            e => Err(fail(e)),
        };
        check(sys::cuCtxPushCurrent_v2(self.context))?;
        // The legacy stream, as FFmpeg's own copies into the surface.
        let stream = std::ptr::null_mut();
        let copied = check(sys::cuMemcpyDtoDAsync_v2(
            staging, planes[0], luma_bytes, stream,
        ))
        .and_then(|()| {
            check(sys::cuMemcpyDtoDAsync_v2(
                staging + luma_bytes as u64,
                planes[1],
                chroma_bytes,
                stream,
            ))
        })
        .and_then(|()| check(sys::cuStreamSynchronize(stream)));
        let mut popped = std::ptr::null_mut();
        let _ = sys::cuCtxPopCurrent_v2(&mut popped);
        copied
    }
}

impl Drop for DeviceFrames {
    fn drop(&mut self) {
        // SAFETY: releases the reference `new` took.
        let _ = unsafe { result::primary_ctx::release(self.device) };
    }
}

/// A frame decoded on the host as the words `kernels::picture` reads, and their layout: its
/// planes one after another, each row cut to the picture and padded to whole words.
pub fn host_surface(frame: &frame::Video, reading: &Reading) -> (Vec<u32>, YuvSurface) {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let sample = if reading.wide { 2 } else { 1 };
    let (sx, sy) = reading.chroma_shift;
    let (cw, ch) = (w.div_ceil(1 << sx), h.div_ceil(1 << sy));
    let luma_row = w * sample;
    let chroma_row = cw * sample * if reading.interleaved { 2 } else { 1 };
    let (luma_bytes, chroma_bytes) = (luma_row.next_multiple_of(4), chroma_row.next_multiple_of(4));
    let layout = if reading.interleaved {
        YuvSurface::semi_planar(
            (w, h),
            (luma_bytes, chroma_bytes),
            reading.wide,
            reading.shift,
        )
    } else {
        YuvSurface::planar(
            (w, h),
            (luma_bytes, chroma_bytes),
            reading.chroma_shift,
            reading.wide,
            reading.shift,
        )
    };
    let mut words = vec![0u32; layout.words()];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    let chroma_planes = if reading.interleaved { 1 } else { 2 };
    let mut at = 0;
    for plane in 0..=chroma_planes {
        let (row, pitch, rows) = if plane == 0 {
            (luma_row, luma_bytes, h)
        } else {
            (chroma_row, chroma_bytes, ch)
        };
        let (data, stride) = (frame.data(plane), frame.stride(plane));
        for y in 0..rows {
            bytes[at..at + row].copy_from_slice(&data[y * stride..][..row]);
            at += pitch;
        }
    }
    (words, layout)
}
