#!/usr/bin/env bash
# Installs the system packages upframe builds and tests with, on Debian 12 / Ubuntu 22.04 or newer:
# Vulkan (the loader, and Mesa's drivers, lavapipe included, for the wgpu backend), FFmpeg's
# libraries and CLI, and the tools bindgen needs. Runs apt-get as root, or through sudo.
set -euo pipefail
packages=(
  pkg-config clang
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev ffmpeg
  libvulkan1 mesa-vulkan-drivers
)
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "upframe needs Rust 1.92 or newer: install it with rustup (https://rustup.rs), then rerun." >&2
  exit 1
fi
