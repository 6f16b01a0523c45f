#!/usr/bin/env bash
# Load test of the example HTTP service (`just load-test`): wrk drives
# sustained requests on loopback while the handler plugin is hot-swapped
# (atomic rename, alternating v1 and v2) again and again. Exits non-zero if
# any request failed (other than the plugin's own deliberate errors), if
# fewer swaps than asked took effect, or if RSS grew.
#
#   load-test.sh [SECONDS] [MODE] [SWAPS]
#
# SECONDS of measured load (default 40), MODE threads|blocking|async
# (default async), SWAPS during the measured load (default 60). The
# environment may set CONNECTIONS (32), WRK_THREADS (2), WORKERS (the
# service's --workers; default: its own), ERROR_EVERY (one request in N asks
# the plugin for its deliberate error; 50) and RSS_TOLERANCE_KIB (2048).
#
# Needs the release binary and the guest components: `just load-test` builds
# both. Only loopback is ever a target.

set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${1:-40}
MODE=${2:-async}
SWAPS=${3:-60}
CONNECTIONS=${CONNECTIONS:-32}
WRK_THREADS=${WRK_THREADS:-2}
ERROR_EVERY=${ERROR_EVERY:-50}
RSS_TOLERANCE_KIB=${RSS_TOLERANCE_KIB:-2048}
# Warm-up before the "before" RSS: RSS settles within the first swaps and
# then only oscillates (allocator noise, about +/- 0.5 MiB under this load).
WARMUP=8
WARMUP_SWAPS=10

BIN=target/release/http-service
DIST=guest-plugins/dist

die() {
    echo "load-test: $*" >&2
    exit 1
}

[ -x "$BIN" ] || die "$BIN is missing: cargo build --release -p wasmplug-http-service"
for v in v1 v2; do
    [ -f "$DIST/http-handler-$v.wasm" ] ||
        die "$DIST/http-handler-$v.wasm is missing: build the guests with \`just guests-rust\`"
done
if ! command -v wrk >/dev/null; then
    [ "$(id -u)" = 0 ] || die "wrk is not installed: sudo apt-get install -y wrk"
    echo "== installing wrk (apt-get install -y wrk)"
    apt-get install -y wrk >/dev/null 2>&1 ||
        { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; } ||
        die "could not install wrk"
fi

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
worker_args=()
[ -n "${WORKERS:-}" ] && worker_args=(--workers "$WORKERS")
RUST_LOG=${RUST_LOG:-info} "$BIN" --dir "$work/plugins" --listen 127.0.0.1:0 \
    --mode "$MODE" "${worker_args[@]}" >"$work/stdout" 2>"$work/service.log" &
pid=$!

addr=""
for _ in $(seq 1 200); do
    addr=$(sed -n 's|^listening on http://||p' "$work/stdout")
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/service.log" >&2; die "the service exited"; }
    sleep 0.05
