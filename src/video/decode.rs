//! The decode phase: demux the input, decode its video stream (NVDEC or software) into planar RGB
//! frames with exact timestamps, and carry every other stream's packets along for copying.
//!
//! Damaged data: a packet the decoder rejects is skipped with a warning and counted; the frames
//! that do decode keep their own timestamps, so the output stays in sync. Reading stops with an
//! error after 100 read failures in a row, so a broken file never hangs the run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ffmpeg_next::codec::threading;
use ffmpeg_next::format::{context::Input, Pixel};
use ffmpeg_next::util::frame;
use ffmpeg_next::{ffi, media, Packet, Rational};

use super::colour::{Colour, ToRgb};
use super::device_frames::{DeviceFrames, DevicePicture};
use super::hwdec;
use crate::dedup::features::Packed;
use crate::error::{Error, Result};
use crate::frame::{Frame, Message, Picture};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwDecode {
    /// NVDEC where it can decode this stream, software otherwise.
    Cuda {
        device: usize,
    },
    None,
}

/// What the rest of the pipeline needs to know about the video stream.
#[derive(Debug, Clone)]
pub struct VideoInfo {
    pub stream: usize,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// The software pixel format (what NVDEC frames download to has the same depth).
    pub format: Pixel,
    pub colour: Colour,
    pub primaries: ffmpeg_next::color::Primaries,
    pub transfer: ffmpeg_next::color::TransferCharacteristic,
    pub time_base: Rational,
    pub frame_rate: Rational,
    pub aspect_ratio: Rational,
    /// From the container header; a guess where it has none.
    pub frames_estimate: Option<u64>,
    /// The display matrix (rotation), copied to the output stream as is.
    pub display_matrix: Option<Vec<u8>>,
    /// "nvdec" or "software": what decoding was set up with.
    pub decoder: String,
}

pub struct Source {
    pub path: PathBuf,
    pub input: Input,
    pub info: VideoInfo,
    /// Also send each frame packed in 8 bits, for duplicate detection.
    pub pack: bool,
    /// Converts frames on the GPU, where the upscaler can take them there: NVDEC's in place,
    /// software-decoded ones once uploaded.
    pub device_frames: Option<DeviceFrames>,
    decoder: ffmpeg_next::decoder::Video,
}

/// What decoding saw, for the summary and the report.
#[derive(Debug, Default, Clone)]
pub struct DecodeStats {
    pub frames: u64,
    pub damaged_packets: u64,
    pub busy: Duration,
    /// Frames that arrived as CUDA surfaces.
    pub hardware_frames: u64,
    /// Frames converted to RGB on the GPU: NVDEC's there, software-decoded ones uploaded as
    /// Y'CbCr (the others went through the host).
    pub converted_on_device: u64,
}

fn input_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::VideoInput {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

pub fn open(path: &Path, hwdec: HwDecode) -> Result<Source> {
    if !path.exists() {
        return Err(Error::InputMissing {
            path: path.to_path_buf(),
        });
    }
    let input = ffmpeg_next::format::input(path)
        .map_err(|e| input_error(path, format!("not a video FFmpeg can read ({e})")))?;
    let stream = input
        .streams()
        .find(|s| {
            s.parameters().medium() == media::Type::Video
                && !s
                    .disposition()
                    .contains(ffmpeg_next::format::stream::Disposition::ATTACHED_PIC)
        })
        .ok_or_else(|| input_error(path, "no video stream"))?;
    let index = stream.index();
    let mut context = ffmpeg_next::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| input_error(path, format!("video stream: {e}")))?;
    context.set_threading(threading::Config {
        kind: threading::Type::Frame,
        count: 0,
        ..Default::default()
    });
    let codec = ffmpeg_next::decoder::find(context.id())
        .ok_or_else(|| input_error(path, format!("no decoder for {:?} video", context.id())))?;
    // SAFETY: the context is valid and not opened yet; the codec pointer is static.
    let decoder_kind = unsafe {
        (*context.as_mut_ptr()).pkt_timebase = stream.time_base().into();
        match hwdec {
            HwDecode::Cuda { device } if hwdec::codec_supports_cuda(&codec) => {
                match hwdec::attach_cuda(context.as_mut_ptr(), device) {
                    Ok(()) => "nvdec",
                    Err(reason) => {
                        log::warn!("{reason}; decoding in software");
                        "software"
                    }
                }
            }
            HwDecode::Cuda { .. } => {
                log::info!(
                    "NVDEC cannot decode {} in this build; decoding in software",
                    codec.name()
                );
                "software"
            }
            HwDecode::None => "software",
        }
    };
    let decoder = context
        .decoder()
        .open_as(codec)
        .and_then(|d| d.video())
        .map_err(|e| {
            input_error(
                path,
                format!("cannot open the {} decoder: {e}", codec.name()),
            )
        })?;
    let format = decoder.format();
    // SAFETY: plain query of a static table.
    if format != Pixel::None && unsafe { ffi::sws_isSupportedInput(format.into()) } == 0 {
        return Err(input_error(
            path,
            format!("unsupported pixel format {format:?}"),
        ));
    }
    let (width, height) = (decoder.width(), decoder.height());
    if width == 0 || height == 0 {
        return Err(input_error(path, "the video stream has no picture size"));
    }
    let frame_rate = [stream.avg_frame_rate(), stream.rate()]
        .into_iter()
        .find(|r| r.numerator() > 0 && r.denominator() > 0)
        .unwrap_or(Rational::new(25, 1));
    let frames_estimate = match stream.frames() {
        n if n > 0 => Some(n as u64),
        _ if input.duration() > 0 => Some(
            (input.duration() as f64 / ffi::AV_TIME_BASE as f64 * f64::from(frame_rate)).round()
                as u64,
        ),
        _ => None,
    };
    let display_matrix = stream
        .side_data()
        .find(|d| d.kind() == ffmpeg_next::codec::packet::side_data::Type::DisplayMatrix)
        .map(|d| d.data().to_vec());
    let info = VideoInfo {
        stream: index,
        codec: codec.name().to_string(),
        width,
        height,
        format,
        colour: Colour::resolve(decoder.color_space(), decoder.color_range(), format, height),
        primaries: decoder.color_primaries(),
        transfer: decoder.color_transfer_characteristic(),
        time_base: stream.time_base(),
        frame_rate,
        aspect_ratio: decoder.aspect_ratio(),
        frames_estimate,
        display_matrix,
        decoder: decoder_kind.to_string(),
    };
    Ok(Source {
        path: path.to_path_buf(),
        pack: false,
        device_frames: None,
        input,
        info,
        decoder,
    })
}

