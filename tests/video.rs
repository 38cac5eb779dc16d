//! Video in, video out, as a user meets it. Clips are generated here with the ffmpeg CLI (which
//! .ci/run installs) and checked with ffprobe: frame counts, per-frame timestamps, the stream list,
//! bit-identical audio and subtitle packets, sizes, depth, colour tags and rotation; and for each
//! kind of bad input a non-zero exit with one line, and nothing left behind.
//!
//! Most tests use `--model bicubic` on the CPU to stay fast; one runs the real model on cpu and
//! wgpu on a tiny clip.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{expect_failure, frame_times, p, run_ok, send_ctrl_c, stderr, upframe, Clip};

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("the ffmpeg CLI (scripts/install-deps.sh installs it)");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", stderr(&out));
}

fn ffprobe(args: &[&str], path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe");
    assert!(out.status.success(), "ffprobe {args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn probe(path: &Path) -> Value {
    let text = ffprobe(
        &[
            "-show_streams",
            "-show_format",
            "-show_chapters",
            "-of",
            "json",
        ],
        path,
    );
    serde_json::from_str(&text).unwrap()
}

fn streams(path: &Path) -> Vec<Value> {
    probe(path)["streams"].as_array().unwrap().clone()
}

/// (codec_type, codec_name) of each stream, in order.
fn stream_list(path: &Path) -> Vec<(String, String)> {
    streams(path)
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or("").to_string(),
                s["codec_name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Per-packet hashes and timestamps of one stream, copied out as is: equal lists mean
/// bit-identical packets at the same times.
fn packet_hashes(path: &Path, stream: &str) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args(["-map", stream, "-c", "copy", "-f", "framemd5", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            // stream, dts, pts, duration, size, hash: the time base differs between containers,
            // so keep size and hash, and compare times separately.
            let fields: Vec<&str> = l.split(',').map(str::trim).collect();
            format!("{} {}", fields[4], fields[5])
        })
        .collect()
}

fn packet_times(path: &Path, stream: &str) -> Vec<f64> {
    ffprobe(
        &[
            "-select_streams",
            stream,
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ],
        path,
    )
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(|l| l.trim().trim_end_matches(',').parse::<f64>().unwrap())
    .collect()
}

fn assert_times_equal(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: counts differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() < 0.0015, "{what}: entry {i}: {x} vs {y}");
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upframe-") || n.starts_with(".tmp"))
        .collect()
}

#[test]
fn mkv_keeps_audio_subtitles_chapters_attachments_and_timestamps() {
    let c = Clip::new();
    let srt = c.path("subs.srt");
    std::fs::write(
        &srt,
        "1\n00:00:00,100 --> 00:00:00,600\nHello\n\n2\n00:00:00,700 --> 00:00:00,950\nWorld\n",
    )
    .unwrap();
    let chapters = c.path("chapters.txt");
    std::fs::write(
        &chapters,
        ";FFMETADATA1\ntitle=A test clip\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=500\ntitle=One\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=500\nEND=1000\ntitle=Two\n",
    )
    .unwrap();
    let font = c.path("font.ttf");
    std::fs::write(
        &font,
        b"\x00\x01\x00\x00 not really a font, but bytes to carry",
    )
    .unwrap();
    let input = c.path("in.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=24:duration=1",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=1",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=660:duration=1",
        "-i",
        p(&srt),
        "-i",
        p(&chapters),
        "-map",
        "0",
        "-map",
        "1",
        "-map",
        "2",
        "-map",
        "3",
        "-map_metadata",
        "4",
        "-map_chapters",
        "4",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a:0",
        "aac",
        "-c:a:1",
        "libopus",
        "-c:s",
        "srt",
        "-metadata:s:a:0",
        "language=jpn",
        "-metadata:s:s:0",
        "language=eng",
        "-metadata:s:v:0",
        "language=fra",
        "-attach",
        p(&font),
        "-metadata:s:t",
        "mimetype=application/x-truetype-font",
        p(&input),
    ]);
    let output = c.path("out.mkv");
    run_ok(&[
        p(&input),
        "-o",
        p(&output),
        "--model",
        "bicubic",
        "--backend",
        "cpu",
    ]);

    let expected = vec![
        ("video".to_string(), "h264".to_string()),
        ("audio".into(), "aac".into()),
        ("audio".into(), "opus".into()),
        ("subtitle".into(), "subrip".into()),
        ("attachment".into(), "ttf".into()),
    ];
    assert_eq!(stream_list(&input), expected, "the generated clip");
    assert_eq!(stream_list(&output), expected);
    let out_streams = streams(&output);
    assert_eq!(out_streams[0]["width"], 256);
    assert_eq!(out_streams[0]["height"], 192);
    assert_eq!(out_streams[0]["tags"]["language"], "fra");
    assert_eq!(out_streams[1]["tags"]["language"], "jpn");
    assert_eq!(out_streams[3]["tags"]["language"], "eng");
    assert_eq!(out_streams[4]["tags"]["filename"], "font.ttf");

    assert_times_equal(&frame_times(&input), &frame_times(&output), "video frames");
    assert_eq!(frame_times(&output).len(), 24);
    for stream in ["0:a:0", "0:a:1", "0:s:0"] {
        assert_eq!(
            packet_hashes(&input, stream),
            packet_hashes(&output, stream),
            "{stream}"
        );
    }
    assert_times_equal(
        &packet_times(&input, "a:0"),
        &packet_times(&output, "a:0"),
        "aac",
    );
    assert_times_equal(
        &packet_times(&input, "s:0"),
        &packet_times(&output, "s:0"),
        "srt",
    );
    // Opus in Matroska: FFmpeg 5.1's stream copy moves packets earlier by the codec delay
    // (6.5 ms) on each remux; `ffmpeg -c copy` does the same, so that is the reference here.
    let remuxed = c.path("remuxed.mkv");
    ffmpeg(&["-i", p(&input), "-map", "0", "-c", "copy", p(&remuxed)]);
    assert_times_equal(
        &packet_times(&remuxed, "a:1"),
        &packet_times(&output, "a:1"),
        "opus",
    );
    let probed = probe(&output);
    let titles: Vec<&str> = probed["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ch| ch["tags"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["One", "Two"]);
    assert_eq!(probed["format"]["tags"]["title"], "A test clip");
    let duration = |v: &Value| {
        v["format"]["duration"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert!((duration(&probe(&input)) - duration(&probed)).abs() < 0.05);
    assert!(leftovers(c.dir.path()).is_empty());
}

#[test]
fn variable_frame_rate_mp4_keeps_every_timestamp() {
    let c = Clip::new();
    let input = c.path("vfr.mp4");
    // 10 frames at 1/24 s, then 10 at 1/8 s, plus AAC audio.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=24:duration=1",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=2",
        "-vf",
        "select=lt(n\\,20),setpts=if(lt(N\\,10)\\,N\\,10+(N-10)*3)/24/TB",
        "-vsync",
        "passthrough",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        p(&input),
    ]);
    let output = c.path("out.mp4");
    run_ok(&[
        p(&input),
        "-o",
        p(&output),
        "--model",
        "bicubic",
        "--backend",
        "cpu",
        "--scale",
        "2",
    ]);
    let (a, b) = (frame_times(&input), frame_times(&output));
    assert_eq!(a.len(), 20);
    assert_times_equal(&a, &b, "frames");
    assert!(
        (a[11] - a[10] - 0.125).abs() < 0.002,
        "the clip is variable-rate: {a:?}"
    );
    assert_eq!(
        packet_hashes(&input, "0:a:0"),
        packet_hashes(&output, "0:a:0")
    );
    assert_eq!(stream_list(&output), stream_list(&input));
    assert_eq!(streams(&output)[0]["width"], 128);
}

#[test]
fn ten_bit_input_gives_ten_bit_output_with_its_colour_tags() {
    let c = Clip::new();
    let input = c.path("deep.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=24:duration=0.25",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p10le",
        "-colorspace",
        "bt709",
        "-color_primaries",
        "bt709",
        "-color_trc",
        "bt709",
        "-color_range",
        "tv",
        p(&input),
    ]);
    let output = c.path("out.mkv");
    run_ok(&[
        p(&input),
        "-o",
        p(&output),
        "--model",
        "bicubic",
        "--backend",
        "cpu",
    ]);
    let s = &streams(&output)[0];
    assert_eq!(s["pix_fmt"], "yuv420p10le");
    assert_eq!(s["color_space"], "bt709");
    assert_eq!(s["color_primaries"], "bt709");
    assert_eq!(s["color_transfer"], "bt709");
    assert_eq!(s["color_range"], "tv");
    assert_eq!(frame_times(&output).len(), 6);
}

