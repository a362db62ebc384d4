#!/usr/bin/env bash
# How one pushwire node scales with its number of open streams: memory per
# stream and hub CPU per delivery at 1,000 to 19,000 streams (19,000 fits
# under a 20,000 open-file limit). Flat figures are what make a projection
# to 100,000+ streams on a machine with a higher limit a measurement rather
# than a hope.
#
# For each count: a fresh hub (memory engine), N subscribers of one topic
# opened from several load processes and loopback source addresses, then
# EVENTS_TOTAL/N events (at least 20) published as fast as they go. The table
# goes into docs/performance.md between the scale markers.
#
#   bench/scale.sh                       # 1000 5000 10000 19000, a few minutes
#   COUNTS="1000 5000" bench/scale.sh
#
# Every run is bounded by RUN_TIMEOUT; the hub is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNTS=${COUNTS:-"1000 5000 10000 19000"}
EVENTS_TOTAL=${EVENTS_TOTAL:-1000000}
PROCESSES=${PROCESSES:-2}
PUBLISHERS=${PUBLISHERS:-8}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
DOC=${DOC:-docs/performance.md}
ADDR=127.0.0.1:18095

log() { printf '[scale] %s\n' "$*" >&2; }

log "building pushwire (release)"
cargo build --release --quiet -p pushwire -p pushwire-bench
HUB=target/release/pushwire
BENCH=target/release/pushwire-bench

ulimit -n "$(ulimit -Hn)"
hub_pid=""
stop_hub() {
    if [ -n "$hub_pid" ]; then
        kill -TERM "$hub_pid" 2>/dev/null || true
        wait "$hub_pid" 2>/dev/null || true
        hub_pid=""
    fi
}
trap stop_hub EXIT
trap 'exit 130' INT TERM

field() { grep -o "\"$1\":[0-9.]*" <<<"$2" | head -n 1 | cut -d: -f2; }

rows=""
started_at=$(date +%s)
for n in $COUNTS; do
    events=$((EVENTS_TOTAL / n))
    [ "$events" -lt 20 ] && events=20
    "$HUB" serve --listen "$ADDR" --storage memory --log warn &
    hub_pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR#*:}") 2>/dev/null && break; sleep 0.1; done
    log "$n streams, $events events"
    out=$(timeout -k 10 "$RUN_TIMEOUT" "$BENCH" fanout --target pushwire --hub "$ADDR" \
        --streams "$n" --events "$events" --rate 0 --processes "$PROCESSES" \
        --concurrency 32 --publishers "$PUBLISHERS" --deadline 60s \
        --connect-deadline 120s --hub-pid "$hub_pid" | tail -n 1)
    printf '%s\n' "$out" >&2
    stop_hub
    bytes=$(field hub_bytes_per_stream "$out")
    cpu=$(field hub_cpu_us_per_delivery "$out")
    rate=$(field deliveries_per_second "$out")
    lost=$(field lost "$out")
    rows+=$(printf '| %s | %s | %.2f | %s | %.2f | %s |' "$n" "$events" \
        "$(awk -v b="$bytes" 'BEGIN { print b / 1024 }')" "${rate%.*}" "$cpu" "$lost")$'\n'
done
elapsed=$(($(date +%s) - started_at))

table=$(
    printf '<!-- scale:begin -->\n'
    printf '| streams | events | memory per stream (KiB) | deliveries/s | hub CPU per delivery (µs) | lost |\n'
    printf '|---:|---:|---:|---:|---:|---:|\n'
    printf '%s' "$rows"
    printf '\nMeasured %s by `bench/scale.sh` in %s s on %s cores, pushwire %s (release build, memory engine), %s load processes, %s publisher connections.\n' \
        "$(date -u +%Y-%m-%d)" "$elapsed" "$(nproc)" "$(git rev-parse --short HEAD)" "$PROCESSES" "$PUBLISHERS"
    printf '<!-- scale:end -->'
)
if grep -q '<!-- scale:begin -->' "$DOC"; then
    awk -v table="$table" '
        /<!-- scale:begin -->/ { print table; skip = 1; next }
        /<!-- scale:end -->/ { skip = 0; next }
        !skip { print }
    ' "$DOC" >"$DOC.tmp" && mv "$DOC.tmp" "$DOC"
else
    printf '\n%s\n' "$table" >>"$DOC"
fi
log "done in ${elapsed}s; table written into $DOC"
printf '%s\n' "$table"
