//! The save phase for video: encode the upscaled frames and mux them, with every other stream of
//! the input copied bit for bit (audio, subtitles, attachments), plus chapters and metadata, into a
//! temporary file that is renamed onto the target only when the trailer is written.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use ffmpeg_next::codec::{self, threading};
use ffmpeg_next::format::{context::Input, context::Output, Pixel};
use ffmpeg_next::util::frame;
use ffmpeg_next::{encoder, ffi, media, Codec, Dictionary, Packet, Rational};
use tempfile::TempPath;

use super::colour::{self, Colour, FromRgb};
use super::decode::VideoInfo;
use crate::error::{Error, Result};
use crate::frame::Picture;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VideoCodec {
    H264,
    Hevc,
    Av1,
    Vp9,
}

impl VideoCodec {
    /// Encoders to try, best first.
    fn encoders(self) -> &'static [&'static str] {
        match self {
            VideoCodec::H264 => &["libx264", "h264_nvenc"],
            VideoCodec::Hevc => &["libx265", "hevc_nvenc"],
            VideoCodec::Av1 => &["libsvtav1", "libaom-av1", "librav1e", "av1_nvenc"],
            VideoCodec::Vp9 => &["libvpx-vp9"],
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct EncodeSettings {
    pub codec: Option<VideoCodec>,
    pub encoder: Option<String>,
    pub crf: Option<u8>,
    pub preset: Option<String>,
}

/// An input stream copied to the output: its time base and its output index.
#[derive(Debug, Clone, Copy)]
struct Copied {
    input_time_base: Rational,
    output: usize,
}

pub struct Sink {
    output: Output,
    encoder: encoder::Video,
    video_output: usize,
    time_base: Rational,
    copies: Vec<Option<Copied>>,
    to_yuv: FromRgb,
    format: Pixel,
    colour: Colour,
    info: VideoInfo,
    durations: HashMap<i64, i64>,
    /// Converted frames of kept pictures, sent again for their duplicates (no second conversion).
    kept: HashMap<u64, frame::Video>,
    temp: TempPath,
    target: PathBuf,
    pub encoder_name: String,
    pub busy: Duration,
}

fn encode_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::VideoEncode {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The container FFmpeg would write for this file name, e.g. "matroska" for .mkv.
pub fn container_for(path: &Path) -> Result<&'static str> {
    let name = CString::new(path.to_string_lossy().as_bytes())
        .map_err(|_| Error::Usage(format!("{}: bad file name", path.display())))?;
    // SAFETY: av_guess_format returns a pointer to a static muxer description, or null.
    let format = unsafe { ffi::av_guess_format(ptr::null(), name.as_ptr(), ptr::null()) };
    match unsafe { format.as_ref() } {
        Some(f) => Ok(unsafe { CStr::from_ptr(f.name) }.to_str().unwrap_or("?")),
        None => Err(Error::Usage(format!(
            "{}: unknown video container; use .mp4, .mkv, .mov or .webm",
            path.display()
        ))),
    }
}

impl Sink {
    /// Sets up the encoder and every output stream, and writes the header. Streams the container
    /// cannot hold are dropped with a warning naming them.
    pub fn create(
        input: &Input,
        info: &VideoInfo,
        scale: usize,
        target: &Path,
        settings: &EncodeSettings,
    ) -> Result<Sink> {
        let container = container_for(target)?;
        let folder = crate::images::folder_of(target);
        let extension = target
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(".upframe-")
            .suffix(&extension)
            .tempfile_in(folder)
            .map_err(|e| {
                encode_error(
                    target,
                    format!("cannot create a file in {}: {e}", folder.display()),
                )
            })?
            .into_temp_path();
        let mut output = ffmpeg_next::format::output_as(&temp, container)
            .map_err(|e| encode_error(target, e))?;

        let codec = choose_encoder(settings, container)?;
        if accepts(&output, codec.id()) == Acceptance::No {
            return Err(Error::Usage(format!(
                "{}: a .{} file cannot hold {} video; pick another --codec or container",
                target.display(),
                extension.trim_start_matches('.'),
                codec.name()
            )));
        }
        let (width, height) = (info.width * scale as u32, info.height * scale as u32);
        let format = choose_pixel_format(codec, info.format, width, height);
        let colour = if colour::is_rgb(info.format) {
            Colour::resolve(
                ffmpeg_next::color::Space::BT709,
                ffmpeg_next::color::Range::MPEG,
                Pixel::YUV420P,
                height,
            )
        } else {
            info.colour
        };
        let encoder = open_encoder(
            codec, info, settings, &output, format, colour, width, height,
        )
        .map_err(|e| {
            encode_error(
                target,
                format!("cannot open the {} encoder: {e}", codec.name()),
            )
        })?;
        log::info!(
            "encoding {} {width}x{height} {:?}, {:?} {} range",
            codec.name(),
            format,
            colour.matrix,
            if colour.full_range { "full" } else { "limited" }
        );

        let mut copies = vec![None; input.streams().count()];
        let mut video_output = 0;
        for stream in input.streams() {
            let index = stream.index();
            if index == info.stream {
                video_output = add_video_stream(&mut output, &encoder, info, &stream)
                    .map_err(|e| encode_error(target, e))?;
                continue;
            }
            let parameters = stream.parameters();
            let what = describe(&stream);
            match copyable(&output, &parameters) {
                Ok(()) => {
                    let out = copy_stream(&mut output, &stream).map_err(|e| encode_error(target, e))?;
                    copies[index] = Some(Copied {
                        input_time_base: stream.time_base(),
                        output: out,
                    });
                }
                Err(why) => log::warn!(
                    "input stream #{index} ({what}) is not copied: {why} (a .mkv output keeps every stream)"
                ),
            }
        }
        copy_container_metadata(input, &mut output);
        let mut options = Dictionary::new();
        if matches!(container, "mp4" | "mov") {
            options.set("movflags", "+faststart+write_colr");
        }
        output
            .write_header_with(options)
            .map_err(|e| encode_error(target, format!("cannot write the header: {e}")))?;
        let encoder_name = codec.name().to_string();
        Ok(Sink {
            output,
            encoder,
            video_output,
            time_base: info.time_base,
            copies,
            to_yuv: FromRgb::new(),
            format,
            colour,
            info: info.clone(),
            durations: HashMap::new(),
            kept: HashMap::new(),
            temp,
            target: target.to_path_buf(),
            encoder_name,
            busy: Duration::ZERO,
        })
    }

    /// Which input streams are copied, as the decoder needs to know: `Some(output index)` each.
    pub fn copy_map(&self) -> Vec<Option<usize>> {
        self.copies.iter().map(|c| c.map(|c| c.output)).collect()
    }

    /// Whether the output has more than 8 bits per sample (and so wants planar f32 pictures).
    pub fn is_deep(&self) -> bool {
        colour::bit_depth(self.format) > 8
    }

    /// Encodes a picture; with `keep`, its converted frame is kept under that index for
    /// `write_duplicate` until `release`.
    pub fn write_frame(
        &mut self,
        picture: &Picture,
        pts: i64,
        duration: i64,
        keep: Option<u64>,
    ) -> Result<()> {
        let started = Instant::now();
        let mut frame = self
            .to_yuv
            .convert(picture, self.format, self.colour)
            .map_err(|e| encode_error(&self.target, e))?;
        self.send(&mut frame, pts, duration)?;
        if let Some(index) = keep {
            self.kept.insert(index, frame);
        }
        self.busy += started.elapsed();
        Ok(())
    }

    /// Encodes the kept frame of `source` again at this time. False when it is not kept.
    pub fn write_duplicate(&mut self, source: u64, pts: i64, duration: i64) -> Result<bool> {
        let started = Instant::now();
        let Some(kept) = self.kept.get(&source) else {
            return Ok(false);
        };
        let mut frame = frame::Video::empty();
        // SAFETY: both are valid frames; the new one only references the kept frame's buffers,
        // which are never written again (the encoder reads them).
        let status = unsafe { ffi::av_frame_ref(frame.as_mut_ptr(), kept.as_ptr()) };
        if status < 0 {
            return Err(encode_error(&self.target, ffmpeg_next::Error::from(status)));
        }
        self.send(&mut frame, pts, duration)?;
        self.busy += started.elapsed();
        Ok(true)
    }

    /// The kept frame of `index` is not needed any more.
    pub fn release(&mut self, index: u64) {
        self.kept.remove(&index);
    }

    fn send(&mut self, frame: &mut frame::Video, pts: i64, duration: i64) -> Result<()> {
        frame.set_pts(Some(pts));
        frame.set_color_primaries(self.info.primaries);
        frame.set_color_transfer_characteristic(self.info.transfer);
        self.durations.insert(pts, duration);
        self.encoder
            .send_frame(frame)
            .map_err(|e| encode_error(&self.target, e))?;
        self.drain()
    }

    pub fn copy_packet(&mut self, mut packet: Packet) -> Result<()> {
        let Some(Some(copied)) = self.copies.get(packet.stream()).copied() else {
            return Ok(());
        };
        let out_base = self.output_time_base(copied.output);
        packet.set_stream(copied.output);
        packet.rescale_ts(copied.input_time_base, out_base);
        packet.set_position(-1);
        packet
            .write_interleaved(&mut self.output)
            .map_err(|e| encode_error(&self.target, e))
    }

    /// Flushes the encoder, writes the trailer and renames the file into place. Returns the path
    /// and the time this phase was busy.
    pub fn finish(mut self) -> Result<(PathBuf, Duration)> {
        let started = Instant::now();
        self.encoder
            .send_eof()
            .map_err(|e| encode_error(&self.target, e))?;
        self.drain()?;
        self.output
            .write_trailer()
            .map_err(|e| encode_error(&self.target, e))?;
        self.busy += started.elapsed();
        let Sink {
            output,
            temp,
            target,
            busy,
            ..
        } = self;
        drop(output);
        temp.persist(&target).map_err(|e| {
            encode_error(
                &target,
                format!("cannot rename the finished file: {}", e.error),
            )
        })?;
        Ok((target, busy))
    }

    fn output_time_base(&self, index: usize) -> Rational {
        self.output
            .stream(index)
            .map(|s| s.time_base())
            .unwrap_or(self.time_base)
    }

    fn drain(&mut self) -> Result<()> {
        let out_base = self.output_time_base(self.video_output);
        let mut packet = Packet::empty();
        loop {
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Eof) => return Ok(()),
                Err(ffmpeg_next::Error::Other { errno }) if errno == ffi::EAGAIN => return Ok(()),
                Err(e) => return Err(encode_error(&self.target, e)),
            }
            if let Some(duration) = packet.pts().and_then(|pts| self.durations.remove(&pts)) {
                packet.set_duration(duration);
            }
            packet.set_stream(self.video_output);
            packet.rescale_ts(self.time_base, out_base);
            packet
                .write_interleaved(&mut self.output)
                .map_err(|e| encode_error(&self.target, e))?;
        }
    }
}

