//! Reads ncnn models: the `.param` text (layers and their parameters) and the `.bin` weights, into
//! a backend-independent `Graph`. Anything it does not understand is an error that names the
//! layer, its line and the key, or the byte offset in the weights: never a silently wrong model.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::graph::{
    Activation, BinaryKind, Conv2d, EltwiseKind, Graph, Node, Op, ResizeMode, ResizeTarget,
};
use crate::error::{Error, Result};

const MAGIC: &str = "7767517";
const TAG_FP16: u32 = 0x0130_6B47;
const TAG_FP32: u32 = 0;

/// A parameter value as written: ncnn does not say whether `1` is an int or a float, the layer does.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Scalar(String),
    Array(Vec<String>),
}

struct Layer<'a> {
    kind: &'a str,
    name: &'a str,
    inputs: Vec<&'a str>,
    outputs: Vec<&'a str>,
    params: BTreeMap<i32, Value>,
    line: usize,
}

/// Loads `PATH.param` and the `.bin` beside it.
pub fn load_files(param_path: &Path) -> Result<Graph> {
    let bin_path = param_path.with_extension("bin");
    let text = std::fs::read_to_string(param_path).map_err(|e| Error::io(param_path, e))?;
    let bin = std::fs::read(&bin_path).map_err(|e| Error::io(&bin_path, e))?;
    parse(&text, &bin, param_path, &bin_path)
}

/// Builds a graph from the text of a `.param` and the bytes of its `.bin`; the paths only name
/// the files in errors.
pub fn parse(text: &str, bin: &[u8], param_path: &Path, bin_path: &Path) -> Result<Graph> {
    build(text, bin, param_path, bin_path).map_err(|e| match e {
        Error::ModelParam { path, line, reason } if path.as_os_str().is_empty() => {
            Error::ModelParam {
                path: param_path.to_path_buf(),
                line,
                reason,
            }
        }
        other => other,
    })
}

