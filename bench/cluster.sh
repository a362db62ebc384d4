#!/usr/bin/env bash
# Delivery through a three-node cluster on one Redis against one node on the
# embedded engine: the same pushwire-bench workloads, one after the other, in
# the same run. Prints one JSON line per run (pushwire-bench's report, with
# the hubs' RSS in the fields `node_rss_kib`).
#
#   cargo build --release -p pushwire -p pushwire-bench && bench/cluster.sh
#
# Needs redis-server (7.0 or newer). Every process it starts is stopped on
# exit, and its temporary directory removed. Only loopback is used.
set -euo pipefail
cd "$(dirname "$0")/.."

STREAMS=${STREAMS:-6000}          # fanout: subscribers of one topic
FANOUT_EVENTS=${FANOUT_EVENTS:-40}
FANOUT_RATE=${FANOUT_RATE:-2}
BURST_EVENTS=${BURST_EVENTS:-60}  # the same, published as fast as possible
SPREAD_TOPICS=${SPREAD_TOPICS:-6000}
SPREAD_EVENTS=${SPREAD_EVENTS:-12000}
PUBLISHERS=${PUBLISHERS:-6}
RUNS=${RUNS:-"cluster single"}
REDIS_PORT=${REDIS_PORT:-16379}
PORTS=(18101 18102 18103)
BIN=${BIN:-target/release}

WORK=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

node_rss() {
    local out=()
    for pid in "$@"; do out+=("$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"); done
    (IFS=,; echo "[${out[*]}]")
}

# Runs one workload against the given hub addresses and pids.
bench() {
    local label=$1 workload=$2 mode=$3 hubs=$4 hub_pids=$5
    shift 5
    local line
    line=$("$BIN/pushwire-bench" "$mode" --hub "$hubs" --publish-round-robin \
        --hub-pid "$hub_pids" --processes 3 --publishers "$PUBLISHERS" \
        --label "$label" --workload "$workload" "$@")
    IFS=, read -ra each <<<"$hub_pids"
    echo "${line%\}},\"node_rss_kib\":$(node_rss "${each[@]}")}"
}

start_cluster() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly yes \
        --appendfsync always --dir "$WORK" >"$WORK/redis.log" 2>&1 &
    pids+=($!)
    wait_port "$REDIS_PORT"
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    node_pids=()
    for port in "${PORTS[@]}"; do
        "$BIN/pushwire" serve --listen "127.0.0.1:$port" --storage redis \
            --redis-url "redis://127.0.0.1:$REDIS_PORT/0" --log warn >>"$WORK/nodes.log" 2>&1 &
        pids+=($!)
        node_pids+=($!)
        wait_port "$port"
    done
    HUBS="127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}"
    HUB_PIDS=$(IFS=,; echo "${node_pids[*]}")
}

start_single() {
    rm -rf "$WORK/data"
    "$BIN/pushwire" serve --listen "127.0.0.1:${PORTS[0]}" --storage embedded \
        --data-dir "$WORK/data" --log warn >>"$WORK/single.log" 2>&1 &
    pids+=($!)
    wait_port "${PORTS[0]}"
    HUBS="127.0.0.1:${PORTS[0]}"
    HUB_PIDS=$!
}

stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}

for run in $RUNS; do
    for workload in fanout burst spread; do
        case $run in
            cluster) start_cluster; label=cluster-3-redis ;;
            single) start_single; label=single-embedded ;;
            *) echo "unknown run $run" >&2; exit 2 ;;
        esac
        case $workload in
            fanout) bench "$label" fanout fanout "$HUBS" "$HUB_PIDS" \
                --streams "$STREAMS" --events "$FANOUT_EVENTS" --rate "$FANOUT_RATE" ;;
            burst) bench "$label" burst fanout "$HUBS" "$HUB_PIDS" \
                --streams "$STREAMS" --events "$BURST_EVENTS" --rate 0 ;;
            spread) bench "$label" spread spread "$HUBS" "$HUB_PIDS" \
                --streams "$SPREAD_TOPICS" --events "$SPREAD_EVENTS" --rate 0 ;;
        esac
        stop_all
    done
done
