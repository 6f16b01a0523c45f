# wasmplug's entry points. `just --list` shows them.
#
# Everything builds in release mode: tests, the demo and the benches share
# one build of wasmtime (a clean one takes minutes on two cores).

set shell := ["bash", "-euo", "pipefail", "-c"]

# (Needs only the Rust guests. With the Go guests (`just guests`) and Go
# installed it adds the Go plugin scenarios: Go's own plugin package beside
# wasmplug with the Go guest, both measured in the run; DEMO_GO_VERSIONS=N.)
# Walk through the six Go-plugin pitfalls with live plugins.
demo: guests-rust
    cargo run --release --locked -q -p wasmplug-tests --bin demo

# Build every guest plugin into guest-plugins/dist/: Rust, C, Go, JavaScript, Python.
guests: guests-rust
    bash guest-plugins/hello-c/build.sh guest-plugins/dist
    WIT_VERSION=1.1 bash guest-plugins/hello-c/build.sh guest-plugins/dist
    bash guest-plugins/hello-go/build.sh guest-plugins/dist
    WIT_VERSION=1.1 bash guest-plugins/hello-go/build.sh guest-plugins/dist
    UNPATCHED=1 bash guest-plugins/hello-go/build.sh guest-plugins/dist
    bash guest-plugins/hello-js/build.sh guest-plugins/dist
    bash guest-plugins/hello-py/build.sh guest-plugins/dist

# Build the Rust guest plugins (needs only `rustup target add wasm32-wasip2`).
guests-rust:
    just --justfile guest-plugins/justfile --working-directory guest-plugins build

# Build the guests, then run every test: unit, doc and integration.
test: guests
    cargo test --release --locked --workspace

# The benchmarks; each prints its figures beside an in-process baseline.
bench: guests
    cargo bench --locked -p wasmplug --bench swap_latency
    cargo bench --locked -p wasmplug --bench attacks
    cargo bench --locked -p wasmplug --bench guests
    cargo bench --locked -p wasmplug --bench overhead
    cargo bench --locked -p wasmplug --bench async_call
    cargo run --release --locked -q -p wasmplug-tests --bin soak
    cargo run --release --locked -q -p wasmplug-tests --bin go_soak
    cargo run --release --locked -q -p wasmplug-tests --bin idle
    just bench-extism

# Its own crate and wasmtime build, outside the workspace: host/benches/extism/.
# wasmplug against Extism (crate `extism`) on the same calls, in one process.
bench-extism: guests-rust
    rustup target add wasm32-unknown-unknown
    cargo build --release --locked --target wasm32-unknown-unknown --manifest-path host/benches/extism/guest/Cargo.toml --target-dir host/benches/extism/guest/target
    cargo bench --locked --manifest-path host/benches/extism/Cargo.toml --target-dir target

# Needs valgrind (apt-get install valgrind). Repeatable to the instruction.
# Instructions per call, Handle::call vs Instance call (and a versioned world vs
# its own bindgen! bindings), counted by callgrind
# inside the call loop only (set-up and compilation not counted).
callcount: guests-rust
    #!/usr/bin/env bash
    set -euo pipefail
    # --all-targets: the same features as the test build, so nothing rebuilds.
    cargo build --release --locked --workspace --all-targets
    cd tests
    calls=10000
    per_call() { valgrind --tool=callgrind --callgrind-out-file=/dev/null '--toggle-collect=*measured_calls*' ../target/release/callcount "$1" "$calls" 2>&1 | sed -n 's/.*Collected : //p' | python3 -c "print(int(input()) / $calls)"; }
    instance=$(per_call instance); handle=$(per_call handle); recorded=$(per_call handle-recorded)
    echo "count(), instructions per call: Instance::call $instance, Handle::call $handle, ratio $(python3 -c "print(f'{$handle/$instance:.3f}')")x (target <= 1.1x)"
    echo "  with a metrics recorder installed (every call counted and timed): Handle::call $recorded, ratio $(python3 -c "print(f'{$recorded/$instance:.3f}')")x"
    direct=$(per_call direct); versioned=$(per_call versioned)
    echo "count() through a versioned world (1.1 + 1.0) vs the world's own bindgen! bindings, same 1.0 component: versioned $versioned, direct $direct, ratio $(python3 -c "print(f'{$versioned/$direct:.3f}')")x (target <= 1.1x)"

# Needs the Go guests (`just guests`). 0 traps is the target.
# The Go guest under >= 1 M calls (default) while hot-swapped every 50 ms,
# beside the build without the procPin patch (which traps) in one process.
go-soak CALLS="1000000": guests
    cargo run --release --locked -q -p wasmplug-tests --bin go_soak {{CALLS}}

# Load, call and unload 10,000 times and 200 versions; print the RSS table.
soak: guests-rust
    cargo run --release --locked -q -p wasmplug-tests --bin soak

# Installs wrk (apt-get) if missing. See examples/http-service/README.md.
# Load-test the example HTTP service: wrk on loopback while its plugin is hot-swapped.
load-test SECONDS="40" MODE="async" SWAPS="60": guests-rust
    cargo build --release --locked -p wasmplug-http-service
    bash examples/http-service/load-test.sh {{SECONDS}} {{MODE}} {{SWAPS}}

# /healthz latency while every plugin call burns CPU to its deadline.
healthz-under-burn SECONDS="15" MODE="async": guests-rust
    cargo build --release --locked -p wasmplug-http-service
    bash examples/http-service/healthz-under-burn.sh {{SECONDS}} {{MODE}}

# Seeded with the real guest components; needs cargo-fuzz, runs on stable
# via RUSTC_BOOTSTRAP.
# Fuzz the component loader for SECONDS (default 4 hours).
fuzz SECONDS="14400": guests
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
    mkdir -p host/fuzz/corpus/load_component
    cp guest-plugins/dist/*.wasm host/fuzz/corpus/load_component/
    cd host && RUSTC_BOOTSTRAP=1 cargo fuzz run load_component -- -max_total_time={{SECONDS}} -rss_limit_mb=4096

# Formatting and lints, for the host workspace and the guests.
lint:
    cargo fmt --all --check
    cargo clippy --release --locked --workspace --all-targets -- -D warnings
    cd guest-plugins && cargo fmt --all --check
    cd guest-plugins && cargo clippy --release --locked --target wasm32-wasip2 --workspace -- -D warnings

# Idempotent; the C, Go, JavaScript and Python toolchains are pinned.
# Install what a fresh machine lacks: wasm target, lints, guest toolchains,
# and the servers the tests start on loopback (OCI registry, wrk).
setup:
    rustup target add wasm32-wasip2
    rustup component add clippy rustfmt
    command -v just >/dev/null || pip install rust-just
    bash guest-plugins/hello-c/setup.sh
    bash guest-plugins/hello-go/setup.sh
    bash guest-plugins/hello-js/setup.sh
    bash guest-plugins/hello-py/setup.sh
    bash tests/setup.sh