#[test]
fn bt601_colours_survive_the_round_trip() {
    // A flat colour, encoded BT.601 limited range: the upscaled output must decode to the same
    // RGB, which fails if either side used the wrong matrix or range.
    let c = Clip::new();
    let input = c.path("flat.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=0xC04020:size=64x48:rate=10:duration=0.3",
        "-vf",
        "scale=out_color_matrix=bt601:out_range=tv,format=yuv444p",
        "-c:v",
        "libx264",
        "-qp",
        "0",
        "-colorspace",
        "smpte170m",
        "-color_range",
        "tv",
        p(&input),
    ]);
    let output = c.path("out.mkv");
    run_ok(&[
        p(&input),
        "-o",
        p(&output),
        "--model",
        "bicubic",
        "--backend",
        "cpu",
        "--crf",
        "0",
    ]);
    let rgb = |path: &Path| -> Vec<u8> {
        let out = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i"])
            .arg(path)
            .args([
                "-frames:v",
                "1",
                "-vf",
                "scale=in_color_matrix=bt601:in_range=tv,format=rgb24",
                "-f",
                "rawvideo",
                "-",
            ])
            .output()
            .unwrap();
        out.stdout
    };
    let (a, b) = (rgb(&input), rgb(&output));
    let mean = |v: &[u8], c: usize| {
        v.iter().skip(c).step_by(3).map(|&x| x as f64).sum::<f64>() / (v.len() / 3) as f64
    };
    for ch in 0..3 {
        assert!(
            (mean(&a, ch) - mean(&b, ch)).abs() < 2.0,
            "channel {ch}: {} vs {}",
            mean(&a, ch),
            mean(&b, ch)
        );
    }
    assert_eq!(streams(&output)[0]["color_space"], "smpte170m");
}

