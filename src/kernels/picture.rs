//! Kernels that prepare a decoded picture on the device: Y'CbCr surfaces (NVDEC's NV12, P010 and
//! P016 in place; software decoders' planar 4:2:0, 4:2:2 and 4:4:4 once uploaded) to the model's
//! RGB planes, those planes packed in 8 bits for duplicate detection, and the mirror padding the
//! upscaler adds around a picture.
//!
//! A surface is handled as 32-bit words (8-bit samples four to a word, 16-bit ones two), so the
//! same kernels run where storage buffers have no 8- or 16-bit access (wgpu).

use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;
use cubecl::server::Handle;

/// Where a Y'CbCr surface's planes lie in its words: the luma rows, then the chroma rows, each at
/// its own pitch (multiples of 4 bytes). Chroma is one plane of interleaved Cb/Cr (NV12, P010 and
/// P016: NVDEC's surfaces) or a Cb plane then a Cr plane (yuv420p, yuv422p, yuv444p and their deep
/// forms: software decoders').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct YuvSurface {
    pub width: usize,
    pub height: usize,
    pub luma_pitch: usize,
    pub chroma_pitch: usize,
    /// Where the Cb rows start, and the Cr rows (the same plane when interleaved).
    pub cb_at: usize,
    pub cr_at: usize,
    pub interleaved: bool,
    /// log2 of the chroma subsampling across and down: (1, 1) for 4:2:0, (0, 0) for 4:4:4.
    pub chroma_shift: (u32, u32),
    /// 16-bit samples instead of 8-bit ones.
    pub wide: bool,
    /// How far the value sits above bit 0 in its sample: 6 for P010.
    pub shift: u32,
}

impl YuvSurface {
    /// A 4:2:0 surface with interleaved chroma whose luma rows are `luma_bytes` apart and whose
    /// chroma rows, `chroma_bytes` apart, follow them; both multiples of 4.
    pub fn semi_planar(
        (width, height): (usize, usize),
        (luma_bytes, chroma_bytes): (usize, usize),
        wide: bool,
        shift: u32,
    ) -> Self {
        let chroma_at = luma_bytes / 4 * height;
        Self {
            width,
            height,
            luma_pitch: luma_bytes / 4,
            chroma_pitch: chroma_bytes / 4,
            cb_at: chroma_at,
            cr_at: chroma_at,
            interleaved: true,
            chroma_shift: (1, 1),
            wide,
            shift,
        }
    }

    /// Luma rows `luma_bytes` apart, then the Cb plane, then the Cr plane, their rows
    /// `chroma_bytes` apart; both multiples of 4.
    pub fn planar(
        (width, height): (usize, usize),
        (luma_bytes, chroma_bytes): (usize, usize),
        chroma_shift: (u32, u32),
        wide: bool,
        shift: u32,
    ) -> Self {
        let cb_at = luma_bytes / 4 * height;
        let chroma_rows = height.div_ceil(1 << chroma_shift.1);
        Self {
            width,
            height,
            luma_pitch: luma_bytes / 4,
            chroma_pitch: chroma_bytes / 4,
            cb_at,
            cr_at: cb_at + chroma_bytes / 4 * chroma_rows,
            interleaved: false,
            chroma_shift,
            wide,
            shift,
        }
    }

    pub fn chroma_rows(&self) -> usize {
        self.height.div_ceil(1 << self.chroma_shift.1)
    }

    pub fn words(&self) -> usize {
        self.cr_at + self.chroma_pitch * self.chroma_rows()
    }
}

/// Y'CbCr -> R'G'B' for one stream: the matrix (its Kr and Kb), the range, the sample depth, where
/// chroma samples sit, and the precision the result is rounded to (that of the host path: 8 bits,
/// or 16 for deep sources).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YuvToRgb {
    pub kr: f32,
    pub kb: f32,
    pub full_range: bool,
    pub depth: u32,
    /// Chroma sample 0's position in luma pixels, across and down: (0, 0.5) for MPEG-2's "left".
    pub siting: (f32, f32),
    pub deep_output: bool,
}

impl YuvToRgb {
    /// The eleven numbers `yuv_to_planes` reads.
    pub fn coefficients(&self) -> [f32; 11] {
        let unit = (1u32 << (self.depth - 8)) as f32;
        let (y_offset, y_scale, c_scale) = if self.full_range {
            let max = ((1u64 << self.depth) - 1) as f32;
            (0.0, 1.0 / max, 1.0 / max)
        } else {
            (16.0 * unit, 1.0 / (219.0 * unit), 1.0 / (224.0 * unit))
        };
        let (kr, kb) = (self.kr, self.kb);
        let kg = 1.0 - kr - kb;
        [
            y_offset,
            y_scale,
            128.0 * unit,
            c_scale,
            2.0 * (1.0 - kr),
            -2.0 * kb * (1.0 - kb) / kg,
            -2.0 * kr * (1.0 - kr) / kg,
            2.0 * (1.0 - kb),
            self.siting.0,
            self.siting.1,
            if self.deep_output { 65535.0 } else { 255.0 },
        ]
    }
}

