//! Runs a `Graph` on any burn backend: weights uploaded once (cast to f16 when asked), then one
//! forward per image or tile. Blobs are dropped after their last reader so memory stays at the
//! graph's live set, not its total.

use burn::tensor::activation::{leaky_relu, prelu, relu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv2d, interpolate};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

use super::graph::{
    last_uses, Activation, BinaryKind, EltwiseKind, Graph, Op, ResizeMode, ResizeTarget,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F16,
    F32,
}

impl Precision {
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F16 => FloatDType::F16,
            Precision::F32 => FloatDType::F32,
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Precision::F16 => 2,
            Precision::F32 => 4,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F16 => "fp16",
            Precision::F32 => "fp32",
        })
    }
}

/// Per-node device data: weights for convolutions and PReLU, nothing for the rest.
enum Params<B: Backend> {
    None,
    Conv {
        weight: Tensor<B, 4>,
        bias: Option<Tensor<B, 1>>,
    },
    Slopes(Tensor<B, 1>),
}

pub struct Network<B: Backend> {
    graph: Graph,
    params: Vec<Params<B>>,
    last_use: Vec<Option<usize>>,
    precision: Precision,
    device: B::Device,
}

impl<B: Backend> Network<B> {
    pub fn new(graph: Graph, precision: Precision, device: &B::Device) -> Self {
        let upload = |values: &[f32]| -> Tensor<B, 1> {
            Tensor::<B, 1>::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
                .cast(precision.dtype())
        };
        let params = graph
            .nodes
            .iter()
            .map(|node| match &node.op {
                Op::Conv(c) => {
                    let shape = [c.out_channels, c.in_channels, c.kernel[0], c.kernel[1]];
                    Params::Conv {
                        weight: upload(&c.weight).reshape(shape),
                        bias: c.bias.as_ref().map(|b| upload(b)),
                    }
                }
                Op::PRelu(slopes) => Params::Slopes(upload(slopes)),
                _ => Params::None,
            })
            .collect();
        let last_use = last_uses(&graph);
        Self {
            graph,
            params,
            last_use,
            precision,
            device: device.clone(),
        }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// `input` is [N, C, H, W] in the network's value range (0..1 for these models), f32.
    /// Returns f32 of the same layout, unclamped.
    pub fn forward(&self, input: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut blobs: Vec<Option<Tensor<B, 4>>> = vec![None; self.graph.blob_count];
        blobs[self.graph.input] = Some(input.cast(self.precision.dtype()));
        for (i, node) in self.graph.nodes.iter().enumerate() {
            // Tensors are shared handles: clone the inputs, then drop the blobs read for the last
            // time so that the op holds the only reference and can reuse the buffer.
            let inputs: Vec<Tensor<B, 4>> = node
                .inputs
                .iter()
                .map(|&b| blobs[b].clone().expect("shapes were checked at load"))
                .collect();
            for &b in &node.inputs {
                if self.last_use[b] == Some(i) && b != self.graph.output {
                    blobs[b] = None;
                }
            }
            blobs[node.output] = Some(self.apply(i, &node.op, inputs));
        }
        blobs[self.graph.output]
            .take()
            .expect("shapes were checked at load")
            .cast(FloatDType::F32)
    }

    /// Runs node `index` alone on `inputs` (f32, cast to the network's precision on the way in and
    /// back to f32 on the way out): lets tests check every operation of a backend in isolation.
    pub fn run_node(&self, index: usize, inputs: Vec<Tensor<B, 4>>) -> Tensor<B, 4> {
        let dtype = self.precision.dtype();
        let inputs = inputs.into_iter().map(|t| t.cast(dtype)).collect();
        self.apply(index, &self.graph.nodes[index].op, inputs)
            .cast(FloatDType::F32)
    }

    fn apply(&self, index: usize, op: &Op, mut inputs: Vec<Tensor<B, 4>>) -> Tensor<B, 4> {
        let x = inputs.remove(0);
        match (op, &self.params[index]) {
            (Op::Conv(c), Params::Conv { weight, bias }) => {
                let options = ConvOptions::new(c.stride, c.padding, c.dilation, 1);
                activate(
                    conv2d(x, weight.clone(), bias.clone(), options),
                    c.activation,
                )
            }
            (Op::PRelu(_), Params::Slopes(alpha)) => prelu(x, alpha.clone()),
            (Op::Activation(a), _) => activate(x, *a),
            (Op::PixelShuffle(f), _) => pixel_shuffle(x, *f),
            (
                Op::Resize {
                    mode,
                    target,
                    align_corners,
                },
                _,
            ) => {
                let [_, _, h, w] = x.dims();
                let size = match *target {
                    ResizeTarget::Scale { height, width } => {
                        [(h as f32 * height) as usize, (w as f32 * width) as usize]
                    }
                    ResizeTarget::Size { height, width } => [height, width],
                };
                resize(x, size, *mode, *align_corners)
            }
            (Op::Binary(kind), _) => {
                let y = inputs.remove(0);
                match kind {
                    BinaryKind::Add => x + y,
                    BinaryKind::Sub => x - y,
                    BinaryKind::Mul => x * y,
                }
            }
            (Op::Eltwise { kind, coefficients }, _) => {
                let scale = |t: Tensor<B, 4>, i: usize| match coefficients {
                    Some(k) if k[i] != 1.0 => t * k[i],
                    _ => t,
                };
                let mut acc = scale(x, 0);
                for (i, y) in inputs.into_iter().enumerate() {
                    let y = scale(y, i + 1);
                    acc = match kind {
                        EltwiseKind::Sum => acc + y,
                        EltwiseKind::Prod => acc * y,
                        EltwiseKind::Max => acc.max_pair(y),
                    };
                }
                acc
            }
            (Op::Concat, _) => {
                let mut all = vec![x];
                all.extend(inputs);
                Tensor::cat(all, 1)
            }
            _ => unreachable!("parameters are built from the same op list"),
        }
    }
}

fn activate<B: Backend>(x: Tensor<B, 4>, activation: Activation) -> Tensor<B, 4> {
    match activation {
        Activation::None => x,
        Activation::Relu => relu(x),
        Activation::LeakyRelu(slope) => leaky_relu(x, slope as f64),
        Activation::Clip { min, max } => x.clamp(min, max),
        Activation::Sigmoid => sigmoid(x),
    }
}

/// Depth to space in PyTorch's order: channel c*f*f + i*f + j goes to (c, y*f + i, x*f + j).
pub fn pixel_shuffle<B: Backend>(x: Tensor<B, 4>, f: usize) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let out_c = c / (f * f);
    x.reshape([n * out_c, f, f, h, w])
        .permute([0, 3, 1, 4, 2])
        .reshape([n, out_c, h * f, w * f])
}

