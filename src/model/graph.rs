//! A network as a list of operations over numbered blobs, independent of any file format or
//! backend. The ncnn loader builds it; `forward` runs it on a burn backend. Shapes are checked once
//! here, at load time, so that a model that loads is a model that runs.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    None,
    Relu,
    LeakyRelu(f32),
    Clip { min: f32, max: f32 },
    Sigmoid,
}

#[derive(Debug, Clone)]
pub struct Conv2d {
    pub out_channels: usize,
    pub in_channels: usize,
    /// [height, width] throughout.
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    /// out × in × kh × kw, row-major.
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub activation: Activation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos3,
}

impl fmt::Display for ResizeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResizeMode::Nearest => "nearest",
            ResizeMode::Bilinear => "bilinear",
            ResizeMode::Bicubic => "bicubic",
            ResizeMode::Lanczos3 => "lanczos",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResizeTarget {
    /// ncnn's rule: the output side is the input side times the factor, truncated.
    Scale {
        height: f32,
        width: f32,
    },
    Size {
        height: usize,
        width: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EltwiseKind {
    Prod,
    Sum,
    Max,
}

#[derive(Debug, Clone)]
pub enum Op {
    Conv(Conv2d),
    PRelu(Vec<f32>),
    Activation(Activation),
    PixelShuffle(usize),
    Resize {
        mode: ResizeMode,
        target: ResizeTarget,
        align_corners: bool,
    },
    Binary(BinaryKind),
    Eltwise {
        kind: EltwiseKind,
        coefficients: Option<Vec<f32>>,
    },
    Concat,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<usize>,
    pub output: usize,
    /// Where it came from, for error messages: the layer's name and its line in the file.
    pub name: String,
    pub line: usize,
}

/// A shape error found while checking the graph, attached to the node that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeError {
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub blob_count: usize,
    pub input: usize,
    pub output: usize,
    pub in_channels: usize,
    pub out_channels: usize,
}

/// One blob's shape: channels, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Graph {
    /// Propagates shapes from an input of `h`×`w` through every node, checking each operation's
    /// requirements. Returns the shape of every blob (None for blobs never produced).
    pub fn shapes(&self, h: usize, w: usize) -> Result<Vec<Option<Shape>>, ShapeError> {
        let mut shapes = vec![None; self.blob_count];
        shapes[self.input] = Some(Shape {
            c: self.in_channels,
            h,
            w,
        });
        for node in &self.nodes {
            let inputs: Vec<Shape> = node
                .inputs
                .iter()
                .map(|&b| {
                    shapes[b].ok_or_else(|| ShapeError {
                        line: node.line,
                        reason: format!("layer {} reads a blob before it is written", node.name),
                    })
                })
                .collect::<Result<_, _>>()?;
            let out = node_shape(node, &inputs).map_err(|reason| ShapeError {
                line: node.line,
                reason: format!("layer {}: {reason}", node.name),
            })?;
            shapes[node.output] = Some(out);
        }
        Ok(shapes)
    }

    /// The output size for an input of `h`×`w`.
    pub fn output_shape(&self, h: usize, w: usize) -> Result<Shape, ShapeError> {
        let shapes = self.shapes(h, w)?;
        shapes[self.output].ok_or_else(|| ShapeError {
            line: 0,
            reason: "the output blob is never written".into(),
        })
    }

    /// The largest number of values any blob holds per input pixel: what sizes tiles to memory.
    pub fn peak_values_per_pixel(&self) -> Result<f64, ShapeError> {
        let probe = 64;
        let shapes = self.shapes(probe, probe)?;
        Ok(shapes
            .iter()
            .flatten()
            .map(|s| (s.c * s.h * s.w) as f64 / (probe * probe) as f64)
            .fold(0.0, f64::max))
    }

    /// How far, in input pixels, an output pixel can see: the overlap tiles need so that tiled
    /// output equals untiled output.
    pub fn receptive_radius(&self) -> usize {
        // Per blob: (radius in input pixels, blob scale relative to the input).
        let mut reach = vec![(0.0f64, 1.0f64); self.blob_count];
        for node in &self.nodes {
            let (r, s) = node
                .inputs
                .iter()
                .map(|&b| reach[b])
                .fold((0.0f64, 1.0f64), |acc, x| (acc.0.max(x.0), x.1));
            reach[node.output] = match &node.op {
                Op::Conv(c) => {
                    let k = ((c.kernel[0].max(c.kernel[1]) - 1) / 2) as f64;
                    let d = c.dilation[0].max(c.dilation[1]) as f64;
                    (r + k * d / s, s / c.stride[0] as f64)
                }
                Op::PixelShuffle(f) => (r, s * *f as f64),
                Op::Resize { target, mode, .. } => {
                    let factor = match target {
                        ResizeTarget::Scale { height, .. } => *height as f64,
                        ResizeTarget::Size { .. } => 1.0,
                    };
                    let taps = match mode {
                        ResizeMode::Nearest => 0.0,
                        ResizeMode::Bilinear => 1.0,
                        ResizeMode::Bicubic => 2.0,
                        ResizeMode::Lanczos3 => 3.0,
                    };
                    (r + taps / s, s * factor)
                }
                _ => (r, s),
            };
        }
        reach[self.output].0.ceil() as usize
    }
}

