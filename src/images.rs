//! Still images and folders of them: which files to read and write, decoding into planar RGB (plus
//! alpha), encoding the result in the input's depth and colour type, and writing it under a
//! temporary name that is renamed only once the file is complete.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, Rgba};

use crate::error::{Error, Result};
use crate::upscale::Planar;

pub const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp"];

/// One input file and where its result goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub input: PathBuf,
    pub output: PathBuf,
}

pub fn is_image_path(path: &Path) -> bool {
    format_of(path).is_some()
}

fn format_of(path: &Path) -> Option<ImageFormat> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "png" => Some(ImageFormat::Png),
        "jpg" | "jpeg" => Some(ImageFormat::Jpeg),
        "webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// Works out every (input, output) pair before any work starts, so that a conflict is reported
/// before the first minute of GPU time is spent.
pub fn plan(
    input: &Path,
    output: &Path,
    format: Option<&str>,
    overwrite: bool,
) -> Result<Vec<Job>> {
    if !input.exists() {
        return Err(Error::InputMissing {
            path: input.to_path_buf(),
        });
    }
    let jobs = if input.is_dir() {
        if output.is_file() {
            return Err(Error::Usage(format!(
                "{}: the input is a folder, so the output must be a folder",
                output.display()
            )));
        }
        let mut files = Vec::new();
        collect(input, output, &mut files)?;
        files.sort();
        if files.is_empty() {
            return Err(Error::EmptyFolder {
                path: input.to_path_buf(),
            });
        }
        files
            .into_iter()
            .map(|file| {
                let relative = file.strip_prefix(input).unwrap_or(&file).to_path_buf();
                let mut target = output.join(relative);
                if let Some(ext) = format {
                    target.set_extension(ext);
                }
                Job {
                    input: file,
                    output: target,
                }
            })
            .collect()
    } else {
        if !is_image_path(input) {
            return Err(Error::UnsupportedImageType {
                path: input.to_path_buf(),
            });
        }
        let mut target = if output.is_dir() {
            output.join(input.file_name().unwrap_or_default())
        } else {
            output.to_path_buf()
        };
        if let Some(ext) = format {
            target.set_extension(ext);
        }
        vec![Job {
            input: input.to_path_buf(),
            output: target,
        }]
    };
    for job in &jobs {
        if format_of(&job.output).is_none() {
            return Err(Error::UnsupportedImageType {
                path: job.output.clone(),
            });
        }
        if same_file(&job.input, &job.output) {
            return Err(Error::OutputIsInput {
                path: job.output.clone(),
            });
        }
        if job.output.exists() && !overwrite {
            return Err(Error::OutputExists {
                path: job.output.clone(),
            });
        }
    }
    Ok(jobs)
}

/// Whether two paths name the same existing file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Image files below `dir`, recursively, skipping the output folder when it lies inside.
fn collect(dir: &Path, skip: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            if !same_file(&path, skip) {
                collect(&path, skip, out)?;
            }
        } else if is_image_path(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// A decoded image: RGB always, alpha when the file had it, and what to write back.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub rgb: Planar,
    pub alpha: Option<Planar>,
    pub gray: bool,
    pub sixteen_bit: bool,
}

pub fn read(path: &Path) -> Result<Decoded> {
    let decode_err = |reason: String| Error::ImageDecode {
        path: path.to_path_buf(),
        reason,
    };
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let image = reader.decode().map_err(|e| decode_err(e.to_string()))?;
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w == 0 || h == 0 {
        return Err(decode_err("the image is empty".into()));
    }
    let color = image.color();
    let sixteen_bit = matches!(
        color.bits_per_pixel() / color.channel_count() as u16,
        16 | 32
    );
    let gray = !color.has_color();
    let alpha = color.has_alpha().then(|| {
        let a = image.to_luma_alpha32f();
        let mut p = Planar::new(1, w, h);
        for (dst, px) in p.data.iter_mut().zip(a.pixels()) {
            *dst = px.0[1];
        }
        p
    });
    let rgb32 = image.to_rgb32f();
    let mut rgb = Planar::new(3, w, h);
    for (i, px) in rgb32.pixels().enumerate() {
        for c in 0..3 {
            rgb.data[c * w * h + i] = px.0[c];
        }
    }
    Ok(Decoded {
        rgb,
        alpha,
        gray,
        sixteen_bit,
    })
}

