//! The same model on every backend gives the same image, tiles leave no seams, and fp16 is really
//! computed in fp16. The CPU (ndarray, fp32) is the reference; wgpu runs on whatever adapter exists
//! (Mesa's lavapipe in CI); CUDA runs where an NVIDIA GPU answers and says why it skips elsewhere.

use std::path::Path;

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::{Cuda, NdArray, Wgpu};
use burn::tensor::backend::Backend;

use upframe::backend::{self, BackendChoice, BackendKind, DeviceInfo, Selected};
use upframe::cli::PrecisionArg;
use upframe::kernels::Kernels;
use upframe::model::forward::Precision;
use upframe::model::{self, Model};
use upframe::upscale::{MemoryBudget, Planar, TileSize, Upscaler, EDGE_PAD};

const BUDGET: MemoryBudget = MemoryBudget {
    bytes: 1 << 30,
    max_binding: None,
};

fn photo() -> Planar {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photo-96x64.png");
    upframe::images::read(&path).expect("test photo").rgb
}

fn crop(p: &Planar, w: usize, h: usize) -> Planar {
    let mut out = Planar::new(3, w, h);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                out.data[(c * h + y) * w + x] = p.data[(c * p.height + y) * p.width + x];
            }
        }
    }
    out
}

fn upscale<B: Backend>(
    device: &B::Device,
    model: &Model,
    precision: Precision,
    tile: TileSize,
    image: &Planar,
) -> Planar {
    let mut up = Upscaler::<B>::new(model, precision, device, tile, BUDGET, Kernels::Generic);
    up.upscale(image, &|| false).expect("upscale")
}

/// Largest and mean absolute difference, in 8-bit steps, after the clamp the output goes through.
fn diff(a: &Planar, b: &Planar) -> (f32, f32) {
    assert_eq!(
        (a.width, a.height, a.channels),
        (b.width, b.height, b.channels)
    );
    let mut max = 0f32;
    let mut sum = 0f64;
    for (x, y) in a.data.iter().zip(&b.data) {
        let d = (x.clamp(0.0, 1.0) - y.clamp(0.0, 1.0)).abs() * 255.0;
        max = max.max(d);
        sum += d as f64;
    }
    (max, (sum / a.data.len() as f64) as f32)
}