impl Source {
    /// Decodes to the end, handing each frame (and the copied packets, mapped by `copy`) to `emit`,
    /// which returns false to stop early.
    pub fn run(
        mut self,
        copy: &[Option<usize>],
        interrupted: &dyn Fn() -> bool,
        mut emit: impl FnMut(Message) -> bool,
    ) -> Result<DecodeStats> {
        let mut state = DecodeState::new(self.info.clone(), self.path.clone(), self.pack);
        state.device = self.device_frames.take();
        let mut read_failures = 0;
        loop {
            if interrupted() {
                return Err(Error::Interrupted);
            }
            let mut packet = Packet::empty();
            let started = Instant::now();
            match packet.read(&mut self.input) {
                Ok(()) => read_failures = 0,
                Err(ffmpeg_next::Error::Eof) => break,
                Err(e) => {
                    read_failures += 1;
                    if read_failures >= 100 {
                        return Err(Error::VideoDecode {
                            path: self.path,
                            reason: format!("reading stopped after repeated errors ({e})"),
                        });
                    }
                    continue;
                }
            }
            let stream = packet.stream();
            if stream == self.info.stream {
                match self.decoder.send_packet(&packet) {
                    Ok(()) => {}
                    Err(ffmpeg_next::Error::InvalidData) => state.damaged(),
                    Err(e) => state.damaged_with(&e),
                }
                state.stats.busy += started.elapsed();
                if !state.drain(&mut self.decoder, &mut emit)? {
                    return Ok(state.stats);
                }
            } else if let Some(&Some(_)) = copy.get(stream) {
                state.passthrough.push(packet);
            }
        }
        let _ = self.decoder.send_eof();
        if !state.drain(&mut self.decoder, &mut emit)? {
            return Ok(state.stats);
        }
        state.finish(&mut emit)
    }
}

/// Decoding state kept across packets: the frame held back until its successor gives its
/// duration, the copied packets not yet sent, and the counters.
struct DecodeState {
    info: VideoInfo,
    path: PathBuf,
    rgb: ToRgb,
    device: Option<DeviceFrames>,
    /// Whether software-decoded frames still go to `device` (not after it refused one).
    upload: bool,
    pack: bool,
    held: Option<Frame>,
    passthrough: Vec<Packet>,
    /// The last frame's time and the time a frame after it would have.
    next_pts: Option<(i64, i64)>,
    default_duration: i64,
    stats: DecodeStats,
}

impl DecodeState {
    fn new(info: VideoInfo, path: PathBuf, pack: bool) -> Self {
        let default_duration = (f64::from(info.frame_rate.invert()) / f64::from(info.time_base))
            .round()
            .max(1.0) as i64;
        Self {
            info,
            path,
            rgb: ToRgb::new(),
            device: None,
            upload: true,
            pack,
            held: None,
            passthrough: Vec::new(),
            next_pts: None,
            default_duration,
            stats: DecodeStats::default(),
        }
    }

    fn damaged(&mut self) {
        self.stats.damaged_packets += 1;
        if self.stats.damaged_packets <= 5 {
            log::warn!(
                "{}: damaged video data near frame {}; skipped",
                self.path.display(),
                self.stats.frames
            );
        }
    }

    fn damaged_with(&mut self, e: &ffmpeg_next::Error) {
        log::debug!("decoder error: {e}");
        self.damaged();
    }

