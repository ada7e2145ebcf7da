#!/usr/bin/env bash
# The main job, end to end on the default environment (mpe2 simple_spread, 3 agents):
#   1. train QMIX on the CPU (a few minutes on 2 cores)   -> runs/demo/ (learning_curve.png, metrics)
#   2. export one ONNX graph per agent + manifest          -> artifacts/demo/
#   3. evaluate as a team of separate processes (a coordinator and one qmix-agent per agent),
#      compared episode by episode with the same graphs run in one process -> reports/demo/
# Usage: ./scripts/demo.sh [TOTAL_TIMESTEPS]   (default 400000)
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-400000}"
scripts/venv.sh dev
bin=.venv/bin
rm -rf runs/demo artifacts/demo reports/demo
echo "== 1/3 train QMIX on simple_spread for $steps env steps"
"$bin/qmix-train" --env simple_spread --algo qmix --seed 42 --total-timesteps "$steps" --run-dir runs/demo
echo "== 2/3 export one ONNX graph per agent"
"$bin/qmix-export" runs/demo --out artifacts/demo
echo "== 3/3 evaluate: coordinator + one process per agent vs the one-process reference"
"$bin/qmix-eval" --artifacts artifacts/demo --env simple_spread --episodes 20 --seed 1000 \
  --report reports/demo/report.json
echo "learning curve: runs/demo/learning_curve.png; artifacts: artifacts/demo/; report: reports/demo/report.json (+ report.png)"
