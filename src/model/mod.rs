//! Which network to run: the embedded default, an ncnn model from disk, or a plain resize, all as
//! one `Graph` so that every later stage treats them alike.

pub mod forward;
pub mod graph;
pub mod ncnn;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use graph::{Graph, Node, Op, ResizeMode, ResizeTarget};

pub const DEFAULT_MODEL: &str = "realesr-animevideov3";
const EMBEDDED_PARAM: &str = include_str!("../../models/realesr-animevideov3-x4.param");
const EMBEDDED_BIN: &[u8] = include_bytes!("../../models/realesr-animevideov3-x4.bin");

/// The built-in choices of `--model`, with a line each for `upframe models`.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        DEFAULT_MODEL,
        "Real-ESRGAN SRVGG (animevideov3), x4 network (x2/x3 by bicubic downscale); embedded; the default",
    ),
    ("bicubic", "plain bicubic resize (no network), any --scale"),
    ("lanczos", "plain Lanczos-3 resize (no network), any --scale"),
    ("nearest", "plain nearest-neighbour resize (no network), any --scale"),
];

#[derive(Debug, Clone)]
pub struct Model {
    /// What the user named, for logs and reports.
    pub name: String,
    pub graph: Graph,
    pub scale: usize,
    /// True for the plain resizes, which have no weights and need no tiles.
    pub is_resize: bool,
}

/// Resolves `--model` and `--scale` into a graph whose output is exactly `scale` times its input.
pub fn load(name: &str, scale: Option<usize>) -> Result<Model> {
    let resize = match name {
        "bicubic" => Some(ResizeMode::Bicubic),
        "lanczos" => Some(ResizeMode::Lanczos3),
        "nearest" => Some(ResizeMode::Nearest),
        "bilinear" => Some(ResizeMode::Bilinear),
        _ => None,
    };
    if let Some(mode) = resize {
        let scale = scale.unwrap_or(4);
        return Ok(Model {
            name: name.to_string(),
            graph: resize_graph(mode, scale),
            scale,
            is_resize: true,
        });
    }
    let graph = if name == DEFAULT_MODEL {
        ncnn::parse(
            EMBEDDED_PARAM,
            EMBEDDED_BIN,
            Path::new("<embedded>/realesr-animevideov3-x4.param"),
            Path::new("<embedded>/realesr-animevideov3-x4.bin"),
        )?
    } else {
        let path = PathBuf::from(name);
        if path.extension().and_then(|e| e.to_str()) != Some("param") {
            return Err(Error::UnknownModel {
                name: name.to_string(),
                known: BUILT_IN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if !path.exists() {
            return Err(Error::InputMissing { path });
        }
        ncnn::load_files(&path)?
    };
    let native = native_scale(&graph).map_err(|reason| Error::ModelParam {
        path: PathBuf::from(name),
        line: 0,
        reason,
    })?;
    let scale = scale.unwrap_or(native);
    let graph = if scale == native {
        graph
    } else if scale < native {
        // What the x2/x3 ncnn files do: the native output, then a bicubic downscale.
        append_resize(graph, ResizeMode::Bicubic, scale as f32 / native as f32)
    } else {
        return Err(Error::Usage(format!(
            "model {name} upscales by {native}: --scale must be at most {native}"
        )));
    };
    Ok(Model {
        name: name.to_string(),
        graph,
        scale,
        is_resize: false,
    })
}

/// The integer factor by which the graph enlarges its input, checked on two probe sizes.
fn native_scale(graph: &Graph) -> Result<usize, String> {
    let mut factor = None;
    for side in [64usize, 60] {
        let out = graph
            .output_shape(side, side)
            .map_err(|e| format!("line {}: {}", e.line, e.reason))?;
        if out.h % side != 0 || out.w != out.h || out.h == 0 {
            return Err(format!(
                "output {}x{} for a {side}x{side} input is not an integer upscale",
                out.w, out.h
            ));
        }
        let f = out.h / side;
        if factor.is_some_and(|g| g != f) {
            return Err("the upscale factor depends on the input size".into());
        }
        factor = Some(f);
    }
    if graph.out_channels != graph.in_channels {
        return Err(format!(
            "takes {} channels but gives {}",
            graph.in_channels, graph.out_channels
        ));
    }
    factor.ok_or_else(|| "no output".into())
}

fn resize_graph(mode: ResizeMode, scale: usize) -> Graph {
    let graph = Graph {
        nodes: Vec::new(),
        blob_count: 1,
        input: 0,
        output: 0,
        in_channels: 3,
        out_channels: 3,
    };
    append_resize(graph, mode, scale as f32)
}

fn append_resize(mut graph: Graph, mode: ResizeMode, factor: f32) -> Graph {
    let output = graph.blob_count;
    graph.nodes.push(Node {
        op: Op::Resize {
            mode,
            target: ResizeTarget::Scale {
                height: factor,
                width: factor,
            },
            align_corners: false,
        },
        inputs: vec![graph.output],
        output,
        name: format!("{mode} x{factor}"),
        line: 0,
    });
    graph.blob_count += 1;
    graph.output = output;
    graph
}
