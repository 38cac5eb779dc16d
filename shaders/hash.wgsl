// Duplicate-frame features, step 2: a 64-bit average hash of the cells resize.wgsl wrote
// (src/dedup/features.rs defines it). One workgroup; invocation k sums the luma of region k of an
// 8x8 grid over the cell pairs, and bit k is set when that region is brighter than the mean.
// The result is four 16-bit chunks, bits 0..15 first, as the burn path returns it.

struct Params {
    pairs_per_row: u32,
    cell_rows: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> cells: array<u32>;
@group(0) @binding(1) var<storage, read_write> chunks: array<u32, 4>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> regions: array<u32, 64>;

fn luma(r: u32, g: u32, b: u32, shift: u32) -> u32 {
    let c_r = (r >> shift) & 0xffffu;
    let c_g = (g >> shift) & 0xffffu;
    let c_b = (b >> shift) & 0xffffu;
    return (c_r + 2u * c_g + c_b) / 16u;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(local_invocation_index) k: u32) {
    let ch = params.cell_rows;
    let wq = params.pairs_per_row;
    let rh = ch / 8u;
    let rw = wq / 8u;
    let i = k / 8u;
    let j = k % 8u;
    var sum = 0u;
    for (var row = i * rh; row < (i + 1u) * rh; row++) {
        for (var pair = j * rw; pair < (j + 1u) * rw; pair++) {
            let r = cells[row * wq + pair];
            let g = cells[(ch + row) * wq + pair];
            let b = cells[(2u * ch + row) * wq + pair];
            sum += luma(r, g, b, 0u) + luma(r, g, b, 16u);
        }
    }
    regions[k] = sum;
    workgroupBarrier();
    if (k == 0u) {
        var total = 0u;
        for (var n = 0u; n < 64u; n++) {
            total += regions[n];
        }
        let mean = total / 64u;
        for (var c = 0u; c < 4u; c++) {
            var chunk = 0u;
            for (var bit = 0u; bit < 16u; bit++) {
                if (regions[16u * c + bit] > mean) {
                    chunk |= 1u << bit;
                }
            }
            chunks[c] = chunk;
        }
    }
}
