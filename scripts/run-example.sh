#!/usr/bin/env bash
# Restores, builds and runs the main example end to end: a QAOA MaxCut parameter sweep
# (256 circuits on the quantum layer, fanned in to local aggregation tasks and a report).
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build src/Host/Host.csproj -c Release
dotnet src/Host/bin/Release/net10.0/taskmesh.dll run examples/qaoa-sweep.json --json out/qaoa-summary.json "$@"
python3 - <<'PY' 2>/dev/null || echo "report: examples/out/qaoa-report.json"
import json
r = json.load(open("examples/out/qaoa-report.json"))
best = r["inputs"][0]["output"]
w = best["winner"]
while "winner" in w: w = w["winner"]
exact = r["meta"]["exact_maxcut"]
print(f"report: examples/out/qaoa-report.json")
print(f"best parameters gamma={w['meta']['gamma']} beta={w['meta']['beta']}: expected cut {best['value']:.3f} of {exact} "
      f"(ratio {best['value'] / exact:.3f}); best sampled cut {w['best_cut']} ({w['best_bitstring']})")
PY
