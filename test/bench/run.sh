#!/usr/bin/env bash
# make bench: the load generator against scp-task (file store, then S3 store
# on a local S3 emulator) and against DCMTK's storescp --fork, on the same
# machine, corpus and run; prints a table with the ratios.
#
#   CORPUS_DIR  where the corpus is (built by test/corpus/make-corpus.sh if missing; default /tmp/dicom-corpus)
#   SCALE       corpus scale passed to make-corpus.sh (default 1)
#   BENCH_OUT   results directory (default test/artifacts/bench)
set -euo pipefail
cd "$(dirname "$0")/../.."
export TCP_NODELAY=1
CORPUS_DIR=${CORPUS_DIR:-/tmp/dicom-corpus}
OUT=${BENCH_OUT:-test/artifacts/bench}
mkdir -p "$OUT" bin
WORK=$(mktemp -d /var/tmp/dicom-bench-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

if [ ! -d "$CORPUS_DIR/ct" ]; then
  echo "bench: building the corpus in $CORPUS_DIR (once)"
  SCALE=${SCALE:-1} bash test/corpus/make-corpus.sh "$CORPUS_DIR"
fi
go build -o bin/scp-task ./scp-task
go build -o bin/dicom-loadgen ./test/loadgen
go build -o bin/bench-s3 ./test/bench/s3server

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "nothing listening on $1" >&2; return 1; }

# load LABEL PORT N DIR... -> appends a JSON line to $OUT/results.jsonl
load() {
  local label=$1 p=$2 n=$3; shift 3
  bin/dicom-loadgen -addr 127.0.0.1:$p -aet LOCAL_AE -aec REMOTE_AE -n "$n" -progress=false -json -label "$label" "$@" \
    | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))' >> "$OUT/results.jsonl"
  tail -n1 "$OUT/results.jsonl"
}

start_scp() { # name store-url [env...]
  local name=$1 store=$2; shift 2
  P=$(port); H=$(port)
  env "$@" bin/scp-task --listen 127.0.0.1:$P --health-listen 127.0.0.1:$H --store "$store" --calling-aes LOCAL_AE \
    --max-associations 64 --max-associations-per-ae 64 --log-level warn 2> "$OUT/$name.log" &
  SCP_PID=$!; pids+=($SCP_PID); wait_port "$P"
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
rss() { awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$1/status; }

: > "$OUT/results.jsonl"
scenarios() { # prefix port
  load "$1 CT x1" "$2" 1 "$CORPUS_DIR/ct"
  load "$1 CT x8" "$2" 8 "$CORPUS_DIR/ct"
  load "$1 MR x4" "$2" 4 "$CORPUS_DIR/mr"
  load "$1 MR x8" "$2" 8 "$CORPUS_DIR/mr"
  load "$1 big x1" "$2" 1 "$CORPUS_DIR/big"
}

echo "== scp-task, file store (fsync before every success)"
start_scp file "file://$WORK/file"
scenarios "scp-task file" "$P"
echo "scp-task file store peak RSS: $(rss $SCP_PID) MiB" | tee "$OUT/rss-file.txt"
stop $SCP_PID

echo "== scp-task, S3 store on the local S3 emulator"
S3P=$(port)
bin/bench-s3 -listen 127.0.0.1:$S3P -dir "$WORK/s3" -bucket bench 2> "$OUT/s3.log" & pids+=($!); wait_port "$S3P"
start_scp s3 "s3://bench/dicom" AWS_ENDPOINT_URL_S3=http://127.0.0.1:$S3P AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench SCP_S3_PATH_STYLE=true
scenarios "scp-task s3" "$P"
echo "scp-task S3 store peak RSS: $(rss $SCP_PID) MiB" | tee "$OUT/rss-s3.txt"
stop $SCP_PID

if command -v storescp >/dev/null; then
  echo "== DCMTK storescp --fork (TCP_NODELAY=1, no fsync)"
  P=$(port); mkdir -p "$WORK/storescp"
  storescp --fork -aet REMOTE_AE -od "$WORK/storescp" -uf "$P" > "$OUT/storescp.log" 2>&1 & SPID=$!; pids+=($SPID); wait_port "$P"
  scenarios "storescp" "$P"
  stop $SPID
fi

echo "== pipeline: validate + normalize per instance"
go test -run '^$' -bench 'BenchmarkValidateNormalize' -benchmem ./shared/pipeline/... | tee "$OUT/pipeline.txt" || true

python3 test/bench/report.py "$OUT/results.jsonl" | tee "$OUT/report.md"
