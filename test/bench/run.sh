#!/usr/bin/env bash
# make bench: the load generator against scp-task (file store; local mode,
# the file store with the pipeline, SQLite and the portal in the same
# process; S3 store on a local S3 emulator and on a checksum-verifying S3
# sink), against DCMTK's storescp --fork, against Orthanc (Debian's,
# SyncStorageArea on: it fsyncs every file, the durable peer), against the
# protocol floor (bench-discard: the same DICOM server with a handler that
# keeps nothing) and against the disk floor (bench-diskfloor: the file
# store's durable writes of the same files as bare system calls, no
# network), on the same machine,
# corpus and run; prints a table with the ratios. Every scenario starts its
# SCP on an empty store, so no send is measured as a duplicate of an earlier
# one. Stores are new directories and are removed only at the end (~5 GB
# in /var/tmp per round at scale 1): on ext4 without a journal, creating
# files right after thousands were deleted costs a scan of the recently
# deleted inodes on every create, which slowed whichever receiver ran next
# by up to a third.
#
#   DICOM_CORPUS  where the corpus is (built by test/corpus/make-corpus.sh if missing; default /tmp/dicom-corpus)
#   SCALE       corpus scale passed to make-corpus.sh (default 1)
#   BENCH_OUT   results directory (default test/artifacts/bench)
#   ROUNDS      rounds of every scenario and receiver (default 3)
#   STARTUP_N   objects in the data directory of the start-up bench (default 100000; 0 skips it)
#   KINDS       receivers to run (default all: discard diskfloor file local s3-sink s3-emulator storescp orthanc)
#   SCENARIOS   scenarios to run, comma-separated (default all: CT x1,CT x8,MR x1,MR x4,MR x8,big x1); with
#               KINDS="file local" SCENARIOS="CT x1,MR x4" ROUNDS=1 SCALE=0.05 STARTUP_N=2000 a smoke of local mode's column
#   BENCH       which part: loopback (this file), sitelink (sitelink.sh), chain (chain.sh), or all (default)
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH=${BENCH:-all}
case $BENCH in
  all | loopback) ;;
  sitelink | chain) exec bash "test/bench/$BENCH.sh" ;;
  *) echo "bench: unknown BENCH=$BENCH: loopback, sitelink, chain or all" >&2; exit 2 ;;
esac
export TCP_NODELAY=1
export DICOM_CORPUS=${DICOM_CORPUS:-/tmp/dicom-corpus}
OUT=${BENCH_OUT:-test/artifacts/bench}
ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT" bin
WORK=$(mktemp -d /var/tmp/dicom-bench-XXXXXX)
pids=()
scenario=0
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

if [ ! -d "$DICOM_CORPUS/ct" ]; then
  echo "bench: building the corpus in $DICOM_CORPUS (once)"
  SCALE=${SCALE:-1} bash test/corpus/make-corpus.sh "$DICOM_CORPUS"
fi
go build -o bin/scp-task ./scp-task
go build -o bin/dicom-loadgen ./test/loadgen
go build -o bin/bench-s3 ./test/bench/s3server
go build -o bin/bench-discard ./test/bench/discard
go build -o bin/bench-diskfloor ./test/bench/diskfloor
go build -o bin/bench-startup ./test/bench/startup
go build -o bin/bench-freeport ./test/bench/freeport

port() { bin/bench-freeport; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "nothing listening on $1" >&2; return 1; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
rss() { awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$1/status; }

# load LABEL PORT N DIR [TIMINGS] -> appends the load generator's JSON report to results.jsonl
load() {
  local label=$1 p=$2 n=$3 dir=$4 timings=${5:-}
  bin/dicom-loadgen -addr 127.0.0.1:$p -aet LOCAL_AE -aec REMOTE_AE -n "$n" -progress=false -json -label "$label" ${timings:+-timings "$timings"} "$dir" \
    | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))' >> "$OUT/results.jsonl"
  tail -n1 "$OUT/results.jsonl"
}

