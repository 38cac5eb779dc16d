//! Duplicate frames, as a user meets them: a clip animated from a real photograph the way hand-drawn
//! animation is (holds on twos and threes, a pan, a zoom, small objects moving one pixel per
//! drawing over a still shot, a blink, a fade, cuts), encoded lossily with x264 so that held
//! frames are not bit-exact. The test knows which frames show the same drawing, and checks
//! upframe's report against it.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use burn::backend::{NdArray, Wgpu};
use image::{imageops, Rgb, RgbImage};
use serde_json::Value;
use upframe::dedup::cubecl_path::{self, DeviceCells};
use upframe::dedup::features::{self, Packed};
use upframe::dedup::{burn_path, wgsl::WgslCells, Deduplicator, Level, Look};
use upframe::upscale::Planar;

use common::{frame_times, p, run_ok, stderr, upframe, Clip};

const WIDTH: u32 = 256;
const HEIGHT: u32 = 176;

/// Frames of a clip, each with the id of the drawing it shows: equal ids, equal pictures.
struct Animation {
    frames: Vec<(RgbImage, u32)>,
    drawings: u32,
}

impl Animation {
    fn new() -> Self {
        Self {
            frames: Vec::new(),
            drawings: 0,
        }
    }

    /// A new drawing, held for `hold` frames. Returns its id.
    fn draw(&mut self, picture: RgbImage, hold: usize) -> u32 {
        let id = self.drawings;
        self.drawings += 1;
        self.repeat(picture, id, hold);
        id
    }

    /// An earlier drawing again.
    fn repeat(&mut self, picture: RgbImage, id: u32, hold: usize) {
        for _ in 0..hold {
            self.frames.push((picture.clone(), id));
        }
    }

    fn ids(&self) -> Vec<u32> {
        self.frames.iter().map(|(_, id)| *id).collect()
    }
}

fn photo() -> RgbImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/street.jpg");
    image::open(path).expect("samples/street.jpg").to_rgb8()
}

fn shot(photo: &RgbImage, x: u32, y: u32) -> RgbImage {
    imageops::crop_imm(photo, x, y, WIDTH, HEIGHT).to_image()
}

fn zoomed(photo: &RgbImage, x: u32, y: u32, zoom: f32) -> RgbImage {
    let (w, h) = (WIDTH as f32 / zoom, HEIGHT as f32 / zoom);
    let (cx, cy) = (
        x as f32 + WIDTH as f32 / 2.0,
        y as f32 + HEIGHT as f32 / 2.0,
    );
    let region = imageops::crop_imm(
        photo,
        (cx - w / 2.0).round() as u32,
        (cy - h / 2.0).round() as u32,
        w.round() as u32,
        h.round() as u32,
    )
    .to_image();
    imageops::resize(&region, WIDTH, HEIGHT, imageops::FilterType::Triangle)
}

fn square(
    picture: &RgbImage,
    x: u32,
    y: u32,
    size: u32,
    colour: impl Fn(Rgb<u8>) -> Rgb<u8>,
) -> RgbImage {
    let mut out = picture.clone();
    for dy in 0..size {
        for dx in 0..size {
            let p = *out.get_pixel(x + dx, y + dy);
            out.put_pixel(x + dx, y + dy, colour(p));
        }
    }
    out
}

fn faded(picture: &RgbImage, factor: f32) -> RgbImage {
    let mut out = picture.clone();
    for p in out.pixels_mut() {
        for c in &mut p.0 {
            *c = (*c as f32 * factor).round() as u8;
        }
    }
    out
}

