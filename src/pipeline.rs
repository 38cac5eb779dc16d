//! The phased video pipeline. Each phase runs on its own thread and hands frames on through a
//! bounded channel, so host memory stays bounded whatever the video's length:
//!
//! decode (thread) -> dedup (thread: features on the device, decision on the host; duplicates
//! lose their picture) -> preload buffer (a channel `preload` frames deep, keeping the GPU fed) ->
//! upscale (one thread per upscaler, so that one frame's host work overlaps another's device work;
//! duplicates pass straight through) -> save (thread: puts frames back in order, then encode + mux,
//! or a frames folder; a duplicate is written from its source's upscaled picture, kept until the
//! dedup phase releases it).
//!
//! A phase that fails drops its channels; the others see them close and stop, and the first real
//! error is returned. The output is renamed into place only after the save phase saw the end.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use ffmpeg_next::Rational;
use serde::Serialize;

use crate::dedup::features::Packed;
use crate::dedup::{self, Dedup};
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
    pub fn takes_rgb8(&self) -> bool {
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
    /// Summed over the upscale threads.
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
    upscalers: &mut [Upscaler<B>],
    source: Source,
    dedup: Option<Dedup<B>>,
    save: Save,
    preload: usize,
    progress: &mut Progress,
    interrupted: &(dyn Fn() -> bool + Sync),
) -> Result<VideoOutcome>
where
    Upscaler<B>: Send,
{
    let time_base = source.info.time_base;
    let copy_map = match &save {
        Save::Video(sink) => sink.copy_map(),
        Save::Frames(_) => Vec::new(),
    };
    let rgb8 = save.takes_rgb8();
    let keep_sources = dedup.is_some();
    let (to_upscale, decoded) = sync_channel::<Message>(preload.max(1));
    let (to_save, upscaled) = sync_channel::<Message>(2);
    let decoded = Mutex::new(Some(decoded));
    thread::scope(|scope| {
        let (decoding, deduplicating) = match dedup {
            Some(dedup) => {
                let (to_dedup, undeduplicated) = sync_channel::<Message>(2);
                let decoding = scope.spawn(move || {
                    source.run(&copy_map, interrupted, |m| to_dedup.send(m).is_ok())
                });
                let deduplicating =
                    scope.spawn(move || dedup_phase(dedup, undeduplicated, to_upscale));
                (decoding, Some(deduplicating))
            }
            None => {
                let decoding = scope.spawn(move || {
                    source.run(&copy_map, interrupted, |m| to_upscale.send(m).is_ok())
                });
                (decoding, None)
            }
        };
        let saving = scope.spawn(move || save_phase(save, upscaled, keep_sources, progress));
        let workers: Vec<_> = upscalers
            .iter_mut()
            .map(|upscaler| {
                let (decoded, to_save) = (&decoded, to_save.clone());
                scope.spawn(move || {
                    upscale_phase(upscaler, decoded, to_save, rgb8, time_base, interrupted)
                })
            })
            .collect();
        drop(to_save);
        // Join every upscale thread before looking at any result.
        let results: Vec<_> = workers.into_iter().map(join).collect();
        let upscaling = results.into_iter().try_fold(
            (Vec::new(), Duration::ZERO, Duration::ZERO),
            |(mut records, busy, starved), result| {
                result.map(|(r, b, s)| {
                    records.extend(r);
                    (records, busy + b, starved + s)
                })
            },
        );
        let decode = join(decoding);
        let deduplicated = deduplicating.map_or(Ok(Duration::ZERO), join);
        let saved = join(saving);
        // The phase that failed first explains the others' stopping; interruption wins.
        let stopped = [
            decode.as_ref().err(),
            deduplicated.as_ref().err(),
            upscaling.as_ref().err(),
        ]
        .into_iter()
        .any(|e| matches!(e, Some(Error::Interrupted)));
        if stopped {
            return Err(Error::Interrupted);
        }
        let decode = decode?;
        let dedup_busy = deduplicated?;
        let (frames, upscale_busy, starved) = upscaling?;
        let saved = saved?;
        let mut frames = frames;
        frames.sort_by_key(|f| f.index);
        let Some(saved) = saved else {
            return Err(Error::Interrupted);
        };
        Ok(VideoOutcome {
            frames,
            phases: PhaseTimes {
                decode_s: decode.busy.as_secs_f64(),
                dedup_s: dedup_busy.as_secs_f64(),
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

/// Finds each frame's source and drops duplicates' pictures. Returns its busy time.
fn dedup_phase<B: Backend>(
    mut dedup: Dedup<B>,
    decoded: Receiver<Message>,
    to_upscale: SyncSender<Message>,
) -> Result<Duration> {
    let mut busy = Duration::ZERO;
    for message in decoded {
        let message = match message {
            Message::Frame(mut frame) => {
                let started = Instant::now();
                let packed = frame.packed.take();
                let decision = catch_unwind(AssertUnwindSafe(|| {
                    let index = frame.index;
                    match (packed, &frame.picture) {
                        (Some(packed), _) => dedup.decide(index, dedup::Frame::Packed(&packed)),
                        (None, Some(Picture::Planar(picture))) => {
                            let packed = Packed::from_planar(picture);
                            dedup.decide(index, dedup::Frame::Packed(&packed))
                        }
                        (None, Some(Picture::Device(picture))) => {
                            dedup.decide(index, dedup::Frame::Device(picture))
                        }
                        _ => unreachable!("the decoder sends decoded pictures"),
                    }
                }))
                .map_err(|payload| Error::Device {
                    context: "finding duplicate frames".into(),
                    reason: crate::panic_message(&payload),
                })?;
                if decision.source != frame.index {
                    frame.picture = None;
                }
                frame.source = decision.source;
                frame.released = decision.released;
                busy += started.elapsed();
                Message::Frame(frame)
            }
            end => end,
        };
        if to_upscale.send(message).is_err() {
            break; // the upscale phase stopped; its error says why
        }
    }
    Ok(busy)
}

type UpscaleResult = (Vec<FrameRecord>, Duration, Duration);

fn upscale_phase<B: Backend>(
    upscaler: &mut Upscaler<B>,
    decoded: &Mutex<Option<Receiver<Message>>>,
    to_save: SyncSender<Message>,
    rgb8: bool,
    time_base: Rational,
    interrupted: &dyn Fn() -> bool,
) -> Result<UpscaleResult> {
    // Whichever way this thread ends, the decoder must not wait for it: the first thread to end
    // closes the channel, and the others stop after their current frame.
    struct CloseOnExit<'a>(&'a Mutex<Option<Receiver<Message>>>);
    impl Drop for CloseOnExit<'_> {
        fn drop(&mut self) {
            if let Ok(mut receiver) = self.0.lock() {
                receiver.take();
            }
        }
    }
    let _close = CloseOnExit(decoded);
    let mut records = Vec::new();
    let mut busy = Duration::ZERO;
    let mut starved = Duration::ZERO;
    loop {
        let waiting = Instant::now();
        let next = match decoded.lock() {
            Ok(guard) => guard.as_ref().map(|receiver| receiver.recv()),
            Err(_) => None,
        };
        let Some(Ok(message)) = next else {
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
                let picture = match &frame.picture {
                    None => None, // a duplicate
                    Some(Picture::Planar(decoded)) if rgb8 => {
                        Some(Picture::Rgb8(upscaler.upscale_rgb8(decoded, interrupted)?))
                    }
                    Some(Picture::Planar(decoded)) => {
                        Some(Picture::Planar(upscaler.upscale(decoded, interrupted)?))
                    }
                    Some(Picture::Device(decoded)) if rgb8 => Some(Picture::Rgb8(
                        upscaler.upscale_device(decoded, interrupted)?,
                    )),
                    Some(Picture::Device(decoded)) => Some(Picture::Planar(
                        upscaler.upscale_device(decoded, interrupted)?,
                    )),
                    Some(Picture::Rgb8(_)) => unreachable!("the decoder sends planar pictures"),
                };
                busy += started.elapsed();
                records.push(FrameRecord {
                    index: frame.index,
                    pts: frame.pts,
                    time: frame.pts as f64 * f64::from(time_base),
                    source: frame.source,
                });
                Message::Frame(Frame { picture, ..frame })
            }
            end @ Message::End { .. } => {
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

/// Writes frames in order as they come (the upscale threads may finish them out of order);
/// finishes the output only once `End` came and every frame before it was written. Returns None
/// when the input side stopped early (the temporary output is then removed).
fn save_phase(
    mut save: Save,
    upscaled: Receiver<Message>,
    keep_sources: bool,
    progress: &mut Progress,
) -> Result<Option<Saved>> {
    let mut sources = Sources {
        keep: keep_sources && matches!(save, Save::Video(_)),
    };
    let mut waiting: BTreeMap<u64, Frame> = BTreeMap::new();
    let mut next = 0;
    let mut end = None;
    for message in upscaled {
        match message {
            Message::Frame(frame) => {
                waiting.insert(frame.index, frame);
            }
            Message::End { frames, packets } => end = Some((frames, packets)),
        }
        while let Some(frame) = waiting.remove(&next) {
            write(&mut save, frame, &mut sources)?;
            progress.step(&format!("frame {next}"));
            next += 1;
        }
        if matches!(&end, Some((frames, _)) if *frames == next) {
            break;
        }
    }
    let Some((frames, packets)) = end else {
        return Ok(None);
    };
    if frames != next {
        return Ok(None);
    }
    match save {
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
    }
}

/// Whether kept frames must stay available to later duplicates (the video sink keeps their
/// converted frames; a frames folder links files instead).
struct Sources {
    keep: bool,
}

fn write(save: &mut Save, frame: Frame, sources: &mut Sources) -> Result<()> {
    match save {
        Save::Video(sink) => {
            for packet in frame.passthrough {
                sink.copy_packet(packet)?;
            }
            let found = match &frame.picture {
                Some(picture) => {
                    let keep = sources.keep.then_some(frame.index);
                    sink.write_frame(picture, frame.pts, frame.duration, keep)?;
                    true
                }
                None => sink.write_duplicate(frame.source, frame.pts, frame.duration)?,
            };
            if !found {
                return Err(Error::Device {
                    context: "video pipeline".into(),
                    reason: format!(
                        "frame {} uses frame {}, which is no longer kept",
                        frame.index, frame.source
                    ),
                });
            }
            for index in &frame.released {
                sink.release(*index);
            }
        }
        Save::Frames(dir) => match &frame.picture {
            Some(picture) => dir.write(frame.index, picture)?,
            None => dir.link(frame.index, frame.source)?,
        },
    }
    Ok(())
}