# drained LABEL STOREDIR TIMINGS: waits for local mode's pipeline to process
# the backlog, then appends C-STORE success -> Instance Stored (event time)
# p50/p99 and the backlog's drain time to eventlag.jsonl.
drained() {
  local label=$1 storedir=$2 timings=$3
  for _ in $(seq 1200); do
    [ "$(curl -s "127.0.0.1:$PPORT/api/counters" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pendingPipeline"])' 2>/dev/null)" = 0 ] && break
    sleep 0.1
  done
  sleep 0.5 # the publisher appends the log at most 50 ms after a commit
  python3 test/bench/eventlag.py "$timings" "$storedir/events.log" "$(tail -n1 "$OUT/results.jsonl")" | tee -a "$OUT/eventlag.jsonl"
}

# target KIND: starts a fresh receiver of that kind, sets P (DICOM port) and RPID
target() {
  local kind=$1 store storedir
  scenario=$((scenario + 1)); storedir="$WORK/store-$scenario"
  mkdir -p "$storedir"
  P=$(port)
  case $kind in
    storescp)
      storescp --fork -aet REMOTE_AE -od "$storedir" -uf "$P" > "$OUT/storescp.log" 2>&1 & RPID=$!; pids+=($RPID)
      wait_port "$P"; return ;;
    orthanc)
      # Debian's defaults, SyncStorageArea (fsync of every stored file)
      # among them, spelled out; a fresh storage and index every run.
      cat > "$storedir/orthanc.json" <<JSON
{"Name": "bench", "StorageDirectory": "$storedir/storage", "IndexDirectory": "$storedir/index",
 "DicomAet": "REMOTE_AE", "DicomPort": $P, "HttpPort": $(port), "RemoteAccessAllowed": false,
 "DicomAlwaysAllowStore": true, "SyncStorageArea": true}
JSON
      Orthanc "$storedir/orthanc.json" > "$OUT/orthanc.log" 2>&1 & RPID=$!; pids+=($RPID)
      wait_port "$P"; return ;;
    discard)
      bin/bench-discard -listen 127.0.0.1:$P -ae-title REMOTE_AE 2>> "$OUT/discard.log" & RPID=$!; pids+=($RPID)
      wait_port "$P"; return ;;
    file) store="file://$storedir"; extra=() ;;
    local)
      PPORT=$(port)
      bin/scp-task --local --data-dir "$storedir" --portal-listen 127.0.0.1:$PPORT --quiet-period 1h --listen 127.0.0.1:$P \
        --health-listen 127.0.0.1:$(port) --calling-aes LOCAL_AE --max-associations 64 --max-associations-per-ae 64 --log-level warn \
        2>> "$OUT/local.log" & RPID=$!; pids+=($RPID)
      # scp-task binds its ports before it opens the data directory, so a
      # sender could connect while the databases are still being created
      # and count that wait as local mode's: the portal answers once the
      # start is done.
      wait_port "$P"
      for _ in $(seq 400); do curl -sf "127.0.0.1:$PPORT/healthz" >/dev/null && return; sleep 0.05; done
      echo "local mode's portal did not answer" >&2; return 1 ;;
    s3-emulator|s3-sink)
      S3P=$(port)
      # The endpoint stands in for S3, which spends none of this machine's
      # CPU: a lazier garbage collector keeps its share small.
      GOGC=400 bin/bench-s3 -listen 127.0.0.1:$S3P -mode "${kind#s3-}" 2>> "$OUT/s3.log" & S3PID=$!; pids+=($S3PID); wait_port "$S3P"
      store="s3://bench/dicom"
      extra=(AWS_ENDPOINT_URL_S3=http://127.0.0.1:$S3P AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench SCP_S3_PATH_STYLE=true) ;;
  esac
  env "${extra[@]}" bin/scp-task --listen 127.0.0.1:$P --health-listen 127.0.0.1:$(port) --store "$store" --calling-aes LOCAL_AE \
    --max-associations 64 --max-associations-per-ae 64 --log-level warn 2>> "$OUT/$kind.log" & RPID=$!; pids+=($RPID)
  wait_port "$P"
}
# untarget stops the receiver, then syncs: storescp leaves what it received
# in the page cache, and its writeback would otherwise compete for the disk
# with whichever receiver runs next (after the 300 MiB object, it cost the
# file store's next run more than half its throughput).
untarget() { stop "$RPID"; [ -n "${S3PID:-}" ] && stop "$S3PID"; S3PID=; sync; }

