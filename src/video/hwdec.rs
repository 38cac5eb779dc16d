//! NVDEC through FFmpeg's CUDA hwaccel. ffmpeg-next has no safe API for it, so this module holds
//! the FFI: a CUDA device context on the decoder, a `get_format` that takes CUDA when the decoder
//! offers it and the software format otherwise, and the download of decoded surfaces.

use std::ptr;

use ffmpeg_next::ffi;
use ffmpeg_next::format::Pixel;
use ffmpeg_next::util::frame;

/// Whether `codec` can decode into CUDA frames at all (a build without NVDEC, or a codec NVDEC
/// lacks, says no).
pub fn codec_supports_cuda(codec: &ffmpeg_next::Codec) -> bool {
    for i in 0.. {
        // SAFETY: the codec is a valid, static AVCodec; avcodec_get_hw_config returns null past
        // the last config.
        let config = unsafe { ffi::avcodec_get_hw_config(codec.as_ptr(), i) };
        let Some(config) = (unsafe { config.as_ref() }) else {
            return false;
        };
        let by_device = config.methods & ffi::AV_CODEC_HW_CONFIG_METHOD_HW_DEVICE_CTX as i32 != 0;
        if by_device && config.device_type == ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_CUDA {
            return true;
        }
    }
    false
}

/// Attaches a CUDA device (ordinal `device`) to an unopened decoder context.
///
/// # Safety
/// `ctx` must be a valid, not yet opened decoder context.
pub unsafe fn attach_cuda(ctx: *mut ffi::AVCodecContext, device: usize) -> Result<(), String> {
    share_primary_context(device);
    let mut hw: *mut ffi::AVBufferRef = ptr::null_mut();
    let name = std::ffi::CString::new(device.to_string()).expect("digits");
    // The device's primary context, which burn's CUDA backend uses too: one context, no switches.
    let mut options: *mut ffi::AVDictionary = ptr::null_mut();
    ffi::av_dict_set(&mut options, c"primary_ctx".as_ptr(), c"1".as_ptr(), 0);
    let err = ffi::av_hwdevice_ctx_create(
        &mut hw,
        ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_CUDA,
        name.as_ptr(),
        options,
        0,
    );
    ffi::av_dict_free(&mut options);
    if err < 0 {
        return Err(format!(
            "cannot open CUDA device {device} for NVDEC: {}",
            ffmpeg_next::Error::from(err)
        ));
    }
    (*ctx).hw_device_ctx = hw;
    (*ctx).get_format = Some(prefer_cuda);
    Ok(())
}

/// FFmpeg joins the primary context only when its flags are CU_CTX_SCHED_BLOCKING_SYNC, and
/// refuses ("Operation not supported") when it is active with others, as it is once burn's CUDA
/// backend has run with the default flags. Since CUDA 11 an active primary context's flags can be
/// changed; this only changes how host threads wait for the device (they sleep, not spin).
fn share_primary_context(device: usize) {
    use cudarc::driver::{result, sys};
    const BLOCKING_SYNC: u32 = sys::CUctx_flags_enum::CU_CTX_SCHED_BLOCKING_SYNC as u32;
    // SAFETY: plain driver queries on a device the driver enumerated; nothing runs without a driver.
    unsafe {
        if !sys::is_culib_present() || result::init().is_err() {
            return;
        }
        let Ok(dev) = result::device::get(device as i32) else {
            return;
        };
        let (mut flags, mut active) = (0u32, 0i32);
        if sys::cuDevicePrimaryCtxGetState(dev, &mut flags, &mut active)
            != sys::CUresult::CUDA_SUCCESS
        {
            return;
        }
        if flags != BLOCKING_SYNC {
            let result = sys::cuDevicePrimaryCtxSetFlags_v2(dev, BLOCKING_SYNC);
            log::debug!("CUDA primary context flags {flags:#x} -> {BLOCKING_SYNC:#x} (active: {active}): {result:?}");
        }
    }
}

unsafe extern "C" fn prefer_cuda(
    _ctx: *mut ffi::AVCodecContext,
    formats: *const ffi::AVPixelFormat,
) -> ffi::AVPixelFormat {
    let mut software = ffi::AVPixelFormat::AV_PIX_FMT_NONE;
    let mut p = formats;
    while *p != ffi::AVPixelFormat::AV_PIX_FMT_NONE {
        if *p == ffi::AVPixelFormat::AV_PIX_FMT_CUDA {
            return *p;
        }
        let hardware = ffi::av_pix_fmt_desc_get(*p)
            .as_ref()
            .is_some_and(|d| d.flags & ffi::AV_PIX_FMT_FLAG_HWACCEL as u64 != 0);
        if !hardware && software == ffi::AVPixelFormat::AV_PIX_FMT_NONE {
            software = *p;
        }
        p = p.add(1);
    }
    software
}

pub fn is_hardware_frame(frame: &frame::Video) -> bool {
    frame.format() == Pixel::CUDA
}

/// Copies a CUDA surface to host memory (NV12 or P010), keeping timestamps and colour tags.
pub fn download(frame: &frame::Video) -> Result<frame::Video, String> {
    let mut host = frame::Video::empty();
    // SAFETY: both frames are valid; av_hwframe_transfer_data allocates the host buffers.
    unsafe {
        let err = ffi::av_hwframe_transfer_data(host.as_mut_ptr(), frame.as_ptr(), 0);
        if err < 0 {
            return Err(format!(
                "cannot copy an NVDEC frame to the host: {}",
                ffmpeg_next::Error::from(err)
            ));
        }
        ffi::av_frame_copy_props(host.as_mut_ptr(), frame.as_ptr());
    }
    Ok(host)
}