fn build(text: &str, bin: &[u8], param_path: &Path, bin_path: &Path) -> Result<Graph> {
    let param_err = |line: usize, reason: String| Error::ModelParam {
        path: param_path.to_path_buf(),
        line,
        reason,
    };
    let layers = parse_layers(text).map_err(|(line, reason)| param_err(line, reason))?;
    let mut weights = Weights {
        bytes: bin,
        offset: 0,
        path: bin_path.to_path_buf(),
    };

    let mut blobs: HashMap<&str, usize> = HashMap::new();
    let mut blob_count = 0;
    let mut nodes = Vec::new();
    let mut input = None;
    let mut in_channels = None;

    for layer in &layers {
        let mut inputs = Vec::with_capacity(layer.inputs.len());
        for name in &layer.inputs {
            let id = blobs.get(name).copied().ok_or_else(|| {
                param_err(
                    layer.line,
                    format!(
                        "layer {} reads blob '{name}' before any layer writes it",
                        layer.name
                    ),
                )
            })?;
            inputs.push(id);
        }
        fn new_blob<'t>(
            blobs: &mut HashMap<&'t str, usize>,
            name: &'t str,
            count: &mut usize,
        ) -> usize {
            let id = *count;
            *count += 1;
            blobs.insert(name, id);
            id
        }
        let params = Params { layer };
        match layer.kind {
            "Input" => {
                params.only(&[0, 1, 2])?;
                expect_arity(layer, 0, 1)?;
                if input.is_some() {
                    return Err(param_err(layer.line, "a second Input layer".into()));
                }
                let c = params.int(2, 0)?;
                if c > 0 {
                    in_channels = Some(c as usize);
                }
                input = Some(new_blob(&mut blobs, layer.outputs[0], &mut blob_count));
            }
            "Split" => {
                params.only(&[])?;
                if layer.inputs.len() != 1 {
                    return Err(param_err(layer.line, "Split takes one input".into()));
                }
                // Its outputs are the same tensor under other names.
                for name in &layer.outputs {
                    blobs.insert(name, inputs[0]);
                }
            }
            kind => {
                expect_arity(layer, usize::MAX, 1)?;
                let op = match kind {
                    "Convolution" => Op::Conv(convolution(&params, &mut weights)?),
                    "PReLU" => {
                        params.only(&[0])?;
                        let n = params.positive(0, 1)?;
                        Op::PRelu(weights.raw_f32(n, layer)?)
                    }
                    "ReLU" => {
                        params.only(&[0])?;
                        let slope = params.float(0, 0.0)?;
                        Op::Activation(if slope == 0.0 {
                            Activation::Relu
                        } else {
                            Activation::LeakyRelu(slope)
                        })
                    }
                    "Sigmoid" => {
                        params.only(&[])?;
                        Op::Activation(Activation::Sigmoid)
                    }
                    "PixelShuffle" => {
                        params.only(&[0, 1])?;
                        params.require(1, 0, "only mode 0 (PyTorch order) is supported")?;
                        Op::PixelShuffle(params.positive(0, 1)?)
                    }
                    "Interp" => interp(&params)?,
                    "BinaryOp" => {
                        params.only(&[0, 1, 2])?;
                        params.require(1, 0, "a scalar operand is not supported")?;
                        expect_inputs(layer, 2)?;
                        Op::Binary(match params.int(0, 0)? {
                            0 => BinaryKind::Add,
                            1 => BinaryKind::Sub,
                            2 => BinaryKind::Mul,
                            v => return Err(params.unsupported(0, &v.to_string())),
                        })
                    }
                    "Eltwise" => {
                        params.only(&[1, 0])?;
                        let kind = match params.int(0, 1)? {
                            0 => EltwiseKind::Prod,
                            1 => EltwiseKind::Sum,
                            2 => EltwiseKind::Max,
                            v => return Err(params.unsupported(0, &v.to_string())),
                        };
                        let coefficients = params.float_array(1)?;
                        if coefficients.is_some() && kind != EltwiseKind::Sum {
                            return Err(params.unsupported(1, "coefficients on a non-sum"));
                        }
                        Op::Eltwise { kind, coefficients }
                    }
                    "Concat" => {
                        params.only(&[0])?;
                        params.require(0, 0, "only the channel axis (0) is supported")?;
                        Op::Concat
                    }
                    other => {
                        return Err(param_err(
                            layer.line,
                            format!("layer {} has unsupported type {other}", layer.name),
                        ))
                    }
                };
                if inputs.is_empty() {
                    return Err(param_err(
                        layer.line,
                        format!("layer {} has no input", layer.name),
                    ));
                }
                let output = new_blob(&mut blobs, layer.outputs[0], &mut blob_count);
                nodes.push(Node {
                    op,
                    inputs,
                    output,
                    name: layer.name.to_string(),
                    line: layer.line,
                });
            }
        }
    }

    if weights.offset != bin.len() {
        return Err(Error::ModelWeights {
            path: bin_path.to_path_buf(),
            offset: weights.offset,
            reason: format!(
                "{} bytes left over after the last layer's weights: the .bin does not belong to this .param",
                bin.len() - weights.offset
            ),
        });
    }
    let input = input.ok_or_else(|| param_err(0, "no Input layer".into()))?;
    let output = match blobs.get("output") {
        Some(&id) => id,
        None => nodes
            .last()
            .map(|n| n.output)
            .ok_or_else(|| param_err(0, "no layers after the Input".into()))?,
    };
    let in_channels = in_channels
        .or_else(|| first_conv_channels(&nodes, input))
        .unwrap_or(3);
    let mut graph = Graph {
        nodes,
        blob_count,
        input,
        output,
        in_channels,
        out_channels: 0,
    };
    let shape = graph
        .output_shape(64, 64)
        .map_err(|e| param_err(e.line, e.reason))?;
    graph.out_channels = shape.c;
    Ok(graph)
}

fn first_conv_channels(nodes: &[Node], input: usize) -> Option<usize> {
    nodes.iter().find_map(|n| match &n.op {
        Op::Conv(c) if n.inputs.contains(&input) => Some(c.in_channels),
        _ => None,
    })
}

fn expect_arity(layer: &Layer, inputs: usize, outputs: usize) -> Result<(), Error> {
    if layer.outputs.len() != outputs || (inputs != usize::MAX && layer.inputs.len() != inputs) {
        return Err(Error::ModelParam {
            path: PathBuf::new(),
            line: layer.line,
            reason: format!(
                "layer {} ({}) has {} inputs and {} outputs",
                layer.name,
                layer.kind,
                layer.inputs.len(),
                layer.outputs.len()
            ),
        });
    }
    Ok(())
}

fn expect_inputs(layer: &Layer, n: usize) -> Result<(), Error> {
    expect_arity(layer, n, 1)
}

