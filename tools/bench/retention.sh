#!/bin/sh
# Retention plateau (issue 20 part 2): drives HTTP POST 1 KB -> HTTP OUT (jn-sink) through one
# route for a while and samples, every JN_RET_STEP seconds, the journal's data file size
# (data.mdb) and what /metrics says of the kept messages, the action log and the journal's
# pages in use. With retention working, the data file stops growing once the kept messages and
# the action log reach their budget: LMDB reuses the pages retention frees.
#
#   sh tools/bench/retention.sh            # prints a table (markdown) and the TSV path
#
# Knobs (environment):
#   JN_RET_KEEP=none|headers|all   the route's keep: (default none)
#   JN_RET_DURATION=240            seconds of load
#   JN_RET_STEP=10                 seconds between samples
#   JN_RET_BUDGET=64MiB            junction.retention.max_bytes
#   JN_RET_LOG=32MiB               junction.action_log.max_size
#   JN_RET_CONNS=16                connections of the load
# The journal's max_size is 1GiB (the default); the budget is what bounds the file.
set -eu

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
KEEP=${JN_RET_KEEP:-none}
DURATION=${JN_RET_DURATION:-240}
STEP=${JN_RET_STEP:-10}
BUDGET=${JN_RET_BUDGET:-64MiB}
LOGMAX=${JN_RET_LOG:-32MiB}
CONNS=${JN_RET_CONNS:-16}
BUILD=$ROOT/build-bench

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target junction jn-bench jn-sink >/dev/null
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jn-ret-XXXXXX")
JPID=""
SPID=""
BPID=""
cleanup() {
    for p in $BPID $JPID $SPID; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

PORTS=$("$BUILD/jn-bench" --mode freeport --conns 3)
set -- $PORTS
IN=$1
ADMIN=$2
SINKP=$3
cat >"$WORK/junction.yaml" <<EOF
junction:
  data_dir: $WORK/data
  admin: 127.0.0.1:$ADMIN
  retention: { keep: 1h, max_bytes: $BUDGET }
  action_log: { max_size: $LOGMAX }
channels:
  in: { type: http, direction: in, listen: "127.0.0.1:$IN", path: /ingest }
  sink: { type: http, direction: out, url: "http://127.0.0.1:$SINKP/sink", concurrency: 16 }
routes:
  r: { from: [in], to: [sink], keep: $KEEP }
EOF
"$BUILD/jn-sink" --listen "127.0.0.1:$SINKP" >/dev/null &
SPID=$!
"$BUILD/junction" run $( [ "$(id -u)" = 0 ] && echo --allow-root ) -c "$WORK/junction.yaml" >"$WORK/junction.log" 2>&1 &
JPID=$!
"$BUILD/jn-bench" --mode wait --url "http://127.0.0.1:$IN/ingest" --duration 20 >/dev/null
"$BUILD/jn-bench" --mode http --url "http://127.0.0.1:$IN/ingest" --conns "$CONNS" \
    --warmup 0 --duration "$DURATION" >"$WORK/bench.out" &
BPID=$!

metric() {
    # $1: a metric name with its labels as /metrics prints it
    curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v m="$1" '$1 == m { print $2; exit }'
}
TSV=$ROOT/build-bench/retention-$KEEP-$(date -u +%Y%m%dT%H%M%SZ).tsv
printf 'seconds\tdelivered\tdata_mdb_MiB\tjournal_used_MiB\tkept_MiB\taction_log_MiB\tdeleted\n' \
    >"$TSV"
t=0
while kill -0 "$BPID" 2>/dev/null; do
    sleep "$STEP"
    t=$((t + STEP))
    del=$(curl -s "http://127.0.0.1:$SINKP/stats" | tr -c '0-9\n' ' ' | awk '{print $1}')
    size=$(stat -c %s "$WORK/data/data.mdb")
    used=$(metric junction_journal_bytes)
    kept=$(metric junction_kept_bytes)
    alog=$(metric junction_action_log_bytes)
    gone=$(metric 'junction_retention_deleted_total{kind="action"}')
    gonem=$(metric 'junction_retention_deleted_total{kind="message"}')
    echo "$t ${del:-0} $size ${used:-0} ${kept:-0} ${alog:-0} ${gone:-0} ${gonem:-0}" | awk '{
        m = 1048576
        printf "%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t%d\n", $1, $2, $3 / m, $4 / m, $5 / m,
               $6 / m, $7 + $8 }' >>"$TSV"
done
wait "$BPID" || true
BPID=""
echo "keep: $KEEP, retention.max_bytes $BUDGET, action_log.max_size $LOGMAX, $CONNS conns, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| s | delivered | data.mdb MiB | pages in use MiB | kept MiB | action log MiB | deleted |"
echo "|---|---|---|---|---|---|---|"
awk -F'\t' 'NR > 1 { printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7 }' "$TSV"
echo
sed -n 1p "$WORK/bench.out"
echo "TSV: $TSV"
