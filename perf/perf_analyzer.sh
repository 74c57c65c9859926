#!/usr/bin/env bash
# perf_analyzer concurrency sweep against electra_qa over gRPC, with the checked-in inputs
# (perf/data, from python -m perf.make_inputs). Used by the compose `sdk` service.
# Settings by environment: URL, MODEL, CONCURRENCY (start:end:step), DATA, INTERVAL_MS, OUT, PERF_ANALYZER, and
# ELECTRA_QA_ADMIN_KEY (the server's admin key: perf_analyzer reads model configs and statistics, admin protocols).
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${URL:-localhost:8001}
MODEL=${MODEL:-electra_qa}
CONCURRENCY=${CONCURRENCY:-1:4:1}  # as make perf
DATA=${DATA:-perf/data/squad.json}
INTERVAL_MS=${INTERVAL_MS:-10000}
OUT=${OUT:-perf/results/perf_analyzer.csv}
mkdir -p "$(dirname "$OUT")"
HEADERS=()
if [[ -n "${ELECTRA_QA_ADMIN_KEY:-}" ]]; then HEADERS=(-H "triton-grpc-protocol-x-admin-key:$ELECTRA_QA_ADMIN_KEY"); fi
exec "${PERF_ANALYZER:-perf_analyzer}" -m "$MODEL" -u "$URL" -i grpc --input-data "$DATA" \
  --concurrency-range "$CONCURRENCY" --measurement-interval "$INTERVAL_MS" -f "$OUT" --verbose-csv "${HEADERS[@]}"