#[test]
fn odd_sizes_are_kept_exactly() {
    let c = Clip::new();
    let input = c.path("odd.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=10:duration=0.3",
        "-vf",
        "scale=321:241",
        "-c:v",
        "ffv1",
        "-pix_fmt",
        "yuv420p",
        p(&input),
    ]);
    let output = c.path("out.mkv");
    run_ok(&[
        p(&input),
        "-o",
        p(&output),
        "--model",
        "bicubic",
        "--backend",
        "cpu",
        "--scale",
        "3",
    ]);
    let s = &streams(&output)[0];
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(963), Some(723))
    );
    assert_eq!(frame_times(&output).len(), 3);
}

#[test]
fn rotation_metadata_is_kept() {
    let c = Clip::new();
    let plain = c.path("plain.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=10:duration=0.3",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        p(&plain),
    ]);
    // FFmpeg 5.1 turns the rotate tag into a display matrix only when stream-copying.
    let input = c.path("rotated.mp4");
    ffmpeg(&[
        "-i",
        p(&plain),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        p(&input),
    ]);
    let rotation = |path: &Path| {
        ffprobe(
            &[
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream_side_data=rotation",
                "-of",
                "csv=p=0",
            ],
            path,
        )
        .trim()
        .to_string()
    };
    assert_eq!(rotation(&input), "90", "the generated clip");
    let output = c.path("out.mp4");
    run_ok(&[
        p(&input),
        "-o",
        p(&output),
        "--model",
        "bicubic",
        "--backend",
        "cpu",
    ]);
    assert_eq!(rotation(&output), "90");
}

