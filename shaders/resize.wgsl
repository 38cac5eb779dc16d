// Duplicate-frame features, step 1: the frame resized to half size by 2x2 sums (src/dedup/features.rs
// defines them). The 8-bit frame comes packed four pixels to a little-endian word, plane after plane;
// one invocation reads one word of a row pair and writes the pair of cells under it: the left
// cell's sum in the low 16 bits, the right one's in the high 16 bits.

struct Params {
    words_per_row: u32,
    rows: u32,
    cell_rows: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> frame: array<u32>;
@group(0) @binding(1) var<storage, read_write> cells: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

fn byte(word: u32, i: u32) -> u32 {
    return (word >> (8u * i)) & 0xffu;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let pair = id.x;
    let row = id.y;
    let plane = id.z;
    if (pair >= params.words_per_row || row >= params.cell_rows) {
        return;
    }
    let top_at = (plane * params.rows + 2u * row) * params.words_per_row + pair;
    let top = frame[top_at];
    let bottom = frame[top_at + params.words_per_row];
    let left = byte(top, 0u) + byte(top, 1u) + byte(bottom, 0u) + byte(bottom, 1u);
    let right = byte(top, 2u) + byte(top, 3u) + byte(bottom, 2u) + byte(bottom, 3u);
    cells[(plane * params.cell_rows + row) * params.words_per_row + pair] = left | (right << 16u);
}
