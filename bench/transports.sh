#!/usr/bin/env bash
# Memory per idle stream over each transport: plain HTTP/1.1, h2c (HTTP/2
# with prior knowledge, 100 streams per connection), TLS + HTTP/1.1 and
# TLS + HTTP/2 (100 streams per connection). For each, a fresh hub
# (`--storage memory`) on loopback; curl processes hold the streams open
# (100 each, multiplexed on one connection for HTTP/2), and the hub's RSS and
# PSS growth divided by the streams open is the figure.
#
#   bench/transports.sh                    # 2,000 streams per transport, about a minute
#   STREAMS=5000 bench/transports.sh
#
# Needs curl (with HTTP/2), node (its http2 module opens the h2c streams:
# curl does not multiplex with prior knowledge) and openssl. Bounded: every
# client gives up after LIFETIME seconds, and everything started is stopped
# on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

STREAMS=${STREAMS:-2000}
PER_PROCESS=100
LIFETIME=${LIFETIME:-60}
ADDR=127.0.0.1:18095

cargo build --release --quiet -p pushwire
PUSHWIRE=${PUSHWIRE_BIN:-target/release/pushwire}
WORK=$(mktemp -d -t pushwire-transports.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

# One HTTP/2 connection with prior knowledge and N streams on it.
H2C_CLIENT='
const [base, prefix, count, lifetime] = process.argv.slice(1);
const session = require("http2").connect(base);
session.on("error", () => {});
for (let i = 0; i < Number(count); i++) {
  const req = session.request({ ":path": `/api/v1/stream?topic=${prefix}-${i}` });
  req.on("data", () => {});
  req.on("error", () => {});
}
setTimeout(() => process.exit(0), Number(lifetime) * 1000);
'

kib() { awk -v f="$2" '$1 == f":" { print $2 }' "/proc/$1/$3"; }
open_streams() {
    curl -s "$1/api/v1/stats" -k | sed -n 's/.*"streams":\([0-9]*\).*/\1/p'
}

printf '| transport | streams | RSS growth per stream (B) | PSS growth per stream (B) |\n|---|---:|---:|---:|\n'
for transport in http1 h2c tls-http1 tls-h2; do
    flags=(--storage memory --listen "$ADDR" --log warn --max-streams 100000)
    base="http://$ADDR"
    curl_flags=(--http1.1)
    case $transport in
        h2c) flags+=(--h2c) ;;
        tls-http1) flags+=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem"); base="https://$ADDR"; curl_flags=(-k --http1.1) ;;
        tls-h2) flags+=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem"); base="https://$ADDR"; curl_flags=(-k --http2) ;;
    esac
    "$PUSHWIRE" serve "${flags[@]}" >"$WORK/hub-$transport.log" 2>&1 &
    hub=$!
    PIDS+=("$hub")
    for _ in $(seq 50); do open_streams "$base" >/dev/null 2>&1 && break; sleep 0.1; done
    sleep 1
    rss0=$(kib "$hub" VmRSS status)
    pss0=$(kib "$hub" Pss smaps_rollup)
    curls=()
    for ((p = 0; p < STREAMS / PER_PROCESS; p++)); do
        if [ "$transport" = h2c ]; then
            node -e "$H2C_CLIENT" "$base" "idle-$p" "$PER_PROCESS" "$LIFETIME" >/dev/null 2>&1 &
        else
            urls=()
            for ((i = 0; i < PER_PROCESS; i++)); do
                urls+=("$base/api/v1/stream?topic=idle-$p-$i")
            done
            curl -s -N --parallel --parallel-max "$PER_PROCESS" --max-time "$LIFETIME" \
                "${curl_flags[@]}" "${urls[@]}" >/dev/null 2>&1 &
        fi
        curls+=($!)
        PIDS+=($!)
    done
    deadline=$((SECONDS + LIFETIME - 10))
    while [ "$(open_streams "$base" || echo 0)" -lt "$STREAMS" ] && [ $SECONDS -lt $deadline ]; do
        sleep 0.5
    done
    sleep 2
    open=$(open_streams "$base" || echo 0)
    rss1=$(kib "$hub" VmRSS status)
    pss1=$(kib "$hub" Pss smaps_rollup)
    if [ "${open:-0}" -gt 0 ]; then
        printf '| %s | %s | %s | %s |\n' "$transport" "$open" \
            $(((rss1 - rss0) * 1024 / open)) $(((pss1 - pss0) * 1024 / open))
    else
        printf '| %s | 0 | – | – |\n' "$transport"
    fi
    kill "${curls[@]}" 2>/dev/null || true
    kill "$hub" 2>/dev/null || true
    wait "${curls[@]}" "$hub" 2>/dev/null || true
done