#[test]
fn subtitles_mp4_cannot_hold_are_dropped_with_a_warning() {
    let c = Clip::new();
    let srt = c.path("s.srt");
    std::fs::write(&srt, "1\n00:00:00,000 --> 00:00:00,200\nHi\n").unwrap();
    let input = c.path("in.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=10:duration=0.3",
        "-i",
        p(&srt),
        "-map",
        "0",
        "-map",
        "1",
        "-c:v",
        "libx264",
        "-c:s",
        "srt",
        p(&input),
    ]);
    let output = c.path("out.mp4");
    let out = run_ok(&[
        p(&input),
        "-o",
        p(&output),
        "--model",
        "bicubic",
        "--backend",
        "cpu",
    ]);
    assert!(stderr(&out).contains("is not copied"), "{}", stderr(&out));
    assert_eq!(
        stream_list(&output),
        [("video".to_string(), "h264".to_string())]
    );
}

#[test]
fn frames_folder_and_report() {
    let c = Clip::new();
    let input = c.path("in.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=32x24:rate=10:duration=0.5",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        p(&input),
    ]);
    let dir = c.path("frames");
    let report = c.path("report.json");
    run_ok(&[
        p(&input),
        "-o",
        p(&dir),
        "--frames",
        "png",
        "--model",
        "bicubic",
        "--backend",
        "cpu",
        "--report",
        p(&report),
    ]);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "000000.png",
            "000001.png",
            "000002.png",
            "000003.png",
            "000004.png"
        ]
    );
    let first = image::open(dir.join("000000.png")).unwrap();
    assert_eq!((first.width(), first.height()), (128, 96));

    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let frames = r["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 5);
    let times = frame_times(&input);
    // testsrc2 this small draws frames 0-2 alike and 3-4 alike (its frame MD5s say so): held
    // frames, each written from the first of its run.
    let sources = [0, 0, 0, 3, 3];
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f["index"], i as u64);
        assert_eq!(f["source"], sources[i]);
        assert!((f["time"].as_f64().unwrap() - times[i]).abs() < 1e-3);
    }
    assert_eq!(r["totals"]["frames"], 5);
    assert_eq!(r["settings"]["backend"], "cpu");
    // The CPU has no fused kernels: the report says what really ran.
    assert_eq!(r["settings"]["kernels"], "burn's generic operations");
    assert!(r["timings"]["phases"]["upscale_s"].as_f64().unwrap() > 0.0);

    // Frames already there are refused without -y.
    let again = upframe(&[
        p(&input),
        "-o",
        p(&dir),
        "--frames",
        "png",
        "--model",
        "bicubic",
        "--backend",
        "cpu",
    ]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
}

/// The real model on a tiny clip: cpu and wgpu give the same frames (wgpu on lavapipe in CI).
#[test]
fn real_model_on_cpu_and_wgpu_agree() {
    let c = Clip::new();
    let input = c.path("tiny.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=24x16:rate=10:duration=0.2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv444p",
        "-qp",
        "0",
        p(&input),
    ]);
    let mut outputs = Vec::new();
    for backend in ["cpu", "wgpu"] {
        let dir = c.path(backend);
        let out = upframe(&[
            p(&input),
            "-o",
            p(&dir),
            "--frames",
            "png",
            "--backend",
            backend,
            "--precision",
            "fp32",
        ]);
        if backend == "wgpu"
            && out.status.code() == Some(2)
            && stderr(&out).contains("not available")
        {
            eprintln!("skipped wgpu: {}", stderr(&out));
            return;
        }
        assert!(out.status.success(), "{backend}: {}", stderr(&out));
        outputs.push(dir);
    }
    for i in 0..2 {
        let name = format!("{i:06}.png");
        let a = image::open(outputs[0].join(&name)).unwrap().to_rgb8();
        let b = image::open(outputs[1].join(&name)).unwrap().to_rgb8();
        assert_eq!(a.dimensions(), (96, 64));
        let worst = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap();
        assert!(worst <= 1, "frame {i}: cpu and wgpu differ by {worst}");
    }
    // And through the encoder too: a video with the same frame count.
    let video = c.path("tiny-x4.mkv");
    run_ok(&[p(&input), "-o", p(&video), "--backend", "cpu"]);
    assert_eq!(frame_times(&video).len(), 2);
}

