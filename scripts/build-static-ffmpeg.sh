#!/usr/bin/env bash
# Builds a minimal, static FFmpeg 5.1 (Debian 12's source) into .static-ffmpeg/prefix, for
# scripts/build-portable.sh: one upframe binary that runs on GPU hosts with no FFmpeg installed.
#
# Only what upframe needs goes in: libavcodec, libavformat, libavutil and libswscale, with the
# common decoders, NVDEC (cuvid decoders and nvdec hwaccels, loaded at run time through the
# nv-codec headers, so nothing of NVIDIA's is linked), NVENC and libx264 encoders, and the usual
# containers. Nothing is autodetected, so the result does not depend on what else this machine has.
#
# Idempotent: the source is downloaded once, and a stamp in the prefix records the source version
# and the configure flags; when it matches, nothing is rebuilt. Runs apt-get as root, or through
# sudo. Meant for Debian 12 (bookworm); the binary it leads to needs glibc 2.35 or newer (Ubuntu
# 22.04/24.04 included).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly FFMPEG_SERIES="5.1"
readonly ROOT="$PWD/.static-ffmpeg"
readonly SRC_DIR="$ROOT/src"
readonly BUILD_DIR="$ROOT/build"
readonly PREFIX="$ROOT/prefix"
readonly STAMP="$PREFIX/.upframe-stamp"
readonly DEB_SRC_FILE_BASE="/etc/apt/sources.list.d/upframe-deb-src"

# libdav1d (AV1 in software) is left out: Debian 12's libdav1d-dev ships only the shared library,
# and the GPU hosts have another soname (Ubuntu 24.04: libdav1d.so.7). AV1 decodes through
# NVDEC (av1_cuvid, av1 + av1_nvdec).
readonly PACKAGES=(build-essential pkg-config nasm dpkg-dev libx264-dev libffmpeg-nvenc-dev zlib1g-dev)

readonly DECODERS=(h264 hevc mpeg2video mpeg4 mpeg1video vp8 vp9 av1 prores mjpeg png rawvideo ffv1
  msmpeg4v3 h263 theora dnxhd h264_cuvid hevc_cuvid vp9_cuvid av1_cuvid mpeg2_cuvid)
readonly HWACCELS=(h264_nvdec hevc_nvdec vp9_nvdec av1_nvdec mpeg2_nvdec mpeg4_nvdec vp8_nvdec)
readonly ENCODERS=(libx264 h264_nvenc hevc_nvenc av1_nvenc png rawvideo)
readonly PARSERS=(h264 hevc mpegvideo mpeg4video vp8 vp9 av1 aac ac3 mpegaudio opus vorbis flac dca
  png mjpeg)
readonly DEMUXERS=(mov matroska avi mpegts flv ivf h264 hevc m4v mpegvideo ogg wav srt ass webvtt
  image2 mp3 aac flac yuv4mpegpipe)
readonly MUXERS=(mp4 mov matroska webm avi mpegts ivf null srt ass)
readonly BSFS=(h264_mp4toannexb hevc_mp4toannexb aac_adtstoasc extract_extradata vp9_superframe
  vp9_superframe_split av1_frame_split dump_extradata h264_metadata hevc_metadata)
readonly PROTOCOLS=(file pipe)
# What the portable build is for: if configure drops one of these, stop rather than ship without it.
readonly REQUIRED=(H264_CUVID_DECODER HEVC_CUVID_DECODER H264_NVDEC_HWACCEL HEVC_NVDEC_HWACCEL
  H264_DECODER LIBX264_ENCODER H264_NVENC_ENCODER MOV_DEMUXER MATROSKA_DEMUXER MP4_MUXER)

