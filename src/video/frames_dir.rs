//! The save phase for a frames folder (`-o DIR/ --frames png`): one picture per frame, named by its
//! index (`000000.png`, `000001.png`, ...), each written under a temporary name and renamed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::frame::Picture;
use crate::images;

pub struct FramesDir {
    dir: PathBuf,
    extension: String,
    digits: usize,
    sixteen_bit: bool,
    overwrite: bool,
    quality: u8,
    pub busy: Duration,
    pub written: u64,
    /// Duplicates written as links or copies of their source's file.
    pub linked: u64,
}

impl FramesDir {
    /// Creates the folder (`video_job::check_paths` has refused a file there). Frames already
    /// there are refused unless `overwrite`.
    pub fn create(
        dir: &Path,
        extension: &str,
        frames_estimate: Option<u64>,
        sixteen_bit: bool,
        overwrite: bool,
        quality: u8,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let digits = frames_estimate.map_or(6, |n| n.to_string().len().max(6));
        let out = Self {
            dir: dir.to_path_buf(),
            extension: extension.to_string(),
            digits,
            sixteen_bit: sixteen_bit && extension == "png",
            overwrite,
            quality,
            busy: Duration::ZERO,
            written: 0,
            linked: 0,
        };
        let first = out.path(0);
        if first.exists() && !overwrite {
            return Err(Error::OutputExists { path: first });
        }
        Ok(out)
    }

    pub fn path(&self, index: u64) -> PathBuf {
        self.dir.join(format!(
            "{index:0width$}.{}",
            self.extension,
            width = self.digits
        ))
    }

    pub fn is_deep(&self) -> bool {
        self.sixteen_bit
    }

    pub fn write(&mut self, index: u64, picture: &Picture) -> Result<()> {
        let started = Instant::now();
        let image = match picture {
            Picture::Planar(p) => images::assemble(p, None, false, self.sixteen_bit),
            Picture::Rgb8(p) => image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(
                p.width as u32,
                p.height as u32,
                |x, y| image::Rgb(p.rgb(x as usize, y as usize)),
            )),
            Picture::Device(p) => {
                let planar = p.to_planar().map_err(|reason| Error::Device {
                    context: "writing a frame".into(),
                    reason,
                })?;
                images::assemble(&planar, None, false, self.sixteen_bit)
            }
        };
        images::write(image, &self.path(index), self.overwrite, self.quality)?;
        self.written += 1;
        self.busy += started.elapsed();
        Ok(())
    }

    /// A duplicate: a hard link to its source's file (a copy where the file system has no links),
    /// made under a temporary name and renamed like every other picture.
    pub fn link(&mut self, index: u64, source: u64) -> Result<()> {
        let started = Instant::now();
        images::link_duplicate(&self.path(source), &self.path(index), self.overwrite)?;
        self.written += 1;
        self.linked += 1;
        self.busy += started.elapsed();
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
