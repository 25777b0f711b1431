#!/usr/bin/env bash
# make bench BENCH=sitelink: the receivers as a hospital site reaches them, across a VPN's link rather than
# loopback. Two network namespaces: dib-site-PID holds DCMTK's storescu (the site's PACS), dib-aws-PID the
# receiver under test and the S3 endpoint. bench-linkrelay joins them with a tun device in each and holds
# every packet RTT/2 in each direction (these kernels have no netem); tbf on both devices sets the bandwidth,
# their MTU the packet size, so TCP end to end sees the link. The S3 endpoint (bench-s3 -mode sink) answers
# writes after a log-normal latency, p50 20 ms / p99 100 ms by default: S3's own. Every receiver starts on an
# empty store; receivers take turns scenario by scenario. Reports instances/s, the C-STORE round trip
# (p50/p99, from storescu's log) and each receiver's ratio to storescp writing to local disk.
#
#   DICOM_CORPUS, SCALE, BENCH_OUT    as test/bench/run.sh
#   SITELINK_RTTS                   round trips in ms (default "2 20")
#   SITELINK_ASSOCS                 parallel associations (default "1 4 8")
#   SITELINK_CORPORA                sub-corpora of the bench corpus (default "ct mr")
#   SITELINK_N                      instances sent per run, at most (default 400)
#   SITELINK_ROUNDS                 rounds (default 3; the table gives medians)
#   SITELINK_RATE, SITELINK_MTU     link bandwidth and MTU (default 500mbit, 1400)
#   S3_WRITE_LATENCY, S3_READ_LATENCY  the S3 endpoint's answers, P50/P99 (default 20ms/100ms both)
#   STAGING_LATENCY                 the staged store's per-operation latencies (default efs; scp-task --staging-latency)
#   SITELINK_RECEIVERS              labels of the receivers to run (default all: "storescp|scp-task S3|scp-task staged")
set -euo pipefail
cd "$(dirname "$0")/../.."
export TCP_NODELAY=1
export DICOM_CORPUS=${DICOM_CORPUS:-/tmp/dicom-corpus}
OUT=${BENCH_OUT:-test/artifacts/bench}
RTTS=${SITELINK_RTTS:-2 20}
ASSOCS=${SITELINK_ASSOCS:-1 4 8}
CORPORA=${SITELINK_CORPORA:-ct mr}
N=${SITELINK_N:-400}
ROUNDS=${SITELINK_ROUNDS:-3}
RATE=${SITELINK_RATE:-500mbit}
MTU=${SITELINK_MTU:-1400}
S3_WRITE_LATENCY=${S3_WRITE_LATENCY:-20ms/100ms}
S3_READ_LATENCY=${S3_READ_LATENCY:-20ms/100ms}
SITE=dib-site-$$ AWS=dib-aws-$$
SITE_IP=10.201.0.1 AWS_IP=10.201.0.2

# The receivers, one a line: "label|command". A command runs in the aws namespace; its first word picks how
# (storescp, or scp-task with the rest as its flags, against this run's S3 endpoint). $RDIR is evaluated per
# run: a new empty directory for the receiver's files.
RECEIVERS=(
  "storescp|storescp"
  "scp-task S3|scp-task --store s3://bench/dicom"
  # The staged store: acknowledged once in a journal on the staging directory, uploaded afterwards. A local
  # directory stands in for EFS, every operation on it held for EFS's published latency (vfs.EFS: ~1 ms a read,
  # ~2.7 ms a write, docs/design/staged-store.md); the operations per object are counted and reported.
  "scp-task staged|scp-task --store s3://bench/dicom --staging \$RDIR/staging --staging-latency \$STAGING_LATENCY"
)
STAGING_LATENCY=${STAGING_LATENCY:-efs}

