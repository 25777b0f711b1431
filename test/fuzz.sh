#!/usr/bin/env bash
# make fuzz: runs every go test -fuzz target in the module for FUZZTIME each
# (default 20s). The seed corpora also run in plain `make test`.
#
#   FUZZTIME=10m     how long each target runs
#   FUZZJOBS=2       targets run at once (default 1), each with FUZZPARALLEL
#                    workers (default: Go's, one per core); on two cores,
#                    FUZZJOBS=2 FUZZPARALLEL=1 halves the wall time of a long run
#   FUZZMATCH=regexp only the targets whose "package Name" line matches
#   FUZZMINIMIZE=5s  how long each new interesting input is minimized (Go's
#                    default, 60s, took half of FuzzRender's executions in a 30s
#                    run: 63,965 against 108,422 at 5s)
#   FUZZLOGS=dir     one log per target there (default: a temporary directory)
#
# A finding fails the run and leaves its input under the package's
# testdata/fuzz/<Name>/, where it becomes a seed of the plain test run.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-20s}
FUZZJOBS=${FUZZJOBS:-1}
FUZZMATCH=${FUZZMATCH:-.}
FUZZMINIMIZE=${FUZZMINIMIZE:-5s}
FUZZLOGS=${FUZZLOGS:-$(mktemp -d -t fuzz.XXXXXX)}
mkdir -p "$FUZZLOGS"
parallel=()
[[ -n "${FUZZPARALLEL:-}" ]] && parallel=(-parallel "$FUZZPARALLEL")

# Only the files git tracks: cdk.out/ holds a staged copy of the sources.
targets=$(git ls-files -z -- '*_test.go' |
  xargs -0 grep -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' |
  sed -E 's#^(.*)/[^/]*:func (Fuzz[A-Za-z0-9_]*).*#./\1 \2#' | sort | grep -E -- "$FUZZMATCH" || true)
if [[ -z "$targets" ]]; then
  echo "fuzz: no target matches FUZZMATCH=$FUZZMATCH" >&2
  exit 2
fi
echo "fuzz: $(wc -l <<<"$targets") targets, $FUZZTIME each, $FUZZJOBS at once, logs in $FUZZLOGS"

run_one() {
  local pkg=$1 name=$2 log
  log="$FUZZLOGS/$(tr / _ <<<"${pkg#./}")_$name.log"
  if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZE" "${parallel[@]}" "$pkg" >"$log" 2>&1; then
    echo "ok   $pkg $name: $(grep -Eo 'execs: [0-9]+' "$log" | tail -1 | cut -d' ' -f2) execs, $(grep -Eo 'new interesting: [0-9]+' "$log" | tail -1 | cut -d' ' -f3) new interesting"
  else
    echo "FAIL $pkg $name: see $log"
    tail -30 "$log"
    return 1
  fi
}

status=0
pids=()
while read -r pkg name; do
  while (( $(jobs -rp | wc -l) >= FUZZJOBS )); do wait -n || status=1; done
  run_one "$pkg" "$name" &
  pids+=($!)
done <<<"$targets"
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
