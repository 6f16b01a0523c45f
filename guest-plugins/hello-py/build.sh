#!/usr/bin/env bash
# Builds app.py into the component hello-py.wasm in the directory $1
# (default: ../dist). Run setup.sh once first.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${1:-$here/../dist}"
cpy="$here/.venv/bin/componentize-py"

if [ ! -x "$cpy" ]; then
    echo "error: componentize-py is not installed; run $here/setup.sh first" >&2
    exit 1
fi
mkdir -p "$out_dir"
out="$(cd "$out_dir" && pwd)/hello-py.wasm"

# componentize-py generates the `wit_world` bindings itself, then bundles
# CPython, app.py and the standard library into one component. -p . puts only
# this directory on the app's path (app.py has no third-party dependencies);
# VIRTUAL_ENV is unset so the toolchain's own site-packages stay out.
cd "$here"
env -u VIRTUAL_ENV "$cpy" -d ../../wit -w greeter-plugin \
    componentize app -p . -o "$out.tmp"
mv "$out.tmp" "$out"
echo "built $out ($(stat -c %s "$out") bytes)"