: > "$OUT/results.jsonl"; : > "$OUT/rss.txt"; : > "$OUT/eventlag.jsonl"
if [ -n "${KINDS:-}" ]; then
  read -r -a kinds <<<"$KINDS"
else
  kinds=(discard diskfloor file local s3-sink s3-emulator)
  command -v storescp >/dev/null && kinds+=(storescp)
  command -v Orthanc >/dev/null && kinds+=(orthanc)
fi
IFS=, read -r -a scenarios <<<"${SCENARIOS:-CT x1,CT x8,MR x1,MR x4,MR x8,big x1}"
declare -A dirs=([CT]=ct [MR]=mr [big]=big)
# Receivers take turns scenario by scenario, round after round, so that
# each ratio compares runs minutes apart at most on a machine whose speed
# drifts; the report gives medians over the rounds.
for round in $(seq "$ROUNDS"); do
  for name in "${scenarios[@]}"; do
    n=${name#* x} dir=${dirs[${name% x*}]}
    echo "== round $round/$ROUNDS: $name"
    for kind in "${kinds[@]}"; do
      if [ "$kind" = diskfloor ]; then
        scenario=$((scenario + 1))
        bin/bench-diskfloor -store "$WORK/store-$scenario" -n "$n" -label "diskfloor $name" "$DICOM_CORPUS/$dir" >> "$OUT/results.jsonl"
        tail -n1 "$OUT/results.jsonl"; sync
        continue
      fi
      target "$kind"
      if [ "$kind" = local ]; then
        load "$kind $name" "$P" "$n" "$DICOM_CORPUS/$dir" "$WORK/timings-$scenario"
        drained "$kind $name" "$WORK/store-$scenario" "$WORK/timings-$scenario"
      else
        load "$kind $name" "$P" "$n" "$DICOM_CORPUS/$dir"
      fi
      [ "$kind" != storescp ] && [ "$kind" != discard ] && [ "$kind" != orthanc ] && echo "$kind $name: peak RSS $(rss "$RPID") MiB" | tee -a "$OUT/rss.txt"
      untarget
    done
  done
done

if [ "${STARTUP_N:-100000}" != 0 ]; then
  echo "== local mode start-up on a data directory of ${STARTUP_N:-100000} processed objects (filled once, kept in /var/tmp)"
  bin/bench-startup -scp bin/scp-task -data "/var/tmp/dicom-bench-startup-${STARTUP_N:-100000}" -n "${STARTUP_N:-100000}" -rounds 3 | tee "$OUT/startup.jsonl"
fi

echo "== portal: each page over 50 studies and 10,000 events"
go test -run '^$' -bench 'BenchmarkPages' -benchtime 20x ./scp-task/internal/portal/ | tee "$OUT/pages.txt"

echo "== pipeline: validate + normalize per instance"
go test -run '^$' -bench 'BenchmarkValidateNormalize' -benchmem ./shared/pipeline/ | tee "$OUT/pipeline.txt"

python3 test/bench/report.py "$OUT/results.jsonl" "$OUT/eventlag.jsonl" | tee "$OUT/report.md"

if [ "$BENCH" = all ]; then
  bash test/bench/sitelink.sh
  bash test/bench/chain.sh
fi