fn selected(kind: BackendKind) -> Option<Selected> {
    match backend::select(BackendChoice::Only(kind), None) {
        Ok((s, _)) => Some(s),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

fn wgpu() -> Option<(burn::backend::wgpu::WgpuDevice, DeviceInfo)> {
    match selected(BackendKind::Wgpu)? {
        Selected::Wgpu(d, i) => Some((d, i)),
        _ => unreachable!(),
    }
}

#[test]
fn cpu_and_wgpu_agree_in_fp32() {
    let Some((device, info)) = wgpu() else { return };
    eprintln!("wgpu device: {}", info.name);
    let model = model::load(model::DEFAULT_MODEL, None).unwrap();
    let image = crop(&photo(), 32, 24);
    let cpu = upscale::<NdArray>(
        &NdArrayDevice::Cpu,
        &model,
        Precision::F32,
        TileSize::Auto,
        &image,
    );
    let gpu = upscale::<Wgpu>(&device, &model, Precision::F32, TileSize::Auto, &image);
    let (max, mean) = diff(&cpu, &gpu);
    eprintln!("cpu vs wgpu fp32: max {max:.4}, mean {mean:.5} (8-bit steps)");
    // Different summation orders only: far under one 8-bit step.
    assert!(max < 0.05 && mean < 0.005, "max {max}, mean {mean}");
}

#[test]
fn wgpu_fp16_is_in_effect_and_close_to_fp32() {
    let Some((device, info)) = wgpu() else { return };
    let precision = upframe::resolve_precision::<Wgpu>(PrecisionArg::Auto, &info, &device).unwrap();
    if precision != Precision::F16 {
        eprintln!("skipped: {} does not store fp16", info.name);
        return;
    }
    let model = model::load(model::DEFAULT_MODEL, None).unwrap();
    let image = crop(&photo(), 32, 24);
    let full = upscale::<NdArray>(
        &NdArrayDevice::Cpu,
        &model,
        Precision::F32,
        TileSize::Auto,
        &image,
    );
    let half = upscale::<Wgpu>(&device, &model, Precision::F16, TileSize::Auto, &image);
    let (max, mean) = diff(&full, &half);
    eprintln!("cpu fp32 vs wgpu fp16: max {max:.3}, mean {mean:.4} (8-bit steps)");
    // A result identical to fp32 would mean the cast did nothing.
    assert!(
        mean > 1e-4,
        "fp16 output equals fp32: fp16 is not in effect"
    );
    assert!(max < 4.0 && mean < 0.5, "max {max}, mean {mean}");
}

/// Each node of the embedded model run alone on `B` from the CPU's own inputs, against the CPU's
/// output for that node: relative L2 error per node, so a wrong kernel is named, not just noticed.
fn node_errors<B: Backend>(device: &B::Device, precision: Precision) -> Vec<(String, f64)> {
    use burn::tensor::{Tensor, TensorData};
    use upframe::model::forward::Network;
    let model = model::load(model::DEFAULT_MODEL, None).unwrap();
    let image = crop(&photo(), 24, 16);
    let cpu = Network::<NdArray>::new(model.graph.clone(), Precision::F32, &NdArrayDevice::Cpu);
    let gpu = Network::<B>::new(model.graph.clone(), precision, device);
    let graph = &model.graph;
    let mut blobs: Vec<Option<TensorData>> = vec![None; graph.blob_count];
    blobs[graph.input] = Some(TensorData::new(
        image.data.clone(),
        [1, 3, image.height, image.width],
    ));
    let mut errors = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let on_cpu: Vec<_> = node
            .inputs
            .iter()
            .map(|&b| {
                Tensor::<NdArray, 4>::from_data(blobs[b].clone().unwrap(), &NdArrayDevice::Cpu)
            })
            .collect();
        let on_gpu: Vec<_> = node
            .inputs
            .iter()
            .map(|&b| Tensor::<B, 4>::from_data(blobs[b].clone().unwrap(), device))
            .collect();
        let want = cpu.run_node(i, on_cpu).into_data();
        let got = gpu.run_node(i, on_gpu).into_data();
        let (w, g) = (want.to_vec::<f32>().unwrap(), got.to_vec::<f32>().unwrap());
        let num: f64 = w
            .iter()
            .zip(&g)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let den: f64 = w.iter().map(|a| (*a as f64).powi(2)).sum();
        errors.push((
            format!("{} ({})", node.name, node.line),
            (num / den.max(1e-30)).sqrt(),
        ));
        blobs[node.output] = Some(want);
    }
    errors
}

fn assert_nodes_close<B: Backend>(device: &B::Device, precision: Precision, limit: f64) {
    let errors = node_errors::<B>(device, precision);
    let worst = errors
        .iter()
        .cloned()
        .fold(("".to_string(), 0.0), |a, b| if b.1 > a.1 { b } else { a });
    eprintln!(
        "{precision}: worst node {} relative error {:.2e}",
        worst.0, worst.1
    );
    for (name, e) in &errors {
        eprintln!("  {name}: {e:.2e}");
    }
    let bad: Vec<_> = errors.iter().filter(|(_, e)| *e > limit).collect();
    assert!(bad.is_empty(), "{precision}: nodes over {limit:e}: {bad:?}");
}

#[test]
fn wgpu_each_node_matches_cpu() {
    let Some((device, info)) = wgpu() else { return };
    assert_nodes_close::<Wgpu>(&device, Precision::F32, 1e-4);
    if upframe::resolve_precision::<Wgpu>(PrecisionArg::Auto, &info, &device).unwrap()
        == Precision::F16
    {
        // fp16 inputs and outputs round at about 5e-4 each; a convolution whose terms largely
        // cancel shows several times that (6e-3 seen on lavapipe). A wrong kernel shows 1e-1 and up.
        assert_nodes_close::<Wgpu>(&device, Precision::F16, 2e-2);
    }
}

#[test]
fn cuda_each_node_matches_cpu() {
    let Some(Selected::Cuda(device, _)) = selected(BackendKind::Cuda) else {
        return;
    };
    // fp32 convolutions may run on tf32 tensor cores: about 2e-4 per node seen on an H200.
    assert_nodes_close::<Cuda>(&device, Precision::F32, 2e-3);
}

#[test]
fn cuda_matches_cpu() {
    let Some(Selected::Cuda(device, info)) = selected(BackendKind::Cuda) else {
        return;
    };
    eprintln!("cuda device: {}", info.name);
    let model = model::load(model::DEFAULT_MODEL, None).unwrap();
    let image = crop(&photo(), 64, 48);
    let cpu = upscale::<NdArray>(
        &NdArrayDevice::Cpu,
        &model,
        Precision::F32,
        TileSize::Auto,
        &image,
    );
    let f32_out = upscale::<Cuda>(&device, &model, Precision::F32, TileSize::Auto, &image);
    let (max, mean) = diff(&cpu, &f32_out);
    eprintln!("cpu vs cuda fp32: max {max:.4}, mean {mean:.5}");
    // tf32 tensor cores may be used for fp32 convolutions: allow about one 8-bit step.
    assert!(max < 1.5 && mean < 0.1, "fp32: max {max}, mean {mean}");
    // burn 0.21's fp16 convolutions on CUDA are wrong (upframe::CUDA_FP16_BROKEN): refused.
    assert!(upframe::resolve_precision::<Cuda>(PrecisionArg::Fp16, &info, &device).is_err());
    assert_eq!(
        upframe::resolve_precision::<Cuda>(PrecisionArg::Auto, &info, &device).unwrap(),
        Precision::F32
    );
}

#[test]
fn tiles_leave_no_seams_on_a_real_photo() {
    let model = model::load(model::DEFAULT_MODEL, None).unwrap();
    let image = photo();
    let dev = NdArrayDevice::Cpu;
    let whole = upscale::<NdArray>(&dev, &model, Precision::F32, TileSize::Fixed(4096), &image);
    let mut tiled = Upscaler::<NdArray>::new(
        &model,
        Precision::F32,
        &dev,
        TileSize::Fixed(32),
        BUDGET,
        Kernels::Generic,
    );
    let out = tiled.upscale(&image, &|| false).unwrap();
    // 96x64 plus the mirrored edge on each side, in 32-pixel tiles.
    let (pw, ph) = (96 + 2 * EDGE_PAD, 64 + 2 * EDGE_PAD);
    assert_eq!(tiled.forwards as usize, pw.div_ceil(32) * ph.div_ceil(32));
    let (max, _) = diff(&whole, &out);
    eprintln!("tiled vs whole: max {max:.5} (8-bit steps)");
    assert!(max <= 1.0, "tiled output differs by {max}/255");
}

#[test]
fn every_scale_gives_its_size() {
    let image = crop(&photo(), 20, 12);
    for (name, scale) in [
        (model::DEFAULT_MODEL, 2),
        (model::DEFAULT_MODEL, 3),
        ("bicubic", 3),
        ("lanczos", 2),
        ("nearest", 5),
    ] {
        let model = model::load(name, Some(scale)).unwrap();
        let out = upscale::<NdArray>(
            &NdArrayDevice::Cpu,
            &model,
            Precision::F32,
            TileSize::Auto,
            &image,
        );
        assert_eq!(
            (out.width, out.height),
            (20 * scale, 12 * scale),
            "{name} x{scale}"
        );
    }
}

/// The RRDBNet models of ../shared (Concat of up to five inputs, weighted Eltwise, two nearest
/// upsamplings) run and give a picture close to the input; skipped where ../shared is absent.
#[test]
fn rrdb_models_from_shared_run_when_present() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models");
    let path = dir.join("realesrgan-x4plus-anime.param");
    if !path.exists() {
        eprintln!("skipped: {} is absent", path.display());
        return;
    }
    let model = model::load(path.to_str().unwrap(), None).unwrap();
    let image = crop(&photo(), 24, 16);
    let out = upscale::<NdArray>(
        &NdArrayDevice::Cpu,
        &model,
        Precision::F32,
        TileSize::Auto,
        &image,
    );
    let bicubic = model::load("bicubic", Some(4)).unwrap();
    let plain = upscale::<NdArray>(
        &NdArrayDevice::Cpu,
        &bicubic,
        Precision::F32,
        TileSize::Auto,
        &image,
    );
    let (_, mean) = diff(&out, &plain);
    eprintln!("x4plus-anime vs bicubic: mean {mean:.2} (8-bit steps)");
    // A sharpened version of the same picture, not noise (a scrambled graph gave a mean of 100+).
    assert!(mean < 12.0, "mean difference from bicubic {mean}");
}

