#!/usr/bin/env bash
# Side-by-side comparison of pushwire with Nchan and Pushpin on this machine.
#
# Installs the peers from Debian's packages when missing, builds pushwire in
# release mode, then for each hub in turn: starts it on loopback with its
# configuration from bench/, runs each workload against a freshly started
# hub, stops it. At the end the table of figures and ratios is written into
# docs/performance.md between the compare markers.
#
#   bench/compare.sh                      # everything, about 12 minutes
#   HUBS="pushwire-memory nchan" bench/compare.sh
#   WORKLOADS="burst spread" HUBS="pushwire-durable" bench/compare.sh
#   FANOUT_STREAMS=2000 SPREAD_TOPICS=2000 bench/compare.sh
#   STAGES_DIR=/tmp/stages bench/compare.sh   # also keep pushwire's stage timings
#
# Every bench command is bounded in count and time; every process the script
# starts is recorded by pid and stopped on exit, and its temp directory
# (data, logs, results) is removed unless KEEP_DIR=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# Workloads; override any of them from the environment.
IDLE_STREAMS=${IDLE_STREAMS:-10000}
# fanout: one topic, at a rate every hub here sustains, so that the
# latencies compare like with like: 20,000 deliveries/s. (Pushpin needs
# about 55 µs of CPU per delivery here; at a steady 40,000/s it closes most
# of its streams in some runs.)
FANOUT_STREAMS=${FANOUT_STREAMS:-10000}
FANOUT_EVENTS=${FANOUT_EVENTS:-60}
FANOUT_RATE=${FANOUT_RATE:-2}
# fanout1k and fanout10k: the same at the rates of a busy hub.
FANOUT1K_STREAMS=${FANOUT1K_STREAMS:-1000}
FANOUT1K_EVENTS=${FANOUT1K_EVENTS:-2000}
FANOUT1K_RATE=${FANOUT1K_RATE:-200}
FANOUT10K_STREAMS=${FANOUT10K_STREAMS:-10000}
FANOUT10K_EVENTS=${FANOUT10K_EVENTS:-500}
FANOUT10K_RATE=${FANOUT10K_RATE:-50}
# burst: the fanout's subscribers and topic, events published as fast as one
# publisher connection goes (each publish waits for its answer): how many
# deliveries per second a hub manages, and how fast it answers meanwhile.
BURST_EVENTS=${BURST_EVENTS:-200}
BURST_PUBLISHERS=${BURST_PUBLISHERS:-1}
# spread: one subscriber per topic, as fast as one publisher connection goes
# (spread16: sixteen).
SPREAD_TOPICS=${SPREAD_TOPICS:-10000}
SPREAD_EVENTS=${SPREAD_EVENTS:-20000}
SPREAD_RATE=${SPREAD_RATE:-0}
SPREAD_PUBLISHERS=${SPREAD_PUBLISHERS:-1}
SPREAD16_PUBLISHERS=${SPREAD16_PUBLISHERS:-16}
SIZE=${SIZE:-64}
PROCESSES=${PROCESSES:-2}
# Publisher connections of the fanout workloads.
PUBLISHERS=${PUBLISHERS:-8}
# Streams opened at once, in total (the idle run uses one process; the
# fanout and spread workers share it out).
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-64}
WORKLOADS=${WORKLOADS:-"idle fanout fanout1k fanout10k burst spread spread16"}
# Pushpin needs about 55 µs of CPU per delivery here: the workloads of
# 100,000 deliveries per second and more would measure only its backlog.
PUSHPIN_WORKLOADS=${PUSHPIN_WORKLOADS:-"idle fanout spread spread16"}
HUBS=${HUBS:-"pushwire-memory pushwire-durable nchan pushpin"}
DOC=${DOC:-docs/performance.md}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}

# Loopback ports; the peers' ports are also written in their configs.
PUSHWIRE_ADDR=127.0.0.1:18090
NCHAN_ADDR=127.0.0.1:18091     # bench/nchan.conf
ORIGIN_ADDR=127.0.0.1:18092    # bench/routes
PUSHPIN_ADDR=127.0.0.1:17999   # bench/pushpin.conf http_port
PUSHPIN_CONTROL=127.0.0.1:15561 # bench/pushpin.conf push_in_http_port

