#!/usr/bin/env bash
# The best router we document at ≤ 3 expert calls per question, with all-vote and the oracle,
# fitted on FIT_DIR and evaluated on EVAL_DIR (disjoint recorded directories of the 16-model pool):
#
#   orchestrator recorded split ../shared/data/recorded/mmlu_pro_tiger --fit-out FIT_DIR --eval-out EVAL_DIR \
#       --pool small16 --fit-fraction 0.5
#   benchmarks/best_at_3.sh FIT_DIR EVAL_DIR OUT_DIR          # writes OUT_DIR/results.json, report.md, plot.png
#
# `cascade` (routers/cascade.py, README "Routers"): asks the experts most accurate on the query's
# category first and escalates while their confidence-weighted answers disagree; its stopping
# margin and maximum depth are chosen by cross-validation inside FIT_DIR under 3.0 calls per question.
# ORCHESTRATOR (default: the orchestrator on PATH, else the repository's venv) runs it.
set -euo pipefail
if [ "$#" -ne 3 ]; then
  echo "usage: $0 FIT_DIR EVAL_DIR OUT_DIR" >&2
  exit 2
fi
FIT_DIR=$1 EVAL_DIR=$2 OUT_DIR=$3
HERE=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${ORCHESTRATOR:-}" ]; then
  if command -v orchestrator >/dev/null 2>&1; then ORCHESTRATOR=orchestrator; else ORCHESTRATOR="$HERE/.venv/bin/orchestrator"; fi
fi
mkdir -p "$OUT_DIR"
# shellcheck disable=SC2086
$ORCHESTRATOR bench --recorded "$EVAL_DIR" --fit-recorded "$FIT_DIR" --pool small16 \
  --router cascade --router-opt cascade.budget=3.0 \
  --router all-vote --router oracle \
  --out "$OUT_DIR" --fresh