fn choose_encoder(settings: &EncodeSettings, container: &str) -> Result<Codec> {
    if let Some(name) = &settings.encoder {
        return encoder::find_by_name(name)
            .filter(|c| c.medium() == media::Type::Video)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "no video encoder named '{name}' in this FFmpeg build (list them with `ffmpeg -encoders`)"
                ))
            });
    }
    let codec = settings.codec.unwrap_or(if container == "webm" {
        VideoCodec::Vp9
    } else {
        VideoCodec::H264
    });
    codec
        .encoders()
        .iter()
        .find_map(|name| encoder::find_by_name(name))
        .ok_or_else(|| {
            Error::Usage(format!(
                "no {codec:?} encoder in this FFmpeg build (tried {}); pick another --codec or --encoder",
                codec.encoders().join(", ")
            ))
        })
}

/// The input's chroma layout and depth (8 or 10 bits) where the encoder has it; 4:4:4 when the
/// output has an odd side that subsampled chroma cannot cover.
fn choose_pixel_format(codec: Codec, input: Pixel, width: u32, height: u32) -> Pixel {
    let deep = colour::bit_depth(input) > 8;
    let (mut cw, mut ch) = if colour::is_rgb(input) {
        (1, 1)
    } else {
        colour::chroma_shift(input)
    };
    if (cw > 0 && width % 2 == 1) || (ch > 0 && height % 2 == 1) {
        log::warn!(
            "output {width}x{height} has an odd side: encoding 4:4:4 chroma to keep every pixel"
        );
        (cw, ch) = (0, 0);
    }
    let wanted = match (cw, ch, deep) {
        (0, 0, false) => Pixel::YUV444P,
        (1, 0, false) => Pixel::YUV422P,
        (_, _, false) => Pixel::YUV420P,
        (0, 0, true) => Pixel::YUV444P10LE,
        (1, 0, true) => Pixel::YUV422P10LE,
        (_, _, true) => Pixel::YUV420P10LE,
    };
    let supported: Vec<Pixel> = codec
        .video()
        .ok()
        .and_then(|v| v.formats().map(|f| f.collect()))
        .unwrap_or_default();
    if supported.is_empty() || supported.contains(&wanted) {
        return wanted;
    }
    let fallback = [Pixel::YUV420P10LE, Pixel::YUV420P]
        .into_iter()
        .filter(|f| deep || colour::bit_depth(*f) == 8)
        .find(|f| supported.contains(f))
        .unwrap_or(supported[0]);
    log::warn!(
        "{} cannot encode {wanted:?}; using {fallback:?}",
        codec.name()
    );
    fallback
}

