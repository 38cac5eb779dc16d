// Duplicate-frame features, step 2: the luma sums of the 64 regions (an 8x8 grid) of the cells
// resize.wgsl wrote, from which the host sets the 64-bit average hash's bits (src/dedup/features.rs
// defines it). One workgroup per region; its invocations share the region's cell pairs.

struct Params {
    pairs_per_row: u32,
    cell_rows: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> cells: array<u32>;
@group(0) @binding(1) var<storage, read_write> regions: array<u32, 64>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> sums: array<u32, 256>;

fn luma(r: u32, g: u32, b: u32, shift: u32) -> u32 {
    let c_r = (r >> shift) & 0xffffu;
    let c_g = (g >> shift) & 0xffffu;
    let c_b = (b >> shift) & 0xffffu;
    return (c_r + 2u * c_g + c_b) / 16u;
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) u: u32,
) {
    let ch = params.cell_rows;
    let wq = params.pairs_per_row;
    let rh = ch / 8u;
    let rw = wq / 8u;
    let k = group.x;
    let i = k / 8u;
    let j = k % 8u;
    var sum = 0u;
    for (var item = u; item < rh * rw; item += 256u) {
        let row = i * rh + item / rw;
        let pair = j * rw + item % rw;
        let r = cells[row * wq + pair];
        let g = cells[(ch + row) * wq + pair];
        let b = cells[(2u * ch + row) * wq + pair];
        sum += luma(r, g, b, 0u) + luma(r, g, b, 16u);
    }
    sums[u] = sum;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride / 2u) {
        if (u < stride) {
            sums[u] += sums[u + stride];
        }
        workgroupBarrier();
    }
    if (u == 0u) {
        regions[k] = sums[0];
    }
}
