//! Video through FFmpeg: decoding (NVDEC or software) to planar RGB with the stream's own colour,
//! encoding and muxing with every other stream copied, and frames-folder output.

pub mod colour;
pub mod decode;
pub mod device_frames;
pub mod encode;
pub mod frames_dir;
pub mod hwdec;

use std::os::raw::{c_char, c_int, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use ffmpeg_next::ffi;

static FFMPEG_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Initialises FFmpeg once. Its messages are not printed but its errors are counted, so that
/// damaged input is summed up in one warning instead of a screenful; UPFRAME_FFMPEG_LOG=warning
/// (or info, debug) prints them as FFmpeg would.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = ffmpeg_next::init();
        use ffmpeg_next::util::log::{set_level, Level};
        match std::env::var("UPFRAME_FFMPEG_LOG").as_deref() {
            Ok("debug") => set_level(Level::Debug),
            Ok("info") => set_level(Level::Info),
            Ok("warning") => set_level(Level::Warning),
            _ => count_errors_silently(ffi::av_log_set_callback),
        }
    });
}

/// Errors FFmpeg has reported so far (damaged packets, demuxer resyncs, failed writes).
pub fn ffmpeg_errors() -> u64 {
    FFMPEG_ERRORS.load(Ordering::Relaxed)
}

/// Generic over the C `va_list` type, whose Rust form differs between architectures.
type LogCallback<V> = unsafe extern "C" fn(*mut c_void, c_int, *const c_char, V);

fn count_errors_silently<V>(set_callback: unsafe extern "C" fn(Option<LogCallback<V>>)) {
    unsafe extern "C" fn count<V>(_: *mut c_void, level: c_int, _: *const c_char, _: V) {
        if level <= ffi::AV_LOG_ERROR as c_int {
            FFMPEG_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
    }
    // SAFETY: the callback ignores the message and touches only an atomic, from any thread.
    unsafe { set_callback(Some(count::<V>)) };
}

/// A file that is not a picture is taken for a video; FFmpeg decides whether it is one.
pub fn is_video_input(path: &Path) -> bool {
    !path.is_dir() && !crate::images::is_image_path(path)
}