/// Which of burn's CUDA convolution kernels compute f16 correctly: a 64→64 3×3 convolution on
/// random data, each kernel called directly (outside the autotuner) and through burn's own
/// autotuned `conv2d`, against the CPU in f32. The direct kernel must be right; the others are
/// printed, for choosing the fp16 path on CUDA.
#[test]
fn cuda_fp16_convolution_kernels() {
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Distribution, FloatDType, Tensor, TensorPrimitive};
    use burn_cubecl::kernel::conv::{conv_forward, ConvStrategy};
    type Raw = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;

    let Some(Selected::Cuda(device, _)) = selected(BackendKind::Cuda) else {
        return;
    };
    let cpu = NdArrayDevice::Cpu;
    let x = Tensor::<NdArray, 4>::random([1, 64, 40, 56], Distribution::Uniform(-1.0, 1.0), &cpu);
    let w = Tensor::<NdArray, 4>::random([64, 64, 3, 3], Distribution::Uniform(-0.06, 0.06), &cpu);
    let b = Tensor::<NdArray, 1>::random([64], Distribution::Uniform(-0.1, 0.1), &cpu);
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let want = conv2d(x.clone(), w.clone(), Some(b.clone()), options.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let error = |got: Vec<f32>| -> f64 {
        let num: f64 = want
            .iter()
            .zip(&got)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let den: f64 = want.iter().map(|a| (*a as f64).powi(2)).sum();
        (num / den).sqrt()
    };
    let to_raw = |t: TensorData4| Tensor::<Raw, 4>::from_data(t, &device).cast(FloatDType::F16);
    type TensorData4 = burn::tensor::TensorData;
    let mut results = Vec::new();
    for (name, strategy) in [
        ("direct", ConvStrategy::Direct),
        ("implicit GEMM (cmma)", ConvStrategy::ImplicitGemm),
    ] {
        let xr = to_raw(x.to_data()).into_primitive().tensor();
        let wr = to_raw(w.to_data()).into_primitive().tensor();
        let br = Tensor::<Raw, 1>::from_data(b.to_data(), &device)
            .cast(FloatDType::F16)
            .into_primitive()
            .tensor();
        let out = match conv_forward::<_, 2>(xr, wr, Some(br), options.clone(), strategy) {
            Ok(out) => out,
            Err(e) => {
                eprintln!("{name}: not launched: {e:?}");
                continue;
            }
        };
        let out =
            Tensor::<Raw, 4>::from_primitive(TensorPrimitive::Float(out)).cast(FloatDType::F32);
        let e = error(out.into_data().to_vec::<f32>().unwrap());
        eprintln!("cuda f16 conv, {name}: relative error {e:.2e}");
        results.push((name, e));
    }
    let stock = conv2d(
        Tensor::<Cuda, 4>::from_data(x.to_data(), &device).cast(FloatDType::F16),
        Tensor::<Cuda, 4>::from_data(w.to_data(), &device).cast(FloatDType::F16),
        Some(Tensor::<Cuda, 1>::from_data(b.to_data(), &device).cast(FloatDType::F16)),
        options,
    );
    let e = error(
        stock
            .cast(FloatDType::F32)
            .into_data()
            .to_vec::<f32>()
            .unwrap(),
    );
    eprintln!("cuda f16 conv, burn's autotuned conv2d: relative error {e:.2e}");
    assert!(
        results.iter().any(|(n, e)| *n == "direct" && *e < 1e-2),
        "{results:?}"
    );
}