export RUST_BACKTRACE=0
started_at=$(date +%s)
log() { printf '[compare] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# --- peers ------------------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || missing+=(libnginx-mod-nchan)
command -v pushpin >/dev/null 2>&1 || missing+=(pushpin)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
nginx_version=$(nginx -v 2>&1 | sed 's|.*nginx/||')
nchan_version=$(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null | sed 's/^[0-9]*://; s/+.*//')
pushpin_version=$(dpkg-query -W -f '${Version}' pushpin 2>/dev/null | sed 's/-[^-]*$//')

# --- pushwire -----------------------------------------------------------------
log "building pushwire (release)"
cargo build --release --quiet -p pushwire -p pushwire-bench
# PUSHWIRE_BIN: another build of the hub to measure (an earlier commit's,
# for a before-and-after), with this load generator.
PUSHWIRE=${PUSHWIRE_BIN:-$ROOT/target/release/pushwire}
BENCH=$ROOT/target/release/pushwire-bench

# --- processes and cleanup ----------------------------------------------------
WORK=$(mktemp -d -t pushwire-compare.XXXXXX)
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
STARTED=()   # every running pid this script started (the hub, its children, the origin)
HUB_PIDS=""  # the current hub's pids, comma-separated, for /proc readings
HUB_MAIN=()  # the pids to signal to stop the current hub
BENCH_PID="" # the bench command running, if any
START_ERROR="" # why the last hub did not start

stop_pids() {
    local pid deadline
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    deadline=$((SECONDS + 10))
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

cleanup() {
    local status=$?
    # The bench run in progress: timeout passes the signal on to it, and its
    # workers leave when their stdin closes.
    if [ -n "$BENCH_PID" ]; then stop_pids "$BENCH_PID"; fi
    if [ ${#STARTED[@]} -gt 0 ]; then stop_pids "${STARTED[@]}"; fi
    if [ "${KEEP_DIR:-0}" = 1 ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The hubs need a descriptor per stream.
ulimit -n "$(ulimit -Hn)"

port_busy() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }

wait_port() {
    local deadline=$((SECONDS + 30))
    until port_busy "$1"; do
        if [ $SECONDS -ge $deadline ]; then
            START_ERROR="nothing listened on $1 after 30 s"
            log "$START_ERROR"
            return 1
        fi
        sleep 0.1
    done
}

check_free() {
    local addr
    for addr in "$@"; do
        if port_busy "$addr"; then
            START_ERROR="$addr was already in use"
            log "$addr is already in use; stop what listens there first"
            return 1
        fi
    done
}

children_of() { pgrep -P "$1" 2>/dev/null | paste -sd, - || true; }

start_hub() {
    local hub=$1 dir=$WORK/$1 pid origin kids
    rm -rf "$dir"
    mkdir -p "$dir"
    case $hub in
        pushwire-memory | pushwire-durable)
            check_free "$PUSHWIRE_ADDR" || return 1
            local storage=(--storage memory)
            [ "$hub" = pushwire-durable ] && storage=(--data-dir "$dir/data")
            "$PUSHWIRE" serve --listen "$PUSHWIRE_ADDR" "${storage[@]}" --log warn \
                >"$dir/hub.log" 2>&1 &
            pid=$!
            STARTED+=("$pid")
            HUB_MAIN=("$pid")
            wait_port "$PUSHWIRE_ADDR" || return 1
            HUB_PIDS=$pid
            ;;
        nchan)
            check_free "$NCHAN_ADDR" || return 1
            mkdir -p "$dir/tmp"
            nginx -p "$dir/" -c "$ROOT/bench/nchan.conf" >"$dir/hub.log" 2>&1 &
            pid=$!
            STARTED+=("$pid")
            HUB_MAIN=("$pid")
            wait_port "$NCHAN_ADDR" || return 1
            sleep 0.5
            kids=$(children_of "$pid")
            [ -n "$kids" ] && STARTED+=(${kids//,/ })
            HUB_PIDS=$pid${kids:+,$kids}
            ;;
        pushpin)
            check_free "$PUSHPIN_ADDR" "$PUSHPIN_CONTROL" "$ORIGIN_ADDR" || return 1
            cp "$ROOT/bench/pushpin.conf" "$ROOT/bench/routes" "$dir/"
            mkdir -p "$dir/run" "$dir/log"
            "$BENCH" grip-origin --listen "$ORIGIN_ADDR" --lifetime 30m >"$dir/origin.log" 2>&1 &
            origin=$!
            STARTED+=("$origin")
            (cd "$dir" && exec pushpin --config "$dir/pushpin.conf") >"$dir/hub.log" 2>&1 &
            pid=$!
            STARTED+=("$pid")
            HUB_MAIN=("$pid" "$origin")
            wait_port "$ORIGIN_ADDR" || return 1
            wait_port "$PUSHPIN_ADDR" || return 1
            wait_port "$PUSHPIN_CONTROL" || return 1
            sleep 0.5
            kids=$(children_of "$pid")
            [ -n "$kids" ] && STARTED+=(${kids//,/ })
            # Pushpin's own processes (runner, condure, zurl, proxy, handler);
            # the origin is the application behind it and is not counted.
            HUB_PIDS=$pid${kids:+,$kids}
            ;;
    esac
}

stop_hub() {
    local pid
    stop_pids "${HUB_MAIN[@]}"
    # Anything of the hub still running (children are stopped by their parent).
    for pid in "${STARTED[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then stop_pids "$pid"; fi
    done
    # All stopped: forget the pids, which the system may hand out again.
    STARTED=()
    HUB_PIDS=""
    HUB_MAIN=()
}

# Runs one bench command; its JSON line (or the error) goes to the results.
# It runs in the background so that a signal to this script is handled at
# once (bash runs traps only between foreground commands).
run_bench() {
    local label=$1 mode=$2 workload=$3 out err
    shift 3
    log "$label: $workload"
    timeout -k 10 "$RUN_TIMEOUT" "$BENCH" "$mode" --label "$label" --workload "$workload" \
        --hub-pid "$HUB_PIDS" "$@" >"$WORK/bench.out" 2>"$WORK/bench.err" &
    BENCH_PID=$!
    if wait "$BENCH_PID"; then
        BENCH_PID=""
        out=$(tail -n 1 "$WORK/bench.out")
        printf '%s\n' "$out" >>"$RESULTS"
        printf '%s\n' "$out" >&2
    else
        BENCH_PID=
        err=$(tail -n 3 "$WORK/bench.err" | tr -d '"\\' | tr '\n\t' '  ')
        log "$label: $workload failed: $err"
        printf '{"label":"%s","mode":"%s","workload":"%s","error":"%s"}\n' \
            "$label" "$mode" "$workload" "$err" >>"$RESULTS"
    fi
}

target_of() { case $1 in pushwire-*) echo pushwire ;; *) echo "$1" ;; esac; }

stream_addr() {
    case $1 in
        pushwire-*) echo "$PUSHWIRE_ADDR" ;;
        nchan) echo "$NCHAN_ADDR" ;;
        pushpin) echo "$PUSHPIN_ADDR" ;;
    esac
}

publish_addr() {
    case $1 in
        pushwire-*) echo "$PUSHWIRE_ADDR" ;;
        nchan) echo "$NCHAN_ADDR" ;;
        pushpin) echo "$PUSHPIN_CONTROL" ;;
    esac
}

