//! Colour conversion between a video's Y'CbCr frames and the model's planar RGB, with the stream's
//! own matrix (BT.601, BT.709, BT.2020) and range (limited or full), through swscale.

use std::ptr;

use ffmpeg_next::ffi;
use ffmpeg_next::format::Pixel;
use ffmpeg_next::util::chroma::Location;
use ffmpeg_next::util::color::{Range, Space};
use ffmpeg_next::util::frame;

use crate::dedup::features::Packed;
use crate::frame::Picture;
use crate::upscale::{Planar, Rgb8};

/// How a stream's samples map to RGB. Unspecified values are resolved the way players do:
/// BT.709 for HD, BT.601 below 720 lines, limited range unless the format says full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Colour {
    pub matrix: Space,
    pub full_range: bool,
}

impl Colour {
    pub fn resolve(matrix: Space, range: Range, format: Pixel, height: u32) -> Self {
        let matrix = match matrix {
            Space::Unspecified | Space::Reserved | Space::RGB if !is_rgb(format) => {
                if height >= 720 {
                    Space::BT709
                } else {
                    Space::BT470BG
                }
            }
            m => m,
        };
        let full_range = match range {
            Range::JPEG => true,
            Range::MPEG => false,
            Range::Unspecified => is_rgb(format) || is_jpeg_range(format),
        };
        Self { matrix, full_range }
    }

    pub fn range(&self) -> Range {
        if self.full_range {
            Range::JPEG
        } else {
            Range::MPEG
        }
    }
}

pub fn is_rgb(format: Pixel) -> bool {
    descriptor(format).is_some_and(|d| d.flags & ffi::AV_PIX_FMT_FLAG_RGB as u64 != 0)
}

fn is_jpeg_range(format: Pixel) -> bool {
    matches!(
        format,
        Pixel::YUVJ420P | Pixel::YUVJ422P | Pixel::YUVJ444P | Pixel::YUVJ440P | Pixel::YUVJ411P
    )
}

pub fn descriptor(format: Pixel) -> Option<&'static ffi::AVPixFmtDescriptor> {
    // SAFETY: av_pix_fmt_desc_get returns a pointer into a static table, or null.
    unsafe { ffi::av_pix_fmt_desc_get(format.into()).as_ref() }
}

/// Bits per sample of a pixel format's first component (8 for yuv420p, 10 for yuv420p10le).
pub fn bit_depth(format: Pixel) -> u32 {
    descriptor(format).map_or(8, |d| d.comp[0].depth as u32)
}

/// (log2 horizontal, log2 vertical) chroma subsampling: (1, 1) for 4:2:0.
pub fn chroma_shift(format: Pixel) -> (u8, u8) {
    descriptor(format).map_or((1, 1), |d| (d.log2_chroma_w, d.log2_chroma_h))
}

/// Where chroma sample 0 sits, in luma pixels across and down; unspecified is MPEG-2's "left",
/// as in H.264 and HEVC. (swscale keeps its own default, which tests/backends.rs measures.)
pub fn siting(location: Location) -> (f32, f32) {
    match location {
        Location::Center => (0.5, 0.5),
        Location::TopLeft => (0.0, 0.0),
        Location::Top => (0.5, 0.0),
        Location::BottomLeft => (0.0, 1.0),
        Location::Bottom => (0.5, 1.0),
        Location::Left | Location::Unspecified => (0.0, 0.5),
    }
}

/// A swscale context for one (format, size, colour) pair in each direction, rebuilt only when the
/// stream changes mid-way.
struct Scaler {
    ctx: *mut ffi::SwsContext,
    key: (Pixel, Pixel, u32, u32, Colour),
}

// SAFETY: a swscale context has no thread affinity; it is only ever used by its one owner.
unsafe impl Send for Scaler {}

impl Scaler {
    fn new() -> Self {
        Self {
            ctx: ptr::null_mut(),
            key: (
                Pixel::None,
                Pixel::None,
                0,
                0,
                Colour::resolve(Space::BT709, Range::MPEG, Pixel::None, 0),
            ),
        }
    }

