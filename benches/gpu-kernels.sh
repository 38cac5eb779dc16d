#!/bin/bash
# The fused-kernel measurements of BENCHMARKS.md, in one call on a GPU host with no Rust or FFmpeg:
# correctness on cuda and Vulkan, per-kernel times (CubeCL's profiler), model-only speed of upframe
# and of PyTorch on the same card, and one video end to end.
#
# Prepared here (see README, "Portable build"): `bash scripts/build-portable.sh`, then
#   xz -c dist/upframe > .gpu/upframe.xz
#   PKG_CONFIG_PATH=$PWD/.static-ffmpeg/prefix/lib/pkgconfig \
#     cargo test --release --features static-ffmpeg --test backends --no-run
#   xz -c target/release/deps/backends-<hash> > .gpu/backends-test.xz
# with the peers in .bench/ (../shared/bench/prepare-peers.sh) and a clip in .gpu/media/pan750.mkv.
# On the GPU host, from the repository root, with $OUT a folder for the logs.
exec 2>&1
for f in .bench/gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
xz -dc .gpu/upframe.xz > /tmp/upframe; chmod +x /tmp/upframe
xz -dc .gpu/backends-test.xz > /tmp/backends; chmod +x /tmp/backends
# The tests find their data through the path they were built in.
mkdir -p /work; ln -sfn "$PWD" /work/main
U=/tmp/upframe
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "== tests"
timeout 300 /tmp/backends fused --nocapture --test-threads 1 2>&1 | grep -v XDG > "$OUT/tests.txt"
grep -E "^test |vs|panicked|result" "$OUT/tests.txt" | cut -c1-200
echo "== kernel times, 640x480"
CUBECL_DEBUG_LOG="$OUT/cubecl.log" timeout 120 $U bench --backend cuda --precision fp16 --sizes 640x480 -n 3 > /dev/null 2>&1
grep "^|" "$OUT/cubecl.log" | grep -E "Conv3x3Tiles|Head|Tail" | tail -3
echo "== bench cuda"; timeout 240 $U bench --backend cuda -n 30 2>&1 | grep -v XDG | tee "$OUT/bench-cuda.txt" | grep cuda
echo "== bench wgpu"; timeout 240 $U bench --backend wgpu --precision fp16 -n 30 2>&1 | grep -v XDG | tee "$OUT/bench-wgpu.txt" | grep wgpu
# The convolution before its weights were staged in shared memory, beside the default.
echo "== bench cuda, earlier kernel"
UPFRAME_CONV_PLANES=2 UPFRAME_CONV_PAD=16 UPFRAME_CONV_WEIGHTS_SHARED=0 timeout 120 $U bench --backend cuda --precision fp16 -n 30 2>&1 | grep -E "^cuda"
echo "== torch"
timeout 300 python3 .bench/torch_srvgg_bench.py compile > "$OUT/torch.txt" 2>&1
grep -E '"batch": 1,' "$OUT/torch.txt" | grep -E 'float16' | grep -E 'true|compiled'
echo "== end to end, pan750 x4, x264 ultrafast"
timeout 200 $U .gpu/media/pan750.mkv -o /tmp/a.mkv -y --preset ultrafast --backend cuda --dedup off --report "$OUT/e2e.json" 2>&1 | grep -E "Done|rror"