#[cube]
fn sample(
    surface: &Array<u32>,
    row_at: usize,
    x: usize,
    shift: u32,
    #[comptime] wide: bool,
) -> f32 {
    let value = if comptime![wide] {
        (surface[row_at + x / 2] >> (16 * u32::cast_from(x % 2))) & 65535
    } else {
        (surface[row_at + x / 4] >> (8 * u32::cast_from(x % 4))) & 255
    };
    f32::cast_from(value >> shift)
}

/// `at` clamped to 0..n.
#[cube]
fn clamp_index(at: i32, n: u32) -> usize {
    let mut i = at;
    if i < 0 {
        i = 0;
    }
    let last = i32::cast_from(n) - 1;
    if i > last {
        i = last;
    }
    usize::cast_from(i)
}

/// One unit per pixel: luma as is, chroma interpolated bilinearly from its sited samples (read
/// directly where it is not subsampled), the matrix applied, then clamped to 0..1 and rounded to
/// the output precision, as swscale's RGB is. The layout's numbers are `YuvSurface`'s, with
/// `interleaved` 1 or 0.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn yuv_to_planes(
    surface: &Array<u32>,
    k: &Array<f32>,
    planes: &mut Array<f32>,
    width: u32,
    height: u32,
    luma_pitch: u32,
    chroma_pitch: u32,
    cb_at: u32,
    cr_at: u32,
    interleaved: u32,
    shift_x: u32,
    shift_y: u32,
    shift: u32,
    #[comptime] wide: bool,
) {
    let index = ABSOLUTE_POS;
    let w = width as usize;
    let pixels = w * height as usize;
    if index < pixels {
        let x = index % w;
        let y = index / w;
        let chroma_pitch = chroma_pitch as usize;
        // A chroma sample's step within its row, and Cr's place after Cb in an interleaved one.
        let step = 1 + interleaved as usize;
        let cr_offset = interleaved as usize;
        let luma = sample(surface, y * luma_pitch as usize, x, shift, wide);
        let cw = (width + (1 << shift_x) - 1) >> shift_x;
        let ch = (height + (1 << shift_y) - 1) >> shift_y;
        let u = (f32::cast_from(x) - k[8]) / f32::cast_from(1u32 << shift_x);
        let v = (f32::cast_from(y) - k[9]) / f32::cast_from(1u32 << shift_y);
        let (u0, v0) = (f32::floor(u), f32::floor(v));
        let (fx, fy) = (u - u0, v - v0);
        let (i0, j0) = (i32::cast_from(u0), i32::cast_from(v0));
        let (xa, xb) = (clamp_index(i0, cw), clamp_index(i0 + 1, cw));
        let rows = (clamp_index(j0, ch), clamp_index(j0 + 1, ch));
        let mut cb = 0.0f32;
        let mut cr = 0.0f32;
        #[unroll]
        for c in 0..2usize {
            let plane = cb_at as usize + c * (cr_at - cb_at) as usize;
            let top = plane + rows.0 * chroma_pitch;
            let bottom = plane + rows.1 * chroma_pitch;
            let (ea, eb) = (step * xa + c * cr_offset, step * xb + c * cr_offset);
            let tl = sample(surface, top, ea, shift, wide);
            let tr = sample(surface, top, eb, shift, wide);
            let bl = sample(surface, bottom, ea, shift, wide);
            let br = sample(surface, bottom, eb, shift, wide);
            let upper = tl + (tr - tl) * fx;
            let lower = bl + (br - bl) * fx;
            let value = upper + (lower - upper) * fy;
            if c == 0 {
                cb = value;
            } else {
                cr = value;
            }
        }
        let yy = (luma - k[0]) * k[1];
        let pb = (cb - k[2]) * k[3];
        let pr = (cr - k[2]) * k[3];
        let rgb = (yy + k[4] * pr, yy + k[5] * pb + k[6] * pr, yy + k[7] * pb);
        let levels = k[10];
        planes[index] = f32::floor(clamp(rgb.0, 0.0, 1.0) * levels + 0.5) / levels;
        planes[pixels + index] = f32::floor(clamp(rgb.1, 0.0, 1.0) * levels + 0.5) / levels;
        planes[2 * pixels + index] = f32::floor(clamp(rgb.2, 0.0, 1.0) * levels + 0.5) / levels;
    }
}

/// One unit per word of `dedup::features::Packed`: four 8-bit samples of one row of one plane,
/// zero past the picture. Deep pictures take the host's 16 -> 8 bit rounding.
#[cube(launch_unchecked)]
pub fn pack_rgb8(
    planes: &Array<f32>,
    words: &mut Array<u32>,
    width: u32,
    height: u32,
    words_per_row: u32,
    rows: u32,
    #[comptime] deep: bool,
) {
    let index = ABSOLUTE_POS;
    let wq = words_per_row as usize;
    let rows = rows as usize;
    if index < 3 * rows * wq {
        let plane = index / (rows * wq);
        let row = (index / wq) % rows;
        let (w, h) = (width as usize, height as usize);
        let mut word = 0u32;
        #[unroll]
        for k in 0..4usize {
            let x = 4 * (index % wq) + k;
            if x < w && row < h {
                let v = planes[(plane * h + row) * w + x];
                let byte = if comptime![deep] {
                    let q = u32::cast_from(f32::floor(v * 65535.0 + 0.5));
                    (q * 255 + 32767) / 65535
                } else {
                    u32::cast_from(f32::floor(v * 255.0 + 0.5))
                };
                word |= byte << (8 * k) as u32;
            }
        }
        words[index] = word;
    }
}

