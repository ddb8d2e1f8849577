#!/usr/bin/env bash
# Install (if needed) and run the xtlunet chain on the built-in example datasets, in ./xtlunet_demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
DEMO=${XTLUNET_DEMO_DIR:-$PWD/xtlunet_demo}
export XTLUNET_raw=$DEMO/raw XTLUNET_preprocessed=$DEMO/preprocessed XTLUNET_results=$DEMO/results
# tiny memory budget: the demo runs on a laptop CPU; real plans use --gpu-memory-gb of the user's GPU
BUDGET=${XTLUNET_DEMO_GPU_GB:-0.25}
xtlunet example brain-ms
xtlunet example prostate
xtlunet example mammo
xtlunet plan-and-preprocess -d 501 -c 2d 3d_fullres --gpu-memory-gb "$BUDGET" -np 2 --verify
xtlunet plan-and-preprocess -d 502 --gpu-memory-gb "$BUDGET" -np 2
xtlunet plan-and-preprocess -d 503 --gpu-memory-gb "$BUDGET" -np 2
xtlunet plan-and-preprocess -d 501 -c 3d_fullres -pl XTLPlanner --pretrained resnet18 --gpu-memory-gb "$BUDGET" -np 2
