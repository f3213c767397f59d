#!/usr/bin/env bash
# The benchmark command: installs nginx (Debian) if missing, builds in
# release mode, runs benches/relay.rs and writes docs/benchmarks.md.
#   scripts/bench.sh            full run (~5 minutes)
#   scripts/bench.sh --quick    short run
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
  else
    echo "nginx is missing (apt-get install nginx-light); its columns will be empty" >&2
  fi
fi
out=docs/benchmarks.md
cargo bench --bench relay -- "$@" | tee "$out.new"
{ cat "$out.new"; echo; echo "_Run: \`scripts/bench.sh $*\` on $(date -u +%Y-%m-%d)._"; } > "$out"
rm -f "$out.new"
echo "wrote $out"