/// The whole test animation: 121 frames at 24 fps, 256x176.
fn animation() -> Animation {
    let photo = photo();
    let mut a = Animation::new();
    let still = shot(&photo, 40, 48);
    // A small high-contrast object moving one pixel per drawing, on twos.
    let mut last = still.clone();
    let mut last_id = 0;
    for k in 0..12 {
        last = square(&still, 60 + k, 80, 8, |_| Rgb([250, 30, 30]));
        last_id = a.draw(last.clone(), 2);
    }
    // A faint one (+24 levels), the case global hashes miss.
    for k in 0..6 {
        let frame = square(&still, 150 + k, 120, 8, |Rgb([r, g, b])| {
            Rgb([
                r.saturating_add(24),
                g.saturating_add(24),
                b.saturating_add(24),
            ])
        });
        a.draw(frame, 2);
    }
    // A pan on threes, then a zoom on twos.
    for k in 0..8 {
        a.draw(shot(&photo, 40 + 2 * k, 48), 3);
    }
    for k in 0..8 {
        a.draw(zoomed(&photo, 60, 48, 1.0 + 0.02 * k as f32), 2);
    }
    // A blink: the open eyes come back, the same drawing as before.
    let face = shot(&photo, 300, 60);
    let closed = square(&face, 120, 70, 10, |_| Rgb([20, 20, 20]));
    let open_id = a.draw(face.clone(), 3);
    let closed_id = a.draw(closed.clone(), 2);
    a.repeat(face.clone(), open_id, 3);
    a.repeat(closed, closed_id, 2);
    a.repeat(face.clone(), open_id, 3);
    // A fade to black on twos.
    for k in 1..=8 {
        a.draw(faded(&face, 1.0 - k as f32 / 9.0), 2);
    }
    // A cut to a held shot, a cut back to the first shot's last drawing.
    a.draw(shot(&photo, 200, 20), 6);
    a.repeat(last, last_id, 4);
    // A pan on ones: every frame differs.
    for k in 0..6 {
        a.draw(shot(&photo, 100 + k, 30), 1);
    }
    a
}

/// Encodes the frames with x264 (lossy, as real clips are) into `path`.
fn encode(animation: &Animation, path: &Path) {
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"])
        .args(["-s", &format!("{WIDTH}x{HEIGHT}"), "-r", "24", "-i", "-"])
        .args([
            "-c:v", "libx264", "-crf", "20", "-g", "24", "-pix_fmt", "yuv420p",
        ])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("the ffmpeg CLI (scripts/install-deps.sh installs it)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        for (frame, _) in &animation.frames {
            stdin
                .write_all(frame.as_raw())
                .expect("write a frame to ffmpeg");
        }
    }
    assert!(child.wait().expect("ffmpeg").success());
}

fn report(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("report")).expect("report JSON")
}

fn sources(report: &Value) -> Vec<u64> {
    report["frames"]
        .as_array()
        .expect("frames array")
        .iter()
        .map(|f| f["source"].as_u64().expect("source"))
        .collect()
}

/// Frames merged with a frame of another drawing, and the share of adjacent repeats found.
fn score(ids: &[u32], sources: &[u64]) -> (Vec<(usize, u64)>, f64) {
    assert_eq!(ids.len(), sources.len(), "one source per frame");
    let false_merges: Vec<_> = sources
        .iter()
        .enumerate()
        .filter(|&(i, &s)| ids[s as usize] != ids[i])
        .map(|(i, &s)| (i, s))
        .collect();
    let repeats: Vec<usize> = (1..ids.len()).filter(|&i| ids[i] == ids[i - 1]).collect();
    let found = repeats.iter().filter(|&&i| sources[i] != i as u64).count();
    (false_merges, found as f64 / repeats.len() as f64)
}