/// The video path reads the model's output back quantised and packed on the device; it must equal
/// the planar result quantised on the host, on every backend.
#[test]
fn rgb8_readback_equals_host_quantised_output() {
    fn check<B: Backend>(device: &B::Device, name: &str) {
        let model = upframe::model::load(upframe::model::DEFAULT_MODEL, None).unwrap();
        let input = crop(&photo(), 24, 16);
        let budget = upframe::upscale::MemoryBudget {
            bytes: 1 << 30,
            max_binding: None,
        };
        let mut up = upframe::upscale::Upscaler::<B>::new(
            &model,
            Precision::F32,
            device,
            TileSize::Auto,
            budget,
            Kernels::Generic,
        );
        let planar = up.upscale(&input, &|| false).unwrap();
        let packed = up.upscale_rgb8(&input, &|| false).unwrap();
        let (w, h) = (planar.width, planar.height);
        assert_eq!((packed.width, packed.height), (w, h));
        for y in 0..h {
            for x in 0..w {
                let q = |c: usize| (planar.data[(c * h + y) * w + x] * 255.0).round() as u8;
                assert_eq!(packed.rgb(x, y), [q(0), q(1), q(2)], "{name} at ({x}, {y})");
            }
        }
    }
    check::<burn::backend::NdArray>(&burn::backend::ndarray::NdArrayDevice::Cpu, "cpu");
    if let Some((device, _)) = wgpu() {
        check::<burn::backend::Wgpu>(&device, "wgpu");
    }
    if let Some(Selected::Cuda(device, _)) = selected(BackendKind::Cuda) {
        check::<Cuda>(&device, "cuda");
    }
}

/// The model through our fused kernels (`Kernels::Auto`) on `B`, with what ran it.
fn upscale_fused<B: Backend>(
    device: &B::Device,
    precision: Precision,
    tile: TileSize,
    image: &Planar,
) -> (Planar, upframe::upscale::Rgb8, String) {
    let model = model::load(model::DEFAULT_MODEL, None).unwrap();
    let mut up = Upscaler::<B>::new(&model, precision, device, tile, BUDGET, Kernels::Auto);
    let planar = up.upscale(image, &|| false).expect("fused upscale");
    let packed = up
        .upscale_rgb8(image, &|| false)
        .expect("fused upscale to rgb8");
    (planar, packed, up.kernels())
}

/// Our kernels against the CPU's fp32 reference on odd sizes (partial tiles of every kernel), whole
/// and in tiles, and their packed 8-bit output against their own planes quantised on the host.
fn assert_fused_matches_cpu<B: Backend>(
    device: &B::Device,
    precision: Precision,
    limits: (f32, f32),
) -> String {
    let model = model::load(model::DEFAULT_MODEL, None).unwrap();
    let mut kernels = String::new();
    for (w, h, tile) in [(37, 29, TileSize::Auto), (64, 48, TileSize::Fixed(24))] {
        let image = crop(&photo(), w, h);
        let cpu = upscale::<NdArray>(
            &NdArrayDevice::Cpu,
            &model,
            Precision::F32,
            TileSize::Auto,
            &image,
        );
        let (fused, packed, name) = upscale_fused::<B>(device, precision, tile, &image);
        let (max, mean) = diff(&cpu, &fused);
        eprintln!(
            "cpu fp32 vs {name} {precision} at {w}x{h}: max {max:.4}, mean {mean:.5} (8-bit steps)"
        );
        assert!(name.contains("fused"), "our kernels did not run: {name}");
        assert!(
            max < limits.0 && mean < limits.1,
            "{w}x{h}: max {max}, mean {mean}"
        );
        let (ow, oh) = (fused.width, fused.height);
        assert_eq!((packed.width, packed.height), (ow, oh));
        let mut off = 0;
        for y in 0..oh {
            for x in 0..ow {
                let q = |c: usize| (fused.data[(c * oh + y) * ow + x] * 255.0).round() as i32;
                let p = packed.rgb(x, y);
                // Ties (exactly .5 of a step) may round either way.
                for c in 0..3 {
                    assert!((p[c] as i32 - q(c)).abs() <= 1, "({x}, {y}) channel {c}");
                    off += usize::from(p[c] as i32 != q(c));
                }
            }
        }
        assert!(
            off * 1000 < ow * oh * 3,
            "{off} packed values differ from the planes"
        );
        kernels = name;
    }
    kernels
}