#[allow(clippy::too_many_arguments)]
fn open_encoder(
    codec: Codec,
    info: &VideoInfo,
    settings: &EncodeSettings,
    output: &Output,
    format: Pixel,
    colour: Colour,
    width: u32,
    height: u32,
) -> Result<encoder::Video, ffmpeg_next::Error> {
    let mut context = codec::context::Context::new_with_codec(codec);
    context.set_threading(threading::Config {
        kind: threading::Type::Frame,
        count: 0,
        ..Default::default()
    });
    if output
        .format()
        .flags()
        .contains(ffmpeg_next::format::Flags::GLOBAL_HEADER)
    {
        context.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let mut video = context.encoder().video()?;
    video.set_width(width);
    video.set_height(height);
    video.set_format(format);
    video.set_time_base(info.time_base);
    video.set_frame_rate(Some(info.frame_rate));
    if info.aspect_ratio.numerator() > 0 {
        video.set_aspect_ratio(info.aspect_ratio);
    }
    video.set_colorspace(colour.matrix);
    video.set_color_range(colour.range());
    video.set_color_primaries(info.primaries);
    video.set_color_transfer_characteristic(info.transfer);
    video.open_with(encoder_options(codec.name(), settings))
}

/// Quality and speed options in each encoder's own terms. The defaults are visually lossless:
/// CRF 18 for x264, the equivalent for the others.
fn encoder_options(name: &str, settings: &EncodeSettings) -> Dictionary<'static> {
    let mut options = Dictionary::new();
    let crf = |default: u8| settings.crf.unwrap_or(default).to_string();
    let preset = |default: &str| {
        settings
            .preset
            .clone()
            .unwrap_or_else(|| default.to_string())
    };
    match name {
        "libx264" => {
            options.set("crf", &crf(18));
            options.set("preset", &preset("medium"));
        }
        "libx265" => {
            options.set("crf", &crf(20));
            options.set("preset", &preset("medium"));
            options.set("x265-params", "log-level=error");
        }
        "libsvtav1" => {
            options.set("crf", &crf(28));
            options.set("preset", &preset("8"));
        }
        "libaom-av1" => {
            options.set("crf", &crf(28));
            options.set("b", "0");
            options.set("cpu-used", &preset("6"));
            options.set("row-mt", "1");
        }
        "libvpx-vp9" => {
            options.set("crf", &crf(28));
            options.set("b", "0");
            options.set("cpu-used", &preset("4"));
            options.set("row-mt", "1");
        }
        n if n.ends_with("_nvenc") => {
            options.set("rc", "vbr");
            options.set("cq", &crf(19));
            options.set("b", "0");
            options.set("preset", &preset("p5"));
        }
        _ => {
            if let Some(c) = settings.crf {
                options.set("crf", &c.to_string());
            }
            if let Some(p) = &settings.preset {
                options.set("preset", p);
            }
        }
    }
    options
}

