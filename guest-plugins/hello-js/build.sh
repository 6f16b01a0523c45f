#!/usr/bin/env bash
# Builds hello.js into the component hello-js.wasm in the directory $1
# (default: ../dist). Run setup.sh once first.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${1:-$here/../dist}"
cjs="$here/node_modules/.bin/componentize-js"

if [ ! -x "$cjs" ]; then
    echo "error: componentize-js is not installed; run $here/setup.sh first" >&2
    exit 1
fi
mkdir -p "$out_dir"
out="$(cd "$out_dir" && pwd)/hello-js.wasm"

# --disable http fetch-event: no fetch(), so the component imports no wasi:http
# (the host does not provide it). stdio, clocks and random stay: they need
# only WASI 0.2 cli/io/clocks/random/filesystem, which the host links.
cd "$here"
"$cjs" hello.js \
    --wit ../../wit \
    --world-name greeter-plugin \
    --disable http fetch-event \
    --out "$out.tmp"
mv "$out.tmp" "$out"
echo "built $out ($(stat -c %s "$out") bytes)"
