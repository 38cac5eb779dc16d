//! The `upframe` binary: parse the command line, run the library, print a summary, and map the
//! outcome to the documented exit code.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;

use clap::Parser;

use upframe::bench::BenchPlan;
use upframe::cli::{BenchArgs, Cli, Command};
use upframe::error::Error;
use upframe::model::BUILT_IN;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet, cli.verbose);
    // Backend panics (device loss, out of memory) are caught and reported as one line; the
    // default hook would print a backtrace banner first.
    if std::env::var_os("UPFRAME_DEBUG").is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
    // A job stops at the next frame and removes its partial output; a benchmark writes nothing
    // before it ends, so it stops at once.
    let benchmarking = matches!(cli.command, Some(Command::Bench(_)));
    let _ = ctrlc::set_handler(move || {
        if benchmarking || upframe_interrupted_twice() {
            std::process::exit(130);
        }
        upframe::interrupt();
    });
    let outcome = catch_unwind(AssertUnwindSafe(|| run(cli)));
    let code = match outcome {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("upframe: error: {e}");
            e.exit_code()
        }
        Err(payload) => {
            eprintln!(
                "upframe: internal error: {} (rerun with UPFRAME_DEBUG=1 for details)",
                upframe::panic_message(&payload)
            );
            1
        }
    };
    ExitCode::from(code as u8)
}

fn upframe_interrupted_twice() -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static ONCE: AtomicBool = AtomicBool::new(false);
    ONCE.swap(true, Ordering::SeqCst)
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Some(Command::Models) => {
            for (name, about) in BUILT_IN {
                println!("{name:<22} {about}");
            }
            println!("{:<22} any ncnn model built from supported layers (Real-ESRGAN x4plus, x4plus-anime, ...)", "PATH.param");
            Ok(())
        }
        Some(Command::Devices) => {
            print!("{}", upframe::describe_devices());
            Ok(())
        }
        Some(Command::Bench(args)) => bench(args),
        None => {
            let quiet = cli.quiet;
            let config = cli.into_config()?;
            let s = upframe::run(&config)?;
            if !quiet {
                let secs = s.elapsed.as_secs_f64();
                if let Some(v) = &s.video {
                    let p = &v.phases;
                    print_totals(v.frames, v.unique);
                    eprintln!(
                        "Done: {} frames | {:.2} s | {:.2} fps | decode {:.1} s, dedup {:.1} s, upscale {:.1} s, save {:.1} s | {} x{} on {} [{}, {}] -> {}",
                        v.frames,
                        secs,
                        v.frames as f64 / secs.max(1e-9),
                        p.decode_s,
                        p.dedup_s,
                        p.upscale_s,
                        p.save_s,
                        s.model,
                        s.scale,
                        s.device,
                        s.backend,
                        s.precision,
                        s.outputs[0].display()
                    );
                    return Ok(());
                }
                if s.dedup.is_some() {
                    print_totals(s.files as u64, (s.files - s.linked) as u64);
                }
                let target = match s.outputs.as_slice() {
                    [one] => one.display().to_string(),
                    _ => config.output.display().to_string(),
                };
                eprintln!(
                    "Done: {} image(s) x{} with {} in {:.2} s ({:.2} MP/s) on {} [{}, {}] -> {}",
                    s.files,
                    s.scale,
                    s.model,
                    secs,
                    s.input_pixels as f64 / 1e6 / secs.max(1e-9),
                    s.device,
                    s.backend,
                    s.precision,
                    target
                );
            }
            Ok(())
        }
    }
}

/// The duplicate-frame totals line of the summary, for videos and folders alike.
fn print_totals(total: u64, unique: u64) {
    let duplicates = total - unique;
    eprintln!(
        "Total: {total} | Unique: {unique} | Duplicates: {duplicates} ({:.1}%)",
        100.0 * duplicates as f64 / total.max(1) as f64
    );
}

