#!/usr/bin/env bash
# Runs every test of wsfault on a fresh Debian 12 machine.
#
# Installs what the tests need (idempotent): Debian packages (prometheus for
# promtool and the scrape test, debootstrap for the compose-stack test,
# chromium + chromium-driver for the browser tests), and
# a Python venv in .venv with tests/requirements.txt: websockets, kosoku
# (Autobahn cases), toxiproxy-python, and the third-party services and
# clients (python-socketio + uvicorn + aiohttp, strawberry-graphql, gql),
# and selenium to drive the headless browser.
# Then: fmt check, clippy, and the whole cargo test suite.
# WSFAULT_REQUIRE_TOOLS=1 makes a missing tool a test failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "== missing Debian packages (run as root to install): ${need_apt[*]}" >&2
  fi
fi
# The Debian prometheus package starts a service we do not want.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus prometheus-node-exporter >/dev/null 2>&1 || true; fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import websockets, kosoku, toxiproxy, socketio, engineio, aiohttp, uvicorn, strawberry.asgi, gql.transport.websockets, selenium' >/dev/null 2>&1; then
  echo "== installing Python test tools"
  .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
fi

# The Docker tests need three debootstrap base images (each skipped when it
# exists). Building them takes minutes of mostly network and disk; do it in
# the background while cargo compiles, and wait before the tests start.
bases_pid=""
if command -v docker >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 \
   && docker info >/dev/null 2>&1; then
  echo "== building the Docker base images in the background (log: target/base-images.log)"
  mkdir -p target
  ( docker/build-base-image.sh && docker/build-base-image.sh --python \
      && docker/build-base-image.sh --rust ) > target/base-images.log 2>&1 &
  bases_pid=$!
fi

export WSFAULT_REQUIRE_TOOLS="${WSFAULT_REQUIRE_TOOLS:-1}"
export WSFAULT_PYTHON="$PWD/.venv/bin/python"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test --no-run (build the tests)"
cargo test --lib --bins --tests --locked --no-run
if [ -n "$bases_pid" ]; then
  # A failure here is not fatal: the tests build what is missing themselves.
  wait "$bases_pid" || echo "== base images: see target/base-images.log (the tests retry)"
fi
echo "== cargo test"
cargo test --lib --bins --tests --locked -- --test-threads 2
echo "== all tests passed"