#[test]
fn fused_kernels_match_cpu_on_wgpu() {
    let Some((device, info)) = wgpu() else { return };
    eprintln!("wgpu device: {}", info.name);
    // Same arithmetic as burn's in fp32, different order: far under one 8-bit step.
    assert_fused_matches_cpu::<Wgpu>(&device, Precision::F32, (0.05, 0.005));
    let precision = upframe::resolve_precision::<Wgpu>(PrecisionArg::Auto, &info, &device).unwrap();
    if precision == Precision::F16 {
        // Storage in fp16, sums in fp32: the bound the generic fp16 path meets.
        assert_fused_matches_cpu::<Wgpu>(&device, Precision::F16, (4.0, 0.5));
    } else {
        eprintln!("fp16 skipped: {} does not store fp16", info.name);
    }
}

/// On an NVIDIA GPU this fails rather than skips: tensor cores must run and match the CPU.
#[test]
fn fused_kernels_match_cpu_on_cuda() {
    let Some(Selected::Cuda(device, info)) = selected(BackendKind::Cuda) else {
        return;
    };
    eprintln!("cuda device: {}", info.name);
    let model = model::load(model::DEFAULT_MODEL, None).unwrap();
    assert_eq!(
        upframe::resolve_precision_for::<Cuda>(
            PrecisionArg::Auto,
            &info,
            &device,
            &model,
            Kernels::Auto
        )
        .unwrap(),
        Precision::F16,
        "fp16 is the default where our kernels run"
    );
    let kernels = assert_fused_matches_cpu::<Cuda>(&device, Precision::F16, (4.0, 0.5));
    assert!(kernels.contains("tensor cores"), "{kernels}");
    assert_fused_matches_cpu::<Cuda>(&device, Precision::F32, (0.05, 0.005));
}

/// A fused output's values as bits: packed words as they are, planes' floats exactly.
fn bits(output: upframe::kernels::FusedOutput) -> Vec<u32> {
    match output {
        upframe::kernels::FusedOutput::Rgb8(words) => words,
        upframe::kernels::FusedOutput::Planes(floats) => {
            floats.into_iter().map(f32::to_bits).collect()
        }
    }
}

/// Several frames through our kernels at once give, bit for bit, what each gives alone: in fp32
/// and fp16, packed and as planes, with a kept region off the edges, at a size with partial tiles.
fn assert_batches_equal_frames_alone<D: std::any::Any>(device: &D, precisions: &[Precision]) {
    let model = model::load(model::DEFAULT_MODEL, None).unwrap();
    let (w, h, frames) = (40, 21, 3);
    let photo = photo();
    // Different content per frame: windows of the photo from different corners.
    let pictures: Vec<Planar> = (0..frames)
        .map(|i| {
            let mut out = Planar::new(3, w, h);
            for c in 0..3 {
                for y in 0..h {
                    let row = (c * photo.height + y + 7 * i) * photo.width + 9 * i;
                    out.data[(c * h + y) * w..][..w].copy_from_slice(&photo.data[row..row + w]);
                }
            }
            out
        })
        .collect();
    let stacked: Vec<f32> = pictures.iter().flat_map(|p| p.data.clone()).collect();
    let keep = (3, 5, 4 * w - 7, 4 * h - 9);
    for &precision in precisions {
        let fused = upframe::kernels::fused_for(&model.graph, precision, device)
            .expect("our kernels take the embedded model");
        for packed in [true, false] {
            let batch = fused
                .run_frames(&stacked, frames, w, h, keep, packed)
                .expect("a batch runs");
            let each: Vec<u32> = pictures
                .iter()
                .flat_map(|p| {
                    bits(
                        fused
                            .run(&p.data, w, h, keep, packed)
                            .expect("a frame runs"),
                    )
                })
                .collect();
            let what = format!("{} {precision}, packed {packed}", fused.describe());
            let all = bits(batch);
            assert_eq!(all.len(), each.len(), "{what}");
            assert!(all == each, "{what}: the batch differs from frames alone");
            eprintln!("{what}: {frames} frames at once equal each alone");
        }
    }
}

#[test]
fn fused_batches_equal_frames_alone_on_wgpu() {
    let Some((device, info)) = wgpu() else { return };
    let mut precisions = vec![Precision::F32];
    if upframe::resolve_precision::<Wgpu>(PrecisionArg::Auto, &info, &device).unwrap()
        == Precision::F16
    {
        precisions.push(Precision::F16);
    }
    assert_batches_equal_frames_alone(&device, &precisions);
}