pub fn resize<B: Backend>(
    x: Tensor<B, 4>,
    size: [usize; 2],
    mode: ResizeMode,
    align_corners: bool,
) -> Tensor<B, 4> {
    let mode = match mode {
        ResizeMode::Nearest => InterpolateMode::Nearest,
        ResizeMode::Bilinear => InterpolateMode::Bilinear,
        ResizeMode::Bicubic => InterpolateMode::Bicubic,
        ResizeMode::Lanczos3 => InterpolateMode::Lanczos3,
    };
    let options = InterpolateOptions::new(mode).with_align_corners(align_corners);
    interpolate(x, size, options)
}

/// Whether the backend stores and computes f16 on this device.
pub fn supports_f16<B: Backend>(device: &B::Device) -> bool {
    B::supports_dtype(device, DType::F16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::graph::{Conv2d, Node};
    use burn::backend::ndarray::NdArrayDevice;
    use burn::backend::NdArray;

    /// blob 1 = x + 1 and blob 2 = x + 2, by 1×1 identity convolutions with a bias.
    fn plus(k: f32, output: usize) -> Node {
        let mut weight = vec![0.0; 9];
        for c in 0..3 {
            weight[c * 3 + c] = 1.0;
        }
        Node {
            op: Op::Conv(Conv2d {
                out_channels: 3,
                in_channels: 3,
                kernel: [1, 1],
                stride: [1, 1],
                padding: [0, 0],
                dilation: [1, 1],
                weight,
                bias: Some(vec![k; 3]),
                activation: Activation::None,
            }),
            inputs: vec![0],
            output,
            name: format!("plus{k}"),
            line: 0,
        }
    }

    fn run(last: Op, out_channels: usize) -> Vec<f32> {
        let graph = Graph {
            nodes: vec![
                plus(1.0, 1),
                plus(2.0, 2),
                Node {
                    op: last,
                    inputs: vec![0, 1, 2],
                    output: 3,
                    name: "last".into(),
                    line: 0,
                },
            ],
            blob_count: 4,
            input: 0,
            output: 3,
            in_channels: 3,
            out_channels,
        };
        let device = NdArrayDevice::Cpu;
        let net = Network::<NdArray>::new(graph, Precision::F32, &device);
        let input = Tensor::<NdArray, 4>::from_data(
            TensorData::new(vec![0.5f32; 3], [1, 3, 1, 1]),
            &device,
        );
        net.forward(input).into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn concat_keeps_its_inputs_in_order() {
        let out = run(Op::Concat, 9);
        assert_eq!(out, vec![0.5, 0.5, 0.5, 1.5, 1.5, 1.5, 2.5, 2.5, 2.5]);
    }

    #[test]
    fn eltwise_applies_each_coefficient_to_its_own_input() {
        let out = run(
            Op::Eltwise {
                kind: EltwiseKind::Sum,
                coefficients: Some(vec![1.0, 10.0, 100.0]),
            },
            3,
        );
        assert_eq!(out, vec![0.5 + 15.0 + 250.0; 3]);
    }

    #[test]
    fn pixel_shuffle_follows_pytorch_order() {
        let device = NdArrayDevice::Cpu;
        let x = Tensor::<NdArray, 4>::from_data(
            TensorData::new((0..8).map(|v| v as f32).collect::<Vec<_>>(), [1, 8, 1, 1]),
            &device,
        );
        // 2 output channels of 2×2: channel c, row i, column j comes from input channel c*4 + i*2 + j.
        let out = pixel_shuffle(x, 2).into_data().to_vec::<f32>().unwrap();
        assert_eq!(out, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    }
}
