#!/usr/bin/env bash
# Installs what the tests need, from Debian's packages, npm and the Go module
# proxy, skipping whatever is already there. Idempotent and quick when
# nothing is missing. `make test` and .ci/run both call it.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || [ -e "$1" ] || apt_pkgs+=("$2"); }
need storescu dcmtk
need /usr/lib/ipsec/charon strongswan-charon
need swanctl strongswan-swanctl
need /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so libcharon-extra-plugins
need ip iproute2
need tcpdump tcpdump
need chromium chromium
need node nodejs
need npm npm
need gcc gcc                      # the race detector needs cgo
need /usr/include/stdio.h libc6-dev
need xmllint libxml2-utils        # checks audit messages against the PS3.15 A.5.1 schema
need rsyslogd rsyslog             # the audit feed's syslog TLS collector in tests
compgen -G '/usr/lib/*/rsyslog/lmnsd_gtls.so' >/dev/null || apt_pkgs+=(rsyslog-gnutls)
/usr/bin/python3 -c 'import pydicom, numpy' 2>/dev/null || apt_pkgs+=(python3-pydicom python3-numpy)

if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "install-deps: apt-get install ${apt_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
  else
    echo "install-deps: not root, so these stay missing and their tests will skip: ${apt_pkgs[*]}" >&2
  fi
fi

# Node tools, pinned, kept inside the repo (gitignored): the CDK CLI and dynalite.
if command -v npm >/dev/null 2>&1; then
  make --no-print-directory node-tools
fi

# Go tools, pinned, into ./bin/tools.
mkdir -p bin/tools
if [ ! -x bin/tools/aws-lambda-rie ]; then
  echo "install-deps: go install aws-lambda-rie"
  GOBIN="$PWD/bin/tools" go install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@v0.0.0-20261030222936-bef5c4ba774d
fi
