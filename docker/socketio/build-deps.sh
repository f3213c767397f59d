#!/usr/bin/env bash
# Installs the Python dependencies of the Socket.IO example service
# (docker/socketio/requirements.txt) into docker/socketio/site-packages/ on
# the host, for docker/socketio/Dockerfile to copy into the image: the image
# build itself needs no network and no pip.
#
# Wheels are chosen for the image, not for the host: CPython 3.11 (Debian
# 12's python3) on x86_64 glibc 2.36, so any host Python 3 with pip works.
# pip uses its usual configuration (index URL, proxy, --find-links via the
# PIP_* environment variables).
#
# Usage: docker/socketio/build-deps.sh [--force]
#   --force   reinstall even if site-packages/ matches requirements.txt
# Env:     PYTHON (default python3), SOCKETIO_PLATFORM (default
#          manylinux_2_36_x86_64; manylinux_2_36_aarch64 on arm64)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REQ="$HERE/requirements.txt"
SITE="$HERE/site-packages"
STAMP="$SITE/.requirements.txt"
PYTHON="${PYTHON:-python3}"
PLATFORM="${SOCKETIO_PLATFORM:-manylinux_2_36_x86_64}"
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deps.sh: unknown argument '$arg' (valid: --force, --help)" >&2; exit 2 ;;
  esac
done

if [ "$FORCE" = 0 ] && [ -f "$STAMP" ] && cmp -s "$REQ" "$STAMP" \
   && [ "$(cat "$SITE/.platform" 2>/dev/null)" = "$PLATFORM" ]; then
  echo "build-deps.sh: $SITE is up to date (use --force to reinstall)"
  exit 0
fi
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  echo "build-deps.sh: $PYTHON has no pip (set PYTHON to a Python 3 with pip)" >&2
  exit 1
fi

# Into a fresh directory, moved into place only when complete.
NEW="$(mktemp -d "$HERE/.site-packages.XXXXXX")"
trap 'rm -rf "$NEW"' EXIT
"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-compile \
  --target "$NEW" --only-binary=:all: \
  --implementation cp --python-version 3.11 --abi cp311 --platform "$PLATFORM" \
  -r "$REQ"
# Console scripts and caches are not needed: the image runs the fixture.
rm -rf "$NEW/bin"
find "$NEW" -name __pycache__ -type d -prune -exec rm -rf {} +
cp "$REQ" "$NEW/.requirements.txt"
echo "$PLATFORM" > "$NEW/.platform"
rm -rf "$SITE"
mv "$NEW" "$SITE"
trap - EXIT
echo "build-deps.sh: installed into $SITE ($(du -sh "$SITE" | cut -f1))"