#[derive(Debug, PartialEq, Eq)]
enum Acceptance {
    Yes,
    No,
    Unknown,
}

fn accepts(output: &Output, id: codec::Id) -> Acceptance {
    // SAFETY: the output context and its muxer description are valid.
    let answer = unsafe {
        ffi::avformat_query_codec(
            (*output.as_ptr()).oformat,
            id.into(),
            ffi::FF_COMPLIANCE_NORMAL,
        )
    };
    match answer {
        1 => Acceptance::Yes,
        0 => Acceptance::No,
        _ => Acceptance::Unknown,
    }
}

fn copyable(output: &Output, parameters: &codec::Parameters) -> Result<(), String> {
    let name = output.format().name().to_string();
    let id = parameters.id();
    match parameters.medium() {
        media::Type::Attachment if name == "matroska" => Ok(()),
        media::Type::Attachment => Err(format!("only Matroska holds attachments, not {name}")),
        _ if id == codec::Id::None => Err("unknown codec".into()),
        medium => match accepts(output, id) {
            Acceptance::Yes => Ok(()),
            Acceptance::Unknown if medium == media::Type::Audio => Ok(()),
            _ => Err(format!("a {name} file cannot hold {id:?}")),
        },
    }
}

fn describe(stream: &ffmpeg_next::format::stream::Stream) -> String {
    let parameters = stream.parameters();
    let language = stream
        .metadata()
        .get("language")
        .map(|l| format!(", {l}"))
        .unwrap_or_default();
    format!("{:?} {:?}{language}", parameters.medium(), parameters.id()).to_lowercase()
}