fn convolution(params: &Params, weights: &mut Weights) -> Result<Conv2d> {
    params.only(&[
        0, 1, 11, 2, 12, 3, 13, 4, 14, 15, 16, 18, 5, 6, 8, 9, 10, 19,
    ])?;
    params.require(8, 0, "int8 quantised weights are not supported")?;
    params.require(19, 0, "dynamic weights are not supported")?;
    if params.float(18, 0.0)? != 0.0 {
        return Err(params.unsupported(18, "a non-zero pad value"));
    }
    let out_channels = params.positive(0, 0)?;
    let kw = params.positive(1, 0)?;
    let kh = params.positive(11, kw as i64)?;
    let dw = params.positive(2, 1)?;
    let dh = params.positive(12, dw as i64)?;
    let sw = params.positive(3, 1)?;
    let sh = params.positive(13, sw as i64)?;
    let pad_left = params.int(4, 0)?;
    let pad_top = params.int(14, pad_left)?;
    let pad_right = params.int(15, pad_left)?;
    let pad_bottom = params.int(16, pad_top)?;
    if pad_left < 0 || pad_top < 0 {
        return Err(params.unsupported(4, "automatic (SAME) padding"));
    }
    if pad_left != pad_right || pad_top != pad_bottom {
        return Err(params.unsupported(15, "asymmetric padding"));
    }
    let bias_term = params.int(5, 0)? != 0;
    let weight_count = params.positive(6, 0)?;
    let per_output = kh * kw;
    if weight_count % (out_channels * per_output) != 0 {
        return Err(params.unsupported(
            6,
            &format!("{weight_count} weights for {out_channels} outputs of {kh}x{kw}"),
        ));
    }
    let in_channels = weight_count / (out_channels * per_output);
    let activation = match params.int(9, 0)? {
        0 => Activation::None,
        1 => Activation::Relu,
        2 => Activation::LeakyRelu(
            params
                .float_array(10)?
                .and_then(|a| a.first().copied())
                .unwrap_or(0.0),
        ),
        3 => match params.float_array(10)?.as_deref() {
            Some([min, max]) => Activation::Clip {
                min: *min,
                max: *max,
            },
            _ => return Err(params.unsupported(10, "Clip needs two values")),
        },
        4 => Activation::Sigmoid,
        v => return Err(params.unsupported(9, &format!("activation type {v}"))),
    };
    let weight = weights.tagged(weight_count, params.layer)?;
    let bias = if bias_term {
        Some(weights.raw_f32(out_channels, params.layer)?)
    } else {
        None
    };
    Ok(Conv2d {
        out_channels,
        in_channels,
        kernel: [kh, kw],
        stride: [sh, sw],
        padding: [pad_top as usize, pad_left as usize],
        dilation: [dh, dw],
        weight,
        bias,
        activation,
    })
}

fn interp(params: &Params) -> Result<Op> {
    params.only(&[0, 1, 2, 3, 4, 5, 6])?;
    params.require(5, 0, "a dynamic target size is not supported")?;
    let mode = match params.int(0, 0)? {
        1 => ResizeMode::Nearest,
        2 => ResizeMode::Bilinear,
        3 => ResizeMode::Bicubic,
        v => return Err(params.unsupported(0, &format!("resize type {v}"))),
    };
    let (height, width) = (params.int(3, 0)?, params.int(4, 0)?);
    let target = if height > 0 && width > 0 {
        ResizeTarget::Size {
            height: height as usize,
            width: width as usize,
        }
    } else {
        let (hs, ws) = (params.float(1, 1.0)?, params.float(2, 1.0)?);
        if !(hs > 0.0 && ws > 0.0) {
            return Err(params.unsupported(1, "a scale that is not positive"));
        }
        ResizeTarget::Scale {
            height: hs,
            width: ws,
        }
    };
    Ok(Op::Resize {
        mode,
        target,
        align_corners: params.int(6, 0)? != 0,
    })
}

/// Typed access to one layer's parameters, with errors that name the layer, line and key.
struct Params<'a, 'b> {
    layer: &'b Layer<'a>,
}

impl Params<'_, '_> {
    fn err(&self, reason: String) -> Error {
        Error::ModelParam {
            path: PathBuf::new(),
            line: self.layer.line,
            reason: format!("layer {} ({}): {reason}", self.layer.name, self.layer.kind),
        }
    }

    fn unsupported(&self, key: i32, what: &str) -> Error {
        self.err(format!("parameter {key}: {what} is not supported"))
    }

    fn only(&self, known: &[i32]) -> Result<()> {
        match self.layer.params.keys().find(|k| !known.contains(k)) {
            Some(k) => Err(self.err(format!("parameter {k} is not supported"))),
            None => Ok(()),
        }
    }

