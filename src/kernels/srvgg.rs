//! Recognises the SRVGG network (Real-ESRGAN's "compact" models: realesr-animevideov3,
//! realesr-general) in a loaded graph: a chain of 3×3 convolutions each followed by PReLU, a last
//! convolution to 3·s² channels, a pixel shuffle by s and the input upscaled by nearest neighbour
//! added back. Anything else keeps the generic path.

use crate::model::graph::{
    Activation, BinaryKind, Conv2d, EltwiseKind, Graph, Op, ResizeMode, ResizeTarget,
};

/// One convolution with its activation, weights laid out tap × in × out.
#[derive(Debug, Clone)]
pub struct Layer {
    pub cin: usize,
    pub cout: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    /// PReLU slopes per output channel; None for the last convolution.
    pub slopes: Option<Vec<f32>>,
}

#[derive(Debug, Clone)]
pub struct Srvgg {
    pub layers: Vec<Layer>,
    pub scale: usize,
}

pub fn recognise(graph: &Graph) -> Option<Srvgg> {
    let nodes = &graph.nodes;
    let mut layers = Vec::new();
    let mut blob = graph.input;
    let mut i = 0;
    // Convolutions, each followed by its PReLU unless it is the last.
    loop {
        let node = nodes.get(i)?;
        let Op::Conv(conv) = &node.op else {
            break;
        };
        if node.inputs != [blob] || !is_plain_3x3(conv) {
            return None;
        }
        i += 1;
        blob = node.output;
        let mut slopes = activation_slopes(conv.activation, conv.out_channels)?;
        if let Some(next) = nodes.get(i) {
            if let Op::PRelu(values) = &next.op {
                if slopes.is_some() || next.inputs != [blob] {
                    return None;
                }
                slopes = Some(broadcast(values, conv.out_channels)?);
                i += 1;
                blob = next.output;
            }
        }
        layers.push(Layer {
            cin: conv.in_channels,
            cout: conv.out_channels,
            weight: taps_in_out(conv),
            bias: conv
                .bias
                .clone()
                .unwrap_or_else(|| vec![0.0; conv.out_channels]),
            slopes,
        });
    }
    let last = layers.last()?;
    if layers.len() < 2
        || last.slopes.is_some()
        || layers[..layers.len() - 1]
            .iter()
            .any(|l| l.slopes.is_none())
    {
        return None;
    }
    if layers[0].cin != 3 || layers.windows(2).any(|p| p[0].cout != p[1].cin) {
        return None;
    }
    // Pixel shuffle, nearest resize of the input, their sum: in either order.
    let rest = &nodes[i..];
    if rest.len() != 3 {
        return None;
    }
    let mut shuffled = None;
    let mut base = None;
    let mut scale = 0;
    for node in &rest[..2] {
        match &node.op {
            Op::PixelShuffle(f) if node.inputs == [blob] => {
                scale = *f;
                shuffled = Some(node.output);
            }
            Op::Resize {
                mode: ResizeMode::Nearest,
                target: ResizeTarget::Scale { height, width },
                ..
            } if node.inputs == [graph.input] && height == width && height.fract() == 0.0 => {
                base = Some((node.output, *height as usize));
            }
            _ => return None,
        }
    }
    let (shuffled, (base, base_scale)) = (shuffled?, base?);
    let add = &rest[2];
    let sums_both = add.inputs == [shuffled, base] || add.inputs == [base, shuffled];
    if is_sum(&add.op) && sums_both && add.output == graph.output && base_scale == scale {
        if last.cout != 3 * scale * scale {
            return None;
        }
        Some(Srvgg { layers, scale })
    } else {
        None
    }
}

fn is_sum(op: &Op) -> bool {
    matches!(op, Op::Binary(BinaryKind::Add))
        || matches!(
            op,
            Op::Eltwise {
                kind: EltwiseKind::Sum,
                coefficients: None
            }
        )
}

fn is_plain_3x3(conv: &Conv2d) -> bool {
    conv.kernel == [3, 3]
        && conv.stride == [1, 1]
        && conv.padding == [1, 1]
        && conv.dilation == [1, 1]
}

/// A fused activation as PReLU slopes; None (the outer Option) when it is not a PReLU shape.
fn activation_slopes(activation: Activation, channels: usize) -> Option<Option<Vec<f32>>> {
    match activation {
        Activation::None => Some(None),
        Activation::Relu => Some(Some(vec![0.0; channels])),
        Activation::LeakyRelu(a) => Some(Some(vec![a; channels])),
        _ => None,
    }
}

fn broadcast(values: &[f32], channels: usize) -> Option<Vec<f32>> {
    match values.len() {
        1 => Some(vec![values[0]; channels]),
        n if n == channels => Some(values.to_vec()),
        _ => None,
    }
}

/// ncnn's out × in × 3 × 3 as tap × in × out.
fn taps_in_out(conv: &Conv2d) -> Vec<f32> {
    let (cin, cout) = (conv.in_channels, conv.out_channels);
    let mut out = vec![0.0; 9 * cin * cout];
    for co in 0..cout {
        for ci in 0..cin {
            for tap in 0..9 {
                out[(tap * cin + ci) * cout + co] = conv.weight[(co * cin + ci) * 9 + tap];
            }
        }
    }
    out
}
