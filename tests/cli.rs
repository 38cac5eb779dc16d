//! The binary as a user meets it: outputs of the right size, depth and colour type, and for each
//! kind of bad input a non-zero exit, one line on stderr, and no file left behind.

use std::path::Path;

use image::{GenericImageView, ImageBuffer, Rgba};

mod common;
use common::{expect_failure, p, send_ctrl_c, stderr, upframe};

/// Nothing but the listed files in `dir`: no output, no temporary left over.
fn assert_only(dir: &Path, expected: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);
}

fn write_rgba(path: &Path, w: u32, h: u32) {
    ImageBuffer::from_fn(w, h, |x, y| {
        Rgba([(x * 30) as u8, (y * 30) as u8, 128, (x * 20 + y) as u8])
    })
    .save(path)
    .unwrap();
}

#[test]
fn missing_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = upframe(&[
        "nope.png",
        "-o",
        p(&dir.path().join("o.png")),
        "--backend",
        "cpu",
    ]);
    expect_failure(&out, 2, "nope.png: no such file");
    assert_only(dir.path(), &[]);
}

#[test]
fn corrupt_image_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("broken.png");
    std::fs::write(&input, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let out = upframe(&[
        p(&input),
        "-o",
        p(&dir.path().join("o.png")),
        "--backend",
        "cpu",
        "--model",
        "bicubic",
    ]);
    expect_failure(&out, 2, "cannot read image");
    assert_only(dir.path(), &["broken.png"]);
}

#[test]
fn unknown_model_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write_rgba(&input, 4, 4);
    let out = upframe(&[
        p(&input),
        "-o",
        p(&dir.path().join("o.png")),
        "--model",
        "superres9000",
    ]);
    expect_failure(&out, 2, "unknown model 'superres9000'");
    assert_only(dir.path(), &["in.png"]);
}

#[test]
fn unsupported_layer_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write_rgba(&input, 4, 4);
    let param = dir.path().join("odd.param");
    std::fs::write(
        &param,
        "7767517\n2 2\nInput data 0 1 data\nDeconvolution up 1 1 data output 0=3\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("odd.bin"), b"").unwrap();
    let out = upframe(&[
        p(&input),
        "-o",
        p(&dir.path().join("o.png")),
        "--model",
        p(&param),
        "--backend",
        "cpu",
    ]);
    expect_failure(
        &out,
        2,
        "odd.param:4: layer up has unsupported type Deconvolution",
    );
    assert_only(dir.path(), &["in.png", "odd.bin", "odd.param"]);
}

#[test]
fn existing_output_is_refused_without_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    let output = dir.path().join("o.png");
    write_rgba(&input, 4, 4);
    std::fs::write(&output, b"keep me").unwrap();
    let out = upframe(&[
        p(&input),
        "-o",
        p(&output),
        "--backend",
        "cpu",
        "--model",
        "bicubic",
    ]);
    expect_failure(&out, 2, "output exists");
    assert_eq!(std::fs::read(&output).unwrap(), b"keep me");
    let out = upframe(&[
        p(&input),
        "-o",
        p(&output),
        "--backend",
        "cpu",
        "--model",
        "bicubic",
        "-y",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(image::open(&output).unwrap().dimensions(), (16, 16));
}

#[test]
fn output_equal_to_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write_rgba(&input, 4, 4);
    let before = std::fs::read(&input).unwrap();
    let out = upframe(&[
        p(&input),
        "-o",
        p(&input),
        "-y",
        "--backend",
        "cpu",
        "--model",
        "bicubic",
    ]);
    expect_failure(&out, 2, "overwrite the input");
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

#[test]
fn unwritable_output_folder_exits_1_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write_rgba(&input, 4, 4);
    // A file where a folder should be: unwritable even for root, unlike a read-only folder.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let out = upframe(&[
        p(&input),
        "-o",
        p(&blocker.join("o.png")),
        "--backend",
        "cpu",
        "--model",
        "bicubic",
    ]);
    expect_failure(&out, 1, "blocker");
    assert_only(dir.path(), &["blocker", "in.png"]);
}