idle_path() {
    case $1 in
        pushwire-*) echo '/api/v1/stream?topic=idle-{n}' ;;
        nchan) echo '/sub/idle-{n}' ;;
        pushpin) echo '/stream/idle-{n}' ;;
    esac
}

per_worker=$(((CONNECT_CONCURRENCY + PROCESSES - 1) / PROCESSES))
# The load generator's arguments for hub $1 with $2 publisher connections.
load_args() {
    printf '%s\n' --target "$(target_of "$1")" --hub "$(stream_addr "$1")" \
        --publish-to "$(publish_addr "$1")" --processes "$PROCESSES" \
        --concurrency "$per_worker" --publishers "$2" --size "$SIZE" \
        --deadline 30s --connect-deadline 120s
}

# One fanout or spread run: hub, mode, workload, publisher connections,
# streams, events, rate.
load_run() {
    local common
    mapfile -t common < <(load_args "$1" "$4")
    run_bench "$1" "$2" "$3" "${common[@]}" --streams "$5" --events "$6" --rate "$7"
}

# Runs workload $2 against a freshly started hub $1.
run_workload() {
    local hub=$1 workload=$2
    if ! start_hub "$hub"; then
        log "$hub did not start; its log: $(tail -n 3 "$WORK/$hub/hub.log" 2>/dev/null | tr '\n' ' ')"
        stop_hub
        printf '{"label":"%s","workload":"%s","error":"the hub did not start: %s"}\n' \
            "$hub" "$workload" "${START_ERROR:-see its log}" >>"$RESULTS"
        return
    fi
    case $workload in
        idle)
            run_bench "$hub" idle idle --hub "$(stream_addr "$hub")" \
                --path "$(idle_path "$hub")" --streams "$IDLE_STREAMS" \
                --concurrency "$CONNECT_CONCURRENCY" --deadline 120s ;;
        fanout) load_run "$hub" fanout fanout "$PUBLISHERS" "$FANOUT_STREAMS" "$FANOUT_EVENTS" "$FANOUT_RATE" ;;
        fanout1k) load_run "$hub" fanout fanout1k "$PUBLISHERS" "$FANOUT1K_STREAMS" "$FANOUT1K_EVENTS" "$FANOUT1K_RATE" ;;
        fanout10k) load_run "$hub" fanout fanout10k "$PUBLISHERS" "$FANOUT10K_STREAMS" "$FANOUT10K_EVENTS" "$FANOUT10K_RATE" ;;
        burst) load_run "$hub" fanout burst "$BURST_PUBLISHERS" "$FANOUT_STREAMS" "$BURST_EVENTS" 0 ;;
        spread) load_run "$hub" spread spread "$SPREAD_PUBLISHERS" "$SPREAD_TOPICS" "$SPREAD_EVENTS" "$SPREAD_RATE" ;;
        spread16) load_run "$hub" spread spread16 "$SPREAD16_PUBLISHERS" "$SPREAD_TOPICS" "$SPREAD_EVENTS" "$SPREAD_RATE" ;;
        *) log "unknown workload $workload" ;;
    esac
    # STAGES_DIR: keep where pushwire's publishes spent their time (the
    # stage histograms of /metrics) in $STAGES_DIR/<hub>-<workload>.prom.
    if [ -n "${STAGES_DIR:-}" ] && [[ $hub == pushwire-* ]]; then
        mkdir -p "$STAGES_DIR"
        curl -s --max-time 5 "http://$PUSHWIRE_ADDR/metrics" \
            | grep -E '^pushwire_(publish_stage_seconds|history_group_requests|publish_duration_seconds)' \
            >"$STAGES_DIR/$hub-$workload.prom" || true
    fi
    stop_hub
}