    /// Takes every frame the decoder has ready. Returns false when `emit` asked to stop.
    fn drain(
        &mut self,
        decoder: &mut ffmpeg_next::decoder::Video,
        emit: &mut impl FnMut(Message) -> bool,
    ) -> Result<bool> {
        let mut decoded = frame::Video::empty();
        loop {
            let started = Instant::now();
            match decoder.receive_frame(&mut decoded) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Eof) => return Ok(true),
                Err(ffmpeg_next::Error::Other { errno }) if errno == ffi::EAGAIN => {
                    return Ok(true)
                }
                Err(e) => {
                    self.damaged_with(&e);
                    return Ok(true);
                }
            }
            let (picture, packed) = self.picture(&decoded)?;
            let (pts, duration) = self.timestamp(&decoded);
            let frame = Frame {
                index: self.stats.frames,
                pts,
                duration,
                source: self.stats.frames,
                picture: Some(picture),
                packed,
                released: Vec::new(),
                passthrough: Vec::new(),
            };
            self.stats.frames += 1;
            self.stats.busy += started.elapsed();
            if let Some(mut previous) = self.held.replace(frame) {
                if pts > previous.pts {
                    previous.duration = pts - previous.pts;
                }
                previous.passthrough = std::mem::take(&mut self.passthrough);
                if !emit(Message::Frame(previous)) {
                    return Ok(false);
                }
            }
        }
    }

    /// The frame as RGB planes: on the GPU when it was decoded there and can stay, or can be
    /// uploaded and converted there; else on the host (with its 8-bit packing, when asked for).
    fn picture(&mut self, decoded: &frame::Video) -> Result<(Picture, Option<Packed>)> {
        if !hwdec::is_hardware_frame(decoded) {
            if let Some(picture) = self.upload(decoded) {
                return Ok((Picture::Device(picture), None));
            }
            let (planar, packed) = self
                .rgb
                .convert(decoded, self.info.colour, self.pack)
                .map_err(|reason| self.fatal(reason))?;
            return Ok((Picture::Planar(planar), packed));
        }
        self.stats.hardware_frames += 1;
        if let Some(device) = &mut self.device {
            match device.convert(decoded, self.info.colour, self.pack) {
                Ok(picture) => {
                    self.stats.converted_on_device += 1;
                    return Ok((Picture::Device(picture), None));
                }
                Err(reason) => {
                    log::warn!("{reason}; NVDEC frames are converted on the host from here on");
                    self.device = None;
                }
            }
        }
        let host = hwdec::download(decoded).map_err(|reason| self.fatal(reason))?;
        let (planar, packed) = self
            .rgb
            .convert(&host, self.info.colour, self.pack)
            .map_err(|reason| self.fatal(reason))?;
        Ok((Picture::Planar(planar), packed))
    }

    /// A software-decoded frame converted on the GPU. The first frame it cannot take (a format
    /// or matrix the kernel does not read) sends the stream's frames through the host.
    fn upload(&mut self, decoded: &frame::Video) -> Option<DevicePicture> {
        if !self.upload {
            return None;
        }
        match self
            .device
            .as_mut()?
            .upload(decoded, self.info.colour, self.pack)
        {
            Ok(picture) => {
                self.stats.converted_on_device += 1;
                Some(picture)
            }
            Err(reason) => {
                log::info!("{reason}: frames decoded in software are converted on the host");
                self.upload = false;
                None
            }
        }
    }

    /// The frame's presentation time and its own duration; frames without a time follow their
    /// predecessor, and a time that goes backwards is moved just after it, as encoders need.
    fn timestamp(&mut self, decoded: &frame::Video) -> (i64, i64) {
        // SAFETY: reading a plain field of a valid frame.
        let own = unsafe { (*decoded.as_ptr()).pkt_duration };
        let step = if own > 0 { own } else { self.default_duration };
        let pts = match (decoded.timestamp(), self.next_pts) {
            (Some(t), Some((after, _))) if t <= after => {
                log::debug!(
                    "frame {}: timestamp {t} is not after {after}; moved",
                    self.stats.frames
                );
                after + 1
            }
            (Some(t), _) => t,
            (None, Some((_, guess))) => guess,
            (None, None) => 0,
        };
        self.next_pts = Some((pts, pts + step));
        (pts, step)
    }

    fn finish(mut self, emit: &mut impl FnMut(Message) -> bool) -> Result<DecodeStats> {
        if let Some(mut last) = self.held.take() {
            last.passthrough = std::mem::take(&mut self.passthrough);
            if !emit(Message::Frame(last)) {
                return Ok(self.stats);
            }
        }
        if self.stats.frames == 0 {
            return Err(input_error(&self.path, "no video frames could be decoded"));
        }
        emit(Message::End {
            frames: self.stats.frames,
            packets: std::mem::take(&mut self.passthrough),
        });
        Ok(self.stats)
    }

    fn fatal(&self, reason: String) -> Error {
        Error::VideoDecode {
            path: self.path.clone(),
            reason,
        }
    }
}
