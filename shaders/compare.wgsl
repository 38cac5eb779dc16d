// Duplicate-frame comparison: a new frame's cells (resize.wgsl) against a kept frame's, 8x8-pixel
// block by block (4x4 cells, two cell pairs wide; src/dedup/features.rs defines `Change`). One
// invocation per block finds its largest cell change and whether its summed change in some plane
// exceeds the mean limit; each workgroup writes its largest change and its count of changed blocks
// at `out_at`, so that only these numbers come back to the host.

struct Params {
    pairs_per_row: u32,
    cell_rows: u32,
    mean_limit: u32,
    out_at: u32,
}

@group(0) @binding(0) var<storage, read> kept: array<u32>;
@group(0) @binding(1) var<storage, read> new_cells: array<u32>;
@group(0) @binding(2) var<storage, read_write> partials: array<u32>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> peaks: array<u32, 256>;
var<workgroup> counts: array<u32, 256>;

fn distance(a: u32, b: u32) -> u32 {
    return max(a, b) - min(a, b);
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) u: u32,
) {
    let wq = params.pairs_per_row;
    let ch = params.cell_rows;
    let bw = (wq + 1u) / 2u;
    let bh = (ch + 3u) / 4u;
    let block = group.x * 256u + u;
    var peak = 0u;
    var changed = 0u;
    if (block < bw * bh) {
        let bx = block % bw;
        let by = block / bw;
        for (var plane = 0u; plane < 3u; plane++) {
            var sum = 0u;
            for (var r = 0u; r < 4u; r++) {
                let row = 4u * by + r;
                for (var p = 0u; p < 2u; p++) {
                    let pair = 2u * bx + p;
                    if (row < ch && pair < wq) {
                        let at = (plane * ch + row) * wq + pair;
                        let x = kept[at];
                        let y = new_cells[at];
                        let low = distance(x & 0xffffu, y & 0xffffu);
                        let high = distance(x >> 16u, y >> 16u);
                        peak = max(peak, max(low, high));
                        sum += low + high;
                    }
                }
            }
            if (sum > params.mean_limit) {
                changed = 1u;
            }
        }
    }
    peaks[u] = peak;
    counts[u] = changed;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride / 2u) {
        if (u < stride) {
            peaks[u] = max(peaks[u], peaks[u + stride]);
            counts[u] += counts[u + stride];
        }
        workgroupBarrier();
    }
    if (u == 0u) {
        let out = params.out_at + 2u * group.x;
        partials[out] = peaks[0];
        partials[out + 1u] = counts[0];
    }
}
