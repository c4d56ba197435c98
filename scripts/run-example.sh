#!/usr/bin/env bash
# Restores, builds and runs the main example end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build src/Host/Host.csproj -c Release
dotnet src/Host/bin/Release/net10.0/taskmesh.dll run examples/etl.json --json out/etl-summary.json "$@"
