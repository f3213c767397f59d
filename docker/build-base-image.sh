#!/usr/bin/env bash
# Builds a minimal Debian 12 (bookworm) root filesystem with debootstrap and
# imports it into the local Docker image store as wsfault-base:bookworm.
#
# For machines that cannot pull images (air-gapped CI, no container registry):
# docker/Dockerfile.prebuilt starts FROM this image and copies in a wsfault
# binary built on the host. Packages come from the Debian archive that
# debootstrap uses by default (set DEBIAN_MIRROR to use another one).
#
# Usage: docker/build-base-image.sh [--force] [--python]
#   --force   rebuild even if the image already exists
#   --python  build the Python variant instead: the same base plus Debian's
#             python3 (3.11), imported as wsfault-base-python:bookworm, the
#             base of docker/socketio/Dockerfile
# Env:     WSFAULT_BASE_IMAGE (default wsfault-base:bookworm),
#          WSFAULT_PYTHON_BASE_IMAGE (default wsfault-base-python:bookworm),
#          DEBIAN_MIRROR
set -euo pipefail

IMAGE="${WSFAULT_BASE_IMAGE:-wsfault-base:bookworm}"
SUITE=bookworm
FORCE=0
# minbase: essential packages only; ca-certificates for wss:// upstreams.
INCLUDE=ca-certificates
WHAT="Debian $SUITE minbase (debootstrap) for wsfault"
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --python)
      IMAGE="${WSFAULT_PYTHON_BASE_IMAGE:-wsfault-base-python:bookworm}"
      INCLUDE=ca-certificates,python3
      WHAT="Debian $SUITE minbase + python3 (debootstrap) for wsfault's example services"
      ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-base-image.sh: unknown argument '$arg' (valid: --force, --python, --help)" >&2; exit 2 ;;
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

# Slim it down: package caches, lists, docs, man pages, logs.
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
$SUDO tar --numeric-owner -C "$ROOTFS" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "$WHAT" \
  - "$IMAGE"
docker image ls "$IMAGE"