#[test]
fn held_drawings_are_found_and_nothing_else_is_merged_on_cpu_and_wgpu() {
    let dir = Clip::new();
    let clip = dir.path("animation.mkv");
    let a = animation();
    encode(&a, &clip);
    let ids = a.ids();
    let mut mappings = Vec::new();
    for backend in ["cpu", "wgpu"] {
        let (out, json) = (
            dir.path(&format!("{backend}.mkv")),
            dir.path(&format!("{backend}.json")),
        );
        let log = stderr(&run_ok(&[
            p(&clip),
            "-o",
            p(&out),
            "--model",
            "bicubic",
            "--scale",
            "2",
            "--backend",
            backend,
            "--report",
            p(&json),
        ]));
        let report = report(&json);
        let sources = sources(&report);
        let (false_merges, recall) = score(&ids, &sources);
        println!("{backend}: recall {recall:.3}, sources {sources:?}");
        assert!(
            false_merges.is_empty(),
            "{backend}: frames merged with another drawing (frame, source): {false_merges:?}"
        );
        assert!(
            recall >= 0.95,
            "{backend}: found {recall:.3} of the held frames"
        );
        let unique = sources
            .iter()
            .enumerate()
            .filter(|&(i, &s)| s == i as u64)
            .count() as u64;
        let totals = &report["totals"];
        assert_eq!(totals["unique"].as_u64(), Some(unique), "{backend}");
        assert_eq!(
            totals["model_runs"].as_u64(),
            Some(unique),
            "{backend}: the model runs once per unique frame"
        );
        let line = format!(
            "Total: {} | Unique: {unique} | Duplicates: {} (",
            ids.len(),
            ids.len() as u64 - unique
        );
        assert!(
            log.contains(&line),
            "{backend}: summary missing {line:?} in {log}"
        );
        mappings.push(sources);
    }
    assert_eq!(
        mappings[0], mappings[1],
        "cpu and wgpu took different decisions"
    );
}

fn planar(picture: &RgbImage) -> Planar {
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    let mut out = Planar::new(3, w, h);
    for (i, p) in picture.pixels().enumerate() {
        for c in 0..3 {
            out.data[c * w * h + i] = f32::from(p.0[c]) / 255.0;
        }
    }
    out
}

#[test]
fn wgsl_shaders_cubecl_kernels_burn_ops_and_the_definition_give_identical_features() {
    let Some((device, info)) = upframe::backend::wgpu_devices().into_iter().next() else {
        eprintln!("skipped: no wgpu adapter (install mesa-vulkan-drivers for a software one)");
        return;
    };
    let setup = upframe::backend::wgpu_setup(&device).expect("the first use of this device");
    let mut shaders = WgslCells::new(&setup, 1, 0);
    let client = <cubecl::wgpu::WgpuRuntime as cubecl::Runtime>::client(&device);
    let photo = photo();
    let mut pictures: Vec<RgbImage> = vec![
        photo.clone(),
        shot(&photo, 40, 48),
        imageops::crop_imm(&photo, 3, 5, 321, 241).to_image(),
        imageops::crop_imm(&photo, 0, 0, 7, 3).to_image(),
    ];
    pictures.push(square(&pictures[1], 60, 80, 8, |_| Rgb([250, 30, 30])));
    for picture in &pictures {
        let packed = Packed::from_planar(&planar(picture));
        let expected = features::reference(&packed);
        let size = (picture.width(), picture.height());
        assert_eq!(
            shaders.features(&packed),
            expected,
            "WGSL on {}, {size:?}",
            info.name
        );
        assert_eq!(
            burn_path::features::<Wgpu>(&packed, &device),
            expected,
            "burn wgpu, {size:?}"
        );
        assert_eq!(
            cubecl_path::features(&client, &packed),
            expected,
            "CubeCL kernels on {}, {size:?}",
            info.name
        );
        assert_eq!(
            burn_path::features::<NdArray>(&packed, &Default::default()),
            expected,
            "burn cpu, {size:?}"
        );
        if size.0 >= 32 && size.1 >= 16 {
            assert_ne!(expected.hash, 0, "{size:?}: a photograph has a hash");
        }
    }
}

/// The test animation with a little noise that differs from frame to frame (held drawings are
/// then not bit-exact, as after a lossy encode), and two frames of another size in the middle.
fn noisy_frames() -> Vec<RgbImage> {
    let mut frames: Vec<RgbImage> = animation().frames.into_iter().map(|(f, _)| f).collect();
    for (i, frame) in frames.iter_mut().enumerate() {
        for (x, y, p) in frame.enumerate_pixels_mut() {
            let noise = ((x * 7 + y * 13 + i as u32 * 3) % 5) as i32 - 2;
            for c in &mut p.0 {
                *c = (i32::from(*c) + noise).clamp(0, 255) as u8;
            }
        }
    }
    let other = imageops::crop_imm(&frames[40], 0, 0, 200, 120).to_image();
    frames.splice(60..60, [other.clone(), other]);
    frames
}

