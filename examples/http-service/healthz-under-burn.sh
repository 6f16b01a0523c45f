#!/usr/bin/env bash
# `/healthz` latency while every plugin call burns CPU until its deadline
# (`just healthz-under-burn`). The service runs in MODE (default async) on
# loopback; wrk keeps BURNERS connections (default 8) on `/echo/spin/MS`
# (the handler spins MS ms, just under the service's deadline), and a second
# wrk measures `/healthz` on one connection, first alone (the baseline),
# then beside the burners. Prints both distributions and the requests the
# burners got through. Exits non-zero if a request failed.
#
#   [GUEST_PRIORITY=lowest|idle|normal] [GUEST_THREADS=N] healthz-under-burn.sh [SECONDS] [MODE]

set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${1:-15}
MODE=${2:-async}
BURNERS=${BURNERS:-8}
DEADLINE_MS=${DEADLINE_MS:-1000}
SPIN_MS=${SPIN_MS:-900}
BIN=target/release/http-service
DIST=guest-plugins/dist

die() {
    echo "healthz-under-burn: $*" >&2
    exit 1
}

[ -x "$BIN" ] || die "$BIN is missing: cargo build --release -p wasmplug-http-service"
[ -f "$DIST/http-handler-v1.wasm" ] || die "build the guests first: just guests-rust"
command -v wrk >/dev/null || die "wrk is not installed: sudo apt-get install -y wrk"

work=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/plugins"
cp "$DIST/http-handler-v1.wasm" "$work/plugins/echo.wasm"
# As many instances as burners: every burning request runs at once.
RUST_LOG=warn "$BIN" --dir "$work/plugins" --listen 127.0.0.1:0 --mode "$MODE" \
    --guest-priority "${GUEST_PRIORITY:-lowest}" ${GUEST_THREADS:+--guest-threads "$GUEST_THREADS"} \
    --workers "$BURNERS" --deadline-ms "$DEADLINE_MS" --max-wait-ms 5000 \
    >"$work/stdout" 2>"$work/service.log" &
pid=$!
addr=""
for _ in $(seq 1 200); do
    addr=$(sed -n 's|^listening on http://||p' "$work/stdout")
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/service.log" >&2; die "the service exited"; }
    sleep 0.05
done
[ -n "$addr" ] || die "the service did not start"

# p50 / p99 / max of a `wrk --latency` report, and its failures.
summary() {
    awk '
        /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
        /Latency/ && !lat { max = $4; lat = 1 }
        /requests in/ { n = $1 }
        /Non-2xx/ { bad += $NF } /Socket errors/ { bad += 1 }
        END { printf "requests %s, p50 %s, p99 %s, max %s, failed %d\n", n, p50, p99, max, bad }
    ' "$1"
}

echo "== http-service --mode $MODE --guest-priority ${GUEST_PRIORITY:-lowest} --guest-threads ${GUEST_THREADS:-(CPUs)} on $addr: $BURNERS instances, deadline ${DEADLINE_MS} ms"
wrk -t1 -c1 -d"${DURATION}s" --latency "http://$addr/healthz" >"$work/alone.txt"
echo "/healthz alone:            $(summary "$work/alone.txt")"

wrk -t1 -c"$BURNERS" -d"$((DURATION + 4))s" --timeout 10s "http://$addr/echo/spin/$SPIN_MS" \
    >"$work/burn.txt" &
burn=$!
sleep 2
wrk -t1 -c1 -d"${DURATION}s" --latency "http://$addr/healthz" >"$work/beside.txt"
wait "$burn"
echo "/healthz beside burners:   $(summary "$work/beside.txt")"
echo "burners (/echo/spin/$SPIN_MS): $(summary "$work/burn.txt")"
grep -q "failed 0" <(summary "$work/beside.txt") || die "a health check failed"
