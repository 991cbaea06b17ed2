#!/bin/sh
# The sustained rate (issue 20): the highest offered rate at which junction's queue stays flat.
#
#   sh tools/bench/sustained.sh
#
# For each scenario (by default HTTP 1 KB -> file OUT mode: append, and the same with mode:
# file) and each repeat, against a fresh junction per step on free 127.0.0.1 ports:
#   1. a closed-loop probe at JN_SUS_CONNS connections (what the client can offer at most);
#   2. if the queue grew there, paced runs (jn-bench --rate R) from the rate delivered under
#      overload downwards until a run is flat, then bisection between the highest flat rate and
#      the lowest that grew, until they are within 5 % or JN_SUS_STEPS runs were made.
# A run is flat when, over its measured window, junction's own delivered count (admin
# /api/v1/channels) is at least accepted x (1 - JN_SUS_MARGIN %), nothing was refused or
# failed, and what was accepted reached the offered rate within 3 % (else the client, not
# junction, set the rate). The sustained rate of a search is the delivered/s of its best flat
# run; the table gives the median of the searches and, when nginx is installed, the peer: nginx
# answering 200 to the same POSTs at the same connections, measured in the same run.
#
# Knobs (environment):
#   JN_SUS_SCENARIOS="http-append http-append-filemode"   configs in tools/bench/configs; one
#                               whose name starts with mllp is driven over MLLP (jn-bench --mode
#                               mllp, its ADT^A01), e.g. mllp-append (HL7 batch files)
#   JN_SUS_CONNS=64  JN_SUS_DURATION=10  JN_SUS_WARMUP=2  JN_SUS_REPEAT=3
#   JN_SUS_MARGIN=2  (percent)  JN_SUS_STEPS=6  (runs per search after the probe)
#   JN_SUS_BUILD=build-bench    a release build (made as run.sh makes it when missing)
#   JN_SUS_SETTLE=5             seconds after removing the previous run's files, after a sync:
#                               mass deletes slow the next run's file creation on ext4
#                               (docs/performance.md, File OUT), which would favour earlier steps
#   JN_SUS_PERF=0               1: one extra closed-loop run of each scenario under perf record -g
#                               before the searches (not counted; written next to the results)
#
# Every run stops by itself (jn-bench ends after warm-up + duration, under `timeout`). Only the
# processes this script started are stopped, by their pid.
set -eu

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SCENARIOS=${JN_SUS_SCENARIOS:-http-append http-append-filemode}
CONNS=${JN_SUS_CONNS:-64}
DURATION=${JN_SUS_DURATION:-10}
WARMUP=${JN_SUS_WARMUP:-2}
REPEAT=${JN_SUS_REPEAT:-3}
MARGIN=${JN_SUS_MARGIN:-2}
STEPS=${JN_SUS_STEPS:-6}
PERF=${JN_SUS_PERF:-0}
SETTLE=${JN_SUS_SETTLE:-5}
BUILD=$ROOT/${JN_SUS_BUILD:-build-bench}
CONFIGS=$ROOT/tools/bench/configs
OUT=$BUILD/bench-results/sustained-$(date -u +%Y%m%dT%H%M%SZ)
RUN_LIMIT=$((DURATION + WARMUP + 60))

log() {
    printf '%s\n' "$*" >&2
}

if [ ! -x "$BUILD/junction" ] || [ ! -x "$BUILD/jn-bench" ]; then
    log "building a release build in $BUILD ..."
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j2 --target junction jn-bench >/dev/null
fi
BIN=$BUILD/junction
BENCH=$BUILD/jn-bench
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jn-sus-XXXXXX")
RESULTS=$OUT/searches.tsv
: >"$RESULTS"
JPID=""
NPID=""