fn sorted(mut look: Look) -> Look {
    look.changes.sort_by_key(|&(index, _)| index);
    look
}

#[test]
fn comparisons_on_the_device_match_the_definition_frame_by_frame() {
    let Some((device, info)) = upframe::backend::wgpu_devices().into_iter().next() else {
        eprintln!("skipped: no wgpu adapter (install mesa-vulkan-drivers for a software one)");
        return;
    };
    let setup = upframe::backend::wgpu_setup(&device).expect("the first use of this device");
    let thresholds = Level::Normal.thresholds().expect("normal has thresholds");
    let (window, mean) = (4, thresholds.mean_limit());
    let mut shaders = WgslCells::new(&setup, window, mean);
    let client = <cubecl::wgpu::WgpuRuntime as cubecl::Runtime>::client(&device);
    let mut kernels = DeviceCells::new(client, window, mean);
    let mut decider = Deduplicator::new(thresholds, window);
    let mut kept: HashMap<u64, features::Features> = HashMap::new();
    let mut duplicates = 0;
    for (i, frame) in noisy_frames().iter().enumerate() {
        let index = i as u64;
        let packed = Packed::from_planar(&planar(frame));
        let new = features::reference(&packed);
        let size = (new.pairs_per_row, new.cell_rows);
        // A new frame size forgets the kept frames: none of them can match.
        kept.retain(|_, k| (k.pairs_per_row, k.cell_rows) == size);
        let expected = sorted(Look {
            hash: new.hash,
            changes: kept
                .iter()
                .map(|(&k, f)| (k, features::change(f, &new, mean)))
                .collect(),
        });
        assert_eq!(
            sorted(shaders.look(&packed)),
            expected,
            "WGSL on {}, frame {i}",
            info.name
        );
        assert_eq!(
            sorted(kernels.look(&packed)),
            expected,
            "CubeCL on {}, frame {i}",
            info.name
        );
        let decision = decider.decide(index, &expected);
        shaders.settle(index, &decision);
        kernels.settle(index, &decision);
        for released in &decision.released {
            kept.remove(released);
        }
        if decision.keeps(index) {
            kept.insert(index, new);
        } else {
            duplicates += 1;
        }
    }
    assert!(
        duplicates > 40,
        "only {duplicates} duplicates: the test compares too little"
    );
}

/// The first 24 frames: the moving object on twos.
fn short_clip(dir: &Clip) -> (PathBuf, Vec<u32>) {
    let mut a = animation();
    a.frames.truncate(24);
    let clip = dir.path("short.mkv");
    encode(&a, &clip);
    (clip, a.ids())
}

#[test]
fn duplicates_in_a_frames_folder_are_links_to_their_source() {
    use std::os::unix::fs::MetadataExt;
    let dir = Clip::new();
    let (clip, ids) = short_clip(&dir);
    let (frames, json) = (dir.path("frames"), dir.path("frames.json"));
    run_ok(&[
        p(&clip),
        "-o",
        p(&frames),
        "--frames",
        "png",
        "--model",
        "bicubic",
        "--scale",
        "2",
        "--backend",
        "cpu",
        "--report",
        p(&json),
    ]);
    let sources = sources(&report(&json));
    assert_eq!(score(&ids, &sources).0, vec![], "no false merges");
    let file = |i: u64| frames.join(format!("{i:06}.png"));
    let mut links = 0;
    for (i, &s) in sources.iter().enumerate() {
        let (a, b) = (
            std::fs::metadata(file(i as u64)).unwrap(),
            std::fs::metadata(file(s)).unwrap(),
        );
        if s != i as u64 {
            assert_eq!(a.ino(), b.ino(), "frame {i} is a link to frame {s}");
            links += 1;
        }
    }
    assert_eq!(links, 12, "the twelve held frames are links");
    let names: Vec<_> = std::fs::read_dir(&frames)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        24,
        "one file per frame, no temporary left: {names:?}"
    );
}