#[cube]
fn mirror(at: i32, n: u32) -> usize {
    let mut i = at;
    if i < 0 {
        i = -i;
    }
    let n = i32::cast_from(n);
    if i >= n {
        i = 2 * (n - 1) - i;
    }
    usize::cast_from(i)
}

/// Three planes mirrored `pad` pixels out on every side, the edge itself not repeated (numpy's
/// 'reflect', as `upscale::reflect_pad` does on the host).
#[cube(launch_unchecked)]
pub fn reflect_pad(input: &Array<f32>, output: &mut Array<f32>, width: u32, height: u32, pad: u32) {
    let index = ABSOLUTE_POS;
    let (pw, ph) = ((width + 2 * pad) as usize, (height + 2 * pad) as usize);
    if index < 3 * pw * ph {
        let c = index / (pw * ph);
        let y = (index / pw) % ph;
        let x = index % pw;
        let sx = mirror(i32::cast_from(x) - i32::cast_from(pad), width);
        let sy = mirror(i32::cast_from(y) - i32::cast_from(pad), height);
        let (w, h) = (width as usize, height as usize);
        output[index] = input[(c * h + sy) * w + sx];
    }
}

const CUBE: u32 = 256;

/// Converts `surface` (laid out as `layout` says) into three f32 planes.
pub fn to_planes<R: Runtime>(
    client: &ComputeClient<R>,
    surface: &Handle,
    layout: &YuvSurface,
    conversion: &YuvToRgb,
) -> Handle {
    let pixels = layout.width * layout.height;
    let planes = client.empty(3 * pixels * size_of::<f32>());
    let k = client.create_from_slice(f32::as_bytes(&conversion.coefficients()));
    let cube = CubeDim::new_1d(CUBE);
    // Safety: the lengths are those of the buffers; the kernel bounds its own indices, and the
    // layout's words lie within the surface.
    unsafe {
        yuv_to_planes::launch_unchecked::<R>(
            client,
            calculate_cube_count_elemwise(client, pixels, cube),
            cube,
            ArrayArg::from_raw_parts(surface.clone(), layout.words()),
            ArrayArg::from_raw_parts(k, 11),
            ArrayArg::from_raw_parts(planes.clone(), 3 * pixels),
            layout.width as u32,
            layout.height as u32,
            layout.luma_pitch as u32,
            layout.chroma_pitch as u32,
            layout.cb_at as u32,
            layout.cr_at as u32,
            u32::from(layout.interleaved),
            layout.chroma_shift.0,
            layout.chroma_shift.1,
            layout.shift,
            layout.wide,
        )
    };
    planes
}

/// Packs three f32 planes into `Packed`'s words (`words_per_row`, `rows` as `Packed::layout` gives).
#[allow(clippy::too_many_arguments)]
pub fn pack<R: Runtime>(
    client: &ComputeClient<R>,
    planes: &Handle,
    width: usize,
    height: usize,
    words_per_row: usize,
    rows: usize,
    deep: bool,
) -> Handle {
    let count = 3 * rows * words_per_row;
    let words = client.empty(count * size_of::<u32>());
    let cube = CubeDim::new_1d(CUBE);
    // Safety: as in `to_planes`.
    unsafe {
        pack_rgb8::launch_unchecked::<R>(
            client,
            calculate_cube_count_elemwise(client, count, cube),
            cube,
            ArrayArg::from_raw_parts(planes.clone(), 3 * width * height),
            ArrayArg::from_raw_parts(words.clone(), count),
            width as u32,
            height as u32,
            words_per_row as u32,
            rows as u32,
            deep,
        )
    };
    words
}

/// Mirrors `pad` pixels around three planes of `width` x `height`; `pad` must be below both.
pub fn pad<R: Runtime>(
    client: &ComputeClient<R>,
    planes: &Handle,
    width: usize,
    height: usize,
    pad: usize,
) -> Handle {
    let count = 3 * (width + 2 * pad) * (height + 2 * pad);
    let output = client.empty(count * size_of::<f32>());
    let cube = CubeDim::new_1d(CUBE);
    // Safety: as in `to_planes`.
    unsafe {
        reflect_pad::launch_unchecked::<R>(
            client,
            calculate_cube_count_elemwise(client, count, cube),
            cube,
            ArrayArg::from_raw_parts(planes.clone(), 3 * width * height),
            ArrayArg::from_raw_parts(output.clone(), count),
            width as u32,
            height as u32,
            pad as u32,
        )
    };
    output
}