/// Assembles the output image in the input's colour type: gray stays gray (Rec. 601 luma),
/// alpha stays, 16-bit stays 16-bit where the format can hold it.
pub fn assemble(
    rgb: &Planar,
    alpha: Option<&Planar>,
    gray: bool,
    sixteen_bit: bool,
) -> DynamicImage {
    let (w, h) = (rgb.width, rgb.height);
    let n = w * h;
    let at = |c: usize, i: usize| rgb.data[c * n + i].clamp(0.0, 1.0);
    let luma = |i: usize| 0.299 * at(0, i) + 0.587 * at(1, i) + 0.114 * at(2, i);
    let a = |i: usize| alpha.map_or(1.0, |p| p.data[i].clamp(0.0, 1.0));
    let q8 = |v: f32| (v * 255.0).round() as u8;
    let q16 = |v: f32| (v * 65535.0).round() as u16;
    let (w32, h32) = (w as u32, h as u32);
    match (gray, alpha.is_some(), sixteen_bit) {
        (true, false, false) => DynamicImage::ImageLuma8(ImageBuffer::from_fn(w32, h32, |x, y| {
            Luma([q8(luma(y as usize * w + x as usize))])
        })),
        (true, false, true) => DynamicImage::ImageLuma16(ImageBuffer::from_fn(w32, h32, |x, y| {
            Luma([q16(luma(y as usize * w + x as usize))])
        })),
        (true, true, false) => DynamicImage::ImageLumaA8(ImageBuffer::from_fn(w32, h32, |x, y| {
            let i = y as usize * w + x as usize;
            image::LumaA([q8(luma(i)), q8(a(i))])
        })),
        (true, true, true) => DynamicImage::ImageLumaA16(ImageBuffer::from_fn(w32, h32, |x, y| {
            let i = y as usize * w + x as usize;
            image::LumaA([q16(luma(i)), q16(a(i))])
        })),
        (false, false, false) => DynamicImage::ImageRgb8(ImageBuffer::from_fn(w32, h32, |x, y| {
            let i = y as usize * w + x as usize;
            Rgb([q8(at(0, i)), q8(at(1, i)), q8(at(2, i))])
        })),
        (false, false, true) => DynamicImage::ImageRgb16(ImageBuffer::from_fn(w32, h32, |x, y| {
            let i = y as usize * w + x as usize;
            Rgb([q16(at(0, i)), q16(at(1, i)), q16(at(2, i))])
        })),
        (false, true, false) => DynamicImage::ImageRgba8(ImageBuffer::from_fn(w32, h32, |x, y| {
            let i = y as usize * w + x as usize;
            Rgba([q8(at(0, i)), q8(at(1, i)), q8(at(2, i)), q8(a(i))])
        })),
        (false, true, true) => DynamicImage::ImageRgba16(ImageBuffer::from_fn(w32, h32, |x, y| {
            let i = y as usize * w + x as usize;
            Rgba([q16(at(0, i)), q16(at(1, i)), q16(at(2, i)), q16(a(i))])
        })),
    }
}

/// Bicubic (Catmull-Rom) upscale of the alpha plane on the host: alpha masks are flat or sharp
/// edges, where a photo-trained network adds nothing and can ring.
pub fn upscale_alpha(alpha: &Planar, scale: usize) -> Planar {
    let buffer: ImageBuffer<Luma<f32>, Vec<f32>> =
        ImageBuffer::from_raw(alpha.width as u32, alpha.height as u32, alpha.data.clone())
            .expect("plane size matches its dimensions");
    let (w, h) = (alpha.width * scale, alpha.height * scale);
    let resized = image::imageops::resize(
        &buffer,
        w as u32,
        h as u32,
        image::imageops::FilterType::CatmullRom,
    );
    Planar {
        channels: 1,
        width: w,
        height: h,
        data: resized.into_raw(),
    }
}

