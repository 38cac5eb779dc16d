#!/usr/bin/env bash
# One command from a fresh Debian/Ubuntu machine to an upscaled picture: installs the system
# packages, builds upframe in release mode, and upscales the bundled sample with the embedded model
# on the best device found (CUDA, a Vulkan GPU, or the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release
mkdir -p out
./target/release/upframe samples/street.jpg -o out/street-x4.png -y
./target/release/upframe devices
echo "Wrote out/street-x4.png"