fn add_video_stream(
    output: &mut Output,
    encoder: &encoder::Video,
    info: &VideoInfo,
    input: &ffmpeg_next::format::stream::Stream,
) -> Result<usize, ffmpeg_next::Error> {
    let mut stream = output.add_stream(encoder.codec())?;
    stream.set_parameters(encoder);
    stream.set_time_base(info.time_base);
    stream.set_avg_frame_rate(info.frame_rate);
    let index = stream.index();
    // SAFETY: the stream was just added; side data is copied into a buffer FFmpeg allocates.
    unsafe {
        let st = *(*output.as_mut_ptr()).streams.add(index);
        (*(*st).codecpar).codec_tag = 0;
        // The track's language, title and disposition; the encoder tag is the new encoder's.
        (*st).disposition = (*input.as_ptr()).disposition;
        ffi::av_dict_copy(&mut (*st).metadata, (*input.as_ptr()).metadata, 0);
        ffi::av_dict_set(&mut (*st).metadata, c"encoder".as_ptr(), ptr::null(), 0);
        if let Some(matrix) = &info.display_matrix {
            let data = ffi::av_stream_new_side_data(
                st,
                ffi::AVPacketSideDataType::AV_PKT_DATA_DISPLAYMATRIX,
                matrix.len() as _,
            );
            if !data.is_null() {
                ptr::copy_nonoverlapping(matrix.as_ptr(), data, matrix.len());
            }
        }
    }
    Ok(index)
}

fn copy_stream(
    output: &mut Output,
    stream: &ffmpeg_next::format::stream::Stream,
) -> Result<usize, ffmpeg_next::Error> {
    // SAFETY: a new stream gets a copy of the input's parameters, metadata, disposition and side
    // data; FFmpeg owns every copy.
    unsafe {
        let ist = stream.as_ptr();
        let ost = ffi::avformat_new_stream(output.as_mut_ptr(), ptr::null());
        if ost.is_null() {
            return Err(ffmpeg_next::Error::Unknown);
        }
        let err = ffi::avcodec_parameters_copy((*ost).codecpar, (*ist).codecpar);
        if err < 0 {
            return Err(ffmpeg_next::Error::from(err));
        }
        (*(*ost).codecpar).codec_tag = 0;
        (*ost).time_base = (*ist).time_base;
        (*ost).disposition = (*ist).disposition;
        ffi::av_dict_copy(&mut (*ost).metadata, (*ist).metadata, 0);
        for i in 0..(*ist).nb_side_data {
            let sd = &*(*ist).side_data.add(i as usize);
            let data = ffi::av_stream_new_side_data(ost, sd.type_, sd.size);
            if !data.is_null() {
                ptr::copy_nonoverlapping(sd.data, data, sd.size as usize);
            }
        }
        Ok((*ost).index as usize)
    }
}

fn copy_container_metadata(input: &Input, output: &mut Output) {
    // SAFETY: dictionaries and chapters are deep-copied into FFmpeg-owned memory.
    unsafe {
        let ictx = input.as_ptr();
        ffi::av_dict_copy(&mut (*output.as_mut_ptr()).metadata, (*ictx).metadata, 0);
    }
    for chapter in input.chapters() {
        let title = chapter.metadata().get("title").unwrap_or("").to_string();
        if let Ok(mut copy) = output.add_chapter(
            chapter.id(),
            chapter.time_base(),
            chapter.start(),
            chapter.end(),
            &title,
        ) {
            // SAFETY: both chapters are valid; the rest of the metadata is copied too.
            unsafe {
                ffi::av_dict_copy(
                    &mut (*copy.as_mut_ptr()).metadata,
                    (*chapter.as_ptr()).metadata,
                    0,
                );
            }
        }
    }
}
