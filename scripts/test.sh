#!/usr/bin/env bash
# Restores, builds (Release) and runs every test. TEST_RESULTS_DIR receives the TRX files.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${TEST_RESULTS_DIR:-TestResults/local}"
dotnet restore Engine.sln
dotnet build Engine.sln -c Release --no-restore
dotnet test tests/Tests.csproj -c Release --no-build \
  --logger "trx;LogFilePrefix=tests" --results-directory "$out" \
  --blame-hang-timeout 5m