#[test]
fn bad_inputs_exit_2_with_one_line_and_leave_nothing() {
    let c = Clip::new();
    let out = c.path("out.mkv");
    let args = |input: &Path| {
        upframe(&[
            p(input),
            "-o",
            p(&out),
            "--model",
            "bicubic",
            "--backend",
            "cpu",
        ])
    };

    expect_failure(&args(&c.path("missing.mp4")), 2, "no such file");

    let text = c.path("notes.mp4");
    std::fs::write(&text, "this is not a video at all").unwrap();
    expect_failure(&args(&text), 2, "not a video");

    let audio = c.path("audio.mka");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=0.2",
        "-c:a",
        "libopus",
        p(&audio),
    ]);
    expect_failure(&args(&audio), 2, "no video stream");

    let empty = c.path("empty.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=10",
        "-frames:v",
        "0",
        "-c:v",
        "libx264",
        p(&empty),
    ]);
    let result = args(&empty);
    assert_eq!(result.status.code(), Some(2), "{}", stderr(&result));

    let good = c.path("good.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=10:duration=0.2",
        "-c:v",
        "libx264",
        p(&good),
    ]);
    std::fs::write(&out, b"precious").unwrap();
    expect_failure(&args(&good), 2, "output exists");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    expect_failure(
        &upframe(&[
            p(&good),
            "-o",
            p(&good),
            "-y",
            "--model",
            "bicubic",
            "--backend",
            "cpu",
        ]),
        2,
        "overwrite the input",
    );
    expect_failure(
        &upframe(&[
            p(&good),
            "-o",
            p(&c.path("x.nosuchformat")),
            "--model",
            "bicubic",
        ]),
        2,
        "unknown video container",
    );
    let under_a_file = c.path("notes.mp4").join("out.mkv");
    let result = upframe(&[
        p(&good),
        "-o",
        p(&under_a_file),
        "--model",
        "bicubic",
        "--backend",
        "cpu",
    ]);
    assert_ne!(result.status.code(), Some(0));
    assert!(leftovers(c.dir.path()).is_empty());
}

#[test]
fn damaged_stream_finishes_with_a_warning() {
    let c = Clip::new();
    let input = c.path("damaged.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=24:duration=2",
        "-c:v",
        "libx264",
        "-g",
        "12",
        "-pix_fmt",
        "yuv420p",
        p(&input),
    ]);
    let mut bytes = std::fs::read(&input).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 3000] {
        *b = 0x5a;
    }
    std::fs::write(&input, bytes).unwrap();
    let output = c.path("out.mkv");
    let started = Instant::now();
    let out = upframe(&[
        p(&input),
        "-o",
        p(&output),
        "--model",
        "bicubic",
        "--backend",
        "cpu",
        "--scale",
        "2",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "it must never hang"
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let frames = frame_times(&output).len();
    assert!(frames > 24 && frames <= 48, "{frames} frames");
    assert!(stderr(&out).contains("damaged data"), "{}", stderr(&out));
}

#[test]
fn ctrl_c_exits_130_and_leaves_no_file() {
    let c = Clip::new();
    let input = c.path("long.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=24:duration=20",
        "-c:v",
        "libx264",
        p(&input),
    ]);
    let output = c.path("out.mkv");
    // The real model on the CPU: slow enough to be interrupted mid-way.
    let child = Command::new(env!("CARGO_BIN_EXE_upframe"))
        .args([p(&input), "-o", p(&output), "--backend", "cpu"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while leftovers(c.dir.path()).is_empty() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    send_ctrl_c(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(!output.exists());
    assert!(
        leftovers(c.dir.path()).is_empty(),
        "{:?}",
        leftovers(c.dir.path())
    );
}
