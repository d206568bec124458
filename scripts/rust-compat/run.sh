#!/usr/bin/env bash
# Builds the reference Rust client (compiled unchanged from the shared seed)
# offline against Debian's packaged crates, then drives our Python worker.
#
#   bash scripts/rust-compat/run.sh            # compatibility run (cargo test, then every method)
#   bash scripts/rust-compat/run.sh --bench [--calls N] [--spawn-runs N] [--train-mib N]
#        [--train-runs N] [--worker-cpu N] [--python PATH] [--spawn-python PATH]
#                                              # benchmark mode: one JSON object on stdout (src/bench.rs)
set -euo pipefail
cd "$(dirname "$0")"

bench=0
if [[ ${1:-} == --bench ]]; then
  bench=1
  shift
fi

packages=(librust-serde-dev librust-serde-derive-dev librust-serde-json-dev librust-anyhow-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing ${missing[*]}: run as root to install them" >&2
    exit 1
  fi
  apt-get update
  apt-get install -y "${missing[@]}"
fi

cargo=cargo
command -v "$cargo" >/dev/null || cargo="$HOME/.cargo/bin/cargo"
if ((bench)); then
  # Progress on stderr, so stdout stays one JSON object.
  "$cargo" build --release --offline --quiet >&2
  exec target/release/rust-compat bench "$@"
fi
"$cargo" test --release --offline --quiet
"$cargo" build --release --offline --quiet
exec target/release/rust-compat
