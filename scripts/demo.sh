#!/usr/bin/env bash
# The main job, end to end on the default environment (mpe2 simple_spread, 3 agents):
#   1. train QMIX for a few minutes on the CPU          -> runs/demo/      (learning curve: curve.png)
#   2. export one ONNX graph per agent + manifest        -> artifacts/demo/
#   3. evaluate: a coordinator and one agent process per agent, compared with the
#      same policy run in one process                    -> reports/demo/
# Usage: ./scripts/demo.sh [TOTAL_TIMESTEPS]   (default 300000, about 3-5 minutes here)
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-300000}"
scripts/venv.sh dev
bin=.venv/bin
rm -rf runs/demo artifacts/demo reports/demo
"$bin/qmix-train" --env simple_spread --algo qmix --seed 42 --total-timesteps "$steps" --run-dir runs/demo
"$bin/qmix-export" runs/demo --out artifacts/demo
"$bin/qmix-eval" --artifacts artifacts/demo --env simple_spread --episodes 20 --seed 1000 \
  --report reports/demo/report.json
echo "learning curve: runs/demo/curve.png; artifacts: artifacts/demo/; report: reports/demo/report.json"
