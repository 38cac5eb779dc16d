//! `--report FILE.json`: what was run, on which device, how long each phase took, and one record
//! per frame (its index, timestamp and the frame whose upscaled picture it uses).

use std::path::Path;

use serde_json::json;

use crate::cli::Config;
use crate::error::{Error, Result};
use crate::pipeline::FrameRecord;
use crate::Summary;

pub fn write(
    path: &Path,
    config: &Config,
    summary: &Summary,
    frames: Option<&[FrameRecord]>,
) -> Result<()> {
    let video = summary.video.as_ref();
    let report = json!({
        "upframe": env!("CARGO_PKG_VERSION"),
        "input": config.input,
        "outputs": summary.outputs,
        "settings": {
            "model": summary.model,
            "scale": summary.scale,
            "backend": summary.backend.to_string(),
            "device": summary.device,
            "precision": summary.precision.to_string(),
            "kernels": summary.kernels,
            "tile": summary.tile,
            "decoder": video.map(|v| v.decoder.clone()),
            "encoder": video.map(|v| v.encoder.clone()),
            "crf": config.video.encode.crf,
            "preset": config.video.encode.preset,
            "preload": config.video.preload,
            "dedup": summary.dedup,
        },
        "peak_rss_mib": peak_rss_mib(),
        "timings": {
            "wall_s": summary.elapsed.as_secs_f64(),
            "phases": video.map(|v| &v.phases),
        },
        "totals": {
            "files": summary.files,
            "frames": video.map(|v| v.frames),
            "unique": video.map_or((summary.files - summary.linked) as u64, |v| v.unique),
            "duplicates": video.map_or(summary.linked as u64, |v| v.frames - v.unique),
            "model_runs": summary.forwards,
            "damaged_packets": video.map(|v| v.damaged_packets),
            "ffmpeg_errors": video.map(|v| v.ffmpeg_errors),
            "hardware_decoded_frames": video.map(|v| v.hardware_frames),
            "gpu_converted_frames": video.map(|v| v.converted_on_device),
        },
        "frames": frames.unwrap_or(&[]),
    });
    let text = serde_json::to_string_pretty(&report).expect("plain values serialise");
    let mut file = tempfile::NamedTempFile::new_in(crate::images::folder_of(path))
        .map_err(|e| Error::io(path, e))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| Error::io(path, e))?;
    file.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// The process's peak resident memory so far (Linux), to show that it stays bounded.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
