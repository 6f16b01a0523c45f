#!/usr/bin/env bash
# Build hello-c.wasm (a WASI 0.2 component of world `greeter-plugin`) from
# source into the directory $1 (default: guest-plugins/dist).
#
#   ./build.sh [OUT_DIR]
#   WIT_VERSION=1.1 ./build.sh [OUT_DIR]
#
# WIT_VERSION picks the version of the world (default 1.0):
#   1.0  wit/plugin.wit       -> hello-c.wasm       (hello-c@1.0.0)
#   1.1  wit/v1.1/plugin.wit  -> hello-c-v1.1.wasm  (hello-c@1.1.0; hello.c
#        compiled with -DWIT_1_1: adds `farewell`, imports `config`)
#
# Steps: wit-bindgen c -> clang (wasm32-wasi reactor core module) ->
# wasm-tools component new (+ preview1 reactor adapter) -> wasm-tools validate.
# Generated files go to $BUILD_DIR (default: hello-c/build, git-ignored).
# Tools come from setup.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_DIR="${1:-$HERE/../dist}"
BUILD_DIR="${BUILD_DIR:-$HERE/build}"
WIT_VERSION="${WIT_VERSION:-1.0}"
WIT_BINDGEN_VERSION=0.63.0
# clang 14 knows the preview1 target as `wasm32-wasi` (newer clangs also
# accept `wasm32-wasip1`; same ABI).
TARGET="${TARGET:-wasm32-wasi}"
# Set WASI_SYSROOT if wasi-libc is not where clang looks by default
# (Debian's wasi-libc package is found without it).
SYSROOT_FLAG=()
if [[ -n "${WASI_SYSROOT:-}" ]]; then SYSROOT_FLAG=(--sysroot "$WASI_SYSROOT"); fi

die() { echo "build.sh: $*" >&2; exit 1; }
need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found; run $HERE/setup.sh first"
}

# Per world version: the WIT, the output name, the generated-code directory
# (one per version, so one build never deletes the other's) and the defines.
case "$WIT_VERSION" in
  1.0)
    WIT_DIR="$HERE/../../wit"
    NAME=hello-c
    GEN_DIR="$BUILD_DIR/gen"
    VERSION_FLAGS=()
    ;;
  1.1)
    WIT_DIR="$HERE/../../wit/v1.1"
    NAME=hello-c-v1.1
    GEN_DIR="$BUILD_DIR/gen-v1.1"
    VERSION_FLAGS=(-DWIT_1_1)
    ;;
  *) die "WIT_VERSION=$WIT_VERSION unknown; use 1.0 (default) or 1.1" ;;
esac
[[ -f "$WIT_DIR/plugin.wit" ]] || die "$WIT_DIR/plugin.wit not found"

need clang
need wasm-ld
need wit-bindgen
need wasm-tools
need cargo
have="$(wit-bindgen --version | awk '{print $2}')"
[[ "$have" == "$WIT_BINDGEN_VERSION" ]] ||
  die "wit-bindgen $have found, $WIT_BINDGEN_VERSION needed; run $HERE/setup.sh"
echo 'int x;' | clang --target="$TARGET" "${SYSROOT_FLAG[@]}" -x c -include stdlib.h -c - -o /dev/null 2>/dev/null ||
  die "clang cannot compile for $TARGET (wasi-libc missing?); run $HERE/setup.sh"
[[ -f "$(clang --target="$TARGET" -print-libgcc-file-name)" ]] ||
  die "compiler-rt builtins for wasm32 missing (libclang-rt-dev-wasm32); run $HERE/setup.sh"

mkdir -p "$BUILD_DIR" "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
rm -rf "$GEN_DIR"

echo "==> wit-bindgen c ($WIT_DIR, world greeter-plugin)"
wit-bindgen c "$WIT_DIR" --world greeter-plugin --out-dir "$GEN_DIR" 2>&1 | sed 's/^/    /'

echo "==> clang --target=$TARGET -mexec-model=reactor${VERSION_FLAGS[*]:+ ${VERSION_FLAGS[*]}}"
clang --target="$TARGET" "${SYSROOT_FLAG[@]}" -mexec-model=reactor -O2 \
  -Wall -Wextra "${VERSION_FLAGS[@]}" -I "$GEN_DIR" \
  "$HERE/hello.c" "$GEN_DIR/greeter_plugin.c" \
  "$GEN_DIR/greeter_plugin_component_type.o" \
  -Wl,--strip-debug \
  -o "$BUILD_DIR/$NAME.core.wasm"

echo "==> preview1 reactor adapter (wasmtime 48)"
CARGO_TARGET_DIR="$HERE/target" cargo run --quiet --locked --release \
  --manifest-path "$HERE/adapter/Cargo.toml" -- "$BUILD_DIR/wasi_snapshot_preview1.reactor.wasm"

echo "==> wasm-tools component new"
wasm-tools component new "$BUILD_DIR/$NAME.core.wasm" \
  --adapt "wasi_snapshot_preview1=$BUILD_DIR/wasi_snapshot_preview1.reactor.wasm" \
  -o "$OUT_DIR/$NAME.wasm"
wasm-tools validate --features component-model "$OUT_DIR/$NAME.wasm"

echo "==> $OUT_DIR/$NAME.wasm ($(wc -c <"$OUT_DIR/$NAME.wasm") bytes)"