fn node_shape(node: &Node, inputs: &[Shape]) -> Result<Shape, String> {
    let first = inputs[0];
    match &node.op {
        Op::Conv(c) => {
            if first.c != c.in_channels {
                return Err(format!(
                    "expects {} input channels, gets {}",
                    c.in_channels, first.c
                ));
            }
            let side = |n: usize, i: usize| -> Result<usize, String> {
                let span = c.dilation[i] * (c.kernel[i] - 1) + 1;
                (n + 2 * c.padding[i])
                    .checked_sub(span)
                    .map(|v| v / c.stride[i] + 1)
                    .ok_or_else(|| format!("input {n} pixels is smaller than the kernel"))
            };
            Ok(Shape {
                c: c.out_channels,
                h: side(first.h, 0)?,
                w: side(first.w, 1)?,
            })
        }
        Op::PRelu(slopes) => {
            if slopes.len() != 1 && slopes.len() != first.c {
                return Err(format!(
                    "has {} slopes for {} channels",
                    slopes.len(),
                    first.c
                ));
            }
            Ok(first)
        }
        Op::Activation(_) => Ok(first),
        Op::PixelShuffle(f) => {
            if !first.c.is_multiple_of(f * f) {
                return Err(format!(
                    "{} channels do not divide by the factor {f} squared",
                    first.c
                ));
            }
            Ok(Shape {
                c: first.c / (f * f),
                h: first.h * f,
                w: first.w * f,
            })
        }
        Op::Resize { target, .. } => {
            let (h, w) = match *target {
                ResizeTarget::Scale { height, width } => (
                    (first.h as f32 * height) as usize,
                    (first.w as f32 * width) as usize,
                ),
                ResizeTarget::Size { height, width } => (height, width),
            };
            if h == 0 || w == 0 {
                return Err("resizes to an empty image".into());
            }
            Ok(Shape { c: first.c, h, w })
        }
        Op::Binary(_) | Op::Eltwise { .. } => {
            if let Some(other) = inputs.iter().find(|s| **s != first) {
                return Err(format!(
                    "inputs differ in shape: {first:?} and {other:?} (broadcasting is not supported)"
                ));
            }
            if let Op::Eltwise {
                coefficients: Some(k),
                ..
            } = &node.op
            {
                if k.len() != inputs.len() {
                    return Err(format!(
                        "{} coefficients for {} inputs",
                        k.len(),
                        inputs.len()
                    ));
                }
            }
            Ok(first)
        }
        Op::Concat => {
            if inputs.iter().any(|s| s.h != first.h || s.w != first.w) {
                return Err("concatenates blobs of different sizes".into());
            }
            Ok(Shape {
                c: inputs.iter().map(|s| s.c).sum(),
                ..first
            })
        }
    }
}

/// For each blob, the index of the last node that reads it: the runner frees it after that.
pub fn last_uses(graph: &Graph) -> Vec<Option<usize>> {
    let mut last = vec![None; graph.blob_count];
    for (i, node) in graph.nodes.iter().enumerate() {
        for &b in &node.inputs {
            last[b] = Some(i);
        }
    }
    last
}
