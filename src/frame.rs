//! What travels between the pipeline's phases: one video frame with its timing, and the packets of
//! the streams that are copied untouched, carried along so that they reach the muxer in order.

use ffmpeg_next::Packet;

use crate::dedup::features::Packed;
use crate::upscale::{Planar, Rgb8};
use crate::video::device_frames::DevicePicture;

/// A decoded picture (planar, 0..1, on the host or, from NVDEC, on the GPU) or an upscaled one
/// (packed 8-bit, or planar for deep output).
pub enum Picture {
    Planar(Planar),
    Rgb8(Rgb8),
    Device(DevicePicture),
}

impl Picture {
    pub fn size(&self) -> (usize, usize) {
        match self {
            Picture::Planar(p) => (p.width, p.height),
            Picture::Rgb8(p) => (p.width, p.height),
            Picture::Device(p) => (p.width, p.height),
        }
    }
}

pub struct Frame {
    /// Position in presentation order, from 0.
    pub index: u64,
    /// Presentation time in the video stream's time base.
    pub pts: i64,
    /// Time until the next frame (the last frame's own duration), same base.
    pub duration: i64,
    /// The frame whose upscaled picture this one uses: itself unless it is a duplicate.
    pub source: u64,
    /// The decoded picture before upscaling, the upscaled one after; None for a duplicate,
    /// which is written from its source's upscaled picture.
    pub picture: Option<Picture>,
    /// The decoded frame in 8 bits, packed for duplicate detection when that is on.
    pub packed: Option<Packed>,
    /// Kept frames that no frame from this one on uses as a source: their upscaled pictures can go.
    pub released: Vec<u64>,
    /// Packets of copied streams read since the previous frame, in demux order.
    pub passthrough: Vec<Packet>,
}

pub enum Message {
    Frame(Frame),
    /// End of input: how many frames there were, and the copied packets read after the last one.
    End {
        frames: u64,
        packets: Vec<Packet>,
    },
}
