#!/usr/bin/env bash
# The benchmark command: installs nginx (Debian) if missing, builds in
# release mode, runs benches/relay.rs (relay, toxics, metrics, capacity,
# memory), benches/alloc.rs (allocations per relayed message) and
# scripts/bench-load.sh (load client vs tsung vs locust), and writes
# docs/benchmarks.md.
#   scripts/bench.sh            full run (~12 minutes)
#   scripts/bench.sh --quick    short run
# Set WAIT_LOAD=1 to wait (up to 10 minutes) for a 1-minute load average
# below 1.5 before starting: the figures are ratios, but shared cores still
# add noise.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
  else
    echo "nginx is missing (apt-get install nginx-light); its columns will be empty" >&2
  fi
fi
cargo build --release --bin wsfault >&2
cargo bench --no-run --bench relay --bench alloc >&2
if [ "${WAIT_LOAD:-0}" = 1 ]; then
  for _ in $(seq 20); do
    awk '{exit !($1 < 1.5)}' /proc/loadavg && break
    echo "load average $(cut -d' ' -f1 /proc/loadavg), waiting..." >&2
    sleep 30
  done
fi
out=docs/benchmarks.md
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
{
  cargo bench --bench relay -- "$@"
  echo
  cargo bench --bench alloc -- "$@"
  echo
  scripts/bench-load.sh "$@"
} 2>/dev/null | tee "$out.new"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
{
  cat "$out.new"
  echo
  [ -f benches/NOTES.md ] && { cat benches/NOTES.md; echo; }
  echo "---"
  echo
  echo "_Run: \`scripts/bench.sh $*\` (release builds), started $start, commit $(git rev-parse --short HEAD)._"
  echo "_Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))," \
       "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), open-file hard limit $(ulimit -Hn);" \
       "nginx $(nginx -v 2>&1 | cut -d/ -f2), tsung $(tsung -v 2>&1 | awk '{print $NF}')._"
  echo "_1-minute/5/15 load average before: $load_before; after: $load_after (cores shared with other developers: every figure is a ratio measured side by side in the same run)._"
} > "$out"
rm -f "$out.new"
echo "wrote $out" >&2
