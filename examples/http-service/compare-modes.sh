#!/usr/bin/env bash
# Compare the service's modes (threads, blocking, async) with wrk on
# loopback, for README.md's table. For each mode, on a fresh service:
#
#  1. fast:  GET /echo/hello, CONNECTIONS connections, SECONDS seconds;
#  2. slow:  GET /echo/spin/SPIN_MS (guest CPU) on 16 connections, while a
#            second wrk (2 connections) measures GET /healthz, which needs
#            no plugin: what slow guest code does to everything else.
#
#   compare-modes.sh [SECONDS] [MODES...]
#
# Needs the release binary, the guest components and wrk (see load-test.sh).

set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_EACH=${1:-15}
shift || true
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(threads blocking async)
CONNECTIONS=${CONNECTIONS:-32}
SPIN_MS=${SPIN_MS:-2}
BIN=target/release/http-service
DIST=guest-plugins/dist

die() {
    echo "compare-modes: $*" >&2
    exit 1
}
[ -x "$BIN" ] || die "$BIN is missing: cargo build --release -p wasmplug-http-service"
[ -f "$DIST/http-handler-v1.wasm" ] || die "build the guests with \`just guests-rust\`"
command -v wrk >/dev/null || die "wrk is not installed (apt-get install -y wrk)"

work=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/plugins"
cp "$DIST/http-handler-v1.wasm" "$work/plugins/echo.wasm"

# "req/s p50 p99" from wrk --latency output.
summary() {
    awk '
        /Requests\/sec:/ { rps = $2 }
        /^ +50%/ { p50 = $2 }
        /^ +99%/ { p99 = $2 }
        /Socket errors/ { errors = $0 }
        /Non-2xx/ { non2xx = $NF }
        END {
            printf "%8.0f req/s  p50 %8s  p99 %8s", rps, p50, p99
            if (errors != "") printf "  [%s]", errors
            if (non2xx != "") printf "  [non-2xx %s]", non2xx
            printf "\n"
        }' "$1"
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; ${SECONDS_EACH}s per run"
for mode in "${MODES[@]}"; do
    RUST_LOG=warn "$BIN" --dir "$work/plugins" --listen 127.0.0.1:0 --mode "$mode" \
        >"$work/stdout" 2>"$work/service.log" &
    pid=$!
    addr=""
    for _ in $(seq 1 200); do
        addr=$(sed -n 's|^listening on http://||p' "$work/stdout")
        [ -n "$addr" ] && break
        sleep 0.05
    done
    [ -n "$addr" ] || { cat "$work/service.log" >&2; die "$mode: the service did not start"; }

    wrk -t2 -c"$CONNECTIONS" -d3s "http://$addr/echo/hello" >/dev/null # warm-up
    wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" --latency "http://$addr/echo/hello" >"$work/fast.txt"
    wrk -t1 -c16 -d"${SECONDS_EACH}s" --latency "http://$addr/echo/spin/$SPIN_MS" >"$work/slow.txt" &
    slow=$!
    wrk -t1 -c2 -d"${SECONDS_EACH}s" --latency "http://$addr/healthz" >"$work/health.txt"
    wait "$slow"
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")

    printf '%-9s fast /echo/hello        %s' "$mode" "$(summary "$work/fast.txt")"
    printf '\n%-9s slow /echo/spin/%-2s      %s' "$mode" "$SPIN_MS" "$(summary "$work/slow.txt")"
    printf '\n%-9s /healthz beside slow     %s' "$mode" "$(summary "$work/health.txt")"
    printf '\n%-9s RSS after: %s KiB\n' "$mode" "$rss"

    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
done