#[test]
fn rgba_keeps_its_alpha_and_sixteen_bit_its_depth() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write_rgba(&input, 6, 5);
    let output = dir.path().join("o.png");
    let out = upframe(&[
        p(&input),
        "-o",
        p(&output),
        "--backend",
        "cpu",
        "--model",
        "bicubic",
        "--scale",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let img = image::open(&output).unwrap();
    assert_eq!(img.color(), image::ColorType::Rgba8);
    assert_eq!(img.dimensions(), (12, 10));
    // Alpha follows the input: the top-left corner is nearly transparent, the bottom-right is not.
    let rgba = img.to_rgba8();
    assert!(rgba.get_pixel(0, 0).0[3] < 10 && rgba.get_pixel(11, 9).0[3] > 80);

    let input16 = dir.path().join("gray16.png");
    ImageBuffer::from_fn(5, 3, |x, y| image::Luma([(x * 10000 + y * 300) as u16]))
        .save(&input16)
        .unwrap();
    let output16 = dir.path().join("gray16-x2.png");
    let out = upframe(&[
        p(&input16),
        "-o",
        p(&output16),
        "--backend",
        "cpu",
        "--model",
        "nearest",
        "--scale",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let img = image::open(&output16).unwrap();
    assert_eq!(img.color(), image::ColorType::L16);
    assert_eq!(
        img.as_luma16().unwrap().get_pixel(9, 5).0[0],
        4 * 10000 + 2 * 300
    );
}

#[test]
fn a_folder_in_gives_a_folder_out() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(input.join("nested")).unwrap();
    write_rgba(&input.join("a.png"), 4, 4);
    image::RgbImage::from_pixel(3, 2, image::Rgb([10, 200, 30]))
        .save(input.join("nested/b.jpg"))
        .unwrap();
    std::fs::write(input.join("readme.txt"), b"not an image").unwrap();
    let output = dir.path().join("out");
    let out = upframe(&[
        p(&input),
        "-o",
        p(&output),
        "--backend",
        "cpu",
        "--model",
        "bicubic",
        "--format",
        "webp",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        image::open(output.join("a.webp")).unwrap().dimensions(),
        (16, 16)
    );
    assert_eq!(
        image::open(output.join("nested/b.webp"))
            .unwrap()
            .dimensions(),
        (12, 8)
    );
}

#[test]
fn the_embedded_model_runs_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jpg");
    image::RgbImage::from_fn(12, 10, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 25) as u8, 90])
    })
    .save(&input)
    .unwrap();
    let output = dir.path().join("o.png");
    let out = upframe(&[p(&input), "-o", p(&output), "--backend", "cpu", "-v"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(image::open(&output).unwrap().dimensions(), (48, 40));
    let err = stderr(&out);
    assert!(
        err.contains("backend cpu") && err.contains("realesr-animevideov3"),
        "{err}"
    );
}

#[test]
fn help_models_and_devices_read_well() {
    let help = String::from_utf8(upframe(&["--help"]).stdout).unwrap();
    for needle in ["--backend", "--tile", "--precision", "Exit codes", "130"] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
    let models = upframe(&["models"]);
    assert!(models.status.success());
    assert!(String::from_utf8_lossy(&models.stdout).contains("realesr-animevideov3"));
    let devices = upframe(&["devices"]);
    assert!(devices.status.success());
    let text = String::from_utf8_lossy(&devices.stdout);
    assert!(
        text.contains("cuda:") && text.contains("wgpu:") && text.contains("cpu:"),
        "{text}"
    );
}

#[test]
fn a_bad_option_is_a_usage_error() {
    let out = upframe(&["in.png", "-o", "o.png", "--backend", "tpu"]);
    assert_eq!(out.status.code(), Some(2));
    let out = upframe(&["in.png"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bench_stops_at_the_first_ctrl_c() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    // Thousands of runs on the CPU: minutes, unless the interruption ends it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_upframe"))
        .args(["bench", "--backend", "cpu", "-n", "100000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    send_ctrl_c(&child);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("bench kept running 20 s after one Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
}
