#!/usr/bin/env bash
# One command from a fresh Debian/Ubuntu machine to an upscaled video: installs the system
# packages, builds upframe in release mode, and upscales the bundled sample clip (with its audio
# and subtitles) and sample picture with the embedded model on the best device found (CUDA, a
# Vulkan GPU, or the CPU; about a minute on two CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release
mkdir -p out
./target/release/upframe samples/bikes.mkv -o out/bikes-x4.mkv -y --report out/bikes-x4.json
./target/release/upframe samples/street.jpg -o out/street-x4.png -y
./target/release/upframe devices
echo "Wrote out/bikes-x4.mkv (and its report out/bikes-x4.json) and out/street-x4.png"