    fn scalar(&self, key: i32) -> Result<Option<&str>> {
        match self.layer.params.get(&key) {
            None => Ok(None),
            Some(Value::Scalar(s)) => Ok(Some(s)),
            Some(Value::Array(_)) => Err(self.err(format!("parameter {key} should be one value"))),
        }
    }

    fn int(&self, key: i32, default: i64) -> Result<i64> {
        match self.scalar(key)? {
            None => Ok(default),
            Some(s) => s
                .parse()
                .map_err(|_| self.err(format!("parameter {key}={s} should be an integer"))),
        }
    }

    fn positive(&self, key: i32, default: i64) -> Result<usize> {
        let v = self.int(key, default)?;
        if v <= 0 {
            return Err(self.err(format!("parameter {key}={v} should be positive")));
        }
        Ok(v as usize)
    }

    fn float(&self, key: i32, default: f32) -> Result<f32> {
        match self.scalar(key)? {
            None => Ok(default),
            Some(s) => s
                .parse()
                .map_err(|_| self.err(format!("parameter {key}={s} should be a number"))),
        }
    }

    fn require(&self, key: i32, expected: i64, why: &str) -> Result<()> {
        if self.int(key, expected)? != expected {
            return Err(self.err(format!("parameter {key}: {why}")));
        }
        Ok(())
    }

    fn float_array(&self, key: i32) -> Result<Option<Vec<f32>>> {
        match self.layer.params.get(&key) {
            None => Ok(None),
            Some(Value::Scalar(_)) => Err(self.err(format!("parameter {key} should be an array"))),
            Some(Value::Array(items)) => items
                .iter()
                .map(|s| {
                    s.parse()
                        .map_err(|_| self.err(format!("parameter {key}: '{s}' is not a number")))
                })
                .collect::<Result<Vec<f32>>>()
                .map(Some),
        }
    }
}

fn parse_layers(text: &str) -> Result<Vec<Layer<'_>>, (usize, String)> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());
    match lines.next() {
        Some((_, MAGIC)) => {}
        Some((n, other)) => {
            return Err((
                n,
                format!("magic is '{other}', expected {MAGIC}: not an ncnn .param file"),
            ))
        }
        None => return Err((1, "empty file".into())),
    }
    let (n, counts) = lines.next().ok_or((2, "no layer count".to_string()))?;
    let counts: Vec<usize> = counts
        .split_whitespace()
        .map(|s| s.parse().map_err(|_| (n, format!("'{s}' is not a count"))))
        .collect::<Result<_, _>>()?;
    let [layer_count, _blob_count] = counts[..] else {
        return Err((n, "expected 'layer_count blob_count'".into()));
    };
    let layers: Vec<Layer> = lines
        .map(|(n, l)| parse_layer(n, l))
        .collect::<Result<_, _>>()?;
    if layers.len() != layer_count {
        return Err((
            n,
            format!(
                "declares {layer_count} layers, the file has {}",
                layers.len()
            ),
        ));
    }
    Ok(layers)
}

fn parse_layer(line: usize, text: &str) -> Result<Layer<'_>, (usize, String)> {
    let mut words = text.split_whitespace();
    let mut next = |what: &str| words.next().ok_or((line, format!("missing {what}")));
    let kind = next("layer type")?;
    let name = next("layer name")?;
    let count = |s: &str| -> Result<usize, (usize, String)> {
        s.parse()
            .map_err(|_| (line, format!("'{s}' is not a blob count")))
    };
    let n_in = count(next("input count")?)?;
    let n_out = count(next("output count")?)?;
    let mut inputs = Vec::with_capacity(n_in);
    for _ in 0..n_in {
        inputs.push(next("input blob name")?);
    }
    let mut outputs = Vec::with_capacity(n_out);
    for _ in 0..n_out {
        outputs.push(next("output blob name")?);
    }
    let mut params = BTreeMap::new();
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or((line, format!("'{word}' is not key=value")))?;
        let key: i32 = key
            .parse()
            .map_err(|_| (line, format!("'{key}' is not a parameter key")))?;
        // Array parameters are written under the key -23300 - k as `n,v1,v2,...`.
        if key <= -23300 {
            let mut items = value.split(',').map(str::to_string);
            let n: usize = items
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or((line, format!("array parameter {key} has no length")))?;
            let items: Vec<String> = items.collect();
            if items.len() != n {
                return Err((
                    line,
                    format!(
                        "array parameter {key} declares {n} values, has {}",
                        items.len()
                    ),
                ));
            }
            params.insert(-23300 - key, Value::Array(items));
        } else {
            params.insert(key, Value::Scalar(value.to_string()));
        }
    }
    Ok(Layer {
        kind,
        name,
        inputs,
        outputs,
        params,
        line,
    })
}

