#!/usr/bin/env bash
# Builds a minimal Debian 12 (bookworm) root filesystem with debootstrap and
# imports it into the local Docker image store as wsfault-base:bookworm.
#
# For machines that cannot pull images (air-gapped CI, no container registry):
# docker/Dockerfile.prebuilt starts FROM this image and copies in a wsfault
# binary built on the host. Packages come from the Debian archive that
# debootstrap uses by default (set DEBIAN_MIRROR to use another one).
#
# Usage: docker/build-base-image.sh [--force] [--python | --rust]
#   --force   rebuild even if the image already exists
#   --python  build the Python variant instead: the same base plus Debian's
#             python3 (3.11), imported as wsfault-base-python:bookworm, the
#             base of docker/socketio/Dockerfile
#   --rust    build the Rust toolchain variant instead: the same base plus gcc
#             and libc6-dev (linker and C compiler; ring compiles C) and this
#             machine's Rust toolchain copied into /usr/local (cargo, rustc and
#             the standard library of the host target only, from
#             `rustc --print sysroot`), imported as wsfault-rust:bookworm: the
#             RUST_IMAGE of the root Dockerfile where rust:1-bookworm cannot be
#             pulled (tests/dockerfile_build.rs). CARGO_HOME is /usr/local/cargo,
#             as in the official rust images.
# Env:     WSFAULT_BASE_IMAGE (default wsfault-base:bookworm),
#          WSFAULT_PYTHON_BASE_IMAGE (default wsfault-base-python:bookworm),
#          WSFAULT_RUST_IMAGE (default wsfault-rust:bookworm),
#          WSFAULT_RUST_SYSROOT (default: `rustc --print sysroot`),
#          DEBIAN_MIRROR
set -euo pipefail

IMAGE="${WSFAULT_BASE_IMAGE:-wsfault-base:bookworm}"
SUITE=bookworm
FORCE=0
# minbase: essential packages only; ca-certificates for wss:// upstreams.
INCLUDE=ca-certificates
RUST=0
WHAT="Debian $SUITE minbase (debootstrap) for wsfault"
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --python)
      IMAGE="${WSFAULT_PYTHON_BASE_IMAGE:-wsfault-base-python:bookworm}"
      INCLUDE=ca-certificates,python3
      WHAT="Debian $SUITE minbase + python3 (debootstrap) for wsfault's example services"
      RUST=0
      ;;
    --rust)
      IMAGE="${WSFAULT_RUST_IMAGE:-wsfault-rust:bookworm}"
      INCLUDE=ca-certificates,gcc,libc6-dev
      RUST=1
      ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-base-image.sh: unknown argument '$arg' (valid: --force, --python, --rust, --help)" >&2; exit 2 ;;
  esac
done

if ! command -v docker >/dev/null 2>&1; then
  echo "build-base-image.sh: docker is not installed" >&2
  exit 1
fi
if [ "$FORCE" = 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "build-base-image.sh: $IMAGE already exists, skipping (use --force to rebuild)"
  exit 0
fi

if [ "$RUST" = 1 ]; then
  # The toolchain of the user running this script (rustup's active one, or
  # whatever rustc is on PATH), found before anything runs under sudo.
  SYSROOT="${WSFAULT_RUST_SYSROOT:-$(rustc --print sysroot 2>/dev/null || true)}"
  if [ -z "$SYSROOT" ] || [ ! -x "$SYSROOT/bin/rustc" ] || [ ! -x "$SYSROOT/bin/cargo" ]; then
    echo "build-base-image.sh: --rust needs a Rust toolchain (rustc and cargo in \`rustc --print sysroot\`/bin, or set WSFAULT_RUST_SYSROOT)" >&2
    exit 1
  fi
  HOST="$("$SYSROOT/bin/rustc" -vV | sed -n 's/^host: //p')"
  RUST_VERSION="$("$SYSROOT/bin/rustc" --version)"
  if [ ! -d "$SYSROOT/lib/rustlib/$HOST/lib" ]; then
    echo "build-base-image.sh: no standard library for $HOST in $SYSROOT" >&2
    exit 1
  fi
  WHAT="Debian $SUITE minbase + gcc + $RUST_VERSION ($HOST) for building wsfault"
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "build-base-image.sh: debootstrap needs root (run as root or install sudo)" >&2
    exit 1
  fi
fi

if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
  echo "build-base-image.sh: installing debootstrap"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap >/dev/null
fi
DEBOOTSTRAP="$(command -v debootstrap || echo /usr/sbin/debootstrap)"

ROOTFS="$(mktemp -d "${TMPDIR:-/tmp}/wsfault-rootfs.XXXXXX")"
cleanup() { $SUDO rm -rf "$ROOTFS"; }
trap cleanup EXIT

echo "build-base-image.sh: debootstrap $SUITE into $ROOTFS (a few minutes)"
# shellcheck disable=SC2086
$SUDO "$DEBOOTSTRAP" --variant=minbase --include="$INCLUDE" \
  "$SUITE" "$ROOTFS" ${DEBIAN_MIRROR:-}

if [ "$RUST" = 1 ]; then
  # The standalone installer's layout: bin/ and lib/ under /usr/local, so
  # rustc finds its sysroot (/usr/local) and libraries next to itself. Only
  # what a build needs: no docs (share/), no rust-src, no other targets.
  echo "build-base-image.sh: copying $RUST_VERSION from $SYSROOT"
  tar -C "$SYSROOT" -c bin/cargo bin/rustc \
      $(cd "$SYSROOT" && ls -d lib/*.so*) "lib/rustlib/$HOST" \
    | $SUDO tar --no-same-owner -C "$ROOTFS/usr/local" -x
  $SUDO mkdir -p "$ROOTFS/usr/local/cargo"
fi

# Slim it down: package caches, lists, docs, man pages, translations (as
# Debian's slim images do; locale.alias stays), logs.
$SUDO find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
  -exec rm -rf {} +
$SUDO rm -rf \
  "$ROOTFS"/var/cache/apt/archives/*.deb \
  "$ROOTFS"/var/lib/apt/lists/* \
  "$ROOTFS"/usr/share/doc/* \
  "$ROOTFS"/usr/share/man/* \
  "$ROOTFS"/usr/share/info/* \
  "$ROOTFS"/var/log/*.log \
  "$ROOTFS"/var/log/apt/* \
  "$ROOTFS"/debootstrap

echo "build-base-image.sh: importing as $IMAGE"
CHANGES=(--change 'ENV LANG=C.UTF-8')
if [ "$RUST" = 1 ]; then CHANGES+=(--change 'ENV CARGO_HOME=/usr/local/cargo'); fi
$SUDO tar --numeric-owner -C "$ROOTFS" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "${CHANGES[@]}" \
  --change 'CMD ["/bin/bash"]' \
  --message "$WHAT" \
  - "$IMAGE"
docker image ls "$IMAGE"