log() { printf '[build-static-ffmpeg] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
join_by_comma() { local IFS=,; printf '%s' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# True if any enabled deb-src entry exists, in either format.
have_deb_src() {
  grep -qsE '^[[:space:]]*deb-src[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list && return 0
  grep -qsE '^Types:.*\bdeb-src\b' /etc/apt/sources.list.d/*.sources
}

# Adds deb-src entries mirroring the distribution's own deb entries (not third-party repositories,
# whose servers may have no sources), in a file of its own, in the format the distribution uses.
add_deb_src() {
  local deb822 src
  for src in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/ubuntu.sources; do
    [ -f "$src" ] && deb822="$src" && break
  done
  if [ -n "${deb822:-}" ]; then
    log "adding deb-src entries to $DEB_SRC_FILE_BASE.sources (from $deb822)"
    sed -E 's/^Types:.*/Types: deb-src/' "$deb822" | as_root tee "$DEB_SRC_FILE_BASE.sources" >/dev/null
  elif grep -qsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list; then
    log "adding deb-src entries to $DEB_SRC_FILE_BASE.list (from /etc/apt/sources.list)"
    sed -nE 's/^[[:space:]]*deb[[:space:]]/deb-src /p' /etc/apt/sources.list |
      as_root tee "$DEB_SRC_FILE_BASE.list" >/dev/null
  else
    die "found no distribution apt sources to derive a deb-src entry from; add one by hand"
  fi
  as_root apt-get update -qq
}

# Downloads the .dsc and its tarballs once; prints the unpacked source directory.
fetch_source() {
  mkdir -p "$SRC_DIR"
  if ! compgen -G "$SRC_DIR/ffmpeg_*.dsc" >/dev/null; then
    have_deb_src || add_deb_src
    apt-cache showsrc ffmpeg 2>/dev/null | grep -q '^Package: ffmpeg' || as_root apt-get update -qq
    log "downloading the Debian ffmpeg source into $SRC_DIR"
    # As root, apt warns that its _apt user cannot write here and downloads unsandboxed: harmless.
    (cd "$SRC_DIR" && apt-get source --download-only -qq ffmpeg) >&2
  fi
  local dsc version upstream dir
  dsc=$(compgen -G "$SRC_DIR/ffmpeg_*.dsc" | sort -V | tail -n1)
  [ -n "$dsc" ] || die "apt-get source ffmpeg downloaded no .dsc into $SRC_DIR"
  version=$(sed -n 's/^Version: //p' "$dsc")
  upstream=${version#*:}
  upstream=${upstream%-*}
  case "$upstream" in
    "$FFMPEG_SERIES".*) ;;
    *) die "apt offers ffmpeg $version, this script builds $FFMPEG_SERIES.x (Debian 12); remove $SRC_DIR and run it on Debian 12" ;;
  esac
  dir="$SRC_DIR/ffmpeg-$upstream"
  if [ ! -x "$dir/configure" ]; then
    log "unpacking $(basename "$dsc") (with Debian's patches)"
    rm -rf "$dir"
    dpkg-source --no-check -x "$dsc" "$dir" >/dev/null
  fi
  printf '%s\n' "$dir"
}

configure_flags() {
  printf '%s\n' \
    --prefix="$PREFIX" \
    --disable-shared --enable-static --enable-pic \
    --disable-programs --disable-doc --disable-debug \
    --disable-autodetect --disable-everything \
    --enable-gpl --enable-libx264 --enable-zlib \
    --enable-ffnvcodec --enable-cuda --enable-cuvid --enable-nvdec --enable-nvenc \
    --disable-avdevice --disable-avfilter --disable-swresample --disable-postproc --enable-swscale \
    --enable-decoder="$(join_by_comma "${DECODERS[@]}")" \
    --enable-hwaccel="$(join_by_comma "${HWACCELS[@]}")" \
    --enable-encoder="$(join_by_comma "${ENCODERS[@]}")" \
    --enable-parser="$(join_by_comma "${PARSERS[@]}")" \
    --enable-demuxer="$(join_by_comma "${DEMUXERS[@]}")" \
    --enable-muxer="$(join_by_comma "${MUXERS[@]}")" \
    --enable-bsf="$(join_by_comma "${BSFS[@]}")" \
    --enable-protocol="$(join_by_comma "${PROTOCOLS[@]}")"
}

# Configure drops a requested component whose dependencies are missing without an error (Debian 12's
# nv-codec headers are SDK 11.1, for instance, which has no AV1 NVENC): list what was dropped, and
# stop if it is one the portable build is for.
check_components() {
  local header="$BUILD_DIR/config_components.h" missing=() name
  [ -f "$header" ] || header="$BUILD_DIR/config.h"
  is_on() { grep -q "^#define CONFIG_$1 1" "$header"; }
  collect() {
    local kind=$1 name; shift
    for name in "$@"; do is_on "${name^^}_$kind" || missing+=("${name}_${kind,,}"); done
  }
  collect DECODER "${DECODERS[@]}"
  collect HWACCEL "${HWACCELS[@]}"
  collect ENCODER "${ENCODERS[@]}"
  collect PARSER "${PARSERS[@]}"
  collect DEMUXER "${DEMUXERS[@]}"
  collect MUXER "${MUXERS[@]}"
  collect BSF "${BSFS[@]}"
  collect PROTOCOL "${PROTOCOLS[@]}"
  [ ${#missing[@]} -eq 0 ] || log "warning: configure left out: ${missing[*]}"
  for name in "${REQUIRED[@]}"; do
    is_on "$name" || die "configure left out $name, which the portable build needs"
  done
}

# The FFmpeg .pc files ask for the libraries FFmpeg was configured with, e.g. `-lx264 -lz -latomic`;
# the system has them as .so and as .a. Copying each archive into the prefix's lib dir, which every
# FFmpeg .pc puts on -L before its -l flags, makes the pkg-config crate (used by ffmpeg-sys-next)
# see a static library outside /usr and emit `rustc-link-lib=static=x264` (and =z, =atomic), so the
# linker takes the archive rather than the system .so: the GPU hosts have no libx264.so.164.
# glibc's own libraries (libm, libpthread, libdl, ...) stay dynamic.
vendor_static_deps() {
  local name archive
  for name in $(PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" pkg-config --static --libs-only-l \
      libavcodec libavformat libswscale libavutil | tr ' ' '\n' | sed -n 's/^-l//p' | sort -u); do
    case "$name" in
      avcodec | avformat | avutil | swscale | c | m | pthread | dl | rt) continue ;;
    esac
    archive=$(gcc -print-file-name="lib$name.a")
    [ -f "$archive" ] || die "FFmpeg links -l$name but lib$name.a was not found: install its static library"
    cp -f "$archive" "$PREFIX/lib/"
    log "static lib$name.a from $(realpath "$(dirname "$archive")")"
  done
}

build_and_install() {
  local src=$1
  rm -rf "$BUILD_DIR" "$PREFIX"
  mkdir -p "$BUILD_DIR"
  log "configuring (out of tree, in $BUILD_DIR)"
  local flags
  mapfile -t flags < <(configure_flags)
  (cd "$BUILD_DIR" && "$src/configure" "${flags[@]}" >configure.log 2>&1) ||
    { tail -n 30 "$BUILD_DIR/ffbuild/config.log" >&2; die "configure failed (see $BUILD_DIR/ffbuild/config.log)"; }
  check_components
  log "building with make -j$(nproc)"
  make -C "$BUILD_DIR" -j"$(nproc)" >"$BUILD_DIR/make.log" 2>&1 ||
    { tail -n 30 "$BUILD_DIR/make.log" >&2; die "make failed (see $BUILD_DIR/make.log)"; }
  make -C "$BUILD_DIR" install >>"$BUILD_DIR/make.log" 2>&1
  vendor_static_deps
}

main() {
  ensure_packages
  local src version stamp
  src=$(fetch_source)
  version=$(basename "$src")
  # The stamp: the source version and a hash of the configure flags (which hold the prefix path).
  stamp="$version flags:$(configure_flags | sha256sum | cut -c1-16)"
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$stamp" ]; then
    log "up to date: $PREFIX ($version)"
    return
  fi
  build_and_install "$src"
  printf '%s\n' "$stamp" >"$STAMP"
  log "installed $version into $PREFIX"
}

main "$@"
