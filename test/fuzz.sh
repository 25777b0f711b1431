#!/usr/bin/env bash
# make fuzz: runs every go test -fuzz target in the module for FUZZTIME each
# (default 20s). The seed corpora also run in plain `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-20s}
status=0
while IFS=: read -r file fn; do
  pkg=./$(dirname "$file")
  name=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/' <<<"$fn")
  echo "== $pkg $name ($FUZZTIME)"
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg"; then
    status=1
  fi
# Only the files git tracks: cdk.out/ holds a staged copy of the sources.
done < <(git ls-files -z -- '*_test.go' | xargs -0 grep -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' | sort)
exit $status