fn bench(args: BenchArgs) -> Result<(), Error> {
    if let Some(video) = &args.decode {
        return bench_decode(video, args.device.unwrap_or(0));
    }
    let plan = BenchPlan {
        backend: args.backend.choice(),
        device: args.device,
        precision: args.precision,
        sizes: args.sizes,
        small: args.small,
        runs: args.runs,
        kernels: args.kernels,
        batch: usize::from(args.batch),
        streams: usize::from(args.streams),
        queue: usize::from(args.queue),
    };
    if args.dedup {
        return bench_dedup(&plan);
    }
    let model = upframe::model::load(&args.model, None)?;
    let flop = upframe::bench::flop_per_pixel(&model);
    println!(
        "model {} (x{}), {:.4} MFLOP per input pixel, median of {} runs after warm-up",
        model.name,
        model.scale,
        flop / 1e6,
        plan.runs
    );
    println!(
        "{:<6} {:<5} {:>10} {:>5} {:>7} {:>5} {:>9} {:>9} {:>8} {:>8}  kernels, device",
        "backend", "prec", "input", "batch", "streams", "queue", "ms", "fps", "TFLOP/s", "VRAM MiB"
    );
    let mut json = Vec::new();
    upframe::bench::run(&model, &plan, |r| {
        println!(
            "{:<7} {:<5} {:>10} {:>5} {:>7} {:>5} {:>9.2} {:>9.1} {:>8.3} {:>8}  {}, {}",
            r.backend.to_string(),
            r.precision.to_string(),
            format!("{}x{}", r.width, r.height),
            r.batch,
            r.streams,
            r.queue,
            r.median.as_secs_f64() * 1e3,
            r.fps(),
            r.tflops(flop),
            r.memory.map_or("-".into(), |b| (b >> 20).to_string()),
            r.kernels,
            r.device
        );
        json.push(serde_json::json!({
            "backend": r.backend.to_string(), "device": r.device, "precision": r.precision.to_string(),
            "width": r.width, "height": r.height, "median_ms": r.median.as_secs_f64() * 1e3,
            "min_ms": r.min.as_secs_f64() * 1e3, "batch": r.batch, "streams": r.streams, "queue": r.queue, "fps": r.fps(), "tflops": r.tflops(flop), "runs": r.runs,
            "kernels": r.kernels, "memory_reserved": r.memory,
        }));
    })?;
    if let Some(path) = args.json {
        let text: String = json.iter().map(|j| format!("{j}\n")).collect();
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

fn bench_dedup(plan: &BenchPlan) -> Result<(), Error> {
    println!(
        "duplicate detection per frame against a full window of {} kept frames (pack on the host; upload, features and comparisons on the device; decision on the host; shaders: the device time of detect's shaders on wgpu, from timestamps; resident: from a frame packed on the device, as NVDEC frames are; upload: a software-decoded yuv420p frame uploaded, converted and packed on the device, then the f32 planes the model was given before), median of {} runs",
        upframe::dedup::WINDOW,
        plan.runs
    );
    println!(
        "{:<7} {:>10} {:>8} {:>9} {:>10} {:>8} {:>8} {:>11} {:>17}  features, device",
        "backend",
        "frame",
        "pack ms",
        "detect ms",
        "shaders ms",
        "decide",
        "total",
        "resident ms",
        "upload yuv / f32"
    );
    upframe::bench::dedup_cost(plan, |r| {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        println!(
            "{:<7} {:>10} {:>8.2} {:>9.2} {:>10} {:>8.2} {:>8.2} {:>11} {:>17}  {}, {}",
            r.backend.to_string(),
            format!("{}x{}", r.width, r.height),
            ms(r.pack),
            ms(r.detect),
            r.shaders.map_or("-".into(), |d| format!("{:.3}", ms(d))),
            ms(r.decide),
            ms(r.total()),
            r.resident.map_or("-".into(), |d| format!("{:.3}", ms(d))),
            r.upload.map_or("-".into(), |(yuv, planes)| format!(
                "{:.3} / {:.3}",
                ms(yuv),
                ms(planes)
            )),
            r.features,
            r.device
        );
    })?;
    Ok(())
}

fn bench_decode(video: &std::path::Path, device: usize) -> Result<(), Error> {
    use upframe::video::decode::HwDecode;
    println!(
        "decode phase (demux, decode, convert to planar RGB) of {}",
        video.display()
    );
    for hwdec in [HwDecode::None, HwDecode::Cuda { device }] {
        let (frames, elapsed, used) = upframe::bench::decode_speed(video, hwdec)?;
        let secs = elapsed.as_secs_f64();
        println!(
            "{:<24} {frames:>6} frames {secs:>8.2} s {:>9.1} fps",
            used,
            frames as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}

fn init_logging(quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Info,
        (false, 1) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .filter_module("upframe", level)
        .parse_default_env()
        .format(|buf, record| {
            let level = record.level().to_string().to_lowercase();
            writeln!(buf, "upframe: {level}: {}", record.args())
        })
        .init();
}