    /// The context for `src` -> `dst` at w×h; `yuv_is_source` says which side carries `colour`.
    fn get(
        &mut self,
        src: Pixel,
        dst: Pixel,
        width: u32,
        height: u32,
        colour: Colour,
        yuv_is_source: bool,
    ) -> Result<*mut ffi::SwsContext, String> {
        let key = (src, dst, width, height, colour);
        if !self.ctx.is_null() && self.key == key {
            return Ok(self.ctx);
        }
        self.free();
        let flags = ffi::SWS_BICUBIC | ffi::SWS_ACCURATE_RND | ffi::SWS_FULL_CHR_H_INT;
        let fail = || format!("cannot convert {src:?} to {dst:?} at {width}x{height}");
        // SAFETY: plain FFI calls with valid formats and sizes; each result is checked.
        unsafe {
            let ctx = ffi::sws_alloc_context();
            if ctx.is_null() {
                return Err(fail());
            }
            let options = [
                (c"srcw", i64::from(width)),
                (c"srch", i64::from(height)),
                (c"src_format", ffi::AVPixelFormat::from(src) as i64),
                (c"dstw", i64::from(width)),
                (c"dsth", i64::from(height)),
                (c"dst_format", ffi::AVPixelFormat::from(dst) as i64),
                (c"sws_flags", i64::from(flags)),
                // Slices of the picture on every core: one thread spent 14 ms per 2880x1920
                // frame, more than x264 (ultrafast) took to encode it.
                (c"threads", 0),
            ];
            let set = options.iter().all(|(name, value)| {
                ffi::av_opt_set_int(ctx.cast(), name.as_ptr(), *value, 0) >= 0
            });
            if !set || ffi::sws_init_context(ctx, ptr::null_mut(), ptr::null_mut()) < 0 {
                ffi::sws_freeContext(ctx);
                return Err(fail());
            }
            let table = ffi::sws_getCoefficients(colour.matrix as i32);
            let rgb_table = ffi::sws_getCoefficients(ffi::SWS_CS_DEFAULT as i32);
            let yuv_full = colour.full_range as i32;
            let (src_table, src_full, dst_table, dst_full) = if yuv_is_source {
                (table, yuv_full, rgb_table, 1)
            } else {
                (rgb_table, 1, table, yuv_full)
            };
            ffi::sws_setColorspaceDetails(
                ctx,
                src_table,
                src_full,
                dst_table,
                dst_full,
                0,
                1 << 16,
                1 << 16,
            );
            self.ctx = ctx;
        }
        self.key = key;
        Ok(self.ctx)
    }

    fn free(&mut self) {
        if !self.ctx.is_null() {
            // SAFETY: ctx came from sws_alloc_context and is freed once.
            unsafe { ffi::sws_freeContext(self.ctx) };
            self.ctx = ptr::null_mut();
        }
    }
}

impl Drop for Scaler {
    fn drop(&mut self) {
        self.free();
    }
}

/// Runs `ctx` over the whole picture `src` into `dst`, through swscale's frame API, which is the
/// one that uses the context's threads.
///
/// # Safety
/// `src` and `dst` must be allocated in the context's source and destination format and size.
unsafe fn scale_frame(
    ctx: *mut ffi::SwsContext,
    src: &frame::Video,
    dst: &mut frame::Video,
) -> Result<(), String> {
    let ret = ffi::sws_scale_frame(ctx, dst.as_mut_ptr(), src.as_ptr());
    if ret < 0 {
        Err(format!(
            "colour conversion failed: {}",
            ffmpeg_next::Error::from(ret)
        ))
    } else {
        Ok(())
    }
}

/// Frees nothing: the frame only borrows its data (see `borrowed_frame`).
unsafe extern "C" fn borrowed(_opaque: *mut std::ffi::c_void, _data: *mut u8) {}

/// A one-plane frame over `data` (`height` equal rows, packed) without copying it; the frame API
/// takes references, and this buffer's release does nothing.
///
/// # Safety
/// The frame must be dropped before `data` is.
unsafe fn borrowed_frame(data: &[u8], format: Pixel, width: u32, height: u32) -> frame::Video {
    let mut f = frame::Video::empty();
    let p = f.as_mut_ptr();
    (*p).width = width as i32;
    (*p).height = height as i32;
    (*p).format = ffi::AVPixelFormat::from(format) as i32;
    (*p).buf[0] = ffi::av_buffer_create(
        data.as_ptr().cast_mut(),
        data.len(),
        Some(borrowed),
        ptr::null_mut(),
        ffi::AV_BUFFER_FLAG_READONLY,
    );
    (*p).data[0] = data.as_ptr().cast_mut();
    (*p).linesize[0] = (data.len() / height.max(1) as usize) as i32;
    f
}

/// Decoded frame -> planar RGB in 0..1, in 8-bit or 16-bit precision as the source has.
pub struct ToRgb {
    scaler: Scaler,
    rgb: frame::Video,
}

impl ToRgb {
    pub fn new() -> Self {
        Self {
            scaler: Scaler::new(),
            rgb: frame::Video::empty(),
        }
    }