/// A cursor over the `.bin`, read in layer order.
struct Weights<'a> {
    bytes: &'a [u8],
    offset: usize,
    path: PathBuf,
}

impl Weights<'_> {
    fn take(&mut self, n: usize, layer: &Layer) -> Result<&[u8]> {
        let end = self
            .offset
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Error::ModelWeights {
                path: self.path.clone(),
                offset: self.offset,
                reason: format!(
                    "file ends while reading layer {} (line {}): needs {n} more bytes, has {}",
                    layer.name,
                    layer.line,
                    self.bytes.len() - self.offset
                ),
            });
        };
        let out = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(out)
    }

    fn raw_f32(&mut self, n: usize, layer: &Layer) -> Result<Vec<f32>> {
        Ok(self
            .take(n * 4, layer)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// A kernel: a 4-byte storage tag, then the values.
    fn tagged(&mut self, n: usize, layer: &Layer) -> Result<Vec<f32>> {
        let at = self.offset;
        let tag = self.take(4, layer)?;
        let tag = u32::from_le_bytes([tag[0], tag[1], tag[2], tag[3]]);
        match tag {
            TAG_FP16 => {
                let padded = (n * 2).div_ceil(4) * 4;
                let bytes = self.take(padded, layer)?;
                Ok(bytes[..n * 2]
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect())
            }
            TAG_FP32 => self.raw_f32(n, layer),
            other => Err(Error::ModelWeights {
                path: self.path.clone(),
                offset: at,
                reason: format!(
                    "layer {} (line {}): weight tag {other:#010x} is not supported (fp16 {TAG_FP16:#010x} or fp32 0)",
                    layer.name, layer.line
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp16_kernel(values: &[f32]) -> Vec<u8> {
        let mut out = TAG_FP16.to_le_bytes().to_vec();
        for v in values {
            out.extend(half::f16::from_f32(*v).to_le_bytes());
        }
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out
    }

    fn fp32(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A 1x1 convolution from 3 to 3 channels with bias, then a PReLU with one slope.
    const TINY: &str = "7767517\n3 3\n\
        Input data 0 1 data\n\
        Convolution conv 1 1 data c 0=3 1=1 5=1 6=9\n\
        PReLU act 1 1 c output 0=1\n";

    fn tiny_bin(kernel: Vec<u8>) -> Vec<u8> {
        let mut bin = kernel;
        bin.extend(fp32(&[0.5, 0.0, -0.5]));
        bin.extend(fp32(&[0.25]));
        bin
    }

    fn parse_str(text: &str, bin: &[u8]) -> Result<Graph> {
        parse(text, bin, Path::new("m.param"), Path::new("m.bin"))
    }

    const IDENTITY: [f32; 9] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];

    #[test]
    fn reads_fp16_and_fp32_kernels_alike() {
        for bin in [tiny_bin(fp16_kernel(&IDENTITY)), {
            let mut k = TAG_FP32.to_le_bytes().to_vec();
            k.extend(fp32(&IDENTITY));
            tiny_bin(k)
        }] {
            let g = parse_str(TINY, &bin).unwrap();
            assert_eq!(g.nodes.len(), 2);
            let Op::Conv(c) = &g.nodes[0].op else {
                panic!("not a conv")
            };
            assert_eq!(c.weight, IDENTITY);
            assert_eq!(c.bias.as_deref(), Some(&[0.5, 0.0, -0.5][..]));
            assert_eq!((c.in_channels, c.out_channels, c.kernel), (3, 3, [1, 1]));
            let Op::PRelu(s) = &g.nodes[1].op else {
                panic!("not a prelu")
            };
            assert_eq!(s, &[0.25]);
        }
    }

    #[test]
    fn parses_the_embedded_model() {
        let g = super::super::load(super::super::DEFAULT_MODEL, None).unwrap();
        assert_eq!(g.scale, 4);
        assert_eq!(
            g.graph
                .nodes
                .iter()
                .filter(|n| matches!(n.op, Op::Conv(_)))
                .count(),
            18
        );
        assert_eq!(g.graph.output_shape(10, 7).unwrap().h, 40);
        assert_eq!(g.graph.receptive_radius(), 18);
        let x3 = super::super::load(super::super::DEFAULT_MODEL, Some(3)).unwrap();
        assert_eq!(x3.graph.output_shape(10, 7).unwrap().w, 21);
    }

    #[test]
    fn parses_array_parameters_and_eltwise_coefficients() {
        let text = "7767517\n4 4\nInput data 0 1 data\nSplit s 1 2 data a b\n\
            Eltwise e 2 1 a b x 0=1 -23301=2,2.000000e-01,1.0\n\
            Convolution c 1 1 x output 0=3 1=1 6=9 9=2 -23310=1,2.000000e-01\n";
        let mut bin = fp16_kernel(&IDENTITY);
        bin.truncate(bin.len());
        let g = parse_str(text, &bin).unwrap();
        let Op::Eltwise { coefficients, .. } = &g.nodes[0].op else {
            panic!()
        };
        assert_eq!(coefficients.as_deref(), Some(&[0.2, 1.0][..]));
        assert_eq!(g.nodes[0].inputs, vec![g.input, g.input]);
        let Op::Conv(c) = &g.nodes[1].op else {
            panic!()
        };
        assert_eq!(c.activation, Activation::LeakyRelu(0.2));
    }

    fn error_text(text: &str, bin: &[u8]) -> String {
        parse_str(text, bin).unwrap_err().to_string()
    }

    #[test]
    fn wrong_magic_is_an_error_naming_the_file() {
        let e = error_text(
            &TINY.replace("7767517", "1234"),
            &tiny_bin(fp16_kernel(&IDENTITY)),
        );
        assert!(e.starts_with("m.param:1:") && e.contains("magic"), "{e}");
    }

    #[test]
    fn unsupported_layer_names_layer_and_line() {
        let text = TINY.replace("PReLU act", "Deconvolution act");
        let e = error_text(&text, &tiny_bin(fp16_kernel(&IDENTITY)));
        assert!(
            e.contains("m.param:5:") && e.contains("act") && e.contains("Deconvolution"),
            "{e}"
        );
    }

    #[test]
    fn unsupported_parameter_names_the_key() {
        let text = TINY.replace("6=9", "6=9 7=2");
        let e = error_text(&text, &tiny_bin(fp16_kernel(&IDENTITY)));
        assert!(
            e.contains("m.param:4:") && e.contains("conv") && e.contains("parameter 7"),
            "{e}"
        );
    }

    #[test]
    fn truncated_weights_give_the_offset() {
        let mut bin = tiny_bin(fp16_kernel(&IDENTITY));
        bin.truncate(bin.len() - 2);
        let e = error_text(TINY, &bin);
        assert!(
            e.starts_with("m.bin: at byte 36:") && e.contains("act"),
            "{e}"
        );
    }

    #[test]
    fn oversized_weights_are_refused() {
        let mut bin = tiny_bin(fp16_kernel(&IDENTITY));
        bin.extend([0, 0, 0, 0]);
        let e = error_text(TINY, &bin);
        assert!(e.contains("at byte 40") && e.contains("left over"), "{e}");
    }

    #[test]
    fn unknown_weight_tag_is_refused_with_its_offset() {
        let mut k = 0x000D_4B38u32.to_le_bytes().to_vec();
        k.extend([0u8; 12]);
        let e = error_text(TINY, &tiny_bin(k));
        assert!(
            e.starts_with("m.bin: at byte 0:") && e.contains("tag"),
            "{e}"
        );
    }

    #[test]
    fn blob_used_before_it_exists_is_an_error() {
        let text = TINY.replace("1 1 c output", "1 1 nowhere output");
        let e = error_text(&text, &tiny_bin(fp16_kernel(&IDENTITY)));
        assert!(e.contains("m.param:5:") && e.contains("nowhere"), "{e}");
    }

    #[test]
    fn channel_mismatch_is_caught_at_load() {
        let text = TINY.replace("0=1\n", "0=2\n");
        let mut bin = fp16_kernel(&IDENTITY);
        bin.extend(fp32(&[0.5, 0.0, -0.5]));
        bin.extend(fp32(&[0.25, 0.5]));
        let e = error_text(&text, &bin);
        assert!(e.contains("m.param:5:") && e.contains("slopes"), "{e}");
    }

    #[test]
    fn layer_count_must_match() {
        let e = error_text(
            &TINY.replace("3 3", "4 3"),
            &tiny_bin(fp16_kernel(&IDENTITY)),
        );
        assert!(e.contains("declares 4 layers"), "{e}");
    }
}
