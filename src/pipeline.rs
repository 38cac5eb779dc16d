//! The phased video pipeline. Each phase runs on its own thread and hands frames on through a
//! bounded channel, so host memory stays bounded whatever the video's length:
//!
//! decode (thread) -> dedup (seam: every frame is its own source for now) -> preload buffer
//! (a channel `preload` frames deep, keeping the GPU fed) -> upscale (this thread, which owns the
//! device) -> save (thread: encode + mux, or a frames folder).
//!
//! A phase that fails drops its channels; the others see them close and stop, and the first real
//! error is returned. The output is renamed into place only after the save phase saw the end.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use ffmpeg_next::Rational;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::frame::{Frame, Message, Picture};
use crate::progress::Progress;
use crate::upscale::Upscaler;
use crate::video::decode::{DecodeStats, Source};
use crate::video::encode::Sink;
use crate::video::frames_dir::FramesDir;

/// Where upscaled frames go.
pub enum Save {
    Video(Box<Sink>),
    Frames(FramesDir),
}

impl Save {
    /// Whether 8-bit pictures suffice (they are then quantised on the device).
    fn takes_rgb8(&self) -> bool {
        match self {
            Save::Video(sink) => !sink.is_deep(),
            Save::Frames(dir) => !dir.is_deep(),
        }
    }
}

/// One line of the report per frame.
#[derive(Debug, Clone, Serialize)]
pub struct FrameRecord {
    pub index: u64,
    pub pts: i64,
    /// Seconds from the stream's time zero.
    pub time: f64,
    /// The frame whose upscaled picture this one uses (its own index when unique).
    pub source: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseTimes {
    pub decode_s: f64,
    pub dedup_s: f64,
    pub upscale_s: f64,
    pub save_s: f64,
    /// Time the upscale phase waited for decoded frames: above zero, decoding is the bottleneck.
    pub upscale_starved_s: f64,
}

pub struct VideoOutcome {
    pub frames: Vec<FrameRecord>,
    pub phases: PhaseTimes,
    pub decode: DecodeStats,
    pub output: PathBuf,
}

struct Saved {
    output: PathBuf,
    busy: Duration,
}

pub fn run<B: Backend>(
    upscaler: &mut Upscaler<B>,
    source: Source,
    save: Save,
    preload: usize,
    progress: &mut Progress,
    interrupted: &(dyn Fn() -> bool + Sync),
) -> Result<VideoOutcome> {
    let time_base = source.info.time_base;
    let copy_map = match &save {
        Save::Video(sink) => sink.copy_map(),
        Save::Frames(_) => Vec::new(),
    };
    let rgb8 = save.takes_rgb8();
    let (to_upscale, decoded) = sync_channel::<Message>(preload.max(1));
    let (to_save, upscaled) = sync_channel::<Message>(2);
    thread::scope(|scope| {
        let decoding = scope.spawn(move || {
            source.run(&copy_map, interrupted, |message| to_upscale.send(message).is_ok())
        });
        let saving = scope.spawn(move || save_phase(save, upscaled));
        let upscaling = upscale_phase(upscaler, decoded, to_save, rgb8, time_base, progress, interrupted);
        let decode = join(decoding);
        let saved = join(saving);
        // The phase that failed first explains the others' stopping; interruption wins.
        let (frames, upscale_busy, starved) = match (&decode, &upscaling, &saved) {
            (Err(Error::Interrupted), _, _) | (_, Err(Error::Interrupted), _) => {
                return Err(Error::Interrupted)
            }
            (Err(_), _, _) => return Err(decode.err().expect("checked")),
            (_, Err(_), _) => return Err(upscaling.err().expect("checked")),
            (_, _, Err(_)) => return Err(saved.err().expect("checked")),
            (Ok(_), Ok(u), Ok(_)) => u.clone(),
        };
        let decode = decode.expect("checked");
        let Some(saved) = saved.expect("checked") else {
            return Err(Error::Interrupted);
        };
        Ok(VideoOutcome {
            frames,
            phases: PhaseTimes {
                decode_s: decode.busy.as_secs_f64(),
                dedup_s: 0.0,
                upscale_s: upscale_busy.as_secs_f64(),
                save_s: saved.busy.as_secs_f64(),
                upscale_starved_s: starved.as_secs_f64(),
            },
            decode,
            output: saved.output,
        })
    })
}

fn join<T>(handle: thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle.join().unwrap_or_else(|payload| {
        Err(Error::Device {
            context: "video pipeline".into(),
            reason: crate::panic_message(&payload),
        })
    })
}

type UpscaleResult = (Vec<FrameRecord>, Duration, Duration);

fn upscale_phase<B: Backend>(
    upscaler: &mut Upscaler<B>,
    decoded: Receiver<Message>,
    to_save: SyncSender<Message>,
    rgb8: bool,
    time_base: Rational,
    progress: &mut Progress,
    interrupted: &dyn Fn() -> bool,
) -> Result<UpscaleResult> {
    let mut records = Vec::new();
    let mut busy = Duration::ZERO;
    let mut starved = Duration::ZERO;
    loop {
        let waiting = Instant::now();
        let Ok(message) = decoded.recv() else {
            // The decoder stopped without an end: its own error says why.
            return Ok((records, busy, starved));
        };
        starved += waiting.elapsed();
        let message = match message {
            Message::Frame(frame) => {
                if interrupted() {
                    return Err(Error::Interrupted);
                }
                let started = Instant::now();
                let Picture::Planar(decoded) = &frame.picture else {
                    unreachable!("the decoder sends planar pictures");
                };
                let picture = if rgb8 {
                    Picture::Rgb8(upscaler.upscale_rgb8(decoded, interrupted)?)
                } else {
                    Picture::Planar(upscaler.upscale(decoded, interrupted)?)
                };
                busy += started.elapsed();
                records.push(FrameRecord {
                    index: frame.index,
                    pts: frame.pts,
                    time: frame.pts as f64 * f64::from(time_base),
                    source: frame.source,
                });
                progress.step(&format!("frame {}", frame.index));
                Message::Frame(Frame { picture, ..frame })
            }
            end @ Message::End(_) => {
                let _ = to_save.send(end);
                return Ok((records, busy, starved));
            }
        };
        if to_save.send(message).is_err() {
            // The save phase stopped; its error says why.
            return Ok((records, busy, starved));
        }
    }
}

/// Writes frames as they come; finishes the output only on `End`. Returns None when the input
/// side stopped early (the temporary output is then removed).
fn save_phase(mut save: Save, upscaled: Receiver<Message>) -> Result<Option<Saved>> {
    for message in upscaled {
        match message {
            Message::Frame(frame) => match &mut save {
                Save::Video(sink) => {
                    for packet in frame.passthrough {
                        sink.copy_packet(packet)?;
                    }
                    sink.write_frame(&frame.picture, frame.pts, frame.duration)?;
                }
                Save::Frames(dir) => dir.write(frame.index, &frame.picture)?,
            },
            Message::End(packets) => {
                return match save {
                    Save::Video(mut sink) => {
                        for packet in packets {
                            sink.copy_packet(packet)?;
                        }
                        let (output, busy) = sink.finish()?;
                        Ok(Some(Saved { output, busy }))
                    }
                    Save::Frames(dir) => Ok(Some(Saved {
                        output: dir.dir().to_path_buf(),
                        busy: dir.busy,
                    })),
                };
            }
        }
    }
    Ok(None)
}