for hub in $HUBS; do
    case $hub in
        pushwire-memory | pushwire-durable | nchan) workloads=$WORKLOADS ;;
        pushpin) workloads=$PUSHPIN_WORKLOADS ;;
        *) log "unknown hub $hub"; exit 2 ;;
    esac
    for workload in $workloads; do
        run_workload "$hub" "$workload"
    done
done

revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD 2>/dev/null; then revision="$revision with uncommitted changes"; fi
rate_text() { if [ "$1" = 0 ]; then echo "as fast as possible"; else echo "at $1/s"; fi; }
elapsed=$(($(date +%s) - started_at))
log "all runs done in ${elapsed}s; writing the table into $DOC"
"$BENCH" report --results "$RESULTS" --doc "$DOC" \
    --hub 'pushwire-memory=pushwire (memory)' \
    --hub 'pushwire-durable=pushwire (durable)' \
    --hub nchan=Nchan --hub pushpin=Pushpin \
    --ratio pushwire-memory/nchan --ratio pushwire-memory/pushpin \
    --ratio pushwire-durable/nchan --ratio pushwire-durable/pushpin \
    --note "Measured $(date -u +%Y-%m-%d) by \`bench/compare.sh\` in ${elapsed} s on $(nproc) cores: nginx ${nginx_version} with Nchan ${nchan_version}, Pushpin ${pushpin_version}, pushwire ${PUSHWIRE_REVISION:-$revision} (release build)." \
    --note "Workloads: idle ${IDLE_STREAMS} streams; fanout ${FANOUT_STREAMS} subscribers of one topic × ${FANOUT_EVENTS} events at ${FANOUT_RATE}/s; fanout 1k ${FANOUT1K_STREAMS} × ${FANOUT1K_EVENTS} at ${FANOUT1K_RATE}/s; fanout 10k ${FANOUT10K_STREAMS} × ${FANOUT10K_EVENTS} at ${FANOUT10K_RATE}/s (these three over ${PUBLISHERS} publisher connections); burst ${FANOUT_STREAMS} subscribers × ${BURST_EVENTS} events as fast as ${BURST_PUBLISHERS} publisher connection(s) go; spread ${SPREAD_TOPICS} topics × 1 subscriber, ${SPREAD_EVENTS} events $(rate_text "$SPREAD_RATE") over ${SPREAD_PUBLISHERS} publisher connection(s) (spread 16: ${SPREAD16_PUBLISHERS}); ${SIZE}-byte events, ${PROCESSES} load processes; Pushpin runs ${PUSHPIN_WORKLOADS}."
if [ -n "${RESULTS_COPY:-}" ]; then cp "$RESULTS" "$RESULTS_COPY"; fi
