#!/usr/bin/env bash
# Builds dist/upframe: one binary, FFmpeg linked in statically, for GPU hosts with no FFmpeg
# installed (e.g. Ubuntu 24.04 with only the NVIDIA driver; NVDEC/NVENC and CUDA are loaded from
# the driver at run time). It needs nothing but glibc, libm and libgcc_s.
#
# Steps: build the minimal static FFmpeg (scripts/build-static-ffmpeg.sh; a no-op when up to date),
# build upframe with the `static-ffmpeg` feature against it, strip a copy into dist/, and check
# that no FFmpeg or x264 shared library is needed.
#
# How x264 (and zlib) end up static: build-static-ffmpeg.sh copies libx264.a and libz.a into
# .static-ffmpeg/prefix/lib, beside FFmpeg's own archives. ffmpeg-sys-next asks pkg-config for
# `--static` flags; the pkg-config crate marks a `-lfoo` static when libfoo.a sits in a -L dir that
# is not under /usr, which is now true for x264 and z, so rustc links those archives and not the
# system's libx264.so.164. No RUSTFLAGS and no edited .pc files.
#
# The build shares target/ with the ordinary one (cargo keys artifacts by features, so burn is not
# rebuilt), but target/release/upframe is the static variant until the next plain build.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly PREFIX="$PWD/.static-ffmpeg/prefix"
readonly TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
readonly DIST="$PWD/dist"
# Shared libraries that must not be needed: FFmpeg's, x264's, and the optional codec libraries.
readonly FORBIDDEN='^lib(avcodec|avformat|avutil|avfilter|avdevice|swscale|swresample|postproc|x264|x265|dav1d|vpx|aom)\.so'

log() { printf '[build-portable] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

timed() {
  local label=$1 start=$SECONDS; shift
  "$@"
  log "$label took $((SECONDS - start)) s"
}

build_ffmpeg() {
  bash scripts/build-static-ffmpeg.sh
  [ -f "$PREFIX/lib/pkgconfig/libavcodec.pc" ] || die "no static FFmpeg in $PREFIX"
}

build_upframe() {
  PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" cargo build --release --features static-ffmpeg
}

package() {
  mkdir -p "$DIST"
  strip --strip-all -o "$DIST/upframe.tmp" "$TARGET_DIR/release/upframe"
  mv -f "$DIST/upframe.tmp" "$DIST/upframe"
  log "dist/upframe: $(du -h "$DIST/upframe" | cut -f1) (unstripped $(du -h "$TARGET_DIR/release/upframe" | cut -f1))"
}

check_needed() {
  local needed
  needed=$(readelf -d "$DIST/upframe" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  log "NEEDED: $(echo "$needed" | paste -sd' ')"
  ldd "$DIST/upframe" >&2 || true
  log "newest glibc symbol version used: $(objdump -T "$DIST/upframe" |
    grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -n1)"
  if echo "$needed" | grep -Eq "$FORBIDDEN"; then
    die "dist/upframe needs FFmpeg/codec shared libraries: $(echo "$needed" | grep -E "$FORBIDDEN" | paste -sd' ')"
  fi
}

# Informational: the linker drops FFmpeg entirely if upframe's code never calls it.
report_ffmpeg() {
  local names
  names=$(strings -a "$DIST/upframe" | grep -cxE 'h264_cuvid|hevc_cuvid|h264_nvdec|hevc_nvdec|libx264' || true)
  if [ "$names" -gt 0 ]; then
    log "FFmpeg is linked in (found $names of h264/hevc cuvid+nvdec and libx264 names)"
  else
    log "FFmpeg is not linked in: upframe's code does not call it (yet), so the linker left it out"
  fi
}

main() {
  timed "static FFmpeg" build_ffmpeg
  timed "cargo build" build_upframe
  package
  check_needed
  report_ffmpeg
  log "done: $DIST/upframe"
}

main "$@"