if [ -n "${SITELINK_RECEIVERS:-}" ]; then
  IFS='|' read -ra want <<<"$SITELINK_RECEIVERS"
  picked=()
  for spec in "${RECEIVERS[@]}"; do
    for w in "${want[@]}"; do [ "${spec%%|*}" = "$w" ] && picked+=("$spec"); done
  done
  [ ${#picked[@]} -gt 0 ] || { echo "sitelink: SITELINK_RECEIVERS=$SITELINK_RECEIVERS names no receiver" >&2; exit 2; }
  RECEIVERS=("${picked[@]}")
fi

for tool in ip tc storescu storescp curl; do
  command -v "$tool" >/dev/null || { echo "sitelink: needs $tool (apt-get install iproute2 dcmtk)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "sitelink: needs root for network namespaces and tun devices" >&2; exit 1; }
[ -e /dev/net/tun ] || { echo "sitelink: needs /dev/net/tun" >&2; exit 1; }

mkdir -p "$OUT" bin
WORK=$(mktemp -d /var/tmp/dicom-sitelink-XXXXXX)
RELAY= pids=()
# ns_del NS: stops what this run left in NS (storescp's forked children, by their pids) and deletes it.
ns_del() {
  local p
  for p in $(ip netns pids "$1" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  ip netns del "$1" 2>/dev/null || true
}
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$RELAY" ] && kill "$RELAY" 2>/dev/null
  wait 2>/dev/null || true
  ns_del "$SITE"; ns_del "$AWS"
  rm -rf "$WORK"
}
trap cleanup EXIT

# Namespaces of an earlier run killed before its cleanup (its pid is gone).
for ns in $(ip netns list | awk '{print $1}' | grep -E '^dib-(site|aws)-[0-9]+$' || true); do
  kill -0 "${ns##*-}" 2>/dev/null || ip netns del "$ns" 2>/dev/null || true
done

if [ ! -d "$DICOM_CORPUS/ct" ] || [ ! -d "$DICOM_CORPUS/mr" ]; then
  echo "sitelink: building the corpus in $DICOM_CORPUS (once)"
  SCALE=${SCALE:-1} bash test/corpus/make-corpus.sh "$DICOM_CORPUS" ct mr
fi
go build -o bin/scp-task ./scp-task
go build -o bin/bench-s3 ./test/bench/s3server
go build -o bin/bench-linkrelay ./test/bench/linkrelay

# A log configuration giving storescu's lines epoch-second.millisecond.microsecond stamps.
cat > "$WORK/storescu-log.cfg" <<'EOF'
log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%s.%Q} %m%n
EOF

# Processes in a namespace are started with `ip netns exec` itself, never through a shell function: ip execs
# the command, so $! is the command's pid and stop reaches it.
wait_port() { # NS ADDR PORT
  ip netns exec "$1" bash -c "for _ in \$(seq 200); do (exec 3<>/dev/tcp/$2/$3) 2>/dev/null && exit 0; sleep 0.05; done; exit 1" \
    || { echo "sitelink: nothing listening on $2:$3 in $1" >&2; return 1; }
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# link_up RTT_MS: the two namespaces and the relay between them.
link_up() {
  ip netns add "$SITE"; ip netns add "$AWS"
  bin/bench-linkrelay -ns-a "$SITE" -ns-b "$AWS" -dev dib0 -rtt "$1ms" -stats "$OUT/sitelink-relay-$1ms.json" \
    > "$WORK/relay.out" 2>&1 & RELAY=$!
  for _ in $(seq 100); do grep -q ready "$WORK/relay.out" && break; sleep 0.05; done
  grep -q ready "$WORK/relay.out" || { cat "$WORK/relay.out" >&2; return 1; }
  local ns addr peer
  for ns in "$SITE" "$AWS"; do
    addr=$SITE_IP peer=$AWS_IP; [ "$ns" = "$AWS" ] && addr=$AWS_IP peer=$SITE_IP
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$addr/32" peer "$peer" dev dib0
    ip -n "$ns" link set dib0 mtu "$MTU" up
    tc -n "$ns" qdisc add dev dib0 root tbf rate "$RATE" burst 64kb latency 20ms
  done
}
link_down() {
  stop "$RELAY"; RELAY=
  ns_del "$SITE"; ns_del "$AWS"
}

# receiver_start SPEC PORT: starts the receiver in the aws namespace listening on PORT; sets RPIDS.
receiver_start() {
  local spec=$1 port=$2 label=${1%%|*} s3port=9000 args
  RDIR=$(mktemp -d "$WORK/store-XXXXXX")
  eval "args=(${spec#*|})"
  RPIDS=()
  case ${args[0]} in
    storescp)
      ip netns exec "$AWS" storescp --fork -aet REMOTE_AE -od "$RDIR" "$port" >> "$OUT/sitelink-storescp.log" 2>&1 & RPIDS+=($!) ;;
    scp-task)
      # The endpoint stands in for S3, which spends none of this machine's CPU: a lazier garbage collector
      # keeps its share small.
      ip netns exec "$AWS" env GOGC=400 bin/bench-s3 -listen "127.0.0.1:$s3port" -mode sink \
        -write-latency "$S3_WRITE_LATENCY" -read-latency "$S3_READ_LATENCY" 2>> "$OUT/sitelink-s3.log" & RPIDS+=($!)
      wait_port "$AWS" 127.0.0.1 "$s3port"
      ip netns exec "$AWS" env AWS_ENDPOINT_URL_S3="http://127.0.0.1:$s3port" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=bench \
        AWS_SECRET_ACCESS_KEY=bench bin/scp-task --listen "$AWS_IP:$port" --health-listen 127.0.0.1:8081 \
        --s3-path-style --calling-aes LOCAL_AE --max-associations 64 --max-associations-per-ae 64 --log-level warn \
        "${args[@]:1}" 2>> "$OUT/sitelink-scp-task.log" & RPIDS+=($!) ;;
    *) echo "sitelink: receiver $label: unknown kind ${args[0]}" >&2; return 1 ;;
  esac
  pids+=("${RPIDS[@]}")
  wait_port "$AWS" "$AWS_IP" "$port"
  # What the store did before the first object (creating and prefilling its journal's segments) is not the
  # objects' cost: send subtracts it.
  rm -f "$WORK/metrics-start.txt"
  [ "${args[0]}" = scp-task ] && { ip netns exec "$AWS" curl -sf http://127.0.0.1:8081/metrics > "$WORK/metrics-start.txt" || true; }
  return 0
}
# receiver_metrics FILE: what scp-task's /metrics says once its staging backlog (if any) has drained (at most
# 120 s), so that the operations counted include the uploads and releases of every object sent.
receiver_metrics() {
  local i m
  for i in $(seq 1200); do
    m=$(ip netns exec "$AWS" curl -sf http://127.0.0.1:8081/metrics) || return 0
    grep -Eq '^dicom_ingest_staging_backlog_objects [1-9]' <<<"$m" || break
    [ "$i" -eq 1200 ] && echo "sitelink: the staging backlog did not drain in 120 s" >&2
    sleep 0.1
  done
  printf '%s\n' "$m" > "$1"
}
# receiver_stop stops the receiver (last started first), then syncs, so what storescp left in the page cache
# is not written back during the next receiver's run.
receiver_stop() {
  local i
  for ((i = ${#RPIDS[@]} - 1; i >= 0; i--)); do stop "${RPIDS[$i]}"; done
  sync
}

# send LABEL RECEIVER RTT ASSOCS CORPUS PORT: storescu over ASSOCS associations (one process each, files dealt
# round-robin), then one JSON line in sitelink.jsonl.
send() {
  local label=$1 receiver=$2 rtt=$3 assocs=$4 corpus=$5 port=$6 i logs=() spids=()
  mapfile -t files < <(find "$DICOM_CORPUS/$corpus" -type f -name '*.dcm' | sort | head -n "$N")
  for ((i = 0; i < assocs; i++)); do
    local mine=()
    for ((j = i; j < ${#files[@]}; j += assocs)); do mine+=("${files[$j]}"); done
    logs+=("$WORK/storescu-$i.log")
    ip netns exec "$SITE" storescu -lc "$WORK/storescu-log.cfg" -aet LOCAL_AE -aec REMOTE_AE "$AWS_IP" "$port" "${mine[@]}" \
      > "$WORK/storescu-$i.log" 2>&1 & spids+=($!)
  done
  for p in "${spids[@]}"; do wait "$p" || true; done
  local metrics=$WORK/metrics.txt
  rm -f "$metrics"
  [ "$receiver" != storescp ] && receiver_metrics "$metrics"
  python3 test/bench/sitelink.py run --metrics "$WORK/metrics-start.txt" "$metrics" "$label" "$receiver" "$rtt" "$assocs" "${logs[@]}" | tee -a "$OUT/sitelink.jsonl"
}

: > "$OUT/sitelink.jsonl"; rm -f "$OUT"/sitelink-relay-*ms.json
port=11200
for rtt in $RTTS; do
  link_up "$rtt"
  for round in $(seq "$ROUNDS"); do
    for corpus in $CORPORA; do
      for n in $ASSOCS; do
        label="${corpus^^} x$n"
        echo "== sitelink $rtt ms RTT, round $round/$ROUNDS: $label"
        for spec in "${RECEIVERS[@]}"; do
          port=$((port + 1))
          receiver_start "$spec" "$port"
          send "$label" "${spec%%|*}" "$rtt" "$n" "$corpus" "$port"
          receiver_stop
        done
      done
    done
  done
  link_down
done

python3 test/bench/sitelink.py report "$OUT/sitelink.jsonl" "$OUT"/sitelink-relay-*ms.json | tee "$OUT/sitelink.md"
