#!/usr/bin/env bash
# make bench BENCH=chain: the serverless chain under a sustained load (test/bench/chain): scp-task's S3 store,
# S3 notifications, the queues, Lambda's event source mapping, the functions under the runtime interface
# emulator, dynalite, EventBridge; reports C-STORE success → Instance Stored and last instance → Study Received,
# the AWS calls per instance and per study, and their price (test/bench/prices.json). The machine running it
# plays every AWS service at once: run it on a quiet one.
#
#   BENCH_OUT            results directory (default test/artifacts/bench)
#   CHAIN_RATE           instances per second (default 100)
#   CHAIN_DURATION       how long the load lasts (default 60s)
#   CHAIN_ASSOCIATIONS   associations the load is sent over (default 8: over 4, each waiting ~60 ms for the S3 emulator, the sender tops out near 66/s)
#   CHAIN_STUDY_SIZE     instances per study (default 200)
#   CHAIN_FLAGS          more bench-chain flags (latencies, -quiet-period, -notify-every, -concurrency: bench-chain -h)
#   CHAIN_SCP_ARGS       more scp-task flags, e.g. the staged store's "--staging DIR --staging-latency efs"
#   CHAIN_STAGING        the staged store on a fresh staging directory with these per-operation latencies
#                        (scp-task --staging-latency: efs, none, op=duration,...); unset: direct to S3
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${BENCH_OUT:-test/artifacts/bench}
RIE=${RIE_BIN:-bin/tools/aws-lambda-rie}
DYNALITE=${DYNALITE_BIN:-.tools/node/node_modules/dynalite/cli.js}
for f in "$RIE" "$DYNALITE"; do
  [ -e "$f" ] || { echo "chain: $f missing: make test-deps installs the emulators (or set RIE_BIN, DYNALITE_BIN)" >&2; exit 1; }
done
command -v node >/dev/null || { echo "chain: needs node (apt-get install nodejs)" >&2; exit 1; }
mkdir -p "$OUT" bin
WORK=$(mktemp -d /var/tmp/dicom-chain-XXXXXX)
keep_work=0   # a failed run keeps its work directory: the functions' and emulators' logs say why
trap 'if [ "$keep_work" = 1 ]; then echo "chain: kept $WORK for its logs" >&2; else rm -rf "$WORK"; fi' EXIT
go build -o bin/scp-task ./scp-task
go build -o bin/bench-chain ./test/bench/chain
# The functions as the deployment builds them (make build-functions), for this machine's architecture.
for fn in validate audit notify; do
  CGO_ENABLED=0 go build -tags lambda.norpc -trimpath -o "$WORK/functions/$fn/bootstrap" "./functions/$fn"
done
scp_args=${CHAIN_SCP_ARGS:-}
if [ -n "${CHAIN_STAGING:-}" ]; then
  mkdir -p "$WORK/staging"
  scp_args="$scp_args --staging $WORK/staging --staging-latency $CHAIN_STAGING"
fi
# shellcheck disable=SC2086 # CHAIN_FLAGS is a list of flags
bin/bench-chain -scp-task bin/scp-task -rie "$RIE" -dynalite "$DYNALITE" -functions "$WORK/functions" -work "$WORK" \
  -rate "${CHAIN_RATE:-100}" -duration "${CHAIN_DURATION:-60s}" -associations "${CHAIN_ASSOCIATIONS:-8}" \
  -study-size "${CHAIN_STUDY_SIZE:-200}" -scp-args "$scp_args" ${CHAIN_FLAGS:-} -out "$OUT/chain.json" || rc=$?
# bench-chain writes its results also for a run the chain did not complete (then exits 1): report them, then fail.
if [ -s "$OUT/chain.json" ]; then
  python3 test/bench/chain.py "$OUT/chain.json" test/bench/prices.json | tee "$OUT/chain.md"
fi
if [ "${rc:-0}" != 0 ]; then
  keep_work=1
  echo "chain: bench-chain failed (exit $rc): the figures above are not a measurement" >&2
  exit "$rc"
fi