stop_pid() {
    kill -TERM "$1" 2>/dev/null || return 0
    sp_i=0
    while kill -0 "$1" 2>/dev/null && [ "$sp_i" -lt 300 ]; do
        sleep 0.1
        sp_i=$((sp_i + 1))
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

cleanup() {
    if [ -n "$JPID" ]; then
        stop_pid "$JPID"
    fi
    if [ -n "$NPID" ]; then
        stop_pid "$NPID"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

jget() {
    # $1 JSON line, $2 key: the number, or empty.
    printf '%s\n' "$1" | sed -n "s/.*\"$2\":\\(-\\{0,1\\}[0-9.]*\\).*/\\1/p"
}

# One run on a fresh junction: run_once CONFIG RATE (0: closed loop). Sets A (accepted/s), D
# (delivered/s), E (errors), FLAT (1/0) and prints a line.
run_once() {
    ro_cfg=$1
    ro_rate=$2
    JN_BENCH_DIR=$WORK/run
    if [ -d "$JN_BENCH_DIR" ]; then
        rm -rf "$JN_BENCH_DIR"
        sync
        sleep "$SETTLE"
    fi
    mkdir -p "$JN_BENCH_DIR"
    # shellcheck disable=SC2046
    set -- $("$BENCH" --mode freeport --conns 2)
    JN_BENCH_PORT=$1
    JN_BENCH_ADMIN=$2
    export JN_BENCH_DIR JN_BENCH_PORT JN_BENCH_ADMIN
    ro_url=http://127.0.0.1:$JN_BENCH_PORT/ingest
    ro_mode=http
    case $ro_cfg in
    mllp*)
        ro_url=mllp://127.0.0.1:$JN_BENCH_PORT
        ro_mode=mllp
        ;;
    esac
    "$BIN" run $( [ "$(id -u)" = 0 ] && echo --allow-root ) -c "$CONFIGS/$ro_cfg.yaml" \
        >>"$OUT/junction-$ro_cfg.log" 2>&1 &
    JPID=$!
    if ! timeout 120 "$BENCH" --mode wait --url "$ro_url" --duration 100 >/dev/null; then
        log "junction did not start on $ro_cfg; the end of its log:"
        tail -20 "$OUT/junction-$ro_cfg.log" >&2
        exit 1
    fi
    ro_perf=""
    if [ "$ro_rate" = perf ]; then
        ro_rate=0
        ( sleep "$WARMUP"; exec perf record -g -q -o "$OUT/perf-$ro_cfg.data" -p "$JPID" \
            -- sleep "$DURATION" ) >/dev/null 2>&1 &
        ro_perf=$!
    fi
    ro_rarg=""
    if [ "$ro_rate" != 0 ]; then
        ro_rarg="--rate $ro_rate"
    fi
    # shellcheck disable=SC2086
    ro_out=$(timeout "$RUN_LIMIT" "$BENCH" --mode "$ro_mode" --url "$ro_url" --conns "$CONNS" \
        --duration "$DURATION" --warmup "$WARMUP" --pid "$JPID" --json $ro_rarg \
        --count-url "http://127.0.0.1:$JN_BENCH_ADMIN/api/v1/channels" --count-key delivered) \
        || true
    if [ -n "$ro_perf" ]; then
        wait "$ro_perf" 2>/dev/null || true
        perf report -i "$OUT/perf-$ro_cfg.data" --no-children --percent-limit 0.7 --stdio \
            2>/dev/null | grep -v '^$' | head -150 >"$OUT/perf-$ro_cfg.txt" || true
        log "  profile: $OUT/perf-$ro_cfg.txt"
    fi
    stop_pid "$JPID"
    JPID=""
    ro_json=$(printf '%s\n' "$ro_out" | grep '^{' | tail -n 1)
    A=$(jget "$ro_json" msg_per_s)
    D=$(jget "$ro_json" delivered_per_s)
    E=$(jget "$ro_json" errors)
    A=${A:-0}
    D=${D:-0}
    E=${E:-1}
    FLAT=$(awk -v a="$A" -v d="$D" -v e="$E" -v r="$ro_rate" -v m="$MARGIN" 'BEGIN {
        ok = a > 0 && e == 0 && d >= a * (1 - m / 100) && (r == 0 || a >= 0.97 * r)
        print ok ? 1 : 0 }')
    log "  $ro_cfg offered $( [ "$ro_rate" = 0 ] && echo "closed loop" || echo "$ro_rate/s" ):" \
        "accepted $A/s delivered $D/s errors $E -> $( [ "$FLAT" = 1 ] && echo flat ||
        echo "not flat" )"
}

# One search: sets SUS (sustained delivered/s), SUS_A, SUS_R, PROBE_A, PROBE_D, HOW.
search() {
    se_cfg=$1
    run_once "$se_cfg" 0
    PROBE_A=$A
    PROBE_D=$D
    if [ "$FLAT" = 1 ]; then
        SUS=$D
        SUS_A=$A
        SUS_R="closed"
        HOW="flat at the full closed-loop load of $CONNS connections (intake-bound)"
        return 0
    fi
    se_lo=""
    se_lod=0
    se_loa=0
    se_hi=$A
    se_r=$(awk -v d="$D" -v a="$A" 'BEGIN { r = d > 0 ? d : a / 2; printf "%d", r }')
    se_i=0
    while [ "$se_i" -lt "$STEPS" ]; do
        run_once "$se_cfg" "$se_r"
        if [ "$FLAT" = 1 ]; then
            se_lo=$se_r
            se_lod=$D
            se_loa=$A
        else
            se_hi=$se_r
        fi
        if [ -n "$se_lo" ]; then
            # Close enough, or bisect.
            if awk -v lo="$se_lo" -v hi="$se_hi" 'BEGIN { exit !(hi - lo <= 0.05 * lo) }'; then
                break
            fi
            se_r=$(awk -v lo="$se_lo" -v hi="$se_hi" 'BEGIN { printf "%d", (lo + hi) / 2 }')
        else
            se_r=$(awk -v r="$se_r" -v d="$D" 'BEGIN { n = 0.85 * r; if (d > 0 && d < n) n = d
                printf "%d", n }')
        fi
        se_i=$((se_i + 1))
    done
    if [ -n "$se_lo" ]; then
        SUS=$se_lod
        SUS_A=$se_loa
        SUS_R=$se_lo
        HOW="flat at $se_lo/s offered, growing at $se_hi/s"
    else
        SUS=0
        SUS_A=0
        SUS_R="-"
        HOW="no flat run found down to $se_r/s"
    fi
}