/// Converts to what the output format can hold, warning when something is lost.
fn fit_format(image: DynamicImage, format: ImageFormat, path: &Path) -> DynamicImage {
    match format {
        ImageFormat::Png => image,
        ImageFormat::Jpeg => {
            if image.color().has_alpha() {
                log::warn!(
                    "{}: JPEG has no alpha channel; alpha dropped",
                    path.display()
                );
            }
            if image.color().has_color() {
                DynamicImage::ImageRgb8(image.to_rgb8())
            } else {
                DynamicImage::ImageLuma8(image.to_luma8())
            }
        }
        _ => {
            // WebP holds 8-bit RGB or RGBA.
            if image.color().has_alpha() {
                DynamicImage::ImageRgba8(image.to_rgba8())
            } else {
                DynamicImage::ImageRgb8(image.to_rgb8())
            }
        }
    }
}

/// The folder a file is in, "." for a bare name: where its temporary file goes.
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes `to` a hard link to `from` (a copy where the file system has no links), under a temporary
/// name in `to`'s folder renamed into place, like every other output.
pub fn link_duplicate(from: &Path, to: &Path, overwrite: bool) -> Result<()> {
    if to.exists() && !overwrite {
        return Err(Error::OutputExists {
            path: to.to_path_buf(),
        });
    }
    let dir = folder_of(to);
    let name = to
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let temporary = dir.join(format!(".upframe-link-{name}"));
    let _ = std::fs::remove_file(&temporary);
    if std::fs::hard_link(from, &temporary).is_err() {
        std::fs::copy(from, &temporary).map_err(|e| Error::io(to, e))?;
    }
    std::fs::rename(&temporary, to).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        Error::io(to, e)
    })
}

/// Encodes into a temporary file beside `path` and renames it into place when complete.
pub fn write(image: DynamicImage, path: &Path, overwrite: bool, jpeg_quality: u8) -> Result<()> {
    let format = format_of(path).ok_or_else(|| Error::UnsupportedImageType {
        path: path.to_path_buf(),
    })?;
    let image = fit_format(image, format, path);
    let dir = folder_of(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let temp = tempfile::Builder::new()
        .prefix(".upframe-")
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    let encode_err = |reason: String| Error::ImageEncode {
        path: path.to_path_buf(),
        reason,
    };
    {
        let mut writer = BufWriter::new(temp.as_file());
        match format {
            ImageFormat::Jpeg => {
                let encoder =
                    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut writer, jpeg_quality);
                image.write_with_encoder(encoder)
            }
            _ => image.write_to(&mut writer, format),
        }
        .map_err(|e| encode_err(e.to_string()))?;
        std::io::Write::flush(&mut writer).map_err(|e| Error::io(path, e))?;
    }
    temp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    let persisted = if overwrite {
        temp.persist(path).map(|_| ())
    } else {
        temp.persist_noclobber(path).map(|_| ())
    };
    persisted.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            Error::OutputExists {
                path: path.to_path_buf(),
            }
        } else {
            Error::io(path, e.error)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_sixteen_bit_round_trips_through_assemble() {
        let mut p = Planar::new(3, 2, 1);
        p.data = vec![0.5, 1.0, 0.5, 1.0, 0.5, 1.0];
        let img = assemble(&p, None, true, true);
        let img = img.as_luma16().expect("16-bit gray");
        assert_eq!(img.get_pixel(0, 0).0[0], 32768);
        assert_eq!(img.get_pixel(1, 0).0[0], 65535);
    }

    #[test]
    fn plan_refuses_existing_output_and_input_as_output() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.png");
        let b = dir.path().join("b.png");
        std::fs::write(&a, b"x").unwrap();
        std::fs::write(&b, b"x").unwrap();
        assert!(matches!(
            plan(&a, &b, None, false),
            Err(Error::OutputExists { .. })
        ));
        assert!(plan(&a, &b, None, true).is_ok());
        assert!(matches!(
            plan(&a, &a, None, true),
            Err(Error::OutputIsInput { .. })
        ));
    }

    #[test]
    fn plan_maps_a_folder_recursively_and_skips_the_output_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        let out = dir.path().join("out");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(sub.join("x.jpg"), b"x").unwrap();
        std::fs::write(out.join("old.png"), b"x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let jobs = plan(dir.path(), &out, Some("png"), false).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].output, out.join("sub").join("x.png"));
    }
}
