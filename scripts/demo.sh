#!/usr/bin/env bash
# Install (if needed) and run the whole xtlunet chain on the built-in example datasets, in ./xtlunet_demo.
# Tiny budgets so it finishes in minutes on a laptop CPU: the numbers show the mechanics, not the method's merit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
DEMO=${XTLUNET_DEMO_DIR:-$PWD/xtlunet_demo}
export XTLUNET_raw=$DEMO/raw XTLUNET_preprocessed=$DEMO/preprocessed XTLUNET_results=$DEMO/results
BUDGET=${XTLUNET_DEMO_GPU_GB:-0.15}            # real plans use the memory of the user's GPU (default 8 GB)
XTL_BUDGET=${XTLUNET_DEMO_XTL_GPU_GB:-0.37}    # the mammogram encoder's widths (up to 512) need a little more
EPOCHS=${XTLUNET_DEMO_EPOCHS:-2}
ITERS=${XTLUNET_DEMO_ITERS:-4}
SHORT=(--epochs "$EPOCHS" --iters-per-epoch "$ITERS" --val-iters 2 --val-no-tta --device cpu)

echo "== 1. built-in example datasets"
xtlunet example brain-ms
xtlunet example mammo

echo "== 2. the mammogram stage: a 2D encoder trained on mammograms"
xtlunet pretrain-2d -d 503 --arch plain --budget tiny --epochs 4 --iters-per-epoch 10 --batch-size 8 --input-size 64 64 \
  --device cpu -o "$DEMO/mammo_plain.pth"

echo "== 3. plan and preprocess the brain MS dataset (default plans, and XTL plans matching the 2D encoder)"
xtlunet plan-and-preprocess -d 501 -c 3d_fullres --gpu-memory-gb "$BUDGET" -np 2 --verify
xtlunet plan-and-preprocess -d 501 -c 3d_fullres --pretrained "$DEMO/mammo_plain.pth" --gpu-memory-gb "$XTL_BUDGET" -np 2

echo "== 4. five-fold cross-validation of the XTL and Scratch arms, both on the XTL plan (one plan for every arm)"
for fold in 0 1 2 3 4; do
  # XTLTrainer takes the mammogram checkpoint the plan was made for (its sha256 is in the plan)
  xtlunet -q train 501 3d_fullres "$fold" -tr XTLTrainer -p xtlunetPlansXTL "${SHORT[@]}"
  xtlunet -q train 501 3d_fullres "$fold" -tr ScratchTrainer -p xtlunetPlansXTL "${SHORT[@]}"
done

echo "== 5. ensembled prediction of the held-out test images, and their evaluation"
xtlunet predict -i "$XTLUNET_raw/Dataset501_BrainMS/imagesTs" -o "$DEMO/predictions_xtl" -d 501 -c 3d_fullres \
  -tr XTLTrainer -p xtlunetPlansXTL --device cpu --no-tta
xtlunet evaluate -r "$XTLUNET_raw/Dataset501_BrainMS/labelsTs" -p "$DEMO/predictions_xtl" -d 501

echo "== 6. the arm comparison (paired Wilcoxon on per-case Dice over the cross-validation folds)"
xtlunet compare -d 501 -c 3d_fullres --arms XTLTrainer ScratchTrainer
echo "(tiny budgets: $EPOCHS epochs × $ITERS iterations per fold — the table shows the mechanics, not the method's merit)"
