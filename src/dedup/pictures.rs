//! Duplicate pictures in a folder of images (frames extracted from a video, say): each picture is
//! compared with the kept ones before it, in the folder's order, and a duplicate's output becomes a
//! hard link to its source's output instead of being upscaled again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use super::features::Packed;
use super::{Dedup, Frame, Thresholds};
use crate::images::Decoded;

pub struct PictureDedup<B: Backend> {
    dedup: Dedup<B>,
    /// Kept pictures still in the window: their output and whether it was written gray.
    kept: HashMap<u64, (PathBuf, bool)>,
}

impl<B: Backend> PictureDedup<B> {
    pub fn new(device: &B::Device, thresholds: Thresholds, window: usize) -> Self {
        Self {
            dedup: Dedup::new(device, None, thresholds, window),
            kept: HashMap::new(),
        }
    }

    pub fn features_by(&self) -> &'static str {
        self.dedup.detector.name()
    }

    /// The output that picture `index` (written to `output`) can be a link to, or None when it
    /// must be upscaled. Only 8-bit pictures without alpha take part (the features see 8 bits of
    /// colour and no alpha), and a link needs the same output format and gray-ness.
    pub fn source_for(&mut self, index: u64, picture: &Decoded, output: &Path) -> Option<PathBuf> {
        if picture.alpha.is_some() || picture.sixteen_bit {
            return None;
        }
        let packed = Packed::from_planar(&picture.rgb);
        let decision = self.dedup.decide(index, Frame::Packed(&packed));
        for released in &decision.released {
            self.kept.remove(released);
        }
        if decision.source == index {
            self.kept
                .insert(index, (output.to_path_buf(), picture.gray));
            return None;
        }
        let (source, gray) = self.kept.get(&decision.source)?;
        let same_format = source.extension().map(|e| e.to_ascii_lowercase())
            == output.extension().map(|e| e.to_ascii_lowercase());
        (same_format && *gray == picture.gray).then(|| source.clone())
    }
}