#[test]
fn fused_batches_equal_frames_alone_on_cuda() {
    let Some(Selected::Cuda(device, _)) = selected(BackendKind::Cuda) else {
        return;
    };
    assert_batches_equal_frames_alone(&device, &[Precision::F16, Precision::F32]);
}

/// Duplicate-frame features on cuda (CubeCL kernels) equal their host definition, bit for bit.
#[test]
fn cuda_dedup_features_match_the_definition() {
    use upframe::dedup::{cubecl_path, features};
    let Some(Selected::Cuda(device, info)) = selected(BackendKind::Cuda) else {
        return;
    };
    let client = <cubecl::cuda::CudaRuntime as cubecl::Runtime>::client(&device);
    let photo = photo();
    for (w, h) in [(96, 64), (95, 61), (30, 18), (7, 3)] {
        let picture = crop(&photo, w, h);
        let packed = features::Packed::from_planar(&picture);
        assert_eq!(
            cubecl_path::features(&client, &packed),
            features::reference(&packed),
            "{} at {w}x{h}",
            info.name
        );
    }
    // Comparisons with kept frames' cells held on the device: a picture, then the same with a
    // small bright square.
    let thresholds = upframe::dedup::Level::Normal.thresholds().expect("normal");
    let mean = thresholds.mean_limit();
    let mut cells = cubecl_path::DeviceCells::new(client, 2, mean);
    let picture = crop(&photo, 95, 61);
    let mut moved = picture.clone();
    for y in 20..28 {
        for x in 40..48 {
            moved.data[y * 95 + x] = 1.0;
        }
    }
    let (a, b) = (
        features::Packed::from_planar(&picture),
        features::Packed::from_planar(&moved),
    );
    let kept = upframe::dedup::Decision {
        source: 0,
        released: Vec::new(),
    };
    assert!(cells.look(&a).changes.is_empty());
    cells.settle(0, &kept);
    let look = cells.look(&b);
    let expected = features::change(&features::reference(&a), &features::reference(&b), mean);
    assert_eq!(look.changes, [(0, expected)], "{}", info.name);
    assert!(expected.peak > 0 && expected.changed_blocks > 0);
}

/// A frame in `format` (read as `reading` says): luma with texture, chroma in gentle slopes, as
/// decoders hand them out.
fn yuv_frame(
    format: ffmpeg_next::format::Pixel,
    reading: &upframe::video::device_frames::Reading,
    w: u32,
    h: u32,
) -> ffmpeg_next::frame::Video {
    let mut frame = ffmpeg_next::frame::Video::new(format, w, h);
    let (wide, depth) = (reading.wide, reading.yuv.depth);
    let put = |frame: &mut ffmpeg_next::frame::Video, plane: usize, x: usize, y: usize, v: u32| {
        let stride = frame.stride(plane);
        let data = frame.data_mut(plane);
        if wide {
            // An 8-bit value at the format's depth, `shift` bits up (P010's high bits).
            let sample = ((v << (depth - 8)) << reading.shift) as u16;
            data[y * stride + 2 * x..][..2].copy_from_slice(&sample.to_le_bytes());
        } else {
            data[y * stride + x] = v as u8;
        }
    };
    for y in 0..h as usize {
        for x in 0..w as usize {
            let texture = ((x * 7 + y * 13) % 23) as u32;
            put(
                &mut frame,
                0,
                x,
                y,
                30 + (x * 4 + y * 2) as u32 % 160 + texture,
            );
        }
    }
    let (sx, sy) = reading.chroma_shift;
    for y in 0..h.div_ceil(1 << sy) as usize {
        for x in 0..w.div_ceil(1 << sx) as usize {
            let (cb, cr) = (90 + (2 * x + y) as u32 % 80, 160 - (x + 2 * y) as u32 % 90);
            if reading.interleaved {
                put(&mut frame, 1, 2 * x, y, cb);
                put(&mut frame, 1, 2 * x + 1, y, cr);
            } else {
                put(&mut frame, 1, x, y, cb);
                put(&mut frame, 2, x, y, cr);
            }
        }
    }
    frame
}