    /// The frame as planar RGB, and packed in 8 bits when `pack` (for duplicate detection).
    pub fn convert(
        &mut self,
        frame: &frame::Video,
        colour: Colour,
        pack: bool,
    ) -> Result<(Planar, Option<Packed>), String> {
        let (w, h) = (frame.width(), frame.height());
        let deep = bit_depth(frame.format()) > 8;
        let target = if deep { Pixel::GBRP16LE } else { Pixel::GBRP };
        if self.rgb.format() != target || self.rgb.width() != w || self.rgb.height() != h {
            self.rgb = frame::Video::new(target, w, h);
        }
        let ctx = self
            .scaler
            .get(frame.format(), target, w, h, colour, true)?;
        // SAFETY: both frames are allocated for w×h in the formats the context was made for.
        unsafe { scale_frame(ctx, frame, &mut self.rgb)? };
        let (w, h) = (w as usize, h as usize);
        let mut out = Planar::new(3, w, h);
        let mut packed = pack.then(|| Packed::new(w, h));
        let mut bytes = vec![0u8; if pack && deep { w } else { 0 }];
        // GBRP stores G, B, R; the model wants R, G, B.
        for (channel, plane) in [(0, 2), (1, 0), (2, 1)] {
            let stride = self.rgb.stride(plane);
            let data = self.rgb.data(plane);
            let dst = &mut out.data[channel * w * h..(channel + 1) * w * h];
            for y in 0..h {
                let row = &data[y * stride..];
                let dst = &mut dst[y * w..(y + 1) * w];
                if deep {
                    for (x, d) in dst.iter_mut().enumerate() {
                        let v = u16::from_le_bytes([row[2 * x], row[2 * x + 1]]);
                        *d = v as f32 / 65535.0;
                    }
                    if let Some(packed) = &mut packed {
                        for (x, b) in bytes.iter_mut().enumerate() {
                            let v = u32::from(u16::from_le_bytes([row[2 * x], row[2 * x + 1]]));
                            *b = ((v * 255 + 32767) / 65535) as u8;
                        }
                        packed.set_row(channel, y, &bytes);
                    }
                } else {
                    for (d, &v) in dst.iter_mut().zip(&row[..w]) {
                        *d = v as f32 / 255.0;
                    }
                    if let Some(packed) = &mut packed {
                        packed.set_row(channel, y, &row[..w]);
                    }
                }
            }
        }
        Ok((out, packed))
    }
}

/// Planar RGB in 0..1 -> a frame in the encoder's format, quantised as the image path does.
pub struct FromRgb {
    scaler: Scaler,
    rgb: frame::Video,
}

impl FromRgb {
    pub fn new() -> Self {
        Self {
            scaler: Scaler::new(),
            rgb: frame::Video::empty(),
        }
    }

    pub fn convert(
        &mut self,
        picture: &Picture,
        format: Pixel,
        colour: Colour,
    ) -> Result<frame::Video, String> {
        match picture {
            Picture::Planar(p) => self.convert_planar(p, format, colour),
            Picture::Rgb8(p) => self.convert_rgb8(p, format, colour),
            Picture::Device(p) => self.convert_planar(&p.to_planar()?, format, colour),
        }
    }

    fn convert_rgb8(
        &mut self,
        image: &Rgb8,
        format: Pixel,
        colour: Colour,
    ) -> Result<frame::Video, String> {
        let (w, h) = (image.width as u32, image.height as u32);
        let mut out = frame::Video::new(format, w, h);
        let ctx = self.scaler.get(Pixel::RGBZ, format, w, h, colour, false)?;
        let data: &[u8] = bytemuck::cast_slice(&image.data);
        // SAFETY: `data` holds h rows of w packed pixels and outlives `src`; `out` is allocated
        // for w×h in `format`.
        unsafe {
            let src = borrowed_frame(data, Pixel::RGBZ, w, h);
            scale_frame(ctx, &src, &mut out)?;
        }
        out.set_color_space(colour.matrix);
        out.set_color_range(colour.range());
        Ok(out)
    }