done
[ -n "$addr" ] || { cat "$work/service.log" >&2; die "the service did not start"; }
host=${addr%:*}
port=${addr##*:}

# GET a path over bash's /dev/tcp (no curl needed); prints the body.
http_get() {
    local reply
    exec 3<>"/dev/tcp/$host/$port"
    printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$1" "$addr" >&3
    reply=$(cat <&3)
    exec 3<&-
    printf '%s\n' "${reply#*$'\r\n\r\n'}"
}

# The sum of every series of metric $1 in /metrics (0 if none).
metric_sum() {
    http_get /metrics | awk -v m="$1" 'index($1, m "{") == 1 || $1 == m { v += $2 } END { print v + 0 }'
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"
}

swap() {
    cp "$DIST/http-handler-$1.wasm" "$work/plugins/echo.wasm.tmp"
    mv -f "$work/plugins/echo.wasm.tmp" "$work/plugins/echo.wasm"
}

# Swap $1 times, one every $2 seconds, alternating v2 and v1 (ends on v1
# for an even count).
swapper() {
    local i
    for i in $(seq 1 "$1"); do
        sleep "$2"
        if [ $((i % 2)) = 1 ]; then swap v2; else swap v1; fi
    done
}

cat >"$work/mix.lua" <<'EOF'
-- One request in ERROR_EVERY asks the plugin for its deliberate error
-- (`/echo/error`: the plugin returns an error, the service answers 500 with
-- x-plugin-error: guest). Every other request must be a 200 from echo@1 or
-- echo@2. Anything else is a failure.
local every = tonumber(os.getenv("ERROR_EVERY") or "50")
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    n, ok_v1, ok_v2, plugin_errors, failures, first_failure = 0, 0, 0, 0, 0, ""
    req_ok = wrk.format("GET", "/echo/hello")
    req_err = wrk.format("GET", "/echo/error")
end

function request()
    n = n + 1
    if n % every == 0 then return req_err end
    return req_ok
end

local function fail(what)
    failures = failures + 1
    if first_failure == "" then first_failure = what end
end

function response(status, headers, body)
    if status == 200 then
        local plugin = headers["x-plugin"]
        if plugin == "echo@1.0.0" then ok_v1 = ok_v1 + 1
        elseif plugin == "echo@2.0.0" then ok_v2 = ok_v2 + 1
        else fail("200 from " .. tostring(plugin)) end
    elseif status == 500 and headers["x-plugin-error"] == "guest" then
        plugin_errors = plugin_errors + 1
    else
        fail(status .. " " .. tostring(headers["x-plugin-error"]) .. " " .. body)
    end
end

function done(summary, latency, requests)
    local v1, v2, perr, failed, first = 0, 0, 0, 0, ""
    for _, t in ipairs(threads) do
        v1 = v1 + t:get("ok_v1")
        v2 = v2 + t:get("ok_v2")
        perr = perr + t:get("plugin_errors")
        failed = failed + t:get("failures")
        if first == "" then first = t:get("first_failure") end
    end
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_us=%d v1=%d v2=%d plugin_errors=%d failures=%d " ..
        "connect=%d read=%d write=%d timeout=%d non2xx=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d\n",
        summary.requests, summary.duration, v1, v2, perr, failed,
        e.connect, e.read, e.write, e.timeout, e.status,
        latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
    if first ~= "" then io.write("FIRST_FAILURE " .. first:gsub("\n", " ") .. "\n") end
end
EOF

echo "== http-service --mode $MODE on $addr (pid $pid); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== warm-up: ${WARMUP}s of load with $WARMUP_SWAPS swaps"
swapper "$WARMUP_SWAPS" "$(awk -v d="$WARMUP" -v n="$WARMUP_SWAPS" 'BEGIN { printf "%.3f", d * 0.9 / n }')" &
warm_swapper=$!
ERROR_EVERY=$ERROR_EVERY wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$work/mix.lua" \
    "http://$addr/" >"$work/warmup.txt"
wait "$warm_swapper"
grep '^RESULT' "$work/warmup.txt" | sed 's/^/   /'
sleep 2
rss_before=$(rss_kib)
swapped_before=$(metric_sum wasmplug_swaps_total)
failed_before=$(metric_sum wasmplug_failed_loads_total)

interval=$(awk -v d="$DURATION" -v n="$SWAPS" 'BEGIN { printf "%.3f", d * 0.9 / n }')
echo "== measured: ${DURATION}s, $CONNECTIONS connections, $WRK_THREADS wrk threads; $SWAPS swaps, one every ${interval}s"
swapper "$SWAPS" "$interval" &
swapper_pid=$!
ERROR_EVERY=$ERROR_EVERY wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    -s "$work/mix.lua" "http://$addr/" >"$work/wrk.txt"
wait "$swapper_pid"
sleep 2
rss_after=$(rss_kib)
swapped_after=$(metric_sum wasmplug_swaps_total)
failed_after=$(metric_sum wasmplug_failed_loads_total)
http_get /metrics >"$work/metrics.txt"

sed 's/^/   /' "$work/wrk.txt"
result=$(grep '^RESULT' "$work/wrk.txt") || die "wrk printed no result"
get() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$result"; }
requests=$(get requests)
duration_us=$(get duration_us)
failures=$(get failures)
plugin_errors=$(get plugin_errors)
socket_errors=$(($(get connect) + $(get read) + $(get write) + $(get timeout)))
non2xx=$(get non2xx)
swaps=$(awk -v a="$swapped_after" -v b="$swapped_before" 'BEGIN { print a - b }')
load_failures=$(awk -v a="$failed_after" -v b="$failed_before" 'BEGIN { print a - b }')
host_errors=$(awk '(/^wasmplug_call_errors_total/ && !/kind="guest"/) || /^http_service_bad_responses_total/ { n += $2 } END { print n + 0 }' "$work/metrics.txt")
rss_delta=$((rss_after - rss_before))

echo "== results ($MODE)"
awk -v r="$requests" -v d="$duration_us" 'BEGIN { printf "   throughput:      %.0f req/s (%d requests in %.1f s)\n", r / (d / 1e6), r, d / 1e6 }'
awk -v p50="$(get p50_us)" -v p99="$(get p99_us)" -v p999="$(get p999_us)" -v max="$(get max_us)" \
    'BEGIN { printf "   latency:         p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms\n", p50 / 1000, p99 / 1000, p999 / 1000, max / 1000 }'
echo "   answers:         v1 $(get v1), v2 $(get v2), plugin's own errors (500, guest) $plugin_errors"
echo "   failed requests: $failures (socket errors $socket_errors; non-2xx $non2xx, of which the plugin's own $plugin_errors)"
echo "   host errors:     $host_errors (trap, unavailable, overloaded, bad_response, internal)"
echo "   swaps:           $swaps took effect ($SWAPS asked); failed loads $load_failures"
echo "   RSS:             before $rss_before KiB, after $rss_after KiB, delta $rss_delta KiB (tolerance $RSS_TOLERANCE_KIB)"

status=0
check() {
    if eval "$1"; then
        echo "   ok:   $2"
    else
        echo "   FAIL: $2"
        status=1
    fi
}
check '[ "$failures" = 0 ]' "no failed request"
check '[ "$socket_errors" = 0 ]' "no socket error"
check '[ "$non2xx" = "$plugin_errors" ]' "every non-2xx is the plugin's own error"
check '[ "$host_errors" = 0 ]' "no trap, overload or host error in /metrics"
check '[ "$(get v1)" -gt 0 ] && [ "$(get v2)" -gt 0 ]' "both versions answered"
check '[ "$swaps" -ge "$SWAPS" ] && [ "$SWAPS" -ge 50 ]' "at least 50 swaps took effect"
check '[ "$load_failures" = 0 ]' "no swap failed to load"
check '[ "${rss_delta#-}" -le "$RSS_TOLERANCE_KIB" ]' "RSS flat (|delta| <= $RSS_TOLERANCE_KIB KiB)"
if [ "$status" != 0 ]; then
    grep '^FIRST_FAILURE' "$work/wrk.txt" || true
    echo "--- service log (last 30 lines)"
    tail -n 30 "$work/service.log"
fi
exit "$status"
