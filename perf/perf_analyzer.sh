#!/usr/bin/env bash
# perf_analyzer concurrency sweep against electra_qa over gRPC, with the checked-in inputs
# (perf/data, from python -m perf.make_inputs). Used by the compose `sdk` service.
# Settings by environment: URL, MODEL, CONCURRENCY (start:end:step), DATA, INTERVAL_MS, OUT, PERF_ANALYZER.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${URL:-localhost:8001}
MODEL=${MODEL:-electra_qa}
CONCURRENCY=${CONCURRENCY:-1:4:1}  # as make perf
DATA=${DATA:-perf/data/squad.json}
INTERVAL_MS=${INTERVAL_MS:-10000}
OUT=${OUT:-perf/results/perf_analyzer.csv}
mkdir -p "$(dirname "$OUT")"
exec "${PERF_ANALYZER:-perf_analyzer}" -m "$MODEL" -u "$URL" -i grpc --input-data "$DATA" \
  --concurrency-range "$CONCURRENCY" --measurement-interval "$INTERVAL_MS" -f "$OUT" --verbose-csv