/// A folder of pictures (frames extracted from a video, say): a picture equal to an earlier one
/// becomes a hard link to that one's output; a small moved square, a pan and alpha are upscaled.
#[test]
fn duplicate_pictures_in_a_folder_are_links_to_their_source() {
    use std::os::unix::fs::MetadataExt;
    let dir = Clip::new();
    let input = dir.path("in");
    std::fs::create_dir_all(&input).unwrap();
    let photo = photo();
    let base = shot(&photo, 40, 48);
    let picture = |name: &str, image: &RgbImage| image.save(input.join(name)).unwrap();
    picture("0001.png", &base);
    picture("0002.png", &base);
    picture(
        "0003.png",
        &square(&base, 60, 80, 8, |_| Rgb([250, 30, 30])),
    );
    picture("0004.png", &shot(&photo, 44, 48));
    picture("0005.png", &shot(&photo, 44, 48));
    image::DynamicImage::ImageRgb8(shot(&photo, 44, 48))
        .to_rgba8()
        .save(input.join("0006.png"))
        .unwrap();
    let run = |out: &str, dedup: &str| {
        let (folder, json) = (dir.path(out), dir.path(&format!("{out}.json")));
        let args = [
            p(&input),
            "-o",
            p(&folder),
            "--model",
            "bicubic",
            "--backend",
            "cpu",
            "--dedup",
            dedup,
            "--report",
            p(&json),
        ];
        let said = stderr(&run_ok(&args));
        (folder, report(&json), said)
    };
    let (folder, json, said) = run("out", "normal");
    assert!(
        said.contains("Total: 6 | Unique: 4 | Duplicates: 2 (33.3%)"),
        "{said}"
    );
    assert_eq!(json["totals"]["model_runs"], 4, "{json}");
    assert_eq!(json["totals"]["duplicates"], 2, "{json}");
    let inode = |folder: &Path, n: u32| {
        std::fs::metadata(folder.join(format!("{n:04}.png")))
            .unwrap()
            .ino()
    };
    assert_eq!(inode(&folder, 2), inode(&folder, 1), "a held picture");
    assert_eq!(inode(&folder, 5), inode(&folder, 4), "a held picture");
    for n in [3, 4, 6] {
        assert_ne!(
            inode(&folder, n),
            inode(&folder, n - 1),
            "picture {n} differs"
        );
    }
    assert_eq!(
        std::fs::read_dir(&folder).unwrap().count(),
        6,
        "no temporary left"
    );

    let (folder, json, _) = run("off", "off");
    assert_eq!(json["totals"]["model_runs"], 6, "{json}");
    assert_ne!(inode(&folder, 2), inode(&folder, 1));
}

#[test]
fn a_video_keeps_every_frame_and_timestamp_and_dedup_off_upscales_each() {
    let dir = Clip::new();
    let (clip, _) = short_clip(&dir);
    let expected = frame_times(&clip);
    assert_eq!(expected.len(), 24);
    for (name, level, unique) in [("on.mp4", "normal", 12), ("off.mp4", "off", 24)] {
        let (out, json) = (dir.path(name), dir.path(&format!("{name}.json")));
        run_ok(&[
            p(&clip),
            "-o",
            p(&out),
            "--model",
            "bicubic",
            "--scale",
            "2",
            "--backend",
            "cpu",
            "--dedup",
            level,
            "--report",
            p(&json),
        ]);
        assert_eq!(
            frame_times(&out),
            expected,
            "--dedup {level}: every frame at its own time"
        );
        let totals = &report(&json)["totals"];
        assert_eq!(totals["unique"].as_u64(), Some(unique), "--dedup {level}");
        assert_eq!(
            totals["model_runs"].as_u64(),
            Some(unique),
            "--dedup {level}"
        );
    }
}

#[test]
fn thresholds_out_of_range_are_refused_with_one_line() {
    let out = upframe(&["in.mkv", "-o", "out.mkv", "--dedup-fraction", "2"]);
    common::expect_failure(&out, 2, "--dedup-fraction");
    let out = upframe(&["in.mkv", "-o", "out.mkv", "--dedup-peak", "300"]);
    common::expect_failure(&out, 2, "--dedup-peak");
}
