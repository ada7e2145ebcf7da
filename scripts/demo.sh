#!/usr/bin/env bash
# The main job, end to end on the default environment (mpe2 simple_spread, 3 agents):
#   1. train QMIX on the CPU with the fast preset (the batched engine, collection overlapping
#      the learner on 2 cores), at most 170 s of training   -> runs/demo/ (learning_curve.png, metrics)
#   2. export the best greedy evaluation's networks, one ONNX graph per agent + manifest -> artifacts/demo/
#   3. evaluate as a team of separate processes (a coordinator and one qmix-agent per agent),
#      compared episode by episode with the same graphs run in one process -> reports/demo/
# Greedy returns are mpe2's simple_spread_v3, all 25 steps summed over the agents (random: about -80).
# Usage: ./scripts/demo.sh [TOTAL_TIMESTEPS] [MAX_SECONDS]   (defaults 3000000 and 170)
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-3000000}"
seconds="${2:-170}"
scripts/venv.sh dev
bin=.venv/bin
rm -rf runs/demo artifacts/demo reports/demo
echo "== 1/3 train QMIX on simple_spread: $steps env steps or $seconds s, whichever comes first"
start=$(date +%s)
"$bin/qmix-train" --env simple_spread --algo qmix --seed 42 --preset fast \
  --total-timesteps "$steps" --max-seconds "$seconds" --run-dir runs/demo
"$bin/python" - <<'PY'
import json, pathlib
best = json.loads(pathlib.Path("runs/demo/checkpoints/best/state.json").read_text())["eval"]
print(f"best greedy return {best['return_mean']:.2f} at {int(best['step'])} env steps (exported)")
PY
echo "training took $(( $(date +%s) - start )) s of wall time"
echo "== 2/3 export one ONNX graph per agent"
"$bin/qmix-export" runs/demo --out artifacts/demo
echo "== 3/3 evaluate: coordinator + one process per agent vs the one-process reference"
"$bin/qmix-eval" --artifacts artifacts/demo --env simple_spread --episodes 20 --seed 1000 \
  --report reports/demo/report.json
echo "learning curve: runs/demo/learning_curve.png; artifacts: artifacts/demo/; report: reports/demo/report.json (+ report.png)"
