#!/usr/bin/env bash
# Installs what the tests need, from Debian's packages, npm and the Go module
# proxy, skipping whatever is already there. Idempotent and quick when
# nothing is missing. `make test` and .ci/run both call it.
#
# An install step that fails stops the script with the package it could not
# install: a missing tool must not turn into tests that quietly skip (under
# CI, shared/testenv fails them anyway, but later and further from the cause).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "install-deps: FAILED: $*" >&2; exit 1; }

# The Debian packages: shared/testenv/debian-packages.txt maps each command
# or file the tests use to its package (the same table names the package
# when a test finds one missing).
table=shared/testenv/debian-packages.txt
declare -A provides=()   # package -> the commands and files checked for it
apt_pkgs=()
present() { if [[ $1 == /* ]]; then compgen -G "$1" >/dev/null; else command -v "$1" >/dev/null 2>&1; fi; }
while read -r what pkg _; do
  [[ -z ${what:-} || $what == \#* ]] && continue
  [[ -n ${pkg:-} ]] || die "$table: '$what' names no package"
  provides[$pkg]+=" $what"
  if ! present "$what" && [[ " ${apt_pkgs[*]} " != *" $pkg "* ]]; then apt_pkgs+=("$pkg"); fi
done < "$table"
python_pkgs=(python3-pydicom python3-numpy)   # the corpus builder's Python modules
/usr/bin/python3 -c 'import pydicom, numpy' 2>/dev/null || apt_pkgs+=("${python_pkgs[@]}")

apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }

if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "install-deps: apt-get install ${apt_pkgs[*]}"
    apt-get update -qq || die "apt-get update (needed to install ${apt_pkgs[*]})"
    if ! apt_install "${apt_pkgs[@]}"; then
      # One at a time, to name the package that does not install.
      failed=()
      for p in "${apt_pkgs[@]}"; do apt_install "$p" || failed+=("$p"); done
      die "apt-get install ${failed[*]:-${apt_pkgs[*]}}"
    fi
    # A package that installed but no longer provides what the tests use
    # (renamed, split) is as missing as one that failed.
    for p in "${apt_pkgs[@]}"; do
      for what in ${provides[$p]:-}; do
        present "$what" || die "package $p installed but $what is still missing (update $table)"
      done
    done
    if [[ " ${apt_pkgs[*]} " == *" python3-pydicom "* ]]; then
      /usr/bin/python3 -c 'import pydicom, numpy' || die "${python_pkgs[*]} installed but python3 cannot import pydicom and numpy"
    fi
  elif [ -n "${CI:-}" ]; then
    die "not root, so CI cannot install ${apt_pkgs[*]}"
  else
    echo "install-deps: not root, so these stay missing and their tests will skip: ${apt_pkgs[*]}" >&2
  fi
fi

# Node tools, pinned, kept inside the repo (gitignored): the CDK CLI and dynalite.
if command -v npm >/dev/null 2>&1; then
  make -s --no-print-directory node-tools || die "npm ci in .tools/node (aws-cdk, dynalite)"
fi

# Go tools, pinned, into ./bin/tools.
mkdir -p bin/tools
if [ ! -x bin/tools/aws-lambda-rie ]; then
  echo "install-deps: go install aws-lambda-rie"
  GOBIN="$PWD/bin/tools" go install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@v0.0.0-20261030222936-bef5c4ba774d \
    || die "go install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"
fi