    fn convert_planar(
        &mut self,
        image: &Planar,
        format: Pixel,
        colour: Colour,
    ) -> Result<frame::Video, String> {
        let (w, h) = (image.width, image.height);
        let deep = bit_depth(format) > 8;
        let source = if deep { Pixel::GBRP16LE } else { Pixel::GBRP };
        if self.rgb.format() != source
            || self.rgb.width() as usize != w
            || self.rgb.height() as usize != h
        {
            self.rgb = frame::Video::new(source, w as u32, h as u32);
        }
        for (channel, plane) in [(0, 2), (1, 0), (2, 1)] {
            let stride = self.rgb.stride(plane);
            let src = &image.data[channel * w * h..(channel + 1) * w * h];
            let data = self.rgb.data_mut(plane);
            for y in 0..h {
                let row = &mut data[y * stride..];
                let src = &src[y * w..(y + 1) * w];
                if deep {
                    for (x, &v) in src.iter().enumerate() {
                        let q = (v * 65535.0).round() as u16;
                        row[2 * x..2 * x + 2].copy_from_slice(&q.to_le_bytes());
                    }
                } else {
                    for (d, &v) in row[..w].iter_mut().zip(src) {
                        *d = (v * 255.0).round() as u8;
                    }
                }
            }
        }
        let mut out = frame::Video::new(format, w as u32, h as u32);
        let ctx = self
            .scaler
            .get(source, format, w as u32, h as u32, colour, false)?;
        // SAFETY: both frames are allocated for w×h in the formats the context was made for.
        unsafe { scale_frame(ctx, &self.rgb, &mut out)? };
        out.set_color_space(colour.matrix);
        out.set_color_range(colour.range());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray_frame(format: Pixel, luma: u8) -> frame::Video {
        let mut f = frame::Video::new(format, 16, 8);
        for p in 0..f.planes() {
            let v = if p == 0 { luma } else { 128 };
            f.data_mut(p).fill(v);
        }
        f
    }

    #[test]
    fn limited_range_black_and_white_map_to_0_and_1() {
        crate::video::init();
        let colour = Colour::resolve(Space::BT709, Range::MPEG, Pixel::YUV420P, 720);
        let mut to = ToRgb::new();
        let black = to
            .convert(&gray_frame(Pixel::YUV420P, 16), colour, false)
            .unwrap()
            .0;
        let white = to
            .convert(&gray_frame(Pixel::YUV420P, 235), colour, false)
            .unwrap()
            .0;
        assert!(black.data.iter().all(|&v| v.abs() < 1.5 / 255.0));
        assert!(white.data.iter().all(|&v| (v - 1.0).abs() < 1.5 / 255.0));
    }

    #[test]
    fn rgb_to_yuv_and_back_keeps_colours() {
        crate::video::init();
        for (matrix, full) in [
            (Space::BT470BG, false),
            (Space::BT709, true),
            (Space::BT2020NCL, false),
        ] {
            let colour = Colour {
                matrix,
                full_range: full,
            };
            for format in [Pixel::YUV444P, Pixel::YUV444P10LE] {
                let mut image = Planar::new(3, 8, 4);
                let swatch = [
                    [0.8, 0.2, 0.1],
                    [0.1, 0.7, 0.3],
                    [0.2, 0.3, 0.9],
                    [0.5, 0.5, 0.5],
                ];
                for c in 0..3 {
                    for i in 0..32 {
                        image.data[c * 32 + i] = swatch[i / 8][c];
                    }
                }
                let yuv = FromRgb::new()
                    .convert(&Picture::Planar(image.clone()), format, colour)
                    .unwrap();
                let (back, packed) = ToRgb::new().convert(&yuv, colour, true).unwrap();
                if format == Pixel::YUV420P {
                    assert_eq!(
                        packed,
                        Some(Packed::from_planar(&back)),
                        "one 8-bit packing"
                    );
                }
                let worst = image
                    .data
                    .iter()
                    .zip(&back.data)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(worst < 2.5 / 255.0, "{matrix:?} {format:?}: off by {worst}");
            }
        }
    }

    #[test]
    fn packed_rgb8_converts_like_planar() {
        crate::video::init();
        let colour = Colour {
            matrix: Space::BT709,
            full_range: false,
        };
        let (w, h) = (6, 4);
        let mut planar = Planar::new(3, w, h);
        let mut packed = Rgb8 {
            width: w,
            height: h,
            data: vec![0; w * h],
        };
        for i in 0..w * h {
            let rgb = [
                (i * 37 % 256) as u32,
                (i * 91 % 256) as u32,
                (i * 13 % 256) as u32,
            ];
            for c in 0..3 {
                planar.data[c * w * h + i] = rgb[c] as f32 / 255.0;
            }
            packed.data[i] = rgb[0] | rgb[1] << 8 | rgb[2] << 16;
        }
        let mut to_yuv = FromRgb::new();
        let a = to_yuv
            .convert(&Picture::Planar(planar), Pixel::YUV444P, colour)
            .unwrap();
        let b = to_yuv
            .convert(&Picture::Rgb8(packed), Pixel::YUV444P, colour)
            .unwrap();
        for plane in 0..3 {
            for y in 0..h {
                let row = |f: &frame::Video| f.data(plane)[y * f.stride(plane)..][..w].to_vec();
                assert_eq!(row(&a), row(&b), "plane {plane} row {y}");
            }
        }
    }

    #[test]
    fn unspecified_colour_follows_the_picture_size() {
        let sd = Colour::resolve(Space::Unspecified, Range::Unspecified, Pixel::YUV420P, 480);
        let hd = Colour::resolve(Space::Unspecified, Range::Unspecified, Pixel::YUV420P, 1080);
        let jpeg = Colour::resolve(Space::Unspecified, Range::Unspecified, Pixel::YUVJ420P, 480);
        assert_eq!((sd.matrix, sd.full_range), (Space::BT470BG, false));
        assert_eq!(hd.matrix, Space::BT709);
        assert!(jpeg.full_range);
    }
}