# The peer: nginx answering 200 to the same POSTs, one worker (junction has one loop for HTTP).
peer_nginx() {
    PEER=""
    if ! command -v nginx >/dev/null 2>&1; then
        return 0
    fi
    # shellcheck disable=SC2046
    set -- $("$BENCH" --mode freeport --conns 1)
    pn_dir=$WORK/nginx
    mkdir -p "$pn_dir"
    cat >"$pn_dir/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $pn_dir/nginx.pid;
error_log $pn_dir/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $pn_dir/body;
    client_body_buffer_size 64k;
    server {
        listen 127.0.0.1:$1;
        location / { return 200 "ok\n"; }
    }
}
EOF
    nginx -c "$pn_dir/nginx.conf" -p "$pn_dir" 2>>"$pn_dir/error.log" &
    NPID=$!
    if timeout 20 "$BENCH" --mode wait --url "http://127.0.0.1:$1/ingest" --duration 10 \
        >/dev/null 2>&1; then
        pn_out=$(timeout "$RUN_LIMIT" "$BENCH" --mode http --url "http://127.0.0.1:$1/ingest" \
            --conns "$CONNS" --duration "$DURATION" --warmup "$WARMUP" --json) || true
        PEER=$(jget "$(printf '%s\n' "$pn_out" | grep '^{' | tail -n 1)" msg_per_s)
        log "  peer nginx return 200, $CONNS conns: $PEER/s"
    fi
    stop_pid "$NPID"
    NPID=""
}

log "results in $OUT"
if [ "$PERF" = 1 ] && command -v perf >/dev/null 2>&1; then
    for sc in $SCENARIOS; do
        log "profiling $sc (a closed-loop run that is not counted) ..."
        run_once "$sc" perf
    done
fi
rep=1
while [ "$rep" -le "$REPEAT" ]; do
    peer_nginx
    printf 'peer\t%s\t%s\t%s\t%s\t%s\t%s\n' "${PEER:-}" "" "" "" "" "nginx return 200" \
        >>"$RESULTS"
    for sc in $SCENARIOS; do
        search "$sc"
        log "$sc: sustained $SUS delivered/s ($HOW)"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sc" "$SUS" "$SUS_A" "$SUS_R" "$PROBE_A" \
            "$PROBE_D" "$HOW" >>"$RESULTS"
    done
    rep=$((rep + 1))
done

{
    echo "$("$BIN" version 2>/dev/null | head -n 1), release build; $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) CPUs, Linux $(uname -r); $CONNS connections, HTTP POST 1 KiB;" \
        "windows of ${DURATION} s after ${WARMUP} s; flat = delivered >= accepted x" \
        "(1 - $MARGIN %), no errors; medians of $REPEAT searches"
    echo
    awk -F '\t' '
    function median(k,    n, i, j, t, a) {
        n = cnt[k]
        for (i = 1; i <= n; i++) a[i] = (k ~ /\/x$/ ? rv[k, i] : v[k, i]) + 0
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n == 0 ? "" : n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
        if (!($1 in seen)) { seen[$1] = 1; order[++nk] = $1 }
        i = ++cnt[$1]
        if ($2 != "") v[$1, i] = $2; else cnt[$1]--
        if ($1 == "peer") lastpeer = $2
        else if (lastpeer != "" && lastpeer > 0) { rk = $1 "/x"; rv[rk, ++cnt[rk]] = $2 / lastpeer }
        pa[$1] = pa[$1] sep[$1] ($1 == "peer" ? $2 : sprintf("%.0f (probe %.0f/%.0f%s)", $2, $5, $6,
            (lastpeer > 0 ? sprintf("; x%.2f", $2 / lastpeer) : "")))
        sep[$1] = ", "
        pv[$1, i] = $5; pd[$1, i] = $6
    }
    END {
        peer = ("peer" in cnt) && cnt["peer"] > 0 ? median("peer") : ""
        print "| scenario | sustained delivered/s (median) | x nginx 200 (median of the repeats) | each search: sustained (closed-loop probe accepted/delivered; x nginx of that repeat) |"
        print "|---|--:|--:|---|"
        for (k = 1; k <= nk; k++) {
            s = order[k]
            if (s == "peer") {
                if (peer != "") printf "| peer: nginx return 200 | %.0f | 1 | %s |\n", peer, pa[s]
                continue
            }
            m = median(s)
            printf "| %s | %.0f | %s | %s |\n", s, m, (cnt[s "/x"] > 0 ? sprintf("%.2f", median(s "/x")) : "-"), pa[s]
        }
    }' "$RESULTS"
} >"$OUT/table.md"
cat "$OUT/table.md"
log "saved: $OUT/table.md, searches.tsv, junction logs"
