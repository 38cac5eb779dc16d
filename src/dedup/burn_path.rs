//! The features of `features.rs`, computed with burn's integer tensor ops: one definition that
//! runs on cuda, wgpu and the CPU. Integer ops are exact, so every backend returns the same numbers.

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use super::features::{hash_from_chunks, Features, Packed};

pub fn features<B: Backend>(frame: &Packed, device: &B::Device) -> Features {
    let (wq, rows, ch) = (frame.words_per_row, frame.rows, frame.cell_rows());
    // Words above 2^31 come through as negative numbers; shifts and masks below still see their bits.
    let words: Vec<i32> = frame.words.iter().map(|&w| w as i32).collect();
    let words = Tensor::<B, 3, Int>::from_data(TensorData::new(words, [3, rows, wq]), device);
    let byte = |i: i32| {
        words
            .clone()
            .bitwise_right_shift_scalar((8 * i).elem())
            .bitwise_and_scalar(255.elem())
    };
    // Each word holds a cell pair's top or bottom row: add the rows, then the two pixels per cell.
    let vertical = |t: Tensor<B, 3, Int>| t.reshape([3, ch, 2, wq]).sum_dim(2).reshape([3, ch, wq]);
    let left = vertical(byte(0) + byte(1));
    let right = vertical(byte(2) + byte(3));
    let cells = left.clone() + right.clone().mul_scalar(65536.elem::<B::IntElem>());
    let flat = cells.reshape([3 * ch * wq]);
    let readback = if frame.has_hash() {
        Tensor::cat(vec![flat, hash_chunks(left, right, ch, wq)], 0)
    } else {
        flat
    };
    let values: Vec<i64> = readback.into_data().iter::<i64>().collect();
    let cells: Vec<u32> = values[..3 * ch * wq].iter().map(|&v| v as u32).collect();
    let hash = if frame.has_hash() {
        let c = &values[3 * ch * wq..];
        hash_from_chunks([c[0] as u32, c[1] as u32, c[2] as u32, c[3] as u32])
    } else {
        0
    };
    Features {
        pairs_per_row: wq,
        cell_rows: ch,
        cells,
        hash,
    }
}

/// The 64-bit hash as four 16-bit chunks.
fn hash_chunks<B: Backend>(
    left: Tensor<B, 3, Int>,
    right: Tensor<B, 3, Int>,
    ch: usize,
    wq: usize,
) -> Tensor<B, 1, Int> {
    let luma = |cells: Tensor<B, 3, Int>| {
        let plane = |p: usize| cells.clone().slice([p..p + 1, 0..ch, 0..wq]);
        (plane(0) + plane(1).mul_scalar(2.elem::<B::IntElem>()) + plane(2))
            .div_scalar(16)
            .reshape([ch, wq])
    };
    let (rh, rw) = (ch / 8, wq / 8);
    let regions = (luma(left) + luma(right))
        .slice([0..8 * rh, 0..8 * rw])
        .reshape([8, rh, 8, rw])
        .sum_dim(3)
        .sum_dim(1)
        .reshape([64]);
    let mean = regions.clone().sum().div_scalar(64).expand([64]);
    let device = regions.device();
    let weights: Vec<i32> = (0..64).map(|k| 1 << (k % 16)).collect();
    let weights = Tensor::<B, 1, Int>::from_data(TensorData::new(weights, [64]), &device);
    (regions.greater(mean).int() * weights)
        .reshape([4, 16])
        .sum_dim(1)
        .reshape([4])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::features::{reference, tests::picture};
    use burn::backend::NdArray;

    #[test]
    fn burn_on_the_cpu_matches_the_definition() {
        for (w, h, seed) in [(13, 9, 1), (64, 32, 2), (321, 241, 3), (160, 96, 4)] {
            let packed = Packed::from_planar(&picture(w, h, seed));
            let expected = reference(&packed);
            let got = features::<NdArray>(&packed, &Default::default());
            assert_eq!(got, expected, "{w}x{h}");
        }
    }
}
