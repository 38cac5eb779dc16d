//! NVDEC frames turned into the model's RGB planes without leaving the GPU: the decoded surface is
//! copied (device to device) into a buffer of burn's CUDA client, and `kernels::picture` converts it
//! there with the stream's matrix, range and chroma siting. The host path downloads the surface,
//! converts it with swscale and uploads f32 planes, four times its bytes, back again.
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
use crate::kernels::picture::{self, Yuv420, YuvToRgb};
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

/// How a 4:2:0 format's samples are stored: 16 bits wide, and the value's shift.
fn sample_layout(format: Pixel) -> Option<(bool, u32)> {
    match format {
        Pixel::NV12 => Some((false, 0)),
        Pixel::P010LE => Some((true, 6)),
        Pixel::P016LE => Some((true, 0)),
        _ => None,
    }
}

/// How a 4:2:0 `format` converts with `colour` and chroma at `location`, or why the GPU path
/// cannot take it.
pub fn conversion(
    format: Pixel,
    colour: Colour,
    location: Location,
) -> Result<(bool, u32, YuvToRgb), String> {
    let (wide, shift) = sample_layout(format)
        .ok_or_else(|| format!("NVDEC gave {format:?} frames, which the GPU path does not read"))?;
    let (kr, kb) = luma_weights(colour.matrix)
        .ok_or_else(|| format!("the {:?} matrix is converted on the host", colour.matrix))?;
    let depth = colour::bit_depth(format);
    Ok((
        wide,
        shift,
        YuvToRgb {
            kr,
            kb,
            full_range: colour.full_range,
            depth,
            siting: colour::siting(location),
            deep_output: depth > 8,
        },
    ))
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
        let (wide, shift, yuv) = conversion(format, colour, frame.chroma_location())?;
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
        let layout = Yuv420::new(
            (w, h),
            (pitches[0] as usize, pitches[1] as usize),
            wide,
            shift,
        );
        let luma_bytes = layout.chroma_at * 4;
        let chroma_bytes = layout.chroma_pitch * 4 * h.div_ceil(2);
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
        let rgb = picture::to_planes(&self.client, &staging, &layout, &yuv);
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
        Ok(DevicePicture {
            client: self.client.clone(),
            planes: rgb,
            packed,
            width: w,
            height: h,
        })
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

/// A host 4:2:0 frame's bytes as the words `convert` copies from a surface (the same planes and
/// pitches), so that the conversion can run on any device, and be tested without NVDEC.
pub fn host_surface(frame: &frame::Video) -> Vec<u32> {
    let h = frame.height() as usize;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&frame.data(0)[..frame.stride(0) * h]);
    bytes.extend_from_slice(&frame.data(1)[..frame.stride(1) * h.div_ceil(2)]);
    bytemuck::pod_collect_to_vec(&bytes)
}

/// The layout `host_surface` gives `frame`.
pub fn host_layout(frame: &frame::Video, wide: bool, shift: u32) -> Yuv420 {
    Yuv420::new(
        (frame.width() as usize, frame.height() as usize),
        (frame.stride(0), frame.stride(1)),
        wide,
        shift,
    )
}
