#!/usr/bin/env bash
# Restores, builds (Release) and runs every test. TEST_RESULTS_DIR receives the TRX files.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests use from Debian: promtool (package prometheus) checks the metrics and alert
# rules; unshare and mount (util-linux) make a read-only mount for the run store's tests;
# python3-msgpack runs the Python client against the service; postgresql and redis-server give the
# cluster's membership tests real servers (each started and stopped by its test); chromium and
# chromium-driver run the dashboard's pages in a real browser.
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v unshare >/dev/null || missing+=(util-linux)
command -v ip >/dev/null || missing+=(iproute2)   # the several-hosts test: network namespaces and a bridge
{ compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null && id postgres >/dev/null 2>&1; } || missing+=(postgresql)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
# The Python client of the socket protocol (examples/clients/python) runs on Debian's python3 with python3-msgpack.
{ [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import msgpack' 2>/dev/null; } || missing+=(python3 python3-msgpack)
# The dashboard's browser tests drive Debian's Chromium through its ChromeDriver (headless).
{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || missing+=(chromium chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: the tests need ${missing[*]} (Debian); run as root to install them, or install them first" >&2
    exit 1
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

out="${TEST_RESULTS_DIR:-TestResults/local}"
dotnet restore Engine.sln
dotnet build Engine.sln -c Release --no-restore
dotnet test tests/Tests.csproj -c Release --no-build \
  --logger "trx;LogFilePrefix=tests" --results-directory "$out" \
  --blame-hang-timeout 5m