/// The definition, in f64: samples at their siting, chroma interpolated bilinearly where it is
/// subsampled, the matrix of `reading`, clamped; what swscale and the GPU kernel are each compared
/// with.
fn reference_rgb(
    frame: &ffmpeg_next::frame::Video,
    reading: &upframe::video::device_frames::Reading,
) -> Planar {
    let yuv = &reading.yuv;
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let sample = |plane: usize, x: usize, y: usize| -> f64 {
        let row = &frame.data(plane)[y * frame.stride(plane)..];
        let v = if reading.wide {
            u16::from_le_bytes([row[2 * x], row[2 * x + 1]]) as u32
        } else {
            row[x] as u32
        };
        (v >> reading.shift) as f64
    };
    let unit = (1u32 << (yuv.depth - 8)) as f64;
    let max = ((1u64 << yuv.depth) - 1) as f64;
    let (y0, ys, c0, cs) = if yuv.full_range {
        (0.0, 1.0 / max, 128.0 * unit, 1.0 / max)
    } else {
        (
            16.0 * unit,
            1.0 / (219.0 * unit),
            128.0 * unit,
            1.0 / (224.0 * unit),
        )
    };
    let (kr, kb) = (yuv.kr as f64, yuv.kb as f64);
    let kg = 1.0 - kr - kb;
    let (sx, sy) = reading.chroma_shift;
    let (cw, ch) = (w.div_ceil(1 << sx) as isize, h.div_ceil(1 << sy) as isize);
    let clamp = |i: isize, n: isize| i.clamp(0, n - 1) as usize;
    let mut out = Planar::new(3, w, h);
    for y in 0..h {
        for x in 0..w {
            let u = (x as f64 - yuv.siting.0 as f64) / f64::from(1 << sx);
            let v = (y as f64 - yuv.siting.1 as f64) / f64::from(1 << sy);
            let (fx, fy) = (u - u.floor(), v - v.floor());
            let (i, j) = (u.floor() as isize, v.floor() as isize);
            let chroma = |c: usize| {
                let at = |i: isize, j: isize| {
                    let (i, j) = (clamp(i, cw), clamp(j, ch));
                    if reading.interleaved {
                        sample(1, 2 * i + c, j)
                    } else {
                        sample(1 + c, i, j)
                    }
                };
                let top = at(i, j) * (1.0 - fx) + at(i + 1, j) * fx;
                let bottom = at(i, j + 1) * (1.0 - fx) + at(i + 1, j + 1) * fx;
                (top * (1.0 - fy) + bottom * fy - c0) * cs
            };
            let (luma, pb, pr) = ((sample(0, x, y) - y0) * ys, chroma(0), chroma(1));
            let rgb = [
                luma + 2.0 * (1.0 - kr) * pr,
                luma - 2.0 * kb * (1.0 - kb) / kg * pb - 2.0 * kr * (1.0 - kr) / kg * pr,
                luma + 2.0 * (1.0 - kb) * pb,
            ];
            for c in 0..3 {
                out.data[(c * h + y) * w + x] = rgb[c].clamp(0.0, 1.0) as f32;
            }
        }
    }
    out
}

/// The GPU conversion of decoded frames (`kernels::picture`: what NVDEC's 4:2:0 surfaces and, on
/// cuda, software decoders' planar 4:2:0, 4:2:2 and 4:4:4 frames take) computes the definition
/// (`reference_rgb`) within rounding, and stays close to swscale's on the host (which sites and
/// filters chroma its own way); the 8-bit packing for duplicate detection equals the host's
/// packing of the same planes, and the mirror padding equals the host's.
fn assert_gpu_colour_matches_swscale<R: cubecl::Runtime>(
    client: &cubecl::prelude::ComputeClient<R>,
    name: &str,
) {
    use cubecl::CubeElement;
    use ffmpeg_next::format::Pixel;
    use ffmpeg_next::util::chroma::Location;
    use ffmpeg_next::util::color::Space;
    use upframe::dedup::features::Packed;
    use upframe::kernels::picture;
    use upframe::video::colour::{Colour, ToRgb};
    use upframe::video::device_frames;

    upframe::video::init();
    let read =
        |handle: cubecl::server::Handle| -> Vec<u8> { client.read_one(handle).unwrap().to_vec() };
    let formats = [
        Pixel::NV12,
        Pixel::P010LE,
        Pixel::YUV420P,
        Pixel::YUV422P,
        Pixel::YUV444P,
        Pixel::YUV420P10LE,
        Pixel::YUV444P10LE,
    ];
    for format in formats {
        for (matrix, full_range) in [
            (Space::BT709, false),
            (Space::BT470BG, true),
            (Space::BT2020NCL, false),
        ] {
            let (w, h) = (37, 23);
            let colour = Colour { matrix, full_range };
            let reading = device_frames::conversion(format, colour, Location::Left).unwrap();
            let yuv = reading.yuv;
            let frame = yuv_frame(format, &reading, w, h);
            let (host, _) = ToRgb::new().convert(&frame, colour, false).unwrap();
            let (words, layout) = device_frames::host_surface(&frame, &reading);
            let surface = client.create_from_slice(u32::as_bytes(&words));
            let planes = picture::to_planes(client, &surface, &layout, &yuv);
            let gpu = Planar {
                channels: 3,
                width: w as usize,
                height: h as usize,
                data: bytemuck::pod_collect_to_vec(&read(planes.clone())),
            };
            let reference = reference_rgb(&frame, &reading);
            let (rmax, rmean) = diff(&gpu, &reference);
            let (smax, smean) = diff(&host, &reference);
            let (max, mean) = diff(&gpu, &host);
            eprintln!("{name} {format:?} {matrix:?} full={full_range}: vs swscale max {max:.2}, mean {mean:.3}; vs definition {rmax:.2} {rmean:.3}; swscale vs definition {smax:.2} {smean:.3} 8-bit steps");
            assert!(
                rmax <= 1.0 && rmean <= 0.3,
                "{name} {format:?} {matrix:?}: off the definition by {rmax} at most, {rmean} on average"
            );
            // swscale sites chroma its own way (0.65 steps off the definition on average here).
            assert!(
                max <= 4.0 && mean <= 1.0,
                "{name} {format:?} {matrix:?}: off swscale by {max} at most, {mean} on average"
            );

            let mut expected = Packed::new(w as usize, h as usize);
            let samples = |v: f32| -> u8 {
                if yuv.deep_output {
                    (((v * 65535.0 + 0.5) as u32 * 255 + 32767) / 65535) as u8
                } else {
                    (v * 255.0 + 0.5) as u8
                }
            };
            for c in 0..3 {
                for y in 0..h as usize {
                    let row: Vec<u8> = gpu.data[(c * h as usize + y) * w as usize..][..w as usize]
                        .iter()
                        .map(|&v| samples(v))
                        .collect();
                    expected.set_row(c, y, &row);
                }
            }
            let packed = picture::pack(
                client,
                &planes,
                w as usize,
                h as usize,
                expected.words_per_row,
                expected.rows,
                yuv.deep_output,
            );
            let packed: Vec<u32> = bytemuck::pod_collect_to_vec(&read(packed));
            assert_eq!(packed, expected.words, "{name} {format:?}: 8-bit packing");

            let padded = picture::pad(client, &planes, w as usize, h as usize, EDGE_PAD);
            let padded: Vec<f32> = bytemuck::pod_collect_to_vec(&read(padded));
            assert_eq!(
                padded,
                upframe::upscale::reflect_pad(&gpu, EDGE_PAD).data,
                "{name}: padding"
            );
        }
    }
}

#[test]
fn gpu_colour_conversion_matches_swscale_on_wgpu() {
    let Some((device, info)) = wgpu() else {
        return;
    };
    let client = <cubecl::wgpu::WgpuRuntime as cubecl::Runtime>::client(&device);
    assert_gpu_colour_matches_swscale(&client, &info.name);
}

/// On cuda: the conversion kernels against the definition and swscale, then a real clip's frames
/// converted on the GPU (NVDEC's from their surfaces, software-decoded ones uploaded as Y'CbCr)
/// against the same frames converted by swscale on the host.
#[test]
fn cuda_frames_converted_on_the_gpu_match_the_host() {
    use upframe::frame::{Message, Picture};
    use upframe::video::decode::{self, DecodeStats, HwDecode};
    use upframe::video::device_frames::DeviceFrames;
    let Some(Selected::Cuda(device, info)) = selected(BackendKind::Cuda) else {
        return;
    };
    let client = <cubecl::cuda::CudaRuntime as cubecl::Runtime>::client(&device);
    assert_gpu_colour_matches_swscale(&client, &info.name);

    let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/bikes.mkv");
    let decode = |hwdec: HwDecode, on_gpu: bool| -> (Vec<Planar>, DecodeStats) {
        let mut source = decode::open(&clip, hwdec).unwrap();
        source.pack = true;
        if on_gpu {
            source.device_frames = Some(DeviceFrames::new(&device).unwrap());
        }
        let mut pictures = Vec::new();
        let stats = source
            .run(&[], &|| false, |message| {
                if let Message::Frame(frame) = message {
                    pictures.push(match frame.picture {
                        Some(Picture::Planar(p)) => p,
                        Some(Picture::Device(d)) => {
                            assert!(d.packed.is_some(), "packed for duplicate detection");
                            d.to_planar().unwrap()
                        }
                        _ => unreachable!(),
                    });
                }
                true
            })
            .unwrap();
        (pictures, stats)
    };
    let nvdec = HwDecode::Cuda {
        device: device.index,
    };
    for (name, hwdec) in [("NVDEC", nvdec), ("software-decoded", HwDecode::None)] {
        let (gpu, stats) = decode(hwdec, true);
        if name == "NVDEC" && stats.hardware_frames == 0 {
            eprintln!("skipped: NVDEC decoded nothing on {}", info.name);
            continue;
        }
        assert_eq!(
            stats.converted_on_device, stats.frames,
            "every {name} frame converted on the GPU"
        );
        let (host, _) = decode(hwdec, false);
        assert_eq!(gpu.len(), host.len());
        let (mut worst, mut mean) = (0.0f32, 0.0f32);
        for (a, b) in gpu.iter().zip(&host) {
            let (max, m) = diff(a, b);
            worst = worst.max(max);
            mean += m / gpu.len() as f32;
        }
        eprintln!(
            "{}: {name} frames on the GPU vs the host: max {worst:.2}, mean {mean:.3} 8-bit steps",
            info.name
        );
        assert!(
            worst <= 24.0 && mean <= 1.0,
            "{name}: max {worst}, mean {mean}"
        );
    }
}
